//! Cron schedules for polls and full reconciles, on the `cron` crate.
//!
//! `cron` wants a seconds field first (`sec min hour dom mon dow [year]`) and refuses the
//! ordinary 5-field crontab line; operators write crontab lines, so a 5-field expression is
//! read as crontab (seconds = 0). Six and seven fields are passed through unchanged.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;

/// A parsed schedule.
#[derive(Clone)]
pub struct Schedule {
    text: String,
    inner: cron::Schedule,
}

/// Why a schedule could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cron schedule {text:?}: {reason} (use a crontab line such as \"*/5 * * * *\")")]
pub struct ScheduleError {
    text: String,
    reason: String,
}

impl FromStr for Schedule {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fields = s.split_whitespace().count();
        let expr = match fields {
            5 => format!("0 {s}"),
            6 | 7 => s.to_string(),
            n => {
                return Err(ScheduleError {
                    text: s.to_string(),
                    reason: format!("{n} fields; expected 5 (crontab), 6 or 7"),
                });
            }
        };
        let inner = cron::Schedule::from_str(&expr).map_err(|e| ScheduleError {
            text: s.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Schedule {
            text: s.to_string(),
            inner,
        })
    }
}

impl Schedule {
    /// How long from now until the next firing; `None` if it never fires again.
    pub fn until_next(&self) -> Option<Duration> {
        let now = Utc::now();
        let next = self.inner.after(&now).next()?;
        (next - now).to_std().ok()
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.text)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_crontab_and_cron_with_seconds() {
        assert!("*/5 * * * *".parse::<Schedule>().is_ok());
        assert!("0 2 * * *".parse::<Schedule>().is_ok());
        assert!("*/10 * * * * *".parse::<Schedule>().is_ok());
        let s: Schedule = "* * * * * *".parse().unwrap();
        assert!(s.until_next().unwrap() <= Duration::from_secs(1));
    }

    #[test]
    fn refuses_nonsense_with_the_reason() {
        let e = "every five minutes".parse::<Schedule>().unwrap_err();
        assert!(e.to_string().contains("3 fields"));
        assert!("61 * * * *".parse::<Schedule>().is_err());
    }
}

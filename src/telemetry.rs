//! Logging with `tracing-subscriber`, filtered by `RUST_LOG` (default `info`): native
//! journald entries (structured fields: `CONNECTOR=`, `RUN=`, …) when stderr is the journal,
//! as under systemd; otherwise human-readable or JSON lines on stderr. Connectors never log
//! credentials; request URLs carry none.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// Installs the global subscriber. `format` is `human` or `json`; it applies when stderr
/// is not the journal. Calling it twice is harmless (the second call does nothing).
pub fn init(format: &str) {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(journal) => {
                let journal = journal
                    .with_syslog_identifier("omnisync".into())
                    .with_field_prefix(None);
                if tracing_subscriber::registry()
                    .with(filter())
                    .with(journal)
                    .try_init()
                    .is_ok()
                {
                    return;
                }
            }
            Err(e) => eprintln!("omnisync: journald unreachable ({e}); logging to stderr"),
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr);
    let installed = if format == "json" {
        builder.json().with_current_span(false).try_init()
    } else {
        builder.compact().try_init()
    };
    if installed.is_err() {
        // A subscriber is already installed (tests, a second init): keep it.
    }
}

/// Whether stderr is the journal's stream: systemd sets `JOURNAL_STREAM=<dev>:<inode>` of
/// the socket it connected, and it must still be our stderr (not inherited by a child
/// whose stderr was redirected).
fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    use std::os::unix::fs::MetadataExt;
    journal_stream_matches(&stream, meta.dev(), meta.ino())
}

fn journal_stream_matches(stream: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = stream.split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

#[cfg(test)]
mod tests {
    use super::journal_stream_matches;

    #[test]
    fn journal_stream_must_name_our_stderr() {
        assert!(journal_stream_matches("8:12345", 8, 12345));
        assert!(!journal_stream_matches("8:12345", 8, 12346));
        assert!(!journal_stream_matches("9:12345", 8, 12345));
        assert!(!journal_stream_matches("garbage", 8, 12345));
        assert!(!journal_stream_matches("", 0, 0));
    }
}

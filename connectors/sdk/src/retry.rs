//! Retries with exponential backoff and jitter (`backon`), for transient failures only, and
//! honouring the wait an API asked for (`Retry-After`, a GraphQL throttle status).
//!
//! The `backoff` crate the brief first named is unmaintained (RUSTSEC-2025-0012); `backon`
//! is the replacement that advisory recommends.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::error::ConnectorError;

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// The first delay.
    pub min_delay: Duration,
    /// The longest delay between two attempts (a `Retry-After` may ask for longer, up to
    /// [`RetryPolicy::max_retry_after`]).
    pub max_delay: Duration,
    /// The longest `Retry-After` we honour; a longer one fails the call so the outbox can
    /// schedule it instead of a worker sleeping for minutes.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..Self::default()
        }
    }
}

/// Runs `op` until it succeeds, fails for good, or the retries run out. Each retry is
/// logged at `warn` with the error (which never carries credentials).
pub async fn retry<T, F, Fut>(policy: RetryPolicy, mut op: F) -> Result<T, ConnectorError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ConnectorError>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.max_retries)
        .with_jitter();
    let max_retry_after = policy.max_retry_after;
    (|| op())
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(move |e: &ConnectorError| {
            if e.kind == crate::ErrorKind::Throttled {
                crate::telemetry::record_throttled();
            }
            e.is_retryable() && e.retry_after.is_none_or(|d| d <= max_retry_after)
        })
        .adjust(|e: &ConnectorError, planned: Option<Duration>| {
            // `planned` is None when backon has run out of retries: keep it that way.
            planned.map(|p| e.retry_after.map_or(p, |asked| asked.max(p)))
        })
        .notify(|e: &ConnectorError, wait: Duration| {
            tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "retrying");
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_retry_after: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn retries_transient_then_succeeds() {
        let calls = AtomicUsize::new(0);
        let r = retry(fast(), || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(ConnectorError::transient("op", "502"))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn does_not_retry_permanent() {
        let calls = AtomicUsize::new(0);
        let r: Result<(), _> = retry(fast(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ConnectorError::permanent("op", "422"))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn gives_up_after_max_retries() {
        let calls = AtomicUsize::new(0);
        let r: Result<(), _> = retry(fast(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ConnectorError::transient("op", "503"))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after() {
        let calls = AtomicUsize::new(0);
        let started = tokio::time::Instant::now();
        let r = retry(fast(), || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(ConnectorError::throttled(
                    "op",
                    "429",
                    Some(Duration::from_millis(800)),
                ))
            } else {
                Ok(())
            }
        })
        .await;
        assert!(r.is_ok());
        // Paused clock: elapsed time is exactly what was slept, not wall time.
        assert!(started.elapsed() >= Duration::from_millis(800));
    }

    #[tokio::test]
    async fn refuses_to_sleep_for_a_very_long_retry_after() {
        let calls = AtomicUsize::new(0);
        let r: Result<(), _> = retry(fast(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ConnectorError::throttled(
                "op",
                "429",
                Some(Duration::from_secs(600)),
            ))
        })
        .await;
        assert_eq!(r.unwrap_err().retry_after, Some(Duration::from_secs(600)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

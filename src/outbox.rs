//! Draining the durable outbox: claim due corrections of one channel in batches of the
//! API's limit, push them with retries (backoff + jitter, `Retry-After` honoured), and
//! settle each item by its own outcome. A call that still fails after its retries is
//! rescheduled with a growing delay; after `max_attempts` it is dead-lettered with the
//! API's reason. Nothing is lost on a crash: a row leaves the outbox only when settled.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use omnisync_sdk::retry::{RetryPolicy, retry};
use omnisync_sdk::{Change, Connector, Correction, PushOutcome};

use crate::config::OutboxSection;
use crate::planner::StateKey;
pub use crate::store::Lane;
use crate::store::{OutboxRow, Settled, Store, StoreError};

/// What one drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainStats {
    /// Corrections sent to the API (any outcome).
    pub sent: u64,
    /// Applied by the API.
    pub applied: u64,
    /// Compare-and-set refused (stale).
    pub stale: u64,
    /// Dead-lettered.
    pub dead: u64,
    /// Rescheduled for a later attempt.
    pub rescheduled: u64,
    /// API calls made (after retries: one per batch).
    pub batches: u64,
    /// SKUs whose corrections were applied or found stale (to read back).
    pub touched: BTreeSet<String>,
    /// The values applied: key, encoded value, and the change that set it.
    pub applied_changes: Vec<(StateKey, String, Change)>,
    /// The values refused by compare-and-set.
    pub stale_keys: Vec<StateKey>,
}

impl DrainStats {
    /// Adds what another drain of the same channel (another lane) did.
    pub fn merge(&mut self, other: DrainStats) {
        self.sent += other.sent;
        self.applied += other.applied;
        self.stale += other.stale;
        self.dead += other.dead;
        self.rescheduled += other.rescheduled;
        self.batches += other.batches;
        self.touched.extend(other.touched);
        self.applied_changes.extend(other.applied_changes);
        self.stale_keys.extend(other.stale_keys);
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The retry policy for one attempt.
pub fn policy(cfg: &OutboxSection) -> RetryPolicy {
    RetryPolicy {
        max_retries: cfg.retries_per_attempt,
        min_delay: Duration::from_millis(cfg.min_delay_ms),
        max_delay: Duration::from_millis(cfg.max_delay_ms),
        max_retry_after: Duration::from_secs(30),
    }
}

/// Delay before the next attempt of a row that failed `attempts` times.
fn reschedule_delay(cfg: &OutboxSection, attempts: i64, asked: Option<Duration>) -> Duration {
    let base = Duration::from_millis(cfg.min_delay_ms.max(1))
        .saturating_mul(1u32 << attempts.clamp(0, 16) as u32)
        .min(Duration::from_secs(3600));
    asked.map_or(base, |a| a.max(base))
}

/// Which queued corrections a drain takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Every correction that is due.
    Due,
    /// Due corrections queued (or last changed) at this time (ms) or earlier: the retry
    /// loop leaves what is younger than a channel's push window to its pusher.
    QueuedBefore(i64),
}

/// Pushes every correction of `channel`'s `lane` that is due now (of the kind `claim`
/// says). Returns when none is left due, or after one call when the connector asks for
/// pacing ([`Connector::pacing`]).
pub async fn drain(
    store: &Store,
    channel: &str,
    lane: Lane,
    connector: &Arc<dyn Connector>,
    run_id: i64,
    cfg: &OutboxSection,
    claim: Claim,
) -> Result<DrainStats, StoreError> {
    let max_batch = connector.capabilities().max_batch.max(1);
    let before = match claim {
        Claim::Due => None,
        Claim::QueuedBefore(t) => Some(t),
    };
    let mut stats = DrainStats::default();
    loop {
        let rows = store
            .claim_in(channel, lane, max_batch, now_ms(), before)
            .await?;
        if rows.is_empty() {
            return Ok(stats);
        }
        let batch: Vec<Correction> = rows
            .iter()
            .map(|r| Correction {
                idempotency_key: r.idempotency_key.clone(),
                sku: r.key.sku.clone(),
                external_id: r.external_id.clone(),
                refs: r.refs.clone(),
                change: r.change.clone(),
            })
            .collect();
        stats.batches += 1;
        let pushed = std::time::Instant::now();
        let result = omnisync_sdk::telemetry::scope(
            Arc::from(channel),
            retry(policy(cfg), || connector.push(&batch)),
        )
        .await;
        crate::metrics::push_duration(channel, pushed.elapsed());
        if let Err(e) = &result {
            crate::metrics::connector_error(channel, e.kind);
        }
        let now = now_ms();
        let settled: Vec<(OutboxRow, Settled)> = match result {
            Ok(outcomes) if outcomes.len() == rows.len() => {
                stats.sent += rows.len() as u64;
                rows.into_iter()
                    .zip(outcomes)
                    .map(|(row, outcome)| {
                        let s = match outcome {
                            PushOutcome::Applied => {
                                stats.applied += 1;
                                stats.touched.insert(row.key.sku.clone());
                                stats.applied_changes.push((
                                    row.key.clone(),
                                    row.value.clone(),
                                    row.change.clone(),
                                ));
                                Settled::Applied
                            }
                            PushOutcome::Stale { .. } => {
                                stats.stale += 1;
                                stats.touched.insert(row.key.sku.clone());
                                stats.stale_keys.push(row.key.clone());
                                Settled::Stale
                            }
                            PushOutcome::Rejected { reason, retryable } => {
                                failed(cfg, &row, retryable, reason, None, now, &mut stats)
                            }
                        };
                        (row, s)
                    })
                    .collect()
            }
            Ok(outcomes) => {
                let reason = format!(
                    "connector answered {} outcomes for {} corrections",
                    outcomes.len(),
                    rows.len()
                );
                tracing::error!(channel, %reason, "push answer does not line up");
                rows.into_iter()
                    .map(|row| {
                        let s = failed(cfg, &row, true, reason.clone(), None, now, &mut stats);
                        (row, s)
                    })
                    .collect()
            }
            Err(e) => {
                tracing::warn!(channel, error = %e, batch = rows.len(), "push failed");
                rows.into_iter()
                    .map(|row| {
                        let s = failed(
                            cfg,
                            &row,
                            e.is_retryable(),
                            e.to_string(),
                            e.retry_after,
                            now,
                            &mut stats,
                        );
                        (row, s)
                    })
                    .collect()
            }
        };
        store.settle(channel, run_id, &settled, now_ms()).await?;
        record_settled(channel, &settled);
        // An API that asks for pacing gets one call per drain: what was queued meanwhile
        // waits for the next round, after the wait it asks for.
        if connector.pacing().is_some() {
            return Ok(stats);
        }
    }
}

/// Counts settled corrections by outcome in the metrics.
fn record_settled(channel: &str, settled: &[(OutboxRow, Settled)]) {
    let (mut applied, mut stale, mut rescheduled, mut dead) = (0, 0, 0, 0);
    for (_, s) in settled {
        match s {
            Settled::Applied => applied += 1,
            Settled::Stale => stale += 1,
            Settled::RetryAt { .. } => rescheduled += 1,
            Settled::Dead { .. } => dead += 1,
        }
    }
    for (outcome, n) in [
        ("applied", applied),
        ("stale", stale),
        ("rescheduled", rescheduled),
        ("dead_lettered", dead),
    ] {
        if n > 0 {
            crate::metrics::corrections(channel, outcome, n);
        }
    }
}

fn failed(
    cfg: &OutboxSection,
    row: &OutboxRow,
    retryable: bool,
    reason: String,
    asked: Option<Duration>,
    now: i64,
    stats: &mut DrainStats,
) -> Settled {
    if retryable && row.attempts + 1 < cfg.max_attempts {
        stats.rescheduled += 1;
        let wait = reschedule_delay(cfg, row.attempts, asked);
        Settled::RetryAt {
            at: now + wait.as_millis() as i64,
            error: reason,
        }
    } else {
        stats.dead += 1;
        Settled::Dead { reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reschedule_grows_and_honours_retry_after() {
        let cfg = OutboxSection::default();
        let d0 = reschedule_delay(&cfg, 0, None);
        let d3 = reschedule_delay(&cfg, 3, None);
        assert_eq!(d3, d0 * 8);
        assert_eq!(
            reschedule_delay(&cfg, 0, Some(Duration::from_secs(9))),
            Duration::from_secs(9)
        );
        assert!(reschedule_delay(&cfg, 60, None) <= Duration::from_secs(3600));
    }
}

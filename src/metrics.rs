//! Prometheus metrics at `/metrics` (the `metrics` facade with
//! `metrics-exporter-prometheus`).
//!
//! Counters and histograms are recorded where things happen; the gauges that describe the
//! stored state (open drift, queue depths, dead letters) are read from the store when
//! Prometheus scrapes, so they are right after a restart and agree between instances that
//! share a PostgreSQL store. Label sets are bounded: connector ids, causes, outcomes and
//! statuses — never a SKU.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `omnisync_drift_open` | gauge | `channel`, `cause` |
//! | `omnisync_consistency` | gauge (0–1, last pass that checked the channel) | `channel` |
//! | `omnisync_corrections_total` | counter | `channel`, `outcome` (`queued`, `held`, `applied`, `stale`, `rescheduled`, `dead_lettered`, `confirmed`) |
//! | `omnisync_push_duration_seconds` | histogram (one batch, retries included) | `channel` |
//! | `omnisync_api_requests_total`, `omnisync_api_request_duration_seconds`, `omnisync_api_throttled_total` | see [`omnisync_sdk::telemetry`] | `connector`, `status` |
//! | `omnisync_outbox_depth` | gauge | `channel`, `status` (`queued`, `held`) |
//! | `omnisync_dead_letters_open` | gauge | `channel` |
//! | `omnisync_inbox_depth` | gauge (webhook deliveries not processed yet) | |
//! | `omnisync_webhooks_total` | counter | `connector`, `outcome` (`accepted`, `duplicate`, `unauthorized`, `rejected`, `too_large`, `refused_stopping`) |
//! | `omnisync_reconcile_duration_seconds` | histogram | `scope` (`full`, `channel`, `skus`) |
//! | `omnisync_reconcile_runs_total` | counter | `scope`, `status` |
//! | `omnisync_last_successful_read_timestamp_seconds` | gauge (Unix time) | `connector` |
//! | `omnisync_connector_errors_total` | counter | `connector`, `kind` |
//! | `omnisync_build_info` | gauge (1) | `version` |

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::Row;

use crate::report::RunReport;
use crate::store::Store;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Label sets of the state gauges set at the previous scrape, so values that vanished
/// (drift of a cause now closed) are set back to zero instead of lingering.
static SEEN: Mutex<Option<HashSet<Series>>> = Mutex::new(None);

/// A state gauge's name and label values.
type Series = (&'static str, Vec<String>);

/// Installs the process-wide recorder (once; later calls return the same handle).
/// `None` when another recorder was installed first (then nothing is exported).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                300.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .and_then(|b| b.install_recorder());
            match recorder {
                Ok(handle) => {
                    describe();
                    gauge!("omnisync_build_info", "version" => env!("CARGO_PKG_VERSION"))
                        .set(1.0);
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed; /metrics stays empty");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    describe_gauge!(
        "omnisync_drift_open",
        "Values that differ from the desired value now, by channel and cause"
    );
    describe_gauge!(
        "omnisync_consistency",
        "In-sync items / checked items in the last pass that checked the channel"
    );
    describe_counter!(
        "omnisync_corrections_total",
        "Corrections by channel and outcome"
    );
    describe_histogram!(
        "omnisync_push_duration_seconds",
        Unit::Seconds,
        "Time to push one batch of corrections, retries included"
    );
    describe_counter!(
        "omnisync_api_requests_total",
        "HTTP requests to external APIs by connector and status class"
    );
    describe_histogram!(
        "omnisync_api_request_duration_seconds",
        Unit::Seconds,
        "External API request latency by connector"
    );
    describe_counter!(
        "omnisync_api_throttled_total",
        "Throttled API answers (429 or the API's own rate-limit error) by connector"
    );
    describe_gauge!(
        "omnisync_outbox_depth",
        "Corrections waiting in the outbox by channel and status"
    );
    describe_gauge!(
        "omnisync_dead_letters_open",
        "Dead-lettered corrections not resolved, by channel"
    );
    describe_gauge!(
        "omnisync_inbox_depth",
        "Webhook deliveries stored but not processed yet"
    );
    describe_counter!(
        "omnisync_webhooks_total",
        "Webhook deliveries by connector and outcome"
    );
    describe_histogram!(
        "omnisync_reconcile_duration_seconds",
        Unit::Seconds,
        "Reconcile pass wall time by scope"
    );
    describe_counter!(
        "omnisync_reconcile_runs_total",
        "Reconcile passes by scope and status"
    );
    describe_gauge!(
        "omnisync_last_successful_read_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the last successful read (poll) of each connector"
    );
    describe_counter!(
        "omnisync_connector_errors_total",
        "Failed connector calls by connector and error kind"
    );
    describe_gauge!("omnisync_build_info", "Always 1; the version is a label");
}

/// The Prometheus text exposition, with the state gauges read from `store` first.
pub async fn render(store: &Store) -> anyhow::Result<String> {
    let Some(handle) = install() else {
        return Ok(String::new());
    };
    refresh(store).await?;
    Ok(handle.render())
}

/// Reads the state gauges from the store.
async fn refresh(store: &Store) -> anyhow::Result<()> {
    let pool = store.pool();
    let mut now: HashSet<Series> = HashSet::new();
    let mut set = |name: &'static str, labels: Vec<String>, value: f64| {
        set_state_gauge(name, &labels, value);
        now.insert((name, labels));
    };

    let drift = sqlx::query(
        "SELECT channel, COALESCE(cause, 'unknown'), COUNT(*) FROM target_state \
         WHERE in_sync = 0 GROUP BY channel, COALESCE(cause, 'unknown')",
    )
    .fetch_all(pool)
    .await?;
    for r in drift {
        let n: i64 = r.try_get(2)?;
        set(
            "omnisync_drift_open",
            vec![r.try_get(0)?, r.try_get(1)?],
            n as f64,
        );
    }
    let outbox =
        sqlx::query("SELECT channel, status, COUNT(*) FROM outbox GROUP BY channel, status")
            .fetch_all(pool)
            .await?;
    for r in outbox {
        let n: i64 = r.try_get(2)?;
        set(
            "omnisync_outbox_depth",
            vec![r.try_get(0)?, r.try_get(1)?],
            n as f64,
        );
    }
    let dead = sqlx::query(
        "SELECT channel, COUNT(*) FROM dead_letters WHERE resolved_at IS NULL GROUP BY channel",
    )
    .fetch_all(pool)
    .await?;
    for r in dead {
        let n: i64 = r.try_get(1)?;
        set("omnisync_dead_letters_open", vec![r.try_get(0)?], n as f64);
    }
    let inbox: i64 = sqlx::query("SELECT COUNT(*) FROM webhook_inbox WHERE status = 'pending'")
        .fetch_one(pool)
        .await?
        .try_get(0)?;
    set("omnisync_inbox_depth", vec![], inbox as f64);

    let mut seen = SEEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for (name, labels) in seen.get_or_insert_with(HashSet::new).difference(&now) {
        set_state_gauge(name, labels, 0.0);
    }
    *seen = Some(now);
    Ok(())
}

/// Sets a state gauge, its label values in the order [`label_names`] gives.
fn set_state_gauge(name: &'static str, values: &[String], value: f64) {
    let labels: Vec<metrics::Label> = label_names(name)
        .iter()
        .zip(values)
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect();
    gauge!(name, labels).set(value);
}

fn label_names(metric: &str) -> &'static [&'static str] {
    match metric {
        "omnisync_drift_open" => &["channel", "cause"],
        "omnisync_outbox_depth" => &["channel", "status"],
        "omnisync_dead_letters_open" => &["channel"],
        _ => &[],
    }
}

/// Records a finished reconcile pass: its duration and outcome, consistency per channel
/// (for channels it checked), corrections queued, held and confirmed.
pub fn record_pass(scope: &str, report: &RunReport, elapsed: Duration) {
    metrics::histogram!("omnisync_reconcile_duration_seconds", "scope" => scope.to_string())
        .record(elapsed.as_secs_f64());
    metrics::counter!(
        "omnisync_reconcile_runs_total",
        "scope" => scope.to_string(),
        "status" => report.status.clone()
    )
    .increment(1);
    for c in &report.channels {
        if c.role == "source" || c.error.is_some() {
            continue;
        }
        // A scoped pass checks a few SKUs: its ratio is not the channel's.
        if scope != "skus" && c.items_checked > 0 {
            gauge!("omnisync_consistency", "channel" => c.id.clone()).set(c.consistency);
        }
        for (outcome, n) in [
            ("queued", c.corrections.queued),
            ("held", c.corrections.held),
            ("confirmed", c.corrections.confirmed),
        ] {
            if n > 0 {
                corrections(&c.id, outcome, n);
            }
        }
    }
}

/// Adds `n` corrections of `channel` with `outcome`.
pub fn corrections(channel: &str, outcome: &'static str, n: u64) {
    metrics::counter!(
        "omnisync_corrections_total",
        "channel" => channel.to_string(),
        "outcome" => outcome
    )
    .increment(n);
}

/// Records one pushed batch's wall time.
pub fn push_duration(channel: &str, elapsed: Duration) {
    metrics::histogram!("omnisync_push_duration_seconds", "channel" => channel.to_string())
        .record(elapsed.as_secs_f64());
}

/// Records a successful read of a connector now.
pub fn read_ok(connector: &str) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    gauge!("omnisync_last_successful_read_timestamp_seconds", "connector" => connector.to_string())
        .set(now);
}

/// Counts a failed connector call.
pub fn connector_error(connector: &str, kind: omnisync_sdk::ErrorKind) {
    metrics::counter!(
        "omnisync_connector_errors_total",
        "connector" => connector.to_string(),
        "kind" => format!("{kind:?}").to_lowercase()
    )
    .increment(1);
}

/// Counts a webhook delivery.
pub fn webhook(connector: &str, outcome: &'static str) {
    metrics::counter!(
        "omnisync_webhooks_total",
        "connector" => connector.to_string(),
        "outcome" => outcome
    )
    .increment(1);
}

//! Read queries the page and the API need beyond [`crate::views`] (which has the
//! overview, open drift, items and consistency over time): held corrections of every
//! channel, dead letters, runs with their per-channel figures. Plain SQL that runs on
//! SQLite and PostgreSQL (`$N` placeholders), read-only. Times are RFC 3339 (UTC), as in
//! [`crate::views`].

use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use crate::report::RunReport;
use crate::store::Store;
use crate::views::rfc3339;

/// A correction held for approval.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HeldRow {
    /// Target channel.
    pub channel: String,
    /// SKU.
    pub sku: String,
    /// `offer` or `stock`.
    pub field: String,
    /// Channel location code (stock), empty otherwise.
    pub location: String,
    /// The value it would set.
    pub value: String,
    /// Why it is held (the guard that stopped it).
    pub reason: String,
    /// When it was queued or last updated, RFC 3339.
    pub since: String,
}

/// A correction an API refused for good.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterRow {
    /// Id.
    pub id: i64,
    /// Target channel.
    pub channel: String,
    /// SKU.
    pub sku: String,
    /// `offer`, `stock` or `listing`.
    pub field: String,
    /// Channel location code (stock), empty otherwise.
    pub location: String,
    /// The value that could not be set.
    pub value: String,
    /// The API's reason.
    pub reason: String,
    /// Attempts made.
    pub attempts: i64,
    /// When it was dead-lettered, RFC 3339.
    pub created_at: String,
}

/// One channel's figures in a run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunChannel {
    /// Connector id.
    pub id: String,
    /// `source`, `target`, … per field (`price/stock`).
    pub role: String,
    /// Items checked.
    pub items_checked: u64,
    /// Items whose every value agreed.
    pub in_sync: u64,
    /// `in_sync / items_checked`.
    pub consistency: f64,
    /// Differences found (price + stock + missing).
    pub drift: u64,
    /// Corrections sent.
    pub sent: u64,
    /// Corrections confirmed by reading back.
    pub confirmed: u64,
    /// Corrections dead-lettered.
    pub failed: u64,
    /// Corrections held for approval.
    pub held: u64,
    /// Why the channel could not be reconciled, if it could not.
    pub error: Option<String>,
}

/// A run with its figures per channel.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunRecord {
    /// Run id.
    pub id: i64,
    /// `full` or the channel / SKUs it was limited to.
    pub scope: String,
    /// A dry run pushes nothing.
    pub dry_run: bool,
    /// `running`, `ok`, `failed`.
    pub status: String,
    /// Start, RFC 3339.
    pub started_at: String,
    /// End, RFC 3339, when finished.
    pub finished_at: Option<String>,
    /// Wall time in milliseconds, when finished.
    pub duration_ms: Option<i64>,
    /// Per channel, when finished.
    pub channels: Vec<RunChannel>,
}

fn channels_of(report: &RunReport) -> Vec<RunChannel> {
    report
        .channels
        .iter()
        .map(|c| RunChannel {
            id: c.id.clone(),
            role: c.role.clone(),
            items_checked: c.items_checked,
            in_sync: c.in_sync,
            consistency: c.consistency,
            drift: c.drift.price + c.drift.stock + c.drift.missing,
            sent: c.corrections.sent,
            confirmed: c.corrections.confirmed,
            failed: c.corrections.failed,
            held: c.corrections.held,
            error: c.error.clone(),
        })
        .collect()
}

fn summary(row: &sqlx::any::AnyRow, report: Option<&RunReport>) -> anyhow::Result<RunRecord> {
    let dry: i64 = row.try_get(2)?;
    let started: i64 = row.try_get(3)?;
    let finished: Option<i64> = row.try_get(4)?;
    Ok(RunRecord {
        id: row.try_get(0)?,
        scope: row.try_get(1)?,
        dry_run: dry != 0,
        started_at: rfc3339(started),
        finished_at: finished.map(rfc3339),
        duration_ms: finished.map(|f| f - started),
        status: row.try_get(5)?,
        channels: report.map(channels_of).unwrap_or_default(),
    })
}

fn parse_report(text: Option<String>) -> Option<RunReport> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

/// The most recent runs, newest first, with their per-channel figures.
pub async fn runs(store: &Store, limit: i64) -> anyhow::Result<Vec<RunRecord>> {
    let rows = sqlx::query(
        "SELECT id, scope, dry_run, started_at, finished_at, status, report FROM runs \
         ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(store.pool())
    .await
    .map_err(|e| anyhow::anyhow!("listing runs: {e}"))?;
    rows.iter()
        .map(|r| {
            let report = parse_report(r.try_get(6)?);
            summary(r, report.as_ref())
        })
        .collect()
}

/// One run: its summary and the full stored report (`None` while it runs).
pub async fn run(
    store: &Store,
    id: i64,
) -> anyhow::Result<Option<(RunRecord, Option<serde_json::Value>)>> {
    let row = sqlx::query(
        "SELECT id, scope, dry_run, started_at, finished_at, status, report FROM runs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(store.pool())
    .await
    .map_err(|e| anyhow::anyhow!("reading run {id}: {e}"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let text: Option<String> = row.try_get(6)?;
    let value = text
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("run {id}: the stored report is not JSON: {e}"))?;
    let report = parse_report(text);
    Ok(Some((summary(&row, report.as_ref())?, value)))
}

/// Corrections held for approval on every channel.
pub async fn held(store: &Store, limit: i64) -> anyhow::Result<Vec<HeldRow>> {
    let rows = sqlx::query(
        "SELECT channel, sku, field, location, value, COALESCE(hold_reason, ''), updated_at \
         FROM outbox WHERE status = 'held' ORDER BY channel, sku, field, location LIMIT $1",
    )
    .bind(limit)
    .fetch_all(store.pool())
    .await
    .map_err(|e| anyhow::anyhow!("listing held corrections: {e}"))?;
    rows.iter()
        .map(|r| {
            Ok(HeldRow {
                channel: r.try_get(0)?,
                sku: r.try_get(1)?,
                field: r.try_get(2)?,
                location: r.try_get(3)?,
                value: r.try_get(4)?,
                reason: r.try_get(5)?,
                since: rfc3339(r.try_get(6)?),
            })
        })
        .collect()
}

/// Open dead letters, newest first.
pub async fn dead_letters(store: &Store, limit: i64) -> anyhow::Result<Vec<DeadLetterRow>> {
    let rows = store
        .dead_letters(limit)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(rows
        .into_iter()
        .map(|d| DeadLetterRow {
            id: d.id,
            channel: d.channel,
            sku: d.sku,
            field: d.field,
            location: d.location,
            value: d.value,
            reason: d.reason,
            attempts: d.attempts,
            created_at: rfc3339(d.created_at),
        })
        .collect())
}

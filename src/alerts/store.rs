//! The alerts' reads and writes, in the store's one SQL dialect (`$N` placeholders, Unix
//! milliseconds, 0/1 booleans): what the rules look at (open drift, dead letters, held
//! corrections, finished runs) and the incident lifecycle (`alert_incidents`,
//! `alert_notices`, migration 0004).

use std::collections::BTreeMap;

use sqlx::Row;

use crate::alerts::AlertError;
use crate::alerts::notify::IncidentView;
use crate::alerts::rules::{DriftRow, Firing, ItemRow, RunObservation};
use crate::store::Store;

fn db(context: &'static str) -> impl Fn(sqlx::Error) -> AlertError {
    move |source| AlertError::Db { context, source }
}

/// Open differences of targets, oldest first.
pub async fn open_drift(store: &Store) -> Result<Vec<DriftRow>, AlertError> {
    let e = db("reading open drift");
    let rows = sqlx::query(
        "SELECT channel, field, sku, location, drift_since, desired, observed FROM target_state \
         WHERE in_sync = 0 AND drift_since IS NOT NULL ORDER BY drift_since",
    )
    .fetch_all(store.pool())
    .await
    .map_err(&e)?;
    rows.iter()
        .map(|r| {
            Ok(DriftRow {
                channel: r.try_get(0).map_err(&e)?,
                field: r.try_get(1).map_err(&e)?,
                sku: r.try_get(2).map_err(&e)?,
                location: r.try_get(3).map_err(&e)?,
                since: r.try_get(4).map_err(&e)?,
                desired: r.try_get(5).map_err(&e)?,
                observed: r.try_get(6).map_err(&e)?,
            })
        })
        .collect()
}

async fn items(
    store: &Store,
    sql: &'static str,
    context: &'static str,
) -> Result<Vec<ItemRow>, AlertError> {
    let e = db(context);
    let rows = sqlx::query(sql).fetch_all(store.pool()).await.map_err(&e)?;
    rows.iter()
        .map(|r| {
            Ok(ItemRow {
                channel: r.try_get(0).map_err(&e)?,
                sku: r.try_get(1).map_err(&e)?,
                at: r.try_get(2).map_err(&e)?,
            })
        })
        .collect()
}

/// Unresolved dead letters.
pub async fn dead_letters(store: &Store) -> Result<Vec<ItemRow>, AlertError> {
    items(
        store,
        "SELECT channel, sku, created_at FROM dead_letters WHERE resolved_at IS NULL",
        "reading dead letters",
    )
    .await
}

/// Corrections held for approval.
pub async fn held(store: &Store) -> Result<Vec<ItemRow>, AlertError> {
    items(
        store,
        "SELECT channel, sku, updated_at FROM outbox WHERE status = 'held'",
        "reading held corrections",
    )
    .await
}

#[derive(serde::Deserialize)]
struct MiniReport {
    #[serde(default)]
    channels: Vec<MiniChannel>,
}

#[derive(serde::Deserialize)]
struct MiniChannel {
    id: String,
    #[serde(default)]
    error: Option<String>,
}

/// Finished runs after `cursor`, in id order (at most `limit`). With `cursor` 0, the latest
/// `limit` finished runs, so a fresh start sees the recent past.
pub async fn runs_after(
    store: &Store,
    cursor: i64,
    limit: i64,
) -> Result<Vec<RunObservation>, AlertError> {
    let e = db("reading runs");
    let mut rows = if cursor == 0 {
        sqlx::query(
            "SELECT id, started_at, report FROM runs WHERE finished_at IS NOT NULL \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(store.pool())
        .await
        .map_err(&e)?
    } else {
        sqlx::query(
            "SELECT id, started_at, report FROM runs WHERE finished_at IS NOT NULL AND id > $1 \
             ORDER BY id LIMIT $2",
        )
        .bind(cursor)
        .bind(limit)
        .fetch_all(store.pool())
        .await
        .map_err(&e)?
    };
    if cursor == 0 {
        rows.reverse();
    }
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let report: Option<String> = r.try_get(2).map_err(&e)?;
        let channels = report
            .as_deref()
            .and_then(|j| serde_json::from_str::<MiniReport>(j).ok())
            .map(|m| m.channels.into_iter().map(|c| (c.id, c.error)).collect())
            .unwrap_or_default();
        out.push(RunObservation {
            id: r.try_get(0).map_err(&e)?,
            started_at: r.try_get(1).map_err(&e)?,
            channels,
        });
    }
    Ok(out)
}

macro_rules! incident_columns {
    () => {
        "id, incident_key, rule, kind, channel, field, opened_at, resolved_at, item_count, examples, summary"
    };
}

fn incident(r: &sqlx::any::AnyRow) -> Result<IncidentView, AlertError> {
    let e = db("reading incidents");
    let examples: String = r.try_get(9).map_err(&e)?;
    Ok(IncidentView {
        id: r.try_get(0).map_err(&e)?,
        key: r.try_get(1).map_err(&e)?,
        rule: r.try_get(2).map_err(&e)?,
        kind: r.try_get(3).map_err(&e)?,
        channel: r.try_get(4).map_err(&e)?,
        field: r.try_get(5).map_err(&e)?,
        opened_at: r.try_get(6).map_err(&e)?,
        resolved_at: r.try_get(7).map_err(&e)?,
        count: r.try_get::<i64, _>(8).map_err(&e)?.max(0) as u64,
        examples: serde_json::from_str(&examples).unwrap_or_default(),
        summary: r.try_get(10).map_err(&e)?,
    })
}

/// Open incidents by key.
pub async fn open_incidents(store: &Store) -> Result<BTreeMap<String, IncidentView>, AlertError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        incident_columns!(),
        " FROM alert_incidents WHERE resolved_at IS NULL"
    ))
    .fetch_all(store.pool())
    .await
    .map_err(db("reading open incidents"))?;
    rows.iter()
        .map(|r| incident(r).map(|i| (i.key.clone(), i)))
        .collect()
}

/// The latest incident of a key (open or resolved).
pub async fn latest_incident(store: &Store, key: &str) -> Result<Option<IncidentView>, AlertError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        incident_columns!(),
        " FROM alert_incidents WHERE incident_key = $1 ORDER BY id DESC LIMIT 1"
    ))
    .bind(key)
    .fetch_optional(store.pool())
    .await
    .map_err(db("reading an incident"))?;
    row.as_ref().map(incident).transpose()
}

/// Every incident, newest first (at most `limit`).
pub async fn incidents(store: &Store, limit: i64) -> Result<Vec<IncidentView>, AlertError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        incident_columns!(),
        " FROM alert_incidents ORDER BY id DESC LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(store.pool())
    .await
    .map_err(db("listing incidents"))?;
    rows.iter().map(incident).collect()
}

/// Opens an incident.
pub async fn open(store: &Store, f: &Firing, now: i64) -> Result<(), AlertError> {
    sqlx::query(
        "INSERT INTO alert_incidents (incident_key, rule, kind, channel, field, opened_at, last_seen_at, \
         resolved_at, item_count, examples, summary) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, $10)",
    )
    .bind(f.key.as_str())
    .bind(f.rule.as_str())
    .bind(f.kind.as_str())
    .bind(f.channel.as_deref())
    .bind(f.field.as_deref())
    .bind(now)
    .bind(now)
    .bind(f.count as i64)
    .bind(serde_json::to_string(&f.examples).unwrap_or_else(|_| "[]".into()))
    .bind(f.summary.as_str())
    .execute(store.pool())
    .await
    .map_err(db("opening an incident"))?;
    Ok(())
}

/// Refreshes an open incident's figures.
pub async fn touch(store: &Store, id: i64, f: &Firing, now: i64) -> Result<(), AlertError> {
    sqlx::query(
        "UPDATE alert_incidents SET last_seen_at = $1, item_count = $2, examples = $3, summary = $4 WHERE id = $5",
    )
    .bind(now)
    .bind(f.count as i64)
    .bind(serde_json::to_string(&f.examples).unwrap_or_else(|_| "[]".into()))
    .bind(f.summary.as_str())
    .bind(id)
    .execute(store.pool())
    .await
    .map_err(db("updating an incident"))?;
    Ok(())
}

/// Resolves an open incident.
pub async fn resolve(store: &Store, id: i64, now: i64) -> Result<(), AlertError> {
    sqlx::query(
        "UPDATE alert_incidents SET resolved_at = $1 WHERE id = $2 AND resolved_at IS NULL",
    )
    .bind(now)
    .bind(id)
    .execute(store.pool())
    .await
    .map_err(db("resolving an incident"))?;
    Ok(())
}

/// What one notifier was last told about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// `open` or `resolved`.
    pub told: String,
    /// The last time an opening was sent (ms).
    pub open_sent_at: Option<i64>,
}

/// Every notice by (key, notifier).
pub async fn notices(store: &Store) -> Result<BTreeMap<(String, String), Notice>, AlertError> {
    let e = db("reading alert notices");
    let rows = sqlx::query("SELECT incident_key, notifier, told, open_sent_at FROM alert_notices")
        .fetch_all(store.pool())
        .await
        .map_err(&e)?;
    let mut out = BTreeMap::new();
    for r in rows {
        out.insert(
            (r.try_get(0).map_err(&e)?, r.try_get(1).map_err(&e)?),
            Notice {
                told: r.try_get(2).map_err(&e)?,
                open_sent_at: r.try_get(3).map_err(&e)?,
            },
        );
    }
    Ok(out)
}

/// Records what a notifier was told.
pub async fn record_notice(
    store: &Store,
    key: &str,
    notifier: &str,
    told: &str,
    now: i64,
) -> Result<(), AlertError> {
    let open_sent_at = (told == "open").then_some(now);
    sqlx::query(
        "INSERT INTO alert_notices (incident_key, notifier, told, open_sent_at, sent_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (incident_key, notifier) DO UPDATE SET told = excluded.told, sent_at = excluded.sent_at, \
         open_sent_at = COALESCE(excluded.open_sent_at, alert_notices.open_sent_at)",
    )
    .bind(key)
    .bind(notifier)
    .bind(told)
    .bind(open_sent_at)
    .bind(now)
    .execute(store.pool())
    .await
    .map_err(db("recording an alert notice"))?;
    Ok(())
}

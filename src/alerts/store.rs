//! The alerts' reads and writes, in the store's one SQL dialect (`$N` placeholders, Unix
//! milliseconds, 0/1 booleans): what the rules look at (open drift, oversell risk, dead
//! letters, held corrections, finished runs) and the incident lifecycle (`alert_incidents`,
//! `alert_notices`, migration 0004).
//!
//! The rules' reads are aggregates: `COUNT`, `MIN` and `SUM` per channel (and field), one
//! pass over the open rows for the drift-age cutoffs together and one per oversell query,
//! then a few rows per incident for its example SKUs (`ORDER BY … LIMIT`), so an
//! evaluation over a catalog in mass drift gets tens of rows back, not one per open value.
//! The one thing that differs per backend is the collation of the SKU tie-break (`COLLATE
//! "C"` on PostgreSQL, so examples sort as Rust sorts strings).

use std::collections::{BTreeMap, BTreeSet};

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use crate::alerts::AlertError;
use crate::alerts::notify::IncidentView;
use crate::alerts::rules::{
    DriftGroup, EXAMPLES, Firing, ItemGroup, OversellGroup, OversellQuery, RunObservation,
};
use crate::store::{Backend, Store};

fn db(context: &'static str) -> impl Fn(sqlx::Error) -> AlertError {
    move |source| AlertError::Db { context, source }
}

/// Rows read per example query at first (more when SKUs repeat, e.g. stock per location).
const EXAMPLE_ROWS: i64 = 4 * EXAMPLES as i64;

/// What Rust's `str::trim` strips (Unicode `White_Space`), bound into the SQL that reads stock
/// numbers so a value counts exactly when `value.trim().parse::<i64>()` would accept it.
const WHITESPACE: &str = "\t\n\u{b}\u{c}\r \u{85}\u{a0}\u{1680}\u{2000}\u{2001}\u{2002}\u{2003}\
    \u{2004}\u{2005}\u{2006}\u{2007}\u{2008}\u{2009}\u{200a}\u{2028}\u{2029}\u{202f}\u{205f}\u{3000}";

/// `ORDER BY … sku` as Rust compares strings (bytes of UTF-8): SQLite's default collation
/// does; PostgreSQL's follows the database's locale unless told `C`. The SQL built with it
/// (`format!`) has no other variable part than constants of this module, which is why
/// `AssertSqlSafe` is sound here.
fn by_sku(store: &Store) -> &'static str {
    match store.backend() {
        Backend::Sqlite => "sku",
        Backend::Postgres => "sku COLLATE \"C\"",
    }
}

/// The first [`EXAMPLES`] distinct SKUs (each with its sort value where it first appears) of
/// a query ordered as the examples must be, whose last placeholder is a row limit: read
/// [`EXAMPLE_ROWS`] rows, and more only when repeated SKUs leave too few.
async fn first_distinct<F, Fut>(fetch: F) -> Result<Vec<(String, i64)>, sqlx::Error>
where
    F: Fn(i64) -> Fut,
    Fut: Future<Output = Result<Vec<AnyRow>, sqlx::Error>>,
{
    let mut limit = EXAMPLE_ROWS;
    loop {
        let rows = fetch(limit).await?;
        let mut out: Vec<(String, i64)> = Vec::new();
        for r in &rows {
            if out.len() == EXAMPLES {
                break;
            }
            let sku: String = r.try_get(0)?;
            if !out.iter().any(|(s, _)| *s == sku) {
                out.push((sku, r.try_get(1)?));
            }
        }
        if out.len() == EXAMPLES || (rows.len() as i64) < limit {
            return Ok(out);
        }
        limit = limit.saturating_mul(8);
    }
}

/// Open differences per channel and field for each cutoff (ms), in one pass over the open
/// rows: the count at each cutoff, the oldest, and, for the groups `watched` names (channel,
/// field), the first example SKUs. Groups with nothing open at a cutoff are left out of it.
pub async fn drift(
    store: &Store,
    cutoffs: &BTreeSet<i64>,
    watched: impl Fn(&str, &str) -> bool,
) -> Result<BTreeMap<i64, Vec<DriftGroup>>, AlertError> {
    let e = db("counting open drift");
    let mut out: BTreeMap<i64, Vec<DriftGroup>> =
        cutoffs.iter().map(|c| (*c, Vec::new())).collect();
    let Some(&last) = cutoffs.last() else {
        return Ok(out);
    };
    let mut text = String::from("SELECT channel, field, MIN(drift_since)");
    for n in 1..=cutoffs.len() {
        text.push_str(&format!(
            ", SUM(CASE WHEN drift_since <= ${n} THEN 1 ELSE 0 END)"
        ));
    }
    text.push_str(&format!(
        " FROM target_state WHERE in_sync = 0 AND drift_since IS NOT NULL AND drift_since <= ${} \
         GROUP BY channel, field",
        cutoffs.len() + 1
    ));
    let mut q = sqlx::query(store.dynamic(text));
    for c in cutoffs {
        q = q.bind(*c);
    }
    let rows = q.bind(last).fetch_all(store.pool()).await.map_err(&e)?;
    let examples = format!(
        "SELECT sku, drift_since FROM target_state WHERE channel = $1 AND in_sync = 0 AND field = $2 \
         AND drift_since IS NOT NULL AND drift_since <= $3 ORDER BY drift_since, {} LIMIT $4",
        by_sku(store)
    );
    for r in &rows {
        let channel: String = r.try_get(0).map_err(&e)?;
        let field: String = r.try_get(1).map_err(&e)?;
        let oldest: i64 = r.try_get(2).map_err(&e)?;
        // The examples at the latest cutoff, oldest first: at an earlier cutoff they are
        // those of them old enough (the ordering puts every older SKU before the others).
        let found = match watched(&channel, &field) {
            true => first_distinct(|limit| {
                sqlx::query(AssertSqlSafe(examples.as_str()))
                    .bind(channel.as_str())
                    .bind(field.as_str())
                    .bind(last)
                    .bind(limit)
                    .fetch_all(store.pool())
            })
            .await
            .map_err(&e)?,
            false => Vec::new(),
        };
        for (i, c) in cutoffs.iter().enumerate() {
            let count = r.try_get::<i64, _>(3 + i).map_err(&e)?.max(0) as u64;
            if count == 0 {
                continue;
            }
            if let Some(groups) = out.get_mut(c) {
                groups.push(DriftGroup {
                    channel: channel.clone(),
                    field: field.clone(),
                    count,
                    oldest,
                    examples: found
                        .iter()
                        .filter(|(_, since)| since <= c)
                        .map(|(sku, _)| sku.clone())
                        .collect(),
                });
            }
        }
    }
    Ok(out)
}

/// A stock column trimmed as Rust's `str::trim` does ([`WHITESPACE`] is bound as `$1`).
macro_rules! trimmed {
    ($col:literal) => {
        concat!("LTRIM(RTRIM(", $col, ", $1), $1)")
    };
}

/// A stock column as a number where `value.trim().parse::<i64>()` accepts it (an optional
/// sign and digits), NULL otherwise; at most 18 digits after leading zeros, so neither the
/// cast nor a difference of two can fail on PostgreSQL whatever a channel reports (the CAST
/// sits in the THEN of the test, which PostgreSQL evaluates first). Plain digits, what the
/// engine writes, take the first branch; only other text pays for trimming.
macro_rules! stock_number {
    ($col:literal) => {
        concat!(
            "CASE WHEN ",
            $col,
            " <> '' AND LTRIM(",
            $col,
            ", '0123456789') = '' AND LENGTH(",
            $col,
            ") <= 18 THEN CAST(",
            $col,
            " AS BIGINT) WHEN ",
            trimmed!($col),
            " NOT IN ('', '+', '-') AND SUBSTR(",
            trimmed!($col),
            ", 1, 1) IN ('+', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9') \
             AND LTRIM(SUBSTR(",
            trimmed!($col),
            ", 2), '0123456789') = '' \
             AND LENGTH(LTRIM(LTRIM(",
            trimmed!($col),
            ", '+-'), '0')) <= 18 THEN CAST(",
            trimmed!($col),
            " AS BIGINT) END"
        )
    };
}

/// The open stock differences opened at or before `$2` with each one's excess (shown minus
/// desired; NULL unless both are numbers, see [`stock_number!`]); `extra` adds conditions on
/// the rows.
macro_rules! stock_excess {
    ($extra:literal) => {
        concat!(
            "SELECT channel, sku, ",
            stock_number!("observed"),
            " - ",
            stock_number!("desired"),
            " AS excess FROM target_state WHERE in_sync = 0 AND field = 'stock' \
             AND drift_since IS NOT NULL AND drift_since <= $2",
            $extra
        )
    };
}

/// Stock values showing at least `query.min_excess` more than desired, per channel: how
/// many, the units too many, and, for the channels `watched` names, the first example SKUs
/// (largest excess first).
pub async fn oversell(
    store: &Store,
    query: OversellQuery,
    watched: impl Fn(&str) -> bool,
) -> Result<Vec<OversellGroup>, AlertError> {
    let e = db("counting oversell risk");
    // The units summed in two halves (billions and the rest) that cannot overflow however
    // many rows there are (an excess is below 2 * 10^18): exact, never an error.
    let rows = sqlx::query(concat!(
        "SELECT channel, COUNT(*), CAST(SUM(excess / 1000000000) AS BIGINT), \
         CAST(SUM(excess % 1000000000) AS BIGINT) FROM (",
        stock_excess!(""),
        ") v WHERE excess >= $3 GROUP BY channel"
    ))
    .bind(WHITESPACE)
    .bind(query.cutoff)
    .bind(query.min_excess)
    .fetch_all(store.pool())
    .await
    .map_err(&e)?;
    let examples = format!(
        "SELECT sku, excess FROM ({}) v WHERE excess >= $3 ORDER BY excess DESC, {} LIMIT $5",
        stock_excess!(" AND channel = $4"),
        by_sku(store)
    );
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let channel: String = r.try_get(0).map_err(&e)?;
        let count = r.try_get::<i64, _>(1).map_err(&e)?.max(0) as u64;
        let units = i128::from(r.try_get::<i64, _>(2).map_err(&e)?) * 1_000_000_000
            + i128::from(r.try_get::<i64, _>(3).map_err(&e)?);
        let examples = match watched(&channel) {
            true => first_distinct(|limit| {
                sqlx::query(AssertSqlSafe(examples.as_str()))
                    .bind(WHITESPACE)
                    .bind(query.cutoff)
                    .bind(query.min_excess)
                    .bind(channel.as_str())
                    .bind(limit)
                    .fetch_all(store.pool())
            })
            .await
            .map_err(&e)?,
            false => Vec::new(),
        };
        out.push(OversellGroup {
            channel,
            count,
            units: i64::try_from(units).unwrap_or(i64::MAX),
            examples: examples.into_iter().map(|(sku, _)| sku).collect(),
        });
    }
    Ok(out)
}

/// Rows per channel of `table` matching `open`, with the first example SKUs (oldest by
/// `at`, then SKU) where `fires(channel, count)`.
async fn items(
    store: &Store,
    (table, at, open): (&str, &str, &str),
    fires: impl Fn(&str, u64) -> bool,
    context: &'static str,
) -> Result<Vec<ItemGroup>, AlertError> {
    let e = db(context);
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT channel, COUNT(*) FROM {table} WHERE {open} GROUP BY channel"
    )))
    .fetch_all(store.pool())
    .await
    .map_err(&e)?;
    let examples = format!(
        "SELECT sku, {at} FROM {table} WHERE channel = $1 AND {open} ORDER BY {at}, {} LIMIT $2",
        by_sku(store)
    );
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let channel: String = r.try_get(0).map_err(&e)?;
        let count = r.try_get::<i64, _>(1).map_err(&e)?.max(0) as u64;
        let examples = match fires(&channel, count) {
            true => first_distinct(|limit| {
                sqlx::query(AssertSqlSafe(examples.as_str()))
                    .bind(channel.as_str())
                    .bind(limit)
                    .fetch_all(store.pool())
            })
            .await
            .map_err(&e)?,
            false => Vec::new(),
        };
        out.push(ItemGroup {
            channel,
            count,
            examples: examples.into_iter().map(|(sku, _)| sku).collect(),
        });
    }
    Ok(out)
}

/// Unresolved dead letters per channel, with examples where `fires(channel, count)`.
pub async fn dead_letters(
    store: &Store,
    fires: impl Fn(&str, u64) -> bool,
) -> Result<Vec<ItemGroup>, AlertError> {
    items(
        store,
        ("dead_letters", "created_at", "resolved_at IS NULL"),
        fires,
        "counting dead letters",
    )
    .await
}

/// Corrections held for approval per channel, with examples where `fires(channel, count)`.
pub async fn held(
    store: &Store,
    fires: impl Fn(&str, u64) -> bool,
) -> Result<Vec<ItemGroup>, AlertError> {
    items(
        store,
        ("outbox", "updated_at", "status = 'held'"),
        fires,
        "counting held corrections",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_is_what_rust_trims() {
        let rust: String = (0..=u32::from(char::MAX))
            .filter_map(char::from_u32)
            .filter(|c| c.is_whitespace())
            .collect();
        assert_eq!(WHITESPACE, rust);
    }
}

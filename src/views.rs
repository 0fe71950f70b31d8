//! The operators' read models: open drift, one item across every system, consistency over
//! time and the overview of every channel. The CLI (`omnisync drift`, `omnisync item`,
//! `omnisync report --format html`) and the web dashboard / JSON API render the same
//! structures, so both always tell the same story.
//!
//! Everything here is read-only and derived from stored rows (target state, bindings, drift
//! history, push log, observed changes, outbox, dead letters, reservations, run reports);
//! nothing is recomputed from a live read. Values are shown as text: an offer as
//! `"129.90 SEK"` (formatted from integer minor units, never through floats), stock as
//! `"7"`. Times are RFC 3339 strings (UTC). The SQL runs on SQLite and PostgreSQL alike.
//!
//! Also here: time to converge after a source change ([`record_convergence`], kept in each
//! run's report), retention ([`prune`]), durations as operators type them
//! ([`parse_duration`]) and the self-contained HTML run report ([`report_html`]).

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, bail};
use omnisync_sdk::Offer;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use time::OffsetDateTime;

use crate::config::{Config, ConnectorConfig, Role};
use crate::planner::{Cause, Field, decode_offer};
use crate::report::RunReport;
use crate::store::Store;

/// Rows a drift listing returns when no limit is given.
pub const DEFAULT_DRIFT_LIMIT: i64 = 10_000;
/// Entries an item timeline keeps (the newest).
pub const TIMELINE_LIMIT: usize = 300;
/// Runs whose reports are read for the overview.
const OVERVIEW_RUNS: i64 = 200;

/// Which open drift to list. Every field narrows the list; none set lists everything.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    utoipa::IntoParams,
)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct DriftFilter {
    /// Only this channel (connector id).
    pub channel: Option<String>,
    /// Only this cause: `source_changed`, `channel_edit`, `order_in_flight`, `write_failed`,
    /// `write_no_op`, `mapping`, or `unknown` (no cause could be told).
    pub cause: Option<String>,
    /// Only this field: `offer`, `stock`, `listing`, or `orphan` (listings bound to no item).
    pub field: Option<String>,
    /// Only drift open at least this long (milliseconds).
    pub older_than_ms: Option<i64>,
    /// At most this many rows (oldest drift first; default 10,000).
    pub limit: Option<i64>,
    /// Only this SKU.
    pub sku: Option<String>,
}

/// The causes a filter accepts.
pub const CAUSES: [&str; 7] = [
    "source_changed",
    "channel_edit",
    "order_in_flight",
    "write_failed",
    "write_no_op",
    "mapping",
    "unknown",
];

/// The fields a filter accepts.
pub const FIELDS: [&str; 4] = ["offer", "stock", "listing", "orphan"];

impl DriftFilter {
    /// Checks the filter's values; with a config, also that the channel is configured.
    /// The error names the bad value and what is accepted.
    pub fn check(&self, config: Option<&Config>) -> anyhow::Result<()> {
        if let Some(c) = &self.cause
            && !CAUSES.contains(&c.as_str())
        {
            bail!("unknown cause {c:?}: expected one of {}", CAUSES.join(", "));
        }
        if let Some(f) = &self.field
            && !FIELDS.contains(&f.as_str())
        {
            bail!("unknown field {f:?}: expected one of {}", FIELDS.join(", "));
        }
        if let Some(ms) = self.older_than_ms
            && ms < 0
        {
            bail!("older than {ms} ms: must not be negative");
        }
        if let Some(l) = self.limit
            && l < 1
        {
            bail!("limit {l}: must be at least 1");
        }
        if let (Some(config), Some(ch)) = (config, &self.channel)
            && !config.connectors.iter().any(|c| &c.id == ch)
        {
            bail!(
                "no channel {ch:?} in {}: configured are {}",
                config.file.display(),
                config
                    .connectors
                    .iter()
                    .map(|c| c.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(())
    }
}

/// One open difference: what a channel should show and what it shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DriftRow {
    /// The channel (connector id).
    pub channel: String,
    /// The SKU (for an orphan without one: empty).
    pub sku: String,
    /// `offer`, `stock`, `listing` or `orphan`.
    pub field: String,
    /// The channel's location code, for stock.
    pub location: Option<String>,
    /// What the channel should show, e.g. `"129.90 SEK"` or `"7"`.
    pub desired: Option<String>,
    /// What the channel showed when last read.
    pub observed: Option<String>,
    /// What omnisync last pushed (accepted by the API).
    pub last_pushed: Option<String>,
    /// Why it differs (`unknown` when it cannot be told).
    pub cause: String,
    /// Open since, RFC 3339.
    pub since: String,
    /// Open for this many seconds.
    pub age_secs: i64,
    /// What is being done about it: held for approval, retrying, dead-lettered (with the
    /// API's reason), or the orphan's reason.
    pub detail: Option<String>,
}

/// Available units at one canonical location, as the stock source reported them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LocationStock {
    /// Canonical location.
    pub location: String,
    /// Available units.
    pub available: i64,
    /// The stock source (connector id) for this location, from the config.
    pub source: Option<String>,
    /// When it was read, RFC 3339.
    pub updated_at: String,
}

/// Stock of an item at one channel location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChannelStock {
    /// The channel's location code (`default` for channels with one quantity per listing).
    pub location: String,
    /// What the channel shows.
    pub observed: Option<i64>,
    /// What it should show.
    pub desired: Option<String>,
    /// Whether they agreed when last checked.
    pub in_sync: Option<bool>,
}

/// An item in one target channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChannelItem {
    /// Connector id.
    pub channel: String,
    /// Connector kind.
    pub kind: String,
    /// `price-role/stock-role`, e.g. `target/target`.
    pub role: String,
    /// Whether the channel has a listing for the SKU (as last read).
    pub listed: bool,
    /// The channel's id for the listing.
    pub external_id: Option<String>,
    /// The regular price the channel shows, e.g. `"129.90 SEK"`.
    pub price: Option<String>,
    /// The sale price the channel shows, while a sale is live.
    pub sale_price: Option<String>,
    /// The offer the channel should show (regular, and sale when there is one).
    pub desired_offer: Option<String>,
    /// Units the channel shows over all its locations.
    pub stock_total: Option<i64>,
    /// Units per channel location.
    pub stock: Vec<ChannelStock>,
    /// Whether every value agreed when last checked (`None`: never checked).
    pub in_sync: Option<bool>,
    /// When the channel was last read for this item, RFC 3339.
    pub observed_at: Option<String>,
    /// When the values were last checked, RFC 3339.
    pub checked_at: Option<String>,
}

/// Units sold in a channel and held off every other channel until the source books them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReservationView {
    /// The channel that sold.
    pub channel: String,
    /// Units.
    pub quantity: i64,
    /// What told of the sale: `order` (an order event) or `stock drop` (the channel's stock
    /// fell without a correction and without an order, yet).
    pub signal: String,
    /// Still held.
    pub open: bool,
    /// Reserved at, RFC 3339.
    pub created_at: String,
    /// Released at the latest at, RFC 3339.
    pub expires_at: String,
    /// Released at, RFC 3339.
    pub released_at: Option<String>,
    /// Why it was released (`booked at the source`, `timed out`).
    pub release_reason: Option<String>,
}

/// One thing that happened to an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    /// When, RFC 3339.
    pub at: String,
    /// When, Unix milliseconds (for sorting).
    pub at_ms: i64,
    /// The channel (connector id).
    pub channel: String,
    /// `observed` (the channel's value changed), `drift_opened`, `queued`, `held`, `pushed`,
    /// `stale` (compare-and-set refused), `retrying`, `dead_lettered`, `confirmed` (read back
    /// in sync after a push), `resolved` (in sync again without a push), `reserved`,
    /// `released`.
    pub kind: String,
    /// `offer`, `stock`, `listing` (none for reservations).
    pub field: Option<String>,
    /// The channel location, for stock.
    pub location: Option<String>,
    /// The value observed, pushed or confirmed; units reserved.
    pub value: Option<String>,
    /// The drift cause this belongs to.
    pub cause: Option<String>,
    /// More: the value before, the desired value, the API's reason, the hold reason.
    pub detail: Option<String>,
}

/// One item across every system: where the customer can get it and why a channel differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ItemView {
    /// The SKU.
    pub sku: String,
    /// The item's name at the source.
    pub name: Option<String>,
    /// The source price, e.g. `"1039.20 NOK"`.
    pub source_price: Option<String>,
    /// Source stock per canonical location.
    pub locations: Vec<LocationStock>,
    /// Source units over all locations.
    pub available_total: i64,
    /// Each target channel: price, sale price, stock, in sync.
    pub channels: Vec<ChannelItem>,
    /// Orders in flight (open first, then the recently released).
    pub reservations: Vec<ReservationView>,
    /// Open drift.
    pub drift: Vec<DriftRow>,
    /// Observed changes and corrections with their causes, oldest first (the newest
    /// [`TIMELINE_LIMIT`]).
    pub timeline: Vec<TimelineEntry>,
}

/// A channel's consistency in one run.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ConsistencyPoint {
    /// Run id.
    pub run_id: i64,
    /// When the run finished, RFC 3339.
    pub at: String,
    /// Connector id.
    pub channel: String,
    /// Items checked.
    pub checked: u64,
    /// Of those, in sync.
    pub in_sync: u64,
    /// `in_sync / checked` (1.0 when nothing was checked; 0.0 when the channel failed).
    pub consistency: f64,
    /// Median time from a source change being seen to its confirmation, in that run (ms).
    pub converge_ms_p50: Option<u64>,
}

/// One channel now.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ChannelStatus {
    /// Connector id.
    pub id: String,
    /// `price-role/stock-role`, or `source`.
    pub role: String,
    /// Connector kind.
    pub kind: String,
    /// Consistency in the latest pass that covered the whole catalog.
    pub consistency: f64,
    /// Items checked in that pass.
    pub checked: u64,
    /// Of those, in sync.
    pub in_sync: u64,
    /// Open differences now.
    pub drift_open: u64,
    /// Open differences by cause.
    pub drift_by_cause: BTreeMap<String, u64>,
    /// Corrections waiting to be pushed.
    pub outbox_queued: u64,
    /// Corrections held for approval.
    pub outbox_held: u64,
    /// Open dead letters.
    pub dead_letters: u64,
    /// Listings bound to no item.
    pub orphans: u64,
    /// The error of the latest pass, if it failed for this channel.
    pub last_error: Option<String>,
    /// Failing without a break since this pass started, RFC 3339.
    pub failing_since: Option<String>,
    /// The latest pass that reconciled the channel without an error finished at, RFC 3339.
    pub last_ok: Option<String>,
    /// Median time to converge after a source change in the latest pass that saw one (ms).
    pub converge_ms_p50: Option<u64>,
}

/// A run as listed.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RunSummary {
    /// Run id.
    pub id: i64,
    /// `full`, or the channel/SKUs it was limited to.
    pub scope: String,
    /// A dry run pushes nothing.
    pub dry_run: bool,
    /// `running`, `ok`, `failed`.
    pub status: String,
    /// Start, RFC 3339.
    pub started_at: String,
    /// End, RFC 3339.
    pub finished_at: Option<String>,
    /// Wall time in milliseconds.
    pub duration_ms: Option<u64>,
    /// The lowest consistency of any target in the run.
    pub consistency_min: Option<f64>,
    /// Open differences found.
    pub drift: u64,
    /// Corrections sent.
    pub sent: u64,
    /// Corrections confirmed by reading back.
    pub confirmed: u64,
    /// Corrections dead-lettered.
    pub failed: u64,
}

/// Every channel at a glance, and the latest runs.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Overview {
    /// When this was put together, RFC 3339.
    pub generated_at: String,
    /// Every configured connector, in config order.
    pub channels: Vec<ChannelStatus>,
    /// The latest runs, newest first.
    pub recent_runs: Vec<RunSummary>,
    /// Open differences over all channels.
    pub drift_open: u64,
    /// Open dead letters over all channels.
    pub dead_letters: u64,
    /// Open reservations (orders in flight).
    pub reservations_open: u64,
}

/// What [`prune`] deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PruneCounts {
    /// Finished runs (the newest finished run is always kept).
    pub runs: u64,
    /// Closed drift.
    pub drift_history: u64,
    /// Push outcomes.
    pub push_log: u64,
    /// Observed changes.
    pub item_events: u64,
    /// Processed webhook deliveries (`done`, `duplicate`; `rejected` ones are kept).
    pub webhook_inbox: u64,
    /// Released reservations.
    pub reservations: u64,
    /// Resolved dead letters.
    pub dead_letters: u64,
}

// ---- helpers ---------------------------------------------------------------------------

/// Unix milliseconds as RFC 3339 in UTC, always with three decimals
/// (`2026-11-23T22:51:26.230Z`), so the strings sort as the times do.
pub fn rfc3339(ms: i64) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// An RFC 3339 time from a report, in the format of [`rfc3339`] (as it is if it does not
/// parse).
fn same_format(text: &str) -> String {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| rfc3339(unix_ms(t)))
        .unwrap_or_else(|_| text.to_string())
}

/// Unix milliseconds of a time.
pub fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// An offer for people: `"129.90 SEK"`, or `"129.90 SEK, sale 99.90 SEK"`.
pub fn offer_text(o: &Offer) -> String {
    match o.sale {
        Some(s) => format!("{}, sale {s}", o.price),
        None => o.price.to_string(),
    }
}

/// A stored value (see [`crate::planner::encode_offer`]) for people: offers formatted from
/// minor units, stock and listing states as they are.
pub fn value_text(field: &str, stored: &str) -> String {
    if field == Field::Offer.as_str()
        && let Some(o) = decode_offer(stored)
    {
        return offer_text(&o);
    }
    stored.to_string()
}

/// A duration as operators type it: `90s`, `15m`, `2h`, `1d`, `1w`, or combined (`1h30m`).
/// Returns milliseconds; the error names the bad text.
pub fn parse_duration(text: &str) -> anyhow::Result<i64> {
    let bad = || {
        anyhow::anyhow!(
            "bad duration {text:?}: expected a number and a unit (s, m, h, d, w), e.g. 90s, 15m, 2h, 1d"
        )
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            'w' => 604_800_000,
            _ => return Err(bad()),
        };
        let n: i64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

fn role_text(c: &ConnectorConfig) -> String {
    let name = |r: Role| match r {
        Role::Source => "source",
        Role::Target => "target",
        Role::Observer => "observer",
    };
    if (c.price == Role::Source || c.stock == Role::Source)
        && c.price != Role::Target
        && c.stock != Role::Target
    {
        "source".into()
    } else {
        format!("{}/{}", name(c.price), name(c.stock))
    }
}

fn is_target(c: &ConnectorConfig) -> bool {
    c.price == Role::Target || c.stock == Role::Target
}

fn location_opt(location: String) -> Option<String> {
    (!location.is_empty()).then_some(location)
}

fn db<T>(r: Result<T, sqlx::Error>, what: &str) -> anyhow::Result<T> {
    r.with_context(|| what.to_string())
}

/// A bound value of dynamic SQL.
enum Bind {
    Text(String),
    Int(i64),
}

// ---- open drift --------------------------------------------------------------------------

/// Open drift matching `filter`, oldest first: differences between desired and observed
/// values (from the target state) and, unless the filter excludes them, orphan listings.
/// Each row says what is being done about it (held, retrying, dead-lettered).
pub async fn open_drift(
    store: &Store,
    filter: &DriftFilter,
    now_ms: i64,
) -> anyhow::Result<Vec<DriftRow>> {
    filter.check(None)?;
    let limit = filter.limit.unwrap_or(DEFAULT_DRIFT_LIMIT);
    let cutoff = filter.older_than_ms.map(|ms| now_ms.saturating_sub(ms));
    let mut out = Vec::new();

    if filter.field.as_deref() != Some("orphan") {
        let mut sql = String::from(
            "SELECT channel, sku, field, location, desired, observed, pushed, cause, \
             COALESCE(drift_since, checked_at) FROM target_state WHERE in_sync = 0",
        );
        let mut binds = Vec::new();
        let mut push = |sql: &mut String, cond: &str, b: Bind| {
            binds.push(b);
            sql.push_str(&format!(" AND {cond} ${}", binds.len()));
        };
        if let Some(c) = &filter.channel {
            push(&mut sql, "channel =", Bind::Text(c.clone()));
        }
        match filter.cause.as_deref() {
            Some("unknown") => sql.push_str(" AND cause IS NULL"),
            Some(c) => push(&mut sql, "cause =", Bind::Text(c.into())),
            None => {}
        }
        if let Some(f) = &filter.field {
            push(&mut sql, "field =", Bind::Text(f.clone()));
        }
        if let Some(s) = &filter.sku {
            push(&mut sql, "sku =", Bind::Text(s.clone()));
        }
        if let Some(cut) = cutoff {
            push(
                &mut sql,
                "COALESCE(drift_since, checked_at) <=",
                Bind::Int(cut),
            );
        }
        binds.push(Bind::Int(limit));
        sql.push_str(&format!(
            " ORDER BY COALESCE(drift_since, checked_at), channel, sku, field, location LIMIT ${}",
            binds.len()
        ));
        let mut q = sqlx::query(store.dynamic(sql));
        for b in binds {
            q = match b {
                Bind::Text(s) => q.bind(s),
                Bind::Int(i) => q.bind(i),
            };
        }
        let rows = db(q.fetch_all(store.pool()).await, "listing open drift")?;
        let notes = drift_notes(store, filter).await?;
        for r in rows {
            let channel: String = db(r.try_get(0), "reading drift")?;
            let sku: String = db(r.try_get(1), "reading drift")?;
            let field: String = db(r.try_get(2), "reading drift")?;
            let location: String = db(r.try_get(3), "reading drift")?;
            let desired: String = db(r.try_get(4), "reading drift")?;
            let observed: Option<String> = db(r.try_get(5), "reading drift")?;
            let pushed: Option<String> = db(r.try_get(6), "reading drift")?;
            let cause: Option<String> = db(r.try_get(7), "reading drift")?;
            let since: i64 = db(r.try_get(8), "reading drift")?;
            let detail = notes
                .get(&(
                    channel.clone(),
                    sku.clone(),
                    field.clone(),
                    location.clone(),
                ))
                .cloned();
            out.push(DriftRow {
                desired: Some(value_text(&field, &desired)),
                observed: observed.map(|o| value_text(&field, &o)),
                last_pushed: pushed.map(|p| value_text(&field, &p)),
                cause: cause.unwrap_or_else(|| "unknown".into()),
                since: rfc3339(since),
                age_secs: (now_ms - since).max(0) / 1000,
                location: location_opt(location),
                channel,
                sku,
                field,
                detail,
            });
        }
    }

    let orphans_wanted = matches!(filter.field.as_deref(), None | Some("orphan"))
        && matches!(filter.cause.as_deref(), None | Some("mapping"));
    if orphans_wanted {
        let mut sql = String::from(
            "SELECT channel, external_id, sku, reason, first_seen FROM orphans WHERE 1 = 1",
        );
        let mut binds = Vec::new();
        if let Some(c) = &filter.channel {
            binds.push(Bind::Text(c.clone()));
            sql.push_str(&format!(" AND channel = ${}", binds.len()));
        }
        if let Some(s) = &filter.sku {
            binds.push(Bind::Text(s.clone()));
            sql.push_str(&format!(" AND sku = ${}", binds.len()));
        }
        if let Some(cut) = cutoff {
            binds.push(Bind::Int(cut));
            sql.push_str(&format!(" AND first_seen <= ${}", binds.len()));
        }
        binds.push(Bind::Int(limit));
        sql.push_str(&format!(
            " ORDER BY first_seen, channel, external_id LIMIT ${}",
            binds.len()
        ));
        let mut q = sqlx::query(store.dynamic(sql));
        for b in binds {
            q = match b {
                Bind::Text(s) => q.bind(s),
                Bind::Int(i) => q.bind(i),
            };
        }
        for r in db(q.fetch_all(store.pool()).await, "listing orphans")? {
            let external_id: String = db(r.try_get(1), "reading orphans")?;
            let reason: String = db(r.try_get(3), "reading orphans")?;
            let since: i64 = db(r.try_get(4), "reading orphans")?;
            out.push(DriftRow {
                channel: db(r.try_get(0), "reading orphans")?,
                sku: db::<Option<String>>(r.try_get(2), "reading orphans")?.unwrap_or_default(),
                field: "orphan".into(),
                location: None,
                desired: None,
                observed: Some(format!("listing {external_id}")),
                last_pushed: None,
                cause: "mapping".into(),
                since: rfc3339(since),
                age_secs: (now_ms - since).max(0) / 1000,
                detail: Some(reason),
            });
        }
    }
    // Oldest first over both kinds (RFC 3339 UTC strings sort by time).
    out.sort_by(|a, b| {
        (&a.since, &a.channel, &a.sku, &a.field).cmp(&(&b.since, &b.channel, &b.sku, &b.field))
    });
    out.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(out)
}

type Key = (String, String, String, String);

/// What is being done about open differences: held / retrying outbox rows and open dead
/// letters, per (channel, sku, field, location).
async fn drift_notes(store: &Store, filter: &DriftFilter) -> anyhow::Result<HashMap<Key, String>> {
    let mut notes = HashMap::new();
    for (table, sql) in [
        (
            "outbox",
            "SELECT channel, sku, field, location, status, COALESCE(hold_reason, ''), \
             COALESCE(last_error, ''), attempts FROM outbox",
        ),
        (
            "dead_letters",
            "SELECT channel, sku, field, location, 'dead', reason, '', attempts FROM dead_letters \
             WHERE resolved_at IS NULL",
        ),
    ] {
        let mut sql = sql.to_string();
        let mut binds = Vec::new();
        let mut cond = |sql: &mut String, col: &str, v: &String| {
            binds.push(v.clone());
            let joiner = if sql.contains(" WHERE ") {
                " AND"
            } else {
                " WHERE"
            };
            sql.push_str(&format!("{joiner} {col} = ${}", binds.len()));
        };
        if let Some(c) = &filter.channel {
            cond(&mut sql, "channel", c);
        }
        if let Some(s) = &filter.sku {
            cond(&mut sql, "sku", s);
        }
        let mut q = sqlx::query(store.dynamic(sql));
        for b in binds {
            q = q.bind(b);
        }
        let rows = db(q.fetch_all(store.pool()).await, &format!("reading {table}"))?;
        for r in rows {
            let key: Key = (
                db(r.try_get(0), table)?,
                db(r.try_get(1), table)?,
                db(r.try_get(2), table)?,
                db(r.try_get(3), table)?,
            );
            let status: String = db(r.try_get(4), table)?;
            let reason: String = db(r.try_get(5), table)?;
            let error: String = db(r.try_get(6), table)?;
            let attempts: i64 = db(r.try_get(7), table)?;
            let note = match status.as_str() {
                "held" => format!("held for approval: {reason}"),
                "dead" => format!("dead-lettered after {attempts} attempts: {reason}"),
                _ if attempts > 0 => format!("queued, retrying after {attempts} attempts: {error}"),
                _ => "queued".to_string(),
            };
            // A dead letter says more than a queued row for the same key.
            notes.insert(key, note);
        }
    }
    Ok(notes)
}

// ---- one item ------------------------------------------------------------------------------

/// What a channel showed for an item when last read.
struct Binding {
    external_id: String,
    offer: Option<Offer>,
    stock: BTreeMap<String, i64>,
    observed_at: i64,
}

/// One stored target-state row of an item.
struct State {
    field: String,
    location: String,
    desired: String,
    observed: Option<String>,
    in_sync: bool,
    cause: Option<String>,
    drift_since: Option<i64>,
    checked_at: i64,
}

/// One item across every system, or `None` when no system knows the SKU.
pub async fn item(store: &Store, config: &Config, sku: &str) -> anyhow::Result<Option<ItemView>> {
    let pool = store.pool();
    let now = crate::outbox::now_ms();
    let item_row = db(
        sqlx::query("SELECT title, price_minor, currency FROM items WHERE sku = $1")
            .bind(sku)
            .fetch_optional(pool)
            .await,
        "reading the item",
    )?;
    let (name, source_price) = match &item_row {
        Some(r) => {
            let title: Option<String> = db(r.try_get(0), "reading the item")?;
            let minor: Option<i64> = db(r.try_get(1), "reading the item")?;
            let currency: Option<String> = db(r.try_get(2), "reading the item")?;
            let price = match (minor, currency.and_then(|c| c.parse().ok())) {
                (Some(m), Some(c)) => Some(omnisync_sdk::Money::new(m, c).to_string()),
                _ => None,
            };
            (title, price)
        }
        None => (None, None),
    };

    // Source stock per canonical location, with the connector that is its source.
    let source_of = |location: &str| {
        config
            .connectors
            .iter()
            .find(|c| c.stock == Role::Source && c.source_locations.contains_key(location))
            .map(|c| c.id.clone())
    };
    let mut locations = Vec::new();
    for r in db(
        sqlx::query(
            "SELECT location, available, updated_at FROM item_stock WHERE sku = $1 ORDER BY location",
        )
        .bind(sku)
        .fetch_all(pool)
        .await,
        "reading item stock",
    )? {
        let location: String = db(r.try_get(0), "reading item stock")?;
        locations.push(LocationStock {
            source: source_of(&location),
            available: db(r.try_get(1), "reading item stock")?,
            updated_at: rfc3339(db(r.try_get(2), "reading item stock")?),
            location,
        });
    }
    let available_total = locations.iter().map(|l| l.available).sum();

    // What each channel showed, and the three-way state of each value.
    let mut bindings: HashMap<String, Binding> = HashMap::new();
    for r in db(
        sqlx::query(
            "SELECT channel, external_id, offer, stock, observed_at FROM bindings WHERE sku = $1",
        )
        .bind(sku)
        .fetch_all(pool)
        .await,
        "reading bindings",
    )? {
        let channel: String = db(r.try_get(0), "reading bindings")?;
        let offer: Option<String> = db(r.try_get(2), "reading bindings")?;
        let stock: Option<String> = db(r.try_get(3), "reading bindings")?;
        bindings.insert(
            channel,
            Binding {
                external_id: db(r.try_get(1), "reading bindings")?,
                offer: offer.and_then(|o| serde_json::from_str(&o).ok()),
                stock: stock
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or_default(),
                observed_at: db(r.try_get(4), "reading bindings")?,
            },
        );
    }
    let mut states: HashMap<String, Vec<State>> = HashMap::new();
    for r in db(
        sqlx::query(
            "SELECT channel, field, location, desired, observed, in_sync, cause, drift_since, checked_at \
             FROM target_state WHERE sku = $1 ORDER BY channel, field, location",
        )
        .bind(sku)
        .fetch_all(pool)
        .await,
        "reading target state",
    )? {
        let channel: String = db(r.try_get(0), "reading target state")?;
        states.entry(channel).or_default().push(State {
            field: db(r.try_get(1), "reading target state")?,
            location: db(r.try_get(2), "reading target state")?,
            desired: db(r.try_get(3), "reading target state")?,
            observed: db(r.try_get(4), "reading target state")?,
            in_sync: db::<i64>(r.try_get(5), "reading target state")? != 0,
            cause: db(r.try_get(6), "reading target state")?,
            drift_since: db(r.try_get(7), "reading target state")?,
            checked_at: db(r.try_get(8), "reading target state")?,
        });
    }
    if item_row.is_none() && bindings.is_empty() && states.is_empty() {
        return Ok(None);
    }

    let mut channels = Vec::new();
    for c in config.connectors.iter().filter(|c| is_target(c)) {
        let binding = bindings.get(&c.id);
        let rows = states.get(&c.id).map(Vec::as_slice).unwrap_or_default();
        let mut stock: BTreeMap<String, ChannelStock> = BTreeMap::new();
        if let Some(b) = binding {
            for (loc, q) in &b.stock {
                stock.insert(
                    loc.clone(),
                    ChannelStock {
                        location: loc.clone(),
                        observed: Some(*q),
                        desired: None,
                        in_sync: None,
                    },
                );
            }
        }
        for s in rows.iter().filter(|s| s.field == Field::Stock.as_str()) {
            let e = stock
                .entry(s.location.clone())
                .or_insert_with(|| ChannelStock {
                    location: s.location.clone(),
                    observed: s.observed.as_deref().and_then(|o| o.parse().ok()),
                    desired: None,
                    in_sync: None,
                });
            e.desired = Some(s.desired.clone());
            e.in_sync = Some(s.in_sync);
        }
        let offer = binding.and_then(|b| b.offer);
        let desired_offer = rows
            .iter()
            .find(|s| s.field == Field::Offer.as_str())
            .map(|s| value_text(&s.field, &s.desired));
        channels.push(ChannelItem {
            channel: c.id.clone(),
            kind: c.kind.clone(),
            role: role_text(c),
            listed: binding.is_some(),
            external_id: binding.map(|b| b.external_id.clone()),
            price: offer.map(|o| o.price.to_string()),
            sale_price: offer.and_then(|o| o.sale).map(|s| s.to_string()),
            desired_offer,
            stock_total: binding.map(|b| b.stock.values().sum()),
            stock: stock.into_values().collect(),
            in_sync: (!rows.is_empty()).then(|| rows.iter().all(|s| s.in_sync)),
            observed_at: binding.map(|b| rfc3339(b.observed_at)),
            checked_at: rows.iter().map(|s| s.checked_at).max().map(rfc3339),
        });
    }

    // Reservations: open ones, then the latest released.
    let mut reservations = Vec::new();
    let mut timeline = Vec::new();
    for r in db(
        sqlx::query(
            "SELECT channel, quantity, created_at, expires_at, released_at, release_reason, event_id \
             FROM reservations WHERE sku = $1 ORDER BY created_at DESC, id DESC LIMIT 100",
        )
        .bind(sku)
        .fetch_all(pool)
        .await,
        "reading reservations",
    )? {
        let channel: String = db(r.try_get(0), "reading reservations")?;
        let quantity: i64 = db(r.try_get(1), "reading reservations")?;
        let created: i64 = db(r.try_get(2), "reading reservations")?;
        let released: Option<i64> = db(r.try_get(4), "reading reservations")?;
        let reason: Option<String> = db(r.try_get(5), "reading reservations")?;
        let event: String = db(r.try_get(6), "reading reservations")?;
        let signal = if event.starts_with(crate::reservations::DROP_EVENT) {
            "stock drop"
        } else {
            "order"
        };
        let mut e = entry(created, &channel, "reserved", None, None);
        e.value = Some(quantity.to_string());
        e.cause = Some(Cause::OrderInFlight.as_str().into());
        timeline.push(e);
        if let Some(at) = released {
            let mut e = entry(at, &channel, "released", None, None);
            e.value = Some(quantity.to_string());
            e.detail = reason.clone();
            timeline.push(e);
        }
        reservations.push(ReservationView {
            channel,
            quantity,
            signal: signal.into(),
            open: released.is_none(),
            created_at: rfc3339(created),
            expires_at: rfc3339(db(r.try_get(3), "reading reservations")?),
            released_at: released.map(rfc3339),
            release_reason: reason,
        });
    }
    reservations.sort_by_key(|r| !r.open);

    let drift = open_drift(
        store,
        &DriftFilter {
            sku: Some(sku.to_string()),
            ..Default::default()
        },
        now,
    )
    .await?;

    timeline.extend(item_timeline(store, sku, &states_intervals(&states)).await?);
    timeline.sort_by(|a, b| {
        a.at_ms
            .cmp(&b.at_ms)
            .then_with(|| kind_order(&a.kind).cmp(&kind_order(&b.kind)))
    });
    if timeline.len() > TIMELINE_LIMIT {
        timeline.drain(..timeline.len() - TIMELINE_LIMIT);
    }

    Ok(Some(ItemView {
        sku: sku.to_string(),
        name,
        source_price,
        locations,
        available_total,
        channels,
        reservations,
        drift,
        timeline,
    }))
}

/// Within one millisecond, the order things happen in.
fn kind_order(kind: &str) -> u8 {
    match kind {
        "reserved" => 0,
        "observed" => 1,
        "drift_opened" => 2,
        "queued" | "held" => 3,
        "pushed" | "stale" | "retrying" | "dead_lettered" => 4,
        "confirmed" | "resolved" => 5,
        _ => 6,
    }
}

fn entry(
    at: i64,
    channel: &str,
    kind: &str,
    field: Option<&str>,
    location: Option<String>,
) -> TimelineEntry {
    TimelineEntry {
        at: rfc3339(at),
        at_ms: at,
        channel: channel.to_string(),
        kind: kind.to_string(),
        field: field.map(str::to_string),
        location: location.and_then(location_opt),
        value: None,
        cause: None,
        detail: None,
    }
}

/// An interval of drift on one value: (channel, field, location) → [(from, to, cause)].
type Intervals = HashMap<(String, String, String), Vec<(i64, Option<i64>, Option<String>)>>;

/// Open drift of the target state as intervals without an end.
fn states_intervals(states: &HashMap<String, Vec<State>>) -> Intervals {
    let mut out: Intervals = HashMap::new();
    for (channel, rows) in states {
        for s in rows.iter().filter(|s| !s.in_sync) {
            out.entry((channel.clone(), s.field.clone(), s.location.clone()))
                .or_default()
                .push((s.drift_since.unwrap_or(s.checked_at), None, s.cause.clone()));
        }
    }
    out
}

/// The stored history of one SKU as timeline entries: observed changes, drift opened and
/// closed (confirmed after a push, resolved without one), pushes and their outcomes with the
/// cause of the drift they corrected, and what waits in the outbox.
async fn item_timeline(
    store: &Store,
    sku: &str,
    open: &Intervals,
) -> anyhow::Result<Vec<TimelineEntry>> {
    let pool = store.pool();
    let limit = TIMELINE_LIMIT as i64;
    let mut out = Vec::new();
    let mut intervals = open.clone();

    // Drift opened and open now.
    for ((channel, field, location), list) in open {
        for (from, _, cause) in list {
            let mut e = entry(
                *from,
                channel,
                "drift_opened",
                Some(field),
                Some(location.clone()),
            );
            e.cause = cause.clone().or_else(|| Some("unknown".into()));
            out.push(e);
        }
    }

    // Closed drift.
    let mut closed = Vec::new();
    for r in db(
        sqlx::query(
            "SELECT channel, field, location, desired, observed, cause, first_seen, resolved_at \
             FROM drift_history WHERE sku = $1 ORDER BY resolved_at DESC, id DESC LIMIT $2",
        )
        .bind(sku)
        .bind(limit)
        .fetch_all(pool)
        .await,
        "reading drift history",
    )? {
        let channel: String = db(r.try_get(0), "reading drift history")?;
        let field: String = db(r.try_get(1), "reading drift history")?;
        let location: String = db(r.try_get(2), "reading drift history")?;
        let desired: String = db(r.try_get(3), "reading drift history")?;
        let observed: Option<String> = db(r.try_get(4), "reading drift history")?;
        let cause: Option<String> = db(r.try_get(5), "reading drift history")?;
        let from: i64 = db(r.try_get(6), "reading drift history")?;
        let to: i64 = db(r.try_get(7), "reading drift history")?;
        intervals
            .entry((channel.clone(), field.clone(), location.clone()))
            .or_default()
            .push((from, Some(to), cause.clone()));
        let mut e = entry(
            from,
            &channel,
            "drift_opened",
            Some(&field),
            Some(location.clone()),
        );
        e.cause = cause.clone().or_else(|| Some("unknown".into()));
        e.value = observed.as_deref().map(|o| value_text(&field, o));
        e.detail = Some(format!("should be {}", value_text(&field, &desired)));
        out.push(e);
        closed.push((channel, field, location, desired, cause, from, to));
    }

    // Pushes and their outcomes.
    let mut applied: Vec<(Key, i64)> = Vec::new();
    for r in db(
        sqlx::query(
            "SELECT channel, field, location, value, outcome, detail, at FROM push_log \
             WHERE sku = $1 ORDER BY at DESC, id DESC LIMIT $2",
        )
        .bind(sku)
        .bind(limit)
        .fetch_all(pool)
        .await,
        "reading the push log",
    )? {
        let channel: String = db(r.try_get(0), "reading the push log")?;
        let field: String = db(r.try_get(1), "reading the push log")?;
        let location: String = db(r.try_get(2), "reading the push log")?;
        let value: String = db(r.try_get(3), "reading the push log")?;
        let outcome: String = db(r.try_get(4), "reading the push log")?;
        let detail: Option<String> = db(r.try_get(5), "reading the push log")?;
        let at: i64 = db(r.try_get(6), "reading the push log")?;
        let kind = match outcome.as_str() {
            "applied" => "pushed",
            "stale" => "stale",
            "retry" => "retrying",
            "dead" => "dead_lettered",
            other => other,
        };
        if outcome == "applied" {
            applied.push((
                (
                    channel.clone(),
                    sku.to_string(),
                    field.clone(),
                    location.clone(),
                ),
                at,
            ));
        }
        let mut e = entry(at, &channel, kind, Some(&field), Some(location.clone()));
        e.cause = cause_at(&intervals, &channel, &field, &location, at);
        e.value = Some(value_text(&field, &value));
        e.detail = detail;
        out.push(e);
    }

    // Closed drift: confirmed by the read-back after a push, or resolved without one.
    for (channel, field, location, desired, cause, from, to) in closed {
        let pushed = applied.iter().any(|((c, _, f, l), at)| {
            c == &channel && f == &field && l == &location && *at >= from && *at <= to
        });
        let mut e = entry(
            to,
            &channel,
            if pushed { "confirmed" } else { "resolved" },
            Some(&field),
            Some(location),
        );
        e.cause = cause;
        e.value = Some(value_text(&field, &desired));
        out.push(e);
    }

    // Observed changes.
    for r in db(
        sqlx::query(
            "SELECT channel, field, location, value, previous, desired, in_sync, cause, at \
             FROM item_events WHERE sku = $1 ORDER BY at DESC, id DESC LIMIT $2",
        )
        .bind(sku)
        .bind(limit)
        .fetch_all(pool)
        .await,
        "reading observed changes",
    )? {
        let channel: String = db(r.try_get(0), "reading observed changes")?;
        let field: String = db(r.try_get(1), "reading observed changes")?;
        let location: String = db(r.try_get(2), "reading observed changes")?;
        let value: Option<String> = db(r.try_get(3), "reading observed changes")?;
        let previous: Option<String> = db(r.try_get(4), "reading observed changes")?;
        let desired: Option<String> = db(r.try_get(5), "reading observed changes")?;
        let in_sync: i64 = db(r.try_get(6), "reading observed changes")?;
        let cause: Option<String> = db(r.try_get(7), "reading observed changes")?;
        let at: i64 = db(r.try_get(8), "reading observed changes")?;
        let mut e = entry(at, &channel, "observed", Some(&field), Some(location));
        e.value = Some(value.map_or_else(|| "(none)".into(), |v| value_text(&field, &v)));
        e.cause = cause;
        let was = previous.map_or_else(|| "(none)".into(), |p| value_text(&field, &p));
        e.detail = Some(if in_sync != 0 {
            format!("was {was}; in sync")
        } else {
            format!(
                "was {was}; should be {}",
                desired.map_or_else(|| "(none)".into(), |d| value_text(&field, &d))
            )
        });
        out.push(e);
    }

    // Waiting in the outbox.
    for r in db(
        sqlx::query(
            "SELECT channel, field, location, value, status, hold_reason, last_error, attempts, updated_at \
             FROM outbox WHERE sku = $1",
        )
        .bind(sku)
        .fetch_all(pool)
        .await,
        "reading the outbox",
    )? {
        let channel: String = db(r.try_get(0), "reading the outbox")?;
        let field: String = db(r.try_get(1), "reading the outbox")?;
        let location: String = db(r.try_get(2), "reading the outbox")?;
        let value: String = db(r.try_get(3), "reading the outbox")?;
        let status: String = db(r.try_get(4), "reading the outbox")?;
        let hold: Option<String> = db(r.try_get(5), "reading the outbox")?;
        let error: Option<String> = db(r.try_get(6), "reading the outbox")?;
        let attempts: i64 = db(r.try_get(7), "reading the outbox")?;
        let at: i64 = db(r.try_get(8), "reading the outbox")?;
        let held = status == "held";
        let mut e = entry(
            at,
            &channel,
            if held { "held" } else { "queued" },
            Some(&field),
            Some(location.clone()),
        );
        e.cause = cause_at(&intervals, &channel, &field, &location, at);
        e.value = Some(value_text(&field, &value));
        e.detail = if held {
            hold
        } else {
            error.map(|e| format!("after {attempts} attempts: {e}"))
        };
        out.push(e);
    }
    Ok(out)
}

/// The cause of the drift a value was in at `at`, if any.
fn cause_at(
    intervals: &Intervals,
    channel: &str,
    field: &str,
    location: &str,
    at: i64,
) -> Option<String> {
    intervals
        .get(&(channel.to_string(), field.to_string(), location.to_string()))?
        .iter()
        .filter(|(from, to, _)| *from <= at && to.is_none_or(|t| at <= t))
        .max_by_key(|(from, _, _)| *from)
        .map(|(_, _, c)| c.clone().unwrap_or_else(|| "unknown".into()))
}

// ---- runs: consistency over time, convergence, overview -----------------------------------

/// Finished runs with their reports, newest first. With `whole_catalog`, only passes that
/// covered every SKU (scoped webhook passes check a handful and would skew the figures).
async fn reports(
    store: &Store,
    whole_catalog: bool,
    limit: i64,
) -> anyhow::Result<Vec<(i64, i64, RunReport)>> {
    let sql = if whole_catalog {
        "SELECT id, finished_at, report FROM runs WHERE finished_at IS NOT NULL AND report IS NOT NULL \
         AND scope NOT LIKE '%skus=%' ORDER BY id DESC LIMIT $1"
    } else {
        "SELECT id, finished_at, report FROM runs WHERE finished_at IS NOT NULL AND report IS NOT NULL \
         ORDER BY id DESC LIMIT $1"
    };
    let rows = db(
        sqlx::query(sql).bind(limit).fetch_all(store.pool()).await,
        "reading runs",
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: i64 = db(r.try_get(0), "reading runs")?;
        let finished: i64 = db(r.try_get(1), "reading runs")?;
        let json: String = db(r.try_get(2), "reading runs")?;
        // A report that does not parse (written by a much older version) is skipped.
        if let Ok(report) = serde_json::from_str::<RunReport>(&json) {
            out.push((id, finished, report));
        }
    }
    Ok(out)
}

/// Consistency per target channel (or one channel) over the latest `limit_runs` passes that
/// covered the whole catalog, oldest first.
pub async fn consistency_series(
    store: &Store,
    channel: Option<&str>,
    limit_runs: i64,
) -> anyhow::Result<Vec<ConsistencyPoint>> {
    let mut out = Vec::new();
    for (id, finished, report) in reports(store, true, limit_runs.max(1))
        .await?
        .into_iter()
        .rev()
    {
        for c in report
            .channels
            .iter()
            .filter(|c| c.role != "source")
            .filter(|c| channel.is_none_or(|ch| ch == c.id))
        {
            out.push(ConsistencyPoint {
                run_id: id,
                at: rfc3339(finished),
                channel: c.id.clone(),
                checked: c.items_checked,
                in_sync: c.in_sync,
                consistency: c.consistency,
                converge_ms_p50: c.converge_ms_p50,
            });
        }
    }
    Ok(out)
}

/// Times (ms) from a source change being seen to the read-back confirming the channel, for
/// drift of cause `source_changed` closed between `from_ms` and `to_ms`, per channel.
pub async fn convergence_times(
    store: &Store,
    from_ms: i64,
    to_ms: i64,
) -> anyhow::Result<HashMap<String, Vec<u64>>> {
    let rows = db(
        sqlx::query(
            "SELECT channel, resolved_at - first_seen FROM drift_history \
             WHERE cause = 'source_changed' AND resolved_at >= $1 AND resolved_at <= $2",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(store.pool())
        .await,
        "reading closed drift",
    )?;
    let mut out: HashMap<String, Vec<u64>> = HashMap::new();
    for r in rows {
        let channel: String = db(r.try_get(0), "reading closed drift")?;
        let ms: i64 = db(r.try_get(1), "reading closed drift")?;
        out.entry(channel).or_default().push(ms.max(0) as u64);
    }
    Ok(out)
}

/// Fills each channel's time to converge after a source change into a run's report: drift
/// of cause `source_changed` that closed during the run (between `started` and now), from
/// when the pass first saw it (its `drift_since`) to the confirming read-back. Derived from
/// the stored timestamps only.
pub async fn record_convergence(
    store: &Store,
    report: &mut RunReport,
    started: OffsetDateTime,
) -> anyhow::Result<()> {
    let times = convergence_times(store, unix_ms(started), crate::outbox::now_ms()).await?;
    for c in &mut report.channels {
        if let Some(v) = times.get(&c.id) {
            let mut v = v.clone();
            v.sort_unstable();
            c.source_changes_converged = v.len() as u64;
            c.converge_ms_p50 = v.get((v.len().saturating_sub(1)) / 2).copied();
            c.converge_ms_max = v.last().copied();
        }
    }
    Ok(())
}

/// Every configured channel now, and the latest runs.
pub async fn overview(store: &Store, config: &Config) -> anyhow::Result<Overview> {
    let pool = store.pool();
    let mut drift: HashMap<String, BTreeMap<String, u64>> = HashMap::new();
    for r in db(
        sqlx::query(
            "SELECT channel, COALESCE(cause, 'unknown'), COUNT(*) FROM target_state \
             WHERE in_sync = 0 GROUP BY channel, COALESCE(cause, 'unknown')",
        )
        .fetch_all(pool)
        .await,
        "counting open drift",
    )? {
        let n: i64 = db(r.try_get(2), "counting open drift")?;
        drift
            .entry(db(r.try_get(0), "counting open drift")?)
            .or_default()
            .insert(db(r.try_get(1), "counting open drift")?, n.max(0) as u64);
    }
    let counts = |sql: &'static str, what: &'static str| async move {
        let mut out: HashMap<(String, String), u64> = HashMap::new();
        for r in db(sqlx::query(sql).fetch_all(pool).await, what)? {
            let n: i64 = db(r.try_get(2), what)?;
            out.insert(
                (db(r.try_get(0), what)?, db(r.try_get(1), what)?),
                n.max(0) as u64,
            );
        }
        anyhow::Ok(out)
    };
    let outbox = counts(
        "SELECT channel, status, COUNT(*) FROM outbox GROUP BY channel, status",
        "measuring the outbox",
    )
    .await?;
    let dead = counts(
        "SELECT channel, 'open', COUNT(*) FROM dead_letters WHERE resolved_at IS NULL GROUP BY channel",
        "counting dead letters",
    )
    .await?;
    let orphans = counts(
        "SELECT channel, 'all', COUNT(*) FROM orphans GROUP BY channel",
        "counting orphans",
    )
    .await?;
    let get = |m: &HashMap<(String, String), u64>, c: &str, k: &str| {
        m.get(&(c.to_string(), k.to_string())).copied().unwrap_or(0)
    };
    let reservations_open: i64 = db(
        sqlx::query("SELECT COUNT(*) FROM reservations WHERE released_at IS NULL")
            .fetch_one(pool)
            .await
            .and_then(|r| r.try_get(0)),
        "counting reservations",
    )?;

    let all_runs = reports(store, false, OVERVIEW_RUNS).await?;
    let mut channels = Vec::new();
    for c in &config.connectors {
        let mut status = ChannelStatus {
            id: c.id.clone(),
            role: role_text(c),
            kind: c.kind.clone(),
            consistency: 1.0,
            checked: 0,
            in_sync: 0,
            drift_open: drift.get(&c.id).map_or(0, |d| d.values().sum()),
            drift_by_cause: drift.get(&c.id).cloned().unwrap_or_default(),
            outbox_queued: get(&outbox, &c.id, "queued"),
            outbox_held: get(&outbox, &c.id, "held"),
            dead_letters: get(&dead, &c.id, "open"),
            orphans: get(&orphans, &c.id, "all"),
            last_error: None,
            failing_since: None,
            last_ok: None,
            converge_ms_p50: None,
        };
        let mut streak = true;
        let mut figures = false;
        for (_, finished, report) in &all_runs {
            let Some(cr) = report.channels.iter().find(|cr| cr.id == c.id) else {
                continue;
            };
            if !figures && !report.scope.contains("skus=") {
                figures = true;
                status.consistency = cr.consistency;
                status.checked = cr.items_checked;
                status.in_sync = cr.in_sync;
            }
            if status.converge_ms_p50.is_none() {
                status.converge_ms_p50 = cr.converge_ms_p50;
            }
            match &cr.error {
                Some(e) if streak => {
                    if status.last_error.is_none() {
                        status.last_error = Some(e.clone());
                    }
                    status.failing_since = Some(same_format(&report.started_at));
                }
                Some(_) => {}
                None => {
                    streak = false;
                    if status.last_ok.is_none() {
                        status.last_ok = Some(rfc3339(*finished));
                    }
                }
            }
            if !streak && figures && status.last_ok.is_some() && status.converge_ms_p50.is_some() {
                break;
            }
        }
        channels.push(status);
    }

    let mut recent_runs = Vec::new();
    for r in store.runs(20).await? {
        let parsed = all_runs.iter().find(|(id, _, _)| *id == r.id).map(|x| &x.2);
        let targets = || {
            parsed
                .into_iter()
                .flat_map(|p| p.channels.iter())
                .filter(|c| c.role != "source")
        };
        recent_runs.push(RunSummary {
            id: r.id,
            scope: r.scope,
            dry_run: r.dry_run,
            status: r.status,
            started_at: rfc3339(r.started_at),
            finished_at: r.finished_at.map(rfc3339),
            duration_ms: parsed.map(|p| p.duration_ms),
            consistency_min: targets().map(|c| c.consistency).reduce(f64::min),
            drift: targets()
                .map(|c| c.drift.price + c.drift.stock + c.drift.missing + c.drift.orphan)
                .sum(),
            sent: targets().map(|c| c.corrections.sent).sum(),
            confirmed: targets().map(|c| c.corrections.confirmed).sum(),
            failed: targets().map(|c| c.corrections.failed).sum(),
        });
    }

    Ok(Overview {
        generated_at: rfc3339(crate::outbox::now_ms()),
        drift_open: channels.iter().map(|c| c.drift_open).sum(),
        dead_letters: channels.iter().map(|c| c.dead_letters).sum(),
        reservations_open: reservations_open.max(0) as u64,
        channels,
        recent_runs,
    })
}

// ---- retention -----------------------------------------------------------------------------

/// Deletes history older than `cutoff_ms`: finished runs (never the newest finished one),
/// closed drift, push outcomes, observed changes, processed webhook deliveries (`done`,
/// `duplicate`), released reservations and resolved dead letters. Never touches the target
/// state (open drift), the outbox (queued and held corrections), open dead letters, open
/// reservations, pending or rejected webhook deliveries.
pub async fn prune(store: &Store, cutoff_ms: i64) -> anyhow::Result<PruneCounts> {
    let mut counts = PruneCounts::default();
    // (table, which rows): each deleted in batches, every batch its own short transaction,
    // so a large first prune never holds the database against a running pass.
    let statements: [(&str, &str, &mut u64); 7] = [
        (
            "runs",
            "finished_at IS NOT NULL AND finished_at < $1 \
             AND id < (SELECT MAX(id) FROM runs WHERE finished_at IS NOT NULL)",
            &mut counts.runs,
        ),
        (
            "drift_history",
            "resolved_at < $1",
            &mut counts.drift_history,
        ),
        ("push_log", "at < $1", &mut counts.push_log),
        ("item_events", "at < $1", &mut counts.item_events),
        (
            "webhook_inbox",
            "status IN ('done', 'duplicate') AND COALESCE(processed_at, received_at) < $1",
            &mut counts.webhook_inbox,
        ),
        (
            "reservations",
            "released_at IS NOT NULL AND released_at < $1",
            &mut counts.reservations,
        ),
        (
            "dead_letters",
            "resolved_at IS NOT NULL AND resolved_at < $1",
            &mut counts.dead_letters,
        ),
    ];
    for (table, rows, n) in statements {
        // Only constant table names and conditions: no input reaches the text.
        let sql = format!(
            "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {rows} LIMIT $2)"
        );
        loop {
            let deleted = db(
                sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(cutoff_ms)
                    .bind(PRUNE_BATCH)
                    .execute(store.pool())
                    .await,
                &format!("pruning {table}"),
            )?
            .rows_affected();
            *n += deleted;
            if deleted < PRUNE_BATCH as u64 {
                break;
            }
        }
    }
    Ok(counts)
}

/// Rows deleted per statement when pruning.
const PRUNE_BATCH: i64 = 5_000;

/// [`prune`] with the configured retention (`daemon.retention_days`), relative to `now_ms`.
pub async fn prune_retained(
    store: &Store,
    config: &Config,
    now_ms: i64,
) -> anyhow::Result<PruneCounts> {
    let days = i64::try_from(config.daemon.retention_days).unwrap_or(i64::MAX / 86_400_000);
    prune(
        store,
        now_ms.saturating_sub(days.saturating_mul(86_400_000)),
    )
    .await
}

// ---- HTML ----------------------------------------------------------------------------------

/// The run report template (auto-escaped: the name ends in `.html`).
const RUN_TEMPLATE: &str = include_str!("../templates/report/run.html");

/// One line of the consistency chart.
#[derive(Debug, Clone, Serialize)]
struct ChartLine {
    channel: String,
    colour: &'static str,
    points: String,
    last: String,
}

/// The consistency chart: an inline SVG's lines, scaled to `width` × `height` (chart
/// coordinates only; no money is computed here).
/// The consistency at the bottom of the chart: the lowest point rounded down to 10 %, at
/// most 90 % (so small differences near 100 % stay visible).
fn chart_floor(series: &[ConsistencyPoint]) -> f64 {
    let min = series
        .iter()
        .map(|p| p.consistency.clamp(0.0, 1.0))
        .fold(1.0, f64::min);
    ((min * 10.0).floor() / 10.0).min(0.9)
}

/// Where a run sits on the chart's x axis (runs evenly spaced, oldest left), if charted.
fn chart_x(series: &[ConsistencyPoint], run: i64, width: f64) -> Option<String> {
    let mut runs: Vec<i64> = series.iter().map(|p| p.run_id).collect();
    runs.sort_unstable();
    runs.dedup();
    let i = runs.iter().position(|r| *r == run)?;
    let x = if runs.len() < 2 {
        width / 2.0
    } else {
        i as f64 * width / (runs.len() - 1) as f64
    };
    Some(format!("{x:.1}"))
}

fn chart(series: &[ConsistencyPoint], width: f64, height: f64) -> Vec<ChartLine> {
    const COLOURS: [&str; 6] = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
    ];
    let floor = chart_floor(series);
    let mut by_channel: BTreeMap<&str, Vec<&ConsistencyPoint>> = BTreeMap::new();
    for p in series {
        by_channel.entry(&p.channel).or_default().push(p);
    }
    by_channel
        .into_iter()
        .enumerate()
        .map(|(i, (channel, points))| ChartLine {
            channel: channel.to_string(),
            colour: COLOURS[i % COLOURS.len()],
            points: points
                .iter()
                .map(|p| {
                    format!(
                        "{},{:.1}",
                        chart_x(series, p.run_id, width).unwrap_or_default(),
                        height - (p.consistency.clamp(floor, 1.0) - floor) / (1.0 - floor) * height
                    )
                })
                .collect::<Vec<_>>()
                .join(" "),
            last: points
                .last()
                .map(|p| format!("{:.2}%", p.consistency * 100.0))
                .unwrap_or_default(),
        })
        .collect()
}

/// A run report as one self-contained HTML page (inline CSS and SVG, no external assets):
/// the run's figures per channel, the consistency of each channel over the runs in
/// `series`, and the open drift in `drift` (as it stands when rendered). Every stored text
/// is HTML-escaped.
pub fn report_html(
    report: &RunReport,
    series: &[ConsistencyPoint],
    drift: &[DriftRow],
    generated_at: &str,
) -> anyhow::Result<String> {
    let mut env = minijinja::Environment::new();
    env.add_template("run.html", RUN_TEMPLATE)
        .context("loading the report template")?;
    let channels: Vec<serde_json::Value> = report
        .channels
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.id,
                "kind": c.kind,
                "role": c.role,
                "items_checked": c.items_checked,
                "in_sync": c.in_sync,
                "consistency": format!("{:.2}%", c.consistency * 100.0),
                "ok": c.error.is_none() && c.items_checked == c.in_sync,
                "drift": c.drift,
                "causes": c.drift.by_cause.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>(),
                "corrections": c.corrections,
                "error": c.error,
                "converged": c.source_changes_converged,
                "converge_ms_p50": c.converge_ms_p50,
                "converge_ms_max": c.converge_ms_max,
                "would_push": c.would_push.iter().take(200).collect::<Vec<_>>(),
                "would_push_more": c.would_push.len().saturating_sub(200),
            })
        })
        .collect();
    let ctx = serde_json::json!({
        "report": {
            "run_id": report.run_id,
            "scope": report.scope,
            "dry_run": report.dry_run,
            "started_at": report.started_at,
            "finished_at": report.finished_at,
            "duration_ms": report.duration_ms,
            "status": report.status,
            "phase_ms": report.phase_ms,
            "reservations": report.reservations,
            "problems": report.problems,
        },
        "converged": report.converged(),
        "channels": channels,
        "chart": chart(series, 600.0, 160.0),
        "chart_marker": chart_x(series, report.run_id, 600.0),
        "chart_floor": format!("{:.0}%", chart_floor(series) * 100.0),
        "chart_mid": format!("{:.0}%", (1.0 + chart_floor(series)) * 50.0),
        "chart_runs": series.iter().map(|p| p.run_id).collect::<std::collections::BTreeSet<_>>().len(),
        "drift": drift,
        "generated_at": generated_at,
    });
    env.get_template("run.html")
        .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&ctx))))
        .context("rendering the HTML report")
}

// ---- terminal renderings -------------------------------------------------------------------

fn table() -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t
}

/// An age for people: `45s`, `12m`, `3h 5m`, `2d 4h`.
pub fn age_text(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m", s / 60),
        3_600..86_400 => format!("{}h {}m", s / 3_600, s % 3_600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3_600),
    }
}

/// The column names of [`drift_table`] and [`drift_csv`].
const DRIFT_COLUMNS: [&str; 11] = [
    "channel",
    "sku",
    "field",
    "location",
    "desired",
    "observed",
    "last_pushed",
    "cause",
    "since",
    "age",
    "detail",
];

fn drift_cells(d: &DriftRow, age: String) -> [String; 11] {
    [
        d.channel.clone(),
        d.sku.clone(),
        d.field.clone(),
        d.location.clone().unwrap_or_default(),
        d.desired.clone().unwrap_or_default(),
        d.observed.clone().unwrap_or_else(|| "(none)".into()),
        d.last_pushed.clone().unwrap_or_default(),
        d.cause.clone(),
        d.since.clone(),
        age,
        d.detail.clone().unwrap_or_default(),
    ]
}

/// Open drift as a terminal table, with a count per cause underneath.
pub fn drift_table(rows: &[DriftRow]) -> String {
    if rows.is_empty() {
        return "no open drift\n".into();
    }
    let mut t = table();
    t.set_header(DRIFT_COLUMNS.map(|c| c.replace('_', " ")));
    for d in rows {
        t.add_row(drift_cells(d, age_text(d.age_secs)));
    }
    let mut by_cause: BTreeMap<&str, u64> = BTreeMap::new();
    for d in rows {
        *by_cause.entry(&d.cause).or_default() += 1;
    }
    format!(
        "{t}\n{} open: {}\n",
        rows.len(),
        by_cause
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Open drift as CSV (age in seconds).
pub fn drift_csv(rows: &[DriftRow]) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = DRIFT_COLUMNS.map(str::to_string);
    header[9] = "age_secs".into();
    w.write_record(&header)?;
    for d in rows {
        w.write_record(drift_cells(d, d.age_secs.to_string()))?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// One item for people: where the customer can get it, stock at the source, each
/// channel's prices and stock, orders in flight, open drift with why, and the timeline.
pub fn item_table(v: &ItemView) -> String {
    let mut out = format!(
        "{}{}\nsource price {} · available {} at the source\n",
        v.sku,
        v.name
            .as_deref()
            .map(|n| format!(" — {n}"))
            .unwrap_or_default(),
        v.source_price.as_deref().unwrap_or("(none)"),
        v.available_total,
    );

    out.push_str("\nWhere can the customer get it?\n");
    let buyable: Vec<&ChannelItem> = v
        .channels
        .iter()
        .filter(|c| c.listed && c.stock_total.unwrap_or(0) > 0)
        .collect();
    for c in &v.channels {
        let price = match (&c.price, &c.sale_price) {
            (Some(p), Some(s)) => format!("{s} (sale; regular {p})"),
            (Some(p), None) => p.clone(),
            _ => "no price".into(),
        };
        let line = if !c.listed {
            "not listed".to_string()
        } else if c.stock_total.unwrap_or(0) > 0 {
            format!("yes: {} units at {price}", c.stock_total.unwrap_or(0))
        } else {
            format!("listed at {price}, out of stock")
        };
        out.push_str(&format!("  {:<14} {line}\n", c.channel));
    }
    if buyable.is_empty() {
        out.push_str("  nowhere right now\n");
    }

    if !v.locations.is_empty() {
        let mut t = table();
        t.set_header(["location", "available", "source", "read at"]);
        for l in &v.locations {
            t.add_row([
                l.location.clone(),
                l.available.to_string(),
                l.source.clone().unwrap_or_default(),
                l.updated_at.clone(),
            ]);
        }
        out.push_str(&format!("\nStock at the source\n{t}\n"));
    }

    let mut t = table();
    t.set_header([
        "channel",
        "listed",
        "price",
        "sale price",
        "should be",
        "stock",
        "in sync",
        "checked",
    ]);
    for c in &v.channels {
        let stock = if c.stock.len() > 1 {
            c.stock
                .iter()
                .map(|s| {
                    format!(
                        "{}={}{}",
                        s.location,
                        s.observed.map_or_else(|| "-".into(), |o| o.to_string()),
                        match (&s.desired, s.in_sync) {
                            (Some(d), Some(false)) => format!(" (should be {d})"),
                            _ => String::new(),
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            match c.stock.first() {
                Some(s) => format!(
                    "{}{}",
                    s.observed.map_or_else(|| "-".into(), |o| o.to_string()),
                    match (&s.desired, s.in_sync) {
                        (Some(d), Some(false)) => format!(" (should be {d})"),
                        _ => String::new(),
                    }
                ),
                None => "-".into(),
            }
        };
        t.add_row([
            c.channel.clone(),
            if c.listed { "yes" } else { "no" }.into(),
            c.price.clone().unwrap_or_else(|| "-".into()),
            c.sale_price.clone().unwrap_or_else(|| "-".into()),
            c.desired_offer.clone().unwrap_or_else(|| "-".into()),
            stock,
            match c.in_sync {
                Some(true) => "yes".into(),
                Some(false) => "NO".into(),
                None => "never checked".into(),
            },
            c.checked_at.clone().unwrap_or_default(),
        ]);
    }
    out.push_str(&format!("\nChannels\n{t}\n"));

    if !v.reservations.is_empty() {
        out.push_str("\nOrders in flight\n");
        for r in &v.reservations {
            out.push_str(&format!(
                "  {} {} units on {} ({}, since {}){}\n",
                if r.open { "HELD    " } else { "released" },
                r.quantity,
                r.channel,
                r.signal,
                r.created_at,
                match (&r.released_at, &r.release_reason) {
                    (Some(at), Some(why)) => format!(": {why} at {at}"),
                    _ => format!(", until {} at the latest", r.expires_at),
                }
            ));
        }
    }

    out.push_str("\nWhy does a channel differ? (open drift)\n");
    if v.drift.is_empty() {
        out.push_str("  nothing: every channel shows what it should\n");
    } else {
        for d in &v.drift {
            out.push_str(&format!(
                "  {} {}{}: shows {}, should be {} — {} for {}{}{}\n",
                d.channel,
                d.field,
                d.location
                    .as_deref()
                    .map(|l| format!("@{l}"))
                    .unwrap_or_default(),
                d.observed.as_deref().unwrap_or("(none)"),
                d.desired.as_deref().unwrap_or("(none)"),
                d.cause,
                age_text(d.age_secs),
                d.last_pushed
                    .as_deref()
                    .map(|p| format!("; last pushed {p}"))
                    .unwrap_or_default(),
                d.detail
                    .as_deref()
                    .map(|p| format!("; {p}"))
                    .unwrap_or_default(),
            ));
        }
    }

    out.push_str("\nTimeline (oldest first)\n");
    if v.timeline.is_empty() {
        out.push_str("  nothing recorded yet\n");
    } else {
        let mut t = table();
        t.set_header(["at", "channel", "what", "field", "value", "cause", "detail"]);
        for e in &v.timeline {
            t.add_row([
                e.at.clone(),
                e.channel.clone(),
                e.kind.clone(),
                match (&e.field, &e.location) {
                    (Some(f), Some(l)) => format!("{f}@{l}"),
                    (Some(f), None) => f.clone(),
                    _ => String::new(),
                },
                e.value.clone().unwrap_or_default(),
                e.cause.clone().unwrap_or_default(),
                e.detail.clone().unwrap_or_default(),
            ]);
        }
        out.push_str(&format!("{t}\n"));
    }
    out
}

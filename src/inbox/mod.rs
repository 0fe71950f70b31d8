//! The durable webhook inbox and its processor.
//!
//! The HTTP server ([`crate::http`]) stores every delivery whose signature passed in the
//! `webhook_inbox` table *before* answering 2xx, one row per (connector, event id), so a
//! redelivery is answered but never stored twice. Deliveries arriving together are
//! written in one transaction ([`writer`]: group commit). The [`Processor`] then claims `pending`
//! rows in id order, asks the connector what they are about ([`WebhookHandler::parse`]),
//! maps the ids they name to SKUs through the `bindings` table, collects SKUs for a short
//! window (`daemon.http.coalesce_ms`) so a burst goes in one pass, and runs one scoped
//! [`Engine::reconcile`] over them. That pass re-reads the SKUs from the source and every
//! target and pushes what differs: a webhook is a hint, never a blind overwrite. Rows are
//! marked `done` only after the pass returned, so a crash or a failed pass leaves them
//! `pending` for the next processor.
//!
//! Order lines (`sold`) reserve their units (see [`crate::reservations`]) before the pass,
//! so the pass already holds them off every other channel; a redelivered order reserves
//! nothing twice.
//!
//! Headers that carry secrets (signatures, tokens, cookies) are never stored, and neither
//! headers nor bodies are logged above `debug`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use omnisync_sdk::webhook::{Headers, Shown, WebhookHandler, WebhookHint};
use sha2::{Digest, Sha256};
use sqlx::Row;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, Scope};
use crate::outbox::{Lane, now_ms};
use crate::planner::{Field, StateKey, encode_offer};
use crate::store::{Store, StoreError};

pub(crate) mod writer;

/// Rows claimed per pass at most.
const BATCH: i64 = 1000;
/// How often an idle processor looks for rows nobody woke it for (written by another
/// daemon sharing a PostgreSQL database, or left by a failed pass).
const IDLE_POLL: Duration = Duration::from_secs(5);
/// The most SKUs one webhook pass takes when its deliveries name more
/// ([`this_pass`]).
const PASS_SKUS: usize = 250;
/// First and longest wait after a failed pass.
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// SKUs read back per read-back pass at most.
const READ_BACK_BATCH: i64 = 1000;
/// The longest writes taken as shown wait for their read-back while deliveries keep coming.
const READ_BACK_MAX_WAIT: Duration = Duration::from_secs(30);
/// Longer provider event ids are stored as their SHA-256.
const MAX_EVENT_ID: usize = 200;

/// Counters of the webhook endpoint and the processor, in memory (the alert rule on signature
/// failures reads them; Prometheus gets the same events from [`crate::metrics::webhook`]).
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Deliveries stored as `pending` (answered 200).
    pub accepted: AtomicU64,
    /// Redeliveries of an event already stored (answered 200, not stored again).
    pub duplicates: AtomicU64,
    /// Missing or bad signatures (answered 401, nothing stored).
    pub unauthorized: AtomicU64,
    /// Signed but not understood (stored as `rejected`, answered 400).
    pub rejected: AtomicU64,
    /// Bodies over `daemon.http.body_limit_bytes` (answered 413, nothing stored).
    pub too_large: AtomicU64,
    /// Deliveries for an unknown connector or one without webhooks (answered 404).
    pub not_found: AtomicU64,
    /// Inbox rows the processor settled (`done` or `rejected`).
    pub processed: AtomicU64,
    /// Scoped reconcile passes the processor ran.
    pub passes: AtomicU64,
}

/// A copy of [`WebhookStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WebhookStatsSnapshot {
    /// See [`WebhookStats::accepted`].
    pub accepted: u64,
    /// See [`WebhookStats::duplicates`].
    pub duplicates: u64,
    /// See [`WebhookStats::unauthorized`].
    pub unauthorized: u64,
    /// See [`WebhookStats::rejected`].
    pub rejected: u64,
    /// See [`WebhookStats::too_large`].
    pub too_large: u64,
    /// See [`WebhookStats::not_found`].
    pub not_found: u64,
    /// See [`WebhookStats::processed`].
    pub processed: u64,
    /// See [`WebhookStats::passes`].
    pub passes: u64,
}

impl WebhookStats {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> WebhookStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WebhookStatsSnapshot {
            accepted: get(&self.accepted),
            duplicates: get(&self.duplicates),
            unauthorized: get(&self.unauthorized),
            rejected: get(&self.rejected),
            too_large: get(&self.too_large),
            not_found: get(&self.not_found),
            processed: get(&self.processed),
            passes: get(&self.passes),
        }
    }
}

/// The state of an inbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxStatus {
    /// Stored, not yet turned into a pass.
    Pending,
    /// Handled (a pass covered it, or there was nothing to do; `reason` says which).
    Done,
    /// Signed but not understood; `reason` says why.
    Rejected,
    /// Settled as a repeat of an event already handled (reserved).
    Duplicate,
}

impl InboxStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            InboxStatus::Pending => "pending",
            InboxStatus::Done => "done",
            InboxStatus::Rejected => "rejected",
            InboxStatus::Duplicate => "duplicate",
        }
    }
}

/// A delivery to store.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    /// The connector id (from the URL).
    pub connector: &'a str,
    /// The provider's event id, or [`body_event_id`].
    pub event_id: &'a str,
    /// The topics the delivery carries, when it parsed.
    pub topic: Option<&'a str>,
    /// When it arrived (ms).
    pub received_at: i64,
    /// Its headers; secret ones are dropped here ([`stored_headers`]).
    pub headers: &'a Headers,
    /// The raw body.
    pub body: &'a str,
    /// `pending`, or `rejected` with a reason.
    pub status: InboxStatus,
    /// Why it was rejected.
    pub reason: Option<&'a str>,
}

/// A `pending` row, claimed by the processor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxRow {
    /// Row id.
    pub id: i64,
    /// The connector id.
    pub connector: String,
    /// The event id it is stored under.
    pub event_id: String,
    /// Its non-secret headers.
    pub headers: Headers,
    /// The raw body.
    pub body: String,
}

/// Whether a header may carry a secret (signatures, tokens, credentials): such headers are
/// never stored. Names are lower-case.
pub fn is_secret_header(name: &str) -> bool {
    const MARKERS: [&str; 9] = [
        "signature",
        "hmac",
        "authorization",
        "cookie",
        "token",
        "secret",
        "api-key",
        "apikey",
        "password",
    ];
    MARKERS.iter().any(|m| name.contains(m))
}

/// The headers worth keeping with a delivery: all but the secret ones.
pub fn stored_headers(headers: &Headers) -> Headers {
    headers
        .iter()
        .filter(|(k, _)| !is_secret_header(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The event id of a delivery that carries none: SHA-256 over the connector id and the
/// body, so a byte-identical redelivery is recognized.
pub fn body_event_id(connector: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(connector.as_bytes());
    h.update([0u8]);
    h.update(body);
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// The event id a delivery is stored under: the provider's (hashed when unreasonably
/// long), or [`body_event_id`] when it has none.
pub fn event_id(
    handler: &dyn WebhookHandler,
    connector: &str,
    headers: &Headers,
    body: &[u8],
) -> String {
    match handler
        .event_id(headers, body)
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
    {
        Some(id) if id.len() <= MAX_EVENT_ID => id,
        Some(id) => format!("sha256:{}", hex::encode(Sha256::digest(id.as_bytes()))),
        None => body_event_id(connector, body),
    }
}

/// The topics of parsed hints, for the `topic` column (distinct, comma-separated).
pub fn topics(hints: &[WebhookHint]) -> Option<String> {
    let set: BTreeSet<&str> = hints
        .iter()
        .map(|h| h.topic.as_str())
        .filter(|t| !t.is_empty())
        .collect();
    (!set.is_empty()).then(|| set.into_iter().collect::<Vec<_>>().join(","))
}

fn db<T>(r: Result<T, sqlx::Error>, context: &str) -> Result<T, StoreError> {
    r.map_err(|source| StoreError::Db {
        context: context.to_string(),
        source,
    })
}

/// `($start, $start+1, …)`: placeholders only, the one kind of generated SQL here.
/// A binding as the ref map needs it: the SKU, the listing id and the connector's extra ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingIds {
    /// The canonical SKU.
    pub sku: String,
    /// The listing's id in the channel.
    pub external_id: String,
    /// The connector's extra ids (`Record::refs`).
    pub refs: BTreeMap<String, String>,
}

impl Store {
    /// Stores a delivery. Returns its row id, or `None` when the same (connector, event id)
    /// is already stored (a redelivery: nothing is written).
    pub async fn inbox_insert(&self, d: &NewDelivery<'_>) -> Result<Option<i64>, StoreError> {
        let headers =
            serde_json::to_string(&stored_headers(d.headers)).unwrap_or_else(|_| "{}".into());
        self.inbox_writer()
            .insert(writer::Delivery {
                connector: d.connector.to_string(),
                event_id: d.event_id.to_string(),
                topic: d.topic.map(str::to_string),
                received_at: d.received_at,
                headers,
                body: d.body.to_string(),
                status: d.status.as_str(),
                reason: d.reason.map(str::to_string),
            })
            .await
    }

    /// Up to `limit` `pending` rows, oldest first.
    pub async fn inbox_pending(&self, limit: i64) -> Result<Vec<InboxRow>, StoreError> {
        self.pending_rows(None, limit).await
    }

    /// Like [`Store::inbox_pending`], the rows of the `first` connectors before the others
    /// (each part oldest first).
    pub async fn inbox_pending_first(
        &self,
        first: &[String],
        limit: i64,
    ) -> Result<Vec<InboxRow>, StoreError> {
        let mut rows = Vec::new();
        for connector in first {
            let room = limit - rows.len() as i64;
            if room <= 0 {
                return Ok(rows);
            }
            rows.extend(self.pending_rows(Some(connector), room).await?);
        }
        let taken: HashSet<i64> = rows.iter().map(|r| r.id).collect();
        let room = usize::try_from(limit)
            .unwrap_or(0)
            .saturating_sub(rows.len());
        let others = self.pending_rows(None, limit).await?;
        rows.extend(
            others
                .into_iter()
                .filter(|r| !taken.contains(&r.id))
                .take(room),
        );
        Ok(rows)
    }

    /// Up to `limit` `pending` rows (of one connector, or all), oldest first.
    async fn pending_rows(
        &self,
        connector: Option<&str>,
        limit: i64,
    ) -> Result<Vec<InboxRow>, StoreError> {
        let query = match connector {
            None => sqlx::query(
                "SELECT id, connector, event_id, headers, body FROM webhook_inbox \
                 WHERE status = 'pending' ORDER BY id LIMIT $1",
            )
            .bind(limit),
            Some(c) => sqlx::query(
                "SELECT id, connector, event_id, headers, body FROM webhook_inbox \
                 WHERE status = 'pending' AND connector = $1 ORDER BY id LIMIT $2",
            )
            .bind(c)
            .bind(limit),
        };
        let rows = query.fetch_all(self.pool()).await;
        let rows = db(rows, "claiming webhook deliveries")?;
        rows.iter()
            .map(|r| {
                let headers: String = db(r.try_get(3), "reading the inbox")?;
                Ok(InboxRow {
                    id: db(r.try_get(0), "reading the inbox")?,
                    connector: db(r.try_get(1), "reading the inbox")?,
                    event_id: db(r.try_get(2), "reading the inbox")?,
                    headers: serde_json::from_str(&headers).map_err(|e| StoreError::Corrupt {
                        table: "webhook_inbox",
                        detail: format!("headers: {e}"),
                    })?,
                    body: db(r.try_get(4), "reading the inbox")?,
                })
            })
            .collect()
    }

    /// Settles claimed rows, in one transaction: rows done without remark in one statement
    /// per chunk, the others one by one. Only `pending` rows change.
    pub async fn inbox_settle(
        &self,
        settled: &[(i64, InboxStatus, Option<String>)],
        now: i64,
    ) -> Result<(), StoreError> {
        if settled.is_empty() {
            return Ok(());
        }
        let mut tx = db(self.begin_write().await, "settling webhook deliveries")?;
        let plain: Vec<i64> = settled
            .iter()
            .filter(|(_, s, r)| *s == InboxStatus::Done && r.is_none())
            .map(|(id, _, _)| *id)
            .collect();
        for chunk in plain.chunks(500) {
            let sql = format!(
                "UPDATE webhook_inbox SET status = 'done', reason = NULL, processed_at = $1 \
                 WHERE status = 'pending' AND id IN {}",
                crate::store::values_list(chunk.len(), 2)
            );
            let mut q = sqlx::query(self.dynamic(sql)).bind(now);
            for id in chunk {
                q = q.bind(*id);
            }
            db(q.execute(&mut *tx).await, "settling webhook deliveries")?;
        }
        for (id, status, reason) in settled
            .iter()
            .filter(|(_, s, r)| !(*s == InboxStatus::Done && r.is_none()))
        {
            let q = sqlx::query(
                "UPDATE webhook_inbox SET status = $1, reason = $2, processed_at = $3 \
                 WHERE status = 'pending' AND id = $4",
            )
            .bind(status.as_str())
            .bind(reason.as_deref())
            .bind(now)
            .bind(*id)
            .execute(&mut *tx)
            .await;
            db(q, "settling a webhook delivery")?;
        }
        db(tx.commit().await, "settling webhook deliveries")?;
        Ok(())
    }

    /// Every binding of a channel, with the ids a webhook may name.
    pub async fn binding_ids(&self, channel: &str) -> Result<Vec<BindingIds>, StoreError> {
        let rows = sqlx::query("SELECT sku, external_id, refs FROM bindings WHERE channel = $1")
            .bind(channel)
            .fetch_all(self.pool())
            .await;
        let rows = db(rows, "reading bindings")?;
        rows.iter()
            .map(|r| {
                let refs: String = db(r.try_get(2), "reading bindings")?;
                Ok(BindingIds {
                    sku: db(r.try_get(0), "reading bindings")?,
                    external_id: db(r.try_get(1), "reading bindings")?,
                    refs: serde_json::from_str(&refs).map_err(|e| StoreError::Corrupt {
                        table: "bindings",
                        detail: format!("refs: {e}"),
                    })?,
                })
            })
            .collect()
    }
}

/// (`refs` key, value) → SKU for one connector; `external_id` is the key of the listing id.
type RefMap = HashMap<(String, String), String>;

/// What one row asks for.
struct Wanted {
    id: i64,
    skus: BTreeSet<String>,
    unmapped: Vec<(String, String)>,
    hints: usize,
    /// Order lines.
    sold: Vec<SoldRef>,
    /// Values the delivery says the channel shows, by SKU or by an id still to map.
    shown: Vec<(Target, Shown)>,
    /// SKUs dropped from `skus` because the delivery only showed the daemon's own writes
    /// ([`Processor::confirm_echoes`]).
    confirmed: usize,
}

/// A SKU, or an id (`refs` key, value) still to map to one.
type Target = Result<String, (String, String)>;

/// One order line as a delivery names it: the SKU, or an id still to map to one.
struct SoldRef {
    line: i64,
    target: Target,
    quantity: i64,
}

/// Turns `pending` inbox rows into scoped reconcile passes.
pub struct Processor {
    engine: Arc<Engine>,
    stats: Arc<WebhookStats>,
    wake: Arc<Notify>,
    coalesce: Duration,
    refs: HashMap<String, RefMap>,
    /// Wakes each target channel's pushers, one per push lane (while [`Processor::run`]
    /// runs).
    pushers: HashMap<String, Vec<Arc<Notify>>>,
}

impl Processor {
    /// A processor for `engine`'s store and connectors. `wake` is notified by the HTTP
    /// server when it stored a delivery; `coalesce` is how long to collect deliveries
    /// after a wake before the pass.
    pub fn new(
        engine: Arc<Engine>,
        stats: Arc<WebhookStats>,
        wake: Arc<Notify>,
        coalesce: Duration,
    ) -> Processor {
        Processor {
            engine,
            stats,
            wake,
            coalesce,
            refs: HashMap::new(),
            pushers: HashMap::new(),
        }
    }

    /// Runs until `stop`: handles what is pending at once (rows left by a previous
    /// processor), then waits for a wake (or looks again every few seconds), lets the
    /// coalescing window pass, and handles everything pending in one pass. A failed pass
    /// leaves its rows pending and is retried with growing delays. A pass in progress is
    /// finished before stopping; a window in progress is abandoned (its rows stay pending).
    pub async fn run(mut self, stop: CancellationToken) {
        let mut backoff = MIN_BACKOFF;
        let read_back_delay =
            Duration::from_millis(self.engine.config().daemon.http.read_back_delay_ms);
        // One pusher per target channel and push lane: a slow channel holds back no
        // other, and a channel's stock waits for none of its price writes.
        let mut pushers = tokio::task::JoinSet::new();
        for id in self.engine.target_ids() {
            let window = Duration::from_millis(
                self.engine
                    .config()
                    .connectors
                    .iter()
                    .find(|c| c.id == id)
                    .map_or(0, |c| c.push_window_ms),
            );
            for &lane in self.engine.push_lanes(&id) {
                let kick = Arc::new(Notify::new());
                // What is queued from before a restart is pushed at once.
                kick.notify_one();
                self.pushers
                    .entry(id.clone())
                    .or_default()
                    .push(kick.clone());
                let (engine, stop, id) = (self.engine.clone(), stop.clone(), id.clone());
                pushers.spawn(async move {
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = kick.notified() => {}
                        }
                        // The channel's window, or longer when its API's reported usage
                        // (or, for stock in a lane of its own, its budget) asks for it:
                        // corrections queued meanwhile go in the same call.
                        let connector = engine.connector(&id);
                        let paced = connector.as_ref().and_then(|c| c.pacing());
                        let mut wait = paced.map_or(window, |p| p.max(window));
                        // Stock of its own lane: as long as the API's budget asks.
                        if let (Lane::Stock, Some(c)) = (lane, &connector) {
                            wait = wait.max(c.stock_window());
                        }
                        if !wait.is_zero() {
                            tokio::select! {
                                _ = stop.cancelled() => break,
                                _ = tokio::time::sleep(wait) => {}
                            }
                        }
                        push_channel(&engine, &id, Some(lane)).await;
                    }
                });
            }
        }
        // Writes taken as shown may wait from before a restart: look once at the start.
        let mut read_back_waiting = true;
        let mut last_read_back = tokio::time::Instant::now();
        while !stop.is_cancelled() {
            match self.process_pending().await {
                Ok(0) if read_back_waiting => {
                    backoff = MIN_BACKOFF;
                    // Quiet for the delay: read back; a delivery first is handled first.
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = self.wake.notified() => {
                            tokio::select! {
                                _ = stop.cancelled() => break,
                                _ = tokio::time::sleep(self.coalesce) => {}
                            }
                            continue;
                        }
                        _ = tokio::time::sleep(read_back_delay) => {}
                    }
                    read_back_waiting = self.read_back(&mut last_read_back).await;
                }
                Ok(0) => {
                    backoff = MIN_BACKOFF;
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                    }
                    // Let a burst arrive, so it goes in one pass.
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(self.coalesce) => {}
                    }
                }
                Ok(_) => {
                    backoff = MIN_BACKOFF;
                    read_back_waiting = true;
                    // Deliveries keep coming: read back at the latest every READ_BACK_MAX_WAIT.
                    if last_read_back.elapsed() >= READ_BACK_MAX_WAIT {
                        read_back_waiting = self.read_back(&mut last_read_back).await;
                    }
                }
                Err(e) => {
                    tracing::error!(
                        error = format!("{e:#}"),
                        retry_in_ms = backoff.as_millis() as u64,
                        "webhook inbox: pass failed; deliveries stay pending"
                    );
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        // Pushes in progress finish (the daemon's drain deadline bounds them).
        while pushers.join_next().await.is_some() {}
        self.pushers.clear();
    }

    /// One read-back pass over writes webhook passes took as shown
    /// ([`Engine::read_back_pending`]). Returns whether more may wait (a pass ran, or
    /// failed): the next quiet moment looks again.
    async fn read_back(&self, last: &mut tokio::time::Instant) -> bool {
        *last = tokio::time::Instant::now();
        match self.engine.read_back_pending(READ_BACK_BATCH).await {
            Ok(None) => false,
            Ok(Some(report)) => {
                tracing::debug!(
                    run = report.run_id,
                    "webhook inbox: read back writes taken as shown"
                );
                true
            }
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "webhook inbox: reading back writes failed; tried again later"
                );
                true
            }
        }
    }

    /// Handles one batch of `pending` rows: parse, map to SKUs, one scoped pass, settle.
    /// Returns how many rows it settled (0: nothing was pending). On error (the pass failed
    /// or the source could not be read) the rows that needed the pass stay `pending`.
    pub async fn process_pending(&mut self) -> anyhow::Result<usize> {
        let store = self.engine.store().clone();
        // Source changes first: a burst of a target's webhooks must not keep them waiting.
        let rows = store
            .inbox_pending_first(&self.engine.source_ids(), BATCH)
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut settled: Vec<(i64, InboxStatus, Option<String>)> = Vec::new();
        let mut wanted: Vec<Wanted> = Vec::new();
        for row in &rows {
            match self.parse(row) {
                Ok(w) => wanted.push(w),
                Err((status, reason)) => settled.push((row.id, status, Some(reason))),
            }
        }
        // Map refs to SKUs, reloading a connector's bindings once when a ref is unknown.
        let by_id: HashMap<i64, &InboxRow> = rows.iter().map(|r| (r.id, r)).collect();
        let mut reloaded: BTreeSet<String> = BTreeSet::new();
        for w in &mut wanted {
            if w.unmapped.is_empty() {
                continue;
            }
            let Some(connector) = by_id.get(&w.id).map(|r| r.connector.as_str()) else {
                continue;
            };
            let missing =
                |map: Option<&RefMap>, r: &(String, String)| map.is_none_or(|m| !m.contains_key(r));
            if w.unmapped
                .iter()
                .any(|r| missing(self.refs.get(connector), r))
                && !reloaded.contains(connector)
            {
                let map = self.load_refs(&store, connector).await?;
                self.refs.insert(connector.to_string(), map);
                reloaded.insert(connector.to_string());
            }
            let map = self.refs.get(connector);
            let mut still = Vec::new();
            for r in std::mem::take(&mut w.unmapped) {
                match map.and_then(|m| m.get(&r)) {
                    Some(sku) => {
                        w.skus.insert(sku.clone());
                    }
                    None => still.push(r),
                }
            }
            w.unmapped = still;
        }

        // Reserve sold units before the pass, so it already holds them off the other channels.
        let mut lines = Vec::new();
        for w in &wanted {
            let Some(row) = by_id.get(&w.id) else {
                continue;
            };
            let map = self.refs.get(&row.connector);
            for SoldRef {
                line,
                target,
                quantity,
            } in &w.sold
            {
                let sku = match target {
                    Ok(sku) => Some(sku.clone()),
                    Err(r) => map.and_then(|m| m.get(r)).cloned(),
                };
                if let Some(sku) = sku {
                    lines.push(crate::reservations::SoldLine {
                        channel: row.connector.clone(),
                        event_id: row.event_id.clone(),
                        line: *line,
                        sku,
                        quantity: *quantity,
                    });
                }
            }
        }
        if !lines.is_empty() {
            let now = now_ms();
            let timeout = self.engine.config().daemon.reservation_timeout_secs as i64 * 1000;
            let new = store.reserve(&lines, now, now + timeout).await?;
            tracing::info!(
                lines = lines.len(),
                new,
                "webhook inbox: reserved sold units"
            );
        }

        self.confirm_echoes(&store, &by_id, &mut wanted).await?;
        let sources = self.engine.source_ids();
        let wanted = this_pass(wanted, PASS_SKUS, |id| {
            by_id
                .get(&id)
                .is_some_and(|r| sources.contains(&r.connector))
        });

        let mut skus: BTreeSet<String> = BTreeSet::new();
        let mut named_by: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut covered: Vec<(i64, Option<String>)> = Vec::new();
        for w in wanted {
            let unmapped = (!w.unmapped.is_empty()).then(|| {
                let shown: Vec<String> = w
                    .unmapped
                    .iter()
                    .take(5)
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let more = w.unmapped.len().saturating_sub(5);
                format!(
                    "no SKU is bound to {}{}; left to the next full reconcile",
                    shown.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                )
            });
            if w.skus.is_empty() {
                let reason = unmapped.unwrap_or_else(|| {
                    if w.confirmed > 0 {
                        "it shows the daemon's own writes (confirmed without a read, or left \
                         to the read-back)"
                            .to_string()
                    } else if w.hints == 0 {
                        "the delivery names nothing to re-read".to_string()
                    } else {
                        "the delivery names no SKU and no id".to_string()
                    }
                });
                settled.push((w.id, InboxStatus::Done, Some(reason)));
            } else {
                if let Some(row) = by_id.get(&w.id) {
                    named_by
                        .entry(row.connector.clone())
                        .or_default()
                        .extend(w.skus.iter().cloned());
                }
                skus.extend(w.skus);
                covered.push((w.id, unmapped));
            }
        }
        // What needs no pass is settled now, whatever becomes of the pass.
        let now = now_ms();
        store.inbox_settle(&settled, now).await?;
        let mut count = settled.len();
        if !skus.is_empty() {
            let scope = Scope {
                skus: Some(skus.into_iter().collect()),
                named_by: Some(named_by),
                enqueue_only: true,
                ..Scope::default()
            };
            let n = scope.skus.as_ref().map_or(0, Vec::len);
            let to_read: BTreeMap<&str, usize> = scope
                .named_by
                .iter()
                .flatten()
                .map(|(c, skus)| (c.as_str(), skus.len()))
                .collect();
            tracing::info!(
                deliveries = covered.len(),
                skus = n,
                ?to_read,
                "webhook inbox: reconciling the SKUs deliveries named"
            );
            let report = self.engine.reconcile(&scope).await?;
            WebhookStats::bump(&self.stats.passes);
            if report.status == "failed" {
                anyhow::bail!(
                    "pass {} failed: {}",
                    report.run_id,
                    report.problems.join("; ")
                );
            }
            // Each channel's queue is pushed on its own: by its pusher when the processor
            // runs, here otherwise.
            for c in report.channels.iter().filter(|c| c.corrections.queued > 0) {
                match self.pushers.get(&c.id) {
                    Some(kicks) => kicks.iter().for_each(|k| k.notify_one()),
                    None => push_channel(&self.engine, &c.id, None).await,
                }
            }
            let done: Vec<(i64, InboxStatus, Option<String>)> = covered
                .into_iter()
                .map(|(id, reason)| (id, InboxStatus::Done, reason))
                .collect();
            store.inbox_settle(&done, now_ms()).await?;
            count += done.len();
        }
        self.stats
            .processed
            .fetch_add(count as u64, Ordering::Relaxed);
        Ok(count)
    }

    /// What a row asks for, or how to settle it without a pass.
    fn parse(&self, row: &InboxRow) -> Result<Wanted, (InboxStatus, String)> {
        if self.engine.connector(&row.connector).is_none() {
            return Err((
                InboxStatus::Done,
                "the connector is no longer configured".into(),
            ));
        }
        let Some(handler) = self.engine.webhooks(&row.connector) else {
            return Err((
                InboxStatus::Done,
                "the connector no longer takes webhooks".into(),
            ));
        };
        let hints = handler
            .parse(&row.headers, row.body.as_bytes())
            .map_err(|e| (InboxStatus::Rejected, e.to_string()))?;
        let mut w = Wanted {
            id: row.id,
            skus: BTreeSet::new(),
            unmapped: Vec::new(),
            hints: hints.len(),
            sold: Vec::new(),
            shown: Vec::new(),
            confirmed: 0,
        };
        for hint in hints {
            w.skus
                .extend(hint.skus.into_iter().filter(|s| !s.trim().is_empty()));
            w.unmapped.extend(hint.refs);
            for v in hint.shown {
                let target = match (v.sku.filter(|s| !s.trim().is_empty()), v.reference) {
                    (Some(sku), _) => Ok(sku),
                    (None, Some(r)) => Err(r),
                    (None, None) => continue,
                };
                w.shown.push((target, v.value));
            }
            // Orders: reserve what they sold, and re-read it.
            for line in hint.sold {
                let n = w.sold.len() as i64;
                match (line.sku.filter(|s| !s.trim().is_empty()), line.reference) {
                    (Some(sku), _) => {
                        w.skus.insert(sku.clone());
                        w.sold.push(SoldRef {
                            line: n,
                            target: Ok(sku),
                            quantity: line.quantity,
                        });
                    }
                    (None, Some(r)) => {
                        w.unmapped.push(r.clone());
                        w.sold.push(SoldRef {
                            line: n,
                            target: Err(r),
                            quantity: line.quantity,
                        });
                    }
                    (None, None) => {}
                }
            }
        }
        Ok(w)
    }

    /// Deliveries that carry the values they report ([`WebhookHint::shown`]), mostly the
    /// daemon's own writes coming back: a SKU needs no read for such a delivery when every
    /// value it carries for it
    /// - equals what the store holds as shown for that channel: confirmed
    ///   ([`Store::confirm_shown`]), as a read-back would;
    /// - or equals what a queued correction is writing ([`Store::queued_values`]): the write
    ///   is landing, and is read back once recorded;
    /// - or is an offer unlike a write still unverified: a product snapshot older than that
    ///   write, which the read-back checks anyway.
    ///
    /// Anything else — a stock quantity that differs, above all, which may be a sale — is
    /// read as usual, and orders always are.
    async fn confirm_echoes(
        &self,
        store: &Store,
        by_id: &HashMap<i64, &InboxRow>,
        wanted: &mut [Wanted],
    ) -> Result<(), StoreError> {
        let mut values: BTreeMap<&str, Vec<(StateKey, String)>> = BTreeMap::new();
        // Per delivery (by index), the keys it carries per SKU.
        let mut carried: Vec<(usize, BTreeMap<String, Vec<StateKey>>)> = Vec::new();
        for (i, w) in wanted.iter().enumerate() {
            if w.shown.is_empty() || !w.sold.is_empty() {
                continue;
            }
            let Some(row) = by_id.get(&w.id) else {
                continue;
            };
            let map = self.refs.get(&row.connector);
            let mut per_sku: BTreeMap<String, Vec<StateKey>> = BTreeMap::new();
            for (target, shown) in &w.shown {
                let sku = match target {
                    Ok(sku) => Some(sku.clone()),
                    Err(r) => map.and_then(|m| m.get(r)).cloned(),
                };
                let Some(sku) = sku else {
                    continue;
                };
                let (field, location, value) = match shown {
                    Shown::Stock { location, quantity } => {
                        (Field::Stock, location.clone(), quantity.to_string())
                    }
                    Shown::Offer { offer } => (Field::Offer, String::new(), encode_offer(offer)),
                };
                let key = StateKey {
                    sku: sku.clone(),
                    field,
                    location,
                };
                per_sku.entry(sku).or_default().push(key.clone());
                values
                    .entry(row.connector.as_str())
                    .or_default()
                    .push((key, value));
            }
            carried.push((i, per_sku));
        }
        // Per channel, the carried keys that need no read.
        let mut matched: HashMap<&str, HashSet<StateKey>> = HashMap::new();
        for (channel, values) in values {
            let confirmed = store.confirm_shown(channel, &values).await?;
            crate::metrics::corrections(channel, "confirmed", confirmed.writes);
            let mut settled = confirmed.matched;
            let confirmed = settled.len();
            let rest: Vec<(StateKey, String)> = values
                .into_iter()
                .filter(|(k, _)| !settled.contains(k))
                .collect();
            let queued = store.queued_values(channel, &rest).await?;
            let landing = queued.len();
            settled.extend(queued);
            // An offer unlike a write still unverified: Shopify's product snapshots carry
            // every variant, so a write to one variant brings back its siblings' values as
            // they were then, older than writes of theirs the daemon has since made. The
            // read-back reads those values anyway. Stock is never left: a quantity unlike
            // the daemon's may be a sale.
            let offers: Vec<String> = rest
                .iter()
                .filter(|(k, _)| k.field == Field::Offer && !settled.contains(k))
                .map(|(k, _)| k.sku.clone())
                .collect();
            let mut left = 0;
            if !offers.is_empty() {
                let prev = store.load_prev(channel, Some(&offers)).await?;
                for (k, _) in &rest {
                    if k.field == Field::Offer && prev.get(k).is_some_and(|p| p.unverified) {
                        left += usize::from(settled.insert(k.clone()));
                    }
                }
            }
            tracing::debug!(
                channel,
                carried = rest.len() + confirmed,
                confirmed,
                landing,
                left_to_read_back = left,
                "webhook inbox: values deliveries carried that need no read"
            );
            matched.insert(channel, settled);
        }
        for (i, per_sku) in carried {
            let w = &mut wanted[i];
            let Some(matched) = by_id
                .get(&w.id)
                .and_then(|r| matched.get(r.connector.as_str()))
            else {
                continue;
            };
            for (sku, keys) in per_sku {
                if keys.iter().all(|k| matched.contains(k)) && w.skus.remove(&sku) {
                    w.confirmed += 1;
                }
            }
        }
        Ok(())
    }

    async fn load_refs(&self, store: &Store, connector: &str) -> Result<RefMap, StoreError> {
        let mut map = RefMap::new();
        for b in store.binding_ids(connector).await? {
            map.insert(("external_id".to_string(), b.external_id), b.sku.clone());
            for (k, v) in b.refs {
                map.insert((k, v), b.sku.clone());
            }
        }
        tracing::debug!(
            connector,
            ids = map.len(),
            "webhook inbox: loaded the ref map"
        );
        Ok(map)
    }
}

/// Pushes one channel's queue, one lane of it ([`Engine::push_lane`]) or all
/// ([`Engine::push_queued`]); SKUs the channel must be read again for (compare-and-set
/// refusals, created listings) get a pass of their own, which queues their corrections
/// afresh, and are pushed again: three rounds at most, the rest is left to the next pass
/// or the full reconcile.
async fn push_channel(engine: &Engine, channel: &str, lane: Option<Lane>) {
    for _ in 0..3 {
        let pushed = match lane {
            Some(lane) => engine.push_lane(channel, lane).await,
            None => engine.push_queued(channel).await,
        };
        let pushed = match pushed {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(
                    channel,
                    error = format!("{e:#}"),
                    "pushing queued corrections failed; they stay queued"
                );
                return;
            }
        };
        if pushed.reread.is_empty() {
            return;
        }
        let scope = Scope {
            named_by: Some(BTreeMap::from([(
                channel.to_string(),
                pushed.reread.iter().cloned().collect(),
            )])),
            skus: Some(pushed.reread),
            enqueue_only: true,
            ..Scope::default()
        };
        if let Err(e) = engine.reconcile(&scope).await {
            tracing::error!(
                channel,
                error = format!("{e:#}"),
                "re-reading refused writes failed"
            );
            return;
        }
    }
}

/// The deliveries this round's pass takes: all of them, unless they name more than `cap`
/// SKUs. Then the sources' deliveries go first (the changes to spread), and the targets'
/// follow, oldest first, while they fit (at least one); the rest stay pending for the next
/// round. A burst of a target's webhooks (a paced batch of a thousand writes coming back)
/// is so read in parts, and source changes wait for none of them.
fn this_pass(wanted: Vec<Wanted>, cap: usize, from_source: impl Fn(i64) -> bool) -> Vec<Wanted> {
    let all: BTreeSet<&String> = wanted.iter().flat_map(|w| &w.skus).collect();
    if all.len() <= cap {
        return wanted;
    }
    let (mut first, rest): (Vec<Wanted>, Vec<Wanted>) = wanted
        .into_iter()
        .partition(|w| w.skus.is_empty() || from_source(w.id));
    let mut taken: BTreeSet<String> = first.iter().flat_map(|w| w.skus.clone()).collect();
    let mut left = 0;
    for w in rest {
        let new = w.skus.iter().filter(|s| !taken.contains(*s)).count();
        if taken.len() + new <= cap || taken.is_empty() {
            taken.extend(w.skus.iter().cloned());
            first.push(w);
        } else {
            left += 1;
        }
    }
    tracing::debug!(
        skus = taken.len(),
        deliveries_left = left,
        "webhook inbox: a large round, read in parts"
    );
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(id: i64, skus: &[&str]) -> Wanted {
        Wanted {
            id,
            skus: skus.iter().map(|s| s.to_string()).collect(),
            unmapped: Vec::new(),
            hints: 1,
            sold: Vec::new(),
            shown: Vec::new(),
            confirmed: 0,
        }
    }

    #[test]
    fn a_large_round_takes_source_changes_first_and_targets_while_they_fit() {
        let ids = |w: &[Wanted]| w.iter().map(|w| w.id).collect::<Vec<_>>();
        let round = || {
            vec![
                wanted(1, &["A", "B"]),
                wanted(2, &["C", "D"]),
                wanted(3, &["E"]),
                wanted(4, &["B", "F"]),
                wanted(5, &[]),
            ]
        };
        // Within the cap: everything.
        assert_eq!(ids(&this_pass(round(), 6, |_| false)), [1, 2, 3, 4, 5]);
        // Over it: the source's delivery (3) and the settled-anyway one (5) first, then the
        // targets' oldest first while they fit: 2 does not (C and D would make 5 SKUs),
        // 4 does (B is in already, F makes 4).
        assert_eq!(ids(&this_pass(round(), 4, |id| id == 3)), [3, 5, 1, 4]);
        // A target delivery larger than the cap still goes when nothing else is taken.
        assert_eq!(ids(&this_pass(round(), 1, |_| false)), [5, 1]);
    }

    #[test]
    fn secret_headers_are_not_kept() {
        let headers: Headers = [
            ("x-shopify-hmac-sha256", "abc"),
            ("x-hub-signature-256", "sha256=abc"),
            ("authorization", "Bearer x"),
            ("x-shopify-topic", "inventory_levels/update"),
            ("content-type", "application/json"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let kept = stored_headers(&headers);
        assert_eq!(
            kept.keys().map(String::as_str).collect::<Vec<_>>(),
            ["content-type", "x-shopify-topic"]
        );
    }

    #[test]
    fn body_event_ids_are_deterministic_per_connector() {
        assert_eq!(body_event_id("a", b"{}"), body_event_id("a", b"{}"));
        assert_ne!(body_event_id("a", b"{}"), body_event_id("b", b"{}"));
        assert_ne!(body_event_id("a", b"{}"), body_event_id("a", b"{ }"));
        assert!(body_event_id("a", b"").starts_with("sha256:"));
    }

    #[test]
    fn topics_are_distinct_and_sorted() {
        let hint = |t: &str| WebhookHint {
            topic: t.into(),
            ..Default::default()
        };
        assert_eq!(
            topics(&[hint("b"), hint("a"), hint("b")]).as_deref(),
            Some("a,b")
        );
        assert_eq!(topics(&[hint("")]), None);
    }
}

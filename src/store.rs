//! Durable state: canonical items, bindings, three-way target state, drift history, the
//! outbox, dead letters, the push log and runs.
//!
//! One SQL dialect for both backends: SQLite (the embedded default: one file, WAL) and
//! PostgreSQL (several daemons sharing the work). Queries use `$N` placeholders, which both
//! accept; upserts use `ON CONFLICT … DO UPDATE`, row values and `RETURNING`, which both
//! have; times are Unix milliseconds and booleans 0/1. Only the migrations differ (identity
//! column syntax). Writes are set-based: multi-row `VALUES` in chunks, one transaction per
//! batch, never a statement per item outside a transaction.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use omnisync_sdk::{Change, Offer};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, AssertSqlSafe, Row};

use crate::planner::{
    CanonicalItem, Cause, Field, Observed, Planned, PrevState, StateKey, TargetRow,
};

/// A store failure, with what we were doing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A database call failed.
    #[error("{context}: {source}")]
    Db {
        /// What we were doing.
        context: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database URL is not one we support.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    Url(String),
    /// A stored value could not be read back.
    #[error("corrupt stored value in {table}: {detail}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
}

type Result<T> = std::result::Result<T, StoreError>;

trait Ctx<T> {
    fn ctx(self, context: &str) -> Result<T>;
}

impl<T> Ctx<T> for std::result::Result<T, sqlx::Error> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|source| StoreError::Db {
            context: context.to_string(),
            source,
        })
    }
}

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Rows per multi-row statement: well under SQLite's 32,766 bound parameters.
const CHUNK: usize = 500;

/// A row of the outbox, claimed for pushing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Row id.
    pub id: i64,
    /// Which value.
    pub key: StateKey,
    /// The encoded value being set.
    pub value: String,
    /// The change.
    pub change: Change,
    /// The listing id.
    pub external_id: Option<String>,
    /// The connector's extra ids.
    pub refs: BTreeMap<String, String>,
    /// Deterministic idempotency key.
    pub idempotency_key: String,
    /// Attempts so far.
    pub attempts: i64,
}

/// What became of one claimed outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Applied by the API.
    Applied,
    /// Compare-and-set failed; re-read and plan again.
    Stale,
    /// Try again at `at` (ms).
    RetryAt {
        /// When.
        at: i64,
        /// Why.
        error: String,
    },
    /// Hopeless: dead-letter with the reason.
    Dead {
        /// The API's reason.
        reason: String,
    },
}

/// What [`Store::confirm_shown`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confirmed {
    /// The keys whose value the store holds as shown.
    pub matched: HashSet<StateKey>,
    /// Of those, writes taken as shown that are now confirmed (their mark cleared).
    pub writes: u64,
}

/// A part of a channel's outbox that is pushed on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Every correction.
    All,
    /// Stock corrections only.
    Stock,
    /// Everything but stock (offers, listings).
    Rest,
}

impl Lane {
    /// The lane's name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::All => "all",
            Lane::Stock => "stock",
            Lane::Rest => "rest",
        }
    }
}

/// A run as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunRow {
    /// Run id.
    pub id: i64,
    /// `full` or a description of the partial scope.
    pub scope: String,
    /// A dry run pushes nothing.
    pub dry_run: bool,
    /// Start (ms).
    pub started_at: i64,
    /// End (ms).
    pub finished_at: Option<i64>,
    /// `running`, `ok`, `failed`.
    pub status: String,
    /// The report JSON, when finished.
    pub report: Option<String>,
}

/// A dead letter as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// Id.
    pub id: i64,
    /// Channel.
    pub channel: String,
    /// SKU.
    pub sku: String,
    /// Field.
    pub field: String,
    /// Location.
    pub location: String,
    /// The value that could not be set.
    pub value: String,
    /// The API's reason.
    pub reason: String,
    /// Attempts made.
    pub attempts: i64,
    /// When (ms).
    pub created_at: i64,
}

/// The database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The webhook inbox's group-commit writer, started on first use.
    inbox_writer: std::sync::Arc<std::sync::OnceLock<crate::inbox::writer::Writer>>,
    /// On SQLite, every writer of this process takes turns here (see [`WriteGate`]).
    write_gate: WriteGate,
}

/// SQLite allows one writer at a time, and a writer that finds the database locked sleeps
/// and polls (SQLite's busy handler: 1, 2, 5, 10 … ms), so under load every small write
/// waits several milliseconds longer than the lock is held. The process's own writers
/// (passes, pushers, the inbox writer) therefore queue here, first come first served, and
/// each is handed the lock the moment the one before it commits. Other processes (a CLI
/// command next to the daemon) still meet SQLite's own locking. PostgreSQL has row locks:
/// the gate is open there.
#[derive(Debug, Clone)]
pub(crate) struct WriteGate(Option<std::sync::Arc<tokio::sync::Mutex<()>>>);

impl WriteGate {
    fn new(backend: Backend) -> WriteGate {
        WriteGate((backend == Backend::Sqlite).then(Default::default))
    }

    /// Waits for this process's turn to write (at once on PostgreSQL).
    pub(crate) async fn enter(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.0 {
            Some(m) => Some(m.clone().lock_owned().await),
            None => None,
        }
    }
}

/// A write transaction holding the process's turn to write ([`WriteGate`]) until it is
/// committed or dropped. It dereferences to the connection, like [`sqlx::Transaction`].
pub(crate) struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    /// Commits, then gives the turn to the next writer.
    pub(crate) async fn commit(self) -> std::result::Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// Appends `($n, $n+1, …)` groups (only placeholders: the one kind of dynamic SQL here,
/// which is why `AssertSqlSafe` is sound in this module) for `rows` rows of `cols` columns, starting at `$start`.
fn values_clause(rows: usize, cols: usize, start: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    let mut n = start;
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push(',');
            }
            s.push('$');
            s.push_str(&n.to_string());
            n += 1;
        }
        s.push(')');
    }
    s
}

fn json<T: serde::Serialize>(v: &T) -> String {
    // Serializing our own plain data types cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

impl Store {
    /// Opens (creating an SQLite file if needed) and migrates.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Url(url.to_string()));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let options = AnyConnectOptions::from_str(&url).ctx("parsing database URL")?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 8,
            })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA busy_timeout = 10000",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .ctx("connecting to the database")?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        Ok(Store {
            pool,
            backend,
            inbox_writer: Default::default(),
            write_gate: WriteGate::new(backend),
        })
    }

    /// Dynamic SQL (generated placeholder lists) for this backend. The text uses `$N`
    /// placeholders, which must appear in order `$1, $2, …`, each once. On SQLite they become
    /// anonymous `?`: SQLite finds a *named* parameter by a linear scan, so binding a statement
    /// with thousands of `$N` costs O(n²), while `?` costs O(n). The only dynamic parts are
    /// placeholder lists, which is why `AssertSqlSafe` is sound here.
    pub(crate) fn dynamic(&self, sql: String) -> AssertSqlSafe<String> {
        if self.backend == Backend::Postgres {
            return AssertSqlSafe(sql);
        }
        let mut out = String::with_capacity(sql.len());
        let mut chars = sql.chars().peekable();
        let mut expected = 1usize;
        while let Some(c) = chars.next() {
            if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                let mut n = 0usize;
                while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                    n = n * 10 + d as usize;
                    chars.next();
                }
                debug_assert_eq!(n, expected, "placeholders out of order in {sql}");
                expected += 1;
                out.push('?');
            } else {
                out.push(c);
            }
        }
        AssertSqlSafe(out)
    }

    /// The inbox writer (started on the current runtime at first use).
    pub(crate) fn inbox_writer(&self) -> &crate::inbox::writer::Writer {
        self.inbox_writer.get_or_init(|| {
            crate::inbox::writer::Writer::start(
                self.pool.clone(),
                self.backend,
                self.write_gate.clone(),
            )
        })
    }

    /// Begins a write transaction in this process's turn ([`WriteGate`]).
    pub(crate) async fn begin_write(&self) -> std::result::Result<WriteTx, sqlx::Error> {
        let turn = self.write_gate.enter().await;
        let tx = self.pool.begin().await?;
        Ok(WriteTx { tx, _turn: turn })
    }

    /// Waits for this process's turn to write, for a single statement outside a
    /// transaction; the turn ends when the guard is dropped.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        self.write_gate.enter().await
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, for read-only report queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    // ---- runs -------------------------------------------------------------------------

    /// Records the start of a run and returns its id.
    pub async fn start_run(&self, scope: &str, dry_run: bool, now: i64) -> Result<i64> {
        let _turn = self.write_turn().await;
        let row = sqlx::query(
            "INSERT INTO runs (scope, dry_run, started_at, status) VALUES ($1, $2, $3, 'running') RETURNING id",
        )
        .bind(scope)
        .bind(i64::from(dry_run))
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .ctx("starting a run")?;
        row.try_get::<i64, _>(0).ctx("reading run id")
    }

    /// Records the end of a run with its report.
    pub async fn finish_run(&self, id: i64, status: &str, report: &str, now: i64) -> Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query("UPDATE runs SET finished_at = $1, status = $2, report = $3 WHERE id = $4")
            .bind(now)
            .bind(status)
            .bind(report)
            .bind(id)
            .execute(&self.pool)
            .await
            .ctx("finishing a run")?;
        Ok(())
    }

    /// One run, or the latest finished one.
    pub async fn run(&self, id: Option<i64>) -> Result<Option<RunRow>> {
        let q = match id {
            Some(id) => sqlx::query(
                "SELECT id, scope, dry_run, started_at, finished_at, status, report FROM runs WHERE id = $1",
            )
            .bind(id),
            None => sqlx::query(
                "SELECT id, scope, dry_run, started_at, finished_at, status, report FROM runs WHERE finished_at IS NOT NULL ORDER BY id DESC LIMIT 1",
            ),
        };
        let row = q.fetch_optional(&self.pool).await.ctx("reading a run")?;
        row.map(|r| run_row(&r)).transpose()
    }

    /// The most recent runs, newest first.
    pub async fn runs(&self, limit: i64) -> Result<Vec<RunRow>> {
        let rows = sqlx::query(
            "SELECT id, scope, dry_run, started_at, finished_at, status, NULL AS report FROM runs ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .ctx("listing runs")?;
        rows.iter().map(run_row).collect()
    }

    // ---- canonical items and bindings -------------------------------------------------

    /// Stores the canonical items read from the sources.
    pub async fn save_items(&self, items: &[CanonicalItem], now: i64) -> Result<()> {
        let mut tx = self.begin_write().await.ctx("saving items")?;
        self.save_items_in(&mut tx, items, now).await?;
        tx.commit().await.ctx("saving items")?;
        Ok(())
    }

    /// [`Store::save_items`] inside the caller's write transaction.
    pub(crate) async fn save_items_in(
        &self,
        tx: &mut sqlx::AnyConnection,
        items: &[CanonicalItem],
        now: i64,
    ) -> Result<()> {
        for chunk in items.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO items (sku, title, price_minor, currency, updated_at) VALUES {} \
                 ON CONFLICT (sku) DO UPDATE SET title = excluded.title, price_minor = excluded.price_minor, \
                 currency = excluded.currency, updated_at = excluded.updated_at",
                values_clause(chunk.len(), 5, 1)
            );
            let mut q = sqlx::query(self.dynamic(sql));
            for item in chunk {
                q = q
                    .bind(item.sku.as_str())
                    .bind(item.title.as_deref())
                    .bind(item.price.map(|p| p.minor))
                    .bind(item.price.map(|p| p.currency.code().to_string()))
                    .bind(now);
            }
            q.execute(&mut *tx).await.ctx("saving items")?;
        }
        let stock: Vec<(&str, &str, i64)> = items
            .iter()
            .flat_map(|i| {
                i.stock
                    .iter()
                    .map(|(loc, q)| (i.sku.as_str(), loc.as_str(), *q))
            })
            .collect();
        for chunk in stock.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO item_stock (sku, location, available, source, updated_at) VALUES {} \
                 ON CONFLICT (sku, location) DO UPDATE SET available = excluded.available, \
                 source = excluded.source, updated_at = excluded.updated_at",
                values_clause(chunk.len(), 5, 1)
            );
            let mut q = sqlx::query(self.dynamic(sql));
            for (sku, loc, qty) in chunk {
                q = q.bind(*sku).bind(*loc).bind(*qty).bind("source").bind(now);
            }
            q.execute(&mut *tx).await.ctx("saving item stock")?;
        }
        Ok(())
    }

    /// Stores what a channel showed for its bound listings.
    pub async fn save_bindings(
        &self,
        channel: &str,
        observed: &HashMap<String, Observed>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await.ctx("saving bindings")?;
        self.save_bindings_in(&mut tx, channel, observed, now)
            .await?;
        tx.commit().await.ctx("saving bindings")?;
        Ok(())
    }

    /// [`Store::save_bindings`] inside the caller's write transaction.
    pub(crate) async fn save_bindings_in(
        &self,
        tx: &mut sqlx::AnyConnection,
        channel: &str,
        observed: &HashMap<String, Observed>,
        now: i64,
    ) -> Result<()> {
        let rows: Vec<(&String, &Observed)> = observed.iter().collect();
        for chunk in rows.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO bindings (channel, sku, external_id, refs, offer, stock, observed_at) VALUES {} \
                 ON CONFLICT (channel, sku) DO UPDATE SET external_id = excluded.external_id, refs = excluded.refs, \
                 offer = excluded.offer, stock = excluded.stock, observed_at = excluded.observed_at",
                values_clause(chunk.len(), 7, 1)
            );
            let mut q = sqlx::query(self.dynamic(sql));
            for (sku, o) in chunk {
                q = q
                    .bind(channel)
                    .bind(sku.as_str())
                    .bind(o.external_id.as_str())
                    .bind(json(&o.refs))
                    .bind(o.offer.as_ref().map(json::<Offer>))
                    .bind(json(&o.stock))
                    .bind(now);
            }
            q.execute(&mut *tx).await.ctx("saving bindings")?;
        }
        Ok(())
    }

    /// Records a channel's orphans (listings bound to no item). With `full`, orphans not
    /// seen in this read are forgotten.
    pub async fn save_orphans(
        &self,
        channel: &str,
        orphans: &[(String, Option<String>, String)],
        full: bool,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await.ctx("saving orphans")?;
        self.save_orphans_in(&mut tx, channel, orphans, full, now)
            .await?;
        tx.commit().await.ctx("saving orphans")?;
        Ok(())
    }

    /// [`Store::save_orphans`] inside the caller's write transaction.
    pub(crate) async fn save_orphans_in(
        &self,
        tx: &mut sqlx::AnyConnection,
        channel: &str,
        orphans: &[(String, Option<String>, String)],
        full: bool,
        now: i64,
    ) -> Result<()> {
        for chunk in orphans.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO orphans (channel, external_id, sku, reason, first_seen, last_seen) VALUES {} \
                 ON CONFLICT (channel, external_id) DO UPDATE SET sku = excluded.sku, reason = excluded.reason, \
                 last_seen = excluded.last_seen",
                values_clause(chunk.len(), 6, 1)
            );
            let mut q = sqlx::query(self.dynamic(sql));
            for (ext, sku, reason) in chunk {
                q = q
                    .bind(channel)
                    .bind(ext.as_str())
                    .bind(sku.as_deref())
                    .bind(reason.as_str())
                    .bind(now)
                    .bind(now);
            }
            q.execute(&mut *tx).await.ctx("saving orphans")?;
        }
        if full {
            sqlx::query("DELETE FROM orphans WHERE channel = $1 AND last_seen < $2")
                .bind(channel)
                .bind(now)
                .execute(&mut *tx)
                .await
                .ctx("forgetting orphans")?;
        }
        Ok(())
    }

    // ---- target state -----------------------------------------------------------------

    /// The previous pass's state for a channel, for all SKUs or the given ones.
    pub async fn load_prev(
        &self,
        channel: &str,
        skus: Option<&[String]>,
    ) -> Result<HashMap<StateKey, PrevState>> {
        let mut out = HashMap::new();
        let base = "SELECT sku, field, location, desired, in_sync, cause, unverified FROM target_state WHERE channel = $1";
        let mut rows = Vec::new();
        match skus {
            None => {
                rows = sqlx::query(base)
                    .bind(channel)
                    .fetch_all(&self.pool)
                    .await
                    .ctx("loading target state")?;
            }
            Some(skus) => {
                for chunk in skus.chunks(CHUNK) {
                    let sql = format!("{base} AND sku IN {}", values_list(chunk.len(), 2));
                    let mut q = sqlx::query(self.dynamic(sql)).bind(channel);
                    for s in chunk {
                        q = q.bind(s.as_str());
                    }
                    rows.extend(q.fetch_all(&self.pool).await.ctx("loading target state")?);
                }
            }
        }
        for r in rows {
            let field: String = r.try_get(1).ctx("reading target state")?;
            let Some(field) = Field::parse(&field) else {
                return Err(StoreError::Corrupt {
                    table: "target_state",
                    detail: format!("unknown field {field:?}"),
                });
            };
            let cause: Option<String> = r.try_get(5).ctx("reading target state")?;
            out.insert(
                StateKey {
                    sku: r.try_get(0).ctx("reading target state")?,
                    field,
                    location: r.try_get(2).ctx("reading target state")?,
                },
                PrevState {
                    desired: r.try_get(3).ctx("reading target state")?,
                    in_sync: r.try_get::<i64, _>(4).ctx("reading target state")? != 0,
                    cause: cause.as_deref().and_then(Cause::parse),
                    unverified: r.try_get::<i64, _>(6).ctx("reading target state")? != 0,
                },
            );
        }
        Ok(out)
    }

    /// What a channel last showed for these SKUs (its listings as stored in `bindings` by
    /// the last read, or by a write the API accepted since): the view a webhook pass plans
    /// the channels from that did not send the webhook. SKUs with no stored listing are
    /// absent.
    pub async fn load_observed(
        &self,
        channel: &str,
        skus: &[String],
    ) -> Result<HashMap<String, Observed>> {
        let mut out = HashMap::with_capacity(skus.len());
        for chunk in skus.chunks(CHUNK) {
            let sql = format!(
                "SELECT sku, external_id, refs, offer, stock FROM bindings WHERE channel = $1 AND sku IN {}",
                values_list(chunk.len(), 2)
            );
            let mut q = sqlx::query(self.dynamic(sql)).bind(channel);
            for s in chunk {
                q = q.bind(s.as_str());
            }
            for r in q.fetch_all(&self.pool).await.ctx("loading listings")? {
                let corrupt = |detail: String| StoreError::Corrupt {
                    table: "bindings",
                    detail,
                };
                let refs: String = r.try_get(2).ctx("reading listings")?;
                let offer: Option<String> = r.try_get(3).ctx("reading listings")?;
                let stock: String = r.try_get(4).ctx("reading listings")?;
                out.insert(
                    r.try_get(0).ctx("reading listings")?,
                    Observed {
                        external_id: r.try_get(1).ctx("reading listings")?,
                        refs: serde_json::from_str(&refs)
                            .map_err(|e| corrupt(format!("refs: {e}")))?,
                        offer: offer
                            .map(|o| serde_json::from_str(&o))
                            .transpose()
                            .map_err(|e| corrupt(format!("offer: {e}")))?,
                        stock: serde_json::from_str(&stock)
                            .map_err(|e| corrupt(format!("stock: {e}")))?,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Takes writes an API accepted as shown, without reading the channel: the stored
    /// listing gets the written values, a value still desired is in sync from now (its
    /// difference goes to the drift history), and every written value is marked as not read
    /// back yet ([`PrevState::unverified`]) until a read of the channel sees it. A value whose
    /// desired value moved on meanwhile stays open (its newer correction is queued).
    pub async fn take_as_shown(
        &self,
        channel: &str,
        applied: &[(StateKey, String, Change)],
        now: i64,
    ) -> Result<()> {
        if applied.is_empty() {
            return Ok(());
        }
        let skus: Vec<String> = applied
            .iter()
            .map(|(k, _, _)| k.sku.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut shown = self.load_observed(channel, &skus).await?;
        for (key, _, change) in applied {
            if shown.contains_key(&key.sku) {
                crate::planner::apply_change(&mut shown, &key.sku, change);
            }
        }
        let mut tx = self.begin_write().await.ctx("taking writes as shown")?;
        self.save_bindings_in(&mut tx, channel, &shown, now).await?;
        for chunk in applied.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO drift_history (channel, sku, field, location, desired, observed, cause, first_seen, resolved_at) \
                 SELECT t.channel, t.sku, t.field, t.location, t.desired, t.observed, t.cause, COALESCE(t.drift_since, $1), $2 \
                 FROM target_state t JOIN (VALUES {}) AS v \
                 ON t.sku = v.column1 AND t.field = v.column2 AND t.location = v.column3 \
                 WHERE t.in_sync = 0 AND t.desired = v.column4 AND t.channel = ${}",
                values_clause(chunk.len(), 4, 3),
                3 + chunk.len() * 4
            );
            let q = sqlx::query(self.dynamic(sql)).bind(now).bind(now);
            bind_applied(q, chunk)
                .bind(channel)
                .execute(&mut *tx)
                .await
                .ctx("recording closed drift")?;
            let sql = format!(
                "UPDATE target_state SET observed = v.column4, unverified = 1, checked_at = $1, \
                 in_sync = CASE WHEN target_state.desired = v.column4 THEN 1 ELSE target_state.in_sync END, \
                 cause = CASE WHEN target_state.desired = v.column4 THEN NULL ELSE target_state.cause END, \
                 drift_since = CASE WHEN target_state.desired = v.column4 THEN NULL ELSE target_state.drift_since END \
                 FROM (VALUES {}) AS v WHERE target_state.sku = v.column1 \
                 AND target_state.field = v.column2 AND target_state.location = v.column3 \
                 AND target_state.channel = ${}",
                values_clause(chunk.len(), 4, 2),
                2 + chunk.len() * 4
            );
            let q = sqlx::query(self.dynamic(sql)).bind(now);
            bind_applied(q, chunk)
                .bind(channel)
                .execute(&mut *tx)
                .await
                .ctx("taking writes as shown")?;
        }
        tx.commit().await.ctx("taking writes as shown")?;
        Ok(())
    }

    /// Takes values a channel's webhook says it shows as confirmation where they equal what
    /// the store holds as shown (`target_state.observed`): those lose the mark of
    /// [`Store::take_as_shown`], as a read would clear it. A value that differs changes
    /// nothing (the caller reads it).
    pub async fn confirm_shown(
        &self,
        channel: &str,
        values: &[(StateKey, String)],
    ) -> Result<Confirmed> {
        let mut confirmed = Confirmed::default();
        if values.is_empty() {
            return Ok(confirmed);
        }
        let mut tx = self.begin_write().await.ctx("confirming shown values")?;
        for chunk in values.chunks(CHUNK) {
            let bind = |sql: String| {
                bind_keyed(
                    sqlx::query(self.dynamic(sql)),
                    chunk.iter().map(|(k, v)| (k, v)),
                )
                .bind(channel)
            };
            let sql = format!(
                "SELECT t.sku, t.field, t.location FROM target_state t JOIN (VALUES {}) AS v \
                 ON t.sku = v.column1 AND t.field = v.column2 AND t.location = v.column3 \
                 AND t.observed = v.column4 WHERE t.channel = ${}",
                values_clause(chunk.len(), 4, 1),
                1 + chunk.len() * 4
            );
            let rows = bind(sql)
                .fetch_all(&mut *tx)
                .await
                .ctx("confirming shown values")?;
            for r in rows {
                confirmed.matched.insert(key_of(&r, "target_state")?);
            }
            let sql = format!(
                "UPDATE target_state SET unverified = 0 FROM (VALUES {}) AS v \
                 WHERE target_state.sku = v.column1 AND target_state.field = v.column2 \
                 AND target_state.location = v.column3 AND target_state.observed = v.column4 \
                 AND target_state.unverified = 1 AND target_state.channel = ${}",
                values_clause(chunk.len(), 4, 1),
                1 + chunk.len() * 4
            );
            confirmed.writes += bind(sql)
                .execute(&mut *tx)
                .await
                .ctx("confirming shown values")?
                .rows_affected();
        }
        tx.commit().await.ctx("confirming shown values")?;
        Ok(confirmed)
    }

    /// Of these values, the ones a queued correction of the channel is writing (its outbox
    /// row holds exactly that value): a write of the daemon's that the channel may already
    /// show while the pusher has not yet recorded it.
    pub async fn queued_values(
        &self,
        channel: &str,
        values: &[(StateKey, String)],
    ) -> Result<HashSet<StateKey>> {
        let mut queued = HashSet::new();
        for chunk in values.chunks(CHUNK) {
            let sql = format!(
                "SELECT sku, field, location FROM outbox WHERE channel = $1 \
                 AND (sku, field, location, value) IN (VALUES {})",
                values_clause(chunk.len(), 4, 2)
            );
            let q = sqlx::query(self.dynamic(sql)).bind(channel);
            let q = bind_keyed(q, chunk.iter().map(|(k, v)| (k, v)));
            for r in q.fetch_all(&self.pool).await.ctx("reading queued values")? {
                queued.insert(key_of(&r, "outbox")?);
            }
        }
        Ok(queued)
    }

    /// Clears the mark of [`Store::take_as_shown`] for every value of these SKUs (all of the
    /// channel's with `None`): a read of the channel has just seen them.
    pub async fn clear_unverified(&self, channel: &str, skus: Option<&[String]>) -> Result<()> {
        let mut tx = self.begin_write().await.ctx("clearing read-back marks")?;
        self.clear_unverified_in(&mut tx, channel, skus).await?;
        tx.commit().await.ctx("clearing read-back marks")?;
        Ok(())
    }

    /// [`Store::clear_unverified`] inside the caller's write transaction.
    pub(crate) async fn clear_unverified_in(
        &self,
        tx: &mut sqlx::AnyConnection,
        channel: &str,
        skus: Option<&[String]>,
    ) -> Result<()> {
        let Some(skus) = skus else {
            sqlx::query(
                "UPDATE target_state SET unverified = 0 WHERE unverified = 1 AND channel = $1",
            )
            .bind(channel)
            .execute(&mut *tx)
            .await
            .ctx("clearing read-back marks")?;
            return Ok(());
        };
        for chunk in skus.chunks(CHUNK) {
            let sql = format!(
                "UPDATE target_state SET unverified = 0 WHERE unverified = 1 AND channel = $1 AND sku IN {}",
                values_list(chunk.len(), 2)
            );
            let mut q = sqlx::query(self.dynamic(sql)).bind(channel);
            for s in chunk {
                q = q.bind(s.as_str());
            }
            q.execute(&mut *tx).await.ctx("clearing read-back marks")?;
        }
        Ok(())
    }

    /// Up to `limit` (channel, SKU) pairs with values pushed and not read back yet, by
    /// channel. With the total number of such pairs.
    pub async fn unverified(&self, limit: i64) -> Result<(BTreeMap<String, Vec<String>>, u64)> {
        let rows = sqlx::query(
            "SELECT DISTINCT channel, sku FROM target_state WHERE unverified = 1 ORDER BY channel, sku LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .ctx("finding pushes to read back")?;
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &rows {
            out.entry(r.try_get(0).ctx("reading target state")?)
                .or_default()
                .push(r.try_get(1).ctx("reading target state")?);
        }
        if (rows.len() as i64) < limit {
            // The list is all there is: no need to count.
            return Ok((out, rows.len() as u64));
        }
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT DISTINCT channel, sku FROM target_state WHERE unverified = 1) u",
        )
        .fetch_one(&self.pool)
        .await
        .ctx("counting pushes to read back")?;
        Ok((out, total as u64))
    }

    /// Saves a pass's conclusions. Rows unchanged since the previous pass (same desired
    /// value, in sync then and now) are not rewritten. Differences that closed are copied
    /// to the drift history first.
    pub async fn save_state(
        &self,
        channel: &str,
        rows: &[TargetRow],
        prev: &HashMap<StateKey, PrevState>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await.ctx("saving target state")?;
        self.save_state_in(&mut tx, channel, rows, prev, now)
            .await?;
        tx.commit().await.ctx("saving target state")?;
        Ok(())
    }

    /// [`Store::save_state`] inside the caller's write transaction.
    pub(crate) async fn save_state_in(
        &self,
        tx: &mut sqlx::AnyConnection,
        channel: &str,
        rows: &[TargetRow],
        prev: &HashMap<StateKey, PrevState>,
        now: i64,
    ) -> Result<()> {
        let changed: Vec<&TargetRow> = rows
            .iter()
            .filter(|r| match prev.get(&r.key) {
                Some(p) => !(p.in_sync && r.in_sync && p.desired == r.desired),
                None => true,
            })
            .collect();
        let closed: Vec<&TargetRow> = changed
            .iter()
            .copied()
            .filter(|r| r.in_sync && prev.get(&r.key).is_some_and(|p| !p.in_sync))
            .collect();
        for chunk in closed.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO drift_history (channel, sku, field, location, desired, observed, cause, first_seen, resolved_at) \
                 SELECT channel, sku, field, location, desired, observed, cause, COALESCE(drift_since, $1), $2 \
                 FROM target_state WHERE channel = $3 AND in_sync = 0 AND (sku, field, location) IN (VALUES {})",
                values_clause(chunk.len(), 3, 4)
            );
            let mut q = sqlx::query(self.dynamic(sql))
                .bind(now)
                .bind(now)
                .bind(channel);
            for r in chunk {
                q = q
                    .bind(r.key.sku.as_str())
                    .bind(r.key.field.as_str())
                    .bind(r.key.location.as_str());
            }
            q.execute(&mut *tx).await.ctx("recording closed drift")?;
        }
        for chunk in changed.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO target_state (channel, sku, field, location, desired, observed, in_sync, cause, drift_since, checked_at) \
                 VALUES {} ON CONFLICT (channel, sku, field, location) DO UPDATE SET \
                 desired = excluded.desired, observed = excluded.observed, in_sync = excluded.in_sync, \
                 cause = excluded.cause, checked_at = excluded.checked_at, \
                 drift_since = CASE WHEN excluded.in_sync = 1 THEN NULL \
                 WHEN target_state.in_sync = 1 OR target_state.drift_since IS NULL THEN excluded.drift_since \
                 ELSE target_state.drift_since END",
                values_clause(chunk.len(), 10, 1)
            );
            let mut q = sqlx::query(self.dynamic(sql));
            for r in chunk {
                q = q
                    .bind(channel)
                    .bind(r.key.sku.as_str())
                    .bind(r.key.field.as_str())
                    .bind(r.key.location.as_str())
                    .bind(r.desired.as_str())
                    .bind(r.observed.as_deref())
                    .bind(i64::from(r.in_sync))
                    .bind(r.cause.map(|c| c.as_str()))
                    .bind((!r.in_sync).then_some(now))
                    .bind(now);
            }
            q.execute(&mut *tx).await.ctx("saving target state")?;
        }
        Ok(())
    }

    /// Sets the cause of open differences (after a failed or no-op write).
    pub async fn mark_cause(&self, channel: &str, keys: &[StateKey], cause: Cause) -> Result<()> {
        let mut tx = self.begin_write().await.ctx("marking drift cause")?;
        for chunk in keys.chunks(CHUNK) {
            let sql = format!(
                "UPDATE target_state SET cause = $1 WHERE channel = $2 AND in_sync = 0 AND (sku, field, location) IN (VALUES {})",
                values_clause(chunk.len(), 3, 3)
            );
            let mut q = sqlx::query(self.dynamic(sql))
                .bind(cause.as_str())
                .bind(channel);
            for k in chunk {
                q = q
                    .bind(k.sku.as_str())
                    .bind(k.field.as_str())
                    .bind(k.location.as_str());
            }
            q.execute(&mut *tx).await.ctx("marking drift cause")?;
        }
        tx.commit().await.ctx("marking drift cause")?;
        Ok(())
    }

    // ---- outbox -----------------------------------------------------------------------

    /// Keys whose current value sits in an open dead letter: not queued again until an
    /// operator replays them (the drift stays open as `write_failed`).
    pub async fn dead_lettered(&self, channel: &str) -> Result<HashSet<(StateKey, String)>> {
        let rows = sqlx::query(
            "SELECT sku, field, location, value FROM dead_letters WHERE channel = $1 AND resolved_at IS NULL",
        )
        .bind(channel)
        .fetch_all(&self.pool)
        .await
        .ctx("reading dead letters")?;
        let mut out = HashSet::new();
        for r in rows {
            let field: String = r.try_get(1).ctx("reading dead letters")?;
            if let Some(field) = Field::parse(&field) {
                out.insert((
                    StateKey {
                        sku: r.try_get(0).ctx("reading dead letters")?,
                        field,
                        location: r.try_get(2).ctx("reading dead letters")?,
                    },
                    r.try_get(3).ctx("reading dead letters")?,
                ));
            }
        }
        Ok(out)
    }

    /// Queues corrections, coalescing per (channel, sku, field, location): a newer value
    /// replaces a queued or held older one (and starts its attempts afresh); the same value
    /// already queued or held is left as it is (a hold lasts until approved). `hold` gives the reason to hold a correction for approval.
    /// Returns how many rows were queued and held.
    pub async fn enqueue(
        &self,
        channel: &str,
        planned: &[(Planned, String, Option<String>)],
        run_id: i64,
        now: i64,
    ) -> Result<(u64, u64)> {
        let mut tx = self.begin_write().await.ctx("queueing corrections")?;
        let out = self
            .enqueue_in(&mut tx, channel, planned, run_id, now)
            .await?;
        tx.commit().await.ctx("queueing corrections")?;
        Ok(out)
    }

    /// [`Store::enqueue`] inside the caller's write transaction.
    pub(crate) async fn enqueue_in(
        &self,
        tx: &mut sqlx::AnyConnection,
        channel: &str,
        planned: &[(Planned, String, Option<String>)],
        run_id: i64,
        now: i64,
    ) -> Result<(u64, u64)> {
        for chunk in planned.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO outbox (channel, sku, field, location, value, change, external_id, refs, \
                 idempotency_key, status, hold_reason, attempts, next_attempt_at, run_id, created_at, updated_at) VALUES {} \
                 ON CONFLICT (channel, sku, field, location) DO UPDATE SET value = excluded.value, \
                 change = excluded.change, external_id = excluded.external_id, refs = excluded.refs, \
                 idempotency_key = excluded.idempotency_key, status = excluded.status, hold_reason = excluded.hold_reason, \
                 attempts = 0, next_attempt_at = excluded.next_attempt_at, last_error = NULL, run_id = excluded.run_id, \
                 updated_at = excluded.updated_at \
                 WHERE outbox.value <> excluded.value",
                values_clause(chunk.len(), 16, 1)
            );
            let mut q = sqlx::query(self.dynamic(sql));
            for (p, key, hold) in chunk {
                q = q
                    .bind(channel)
                    .bind(p.key.sku.as_str())
                    .bind(p.key.field.as_str())
                    .bind(p.key.location.as_str())
                    .bind(p.value.as_str())
                    .bind(json(&p.change))
                    .bind(p.external_id.as_deref())
                    .bind(json(&p.refs))
                    .bind(key.as_str())
                    .bind(if hold.is_some() { "held" } else { "queued" })
                    .bind(hold.as_deref())
                    .bind(0i64)
                    .bind(now)
                    .bind(run_id)
                    .bind(now)
                    .bind(now);
            }
            q.execute(&mut *tx).await.ctx("queueing corrections")?;
        }
        let held = planned.iter().filter(|(_, _, h)| h.is_some()).count() as u64;
        Ok((planned.len() as u64 - held, held))
    }

    /// Claims up to `limit` due corrections of a channel, oldest first.
    pub async fn claim(&self, channel: &str, limit: usize, now: i64) -> Result<Vec<OutboxRow>> {
        self.claim_in(channel, Lane::All, limit, now, None).await
    }

    /// Like [`Store::claim`], only corrections queued (or last changed) at `before` or
    /// earlier: what a channel's push window has let wait long enough.
    pub async fn claim_queued_before(
        &self,
        channel: &str,
        limit: usize,
        now: i64,
        before: i64,
    ) -> Result<Vec<OutboxRow>> {
        self.claim_in(channel, Lane::All, limit, now, Some(before))
            .await
    }

    /// Claims up to `limit` due corrections of one [`Lane`] of a channel, oldest first;
    /// with `before`, only those queued (or last changed) at that time or earlier.
    pub async fn claim_in(
        &self,
        channel: &str,
        lane: Lane,
        limit: usize,
        now: i64,
        before: Option<i64>,
    ) -> Result<Vec<OutboxRow>> {
        macro_rules! claim {
            ($lane:literal) => {
                concat!(
                    "SELECT id, sku, field, location, value, change, external_id, refs, idempotency_key, attempts \
                     FROM outbox WHERE channel = $1 AND status = 'queued' AND next_attempt_at <= $2 \
                     AND updated_at <= $3",
                    $lane,
                    " ORDER BY id LIMIT $4"
                )
            };
        }
        let sql = match lane {
            Lane::All => claim!(""),
            Lane::Stock => claim!(" AND field = 'stock'"),
            Lane::Rest => claim!(" AND field <> 'stock'"),
        };
        let query = sqlx::query(sql)
            .bind(channel)
            .bind(now)
            .bind(before.unwrap_or(i64::MAX));
        let rows = query
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await
            .ctx("claiming corrections")?;
        rows.iter()
            .map(|r| {
                let field: String = r.try_get(2).ctx("reading outbox")?;
                let change: String = r.try_get(5).ctx("reading outbox")?;
                let refs: String = r.try_get(7).ctx("reading outbox")?;
                let corrupt = |detail: String| StoreError::Corrupt {
                    table: "outbox",
                    detail,
                };
                Ok(OutboxRow {
                    id: r.try_get(0).ctx("reading outbox")?,
                    key: StateKey {
                        sku: r.try_get(1).ctx("reading outbox")?,
                        field: Field::parse(&field)
                            .ok_or_else(|| corrupt(format!("unknown field {field:?}")))?,
                        location: r.try_get(3).ctx("reading outbox")?,
                    },
                    value: r.try_get(4).ctx("reading outbox")?,
                    change: serde_json::from_str(&change)
                        .map_err(|e| corrupt(format!("change: {e}")))?,
                    external_id: r.try_get(6).ctx("reading outbox")?,
                    refs: serde_json::from_str(&refs).map_err(|e| corrupt(format!("refs: {e}")))?,
                    idempotency_key: r.try_get(8).ctx("reading outbox")?,
                    attempts: r.try_get(9).ctx("reading outbox")?,
                })
            })
            .collect()
    }

    /// Records what became of claimed rows, in one transaction. A row whose value was
    /// replaced meanwhile (different idempotency key) is left for its newer value.
    pub async fn settle(
        &self,
        channel: &str,
        run_id: i64,
        results: &[(OutboxRow, Settled)],
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await.ctx("settling corrections")?;
        // Applied and stale rows, the bulk of every drain, in set-based statements.
        let leaving: Vec<&OutboxRow> = results
            .iter()
            .filter(|(_, s)| matches!(s, Settled::Applied | Settled::Stale))
            .map(|(r, _)| r)
            .collect();
        for chunk in leaving.chunks(CHUNK) {
            let sql = format!(
                "DELETE FROM outbox WHERE (id, idempotency_key) IN (VALUES {})",
                values_clause(chunk.len(), 2, 1)
            );
            let mut q = sqlx::query(self.dynamic(sql));
            for row in chunk {
                q = q.bind(row.id).bind(row.idempotency_key.as_str());
            }
            q.execute(&mut *tx)
                .await
                .ctx("settling applied corrections")?;
        }
        let applied: Vec<&OutboxRow> = results
            .iter()
            .filter(|(_, s)| matches!(s, Settled::Applied))
            .map(|(r, _)| r)
            .collect();
        for chunk in applied.chunks(CHUNK) {
            let sql = format!(
                "UPDATE target_state SET pushed = v.column4, pushed_at = $1 FROM (VALUES {}) AS v \
                 WHERE target_state.sku = v.column1 AND target_state.field = v.column2 \
                 AND target_state.location = v.column3 AND target_state.channel = ${}",
                values_clause(chunk.len(), 4, 2),
                2 + chunk.len() * 4
            );
            let mut q = sqlx::query(self.dynamic(sql)).bind(now);
            for row in chunk {
                q = q
                    .bind(row.key.sku.as_str())
                    .bind(row.key.field.as_str())
                    .bind(row.key.location.as_str())
                    .bind(row.value.as_str());
            }
            q.bind(channel)
                .execute(&mut *tx)
                .await
                .ctx("recording pushed values")?;
        }
        let mut log: Vec<(&OutboxRow, &'static str, Option<&str>)> =
            Vec::with_capacity(results.len());
        for (row, settled) in results {
            let (outcome, detail) = match settled {
                Settled::Applied => ("applied", None),
                Settled::Stale => ("stale", None),
                Settled::RetryAt { at, error } => {
                    sqlx::query(
                        "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2, updated_at = $3 \
                         WHERE id = $4 AND idempotency_key = $5",
                    )
                    .bind(*at)
                    .bind(error.as_str())
                    .bind(now)
                    .bind(row.id)
                    .bind(row.idempotency_key.as_str())
                    .execute(&mut *tx)
                    .await
                    .ctx("rescheduling a correction")?;
                    ("retry", Some(error.as_str()))
                }
                Settled::Dead { reason } => {
                    let deleted =
                        sqlx::query("DELETE FROM outbox WHERE id = $1 AND idempotency_key = $2")
                            .bind(row.id)
                            .bind(row.idempotency_key.as_str())
                            .execute(&mut *tx)
                            .await
                            .ctx("dead-lettering a correction")?;
                    if deleted.rows_affected() > 0 {
                        sqlx::query(
                            "INSERT INTO dead_letters (channel, sku, field, location, value, change, reason, attempts, run_id, created_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                        )
                        .bind(channel)
                        .bind(row.key.sku.as_str())
                        .bind(row.key.field.as_str())
                        .bind(row.key.location.as_str())
                        .bind(row.value.as_str())
                        .bind(json(&row.change))
                        .bind(reason.as_str())
                        .bind(row.attempts + 1)
                        .bind(run_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .ctx("dead-lettering a correction")?;
                        sqlx::query(
                            "UPDATE target_state SET cause = 'write_failed' \
                             WHERE channel = $1 AND sku = $2 AND field = $3 AND location = $4 AND in_sync = 0",
                        )
                        .bind(channel)
                        .bind(row.key.sku.as_str())
                        .bind(row.key.field.as_str())
                        .bind(row.key.location.as_str())
                        .execute(&mut *tx)
                        .await
                        .ctx("marking a failed write")?;
                    }
                    ("dead", Some(reason.as_str()))
                }
            };
            log.push((row, outcome, detail));
        }
        for chunk in log.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO push_log (run_id, channel, sku, field, location, value, outcome, detail, at) VALUES {}",
                values_clause(chunk.len(), 9, 1)
            );
            let mut q = sqlx::query(self.dynamic(sql));
            for (row, outcome, detail) in chunk {
                q = q
                    .bind(run_id)
                    .bind(channel)
                    .bind(row.key.sku.as_str())
                    .bind(row.key.field.as_str())
                    .bind(row.key.location.as_str())
                    .bind(row.value.as_str())
                    .bind(*outcome)
                    .bind(*detail)
                    .bind(now);
            }
            q.execute(&mut *tx).await.ctx("logging pushes")?;
        }
        tx.commit().await.ctx("settling corrections")?;
        Ok(())
    }

    /// Releases held corrections for pushing: all of a channel's, or only these SKUs'.
    /// Returns how many were released.
    pub async fn approve(&self, channel: &str, skus: Option<&[String]>, now: i64) -> Result<u64> {
        let _turn = self.write_turn().await;
        let base = "UPDATE outbox SET status = 'queued', hold_reason = NULL, next_attempt_at = $1, updated_at = $2 \
                    WHERE channel = $3 AND status = 'held'";
        let mut released = 0;
        match skus {
            None => {
                released += sqlx::query(base)
                    .bind(now)
                    .bind(now)
                    .bind(channel)
                    .execute(&self.pool)
                    .await
                    .ctx("approving held corrections")?
                    .rows_affected();
            }
            Some(skus) => {
                for chunk in skus.chunks(CHUNK) {
                    let sql = format!("{base} AND sku IN {}", values_list(chunk.len(), 4));
                    let mut q = sqlx::query(self.dynamic(sql))
                        .bind(now)
                        .bind(now)
                        .bind(channel);
                    for s in chunk {
                        q = q.bind(s.as_str());
                    }
                    released += q
                        .execute(&self.pool)
                        .await
                        .ctx("approving held corrections")?
                        .rows_affected();
                }
            }
        }
        Ok(released)
    }

    /// Held corrections of a channel: (sku, field, location, value, reason).
    pub async fn held(
        &self,
        channel: &str,
    ) -> Result<Vec<(String, String, String, String, String)>> {
        let rows = sqlx::query(
            "SELECT sku, field, location, value, COALESCE(hold_reason, '') FROM outbox \
             WHERE channel = $1 AND status = 'held' ORDER BY sku",
        )
        .bind(channel)
        .fetch_all(&self.pool)
        .await
        .ctx("listing held corrections")?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).ctx("listing held corrections")?,
                    r.try_get(1).ctx("listing held corrections")?,
                    r.try_get(2).ctx("listing held corrections")?,
                    r.try_get(3).ctx("listing held corrections")?,
                    r.try_get(4).ctx("listing held corrections")?,
                ))
            })
            .collect()
    }

    /// Rows waiting in a channel's outbox: (queued, held).
    pub async fn outbox_depth(&self, channel: &str) -> Result<(u64, u64)> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN status = 'queued' THEN 1 ELSE 0 END), 0), \
                    COALESCE(SUM(CASE WHEN status = 'held' THEN 1 ELSE 0 END), 0) \
             FROM outbox WHERE channel = $1",
        )
        .bind(channel)
        .fetch_one(&self.pool)
        .await
        .ctx("measuring the outbox")?;
        let queued: i64 = row.try_get(0).ctx("measuring the outbox")?;
        let held: i64 = row.try_get(1).ctx("measuring the outbox")?;
        Ok((queued.max(0) as u64, held.max(0) as u64))
    }

    /// The earliest time a queued correction of this channel is due, if any.
    pub async fn next_due(&self, channel: &str) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MIN(next_attempt_at) FROM outbox WHERE channel = $1 AND status = 'queued'",
        )
        .bind(channel)
        .fetch_one(&self.pool)
        .await
        .ctx("reading the outbox")?;
        row.try_get::<Option<i64>, _>(0).ctx("reading the outbox")
    }

    /// Push outcomes of a run for a channel: outcome → count.
    pub async fn push_counts(&self, run_id: i64, channel: &str) -> Result<HashMap<String, u64>> {
        let rows = sqlx::query(
            "SELECT outcome, COUNT(*) FROM push_log WHERE run_id = $1 AND channel = $2 GROUP BY outcome",
        )
        .bind(run_id)
        .bind(channel)
        .fetch_all(&self.pool)
        .await
        .ctx("counting pushes")?;
        let mut out = HashMap::new();
        for r in rows {
            let outcome: String = r.try_get(0).ctx("counting pushes")?;
            let n: i64 = r.try_get(1).ctx("counting pushes")?;
            out.insert(outcome, n.max(0) as u64);
        }
        Ok(out)
    }

    /// Open dead letters, newest first.
    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<DeadLetter>> {
        let rows = sqlx::query(
            "SELECT id, channel, sku, field, location, value, reason, attempts, created_at \
             FROM dead_letters WHERE resolved_at IS NULL ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .ctx("listing dead letters")?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetter {
                    id: r.try_get(0).ctx("reading dead letters")?,
                    channel: r.try_get(1).ctx("reading dead letters")?,
                    sku: r.try_get(2).ctx("reading dead letters")?,
                    field: r.try_get(3).ctx("reading dead letters")?,
                    location: r.try_get(4).ctx("reading dead letters")?,
                    value: r.try_get(5).ctx("reading dead letters")?,
                    reason: r.try_get(6).ctx("reading dead letters")?,
                    attempts: r.try_get(7).ctx("reading dead letters")?,
                    created_at: r.try_get(8).ctx("reading dead letters")?,
                })
            })
            .collect()
    }

    /// Records the values a pass read back that differ from what the previous pass stored
    /// (`item_events`, kind `observed`: the value before, after, the desired value and the
    /// cause), for the item timeline. Call it before [`Store::save_state`] with the same
    /// rows: only rows that pass rewrites can have changed, and the stored row is still the
    /// previous one. A value seen for the first time is not an event.
    pub async fn record_observations(
        &self,
        channel: &str,
        run_id: i64,
        rows: &[TargetRow],
        prev: &HashMap<StateKey, PrevState>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await.ctx("recording observed changes")?;
        self.record_observations_in(&mut tx, channel, run_id, rows, prev, now)
            .await?;
        tx.commit().await.ctx("recording observed changes")?;
        Ok(())
    }

    /// [`Store::record_observations`] inside the caller's write transaction.
    pub(crate) async fn record_observations_in(
        &self,
        tx: &mut sqlx::AnyConnection,
        channel: &str,
        run_id: i64,
        rows: &[TargetRow],
        prev: &HashMap<StateKey, PrevState>,
        now: i64,
    ) -> Result<()> {
        let candidates: Vec<&TargetRow> = rows
            .iter()
            .filter(|r| {
                prev.get(&r.key)
                    .is_some_and(|p| !(p.in_sync && r.in_sync && p.desired == r.desired))
            })
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        for chunk in candidates.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO item_events (run_id, channel, sku, field, location, kind, value, previous, desired, in_sync, cause, at) \
                 SELECT $1, t.channel, t.sku, t.field, t.location, 'observed', v.column4, t.observed, v.column5, \
                 CAST(v.column6 AS BIGINT), v.column7, $2 \
                 FROM target_state t JOIN (VALUES {}) AS v \
                 ON t.sku = v.column1 AND t.field = v.column2 AND t.location = v.column3 \
                 WHERE t.channel = ${} AND COALESCE(t.observed, '') <> COALESCE(v.column4, '')",
                values_clause(chunk.len(), 7, 3),
                3 + chunk.len() * 7
            );
            let mut q = sqlx::query(self.dynamic(sql)).bind(run_id).bind(now);
            for r in chunk {
                q = q
                    .bind(r.key.sku.as_str())
                    .bind(r.key.field.as_str())
                    .bind(r.key.location.as_str())
                    .bind(r.observed.as_deref())
                    .bind(r.desired.as_str())
                    .bind(i64::from(r.in_sync))
                    .bind(r.cause.map(|c| c.as_str()));
            }
            q.bind(channel)
                .execute(&mut *tx)
                .await
                .ctx("recording observed changes")?;
        }
        Ok(())
    }
}

/// Binds (SKU, field, location, value) of each applied write, for a `VALUES` list.
fn bind_applied<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    applied: &'q [(StateKey, String, Change)],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    bind_keyed(q, applied.iter().map(|(k, v, _)| (k, v)))
}

/// Binds `(sku, field, location, value)` for each keyed value, in order.
fn bind_keyed<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    values: impl IntoIterator<Item = (&'q StateKey, &'q String)>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for (key, value) in values {
        q = q
            .bind(key.sku.as_str())
            .bind(key.field.as_str())
            .bind(key.location.as_str())
            .bind(value.as_str());
    }
    q
}

/// A [`StateKey`] from the first three columns of a row (`sku, field, location`).
fn key_of(r: &sqlx::any::AnyRow, table: &'static str) -> Result<StateKey> {
    let field: String = r.try_get(1).ctx("reading a key")?;
    let field = Field::parse(&field).ok_or_else(|| StoreError::Corrupt {
        table,
        detail: format!("unknown field {field:?}"),
    })?;
    Ok(StateKey {
        sku: r.try_get(0).ctx("reading a key")?,
        field,
        location: r.try_get(2).ctx("reading a key")?,
    })
}

/// `($start, $start+1, …)` for an `IN` list of `n` values.
pub(crate) fn values_list(n: usize, start: usize) -> String {
    let items: Vec<String> = (start..start + n).map(|i| format!("${i}")).collect();
    format!("({})", items.join(","))
}

fn run_row(r: &sqlx::any::AnyRow) -> Result<RunRow> {
    Ok(RunRow {
        id: r.try_get(0).ctx("reading a run")?,
        scope: r.try_get(1).ctx("reading a run")?,
        dry_run: r.try_get::<i64, _>(2).ctx("reading a run")? != 0,
        started_at: r.try_get(3).ctx("reading a run")?,
        finished_at: r.try_get(4).ctx("reading a run")?,
        status: r.try_get(5).ctx("reading a run")?,
        report: r.try_get(6).ctx("reading a run")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_lists() {
        assert_eq!(values_clause(2, 3, 1), "($1,$2,$3),($4,$5,$6)");
        assert_eq!(values_clause(1, 2, 3), "($3,$4)");
        assert_eq!(values_list(3, 2), "($2,$3,$4)");
    }
}

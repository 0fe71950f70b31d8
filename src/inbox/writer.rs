//! Group commit for the webhook inbox: one writer per store takes every delivery waiting
//! to be stored and writes them with one statement in one transaction, so a burst of webhooks costs one commit
//! (and, on SQLite, one fsync) instead of one each, and requests never queue for SQLite's
//! write lock. Each request is answered only after the transaction holding its row has
//! committed, so "stored before the 2xx" still holds row by row.
//!
//! On SQLite the writer keeps its own connection with `synchronous = FULL`: a delivery that
//! was acknowledged survives a power cut, not only a crash of the process (the rest of the
//! store runs with WAL + `NORMAL`). If a group's transaction fails, its rows are written one
//! by one, so one bad row never sinks the others.

use sqlx::AnyConnection;
use std::collections::{HashMap, HashSet};

use sqlx::{Connection, Row};
use tokio::sync::{mpsc, oneshot};

use crate::store::{Backend, StoreError, WriteGate};

/// Most rows in one transaction.
const MAX_GROUP: usize = 512;
/// Requests waiting for the writer before senders wait too (back-pressure).
const QUEUE: usize = 8192;

/// A delivery to store, owned so it can cross to the writer task (see
/// [`super::NewDelivery`] for the fields).
#[derive(Debug)]
pub(crate) struct Delivery {
    pub connector: String,
    pub event_id: String,
    pub topic: Option<String>,
    pub received_at: i64,
    pub headers: String,
    pub body: String,
    pub status: &'static str,
    pub reason: Option<String>,
}

type Answer = Result<Option<i64>, StoreError>;

struct Job {
    row: Delivery,
    done: oneshot::Sender<Answer>,
}

/// The handle: cheap to clone, shared by every clone of the store.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task on the current Tokio runtime. It ends when every handle is
    /// gone; it holds the pool, never the store, so it does not keep itself alive.
    pub(crate) fn start(pool: sqlx::AnyPool, backend: Backend, gate: WriteGate) -> Writer {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, backend, gate, rx));
        Writer { tx }
    }

    /// Stores `row`; its id, or `None` for a (connector, event id) already stored.
    pub(crate) async fn insert(&self, row: Delivery) -> Answer {
        let (done, answer) = oneshot::channel();
        let gone = || StoreError::Db {
            context: "storing a webhook delivery: the inbox writer stopped".into(),
            source: sqlx::Error::PoolClosed,
        };
        self.tx.send(Job { row, done }).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// The columns written, in bind order.
const COLUMNS: usize = 8;

/// `INSERT … VALUES (…), (…) … ON CONFLICT DO NOTHING RETURNING id, event_id` for `rows`
/// rows. Only placeholders are generated (`?` on SQLite, which binds them in O(n), `$n` on
/// PostgreSQL), which is what makes `AssertSqlSafe` sound here.
fn insert_sql(backend: Backend, rows: usize) -> sqlx::AssertSqlSafe<String> {
    let mut sql = String::from(
        "INSERT INTO webhook_inbox (connector, event_id, topic, received_at, headers, body, status, reason) VALUES ",
    );
    let mut n = 0;
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ",(" });
        for c in 0..COLUMNS {
            if c > 0 {
                sql.push(',');
            }
            n += 1;
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    sql.push('$');
                    sql.push_str(&n.to_string());
                }
            }
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (connector, event_id) DO NOTHING RETURNING id, connector, event_id");
    sqlx::AssertSqlSafe(sql)
}

async fn run(pool: sqlx::AnyPool, backend: Backend, gate: WriteGate, mut rx: mpsc::Receiver<Job>) {
    let mut conn: Option<AnyConnection> = None;
    let mut group: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.recv().await {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        if conn.is_none() {
            match connect(&pool, backend).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    for job in group.drain(..) {
                        answer(job, Err(copy(&e)));
                    }
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        // The daemon's other writers take turns with this one (see `WriteGate`).
        let turn = gate.enter().await;
        let written = write_group(c, backend, &group).await;
        drop(turn);
        match written {
            Ok(ids) => {
                for (job, id) in group.drain(..).zip(ids) {
                    answer(job, Ok(id));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, rows = group.len(), "inbox group commit failed; storing its rows one by one");
                for job in group.drain(..) {
                    let turn = gate.enter().await;
                    let one = write_group(c, backend, std::slice::from_ref(&job)).await;
                    drop(turn);
                    answer(job, one.map(|ids| ids.into_iter().next().flatten()));
                }
                // A broken connection is replaced on the next group.
                if c.ping().await.is_err() {
                    conn = None;
                }
            }
        }
    }
}

/// A connection of the writer's own (detached from the pool so it never returns there
/// with its settings changed).
async fn connect(pool: &sqlx::AnyPool, backend: Backend) -> Result<AnyConnection, StoreError> {
    let mut c = pool
        .acquire()
        .await
        .map_err(|source| db("opening the inbox writer's connection", source))?
        .detach();
    if backend == Backend::Sqlite {
        sqlx::query("PRAGMA synchronous = FULL")
            .execute(&mut c)
            .await
            .map_err(|source| db("setting synchronous = FULL for the inbox", source))?;
    }
    Ok(c)
}

/// Writes a group in one statement and one transaction; for each job its new row id, or
/// `None` when its (connector, event id) was stored before or earlier in the same group.
async fn write_group(
    c: &mut AnyConnection,
    backend: Backend,
    group: &[Job],
) -> Result<Vec<Option<i64>>, StoreError> {
    let context = "storing webhook deliveries";
    // The first of a group's copies of an event is the one written.
    let mut seen = HashSet::new();
    let first: Vec<bool> = group
        .iter()
        .map(|j| seen.insert((j.row.connector.as_str(), j.row.event_id.as_str())))
        .collect();
    let rows: Vec<&Delivery> = group
        .iter()
        .zip(&first)
        .filter(|(_, f)| **f)
        .map(|(j, _)| &j.row)
        .collect();
    let sql = insert_sql(backend, rows.len());
    let mut q = sqlx::query(sql);
    for r in &rows {
        q = q
            .bind(&r.connector)
            .bind(&r.event_id)
            .bind(r.topic.as_deref())
            .bind(r.received_at)
            .bind(&r.headers)
            .bind(&r.body)
            .bind(r.status)
            .bind(r.reason.as_deref());
    }
    let mut tx = Connection::begin(c).await.map_err(|s| db(context, s))?;
    let inserted = q.fetch_all(&mut *tx).await.map_err(|s| db(context, s))?;
    tx.commit().await.map_err(|s| db(context, s))?;
    let mut ids: HashMap<(String, String), i64> = HashMap::with_capacity(inserted.len());
    for row in inserted {
        let id: i64 = row.try_get(0).map_err(|s| db(context, s))?;
        let connector: String = row.try_get(1).map_err(|s| db(context, s))?;
        let event: String = row.try_get(2).map_err(|s| db(context, s))?;
        ids.insert((connector, event), id);
    }
    Ok(group
        .iter()
        .zip(first)
        .map(|(j, first)| {
            first
                .then(|| {
                    ids.get(&(j.row.connector.clone(), j.row.event_id.clone()))
                        .copied()
                })
                .flatten()
        })
        .collect())
}

fn answer(job: Job, result: Answer) {
    if job.done.send(result).is_err() {
        // The request went away (client disconnected); its row, if stored, is processed
        // like any other and a redelivery is recognised as a duplicate.
    }
}

fn db(context: &str, source: sqlx::Error) -> StoreError {
    StoreError::Db {
        context: context.to_string(),
        source,
    }
}

/// The same error for every request of a group that could not start (sqlx errors are
/// not `Clone`).
fn copy(e: &StoreError) -> StoreError {
    StoreError::Db {
        context: "storing a webhook delivery".into(),
        source: sqlx::Error::Protocol(e.to_string()),
    }
}

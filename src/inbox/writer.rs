//! Group commit for the webhook inbox: one writer per store takes every delivery waiting
//! to be stored and writes them in one transaction, so a burst of webhooks costs one commit
//! (and, on SQLite, one fsync) instead of one each, and requests never queue for SQLite's
//! write lock. Each request is answered only after the transaction holding its row has
//! committed, so "stored before the 2xx" still holds row by row.
//!
//! On SQLite the writer keeps its own connection with `synchronous = FULL`: a delivery that
//! was acknowledged survives a power cut, not only a crash of the process (the rest of the
//! store runs with WAL + `NORMAL`). If a group's transaction fails, its rows are written one
//! by one, so one bad row never sinks the others.

use sqlx::AnyConnection;
use sqlx::{Connection, Row};
use tokio::sync::{mpsc, oneshot};

use crate::store::{Backend, StoreError};

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
    pub(crate) fn start(pool: sqlx::AnyPool, backend: Backend) -> Writer {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, backend, rx));
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

const INSERT: &str = "INSERT INTO webhook_inbox (connector, event_id, topic, received_at, headers, body, status, reason) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (connector, event_id) DO NOTHING RETURNING id";

async fn run(pool: sqlx::AnyPool, backend: Backend, mut rx: mpsc::Receiver<Job>) {
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
        match write_group(c, &group).await {
            Ok(ids) => {
                for (job, id) in group.drain(..).zip(ids) {
                    answer(job, Ok(id));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, rows = group.len(), "inbox group commit failed; storing its rows one by one");
                for job in group.drain(..) {
                    let one = write_group(c, std::slice::from_ref(&job)).await;
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

async fn write_group(c: &mut AnyConnection, group: &[Job]) -> Result<Vec<Option<i64>>, StoreError> {
    let context = "storing webhook deliveries";
    let mut tx = Connection::begin(c).await.map_err(|s| db(context, s))?;
    let mut ids = Vec::with_capacity(group.len());
    for job in group {
        let r = &job.row;
        let row = sqlx::query(INSERT)
            .bind(&r.connector)
            .bind(&r.event_id)
            .bind(r.topic.as_deref())
            .bind(r.received_at)
            .bind(&r.headers)
            .bind(&r.body)
            .bind(r.status)
            .bind(r.reason.as_deref())
            .fetch_optional(&mut *tx)
            .await
            .map_err(|s| db(context, s))?;
        ids.push(match row {
            Some(row) => Some(row.try_get::<i64, _>(0).map_err(|s| db(context, s))?),
            None => None,
        });
    }
    tx.commit().await.map_err(|s| db(context, s))?;
    Ok(ids)
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

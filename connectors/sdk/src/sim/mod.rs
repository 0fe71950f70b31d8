//! Shared plumbing for the loopback simulators every connector ships.
//!
//! A simulator is an axum router that speaks one system's real API. This module gives each
//! of them the same things:
//!
//! - [`SimServer`]: bind on loopback (port 0 for tests), serve, shut down;
//! - [`Faults`] and [`fault_layer`]: a queue of injected failures (HTTP status with optional
//!   `Retry-After`, a malformed JSON body, a delay) consumed one per API request;
//! - [`SimControl`] and [`admin_router`]: the `/__sim/…` admin API a demo, a test or a person
//!   rehearsing uses to seed the catalog, edit a price or stock "by hand" in the channel,
//!   delete a listing, inject faults and read counters. Admin paths are never faulted;
//! - [`delivery`]: outgoing webhooks for simulators of systems that send them (signed
//!   POSTs, retries, rehearsal faults, the `/__sim/webhooks/…` admin routes).
//!
//! Records in the admin API use the connector's own location codes and the channel's own
//! currency, exactly as the adapter reports them in [`crate::Record`].

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::model::Offer;

pub mod delivery;

/// One listing in a simulator, in the channel's own terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimRecord {
    /// The SKU.
    pub sku: String,
    /// A title.
    #[serde(default)]
    pub title: String,
    /// The offer in the channel's currency (and VAT convention).
    pub offer: Offer,
    /// Quantity per connector location code.
    #[serde(default)]
    pub stock: BTreeMap<String, i64>,
}

/// Counters a simulator keeps, for tests and the demo.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// API requests served (admin requests excluded).
    pub requests: u64,
    /// Requests answered with a rate-limit refusal (real limits and injected ones).
    pub throttled: u64,
    /// Requests answered with an injected fault.
    pub faults: u64,
    /// Write calls accepted.
    pub write_calls: u64,
    /// Items written in total.
    pub items_written: u64,
    /// The largest number of items seen in one write call.
    pub max_batch_seen: u64,
}

/// Atomic counters behind [`SimStats`].
#[derive(Debug, Default)]
pub struct SimCounters {
    requests: AtomicU64,
    throttled: AtomicU64,
    faults: AtomicU64,
    write_calls: AtomicU64,
    items_written: AtomicU64,
    max_batch_seen: AtomicU64,
}

impl SimCounters {
    /// Counts one API request.
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts one throttled answer.
    pub fn throttled(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts one write call carrying `items` items.
    pub fn write(&self, items: usize) {
        self.write_calls.fetch_add(1, Ordering::Relaxed);
        self.items_written
            .fetch_add(items as u64, Ordering::Relaxed);
        self.max_batch_seen
            .fetch_max(items as u64, Ordering::Relaxed);
    }
    /// A snapshot.
    pub fn snapshot(&self) -> SimStats {
        SimStats {
            requests: self.requests.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            faults: self.faults.load(Ordering::Relaxed),
            write_calls: self.write_calls.load(Ordering::Relaxed),
            items_written: self.items_written.load(Ordering::Relaxed),
            max_batch_seen: self.max_batch_seen.load(Ordering::Relaxed),
        }
    }
}

/// A failure to inject into the next API request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer with this status (and `Retry-After` seconds, if given) and a short JSON error.
    Status {
        /// The HTTP status.
        status: u16,
        /// `Retry-After` in seconds.
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// Answer 200 with a truncated JSON body.
    MalformedJson,
    /// Wait this long, then serve the request normally.
    Delay {
        /// Milliseconds.
        ms: u64,
    },
}

/// A queue of faults, consumed one per API request in order.
#[derive(Debug, Default)]
pub struct Faults {
    queue: Mutex<VecDeque<Fault>>,
}

impl Faults {
    /// Queues `fault` for the next `times` API requests.
    pub fn inject(&self, fault: Fault, times: usize) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..times {
            q.push_back(fault.clone());
        }
    }

    /// Drops every queued fault.
    pub fn clear(&self) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Faults still queued.
    pub fn pending(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn next(&self) -> Option<Fault> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }
}

/// The admin surface of a simulator.
pub trait SimControl: Send + Sync + 'static {
    /// The connector kind it simulates.
    fn kind(&self) -> &'static str;
    /// Replaces the whole catalog.
    fn seed(&self, records: Vec<SimRecord>);
    /// All listings, sorted by SKU.
    fn records(&self) -> Vec<SimRecord>;
    /// One listing by SKU. The default scans [`SimControl::records`]; simulators override
    /// it with a direct lookup.
    fn record(&self, sku: &str) -> Option<SimRecord> {
        self.records().into_iter().find(|r| r.sku == sku)
    }
    /// Edits a listing's offer as a person in the channel's admin would. `false` if unknown.
    fn set_offer(&self, sku: &str, offer: Offer) -> bool;
    /// Sets the quantity at one location code. `false` if the SKU or location is unknown.
    fn set_stock(&self, sku: &str, location: &str, quantity: i64) -> bool;
    /// Deletes a listing. `false` if unknown.
    fn remove(&self, sku: &str) -> bool;
    /// Adds one listing (e.g. an orphan the daemon should report). Replaces one with the
    /// same SKU.
    fn add(&self, record: SimRecord);
    /// The fault queue.
    fn faults(&self) -> &Faults;
    /// The counters.
    fn counters(&self) -> &SimCounters;
}

/// Wraps an API router so each request first takes the next queued fault, if any, and is
/// counted. Mount the admin router *outside* this layer.
pub fn fault_layer<S: SimControl>(api: Router, control: Arc<S>) -> Router {
    api.layer(middleware::from_fn_with_state(control, apply_fault::<S>))
}

async fn apply_fault<S: SimControl>(
    State(control): State<Arc<S>>,
    request: Request,
    next: Next,
) -> Response {
    control.counters().request();
    match control.faults().next() {
        None => next.run(request).await,
        Some(Fault::Delay { ms }) => {
            control.counters().faults.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            next.run(request).await
        }
        Some(Fault::MalformedJson) => {
            control.counters().faults.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                "{\"data\": {\"truncated\": [",
            )
                .into_response()
        }
        Some(Fault::Status {
            status,
            retry_after,
        }) => {
            control.counters().faults.fetch_add(1, Ordering::Relaxed);
            if status == 429 {
                control.counters().throttled();
            }
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = (
                code,
                axum::Json(serde_json::json!({
                    "error": "injected fault",
                    "status": status,
                })),
            )
                .into_response();
            if let Some(s) = retry_after
                && let Ok(v) = HeaderValue::from_str(&s.to_string())
            {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
    }
}

#[derive(Deserialize)]
struct FaultRequest {
    #[serde(flatten)]
    fault: Fault,
    #[serde(default = "one")]
    times: usize,
}

fn one() -> usize {
    1
}

#[derive(Deserialize)]
struct StockBody {
    quantity: i64,
}

#[derive(Deserialize)]
struct LocationQuery {
    location: String,
}

/// The `/__sim` admin API for a simulator:
///
/// | call | does |
/// |---|---|
/// | `GET /__sim/records` | all listings |
/// | `PUT /__sim/records` | replace the catalog (body: list of records) |
/// | `POST /__sim/records` | add or replace one listing |
/// | `PUT /__sim/records/{sku}/offer` | edit the offer (body: `{price, sale?}`) |
/// | `PUT /__sim/records/{sku}/stock?location=CODE` | set a quantity (body: `{quantity}`) |
/// | `DELETE /__sim/records/{sku}` | delete a listing |
/// | `POST /__sim/faults` | queue a fault: `{"kind":"status","status":429,"retry_after":1,"times":2}` |
/// | `DELETE /__sim/faults` | clear queued faults |
/// | `GET /__sim/stats` | counters |
pub fn admin_router<S: SimControl>(control: Arc<S>) -> Router {
    Router::new()
        .route(
            "/__sim/records",
            get(|State(c): State<Arc<S>>| async move { axum::Json(c.records()) })
                .put(
                    |State(c): State<Arc<S>>, axum::Json(records): axum::Json<Vec<SimRecord>>| async move {
                        c.seed(records);
                        StatusCode::NO_CONTENT
                    },
                )
                .post(
                    |State(c): State<Arc<S>>, axum::Json(record): axum::Json<SimRecord>| async move {
                        c.add(record);
                        StatusCode::NO_CONTENT
                    },
                ),
        )
        .route(
            "/__sim/records/{sku}/offer",
            put(
                |State(c): State<Arc<S>>, Path(sku): Path<String>, axum::Json(offer): axum::Json<Offer>| async move {
                    found(c.set_offer(&sku, offer))
                },
            ),
        )
        .route(
            "/__sim/records/{sku}/stock",
            put(
                |State(c): State<Arc<S>>,
                 Path(sku): Path<String>,
                 Query(q): Query<LocationQuery>,
                 axum::Json(body): axum::Json<StockBody>| async move {
                    found(c.set_stock(&sku, &q.location, body.quantity))
                },
            ),
        )
        .route(
            "/__sim/records/{sku}",
            axum::routing::delete(|State(c): State<Arc<S>>, Path(sku): Path<String>| async move {
                found(c.remove(&sku))
            }),
        )
        .route(
            "/__sim/faults",
            post(
                |State(c): State<Arc<S>>, axum::Json(req): axum::Json<FaultRequest>| async move {
                    c.faults().inject(req.fault, req.times);
                    StatusCode::NO_CONTENT
                },
            )
            .delete(|State(c): State<Arc<S>>| async move {
                c.faults().clear();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/__sim/stats",
            get(|State(c): State<Arc<S>>| async move { axum::Json(c.counters().snapshot()) }),
        )
        .with_state(control)
}

fn found(ok: bool) -> StatusCode {
    if ok {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

/// A running simulator.
#[derive(Debug)]
pub struct SimServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SimServer {
    /// Binds `addr` (use `127.0.0.1:0` for an ephemeral port) and serves `router` until
    /// [`SimServer::shutdown`] or drop.
    pub async fn start(router: Router, addr: SocketAddr) -> std::io::Result<SimServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router)
                .with_graceful_shutdown(async move { token.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "simulator server failed");
            }
        });
        Ok(SimServer {
            addr,
            stop,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits for in-flight requests.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
        {
            tracing::debug!(%error, "simulator task ended abnormally");
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

//! The daemon's HTTP server (axum): webhooks in, health and readiness out.
//!
//! | route | answer |
//! |---|---|
//! | `POST /webhooks/{connector_id}` | a delivery, checked and stored in the durable inbox ([`crate::inbox`]) |
//! | `GET /webhooks/{connector_id}` | the provider's subscription handshake ([`WebhookHandler::handshake`]) |
//! | `GET /healthz` | `200 ok` while the process runs |
//! | `GET /`, pages, `GET /api/v1/…` | the read-only web page and JSON API ([`crate::web`]), behind `daemon.http.token` |
//! | `GET /metrics` | Prometheus text format ([`crate::metrics`]) |
//! | `GET /readyz` | `200 ready` once the store is open and the first reconcile pass finished; `503` with the reason before (and while stopping) |
//!
//! A delivery goes through these steps, in this order, and nothing is stored before the
//! signature passed:
//!
//! 1. unknown connector id, or a connector without webhooks → `404`; the daemon is
//!    shutting down → `503` with `Retry-After` (nothing stored);
//! 2. body over `daemon.http.body_limit_bytes` → `413` (axum's own body limit);
//! 3. [`WebhookHandler::verify`] over the raw body fails → `401`;
//! 4. the event id: the provider's, or SHA-256 of connector + body when it has none;
//! 5. [`WebhookHandler::parse`]: a body that does not parse (or is not UTF-8) is stored as
//!    `rejected` with the reason → `400`; otherwise it is stored as `pending` → `200`;
//!    the same (connector, event id) already stored → `200` and nothing written.
//!
//! The answer is sent only after the row is committed; a store failure answers `500` so
//! the provider delivers again. Secrets are never logged: headers and bodies are not
//! logged at all, and signature headers are not stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use omnisync_sdk::webhook::{WebhookError, WebhookHandler, headers_from};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::inbox::{self, InboxStatus, NewDelivery, WebhookStats};
use crate::outbox::now_ms;

/// Where the daemon is in its life, as `/readyz` tells it.
#[derive(Debug, Default)]
pub struct Readiness(AtomicU8);

const STARTING: u8 = 0;
const FIRST_PASS: u8 = 1;
const READY: u8 = 2;
const STOPPING: u8 = 3;

impl Readiness {
    /// Starting: not ready.
    pub fn new() -> Readiness {
        Readiness(AtomicU8::new(STARTING))
    }

    /// The store is open and the first reconcile pass is running: not ready yet. Never
    /// goes back from ready or stopping; returns whether the state changed.
    pub fn first_pass(&self) -> bool {
        self.0
            .compare_exchange(STARTING, FIRST_PASS, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The first reconcile pass has finished: ready (unless already stopping). Returns
    /// whether the state changed.
    pub fn set_ready(&self) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s != STOPPING && s != READY).then_some(READY)
            })
            .is_ok()
    }

    /// Shutting down: not ready any more.
    pub fn set_stopping(&self) {
        self.0.store(STOPPING, Ordering::Release);
    }

    /// Whether the daemon is shutting down (the webhook intake answers 503).
    pub fn is_stopping(&self) -> bool {
        self.0.load(Ordering::Acquire) == STOPPING
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire) == READY
    }

    /// Why not ready, or `None` when ready.
    pub fn reason(&self) -> Option<&'static str> {
        match self.0.load(Ordering::Acquire) {
            STARTING => Some("starting: the store is not open yet"),
            FIRST_PASS => Some("starting: the first reconcile pass has not finished"),
            STOPPING => Some("stopping"),
            _ => None,
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    /// The engine: its connectors check deliveries, its store keeps them.
    pub engine: Arc<Engine>,
    /// Counters.
    pub stats: Arc<WebhookStats>,
    /// What `/readyz` answers.
    pub readiness: Arc<Readiness>,
    /// Notified after a delivery was stored as `pending` (wakes the inbox processor).
    pub wake: Arc<Notify>,
    /// Largest body accepted, in bytes.
    pub body_limit: usize,
}

/// The routes, with the body limit applied.
pub fn router(state: HttpState) -> Router {
    let limit = state.body_limit;
    let web = crate::web::router(state.engine.clone());
    Router::new()
        .route("/webhooks/{connector_id}", get(handshake).post(receive))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
        // The read-only page and /api/v1 (crate::web), behind daemon.http.token.
        .merge(web)
}

/// Serves `router` on `listener` until `stop`, then finishes the requests in progress.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

/// Prometheus text exposition ([`crate::metrics`]).
async fn metrics(State(s): State<HttpState>) -> Response {
    match crate::metrics::render(s.engine.store()).await {
        Ok(text) => (
            StatusCode::OK,
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "could not read the metrics from the store"
            );
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not read the store",
            )
                .into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<HttpState>) -> Response {
    match s.readiness.reason() {
        None => (StatusCode::OK, "ready").into_response(),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

fn handler_of<'a>(s: &'a HttpState, id: &str) -> Option<&'a dyn WebhookHandler> {
    s.engine.webhooks(id)
}

fn not_found(s: &HttpState) -> Response {
    WebhookStats::bump(&s.stats.not_found);
    (
        StatusCode::NOT_FOUND,
        "no webhook endpoint for this connector",
    )
        .into_response()
}

async fn handshake(
    State(s): State<HttpState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(handler) = handler_of(&s, &id) else {
        return not_found(&s);
    };
    match handler.handshake(&query) {
        None => (
            StatusCode::NOT_FOUND,
            "this connector has no subscription handshake",
        )
            .into_response(),
        Some(Ok(answer)) if answer.starts_with('{') => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            answer,
        )
            .into_response(),
        Some(Ok(answer)) => (StatusCode::OK, answer).into_response(),
        Some(Err(WebhookError::Unauthorized(reason))) => {
            tracing::warn!(connector = %id, reason = %reason, "webhook handshake refused");
            (StatusCode::FORBIDDEN, "handshake refused").into_response()
        }
        Some(Err(WebhookError::Malformed(reason))) => {
            tracing::warn!(connector = %id, reason = %reason, "malformed webhook handshake");
            (StatusCode::BAD_REQUEST, "malformed handshake").into_response()
        }
    }
}

async fn receive(State(s): State<HttpState>, Path(id): Path<String>, req: Request) -> Response {
    let Some(handler) = handler_of(&s, &id) else {
        return not_found(&s);
    };
    if s.readiness.is_stopping() {
        crate::metrics::webhook(&id, "refused_stopping");
        // Not stored: the provider delivers again later, to this daemon's successor.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "30")],
            "shutting down; deliver again later",
        )
            .into_response();
    }
    let headers = headers_from(req.headers());
    let body = match Bytes::from_request(req, &()).await {
        Ok(b) => b,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            WebhookStats::bump(&s.stats.too_large);
            crate::metrics::webhook(&id, "too_large");
            tracing::warn!(connector = %id, limit = s.body_limit, "webhook body too large; refused");
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "body larger than {} bytes (daemon.http.body_limit_bytes)",
                    s.body_limit
                ),
            )
                .into_response();
        }
        Err(rejection) => {
            tracing::warn!(connector = %id, error = %rejection, "could not read a webhook body");
            return rejection.into_response();
        }
    };
    // A connector that verifies with fetched keys (eBay) gets them first.
    handler.prepare(&headers).await;
    if let Err(e) = handler.verify(&headers, &body) {
        WebhookStats::bump(&s.stats.unauthorized);
        crate::metrics::webhook(&id, "unauthorized");
        tracing::warn!(connector = %id, reason = %e, "webhook refused: signature check failed");
        return (StatusCode::UNAUTHORIZED, "signature check failed").into_response();
    }
    let event_id = inbox::event_id(handler, &id, &headers, &body);
    let (status, topic, reason) = match std::str::from_utf8(&body) {
        Err(_) => (
            InboxStatus::Rejected,
            None,
            Some("malformed delivery: the body is not UTF-8".to_string()),
        ),
        Ok(_) => match handler.parse(&headers, &body) {
            Ok(hints) => (InboxStatus::Pending, inbox::topics(&hints), None),
            Err(e) => (InboxStatus::Rejected, None, Some(e.to_string())),
        },
    };
    let text = String::from_utf8_lossy(&body);
    let delivery = NewDelivery {
        connector: &id,
        event_id: &event_id,
        topic: topic.as_deref(),
        received_at: now_ms(),
        headers: &headers,
        body: &text,
        status,
        reason: reason.as_deref(),
    };
    match s.engine.store().inbox_insert(&delivery).await {
        Ok(None) => {
            WebhookStats::bump(&s.stats.duplicates);
            crate::metrics::webhook(&id, "duplicate");
            tracing::debug!(connector = %id, event_id = %event_id, "webhook redelivered; already stored");
            (StatusCode::OK, "duplicate").into_response()
        }
        Ok(Some(row)) if status == InboxStatus::Pending => {
            WebhookStats::bump(&s.stats.accepted);
            crate::metrics::webhook(&id, "accepted");
            tracing::debug!(connector = %id, event_id = %event_id, row, topic = ?topic, "webhook stored");
            s.wake.notify_one();
            (StatusCode::OK, "accepted").into_response()
        }
        Ok(Some(row)) => {
            WebhookStats::bump(&s.stats.rejected);
            crate::metrics::webhook(&id, "rejected");
            let reason = reason.unwrap_or_default();
            tracing::warn!(connector = %id, event_id = %event_id, row, reason = %reason, "signed webhook not understood; stored as rejected");
            (StatusCode::BAD_REQUEST, reason).into_response()
        }
        Err(e) => {
            tracing::error!(connector = %id, error = %e, "could not store a webhook; the provider will deliver again");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not store the delivery",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_moves_forward_only() {
        let r = Readiness::new();
        assert!(!r.is_ready());
        assert!(r.first_pass());
        assert_eq!(
            r.reason(),
            Some("starting: the first reconcile pass has not finished")
        );
        assert!(r.set_ready());
        assert!(r.is_ready());
        assert!(!r.first_pass());
        assert!(r.is_ready());
        r.set_stopping();
        assert!(!r.set_ready());
        assert_eq!(r.reason(), Some("stopping"));
    }

    #[test]
    fn headers_are_lower_cased_and_joined() {
        let mut map = axum::http::HeaderMap::new();
        map.append("X-Topic", "a".parse().unwrap());
        map.append("x-topic", "b".parse().unwrap());
        let h = headers_from(&map);
        assert_eq!(h.get("x-topic").map(String::as_str), Some("a, b"));
    }
}

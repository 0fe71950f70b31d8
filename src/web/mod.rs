//! The daemon's read-only web page and its JSON API, mounted on the daemon's HTTP server
//! ([`crate::http::router`]).
//!
//! | route | what |
//! |---|---|
//! | `GET /` | overview: channels with consistency and health, a chart of consistency over time, recent runs |
//! | `GET /drift?channel=&cause=&field=&older_than=` | open drift, filterable |
//! | `GET /held` | corrections held for approval |
//! | `GET /dead-letters` | corrections an API refused for good |
//! | `GET /runs`, `GET /runs/{id}` | recent runs, one run's report |
//! | `GET /items/{sku}`, `GET /search?sku=` | one item: stock per location, channel prices, reservations, drift, timeline |
//! | `GET /api/v1/…` | the same data as JSON ([`api`]), described by `GET /api/v1/openapi.json` |
//!
//! Pages are rendered on the server with minijinja templates (`templates/web/*.html`,
//! embedded in the binary, HTML auto-escaping on); the only style is one inline CSS file
//! and the charts are inline SVG: no scripts, no front-end build. Every route here is
//! guarded by [`auth::require`] (the bearer token of `daemon.http.token`); the webhooks,
//! `/healthz` and `/readyz` are not part of this router.

pub mod api;
pub mod auth;
pub mod pages;
pub mod queries;

use std::sync::Arc;

use axum::Router;
use axum::middleware;
use axum::routing::get;

use crate::engine::Engine;

/// Every route of the JSON API (the OpenAPI document lists exactly these; a test checks).
pub const API_ROUTES: &[&str] = &[
    "/api/v1/overview",
    "/api/v1/drift",
    "/api/v1/items/{sku}",
    "/api/v1/runs",
    "/api/v1/runs/{id}",
    "/api/v1/consistency",
    "/api/v1/held",
    "/api/v1/dead-letters",
    "/api/v1/openapi.json",
];

/// What the page and API handlers share.
#[derive(Clone)]
pub struct WebState {
    /// The engine: its store and config are what the page shows.
    pub engine: Arc<Engine>,
    templates: Arc<minijinja::Environment<'static>>,
}

impl WebState {
    /// The state for an engine, with the templates loaded.
    pub fn new(engine: Arc<Engine>) -> WebState {
        WebState {
            engine,
            templates: Arc::new(pages::environment()),
        }
    }
}

/// The page and API routes, guarded by the token of `daemon.http.token` (read now; a
/// token that cannot be read makes every route answer 503 and is logged).
pub fn router(engine: Arc<Engine>) -> Router {
    let guard = auth::Guard::from_config(engine.config().daemon.http.token.as_ref());
    router_with_guard(engine, guard)
}

/// The page and API routes behind an explicit guard (tests).
pub fn router_with_guard(engine: Arc<Engine>, guard: auth::Guard) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/drift", get(pages::drift))
        .route("/held", get(pages::held))
        .route("/dead-letters", get(pages::dead_letters))
        .route("/runs", get(pages::runs))
        .route("/runs/{id}", get(pages::run))
        .route("/items/{sku}", get(pages::item))
        .route("/search", get(pages::search))
        .route("/api/v1/overview", get(api::overview))
        .route("/api/v1/drift", get(api::drift))
        .route("/api/v1/items/{sku}", get(api::item))
        .route("/api/v1/runs", get(api::runs))
        .route("/api/v1/runs/{id}", get(api::run))
        .route("/api/v1/consistency", get(api::consistency))
        .route("/api/v1/held", get(api::held))
        .route("/api/v1/dead-letters", get(api::dead_letters))
        .route("/api/v1/openapi.json", get(api::openapi_json))
        .route_layer(middleware::from_fn_with_state(
            Arc::new(guard),
            auth::require,
        ))
        .with_state(WebState::new(engine))
}

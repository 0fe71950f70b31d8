//! The JSON API under `/api/v1/`: the page's data, read-only, described by the OpenAPI
//! document at `/api/v1/openapi.json` ([`ApiDoc`]). Errors are `{"error": "..."}` with the
//! status that fits: 400 names the bad parameter, 404 an unknown SKU or run, 500 a store
//! failure (logged; the answer says only that the store could not be read).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::WebState;
use super::queries::{self, DeadLetterRow, HeldRow, RunRecord};
use crate::outbox::now_ms;
use crate::views::{
    self, CAUSES, ConsistencyPoint, DriftFilter, DriftRow, FIELDS, ItemView, Overview,
};

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong (a bad parameter is named).
    pub error: String,
}

/// An error answer of the API.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Message.
    pub message: String,
}

impl ApiError {
    /// 400 for a bad parameter.
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// 500 for a store failure: logged with its cause, answered without it.
    pub fn internal(e: anyhow::Error) -> ApiError {
        tracing::error!(error = format!("{e:#}"), "web: reading the store failed");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "could not read the store (see the daemon's log)".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// Reads the drift filter from query parameters (`channel`, `cause`, `field`,
/// `older_than`, `sku`, `limit`; empty means "any"), checking each; the error names the
/// parameter.
pub fn drift_filter(
    state: &WebState,
    params: &HashMap<String, String>,
) -> Result<DriftFilter, String> {
    let mut filter = DriftFilter::default();
    for (key, value) in params {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match key.as_str() {
            "channel" => {
                if state.engine.config().connector(value).is_none() {
                    return Err(format!("channel: no connector {value:?} in the config"));
                }
                filter.channel = Some(value.to_string());
            }
            "cause" => {
                if !CAUSES.contains(&value) {
                    return Err(format!(
                        "cause: {value:?} is not one of {}",
                        CAUSES.join(", ")
                    ));
                }
                filter.cause = Some(value.to_string());
            }
            "field" => {
                if !FIELDS.contains(&value) {
                    return Err(format!(
                        "field: {value:?} is not one of {}",
                        FIELDS.join(", ")
                    ));
                }
                filter.field = Some(value.to_string());
            }
            "older_than" => {
                filter.older_than_ms =
                    Some(views::parse_duration(value).map_err(|e| format!("older_than: {e}"))?);
            }
            "sku" => filter.sku = Some(value.to_string()),
            "limit" => {
                let n: i64 = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| format!("limit: {value:?} is not a number from 1 to 10000"))?;
                filter.limit = Some(n);
            }
            other => {
                return Err(format!(
                    "{other}: unknown parameter (expected channel, cause, field, older_than, sku, limit)"
                ));
            }
        }
    }
    filter
        .check(Some(state.engine.config()))
        .map_err(|e| format!("{e:#}"))?;
    Ok(filter)
}

/// The overview: every channel's consistency and health, and the latest runs.
#[utoipa::path(get, path = "/api/v1/overview", tag = "omnisync",
    responses((status = 200, description = "Channels and recent runs", body = Overview),
              (status = 401, description = "Token missing or wrong", body = ErrorBody)))]
pub async fn overview(State(s): State<WebState>) -> Result<Json<Overview>, ApiError> {
    let o = views::overview(s.engine.store(), s.engine.config())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(o))
}

/// Open drift, oldest first, filtered.
#[utoipa::path(get, path = "/api/v1/drift", tag = "omnisync",
    params(
        ("channel" = Option<String>, Query, description = "Only this channel (a connector id)"),
        ("cause" = Option<String>, Query, description = "source_changed, channel_edit, order_in_flight, write_failed, write_no_op, mapping or unknown"),
        ("field" = Option<String>, Query, description = "offer, stock, listing or orphan"),
        ("older_than" = Option<String>, Query, description = "Open at least this long: 90s, 15m, 2h, 1d, 1w, 1h30m"),
        ("sku" = Option<String>, Query, description = "Only this SKU"),
        ("limit" = Option<i64>, Query, description = "At most this many rows (1..=10000, default 10000)"),
    ),
    responses((status = 200, description = "Open differences", body = Vec<DriftRow>),
              (status = 400, description = "A bad parameter, named", body = ErrorBody),
              (status = 401, description = "Token missing or wrong", body = ErrorBody)))]
pub async fn drift(
    State(s): State<WebState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Vec<DriftRow>>, ApiError> {
    let filter = drift_filter(&s, &params).map_err(ApiError::bad)?;
    let rows = views::open_drift(s.engine.store(), &filter, now_ms())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(rows))
}

/// One item: stock per location, channel values, reservations, open drift, timeline.
#[utoipa::path(get, path = "/api/v1/items/{sku}", tag = "omnisync",
    params(("sku" = String, Path, description = "The SKU")),
    responses((status = 200, description = "The item", body = ItemView),
              (status = 404, description = "Unknown SKU", body = ErrorBody),
              (status = 401, description = "Token missing or wrong", body = ErrorBody)))]
pub async fn item(
    State(s): State<WebState>,
    Path(sku): Path<String>,
) -> Result<Json<ItemView>, ApiError> {
    match views::item(s.engine.store(), s.engine.config(), &sku).await {
        Ok(Some(v)) => Ok(Json(v)),
        Ok(None) => Err(ApiError::not_found(format!("unknown SKU {sku:?}"))),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// The latest runs, newest first (at most 50).
#[utoipa::path(get, path = "/api/v1/runs", tag = "omnisync",
    responses((status = 200, description = "Runs", body = Vec<RunRecord>),
              (status = 401, description = "Token missing or wrong", body = ErrorBody)))]
pub async fn runs(State(s): State<WebState>) -> Result<Json<Vec<RunRecord>>, ApiError> {
    let rows = queries::runs(s.engine.store(), 50)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(rows))
}

/// A run's full report (as `omnisync report --format json` prints it).
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetail {
    /// The run and its figures per channel.
    pub run: RunRecord,
    /// The stored report; `null` while the run is in progress.
    #[schema(value_type = Object)]
    pub report: Option<serde_json::Value>,
}

/// One run and its report.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "omnisync",
    params(("id" = String, Path, description = "The run id")),
    responses((status = 200, description = "The run", body = RunDetail),
              (status = 400, description = "Not a run id", body = ErrorBody),
              (status = 404, description = "Unknown run", body = ErrorBody),
              (status = 401, description = "Token missing or wrong", body = ErrorBody)))]
pub async fn run(
    State(s): State<WebState>,
    Path(id): Path<String>,
) -> Result<Json<RunDetail>, ApiError> {
    let n: i64 = id
        .parse()
        .map_err(|_| ApiError::bad(format!("id: {id:?} is not a run id")))?;
    match queries::run(s.engine.store(), n).await {
        Ok(Some((run, report))) => Ok(Json(RunDetail { run, report })),
        Ok(None) => Err(ApiError::not_found(format!("no run {n}"))),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// Consistency of each target channel over the latest full runs, oldest first.
#[utoipa::path(get, path = "/api/v1/consistency", tag = "omnisync",
    params(
        ("channel" = Option<String>, Query, description = "Only this channel"),
        ("runs" = Option<i64>, Query, description = "How many runs back (1..=1000, default 50)"),
    ),
    responses((status = 200, description = "One point per channel and run", body = Vec<ConsistencyPoint>),
              (status = 400, description = "A bad parameter, named", body = ErrorBody),
              (status = 401, description = "Token missing or wrong", body = ErrorBody)))]
pub async fn consistency(
    State(s): State<WebState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Vec<ConsistencyPoint>>, ApiError> {
    let mut channel = None;
    let mut limit = 50;
    for (k, v) in &params {
        match k.as_str() {
            "channel" if v.is_empty() => {}
            "channel" => {
                if s.engine.config().connector(v).is_none() {
                    return Err(ApiError::bad(format!(
                        "channel: no connector {v:?} in the config"
                    )));
                }
                channel = Some(v.as_str());
            }
            "runs" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad(format!("runs: {v:?} is not a number from 1 to 1000"))
                    })?;
            }
            other => {
                return Err(ApiError::bad(format!(
                    "{other}: unknown parameter (expected channel, runs)"
                )));
            }
        }
    }
    let points = views::consistency_series(s.engine.store(), channel, limit)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(points))
}

/// Corrections held for approval, on every channel.
#[utoipa::path(get, path = "/api/v1/held", tag = "omnisync",
    responses((status = 200, description = "Held corrections", body = Vec<HeldRow>),
              (status = 401, description = "Token missing or wrong", body = ErrorBody)))]
pub async fn held(State(s): State<WebState>) -> Result<Json<Vec<HeldRow>>, ApiError> {
    let rows = queries::held(s.engine.store(), 5000)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(rows))
}

/// Open dead letters, newest first.
#[utoipa::path(get, path = "/api/v1/dead-letters", tag = "omnisync",
    responses((status = 200, description = "Dead letters", body = Vec<DeadLetterRow>),
              (status = 401, description = "Token missing or wrong", body = ErrorBody)))]
pub async fn dead_letters(State(s): State<WebState>) -> Result<Json<Vec<DeadLetterRow>>, ApiError> {
    let rows = queries::dead_letters(s.engine.store(), 1000)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(rows))
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "omnisync",
    responses((status = 200, description = "The OpenAPI document of this API")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of `/api/v1`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "omnisync",
        description = "Read-only state of the omnisync channel-sync daemon. When daemon.http.token is set, send Authorization: Bearer <token>."
    ),
    paths(overview, drift, item, runs, run, consistency, held, dead_letters, openapi_json),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "omnisync", description = "Channels, drift, items, runs"))
)]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_of_the_router_is_documented() {
        let doc = ApiDoc::openapi();
        for path in super::super::API_ROUTES {
            assert!(
                doc.paths.paths.contains_key(*path),
                "{path} is not in the OpenAPI document"
            );
        }
        assert_eq!(doc.paths.paths.len(), super::super::API_ROUTES.len());
    }
}

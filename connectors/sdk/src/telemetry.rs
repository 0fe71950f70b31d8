//! API-call metrics, through the `metrics` facade (the daemon installs the Prometheus
//! recorder; without one these calls cost next to nothing).
//!
//! The daemon runs each connector call inside [`scope`] with the connector's id; the HTTP
//! client ([`crate::http::HttpClient`]) and the retry loop ([`crate::retry::retry`]) label
//! what they count with it, so connectors need not know their own id:
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `omnisync_api_requests_total` | `connector`, `status` (`2xx`, `3xx`, `4xx`, `429`, `5xx`, `transport`) | HTTP requests sent |
//! | `omnisync_api_request_duration_seconds` | `connector` | time to the whole answer |
//! | `omnisync_api_throttled_total` | `connector` | throttled answers (429, Shopify `THROTTLED`, Graph rate-limit codes) |

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;

tokio::task_local! {
    static CONNECTOR: Arc<str>;
}

/// Runs `fut` with its API calls counted under connector `id`.
pub async fn scope<F: Future>(id: Arc<str>, fut: F) -> F::Output {
    CONNECTOR.scope(id, fut).await
}

/// The connector the current task works for, or `other` outside any [`scope`].
pub fn current() -> Arc<str> {
    CONNECTOR
        .try_with(Arc::clone)
        .unwrap_or_else(|_| Arc::from("other"))
}

/// Counts one answered request.
pub(crate) fn record_response(status: StatusCode, elapsed: Duration) {
    let class = match status.as_u16() {
        429 => "429",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    let connector = current();
    metrics::counter!("omnisync_api_requests_total", "connector" => connector.to_string(), "status" => class)
        .increment(1);
    metrics::histogram!("omnisync_api_request_duration_seconds", "connector" => connector.to_string())
        .record(elapsed.as_secs_f64());
}

/// Counts one request that got no answer (connect error, timeout, reset).
pub(crate) fn record_transport_error(elapsed: Duration) {
    let connector = current();
    metrics::counter!("omnisync_api_requests_total", "connector" => connector.to_string(), "status" => "transport")
        .increment(1);
    metrics::histogram!("omnisync_api_request_duration_seconds", "connector" => connector.to_string())
        .record(elapsed.as_secs_f64());
}

/// Counts one throttled answer.
pub(crate) fn record_throttled() {
    metrics::counter!("omnisync_api_throttled_total", "connector" => current().to_string())
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_scope_names_the_connector() {
        assert_eq!(&*current(), "other");
        let inside = scope(Arc::from("webshop"), async { current() }).await;
        assert_eq!(&*inside, "webshop");
    }
}

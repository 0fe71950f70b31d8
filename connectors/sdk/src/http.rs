//! JSON over HTTP with failures mapped onto [`ConnectorError`].
//!
//! Every connector talks to its API through [`HttpClient`]: one `reqwest` client with
//! timeouts, an optional request budget ([`RateLimiter`]), and a single place that turns
//! status codes, `Retry-After` and unreadable bodies into the error taxonomy. Bodies quoted in
//! errors are cut short, and request headers (where the credentials are) are never quoted.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::{ConnectorError, ErrorKind};
use crate::ratelimit::RateLimiter;

/// How much of a response body an error message quotes.
const QUOTE_LIMIT: usize = 300;

/// A response that came back with a success status and a JSON body.
#[derive(Debug)]
pub struct JsonResponse<T> {
    /// The HTTP status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The decoded body.
    pub body: T,
}

/// An HTTP client for one connector instance.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: reqwest::Client,
    limiter: Option<RateLimiter>,
}

impl HttpClient {
    /// A client with the given total request timeout and an optional request budget.
    pub fn new(timeout: Duration, limiter: Option<RateLimiter>) -> Result<Self, ConnectorError> {
        let inner = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("omnisync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConnectorError::config("building HTTP client", e.to_string()))?;
        Ok(HttpClient { inner, limiter })
    }

    /// The underlying `reqwest` client, to build requests with.
    pub fn raw(&self) -> &reqwest::Client {
        &self.inner
    }

    /// Sends a request (after waiting for the request budget) and decodes a JSON body.
    /// `operation` names the call in errors, e.g. `"GET /products"`.
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        operation: &str,
        request: RequestBuilder,
    ) -> Result<JsonResponse<T>, ConnectorError> {
        let (status, headers, bytes) = self.send(operation, request).await?;
        let body = decode_json(operation, &bytes)?;
        Ok(JsonResponse {
            status,
            headers,
            body,
        })
    }

    /// Sends a request and returns the raw body of a successful response; any other status
    /// is mapped by [`status_error`].
    pub async fn send(
        &self,
        operation: &str,
        request: RequestBuilder,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ConnectorError> {
        let (status, headers, bytes) = self.send_raw(operation, request).await?;
        if status.is_success() {
            return Ok((status, headers, bytes));
        }
        Err(status_error(operation, status, &headers, &bytes))
    }

    /// Sends a request (after waiting for the request budget) and returns the status,
    /// headers and body whatever the status, for APIs whose error answers carry an envelope
    /// the connector reads itself (per-item results in a 4xx, a Graph error object). Only
    /// transport failures are errors, mapped by [`transport_error`] (without the URL).
    pub async fn send_raw(
        &self,
        operation: &str,
        request: RequestBuilder,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ConnectorError> {
        if let Some(limiter) = &self.limiter {
            limiter.acquire().await;
        }
        let started = std::time::Instant::now();
        let answered = async {
            let response = request.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, bytes))
        }
        .await;
        match answered {
            Ok((status, headers, bytes)) => {
                crate::telemetry::record_response(status, started.elapsed());
                Ok((status, headers, bytes))
            }
            Err(e) => {
                crate::telemetry::record_transport_error(started.elapsed());
                Err(transport_error(operation, &e))
            }
        }
    }

    /// The same client (sharing its connections and timeouts) without the request budget,
    /// for calls to hosts outside the API's rate limit, such as signed storage URLs.
    pub fn without_limiter(&self) -> HttpClient {
        HttpClient {
            inner: self.inner.clone(),
            limiter: None,
        }
    }
}

/// Decodes a JSON body, or says where and why it could not.
pub fn decode_json<T: DeserializeOwned>(operation: &str, body: &[u8]) -> Result<T, ConnectorError> {
    serde_json::from_slice(body).map_err(|e| {
        ConnectorError::protocol(
            operation,
            format!("unreadable JSON answer ({e}): {}", quote(body)),
        )
    })
}

/// Maps a non-success status to an error, reading `Retry-After` where present.
pub fn status_error(
    operation: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> ConnectorError {
    let kind = match status.as_u16() {
        429 => ErrorKind::Throttled,
        401 | 403 => ErrorKind::Auth,
        408 | 423 | 425 => ErrorKind::Transient,
        s if s >= 500 => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    };
    let mut err = ConnectorError::new(kind, operation, format!("HTTP {status}: {}", quote(body)))
        .with_status(status.as_u16());
    err.retry_after = retry_after(headers);
    err
}

/// Reads a `Retry-After` header given in seconds (the form the APIs we speak use).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

/// Maps a transport failure, without the URL (signed URLs carry credentials in the query).
pub fn transport_error(operation: &str, e: &reqwest::Error) -> ConnectorError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "transport error"
    };
    let detail = match std::error::Error::source(e) {
        Some(source) => format!("{what}: {source}"),
        None => what.to_string(),
    };
    ConnectorError::transient(operation, detail)
}

/// A short, printable quote of a body for error messages.
pub fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_string();
    }
    let mut cut: String = text.chars().take(QUOTE_LIMIT).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn maps_statuses() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        let e = status_error("GET /x", StatusCode::TOO_MANY_REQUESTS, &h, b"slow down");
        assert_eq!(e.kind, ErrorKind::Throttled);
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
        assert!(e.to_string().contains("GET /x"));
        let e = status_error("GET /x", StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"");
        assert_eq!(e.kind, ErrorKind::Transient);
        assert!(e.is_retryable());
        let e = status_error("GET /x", StatusCode::UNAUTHORIZED, &HeaderMap::new(), b"");
        assert_eq!(e.kind, ErrorKind::Auth);
        assert!(!e.is_retryable());
        let e = status_error(
            "GET /x",
            StatusCode::UNPROCESSABLE_ENTITY,
            &HeaderMap::new(),
            b"{}",
        );
        assert_eq!(e.kind, ErrorKind::Permanent);
    }

    #[test]
    fn malformed_json_is_a_protocol_error_naming_the_call() {
        let e = decode_json::<serde_json::Value>("POST /graphql", b"{\"data\": [").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol);
        assert!(e.to_string().starts_with("POST /graphql: unreadable JSON"));
    }

    #[test]
    fn quotes_are_short() {
        let long = vec![b'a'; 1000];
        assert!(quote(&long).chars().count() <= QUOTE_LIMIT + 1);
    }
}

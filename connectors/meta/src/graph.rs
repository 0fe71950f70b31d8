//! The Graph API's wire shapes, its error envelope and its rate-limit header.
//!
//! Graph answers failures with `{"error": {"message", "type", "code", "error_subcode",
//! "fbtrace_id", "is_transient"}}` — usually with HTTP 400 whatever the cause — so the error
//! *code* decides the kind: throttling codes (4, 17, 32, 613, the Business Use Case codes
//! 800xx) are [`ErrorKind::Throttled`], token and permission codes (190, 102, 104, 10,
//! 200–299) are [`ErrorKind::Auth`]. A throttled answer's wait comes from the
//! `X-Business-Use-Case-Usage` header (`estimated_time_to_regain_access`, in minutes).
//! Bodies that are not a Graph error (a proxy's 502, an injected fault) fall back to the
//! SDK's status mapping.

use std::time::Duration;

use omnisync_sdk::http::{quote, retry_after, status_error};
use omnisync_sdk::{ConnectorError, ErrorKind};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

/// The rate-limit header of Business Use Case limits.
pub const BUC_HEADER: &str = "x-business-use-case-usage";

/// A Graph error object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphError {
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// E.g. `OAuthException`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    /// The subcode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_subcode: Option<i64>,
    /// A message meant for end users, when Graph gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_user_msg: Option<String>,
    /// Whether Graph thinks a retry may succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_transient: Option<bool>,
    /// Meta's trace id, for support requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fbtrace_id: Option<String>,
}

/// `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GraphErrorBody {
    /// The error.
    pub error: GraphError,
}

/// How this connector classifies Graph error codes.
#[derive(Debug, Clone)]
pub struct ErrorPolicy {
    /// Codes that mean "throttled".
    pub throttle_codes: Vec<i64>,
}

impl ErrorPolicy {
    /// The kind for a Graph error answered with `status`.
    pub fn classify(&self, error: &GraphError, status: StatusCode) -> ErrorKind {
        let code = error.code.unwrap_or(0);
        if self.throttle_codes.contains(&code) {
            return ErrorKind::Throttled;
        }
        match code {
            // Invalid/expired token, session, missing token, permission errors.
            102 | 104 | 190 | 10 | 200..=299 => return ErrorKind::Auth,
            // "Please reduce the amount of data you're asking for": the payload is too big,
            // and sending it again will not change that (lower `batch_size`).
            1 if error.message.contains("reduce the amount of data") => {
                return ErrorKind::Permanent;
            }
            // "An unknown error occurred", "Service temporarily unavailable".
            1 | 2 => return ErrorKind::Transient,
            _ => {}
        }
        if error.is_transient == Some(true) {
            return ErrorKind::Transient;
        }
        match status.as_u16() {
            429 => ErrorKind::Throttled,
            401 | 403 => ErrorKind::Auth,
            s if s >= 500 => ErrorKind::Transient,
            _ => ErrorKind::Permanent,
        }
    }

    /// The error for a failed answer: a Graph error when the body is one, else the SDK's
    /// status mapping.
    pub fn error_from_response(
        &self,
        operation: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> ConnectorError {
        match serde_json::from_slice::<GraphErrorBody>(body) {
            Ok(GraphErrorBody { error }) => self.graph_error(operation, status, headers, &error),
            Err(_) => status_error(operation, status, headers, body),
        }
    }

    /// The error for a Graph error object.
    pub fn graph_error(
        &self,
        operation: &str,
        status: StatusCode,
        headers: &HeaderMap,
        error: &GraphError,
    ) -> ConnectorError {
        let kind = self.classify(error, status);
        let mut err = ConnectorError::new(kind, operation, describe(status, error))
            .with_status(status.as_u16());
        if kind == ErrorKind::Throttled {
            err.retry_after = regain_after(&parse_buc(headers)).or_else(|| retry_after(headers));
        }
        err
    }
}

fn describe(status: StatusCode, error: &GraphError) -> String {
    let mut text = format!("HTTP {status}: Graph error");
    if let Some(code) = error.code {
        text.push_str(&format!(" {code}"));
        if let Some(sub) = error.error_subcode {
            text.push_str(&format!("/{sub}"));
        }
    }
    if let Some(kind) = &error.kind {
        text.push_str(&format!(" ({kind})"));
    }
    text.push_str(": ");
    text.push_str(&quote(error.message.as_bytes()));
    if let Some(user) = error.error_user_msg.as_deref().filter(|m| !m.is_empty()) {
        text.push_str(&format!(" — {}", quote(user.as_bytes())));
    }
    if let Some(trace) = &error.fbtrace_id {
        text.push_str(&format!(" [fbtrace_id {trace}]"));
    }
    text
}

/// One entry of `X-Business-Use-Case-Usage`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BucEntry {
    /// The business use case, e.g. `catalog_batch` or `catalog_management`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Percentage of the allowed calls used.
    #[serde(default)]
    pub call_count: f64,
    /// Percentage of the allowed CPU time used.
    #[serde(default)]
    pub total_cputime: f64,
    /// Percentage of the allowed total time used.
    #[serde(default)]
    pub total_time: f64,
    /// Minutes until calls are allowed again (0 when not throttled).
    #[serde(default)]
    pub estimated_time_to_regain_access: f64,
}

impl BucEntry {
    /// The highest of the three usage percentages.
    pub fn usage(&self) -> f64 {
        self.call_count.max(self.total_cputime).max(self.total_time)
    }
}

/// Reads `X-Business-Use-Case-Usage` (`{"<business id>": [entry, ...]}`); empty when absent
/// or unreadable.
pub fn parse_buc(headers: &HeaderMap) -> Vec<BucEntry> {
    let Some(value) = headers.get(BUC_HEADER).and_then(|v| v.to_str().ok()) else {
        return Vec::new();
    };
    serde_json::from_str::<std::collections::BTreeMap<String, Vec<BucEntry>>>(value)
        .map(|m| m.into_values().flatten().collect())
        .unwrap_or_default()
}

/// The longest `estimated_time_to_regain_access` among the entries, when positive.
pub fn regain_after(entries: &[BucEntry]) -> Option<Duration> {
    let minutes = entries
        .iter()
        .map(|e| e.estimated_time_to_regain_access)
        .filter(|m| m.is_finite() && *m > 0.0)
        .fold(0.0_f64, f64::max);
    (minutes > 0.0).then(|| Duration::from_secs_f64(minutes.min(24.0 * 60.0) * 60.0))
}

/// `data` + `paging` of an edge.
#[derive(Debug, Clone, Deserialize)]
pub struct EdgePage {
    /// The nodes, kept raw so one odd node does not sink the page.
    pub data: Vec<serde_json::Value>,
    /// Cursors.
    #[serde(default)]
    pub paging: Option<Paging>,
}

/// `paging`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Paging {
    /// `cursors`.
    #[serde(default)]
    pub cursors: Option<Cursors>,
    /// The URL of the next page; absent on the last page.
    #[serde(default)]
    pub next: Option<String>,
}

/// `paging.cursors`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Cursors {
    /// Cursor of the last node.
    #[serde(default)]
    pub after: Option<String>,
}

/// A product as the products edge returns it (only the fields we ask for).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProductItem {
    /// The retailer id (our SKU).
    #[serde(default)]
    pub retailer_id: Option<String>,
    /// The title.
    #[serde(default)]
    pub name: Option<String>,
    /// Display price.
    #[serde(default)]
    pub price: Option<String>,
    /// Display sale price.
    #[serde(default)]
    pub sale_price: Option<String>,
    /// Sale window start.
    #[serde(default)]
    pub sale_price_start_date: Option<String>,
    /// Sale window end.
    #[serde(default)]
    pub sale_price_end_date: Option<String>,
    /// ISO 4217 code.
    #[serde(default)]
    pub currency: Option<String>,
    /// `in stock`, `out of stock`, ...
    #[serde(default)]
    pub availability: Option<String>,
    /// Quantity offered on Facebook/Instagram (a number; tolerated as a numeric string).
    #[serde(default)]
    pub quantity_to_sell_on_facebook: Option<serde_json::Value>,
}

/// A JSON id (string or number) as a string.
pub fn id_string(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A message in `validation_status`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Message {
    /// The text.
    #[serde(default)]
    pub message: String,
}

/// Synchronous validation of one request of an `items_batch` call.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ValidationStatus {
    /// The request's retailer id.
    #[serde(default)]
    pub retailer_id: Option<String>,
    /// Errors (the request was not ingested).
    #[serde(default)]
    pub errors: Vec<Message>,
    /// Warnings.
    #[serde(default)]
    pub warnings: Vec<Message>,
}

/// The answer to `POST /{catalog_id}/items_batch`.
#[derive(Debug, Clone, Deserialize)]
pub struct ItemsBatchAnswer {
    /// Zero or one handle to poll; empty means nothing was ingested.
    pub handles: Vec<String>,
    /// Per-request validation.
    #[serde(default)]
    pub validation_status: Vec<ValidationStatus>,
}

/// One error or warning of a batch status.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BatchIssue {
    /// Index of the request in the `requests` array.
    #[serde(default)]
    pub line: Option<serde_json::Value>,
    /// The request's retailer id.
    #[serde(default)]
    pub id: Option<serde_json::Value>,
    /// What is wrong.
    #[serde(default)]
    pub message: Option<String>,
}

impl BatchIssue {
    /// `line` as an index.
    pub fn line(&self) -> Option<usize> {
        match self.line.as_ref()? {
            serde_json::Value::Number(n) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// `id` as a string.
    pub fn retailer_id(&self) -> Option<String> {
        self.id.as_ref().and_then(id_string)
    }
}

/// One node of `GET /{catalog_id}/check_batch_request_status`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BatchStatus {
    /// `scheduled`, `dispatched`, `started`, `finished`, `canceled` or `error`.
    pub status: String,
    /// A sample of the errors.
    #[serde(default)]
    pub errors: Vec<BatchIssue>,
    /// How many errors in total.
    #[serde(default)]
    pub errors_total_count: Option<u64>,
    /// A sample of the warnings.
    #[serde(default)]
    pub warnings: Vec<BatchIssue>,
    /// How many warnings in total.
    #[serde(default)]
    pub warnings_total_count: Option<u64>,
    /// Retailer ids of the failed requests (with `load_ids_of_invalid_requests=true`).
    #[serde(default)]
    pub ids_of_invalid_requests: Vec<String>,
}

impl BatchStatus {
    /// Whether Meta is done with the batch.
    pub fn is_final(&self) -> bool {
        matches!(
            self.status.to_ascii_lowercase().as_str(),
            "finished" | "error" | "canceled" | "cancelled"
        )
    }

    /// Whether the batch ended normally (failed requests are listed as errors).
    pub fn is_finished(&self) -> bool {
        self.status.eq_ignore_ascii_case("finished")
    }
}

/// The answer to `check_batch_request_status`: a one-element collection.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchStatusAnswer {
    /// The status node.
    pub data: Vec<BatchStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn policy() -> ErrorPolicy {
        ErrorPolicy {
            throttle_codes: crate::settings::default_throttle_codes(),
        }
    }

    fn err(code: i64) -> GraphError {
        GraphError {
            message: "m".into(),
            code: Some(code),
            ..GraphError::default()
        }
    }

    #[test]
    fn classifies_codes_whatever_the_status() {
        let p = policy();
        let bad = StatusCode::BAD_REQUEST;
        assert_eq!(p.classify(&err(80014), bad), ErrorKind::Throttled);
        assert_eq!(
            p.classify(&err(80009), StatusCode::FORBIDDEN),
            ErrorKind::Throttled
        );
        assert_eq!(p.classify(&err(4), bad), ErrorKind::Throttled);
        assert_eq!(p.classify(&err(190), bad), ErrorKind::Auth);
        assert_eq!(
            p.classify(&err(190), StatusCode::UNAUTHORIZED),
            ErrorKind::Auth
        );
        assert_eq!(p.classify(&err(200), bad), ErrorKind::Auth);
        assert_eq!(p.classify(&err(100), bad), ErrorKind::Permanent);
        assert_eq!(p.classify(&err(2), bad), ErrorKind::Transient);
        let mut big = err(1);
        big.message =
            "Please reduce the amount of data you're asking for, then retry your request".into();
        assert_eq!(
            p.classify(&big, StatusCode::INTERNAL_SERVER_ERROR),
            ErrorKind::Permanent
        );
        assert_eq!(
            p.classify(&err(100), StatusCode::SERVICE_UNAVAILABLE),
            ErrorKind::Transient
        );
        let mut t = err(100);
        t.is_transient = Some(true);
        assert_eq!(p.classify(&t, bad), ErrorKind::Transient);
    }

    #[test]
    fn throttle_wait_comes_from_the_buc_header() {
        let mut h = HeaderMap::new();
        h.insert(
            BUC_HEADER,
            HeaderValue::from_static(
                r#"{"123":[{"type":"catalog_batch","call_count":100,"total_cputime":3,"total_time":4,"estimated_time_to_regain_access":2}]}"#,
            ),
        );
        let body = br#"{"error":{"message":"(#80014) There have been too many calls","type":"OAuthException","code":80014,"fbtrace_id":"Abc"}}"#;
        let e = policy().error_from_response("POST /x", StatusCode::BAD_REQUEST, &h, body);
        assert_eq!(e.kind, ErrorKind::Throttled);
        assert_eq!(e.retry_after, Some(Duration::from_secs(120)));
        assert!(e.message.contains("80014"), "{}", e.message);
        assert!(e.message.contains("Abc"));
        let usage = parse_buc(&h);
        assert_eq!(usage.len(), 1);
        assert_eq!(usage[0].kind, "catalog_batch");
        assert_eq!(usage[0].usage(), 100.0);
    }

    #[test]
    fn non_graph_bodies_use_the_status() {
        let e = policy().error_from_response(
            "GET /x",
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            br#"{"error":"injected fault","status":502}"#,
        );
        assert_eq!(e.kind, ErrorKind::Transient);
        let e = policy().error_from_response(
            "GET /x",
            StatusCode::UNAUTHORIZED,
            &HeaderMap::new(),
            b"<html>nope</html>",
        );
        assert_eq!(e.kind, ErrorKind::Auth);
    }

    #[test]
    fn batch_issue_fields_are_tolerant() {
        let i: BatchIssue =
            serde_json::from_str(r#"{"line":"3","id":42,"message":"bad"}"#).unwrap();
        assert_eq!(i.line(), Some(3));
        assert_eq!(i.retailer_id().as_deref(), Some("42"));
        let s: BatchStatus = serde_json::from_str(r#"{"status":"Finished"}"#).unwrap();
        assert!(s.is_final() && s.is_finished());
        let s: BatchStatus = serde_json::from_str(r#"{"status":"dispatched"}"#).unwrap();
        assert!(!s.is_final());
    }
}

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
//!
//! **Pacing.** The same header, read on every answer, paces pushes: [`Pacer`] keeps the
//! latest reading per use case and [`PacingPolicy::window`] turns it into the wait before the
//! next call — none below `pacing_from_percent`, then growing linearly to
//! `pacing_max_window_ms` at 100 %, or the time to regain access when that is longer. The
//! wait counts from the answer that carried the reading, so a reading stops pacing once its
//! wait has passed: an old reading never holds pushes back (the next call brings a fresh
//! one).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// The longest wait taken from `estimated_time_to_regain_access` (a day).
const MAX_REGAIN: Duration = Duration::from_secs(24 * 60 * 60);

/// What the connector last saw of one Business Use Case in `X-Business-Use-Case-Usage`.
#[derive(Debug, Clone, PartialEq)]
pub struct BucReading {
    /// The business use case (`type`), e.g. `catalog_batch` or `catalog_management`.
    pub kind: String,
    /// Its usage in percent: the highest [`BucEntry::usage`] of the use case in that answer.
    pub percent: f64,
    /// Its `estimated_time_to_regain_access`, when positive.
    pub regain: Option<Duration>,
    /// When the answer that carried it arrived.
    pub seen: Instant,
}

/// When pushes are paced and how far: from [`crate::Settings::pacing_from_percent`] up to
/// [`crate::Settings::pacing_max_window_ms`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacingPolicy {
    /// The usage (percent) from which calls are spaced out.
    pub from_percent: f64,
    /// The space between calls at 100 % usage.
    pub max_window: Duration,
}

impl PacingPolicy {
    /// The wait before the next call that a use case at `percent`, with `regain` left before
    /// access comes back, asks for, counted from when it was reported: `None` at or below
    /// [`PacingPolicy::from_percent`], then growing linearly from 0 to
    /// [`PacingPolicy::max_window`] at 100 % (and staying there above), or `regain` when that
    /// is longer. A usage that is not a number counts as none.
    pub fn window(&self, percent: f64, regain: Option<Duration>) -> Option<Duration> {
        let percent = if percent.is_finite() { percent } else { 0.0 };
        let share = if self.from_percent >= 100.0 {
            if percent >= 100.0 { 1.0 } else { 0.0 }
        } else {
            ((percent - self.from_percent) / (100.0 - self.from_percent)).clamp(0.0, 1.0)
        };
        let linear = self.max_window.mul_f64(share);
        let wait = linear.max(regain.unwrap_or_default().min(MAX_REGAIN));
        (!wait.is_zero()).then_some(wait)
    }
}

/// A use case crossing [`PacingPolicy::from_percent`], as one answer reported it.
#[derive(Debug, Clone, PartialEq)]
pub enum Crossing {
    /// It was under (or unknown) and now asks for pacing.
    Started {
        /// The use case.
        kind: String,
        /// Its usage now.
        percent: f64,
        /// The wait it asks for.
        wait: Duration,
    },
    /// It asked for pacing and is now under.
    Ended {
        /// The use case.
        kind: String,
        /// Its usage now.
        percent: f64,
    },
}

/// The latest usage seen per Business Use Case, and the wait it asks for.
///
/// Kept per use case because one push spends two of them: `items_batch` reports
/// `catalog_batch` and the status polls right after it report `catalog_management`, whose
/// low usage must not hide the batch budget running out.
#[derive(Debug)]
pub struct Pacer {
    policy: PacingPolicy,
    readings: Mutex<HashMap<String, BucReading>>,
}

impl Pacer {
    /// A pacer with no readings.
    pub fn new(policy: PacingPolicy) -> Self {
        Pacer {
            policy,
            readings: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BucReading>> {
        self.readings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the usage of one answer, arrived at `now`: each use case it names replaces that
    /// use case's reading. Returns the use cases that crossed into or out of pacing.
    pub fn note(&self, entries: &[BucEntry], now: Instant) -> Vec<Crossing> {
        let mut fresh: HashMap<&str, (f64, Option<Duration>)> = HashMap::new();
        for entry in entries {
            let percent = Some(entry.usage()).filter(|p| p.is_finite()).unwrap_or(0.0);
            let regain = regain_after(std::slice::from_ref(entry));
            let slot = fresh
                .entry(entry.kind.as_str())
                .or_insert((percent, regain));
            slot.0 = slot.0.max(percent);
            slot.1 = slot.1.max(regain);
        }
        let mut crossings = Vec::new();
        let mut readings = self.lock();
        for (kind, (percent, regain)) in fresh {
            let was = readings
                .get(kind)
                .is_some_and(|r| self.policy.window(r.percent, r.regain).is_some());
            match (was, self.policy.window(percent, regain)) {
                (false, Some(wait)) => crossings.push(Crossing::Started {
                    kind: kind.to_string(),
                    percent,
                    wait,
                }),
                (true, None) => crossings.push(Crossing::Ended {
                    kind: kind.to_string(),
                    percent,
                }),
                _ => {}
            }
            readings.insert(
                kind.to_string(),
                BucReading {
                    kind: kind.to_string(),
                    percent,
                    regain,
                    seen: now,
                },
            );
        }
        crossings
    }

    /// The wait left at `now` before the next call: the longest any use case's reading asks
    /// for, less the time since it was seen; `None` when none asks for more.
    pub fn pacing_at(&self, now: Instant) -> Option<Duration> {
        self.lock()
            .values()
            .filter_map(|r| {
                let wait = self.policy.window(r.percent, r.regain)?;
                wait.checked_sub(now.saturating_duration_since(r.seen))
            })
            .filter(|left| !left.is_zero())
            .max()
    }

    /// The latest reading of each use case, by use case.
    pub fn readings(&self) -> Vec<BucReading> {
        let mut all: Vec<BucReading> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| a.kind.cmp(&b.kind));
        all
    }
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

    fn policy_50_60s() -> PacingPolicy {
        PacingPolicy {
            from_percent: 50.0,
            max_window: Duration::from_secs(60),
        }
    }

    fn entry(kind: &str, call_count: f64, regain_minutes: f64) -> BucEntry {
        BucEntry {
            kind: kind.into(),
            call_count,
            estimated_time_to_regain_access: regain_minutes,
            ..BucEntry::default()
        }
    }

    #[test]
    fn the_pacing_window_grows_linearly_from_the_threshold() {
        let p = policy_50_60s();
        let secs = |pct: f64| p.window(pct, None).map(|d| d.as_secs_f64());
        assert_eq!(secs(0.0), None);
        assert_eq!(secs(49.9), None);
        assert_eq!(secs(50.0), None);
        assert!((secs(75.0).unwrap() - 30.0).abs() < 1e-6);
        assert!((secs(95.0).unwrap() - 54.0).abs() < 1e-6);
        assert!((secs(100.0).unwrap() - 60.0).abs() < 1e-6);
        assert!((secs(180.0).unwrap() - 60.0).abs() < 1e-6);
        assert_eq!(secs(f64::NAN), None);
        assert_eq!(secs(-5.0), None);
        // The regain time wins when it is longer, whatever the usage.
        let hour = Duration::from_secs(3600);
        assert_eq!(p.window(100.0, Some(hour)), Some(hour));
        assert_eq!(p.window(10.0, Some(hour)), Some(hour));
        let short = Duration::from_secs(5);
        assert_eq!(p.window(100.0, Some(short)), Some(Duration::from_secs(60)));
        // 100: only a used-up budget paces; 0: any usage does; no window: only regain.
        let at_100 = PacingPolicy {
            from_percent: 100.0,
            ..p
        };
        assert_eq!(at_100.window(99.0, None), None);
        assert_eq!(at_100.window(100.0, None), Some(Duration::from_secs(60)));
        let at_0 = PacingPolicy {
            from_percent: 0.0,
            ..p
        };
        assert_eq!(at_0.window(50.0, None), Some(Duration::from_secs(30)));
        let no_window = PacingPolicy {
            max_window: Duration::ZERO,
            ..p
        };
        assert_eq!(no_window.window(100.0, None), None);
        assert_eq!(no_window.window(100.0, Some(hour)), Some(hour));
    }

    #[test]
    fn the_pacer_counts_down_from_each_reading_and_keeps_use_cases_apart() {
        let pacer = Pacer::new(policy_50_60s());
        let t0 = Instant::now();
        assert_eq!(pacer.pacing_at(t0), None);
        // Batch at 75 %: 30 s from when it was seen.
        let crossed = pacer.note(&[entry("catalog_batch", 75.0, 0.0)], t0);
        assert!(
            matches!(&crossed[..], [Crossing::Started { kind, .. }] if kind == "catalog_batch")
        );
        assert_eq!(pacer.pacing_at(t0), Some(Duration::from_secs(30)));
        // A status poll reports management usage: it does not hide the batch reading.
        let t1 = t0 + Duration::from_secs(10);
        let crossed = pacer.note(&[entry("catalog_management", 1.0, 0.0)], t1);
        assert!(crossed.is_empty());
        assert_eq!(pacer.pacing_at(t1), Some(Duration::from_secs(20)));
        // Once its wait has passed, an old reading asks for nothing.
        assert_eq!(pacer.pacing_at(t0 + Duration::from_secs(30)), None);
        assert_eq!(pacer.pacing_at(t0 + Duration::from_secs(3600)), None);
        // Still over: no second crossing; the wait follows the new reading.
        let t2 = t0 + Duration::from_secs(40);
        assert!(
            pacer
                .note(&[entry("catalog_batch", 90.0, 0.0)], t2)
                .is_empty()
        );
        let left = pacer.pacing_at(t2).unwrap().as_secs_f64();
        assert!((left - 48.0).abs() < 1e-6, "{left}");
        // A fresh reading under the threshold ends it.
        let t3 = t2 + Duration::from_secs(1);
        let crossed = pacer.note(&[entry("catalog_batch", 20.0, 0.0)], t3);
        assert!(matches!(&crossed[..], [Crossing::Ended { kind, .. }] if kind == "catalog_batch"));
        assert_eq!(pacer.pacing_at(t3), None);
        // Used up: the regain time, counted from the answer.
        let t4 = t3 + Duration::from_secs(1);
        pacer.note(&[entry("catalog_batch", 100.0, 30.0)], t4);
        assert_eq!(pacer.pacing_at(t4), Some(Duration::from_secs(1800)));
        assert_eq!(
            pacer.pacing_at(t4 + Duration::from_secs(600)),
            Some(Duration::from_secs(1200))
        );
        assert_eq!(pacer.pacing_at(t4 + Duration::from_secs(1800)), None);
        // The highest entry of a use case in one answer counts.
        let t5 = t4 + Duration::from_secs(1);
        pacer.note(
            &[
                entry("catalog_batch", 60.0, 0.0),
                entry("catalog_batch", 80.0, 0.0),
            ],
            t5,
        );
        let batch = pacer
            .readings()
            .into_iter()
            .find(|r| r.kind == "catalog_batch")
            .unwrap();
        assert_eq!((batch.percent, batch.regain, batch.seen), (80.0, None, t5));
        assert_eq!(pacer.readings().len(), 2);
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

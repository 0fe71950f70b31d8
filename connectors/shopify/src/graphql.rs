//! GraphQL over HTTP to the Shopify Admin API: one POST per document with the access token
//! header, decoding of the `{data, errors, extensions}` envelope, mapping of GraphQL error
//! codes onto [`ConnectorError`] kinds, and pacing by Shopify's cost bucket
//! (`extensions.cost.throttleStatus`) so that omnisync waits instead of being throttled.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use omnisync_sdk::http::{HttpClient, decode_json};
use omnisync_sdk::secret::{ExposeSecret, SecretString};
use omnisync_sdk::{ConnectorError, ErrorKind};
use serde::Deserialize;
use serde_json::Value;

/// The header carrying the Admin API access token.
pub const TOKEN_HEADER: &str = "X-Shopify-Access-Token";

/// `extensions.cost.throttleStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThrottleStatus {
    /// Bucket size.
    pub maximum_available: f64,
    /// Points available now.
    pub currently_available: f64,
    /// Points restored per second.
    pub restore_rate: f64,
}

/// `extensions.cost`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cost {
    /// The cost computed before execution.
    #[serde(default)]
    pub requested_query_cost: Option<f64>,
    /// The cost charged (`null` when the query did not run).
    #[serde(default)]
    pub actual_query_cost: Option<f64>,
    /// The bucket after this request.
    #[serde(default)]
    pub throttle_status: Option<ThrottleStatus>,
}

/// One entry of a GraphQL `errors` array.
#[derive(Debug, Clone, Deserialize)]
pub struct GqlError {
    /// The message.
    #[serde(default)]
    pub message: String,
    /// Where in the answer it belongs (e.g. `["p3"]` for an aliased mutation).
    #[serde(default)]
    pub path: Option<Vec<Value>>,
    /// `extensions`, with `code` where Shopify gives one.
    #[serde(default)]
    pub extensions: Option<Value>,
}

impl GqlError {
    /// `extensions.code`, if any.
    pub fn code(&self) -> Option<&str> {
        self.extensions.as_ref()?.get("code")?.as_str()
    }

    /// The first path element when it is a field name (an alias of a root field).
    pub fn root_field(&self) -> Option<&str> {
        self.path.as_ref()?.first()?.as_str()
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    errors: Option<Value>,
    #[serde(default)]
    extensions: Option<Value>,
}

/// A decoded answer.
#[derive(Debug)]
pub struct Answer {
    /// `data` (an object), or `Null` if absent.
    pub data: Value,
    /// Errors that name a root field (`path`), left for the caller to attribute. Only
    /// [`Gql::run_partial`] returns any.
    pub errors: Vec<GqlError>,
}

/// The last bucket status Shopify reported, and when.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    available: f64,
    maximum: f64,
    restore: f64,
    at: Instant,
}

impl Bucket {
    /// Brings `available` up to now at the restore rate.
    fn refill(&mut self) {
        let now = Instant::now();
        let refilled = self.available + self.restore * now.duration_since(self.at).as_secs_f64();
        self.available = refilled.min(self.maximum);
        self.at = now;
    }
}

/// Paces requests by the cost bucket Shopify reports on every answer.
#[derive(Debug, Default)]
pub struct CostGate {
    bucket: Mutex<Option<Bucket>>,
}

impl CostGate {
    /// Reserves `cost` points and says how long to wait first (zero when the bucket,
    /// refilled since the last answer, already holds them). Unknown bucket → no wait.
    pub fn reserve(&self, cost: f64) -> Duration {
        let mut guard = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let Some(b) = guard.as_mut() else {
            return Duration::ZERO;
        };
        b.refill();
        if cost > b.maximum || b.restore <= 0.0 {
            // Never satisfiable (or no refill known): let Shopify answer.
            return Duration::ZERO;
        }
        let wait = if b.available >= cost {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((cost - b.available) / b.restore)
        };
        b.available -= cost;
        wait
    }

    /// Takes `cost` points only if at least `keep_share` of the bucket (0.0–1.0) is left
    /// afterwards, for requests that come first ([`CostGate::reserve`]); otherwise takes
    /// nothing and says how long until the bucket, refilling, would allow it. Never takes
    /// points in advance, so a request that comes first never waits behind this one.
    /// Unknown bucket, or a cost the bucket can never hold → taken at once.
    pub fn take_spare(&self, cost: f64, keep_share: f64) -> Result<(), Duration> {
        let mut guard = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let Some(b) = guard.as_mut() else {
            return Ok(());
        };
        b.refill();
        if cost > b.maximum || b.restore <= 0.0 {
            b.available -= cost;
            return Ok(());
        }
        // A reserve the bucket cannot hold beside this cost shrinks to what it can.
        let keep = (b.maximum * keep_share.clamp(0.0, 1.0)).min(b.maximum - cost);
        if b.available - cost >= keep {
            b.available -= cost;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (cost + keep - b.available) / b.restore,
            ))
        }
    }

    /// The share of the bucket available now (0.0–1.0, refilled since the last answer);
    /// `None` before the first answer.
    pub fn level(&self) -> Option<f64> {
        let mut guard = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let b = guard.as_mut()?;
        if b.maximum <= 0.0 {
            return None;
        }
        b.refill();
        Some((b.available / b.maximum).clamp(0.0, 1.0))
    }

    /// Gives back points reserved for a request that was not sent.
    pub fn release(&self, cost: f64) {
        let mut guard = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = guard.as_mut() {
            b.available = (b.available + cost).min(b.maximum);
        }
    }

    /// Records the status from an answer.
    pub fn observe(&self, status: ThrottleStatus) {
        let mut guard = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        *guard = Some(Bucket {
            available: status.currently_available,
            maximum: status.maximum_available,
            restore: status.restore_rate,
            at: Instant::now(),
        });
    }
}

/// How long to wait before `requested` points are available again.
pub fn throttle_wait(requested: Option<f64>, status: Option<ThrottleStatus>) -> Option<Duration> {
    let status = status?;
    if status.restore_rate <= 0.0 {
        return None;
    }
    let need = requested.unwrap_or(status.maximum_available / 2.0);
    let deficit = (need - status.currently_available).max(0.0);
    // At least a tenth of a second: the bucket was short when Shopify looked.
    Some(Duration::from_secs_f64(
        (deficit / status.restore_rate).max(0.1),
    ))
}

/// A GraphQL client for one shop.
#[derive(Debug)]
pub struct Gql {
    http: HttpClient,
    endpoint: String,
    path: String,
    token: SecretString,
    gate: CostGate,
    max_wait: Duration,
    /// The share of the bucket [`Gql::run_partial_spare`] leaves to other requests.
    keep_share: f64,
}

impl Gql {
    /// A client posting to `endpoint` (whose path `path` names calls in errors).
    pub fn new(
        http: HttpClient,
        endpoint: String,
        path: String,
        token: SecretString,
        max_wait: Duration,
    ) -> Self {
        Gql {
            http,
            endpoint,
            path,
            token,
            gate: CostGate::default(),
            max_wait,
            keep_share: 0.0,
        }
    }

    /// The share of the cost bucket available now; see [`CostGate::level`].
    pub fn bucket_level(&self) -> Option<f64> {
        self.gate.level()
    }

    /// Makes [`Gql::run_partial_spare`] leave `percent` of the cost bucket to other
    /// requests.
    pub fn with_reserve(mut self, percent: u8) -> Self {
        self.keep_share = f64::from(percent.min(100)) / 100.0;
        self
    }

    /// The operation name used in errors: `POST /admin/api/V/graphql.json (what)`.
    pub fn operation(&self, what: &str) -> String {
        format!("POST {} ({what})", self.path)
    }

    /// Runs a document; any GraphQL error fails the call.
    pub async fn run(
        &self,
        what: &str,
        estimated_cost: u32,
        query: &str,
        variables: Value,
    ) -> Result<Answer, ConnectorError> {
        let answer = self
            .run_partial(what, estimated_cost, query, variables)
            .await?;
        if let Some(e) = answer.errors.first() {
            return Err(classify(&self.operation(what), &answer.errors, e, None));
        }
        Ok(answer)
    }

    /// Runs a document; errors that name a root field (an alias) are returned for the
    /// caller to attribute, anything else fails the call.
    pub async fn run_partial(
        &self,
        what: &str,
        estimated_cost: u32,
        query: &str,
        variables: Value,
    ) -> Result<Answer, ConnectorError> {
        self.wait_first(what, estimated_cost).await?;
        self.send(what, query, variables).await
    }

    /// Like [`Gql::run_partial`], for a request that yields the cost bucket to the others:
    /// it waits (taking nothing meanwhile) until the bucket holds its cost plus the share
    /// set by [`Gql::with_reserve`] ([`CostGate::take_spare`]).
    pub async fn run_partial_spare(
        &self,
        what: &str,
        estimated_cost: u32,
        query: &str,
        variables: Value,
    ) -> Result<Answer, ConnectorError> {
        let cost = f64::from(estimated_cost);
        let mut waited = Duration::ZERO;
        while let Err(wait) = self.gate.take_spare(cost, self.keep_share) {
            if waited + wait > self.max_wait {
                return Err(ConnectorError::throttled(
                    self.operation(what),
                    format!(
                        "cost bucket short: waiting {:.1}s for {estimated_cost} points (and the stock reserve) exceeds max_cost_wait_secs",
                        (waited + wait).as_secs_f64()
                    ),
                    Some(wait),
                ));
            }
            tracing::debug!(
                what,
                wait_ms = wait.as_millis() as u64,
                "leaving the shopify cost bucket to stock writes"
            );
            // Short steps: the bucket is read again after each, as other requests take
            // from it first.
            let step = wait.max(Duration::from_millis(5));
            tokio::time::sleep(step).await;
            waited += step;
        }
        self.send(what, query, variables).await
    }

    /// Waits until the cost bucket holds `estimated_cost` points, taking them at once
    /// (requests after it wait behind it).
    async fn wait_first(&self, what: &str, estimated_cost: u32) -> Result<(), ConnectorError> {
        let operation = self.operation(what);
        let cost = f64::from(estimated_cost);
        let wait = self.gate.reserve(cost);
        if wait > self.max_wait {
            self.gate.release(cost);
            return Err(ConnectorError::throttled(
                operation,
                format!(
                    "cost bucket short: waiting {:.1}s for {estimated_cost} points exceeds max_cost_wait_secs",
                    wait.as_secs_f64()
                ),
                Some(wait),
            ));
        }
        if !wait.is_zero() {
            tracing::debug!(
                what,
                wait_ms = wait.as_millis() as u64,
                "waiting for shopify cost bucket"
            );
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// Posts a document and decodes the answer; see [`Gql::run_partial`].
    async fn send(
        &self,
        what: &str,
        query: &str,
        variables: Value,
    ) -> Result<Answer, ConnectorError> {
        let operation = self.operation(what);
        let body = serde_json::json!({ "query": query, "variables": variables });
        let request = self
            .http
            .raw()
            .post(&self.endpoint)
            .header(TOKEN_HEADER, self.token.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&body);
        let (_, _, bytes) = self.http.send(&operation, request).await?;
        let envelope: Envelope = decode_json(&operation, &bytes)?;
        let cost = envelope
            .extensions
            .as_ref()
            .and_then(|e| e.get("cost"))
            .and_then(|c| serde_json::from_value::<Cost>(c.clone()).ok());
        if let Some(status) = cost.and_then(|c| c.throttle_status) {
            self.gate.observe(status);
        }
        let errors = match envelope.errors {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => {
                return Err(ConnectorError::permanent(
                    operation,
                    format!("Shopify error: {s}"),
                ));
            }
            Some(v @ Value::Array(_)) => {
                serde_json::from_value::<Vec<GqlError>>(v).map_err(|e| {
                    ConnectorError::protocol(&operation, format!("unreadable errors array: {e}"))
                })?
            }
            Some(other) => {
                return Err(ConnectorError::protocol(
                    operation,
                    format!("unexpected errors value: {}", short(&other)),
                ));
            }
        };
        // Errors without a path (throttling, cost, syntax, access) concern the whole call.
        if let Some(e) = errors
            .iter()
            .find(|e| e.root_field().is_none() || is_call_level(e))
        {
            return Err(classify(&operation, &errors, e, cost));
        }
        let data = envelope.data.unwrap_or(Value::Null);
        if errors.is_empty() && !data.is_object() {
            return Err(ConnectorError::protocol(
                operation,
                format!("answer has no data object: {}", short(&data)),
            ));
        }
        Ok(Answer { data, errors })
    }
}

/// Codes that concern the whole request even when Shopify attaches a path.
fn is_call_level(e: &GqlError) -> bool {
    matches!(
        e.code(),
        Some("THROTTLED" | "MAX_COST_EXCEEDED" | "ACCESS_DENIED" | "INTERNAL_SERVER_ERROR")
    )
}

/// Maps a GraphQL error onto the taxonomy.
fn classify(operation: &str, all: &[GqlError], e: &GqlError, cost: Option<Cost>) -> ConnectorError {
    let messages = all
        .iter()
        .take(3)
        .map(|e| match e.code() {
            Some(code) => format!("{code}: {}", e.message),
            None => e.message.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ");
    match e.code() {
        Some("THROTTLED") => {
            let wait = throttle_wait(
                cost.and_then(|c| c.requested_query_cost),
                cost.and_then(|c| c.throttle_status),
            )
            .or(Some(Duration::from_secs(1)));
            ConnectorError::throttled(operation, messages, wait)
        }
        Some("ACCESS_DENIED") => ConnectorError::new(ErrorKind::Auth, operation, messages),
        Some("INTERNAL_SERVER_ERROR" | "SERVICE_UNAVAILABLE" | "TIMEOUT") => {
            ConnectorError::transient(operation, messages)
        }
        Some("MAX_COST_EXCEEDED") => ConnectorError::config(
            operation,
            format!("{messages} (lower page_size or inventory_levels_per_variant)"),
        ),
        _ if e.message.eq_ignore_ascii_case("throttled") => ConnectorError::throttled(
            operation,
            messages,
            throttle_wait(
                cost.and_then(|c| c.requested_query_cost),
                cost.and_then(|c| c.throttle_status),
            )
            .or(Some(Duration::from_secs(1))),
        ),
        _ => ConnectorError::permanent(operation, messages),
    }
}

/// A short printable form of a JSON value for messages.
pub fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 200 {
        let mut cut: String = s.chars().take(200).collect();
        cut.push('…');
        cut
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(avail: f64) -> ThrottleStatus {
        ThrottleStatus {
            maximum_available: 2000.0,
            currently_available: avail,
            restore_rate: 100.0,
        }
    }

    #[test]
    fn gate_waits_for_the_deficit() {
        let gate = CostGate::default();
        assert_eq!(
            gate.reserve(500.0),
            Duration::ZERO,
            "unknown bucket: no wait"
        );
        gate.observe(status(100.0));
        let wait = gate.reserve(300.0);
        // 200 points short at 100/s: about two seconds (a little refill may have happened).
        assert!(wait <= Duration::from_secs(2) && wait > Duration::from_millis(1900));
        // The reservation counts: the next request waits longer.
        assert!(gate.reserve(100.0) > wait);
    }

    #[test]
    fn spare_requests_leave_the_reserve_and_never_take_in_advance() {
        let gate = CostGate::default();
        assert_eq!(
            gate.take_spare(500.0, 0.1),
            Ok(()),
            "unknown bucket: at once"
        );
        gate.observe(status(300.0));
        // 300 available, 250 + a reserve of 200 (10 % of 2000) needed: 150 short at 100/s.
        let wait = gate.take_spare(250.0, 0.1).unwrap_err();
        assert!(wait <= Duration::from_millis(1500) && wait > Duration::from_millis(1400));
        // Nothing was taken: a request that comes first gets the points at once.
        assert_eq!(gate.reserve(280.0), Duration::ZERO);
        // 100 available: within the reserve, so the spare request still waits.
        assert!(gate.take_spare(10.0, 0.1).is_err());
        // With no reserve it fits.
        assert_eq!(gate.take_spare(10.0, 0.0), Ok(()));
    }

    #[test]
    fn level_is_the_refilled_share_of_the_bucket() {
        let gate = CostGate::default();
        assert_eq!(gate.level(), None);
        gate.observe(status(500.0));
        let level = gate.level().unwrap();
        assert!((0.25..0.26).contains(&level), "{level}");
        gate.observe(status(2000.0));
        assert_eq!(gate.level(), Some(1.0));
    }

    #[test]
    fn gate_lets_impossible_costs_through() {
        let gate = CostGate::default();
        gate.observe(status(0.0));
        assert_eq!(gate.reserve(5000.0), Duration::ZERO);
    }

    #[test]
    fn throttle_wait_is_deficit_over_restore_rate() {
        assert_eq!(
            throttle_wait(Some(500.0), Some(status(100.0))),
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            throttle_wait(Some(50.0), Some(status(100.0))),
            Some(Duration::from_millis(100))
        );
        assert_eq!(throttle_wait(Some(50.0), None), None);
    }

    #[test]
    fn classifies_codes() {
        let err = |code: &str| GqlError {
            message: "m".into(),
            path: None,
            extensions: Some(serde_json::json!({ "code": code })),
        };
        let cost = Cost {
            requested_query_cost: Some(300.0),
            actual_query_cost: None,
            throttle_status: Some(status(100.0)),
        };
        let e = classify("op", &[err("THROTTLED")], &err("THROTTLED"), Some(cost));
        assert_eq!(e.kind, ErrorKind::Throttled);
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
        let e = classify("op", &[err("THROTTLED")], &err("THROTTLED"), None);
        assert_eq!(e.retry_after, Some(Duration::from_secs(1)));
        assert_eq!(
            classify("op", &[err("ACCESS_DENIED")], &err("ACCESS_DENIED"), None).kind,
            ErrorKind::Auth
        );
        assert_eq!(
            classify(
                "op",
                &[err("INTERNAL_SERVER_ERROR")],
                &err("INTERNAL_SERVER_ERROR"),
                None
            )
            .kind,
            ErrorKind::Transient
        );
        assert_eq!(
            classify(
                "op",
                &[err("MAX_COST_EXCEEDED")],
                &err("MAX_COST_EXCEEDED"),
                None
            )
            .kind,
            ErrorKind::Config
        );
        assert_eq!(
            classify("op", &[err("BAD_REQUEST")], &err("BAD_REQUEST"), None).kind,
            ErrorKind::Permanent
        );
    }
}

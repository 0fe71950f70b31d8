//! The Tryton JSON-RPC transport: sessions, request envelopes and error mapping.
//!
//! trytond speaks its own JSON-RPC dialect (trytond/protocols/jsonrpc.py, dispatcher.py):
//!
//! - every call is `POST /{database}/rpc/` with `{"id", "method", "params"}`; model methods
//!   take positional params with the context dict last;
//! - `common.db.login` with `[login, {"password": …}, language]` answers
//!   `{"result": [user_id, session, bus_url]}`; later calls send
//!   `Authorization: Session base64("login:user_id:session")`;
//! - a refused password is HTTP 401 (an HTML page), too many failed logins HTTP 429 (no
//!   `Retry-After`), a missing or expired session HTTP 401 with `WWW-Authenticate: Basic`,
//!   a method outside the model's `__rpc__` HTTP 403, an unknown database HTTP 404, a
//!   database failure 503/504;
//! - an exception inside a method is HTTP 200 with `{"id", "error": [...]}`: `["UserError",
//!   [message, description, domain]]`, `["UserWarning", [name, message, description]]`,
//!   `["LoginException", [name, message, type]]`, `["ConcurrencyException", message]`, or
//!   `[str(exception), traceback]` for anything else;
//! - an answer over 1400 bytes is marked `Content-Encoding: gzip` even when it is not
//!   compressed (it is compressed only when the client accepts gzip). We always accept gzip and
//!   inflate bodies that start with the gzip magic ourselves, so this works whether or not
//!   `reqwest`'s own gzip decoding is compiled in.
//!
//! A session lives `[session] max_age` after the login (30 days by default; `[session]
//! timeout` only guards "fresh session" methods such as password changes), and is gone after a
//! server-side logout or database restore: a 401 on a model call drops the session, logs in
//! again once and repeats the call once (verified against trytond 8.0.12 with `max_age = 2`).

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use omnisync_sdk::http::{HttpClient, decode_json, quote};
use omnisync_sdk::secret::{ExposeSecret, SecretString};
use omnisync_sdk::{ConnectorError, ErrorKind};
use reqwest::header::{ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};

/// The largest inflated body we accept (a page of 1000 products is well under 1 MiB).
const MAX_INFLATED: u64 = 256 * 1024 * 1024;

/// The name of the login call, used in errors.
pub(crate) const LOGIN: &str = "common.db.login";

/// A logged-in session: the ready `Authorization` header (marked sensitive).
pub(crate) struct Session {
    header: HeaderValue,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session([REDACTED])")
    }
}

impl Session {
    /// Builds the `Authorization: Session base64(login:user_id:token)` header.
    fn new(login: &str, user_id: i64, token: &str) -> Result<Self, ConnectorError> {
        let raw = format!("{login}:{user_id}:{token}");
        let encoded = base64::engine::general_purpose::STANDARD.encode(raw.as_bytes());
        let mut header = HeaderValue::from_str(&format!("Session {encoded}"))
            .map_err(|_| ConnectorError::protocol(LOGIN, "session token is not a valid header"))?;
        header.set_sensitive(true);
        Ok(Session { header })
    }
}

/// A JSON-RPC client for one Tryton database, holding the current session.
pub(crate) struct RpcClient {
    http: HttpClient,
    endpoint: String,
    database: String,
    login: String,
    password: SecretString,
    language: String,
    login_retry_after: Duration,
    next_id: AtomicU64,
    /// The current session. A tokio mutex: logging in awaits while holding it, so concurrent
    /// callers wait for one login instead of each starting their own.
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("endpoint", &self.endpoint)
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

/// What [`RpcClient::new`] needs.
pub(crate) struct RpcConfig {
    pub http: HttpClient,
    pub endpoint: String,
    pub database: String,
    pub login: String,
    pub password: SecretString,
    pub language: String,
    pub login_retry_after: Duration,
}

impl RpcClient {
    pub(crate) fn new(config: RpcConfig) -> Self {
        RpcClient {
            http: config.http,
            endpoint: config.endpoint,
            database: config.database,
            login: config.login,
            password: config.password,
            language: config.language,
            login_retry_after: config.login_retry_after,
            next_id: AtomicU64::new(1),
            session: tokio::sync::Mutex::new(None),
        }
    }

    /// Calls `method` with positional `params` (the context last), logging in first when
    /// there is no session and once more when the session has expired.
    pub(crate) async fn call(&self, method: &str, params: Value) -> Result<Value, ConnectorError> {
        let session = self.session(None).await?;
        match self.call_with(&session, method, &params).await {
            Err(e) if e.status == Some(401) => {
                tracing::info!(method, "Tryton session refused; logging in again.");
                let fresh = self.session(Some(&session)).await?;
                self.call_with(&fresh, method, &params)
                    .await
                    .map_err(|mut e| {
                        if e.status == Some(401) {
                            e.message = format!(
                                "session refused right after a fresh login as {:?}: {}",
                                self.login, e.message
                            );
                        }
                        e
                    })
            }
            other => other,
        }
    }

    /// The current session, logging in when there is none or when it is `stale` (the one
    /// the server just refused; if another caller already replaced it, that one is used).
    async fn session(&self, stale: Option<&Arc<Session>>) -> Result<Arc<Session>, ConnectorError> {
        let mut guard = self.session.lock().await;
        if let Some(current) = guard.as_ref()
            && !stale.is_some_and(|s| Arc::ptr_eq(s, current))
        {
            return Ok(current.clone());
        }
        *guard = None;
        let session = Arc::new(self.login().await?);
        *guard = Some(session.clone());
        Ok(session)
    }

    async fn login(&self) -> Result<Session, ConnectorError> {
        let params = json!([
            self.login,
            {"password": self.password.expose_secret()},
            self.language
        ]);
        let envelope = self.post(LOGIN, &params, None).await.map_err(|e| {
            match e.status {
                Some(401) => ConnectorError::new(
                    ErrorKind::Auth,
                    LOGIN,
                    format!(
                        "Tryton refused the login {:?} on database {:?} (HTTP 401: wrong login or password)",
                        self.login, self.database
                    ),
                )
                .with_status(401),
                Some(429) => ConnectorError::throttled(
                    LOGIN,
                    format!(
                        "Tryton refuses logins for {:?} for now (HTTP 429: too many failed attempts)",
                        self.login
                    ),
                    Some(e.retry_after.unwrap_or(self.login_retry_after)),
                )
                .with_status(429),
                _ => e,
            }
        })?;
        // Never quote the login answer: it carries the session token.
        let result = match envelope {
            Reply::Result(v) => v,
            Reply::Error(err) => return Err(rpc_error(LOGIN, &err)),
        };
        let (user_id, token) = match result.as_array().map(Vec::as_slice) {
            Some([uid, token, ..]) => match (uid.as_i64(), token.as_str()) {
                (Some(uid), Some(token)) if !token.is_empty() => (uid, token),
                _ => return Err(login_shape_error()),
            },
            _ => return Err(login_shape_error()),
        };
        tracing::debug!(user_id, "Logged in to Tryton.");
        Session::new(&self.login, user_id, token)
    }

    async fn call_with(
        &self,
        session: &Session,
        method: &str,
        params: &Value,
    ) -> Result<Value, ConnectorError> {
        match self.post(method, params, Some(&session.header)).await? {
            Reply::Result(v) => Ok(v),
            Reply::Error(err) => Err(rpc_error(method, &err)),
        }
    }

    /// One HTTP round trip: envelope, headers, status mapping, gzip, JSON-RPC envelope.
    async fn post(
        &self,
        method: &str,
        params: &Value,
        auth: Option<&HeaderValue>,
    ) -> Result<Reply, ConnectorError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(&json!({"id": id, "method": method, "params": params}))
            .map_err(|e| ConnectorError::config(method, format!("cannot encode request: {e}")))?;
        let mut request = self
            .http
            .raw()
            .post(&self.endpoint)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .header(ACCEPT_ENCODING, "gzip")
            .body(body);
        if let Some(auth) = auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let (_, _, bytes) = self
            .http
            .send(method, request)
            .await
            .map_err(|e| self.refine_status_error(e))?;
        let body = inflate(method, &bytes)?;
        parse_reply(method, id, &body, method != LOGIN)
    }

    /// Gives the HTTP answers that mean a wrong endpoint a configuration error.
    fn refine_status_error(&self, e: ConnectorError) -> ConnectorError {
        match e.status {
            Some(404) => ConnectorError::config(
                e.operation,
                format!(
                    "HTTP 404 from {}: no Tryton database {:?} there (check base_url and database)",
                    self.endpoint, self.database
                ),
            )
            .with_status(404),
            Some(405) => ConnectorError::config(
                e.operation,
                format!(
                    "HTTP 405 from {}: not a JSON-RPC endpoint (trytond 8 serves /{{database}}/rpc/; check rpc_path)",
                    self.endpoint
                ),
            )
            .with_status(405),
            _ => e,
        }
    }
}

fn login_shape_error() -> ConnectorError {
    ConnectorError::protocol(
        LOGIN,
        "unexpected login answer: expected [user_id, session, …]",
    )
}

/// A decoded JSON-RPC answer.
#[derive(Debug)]
pub(crate) enum Reply {
    /// `{"result": …}`
    Result(Value),
    /// `{"error": …}`
    Error(Value),
}

/// Inflates a gzip body (recognised by its magic bytes); other bodies pass through.
pub(crate) fn inflate<'a>(
    operation: &str,
    body: &'a [u8],
) -> Result<std::borrow::Cow<'a, [u8]>, ConnectorError> {
    if body.len() < 2 || body[0] != 0x1f || body[1] != 0x8b {
        return Ok(std::borrow::Cow::Borrowed(body));
    }
    let mut out = Vec::with_capacity(body.len() * 8);
    flate2::read::GzDecoder::new(body)
        .take(MAX_INFLATED)
        .read_to_end(&mut out)
        .map_err(|e| ConnectorError::protocol(operation, format!("unreadable gzip answer: {e}")))?;
    Ok(std::borrow::Cow::Owned(out))
}

/// Splits a JSON-RPC envelope into result or error. `quote_body` is false for answers that
/// may carry secrets (the login).
pub(crate) fn parse_reply(
    operation: &str,
    id: u64,
    body: &[u8],
    quote_body: bool,
) -> Result<Reply, ConnectorError> {
    let value: Value = if quote_body {
        decode_json(operation, body)?
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ConnectorError::protocol(operation, format!("unreadable JSON answer ({e})"))
        })?
    };
    let shape = |what: &str| {
        let detail = if quote_body {
            format!("{what}: {}", quote(body))
        } else {
            what.to_string()
        };
        ConnectorError::protocol(operation, format!("not a JSON-RPC answer, {detail}"))
    };
    let Some(object) = value.as_object() else {
        return Err(shape("expected an object"));
    };
    if let Some(answer_id) = object.get("id")
        && answer_id.as_u64().is_some_and(|a| a != id)
    {
        return Err(shape(&format!("answer id {answer_id} for request id {id}")));
    }
    if let Some(error) = object.get("error")
        && !error.is_null()
    {
        return Ok(Reply::Error(error.clone()));
    }
    match object.get("result") {
        Some(result) => Ok(Reply::Result(result.clone())),
        None => Err(shape("neither result nor error")),
    }
}

/// Maps a JSON-RPC `error` member onto the taxonomy.
pub(crate) fn rpc_error(operation: &str, error: &Value) -> ConnectorError {
    let Some(parts) = error.as_array() else {
        return ConnectorError::protocol(
            operation,
            format!("unreadable Tryton error: {}", cut(&error.to_string())),
        );
    };
    let name = parts.first().and_then(Value::as_str).unwrap_or_default();
    let detail = parts.get(1).unwrap_or(&Value::Null);
    let text = |i: usize| {
        detail
            .get(i)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let join = |a: String, b: String| {
        if b.is_empty() {
            a
        } else {
            format!("{a} - {b}")
        }
    };
    match name {
        "UserError" => ConnectorError::permanent(
            operation,
            format!("Tryton UserError: {}", cut(&join(text(0), text(1)))),
        ),
        "UserWarning" => ConnectorError::permanent(
            operation,
            format!("Tryton UserWarning: {}", cut(&join(text(1), text(2)))),
        ),
        "LoginException" => ConnectorError::new(
            ErrorKind::Auth,
            operation,
            format!(
                "Tryton asks for login parameter {:?} ({}): this connector only sends a password",
                text(0),
                cut(&text(1))
            ),
        ),
        "ConcurrencyException" => ConnectorError::transient(
            operation,
            format!(
                "Tryton ConcurrencyException: {}",
                cut(detail.as_str().unwrap_or_default())
            ),
        ),
        other => ConnectorError::permanent(
            operation,
            format!(
                "Tryton server error: {} (an unknown field or model name raises this)",
                cut(other)
            ),
        ),
    }
}

fn cut(s: &str) -> String {
    quote(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_tryton_errors() {
        let e = rpc_error(
            "model.stock.location.read",
            &json!([
                "UserError",
                [
                    "You are trying to read records \"999\" of \"Stock Location\" that don't exist.",
                    "",
                    null
                ]
            ]),
        );
        assert_eq!(e.kind, ErrorKind::Permanent);
        assert!(e.to_string().contains("\"999\""));
        let e = rpc_error(
            LOGIN,
            &json!([
                "LoginException",
                ["password", "Password for admin", "password"]
            ]),
        );
        assert_eq!(e.kind, ErrorKind::Auth);
        let e = rpc_error(
            "m",
            &json!(["ConcurrencyException", "Records were modified"]),
        );
        assert_eq!(e.kind, ErrorKind::Transient);
        let e = rpc_error(
            "model.product.product.search_read",
            &json!(["'nosuchfield'", ""]),
        );
        assert_eq!(e.kind, ErrorKind::Permanent);
        assert!(e.to_string().contains("'nosuchfield'"));
        assert_eq!(rpc_error("m", &json!("weird")).kind, ErrorKind::Protocol);
    }

    #[test]
    fn parses_envelopes() {
        assert!(matches!(
            parse_reply("m", 7, br#"{"id":7,"result":[1,2]}"#, true),
            Ok(Reply::Result(_))
        ));
        assert!(matches!(
            parse_reply(
                "m",
                7,
                br#"{"id":7,"error":["UserError",["x","",null]]}"#,
                true
            ),
            Ok(Reply::Error(_))
        ));
        let e = parse_reply("m", 7, br#"{"id":8,"result":1}"#, true).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol);
        let e = parse_reply("m", 7, br#"{"data": {"truncated": ["#, true).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol);
        assert!(e.to_string().starts_with("m: "));
        let e = parse_reply(LOGIN, 1, br#"{"id":1,"oops":[1,"secret-token"]}"#, false).unwrap_err();
        assert!(!e.to_string().contains("secret-token"));
    }

    #[test]
    fn inflates_gzip_and_passes_plain() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(br#"{"id":1,"result":true}"#).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(&*inflate("m", &gz).unwrap(), br#"{"id":1,"result":true}"#);
        assert_eq!(&*inflate("m", b"{}").unwrap(), b"{}");
        assert_eq!(
            inflate("m", &[0x1f, 0x8b, 0]).unwrap_err().kind,
            ErrorKind::Protocol
        );
    }

    #[test]
    fn session_header_is_the_trytond_format() {
        let s = Session::new("admin", 1, "abc").unwrap();
        let expected = base64::engine::general_purpose::STANDARD.encode("admin:1:abc");
        assert_eq!(s.header.to_str().unwrap(), format!("Session {expected}"));
        assert!(s.header.is_sensitive());
        assert_eq!(format!("{s:?}"), "Session([REDACTED])");
    }
}

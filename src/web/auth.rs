//! Access control for the web page and `/api/v1`: the bearer token of `daemon.http.token`.
//!
//! Rules (see README, "Access"):
//!
//! - no token configured (only allowed on a loopback listen address, config validation
//!   refuses it elsewhere): everything is open;
//! - a token configured: every page and API request needs it, as
//!   `Authorization: Bearer <token>` (curl, scripts) or as the session cookie a browser gets
//!   by opening any page once with `?token=<token>`: the daemon answers `303 See Other` to
//!   the same address without the token, setting an `HttpOnly; SameSite=Strict` cookie that
//!   holds a SHA-256 digest of the token (never the token itself), so the token does not
//!   stay in the address bar, the history or a `Referer`;
//! - the token could not be read when the router was built: every guarded request answers
//!   `503` (fail closed) and the reason is logged once, without the token.
//!
//! Comparisons run in constant time over SHA-256 digests (so neither the content nor the
//! length of the token leaks through timing). The token is never logged or rendered.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use omnisync_sdk::SecretRef;
use omnisync_sdk::secret::ExposeSecret;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The name of the session cookie.
pub const COOKIE: &str = "omnisync_session";

/// What guards the page and the API.
#[derive(Clone)]
pub enum Guard {
    /// No token configured: open (loopback only; config validation enforces it).
    Open,
    /// Requests must carry the token.
    Token {
        /// SHA-256 of the token.
        digest: [u8; 32],
        /// SHA-256 of the cookie value a browser session carries.
        session: [u8; 32],
    },
    /// A token is configured but could not be read: everything guarded answers 503.
    Broken(String),
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Guard::Open => f.write_str("Guard::Open"),
            Guard::Token { .. } => f.write_str("Guard::Token([REDACTED])"),
            Guard::Broken(why) => write!(f, "Guard::Broken({why:?})"),
        }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The cookie value a browser session carries for `token`: derived, so the cookie jar
/// never holds the token itself.
fn session_value(token: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"omnisync-web-session\0");
    h.update(token);
    hex::encode(h.finalize())
}

impl Guard {
    /// The guard for a configured token reference (`None`: open).
    pub fn from_config(token: Option<&SecretRef>) -> Guard {
        match token {
            None => Guard::Open,
            Some(r) => match r.resolve() {
                Ok(secret) => Guard::with_token(secret.expose_secret()),
                Err(e) => {
                    tracing::error!(
                        reference = %r,
                        error = %e,
                        "daemon.http.token could not be read: the web page and /api/v1 answer 503"
                    );
                    Guard::Broken(format!("daemon.http.token could not be read: {e}"))
                }
            },
        }
    }

    /// The guard for a token value.
    pub fn with_token(token: &str) -> Guard {
        Guard::Token {
            digest: sha256(token.as_bytes()),
            session: sha256(session_value(token.as_bytes()).as_bytes()),
        }
    }

    fn token_matches(&self, candidate: &str) -> bool {
        match self {
            Guard::Token { digest, .. } => sha256(candidate.as_bytes()).ct_eq(digest).into(),
            _ => false,
        }
    }

    fn session_matches(&self, candidate: &str) -> bool {
        match self {
            Guard::Token { session, .. } => sha256(candidate.as_bytes()).ct_eq(session).into(),
            _ => false,
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `token` query parameter (decoded) and the rest of the query, as sent.
fn split_token(query: &str) -> (Option<String>, String) {
    let mut token = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        if pair == "token" || pair.starts_with("token=") {
            let parsed: Result<std::collections::HashMap<String, String>, _> =
                serde_urlencoded_pair(pair);
            token = Some(
                parsed
                    .ok()
                    .and_then(|mut m| m.remove("token"))
                    .unwrap_or_default(),
            );
        } else {
            rest.push(pair);
        }
    }
    (token, rest.join("&"))
}

/// Decodes one `key=value` pair the way a form would (through axum's query extractor).
fn serde_urlencoded_pair(
    pair: &str,
) -> Result<std::collections::HashMap<String, String>, axum::extract::rejection::QueryRejection> {
    let uri: axum::http::Uri = format!("/?{pair}")
        .parse()
        .unwrap_or_else(|_| axum::http::Uri::from_static("/"));
    axum::extract::Query::try_from_uri(&uri).map(|q| q.0)
}

fn is_api(path: &str) -> bool {
    path.starts_with("/api/")
}

fn refuse(path: &str, status: StatusCode, message: &str) -> Response {
    let mut response = if is_api(path) {
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
    } else {
        let page = super::pages::login_page(status, message, path);
        (status, page).into_response()
    };
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"omnisync\""),
        );
    }
    response
}

/// The middleware: lets a request through when the guard allows it.
pub async fn require(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    match guard.as_ref() {
        Guard::Open => return next.run(req).await,
        Guard::Broken(why) => return refuse(&path, StatusCode::SERVICE_UNAVAILABLE, why),
        Guard::Token { .. } => {}
    }
    if let Some(query) = req.uri().query()
        && let (Some(token), rest) = split_token(query)
    {
        if !guard.token_matches(&token) {
            tracing::warn!(path = %path, "web request refused: wrong token in ?token=");
            return refuse(&path, StatusCode::UNAUTHORIZED, "wrong token");
        }
        let target = if rest.is_empty() {
            path.clone()
        } else {
            format!("{path}?{rest}")
        };
        let cookie = format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
            session_value(token.as_bytes())
        );
        let mut response = StatusCode::SEE_OTHER.into_response();
        let headers = response.headers_mut();
        if let (Ok(location), Ok(cookie)) = (
            HeaderValue::from_str(&target),
            HeaderValue::from_str(&cookie),
        ) {
            headers.insert(header::LOCATION, location);
            headers.insert(header::SET_COOKIE, cookie);
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return response;
        }
        return refuse(&path, StatusCode::BAD_REQUEST, "malformed address");
    }
    let headers = req.headers();
    let allowed = match bearer(headers) {
        Some(token) => guard.token_matches(token),
        None => cookie(headers, COOKIE).is_some_and(|c| guard.session_matches(c)),
    };
    if allowed {
        return next.run(req).await;
    }
    let message = if headers.contains_key(header::AUTHORIZATION) {
        "wrong token"
    } else {
        "a token is required: send Authorization: Bearer <token>, or open the page once with ?token=<token>"
    };
    tracing::debug!(path = %path, "web request refused: {message}");
    refuse(&path, StatusCode::UNAUTHORIZED, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_digest() {
        let g = Guard::with_token("s3cret");
        assert!(g.token_matches("s3cret"));
        assert!(!g.token_matches("s3cre"));
        assert!(!g.token_matches("s3crett"));
        assert!(!g.token_matches(""));
        assert!(g.session_matches(&session_value(b"s3cret")));
        assert!(!g.session_matches("s3cret"));
        assert!(!Guard::Open.token_matches("s3cret"));
    }

    #[test]
    fn the_debug_form_hides_the_token() {
        let shown = format!("{:?}", Guard::with_token("s3cret"));
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn the_token_parameter_is_split_off_the_query() {
        assert_eq!(
            split_token("channel=web&token=a%2Bb&cause=x"),
            (Some("a+b".to_string()), "channel=web&cause=x".to_string())
        );
        assert_eq!(split_token("channel=web"), (None, "channel=web".into()));
    }

    #[test]
    fn headers_are_read() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "bearer abc ".parse().unwrap());
        h.insert(header::COOKIE, "a=1; omnisync_session=xyz".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        assert_eq!(cookie(&h, COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "b"), None);
    }
}

//! OAuth 2 access tokens for the eBay APIs: minted by the connector and kept fresh.
//!
//! Confirmed in eBay's documentation (developer.ebay.com/api-docs/static/oauth-tokens.html,
//! `oauth-client-credentials-grant.html`, `oauth-refresh-token-request.html`):
//!
//! - **Token endpoint**: `POST {base}/identity/v1/oauth2/token` (production
//!   `https://api.ebay.com`, sandbox `https://api.sandbox.ebay.com`), `Content-Type:
//!   application/x-www-form-urlencoded`, `Authorization: Basic base64(client_id:client_secret)`.
//! - **Client credentials grant** (`grant_type=client_credentials&scope=…`): an *application*
//!   access token, `{"access_token", "expires_in": 7200, "token_type": "Application Access
//!   Token"}`. The Notification API's `getPublicKey` and destination calls take one, with the
//!   scope [`APPLICATION_SCOPE`].
//! - **Refresh token grant** (`grant_type=refresh_token&refresh_token=…&scope=…`, the scopes
//!   space-separated, the ones consented to or a subset): a *user* access token, `{"access_token",
//!   "expires_in": 7200, "token_type": "User Access Token"}`. The refresh token itself lives
//!   about 18 months and is obtained once through eBay's consent flow (not done here).
//! - **Errors**: HTTP 400 or 401 with `{"error": "invalid_grant" | "invalid_client" |
//!   "invalid_scope" | …, "error_description": "…"}`.
//!
//! [`TokenSource`] is what every API call asks for its bearer token: a fixed token from the
//! settings, or a token minted with one grant and cached until [`TokenSource`]'s margin
//! before it expires. One mint runs at a time (a `tokio::sync::Mutex` held across the call);
//! after an API answers 401 the caller [`TokenSource::invalidate`]s the token it used, and the
//! next [`TokenSource::get`] mints again. A refused grant is an [`ErrorKind::Auth`] error
//! (not retryable: someone must fix the credentials) carrying eBay's `error_description` and
//! naming the setting to look at; a 5xx or a timeout is transient. Tokens and secrets are
//! held as [`SecretString`] and never appear in `Debug` output, logs or errors.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use omnisync_sdk::http::{HttpClient, quote, status_error};
use omnisync_sdk::secret::{ExposeSecret, SecretString};
use omnisync_sdk::{ConnectorError, ErrorKind};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use reqwest::{RequestBuilder, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Path of eBay's token endpoint.
pub const TOKEN_PATH: &str = "/identity/v1/oauth2/token";
/// The scope of an application token (client credentials grant): "View public data from
/// eBay". What `getPublicKey` and the Notification API's destination calls require.
pub const APPLICATION_SCOPE: &str = "https://api.ebay.com/oauth/api_scope";
/// The user scope of the Sell Inventory API and of the Sell Feed API's inventory tasks and
/// result files (`sell_inventory_v1_oas3`, `sell_feed_v1_oas3`).
pub const SELL_INVENTORY_SCOPE: &str = "https://api.ebay.com/oauth/api_scope/sell.inventory";
/// The user scope that creates and reads *user-based* Notification API subscriptions.
pub const NOTIFICATION_SUBSCRIPTION_SCOPE: &str =
    "https://api.ebay.com/oauth/api_scope/commerce.notification.subscription";
/// The lifetime assumed when a token answer has no `expires_in` (eBay documents 7200 s).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(7200);

/// The answer of the token endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// Seconds until it expires (7200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    /// `Application Access Token` or `User Access Token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// A new refresh token (only the authorization code grant returns one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// An error answer of the token endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthError {
    /// `invalid_grant`, `invalid_client`, `invalid_scope`, `invalid_request`,
    /// `unsupported_grant_type`, `unauthorized_client`, …
    pub error: String,
    /// eBay's explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// How a token is minted.
#[derive(Clone)]
pub enum Grant {
    /// `grant_type=client_credentials`: an application token.
    ClientCredentials {
        /// The scopes asked for (usually just [`APPLICATION_SCOPE`]).
        scopes: Vec<String>,
    },
    /// `grant_type=refresh_token`: a user token.
    RefreshToken {
        /// The refresh token.
        refresh_token: SecretString,
        /// The scopes asked for; empty sends no `scope` (eBay then grants what was consented
        /// to, unconfirmed: eBay's documentation lists `scope` with the request).
        scopes: Vec<String>,
    },
}

impl Grant {
    /// `client_credentials` or `refresh_token`.
    pub fn name(&self) -> &'static str {
        match self {
            Grant::ClientCredentials { .. } => "client_credentials",
            Grant::RefreshToken { .. } => "refresh_token",
        }
    }

    fn form(&self) -> String {
        let enc = |s: &str| urlencoding::encode(s).into_owned();
        match self {
            Grant::ClientCredentials { scopes } => {
                format!(
                    "grant_type=client_credentials&scope={}",
                    enc(&scopes.join(" "))
                )
            }
            Grant::RefreshToken {
                refresh_token,
                scopes,
            } => {
                let mut form = format!(
                    "grant_type=refresh_token&refresh_token={}",
                    enc(refresh_token.expose_secret())
                );
                if !scopes.is_empty() {
                    form.push_str("&scope=");
                    form.push_str(&enc(&scopes.join(" ")));
                }
                form
            }
        }
    }
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grant::ClientCredentials { scopes } => f
                .debug_struct("ClientCredentials")
                .field("scopes", scopes)
                .finish(),
            Grant::RefreshToken { scopes, .. } => f
                .debug_struct("RefreshToken")
                .field("scopes", scopes)
                .finish_non_exhaustive(),
        }
    }
}

/// The application's credentials and the token endpoint.
pub struct OAuthClient {
    http: HttpClient,
    token_url: String,
    client_id: String,
    client_secret: SecretString,
}

impl fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthClient")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl OAuthClient {
    /// A client for the token endpoint under `base_url` (the API root, e.g.
    /// `https://api.ebay.com`). `http` should carry no request budget: the token endpoint is
    /// outside the API call quotas.
    pub fn new(
        http: HttpClient,
        base_url: &str,
        client_id: String,
        client_secret: SecretString,
    ) -> OAuthClient {
        OAuthClient {
            http,
            token_url: format!("{}{TOKEN_PATH}", base_url.trim().trim_end_matches('/')),
            client_id,
            client_secret,
        }
    }

    /// Mints a token with `grant`: the token and how long it lives.
    pub async fn mint(&self, grant: &Grant) -> Result<(SecretString, Duration), ConnectorError> {
        let op = format!("POST {TOKEN_PATH} ({} grant)", grant.name());
        let basic = B64.encode(format!(
            "{}:{}",
            self.client_id,
            self.client_secret.expose_secret()
        ));
        let request = self
            .http
            .raw()
            .post(&self.token_url)
            .header(AUTHORIZATION, format!("Basic {basic}"))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(grant.form());
        let (status, headers, body) = self.http.send_raw(&op, request).await?;
        if status.is_success() {
            let answer: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
                // The body may hold a token: never quote it.
                ConnectorError::protocol(&op, format!("unreadable token answer ({e})"))
            })?;
            if answer.access_token.is_empty() {
                return Err(ConnectorError::protocol(
                    &op,
                    "the token answer has no access_token",
                ));
            }
            let lifetime = answer
                .expires_in
                .filter(|s| *s > 0)
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_LIFETIME);
            return Ok((SecretString::from(answer.access_token), lifetime));
        }
        let code = status.as_u16();
        let refused = matches!(code, 400 | 401 | 403)
            .then(|| serde_json::from_slice::<OAuthError>(&body).ok())
            .flatten()
            .filter(|e| !e.error.is_empty());
        match refused {
            Some(e) => Err(
                ConnectorError::new(ErrorKind::Auth, &op, refusal_message(grant, &e))
                    .with_status(code),
            ),
            None => {
                let mut err = status_error(&op, status, &headers, &body);
                if err.kind == ErrorKind::Auth {
                    err.message = format!(
                        "HTTP {status}: {} (check settings.client_id and settings.client_secret)",
                        quote(&body)
                    );
                }
                Err(err)
            }
        }
    }
}

/// eBay's refusal of a grant, with the setting to look at.
fn refusal_message(grant: &Grant, e: &OAuthError) -> String {
    let hint = match (e.error.as_str(), grant) {
        ("invalid_client" | "unauthorized_client", _) => {
            "check settings.client_id and settings.client_secret (the application's keyset)"
        }
        ("invalid_grant", Grant::RefreshToken { .. }) => {
            "settings.refresh_token is invalid, expired or revoked: get a new one through \
             eBay's consent flow (authorization code grant)"
        }
        ("invalid_scope", Grant::RefreshToken { .. }) => {
            "settings.oauth_scopes asks for a scope the seller did not consent to"
        }
        ("invalid_scope", Grant::ClientCredentials { .. }) => {
            "the application keyset is not allowed the application scope"
        }
        _ => "check the eBay OAuth settings (client_id, client_secret, refresh_token)",
    };
    let description = e
        .error_description
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .unwrap_or("(no error_description)");
    format!(
        "eBay refused the {} grant: {}: {description}; {hint}",
        grant.name(),
        e.error
    )
}

/// A cached token and when to mint the next one.
struct Cached {
    token: SecretString,
    refresh_at: Instant,
}

enum Kind {
    Fixed(SecretString),
    Minted {
        client: std::sync::Arc<OAuthClient>,
        grant: Grant,
        margin: Duration,
        cache: tokio::sync::Mutex<Option<Cached>>,
    },
}

/// Where an API call gets its bearer token: fixed, or minted and refreshed.
pub struct TokenSource {
    kind: Kind,
    mints: AtomicU64,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Fixed(_) => f.write_str("TokenSource::Fixed([REDACTED])"),
            Kind::Minted {
                client,
                grant,
                margin,
                ..
            } => f
                .debug_struct("TokenSource::Minted")
                .field("client", client)
                .field("grant", grant)
                .field("margin", margin)
                .field("mints", &self.mints())
                .finish_non_exhaustive(),
        }
    }
}

impl TokenSource {
    /// A token that is used as it is (from the settings) and never refreshed.
    pub fn fixed(token: SecretString) -> TokenSource {
        TokenSource {
            kind: Kind::Fixed(token),
            mints: AtomicU64::new(0),
        }
    }

    /// A token minted with `grant` when first needed, and again once it is within `margin`
    /// of its expiry or after [`TokenSource::invalidate`].
    pub fn minted(
        client: std::sync::Arc<OAuthClient>,
        grant: Grant,
        margin: Duration,
    ) -> TokenSource {
        TokenSource {
            kind: Kind::Minted {
                client,
                grant,
                margin,
                cache: tokio::sync::Mutex::new(None),
            },
            mints: AtomicU64::new(0),
        }
    }

    /// Whether a fresh token can be had (a 401 is worth one retry with a new token).
    pub fn refreshable(&self) -> bool {
        matches!(self.kind, Kind::Minted { .. })
    }

    /// Tokens minted so far.
    pub fn mints(&self) -> u64 {
        self.mints.load(Ordering::Relaxed)
    }

    /// A token that is not within the margin of its expiry: the cached one, or a new one.
    pub async fn get(&self) -> Result<SecretString, ConnectorError> {
        let (client, grant, margin, cache) = match &self.kind {
            Kind::Fixed(token) => return Ok(token.clone()),
            Kind::Minted {
                client,
                grant,
                margin,
                cache,
            } => (client, grant, *margin, cache),
        };
        // Held across the mint: concurrent callers wait for it instead of minting too.
        let mut cached = cache.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        self.mints.fetch_add(1, Ordering::Relaxed);
        let minted = Instant::now();
        let (token, lifetime) = client.mint(grant).await?;
        tracing::debug!(
            connector = crate::KIND,
            grant = grant.name(),
            lifetime_secs = lifetime.as_secs(),
            "minted an eBay access token"
        );
        *cached = Some(Cached {
            token: token.clone(),
            refresh_at: minted + lifetime.saturating_sub(margin),
        });
        Ok(token)
    }

    /// Sends `request` with this source's bearer token and returns the answer whatever its
    /// status. A 401 to a minted token invalidates it and sends the request once more with a
    /// new one (when the request can be cloned); only transport failures and a failed mint
    /// are errors.
    pub async fn send(
        &self,
        http: &HttpClient,
        op: &str,
        request: RequestBuilder,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ConnectorError> {
        let token = self.get().await?;
        let again = if self.refreshable() {
            request.try_clone()
        } else {
            None
        };
        let answer = http
            .send_raw(op, request.bearer_auth(token.expose_secret()))
            .await?;
        match again {
            Some(again) if answer.0 == StatusCode::UNAUTHORIZED => {
                tracing::debug!(
                    connector = crate::KIND,
                    operation = op,
                    "eBay refused the access token (401): minting a new one and retrying once"
                );
                self.invalidate(&token).await;
                let token = self.get().await?;
                http.send_raw(op, again.bearer_auth(token.expose_secret()))
                    .await
            }
            _ => Ok(answer),
        }
    }

    /// Forgets `used` (an API refused it with 401), so the next [`TokenSource::get`] mints
    /// a new token. A token minted meanwhile by another call is kept.
    pub async fn invalidate(&self, used: &SecretString) {
        if let Kind::Minted { cache, .. } = &self.kind {
            let mut cached = cache.lock().await;
            if cached
                .as_ref()
                .is_some_and(|c| c.token.expose_secret() == used.expose_secret())
            {
                *cached = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_url_encoded_and_scopes_space_separated() {
        let g = Grant::RefreshToken {
            refresh_token: SecretString::from("v^1.1#i^1&x=y".to_string()),
            scopes: vec![
                SELL_INVENTORY_SCOPE.into(),
                NOTIFICATION_SUBSCRIPTION_SCOPE.into(),
            ],
        };
        assert_eq!(
            g.form(),
            "grant_type=refresh_token&refresh_token=v%5E1.1%23i%5E1%26x%3Dy&scope=\
             https%3A%2F%2Fapi.ebay.com%2Foauth%2Fapi_scope%2Fsell.inventory%20\
             https%3A%2F%2Fapi.ebay.com%2Foauth%2Fapi_scope%2Fcommerce.notification.subscription"
        );
        let no_scope = Grant::RefreshToken {
            refresh_token: SecretString::from("r".to_string()),
            scopes: vec![],
        };
        assert_eq!(no_scope.form(), "grant_type=refresh_token&refresh_token=r");
        let app = Grant::ClientCredentials {
            scopes: vec![APPLICATION_SCOPE.into()],
        };
        assert_eq!(
            app.form(),
            "grant_type=client_credentials&scope=https%3A%2F%2Fapi.ebay.com%2Foauth%2Fapi_scope"
        );
        assert!(!format!("{g:?}").contains("v^1.1"));
    }

    #[test]
    fn refusals_name_the_setting_and_keep_ebays_words() {
        let g = Grant::RefreshToken {
            refresh_token: SecretString::from("r".to_string()),
            scopes: vec![],
        };
        let m = refusal_message(
            &g,
            &OAuthError {
                error: "invalid_grant".into(),
                error_description: Some("the provided authorization refresh token is invalid or was issued to another client".into()),
            },
        );
        assert!(
            m.contains("invalid_grant: the provided authorization refresh token"),
            "{m}"
        );
        assert!(m.contains("settings.refresh_token"), "{m}");
        let m = refusal_message(
            &Grant::ClientCredentials { scopes: vec![] },
            &OAuthError {
                error: "invalid_client".into(),
                error_description: None,
            },
        );
        assert!(m.contains("settings.client_secret"), "{m}");
    }

    #[tokio::test]
    async fn a_fixed_token_is_never_refreshed_and_never_printed() {
        let s = TokenSource::fixed(SecretString::from("fixed-secret-token".to_string()));
        assert!(!s.refreshable());
        assert_eq!(s.get().await.unwrap().expose_secret(), "fixed-secret-token");
        s.invalidate(&SecretString::from("fixed-secret-token".to_string()))
            .await;
        assert_eq!(s.get().await.unwrap().expose_secret(), "fixed-secret-token");
        assert!(!format!("{s:?}").contains("fixed-secret"));
        assert_eq!(s.mints(), 0);
    }
}

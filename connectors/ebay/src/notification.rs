//! eBay Commerce Notification API management: the destination (where eBay POSTs
//! notifications) and the subscriptions (which topics go there), as the connector creates
//! them in [`omnisync_sdk::Connector::ensure_webhook_subscriptions`]; the wire types are
//! shared with the simulator.
//!
//! Confirmed in eBay's `commerce_notification_v1_oas3` contract and method pages:
//!
//! | call | token | answer |
//! |---|---|---|
//! | `GET /commerce/notification/v1/destination?limit=&continuation_token=` | application (client credentials, `…/oauth/api_scope`) | `{total, href, next, limit, destinations: [{destinationId, name, status, deliveryConfig: {endpoint, verificationToken}}]}`, `limit` 10–100 |
//! | `POST /commerce/notification/v1/destination` | application | `{name, status: "ENABLED", deliveryConfig: {endpoint, verificationToken}}` → 201 + `Location`; eBay first sends `GET {endpoint}?challenge_code=…` and wants `{"challengeResponse": hex(SHA-256(code + token + endpoint))}`, else 409 errorId 195020 "Challenge verification failed for requested endpoint"; 409 195021 "Destination exists for this endpoint"; 409 195003 when the application has no alert email (`updateConfig`) |
//! | `PUT /commerce/notification/v1/destination/{id}` | application | same body, 204, validated the same way |
//! | `GET /commerce/notification/v1/subscription?limit=&continuation_token=` | user (`…/commerce.notification.subscription`) for user-based topics, application for application-based ones | `{total, href, next, limit, subscriptions: [{subscriptionId, topicId, status, creationDate, payload, destinationId}]}` |
//! | `POST /commerce/notification/v1/subscription` | as above | `{topicId, status: "ENABLED", payload: {format: "JSON", schemaVersion, deliveryProtocol: "HTTPS"}, destinationId}` → 201 + `Location`; 403 195011 "Not authorized for this topic"; 409 195012 "Subscription already exists" (one subscription per application and topic); 409 195015 when the destination is not enabled |
//! | `POST /commerce/notification/v1/subscription/{id}/enable` | as above | 204 |
//!
//! Unconfirmed, and therefore settings: whether the order topics are user-based
//! ([`Settings::webhook_subscription_token`](crate::Settings::webhook_subscription_token))
//! and their schema version
//! ([`Settings::webhook_schema_version`](crate::Settings::webhook_schema_version)).
//!
//! What [`Manager::ensure`] does, idempotently:
//!
//! 1. lists the destinations; one whose `deliveryConfig.endpoint` is the configured endpoint
//!    (exactly, or the same URL spelt differently) is reused, and updated (`PUT`) when it is
//!    not `ENABLED`, is spelt differently or holds another verification token; otherwise one
//!    is created;
//! 2. lists the subscriptions; for each order topic, one to that destination is kept (and
//!    enabled when disabled), none is created. A subscription of the topic to *another*
//!    destination is left alone and reported as an error: eBay allows one per application and
//!    topic, and moving it could take notifications away from another system.

use bytes::Bytes;
use omnisync_sdk::ConnectorError;
use omnisync_sdk::http::{HttpClient, decode_json, status_error};
use omnisync_sdk::secret::{ExposeSecret, SecretString};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::{Deserialize, Serialize};

use crate::api::{ERR_ACCESS_DENIED, ErrorsBody};
use crate::oauth::TokenSource;

/// Path prefix of the Notification API.
pub const NOTIFICATION: &str = "/commerce/notification/v1";
/// `errorId` of "Please provide configurations required for notifications. Refer to /config"
/// (409: the application has no alert email yet).
pub const ERR_CONFIG_REQUIRED: i64 = 195003;
/// `errorId` of "Invalid limit. Supported ranges 10 - 100."
pub const ERR_INVALID_LIMIT: i64 = 195004;
/// `errorId` of "Invalid continuation token."
pub const ERR_INVALID_CONTINUATION: i64 = 195005;
/// `errorId` of "Invalid or missing subscription status."
pub const ERR_SUBSCRIPTION_STATUS: i64 = 195006;
/// `errorId` of "Invalid or missing destination id." (subscription requests)
pub const ERR_SUBSCRIPTION_DESTINATION: i64 = 195007;
/// `errorId` of "Invalid or missing schema version."
pub const ERR_SCHEMA_VERSION: i64 = 195008;
/// `errorId` of "Specified format is not supported for the topic."
pub const ERR_FORMAT: i64 = 195009;
/// `errorId` of "Invalid or missing protocol".
pub const ERR_PROTOCOL: i64 = 195010;
/// `errorId` of "Not authorized for this topic." (403)
pub const ERR_NOT_AUTHORIZED_FOR_TOPIC: i64 = 195011;
/// `errorId` of "Subscription already exists" (409).
pub const ERR_SUBSCRIPTION_EXISTS: i64 = 195012;
/// `errorId` of "Invalid subscription Id." (404)
pub const ERR_SUBSCRIPTION_ID: i64 = 195013;
/// `errorId` of "The subscription cannot be enabled since the destination is not enabled."
pub const ERR_DESTINATION_NOT_ENABLED: i64 = 195015;
/// `errorId` of "Invalid name. Markups or lengths greater than 64 not supported".
pub const ERR_DESTINATION_NAME: i64 = 195016;
/// `errorId` of "Invalid or missing endpoint."
pub const ERR_ENDPOINT: i64 = 195017;
/// `errorId` of "Invalid or missing destination status."
pub const ERR_DESTINATION_STATUS: i64 = 195018;
/// `errorId` of "Invalid or missing verification token for this endpoint."
pub const ERR_VERIFICATION_TOKEN: i64 = 195019;
/// `errorId` of "Challenge verification failed for requested endpoint" (409).
pub const ERR_CHALLENGE_FAILED: i64 = 195020;
/// `errorId` of "Destination exists for this endpoint" (409).
pub const ERR_DESTINATION_EXISTS: i64 = 195021;
/// `errorId` of "Invalid or missing destination id." (404)
pub const ERR_DESTINATION_ID: i64 = 195022;
/// `errorId` of "Destination is in use and cannot be deleted." (409)
pub const ERR_DESTINATION_IN_USE: i64 = 195024;
/// `errorId` of "Invalid or missing topic id." (400)
pub const ERR_TOPIC_ID: i64 = 195027;

/// A destination's (or a subscription's) enabled status.
pub const ENABLED: &str = "ENABLED";
/// The name the connector gives the destinations it creates (eBay: at most 64 characters).
pub const DESTINATION_NAME: &str = "omnisync";
/// The most list pages read (100 entries each).
const MAX_PAGES: usize = 100;

/// `deliveryConfig` of a destination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryConfig {
    /// The endpoint notifications are POSTed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The verification token of the endpoint validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_token: Option<String>,
}

/// The body of `createDestination` and `updateDestination`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRequest {
    /// A name (at most 64 characters, no markup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `ENABLED` or `DISABLED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Endpoint and verification token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_config: Option<DeliveryConfig>,
}

/// A destination as `getDestination(s)` return it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// Its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_id: Option<String>,
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `ENABLED`, `DISABLED` or `MARKED_DOWN` (set by eBay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Endpoint and verification token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_config: Option<DeliveryConfig>,
}

/// The answer of `getDestinations`. Entries are decoded one by one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DestinationSearchResponse {
    /// All destinations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// This page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
    /// The next page (with a `continuation_token`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Entries per page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// The destinations.
    #[serde(default)]
    pub destinations: Vec<serde_json::Value>,
}

/// `payload` of a subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionPayloadDetail {
    /// `JSON`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The topic's schema version, e.g. `1.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<String>,
    /// `HTTPS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_protocol: Option<String>,
}

/// The body of `createSubscription`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSubscriptionRequest {
    /// The topic, e.g. `ORDER_CONFIRMATION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    /// `ENABLED` or `DISABLED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Format, schema version, protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<SubscriptionPayloadDetail>,
    /// The destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_id: Option<String>,
}

/// A subscription as `getSubscription(s)` return it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// Its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<String>,
    /// The topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    /// `ENABLED` or `DISABLED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// When it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<String>,
    /// Format, schema version, protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<SubscriptionPayloadDetail>,
    /// The destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_id: Option<String>,
}

/// The answer of `getSubscriptions`. Entries are decoded one by one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubscriptionSearchResponse {
    /// All subscriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// This page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
    /// The next page (with a `continuation_token`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Entries per page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// The subscriptions.
    #[serde(default)]
    pub subscriptions: Vec<serde_json::Value>,
}

/// Whether two endpoint spellings name the same URL (scheme and host case, default port).
pub fn same_endpoint(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    if a == b {
        return true;
    }
    match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// The eBay error ids of an error answer.
fn error_ids(body: &[u8]) -> Vec<i64> {
    serde_json::from_slice::<ErrorsBody>(body)
        .map(|b| b.errors.iter().map(|e| e.error_id).collect())
        .unwrap_or_default()
}

/// An error answer as a [`ConnectorError`]: the SDK's classification, eBay's own errors as
/// the message, and `hint` appended.
fn call_error(
    op: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    hint: Option<&str>,
) -> ConnectorError {
    let mut e = status_error(op, status, headers, body);
    if let Ok(errors) = serde_json::from_slice::<ErrorsBody>(body)
        && !errors.errors.is_empty()
    {
        let described: Vec<String> = errors.errors.iter().map(|e| e.describe()).collect();
        e.message = format!("HTTP {status}: {}", described.join("; "));
    }
    if let Some(hint) = hint {
        e.message = format!("{} ({hint})", e.message);
    }
    e
}

/// Creates what is missing for eBay to send the order topics to the endpoint.
pub(crate) struct Manager<'a> {
    /// The connector's HTTP client.
    pub http: &'a HttpClient,
    /// The API root.
    pub base: &'a str,
    /// The application token (destination calls).
    pub app: &'a TokenSource,
    /// The token of the subscription calls (user or application, per settings).
    pub subs: &'a TokenSource,
    /// Which one `subs` is, for error hints: `"user"` or `"application"`.
    pub subs_kind: &'a str,
    /// The endpoint as registered.
    pub endpoint: &'a str,
    /// The endpoint's verification token.
    pub verification_token: &'a SecretString,
    /// The topics to subscribe.
    pub topics: &'a [String],
    /// `payload.schemaVersion`.
    pub schema_version: &'a str,
}

impl Manager<'_> {
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .raw()
            .request(method, format!("{}{path}", self.base))
            .header(ACCEPT, "application/json")
    }

    async fn call(
        &self,
        auth: &TokenSource,
        op: &str,
        request: RequestBuilder,
        hint: Option<&str>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ConnectorError> {
        let (status, headers, body) = auth.send(self.http, op, request).await?;
        if status.is_success() {
            Ok((status, headers, body))
        } else {
            Err(call_error(op, status, &headers, &body, hint))
        }
    }

    /// Every entry of a paged list (`destinations` or `subscriptions`).
    async fn list(
        &self,
        auth: &TokenSource,
        what: &str,
        hint: Option<&str>,
    ) -> Result<Vec<serde_json::Value>, ConnectorError> {
        let path = format!("{NOTIFICATION}/{what}");
        let op = format!("GET {path}");
        let mut out = Vec::new();
        let mut continuation: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![("limit", "100".to_string())];
            if let Some(c) = &continuation {
                query.push(("continuation_token", c.clone()));
            }
            let request = self.request(Method::GET, &path).query(&query);
            let (_, _, body) = self.call(auth, &op, request, hint).await?;
            let (entries, next) = if what == "destination" {
                let page: DestinationSearchResponse = decode_json(&op, &body)?;
                (page.destinations, page.next)
            } else {
                let page: SubscriptionSearchResponse = decode_json(&op, &body)?;
                (page.subscriptions, page.next)
            };
            let empty = entries.is_empty();
            out.extend(entries);
            continuation = next
                .filter(|_| !empty)
                .and_then(|n| continuation_token(self.base, &n));
            if continuation.is_none() {
                return Ok(out);
            }
        }
        Err(ConnectorError::protocol(
            op,
            format!("more than {MAX_PAGES} pages of {what}s"),
        ))
    }

    async fn destinations(&self) -> Result<Vec<Destination>, ConnectorError> {
        Ok(self
            .list(self.app, "destination", None)
            .await?
            .into_iter()
            .filter_map(|v| match Destination::deserialize(&v) {
                Ok(d) if d.destination_id.is_some() => Some(d),
                _ => {
                    tracing::warn!(
                        connector = crate::KIND,
                        "skipping an unreadable eBay destination"
                    );
                    None
                }
            })
            .collect())
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>, ConnectorError> {
        let hint = self.scope_hint();
        Ok(self
            .list(self.subs, "subscription", Some(&hint))
            .await?
            .into_iter()
            .filter_map(|v| match Subscription::deserialize(&v) {
                Ok(s) if s.subscription_id.is_some() => Some(s),
                _ => {
                    tracing::warn!(
                        connector = crate::KIND,
                        "skipping an unreadable eBay subscription"
                    );
                    None
                }
            })
            .collect())
    }

    fn scope_hint(&self) -> String {
        if self.subs_kind == "user" {
            "subscriptions are managed with the user token: it needs the scope \
             https://api.ebay.com/oauth/api_scope/commerce.notification.subscription \
             (settings.oauth_scopes); application-based topics take \
             settings.webhook_subscription_token = \"application\""
                .to_string()
        } else {
            "subscriptions are managed with the application token; user-based topics take \
             settings.webhook_subscription_token = \"user\""
                .to_string()
        }
    }

    fn destination_body(&self, name: Option<String>) -> DestinationRequest {
        DestinationRequest {
            name: Some(name.unwrap_or_else(|| DESTINATION_NAME.to_string())),
            status: Some(ENABLED.to_string()),
            delivery_config: Some(DeliveryConfig {
                endpoint: Some(self.endpoint.to_string()),
                verification_token: Some(self.verification_token.expose_secret().to_string()),
            }),
        }
    }

    /// Destination errors, with what to do about the known ones.
    fn destination_hint(body: &[u8]) -> Option<&'static str> {
        let ids = error_ids(body);
        if ids.contains(&ERR_CHALLENGE_FAILED) {
            Some(
                "eBay's GET {endpoint}?challenge_code=… did not get the expected \
                 challengeResponse: the endpoint must reach this connector's webhook route, and \
                 settings.webhook_endpoint must be the URL exactly as eBay calls it",
            )
        } else if ids.contains(&ERR_CONFIG_REQUIRED) {
            Some("set the application's alert email first (Notification API updateConfig)")
        } else if ids.contains(&ERR_ACCESS_DENIED) {
            Some(
                "destination calls take an application token (client credentials grant): \
                 settings.client_id and settings.client_secret, or settings.webhook_application_token",
            )
        } else {
            None
        }
    }

    async fn create_destination(&self) -> Result<String, ConnectorError> {
        let path = format!("{NOTIFICATION}/destination");
        let op = format!("POST {path}");
        let request = self
            .request(Method::POST, &path)
            .header(CONTENT_TYPE, "application/json")
            .json(&self.destination_body(None));
        let (status, headers, body) = self.app.send(self.http, &op, request).await?;
        if status.is_success() {
            return crate::api::id_from_location(&op, &headers, "the destination");
        }
        Err(call_error(
            &op,
            status,
            &headers,
            &body,
            Self::destination_hint(&body),
        ))
    }

    async fn update_destination(&self, d: &Destination, id: &str) -> Result<(), ConnectorError> {
        let path = format!("{NOTIFICATION}/destination/{}", urlencoding::encode(id));
        let op = format!("PUT {path}");
        let request = self
            .request(Method::PUT, &path)
            .header(CONTENT_TYPE, "application/json")
            .json(&self.destination_body(d.name.clone()));
        let (status, headers, body) = self.app.send(self.http, &op, request).await?;
        if status.is_success() {
            return Ok(());
        }
        Err(call_error(
            &op,
            status,
            &headers,
            &body,
            Self::destination_hint(&body),
        ))
    }

    /// Finds, updates or creates the destination; its id and what was done.
    async fn ensure_destination(&self) -> Result<(String, String), ConnectorError> {
        let all = self.destinations().await?;
        let exact = all.iter().find(|d| {
            d.delivery_config
                .as_ref()
                .and_then(|c| c.endpoint.as_deref())
                .is_some_and(|e| e.trim() == self.endpoint)
        });
        let found = exact.or_else(|| {
            all.iter().find(|d| {
                d.delivery_config
                    .as_ref()
                    .and_then(|c| c.endpoint.as_deref())
                    .is_some_and(|e| same_endpoint(e, self.endpoint))
            })
        });
        let Some(d) = found else {
            let id = match self.create_destination().await {
                Ok(id) => id,
                // Made meanwhile (or eBay matched a spelling we did not): take it.
                Err(e)
                    if e.message
                        .contains(&format!("errorId {ERR_DESTINATION_EXISTS}")) =>
                {
                    let again = self.destinations().await?;
                    again
                        .into_iter()
                        .find(|d| {
                            d.delivery_config
                                .as_ref()
                                .and_then(|c| c.endpoint.as_deref())
                                .is_some_and(|x| same_endpoint(x, self.endpoint))
                        })
                        .and_then(|d| d.destination_id)
                        .ok_or(e)?
                }
                Err(e) => return Err(e),
            };
            return Ok((
                id.clone(),
                format!("created destination {id} for {}", self.endpoint),
            ));
        };
        let id = d.destination_id.clone().unwrap_or_default();
        let config = d.delivery_config.clone().unwrap_or_default();
        let mut why = Vec::new();
        let status = d.status.as_deref().unwrap_or("(no status)");
        if status != ENABLED {
            why.push(format!("it was {status}"));
        }
        if config.endpoint.as_deref().map(str::trim) != Some(self.endpoint) {
            why.push(format!(
                "its endpoint was spelt {:?}",
                config.endpoint.as_deref().unwrap_or("")
            ));
        }
        if config
            .verification_token
            .as_deref()
            .is_some_and(|t| t != self.verification_token.expose_secret())
        {
            why.push("it held another verification token".to_string());
        }
        if why.is_empty() {
            return Ok((
                id.clone(),
                format!("kept destination {id} for {}", self.endpoint),
            ));
        }
        self.update_destination(d, &id).await?;
        Ok((
            id.clone(),
            format!(
                "updated destination {id} for {} ({})",
                self.endpoint,
                why.join(", ")
            ),
        ))
    }

    async fn create_subscription(
        &self,
        topic: &str,
        destination: &str,
    ) -> Result<String, ConnectorError> {
        let path = format!("{NOTIFICATION}/subscription");
        let op = format!("POST {path} ({topic})");
        let body = CreateSubscriptionRequest {
            topic_id: Some(topic.to_string()),
            status: Some(ENABLED.to_string()),
            payload: Some(SubscriptionPayloadDetail {
                format: Some("JSON".to_string()),
                schema_version: Some(self.schema_version.to_string()),
                delivery_protocol: Some("HTTPS".to_string()),
            }),
            destination_id: Some(destination.to_string()),
        };
        let request = self
            .request(Method::POST, &path)
            .header(CONTENT_TYPE, "application/json")
            .json(&body);
        let hint = self.scope_hint();
        let (_, headers, _) = self.call(self.subs, &op, request, Some(&hint)).await?;
        crate::api::id_from_location(&op, &headers, "the subscription")
    }

    async fn enable_subscription(&self, id: &str) -> Result<(), ConnectorError> {
        let path = format!(
            "{NOTIFICATION}/subscription/{}/enable",
            urlencoding::encode(id)
        );
        let op = format!("POST {path}");
        let hint = self.scope_hint();
        self.call(
            self.subs,
            &op,
            self.request(Method::POST, &path),
            Some(&hint),
        )
        .await
        .map(drop)
    }

    /// Makes sure every topic is subscribed, enabled, to the endpoint's destination.
    pub(crate) async fn ensure(&self) -> Result<Vec<String>, ConnectorError> {
        let mut done = Vec::new();
        let (destination, line) = self.ensure_destination().await?;
        done.push(line);
        let existing = self.subscriptions().await?;
        let mut topics: Vec<&str> = Vec::new();
        for t in self.topics {
            if !topics.contains(&t.as_str()) {
                topics.push(t);
            }
        }
        // Refuse before changing anything when a topic goes elsewhere.
        for topic in &topics {
            let mine = existing.iter().any(|s| {
                s.topic_id.as_deref() == Some(*topic)
                    && s.destination_id.as_deref() == Some(destination.as_str())
            });
            if mine {
                continue;
            }
            if let Some(other) = existing
                .iter()
                .find(|s| s.topic_id.as_deref() == Some(*topic))
            {
                return Err(ConnectorError::permanent(
                    "ensuring eBay notification subscriptions",
                    format!(
                        "subscription {} already sends {topic} to destination {}, not to {} \
                         ({destination}): eBay allows one subscription per application and \
                         topic; delete it (DELETE {NOTIFICATION}/subscription/{}) or point it \
                         at destination {destination}, then run this again",
                        other.subscription_id.as_deref().unwrap_or("?"),
                        other.destination_id.as_deref().unwrap_or("?"),
                        self.endpoint,
                        other.subscription_id.as_deref().unwrap_or("?"),
                    ),
                ));
            }
        }
        for topic in topics {
            let mine = existing.iter().find(|s| {
                s.topic_id.as_deref() == Some(topic)
                    && s.destination_id.as_deref() == Some(destination.as_str())
            });
            match mine {
                Some(s) => {
                    let id = s.subscription_id.clone().unwrap_or_default();
                    if s.status.as_deref() == Some(ENABLED) {
                        done.push(format!(
                            "kept subscription {id} ({topic} to destination {destination})"
                        ));
                    } else {
                        self.enable_subscription(&id).await?;
                        done.push(format!(
                            "enabled subscription {id} ({topic} to destination {destination})"
                        ));
                    }
                }
                None => {
                    let id = self.create_subscription(topic, &destination).await?;
                    done.push(format!(
                        "created subscription {id} ({topic} to destination {destination})"
                    ));
                }
            }
        }
        Ok(done)
    }
}

/// The `continuation_token` of a `next` link (absolute, or relative to `base`).
fn continuation_token(base: &str, next: &str) -> Option<String> {
    let url = reqwest::Url::parse(next)
        .or_else(|_| reqwest::Url::parse(&format!("{base}{next}")))
        .ok()?;
    url.query_pairs()
        .find(|(k, _)| k == "continuation_token")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_compare_as_urls() {
        assert!(same_endpoint(
            "https://Sync.Example.com:443/webhooks/ebay",
            "https://sync.example.com/webhooks/ebay"
        ));
        assert!(!same_endpoint(
            "https://sync.example.com/webhooks/ebay",
            "https://sync.example.com/webhooks/other"
        ));
        assert!(same_endpoint(" x ", "x"));
    }

    #[test]
    fn continuation_tokens_come_from_next_links() {
        assert_eq!(
            continuation_token(
                "https://api.ebay.com",
                "https://api.ebay.com/commerce/notification/v1/destination?limit=100&continuation_token=abc%3D"
            )
            .as_deref(),
            Some("abc=")
        );
        assert_eq!(
            continuation_token(
                "http://127.0.0.1:9",
                "/commerce/notification/v1/subscription?continuation_token=7"
            )
            .as_deref(),
            Some("7")
        );
        assert_eq!(continuation_token("http://x", "/a?limit=1"), None);
    }
}

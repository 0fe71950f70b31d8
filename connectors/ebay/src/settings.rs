//! Configuration of one eBay connector instance.
//!
//! The daemon's config exposes these fields as they are (`[connectors.<id>.settings]` →
//! [`Settings`]). eBay facts that are not confirmed in eBay's own documentation (the daily
//! call quota and whether a 429 carries `Retry-After`, how long an active inventory report
//! takes, which token a topic's subscription takes, a topic's schema version) are settings
//! with documented defaults rather than constants.

use omnisync_sdk::{Currency, SecretRef};
use serde::{Deserialize, Serialize};

use crate::oauth::SELL_INVENTORY_SCOPE;

/// Settings of the eBay connector.
///
/// Credentials come in one of two shapes (checked by [`crate::connect`]):
///
/// - **A static user token**: `access_token`, an OAuth 2 *user* access token with the scope
///   `https://api.ebay.com/oauth/api_scope/sell.inventory`, sent as `Authorization: Bearer …`
///   and never refreshed (eBay's user tokens live two hours: point it at a file or credential
///   that something else keeps fresh).
///
///   ```toml
///   access_token = "credential:ebay-user-token"
///   ```
///
/// - **Tokens minted by the connector**: `client_id` + `client_secret` (the application's
///   keyset) + `refresh_token` (from eBay's consent flow, valid about 18 months). The user
///   access token is minted with the refresh token grant (`oauth_scopes`), cached, minted
///   again `token_refresh_margin_secs` before it expires and after any 401.
///
///   ```toml
///   client_id = "MyShop-omnisync-PRD-1a2b3c4d5-6e7f8a9b"
///   client_secret = "credential:ebay-client-secret"
///   refresh_token = "credential:ebay-refresh-token"
///   marketplace_id = "EBAY_DE"
///   content_language = "de-DE"
///   currency = "EUR"
///   ```
///
/// With `client_id` + `client_secret`, the *application* token the Notification API wants
/// (`getPublicKey`, destinations) is minted with the client credentials grant as well, unless
/// `webhook_application_token` is set.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Root URL of the API: `https://api.ebay.com`, `https://api.sandbox.ebay.com`, or the
    /// simulator's `http://127.0.0.1:PORT`. Calls go to `{base_url}/sell/inventory/v1/…` and
    /// `{base_url}/sell/feed/v1/…`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// A static OAuth 2 user access token, by reference (`env:…`, `file:…`, `credential:…`),
    /// never refreshed. Set this, or `client_id` + `client_secret` + `refresh_token`.
    /// Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<SecretRef>,
    /// The application's OAuth client id (eBay's "App ID"; not a secret). With
    /// [`Settings::client_secret`] the connector mints tokens itself. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The application's OAuth client secret (eBay's "Cert ID"), by reference. Goes with
    /// [`Settings::client_id`]. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<SecretRef>,
    /// The seller's OAuth refresh token, by reference: the user access token is minted from
    /// it with the refresh token grant and refreshed before it expires. Needs
    /// [`Settings::client_id`] and [`Settings::client_secret`]; excludes
    /// [`Settings::access_token`]. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<SecretRef>,
    /// The scopes asked for with the refresh token grant (sent space-separated; they must be
    /// among those the seller consented to). Default
    /// `["https://api.ebay.com/oauth/api_scope/sell.inventory"]`, which covers every Sell
    /// Inventory call and the Sell Feed API's inventory tasks and result files. Add
    /// `https://api.ebay.com/oauth/api_scope/commerce.notification.subscription` for the
    /// connector to create user-based notification subscriptions (see
    /// [`Settings::webhook_subscription_token`]). An empty list sends no `scope`.
    #[serde(default = "default_oauth_scopes")]
    pub oauth_scopes: Vec<String>,
    /// A minted token is replaced this many seconds before it expires (eBay's tokens live
    /// 7200 s). A margin at least as long as the token's life mints a token for every call.
    /// Default 300.
    #[serde(default = "default_token_refresh_margin_secs")]
    pub token_refresh_margin_secs: u64,
    /// The marketplace, sent as `X-EBAY-C-MARKETPLACE-ID` (required by the Feed API's
    /// `createInventoryTask`) and used to pick the offer of a SKU. Default `EBAY_DE`.
    #[serde(default = "default_marketplace_id")]
    pub marketplace_id: String,
    /// Sent as `Content-Language` with writes. Default `de-DE`.
    #[serde(default = "default_content_language")]
    pub content_language: String,
    /// The marketplace currency (ISO 4217). Prices are written in it; an offer read in
    /// another currency is reported without a price (and a warning). Default `EUR`.
    #[serde(default = "default_currency")]
    pub currency: Currency,
    /// Inventory items per page of a full read (`limit` of `GET /inventory_item`). eBay's
    /// current documentation allows 1–200 (default 25); older versions said 1–100, so the
    /// default, 100, is valid under both.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// The most corrections one push sends in one `bulk_update_price_quantity` call
    /// (eBay: at most 25 `requests` per call). Corrections for the same SKU share a request.
    #[serde(default = "default_batch")]
    pub max_batch: usize,
    /// The most SKUs one `read_skus` call reads (`bulk_get_inventory_item` takes at most 25).
    #[serde(default = "default_batch")]
    pub max_read_batch: usize,
    /// Read offer prices for full reads from the Sell Feed API's active inventory report
    /// (`LMS_ACTIVE_INVENTORY_REPORT`, one asynchronous task per full read). eBay has no
    /// other bulk read of offer prices: `GET /offer` takes exactly one SKU. When `false`,
    /// full reads carry stock only (no offer) and prices are seen through `read_skus`.
    #[serde(default = "default_true")]
    pub read_prices_from_report: bool,
    /// `filterCriteria.listingFormat` of the report task (`FIXED_PRICE` or `AUCTION`);
    /// empty for all formats. Default `FIXED_PRICE`.
    #[serde(default = "default_listing_format")]
    pub report_listing_format: String,
    /// How long to wait between two `getInventoryTask` polls, in milliseconds.
    #[serde(default = "default_report_poll_interval_ms")]
    pub report_poll_interval_ms: u64,
    /// How long a full read waits for the report task to complete, in seconds; then the
    /// read fails as transient (a retry picks the same task up again).
    #[serde(default = "default_report_timeout_secs")]
    pub report_timeout_secs: u64,
    /// Timeout of the report download (`download_result_file`), in seconds.
    #[serde(default = "default_report_download_timeout_secs")]
    pub report_download_timeout_secs: u64,
    /// Stock corrections also set the offer's `availableQuantity` (eBay lists the smaller
    /// of the offer's and the inventory item's quantity, so leaving an old offer quantity in
    /// place can hide a stock increase). Needs the offer id, looked up with `GET /offer` when
    /// the correction's refs do not carry it.
    #[serde(default = "default_true")]
    pub stock_updates_offer_quantity: bool,
    /// How many `GET /offer` look-ups (one SKU each) run at once in `read_skus` and `push`.
    #[serde(default = "default_lookup_concurrency")]
    pub lookup_concurrency: usize,
    /// The wait reported with a 429 that carries no `Retry-After`, in seconds. eBay answers
    /// an exhausted call quota with HTTP 429 (errorId 2001); whether it sends `Retry-After`
    /// is unconfirmed, and daily quotas reset at a time only the Analytics API tells.
    #[serde(default = "default_throttle_retry_after_secs")]
    pub throttle_retry_after_secs: u64,
    /// Total timeout of one HTTP request, in seconds.
    #[serde(default = "default_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Request budget: requests per second. eBay's quotas are per app per day (the
    /// Inventory API's number is unconfirmed); this keeps bursts polite.
    #[serde(default = "default_requests_per_second")]
    pub requests_per_second: u32,
    /// Request budget: burst size.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// The notification endpoint exactly as registered with eBay (the destination's
    /// `deliveryConfig.endpoint`, e.g. `https://sync.example.com/webhooks/ebay`): part of the
    /// endpoint validation answer. With it (and [`Settings::webhook_verification_token`])
    /// the connector accepts eBay Notification API deliveries on `POST /webhooks/{id}` and
    /// answers the `challenge_code` validation on `GET /webhooks/{id}`. Default: none (no
    /// webhooks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_endpoint: Option<String>,
    /// The destination's verification token, by reference (eBay: 32–80 characters of
    /// letters, digits, `_` and `-`). Required with [`Settings::webhook_endpoint`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_verification_token: Option<SecretRef>,
    /// A static *application* token (client credentials grant, scope
    /// `https://api.ebay.com/oauth/api_scope`), by reference, sent to
    /// `GET /commerce/notification/v1/public_key/{kid}` and the Notification API's destination
    /// calls. Default: none, which mints one with the client credentials grant when
    /// [`Settings::client_id`] and [`Settings::client_secret`] are set, and otherwise sends
    /// the user token to `getPublicKey` (and cannot manage destinations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_application_token: Option<SecretRef>,
    /// Which token creates and lists the connector's notification subscriptions
    /// (`ensure_webhook_subscriptions`): `"user"` (the user token; it needs the scope
    /// `…/commerce.notification.subscription`) or `"application"` (the application token).
    /// eBay documents a user token for *user-based* topics and an application token for
    /// application-based ones; that the order topics are user-based is unconfirmed here
    /// (`getTopic` tells a topic's `scope`), hence a setting. Default `"user"`.
    #[serde(default)]
    pub webhook_subscription_token: SubscriptionToken,
    /// `payload.schemaVersion` of the subscriptions the connector creates. eBay publishes a
    /// topic's supported versions through `getTopic`; `"1.0"` for the order topics is
    /// unconfirmed here, hence a setting. Default `"1.0"`.
    #[serde(default = "default_webhook_schema_version")]
    pub webhook_schema_version: String,
    /// Notification topics whose deliveries are orders: their line items reserve the sold
    /// units. Default `["ORDER_CONFIRMATION"]` (the Notification API topic sent when a buyer
    /// completes checkout, one notification per line item). eBay does not publish that
    /// topic's `data` fields in a form confirmed here, so the topic names are a setting.
    #[serde(default = "default_order_topics")]
    pub webhook_order_topics: Vec<String>,
    /// How long a fetched notification public key is used before it is fetched again, in
    /// seconds (eBay recommends caching it about an hour). Default 3600.
    #[serde(default = "default_public_key_cache_secs")]
    pub webhook_public_key_cache_secs: u64,
}

/// Which token manages the connector's notification subscriptions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionToken {
    /// The user token (user-based topics; scope `…/commerce.notification.subscription`).
    #[default]
    User,
    /// The application token (application-based topics).
    Application,
}

/// The production API host.
pub const DEFAULT_BASE_URL: &str = "https://api.ebay.com";

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_string()
}
fn default_marketplace_id() -> String {
    "EBAY_DE".to_string()
}
fn default_content_language() -> String {
    "de-DE".to_string()
}
fn default_currency() -> Currency {
    Currency::EUR
}
fn default_page_size() -> u32 {
    100
}
fn default_batch() -> usize {
    25
}
fn default_true() -> bool {
    true
}
fn default_listing_format() -> String {
    "FIXED_PRICE".to_string()
}
fn default_report_poll_interval_ms() -> u64 {
    10_000
}
fn default_report_timeout_secs() -> u64 {
    1800
}
fn default_report_download_timeout_secs() -> u64 {
    300
}
fn default_lookup_concurrency() -> usize {
    4
}
fn default_throttle_retry_after_secs() -> u64 {
    60
}
fn default_timeout_secs() -> u64 {
    30
}
fn default_requests_per_second() -> u32 {
    10
}
fn default_burst() -> u32 {
    20
}
fn default_order_topics() -> Vec<String> {
    vec![crate::webhook::ORDER_CONFIRMATION.to_string()]
}
fn default_public_key_cache_secs() -> u64 {
    3600
}
fn default_oauth_scopes() -> Vec<String> {
    vec![SELL_INVENTORY_SCOPE.to_string()]
}
fn default_token_refresh_margin_secs() -> u64 {
    300
}
fn default_webhook_schema_version() -> String {
    "1.0".to_string()
}

impl Settings {
    /// Settings with every default and the given static user token reference.
    pub fn new(access_token: SecretRef) -> Self {
        Settings {
            access_token: Some(access_token),
            ..Settings::without_credentials()
        }
    }

    /// Settings with every default whose user tokens the connector mints from
    /// `refresh_token` with the application's `client_id` and `client_secret` (which also
    /// mint the application token).
    pub fn with_refresh_token(
        client_id: impl Into<String>,
        client_secret: SecretRef,
        refresh_token: SecretRef,
    ) -> Self {
        Settings {
            client_id: Some(client_id.into()),
            client_secret: Some(client_secret),
            refresh_token: Some(refresh_token),
            ..Settings::without_credentials()
        }
    }

    fn without_credentials() -> Self {
        Settings {
            base_url: default_base_url(),
            access_token: None,
            client_id: None,
            client_secret: None,
            refresh_token: None,
            oauth_scopes: default_oauth_scopes(),
            token_refresh_margin_secs: default_token_refresh_margin_secs(),
            marketplace_id: default_marketplace_id(),
            content_language: default_content_language(),
            currency: default_currency(),
            page_size: default_page_size(),
            max_batch: default_batch(),
            max_read_batch: default_batch(),
            read_prices_from_report: true,
            report_listing_format: default_listing_format(),
            report_poll_interval_ms: default_report_poll_interval_ms(),
            report_timeout_secs: default_report_timeout_secs(),
            report_download_timeout_secs: default_report_download_timeout_secs(),
            stock_updates_offer_quantity: true,
            lookup_concurrency: default_lookup_concurrency(),
            throttle_retry_after_secs: default_throttle_retry_after_secs(),
            request_timeout_secs: default_timeout_secs(),
            requests_per_second: default_requests_per_second(),
            burst: default_burst(),
            webhook_endpoint: None,
            webhook_verification_token: None,
            webhook_application_token: None,
            webhook_subscription_token: SubscriptionToken::User,
            webhook_schema_version: default_webhook_schema_version(),
            webhook_order_topics: default_order_topics(),
            webhook_public_key_cache_secs: default_public_key_cache_secs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_from_a_minimal_table() {
        let s: Settings =
            serde_json::from_value(serde_json::json!({"access_token": "env:EBAY_TOKEN"})).unwrap();
        assert_eq!(s.base_url, DEFAULT_BASE_URL);
        assert_eq!(s.marketplace_id, "EBAY_DE");
        assert_eq!(s.currency, Currency::EUR);
        assert_eq!(s.page_size, 100);
        assert_eq!(s.max_batch, 25);
        assert!(s.read_prices_from_report);
        assert_eq!(s.report_listing_format, "FIXED_PRICE");
        let d = Settings::new("env:EBAY_TOKEN".parse().unwrap());
        assert_eq!(
            format!("{:?}", d.access_token),
            format!("{:?}", s.access_token)
        );
        assert_eq!(d.page_size, s.page_size);
    }

    #[test]
    fn refuses_unknown_fields_and_reads_the_oauth_keys() {
        let e = serde_json::from_value::<Settings>(
            serde_json::json!({"access_token": "env:X", "pagesize": 5}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("pagesize"));
        // Credentials are checked by `connect`, which names the keys (tests/oauth.rs).
        let s: Settings = serde_json::from_value(serde_json::json!({})).unwrap();
        assert!(s.access_token.is_none() && s.refresh_token.is_none());
        assert_eq!(s.oauth_scopes, vec![SELL_INVENTORY_SCOPE.to_string()]);
        assert_eq!(s.token_refresh_margin_secs, 300);
        assert_eq!(s.webhook_subscription_token, SubscriptionToken::User);
        assert_eq!(s.webhook_schema_version, "1.0");
        let s: Settings = serde_json::from_value(serde_json::json!({
            "client_id": "App-ID",
            "client_secret": "env:EBAY_CLIENT_SECRET",
            "refresh_token": "credential:ebay-refresh-token",
            "oauth_scopes": ["a", "b"],
            "token_refresh_margin_secs": 60,
            "webhook_subscription_token": "application",
        }))
        .unwrap();
        assert_eq!(s.client_id.as_deref(), Some("App-ID"));
        assert_eq!(s.oauth_scopes.len(), 2);
        assert_eq!(s.webhook_subscription_token, SubscriptionToken::Application);
        let v = serde_json::to_value(&s).unwrap();
        assert!(v.get("access_token").is_none());
        assert_eq!(v["refresh_token"], "credential:ebay-refresh-token");
        assert!(
            serde_json::from_value::<Settings>(
                serde_json::json!({"webhook_subscription_token": "admin"})
            )
            .is_err()
        );
    }

    #[test]
    fn webhook_settings_are_optional() {
        let s: Settings =
            serde_json::from_value(serde_json::json!({"access_token": "env:EBAY_TOKEN"})).unwrap();
        assert!(s.webhook_endpoint.is_none() && s.webhook_verification_token.is_none());
        assert_eq!(
            s.webhook_order_topics,
            vec!["ORDER_CONFIRMATION".to_string()]
        );
        assert_eq!(s.webhook_public_key_cache_secs, 3600);
        let v = serde_json::to_value(&s).unwrap();
        assert!(v.get("webhook_endpoint").is_none());
        let s: Settings = serde_json::from_value(serde_json::json!({
            "access_token": "env:EBAY_TOKEN",
            "webhook_endpoint": "https://sync.example.com/webhooks/ebay",
            "webhook_verification_token": "env:EBAY_VERIFICATION_TOKEN",
            "webhook_order_topics": ["ORDER_CONFIRMATION", "ITEM_SOLD"],
        }))
        .unwrap();
        assert_eq!(s.webhook_order_topics.len(), 2);
        assert!(
            serde_json::from_value::<Settings>(serde_json::json!({
                "access_token": "env:X", "webhook_secret": "env:Y"
            }))
            .is_err()
        );
    }

    #[test]
    fn literal_secrets_are_redacted_in_debug() {
        let s = Settings::new("literal:very-secret-token".parse().unwrap());
        assert!(!format!("{s:?}").contains("very-secret-token"));
        let s = Settings::with_refresh_token(
            "id",
            "literal:very-secret-client".parse().unwrap(),
            "literal:very-secret-refresh".parse().unwrap(),
        );
        let d = format!("{s:?}");
        assert!(!d.contains("very-secret"), "{d}");
    }
}

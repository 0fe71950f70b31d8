//! Configuration of one eBay connector instance.
//!
//! The daemon's config exposes these fields as they are (`[connectors.<id>.settings]` →
//! [`Settings`]). eBay facts that are not confirmed in eBay's own documentation (the daily
//! call quota and whether a 429 carries `Retry-After`, how long an active inventory report
//! takes) are settings with documented defaults rather than constants.

use omnisync_sdk::{Currency, SecretRef};
use serde::{Deserialize, Serialize};

/// Settings of the eBay connector.
///
/// ```toml
/// access_token = "credential:ebay-user-token"
/// marketplace_id = "EBAY_DE"
/// content_language = "de-DE"
/// currency = "EUR"
/// ```
///
/// The access token is an OAuth 2 *user* access token with the scope
/// `https://api.ebay.com/oauth/api_scope/sell.inventory`. It is sent as
/// `Authorization: Bearer …`. Refreshing it (user tokens live two hours; the refresh token
/// 18 months) is not done by this connector yet: point `access_token` at a file or
/// credential that something else keeps fresh.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Root URL of the API: `https://api.ebay.com`, `https://api.sandbox.ebay.com`, or the
    /// simulator's `http://127.0.0.1:PORT`. Calls go to `{base_url}/sell/inventory/v1/…` and
    /// `{base_url}/sell/feed/v1/…`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The OAuth 2 user access token, by reference (`env:…`, `file:…`, `credential:…`).
    pub access_token: SecretRef,
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
    /// The OAuth token sent to `GET /commerce/notification/v1/public_key/{kid}`, by
    /// reference. eBay documents an *application* token (client credentials grant, scope
    /// `https://api.ebay.com/oauth/api_scope`) for that call. Default: none, which sends
    /// [`Settings::access_token`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_application_token: Option<SecretRef>,
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

impl Settings {
    /// Settings with every default and the given token reference.
    pub fn new(access_token: SecretRef) -> Self {
        Settings {
            base_url: default_base_url(),
            access_token,
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
    fn refuses_unknown_fields_and_missing_token() {
        let e = serde_json::from_value::<Settings>(
            serde_json::json!({"access_token": "env:X", "pagesize": 5}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("pagesize"));
        assert!(serde_json::from_value::<Settings>(serde_json::json!({})).is_err());
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
    fn literal_token_is_redacted_in_debug() {
        let s = Settings::new("literal:very-secret-token".parse().unwrap());
        assert!(!format!("{s:?}").contains("very-secret-token"));
    }
}

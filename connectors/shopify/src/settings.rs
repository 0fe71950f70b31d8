//! Configuration of one Shopify connector instance: where the shop is, how to authenticate,
//! and the API facts (limits, versions, reason codes) kept configurable because Shopify
//! changes them between API versions and plans.

use omnisync_sdk::{ConnectorError, Currency, SecretRef};
use serde::{Deserialize, Serialize};

/// The API version used when none is configured: the newest stable version when this
/// connector was written. Must be `2026-01` or later (see [`Settings::api_version`]).
pub const DEFAULT_API_VERSION: &str = "2026-10";

/// The oldest API version this connector speaks: `changeFromQuantity` and the
/// `@idempotent` directive on `inventorySetQuantities` exist from `2026-01` on.
pub const MIN_API_VERSION: &str = "2026-01";

/// How a full snapshot ([`omnisync_sdk::Connector::read_page`]) is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FullReadMode {
    /// One `bulkOperationRunQuery` (not counted against the cost bucket), polled until
    /// done; the JSONL result is downloaded once and handed out in pages.
    #[default]
    Bulk,
    /// Cursor-paged `productVariants` queries, each kept under the single-query cost
    /// limit and paced by the cost bucket. Slow for large shops; for tokens that may not
    /// run bulk operations.
    Paged,
}

/// Settings for a Shopify Admin GraphQL connector.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The shop's admin origin, e.g. `https://example.myshopify.com` (or a simulator's
    /// `http://127.0.0.1:PORT`). Requests go to
    /// `{base_url}/admin/api/{api_version}/graphql.json`.
    pub base_url: String,
    /// The Admin API access token sent as `X-Shopify-Access-Token`, by reference
    /// (`env:…`, `file:…`, `credential:…`).
    pub access_token: SecretRef,
    /// The app's client secret, by reference, used to verify incoming webhooks
    /// (`X-Shopify-Hmac-Sha256` = base64 HMAC-SHA256 of the raw body under this secret).
    /// Without it the connector accepts no webhooks. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<SecretRef>,
    /// Admin API version, `YYYY-MM` (or `unstable`). Default [`DEFAULT_API_VERSION`];
    /// at least [`MIN_API_VERSION`].
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// The shop's currency: prices are read and written in it, and the healthcheck refuses
    /// a shop whose `currencyCode` differs. Default `NOK`.
    #[serde(default = "default_currency")]
    pub currency: Currency,
    /// How full snapshots are read. Default `bulk`.
    #[serde(default)]
    pub full_read: FullReadMode,
    /// Records per [`omnisync_sdk::Page`]. In `paged` mode it is further capped so that one
    /// query stays under [`Settings::max_query_cost`]. Default 250.
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// `inventoryLevels(first:)` asked per variant in paged queries and `read_skus`: at
    /// least the number of locations the shop stocks at. Default 10.
    #[serde(default = "default_levels")]
    pub inventory_levels_per_variant: usize,
    /// Most elements in one input array (`quantities`, `variants`). Shopify documents 250.
    #[serde(default = "default_max_input_array")]
    pub max_input_array: usize,
    /// Most aliased `productVariantsBulkUpdate` mutations (one per product) in one request.
    /// Each costs 10 points. Default 25.
    #[serde(default = "default_price_mutations")]
    pub price_mutations_per_request: usize,
    /// The single-query cost limit (Shopify documents 1000).
    #[serde(default = "default_max_query_cost")]
    pub max_query_cost: u32,
    /// The `reason` sent with `inventorySetQuantities`. Default `correction` (Shopify's own
    /// examples use it; the full list of allowed reasons is not confirmed).
    #[serde(default = "default_reason")]
    pub inventory_reason: String,
    /// Prefix of the `referenceDocumentUri` sent with stock writes; the request's
    /// idempotency key is appended. Default `gid://omnisync/Push`.
    #[serde(default = "default_reference_prefix")]
    pub reference_document_prefix: String,
    /// Total timeout of one API request, in seconds. Default 30.
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
    /// Request budget: requests per second (the cost bucket is paced separately).
    /// Default 10.
    #[serde(default = "default_rps")]
    pub requests_per_second: u32,
    /// Request budget: burst. Default 20.
    #[serde(default = "default_burst")]
    pub request_burst: u32,
    /// How often a running bulk operation is polled, in milliseconds. Default 1000.
    #[serde(default = "default_poll_ms")]
    pub bulk_poll_interval_ms: u64,
    /// How long a bulk operation may run before the read gives up, in seconds.
    /// Default 3600.
    #[serde(default = "default_bulk_timeout")]
    pub bulk_timeout_secs: u64,
    /// Timeout for downloading the bulk result file, in seconds. Default 600.
    #[serde(default = "default_download_timeout")]
    pub bulk_download_timeout_secs: u64,
    /// The longest the connector waits for the cost bucket to refill before a request;
    /// beyond that it answers `Throttled` with the wait as `retry_after`. Default 30.
    #[serde(default = "default_cost_wait")]
    pub max_cost_wait_secs: u64,
    /// The share of the cost bucket, in percent, that price writes leave for stock writes
    /// and reads: a price write waits until the bucket holds its cost plus this share,
    /// while a stock write may take the bucket down to zero. With the daemon pushing
    /// stock in a lane of its own, a sale elsewhere reaches the shop at once even while a
    /// repricing drains the bucket. Default 10; at most 90.
    #[serde(default = "default_stock_reserve")]
    pub stock_reserve_percent: u8,
    /// While the cost bucket is below half full, stock corrections collect this long, in
    /// milliseconds, before the next `inventorySetQuantities` call: a call costs about 12
    /// points whether it carries one quantity or 250, so fuller calls leave the bucket to
    /// price writes. With the bucket above half, stock goes at once. Default 50; 0 never
    /// waits.
    #[serde(default = "default_stock_window")]
    pub stock_window_ms: u64,
}

fn default_api_version() -> String {
    DEFAULT_API_VERSION.to_string()
}
fn default_currency() -> Currency {
    Currency::NOK
}
fn default_page_size() -> usize {
    250
}
fn default_levels() -> usize {
    10
}
fn default_max_input_array() -> usize {
    250
}
fn default_price_mutations() -> usize {
    25
}
fn default_max_query_cost() -> u32 {
    1000
}
fn default_reason() -> String {
    "correction".to_string()
}
fn default_reference_prefix() -> String {
    "gid://omnisync/Push".to_string()
}
fn default_timeout() -> u64 {
    30
}
fn default_rps() -> u32 {
    10
}
fn default_burst() -> u32 {
    20
}
fn default_poll_ms() -> u64 {
    1000
}
fn default_bulk_timeout() -> u64 {
    3600
}
fn default_download_timeout() -> u64 {
    600
}
fn default_cost_wait() -> u64 {
    30
}
fn default_stock_reserve() -> u8 {
    10
}
fn default_stock_window() -> u64 {
    50
}

impl Settings {
    /// Settings with every default, for `base_url` and `access_token`.
    pub fn new(base_url: impl Into<String>, access_token: SecretRef) -> Self {
        Settings {
            base_url: base_url.into(),
            access_token,
            webhook_secret: None,
            api_version: default_api_version(),
            currency: default_currency(),
            full_read: FullReadMode::default(),
            page_size: default_page_size(),
            inventory_levels_per_variant: default_levels(),
            max_input_array: default_max_input_array(),
            price_mutations_per_request: default_price_mutations(),
            max_query_cost: default_max_query_cost(),
            inventory_reason: default_reason(),
            reference_document_prefix: default_reference_prefix(),
            request_timeout_secs: default_timeout(),
            requests_per_second: default_rps(),
            request_burst: default_burst(),
            bulk_poll_interval_ms: default_poll_ms(),
            bulk_timeout_secs: default_bulk_timeout(),
            bulk_download_timeout_secs: default_download_timeout(),
            max_cost_wait_secs: default_cost_wait(),
            stock_reserve_percent: default_stock_reserve(),
            stock_window_ms: default_stock_window(),
        }
    }

    /// Checks values that would make every call fail, naming the key.
    pub fn validate(&self) -> Result<(), ConnectorError> {
        let bad = |key: &str, why: &str| {
            Err(ConnectorError::config(
                "validating shopify settings",
                format!("{key}: {why}"),
            ))
        };
        let base = self.base_url.trim_end_matches('/');
        match reqwest::Url::parse(base) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => {
                return bad(
                    "base_url",
                    "expected an http(s) origin such as https://shop.myshopify.com",
                );
            }
        }
        if !api_version_supported(&self.api_version) {
            return bad(
                "api_version",
                &format!(
                    "{:?} is not a supported version: expected YYYY-MM no older than {MIN_API_VERSION}, or \"unstable\"",
                    self.api_version
                ),
            );
        }
        if self.page_size == 0 {
            return bad("page_size", "must be at least 1");
        }
        if self.inventory_levels_per_variant == 0 || self.inventory_levels_per_variant > 250 {
            return bad("inventory_levels_per_variant", "must be between 1 and 250");
        }
        if self.max_input_array == 0 || self.max_input_array > 250 {
            return bad("max_input_array", "must be between 1 and 250");
        }
        if self.price_mutations_per_request == 0 {
            return bad("price_mutations_per_request", "must be at least 1");
        }
        if self.max_query_cost < 20 {
            return bad("max_query_cost", "must be at least 20");
        }
        // The smallest paged query (one variant) must fit the single-query limit.
        if crate::mapping::variant_cost(self.inventory_levels_per_variant) + 2 > self.max_query_cost
        {
            return bad(
                "inventory_levels_per_variant",
                "too large: one variant's query cost exceeds max_query_cost",
            );
        }
        if self.inventory_reason.trim().is_empty() {
            return bad("inventory_reason", "must not be empty");
        }
        if !self.reference_document_prefix.contains("://") {
            return bad(
                "reference_document_prefix",
                "must be a URI such as gid://omnisync/Push",
            );
        }
        if self.request_timeout_secs == 0 {
            return bad("request_timeout_secs", "must be at least 1");
        }
        if self.stock_window_ms > 10_000 {
            return bad(
                "stock_window_ms",
                "must be at most 10000: stock must reach the shop soon after a sale",
            );
        }
        if self.stock_reserve_percent > 90 {
            return bad(
                "stock_reserve_percent",
                "must be at most 90: price writes need part of the bucket too",
            );
        }
        Ok(())
    }

    /// `{base_url}/admin/api/{api_version}/graphql.json`.
    pub fn endpoint(&self) -> String {
        format!(
            "{}{}",
            self.base_url.trim_end_matches('/'),
            self.endpoint_path()
        )
    }

    /// `/admin/api/{api_version}/graphql.json`, as named in error messages.
    pub fn endpoint_path(&self) -> String {
        format!("/admin/api/{}/graphql.json", self.api_version)
    }
}

/// Whether `version` is `unstable` or a `YYYY-MM` no older than [`MIN_API_VERSION`].
pub fn api_version_supported(version: &str) -> bool {
    version == "unstable" || (is_year_month(version) && version >= MIN_API_VERSION)
}

/// Whether `version` requires `changeFromQuantity` on every quantity and the `@idempotent`
/// directive on inventory mutations (2026-04 and later, and `unstable`).
pub fn idempotency_mandatory(version: &str) -> bool {
    version == "unstable" || (is_year_month(version) && version >= "2026-04")
}

fn is_year_month(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 7
        && b[4] == b'-'
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[5..].iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::new(
            "https://shop.example",
            "literal:tok".parse().expect("secret ref"),
        )
    }

    #[test]
    fn defaults_validate() {
        assert!(settings().validate().is_ok());
        assert_eq!(
            settings().endpoint(),
            "https://shop.example/admin/api/2026-10/graphql.json"
        );
    }

    #[test]
    fn refuses_old_versions_and_bad_urls() {
        let mut s = settings();
        s.api_version = "2025-10".into();
        let e = s.validate().unwrap_err();
        assert!(e.to_string().contains("api_version"));
        s.api_version = "unstable".into();
        assert!(s.validate().is_ok());
        s.base_url = "shop.example".into();
        assert!(s.validate().unwrap_err().to_string().contains("base_url"));
    }

    #[test]
    fn deserializes_with_defaults_and_refuses_unknown_keys() {
        let s: Settings = serde_json::from_value(serde_json::json!({
            "base_url": "https://x.myshopify.com",
            "access_token": "env:SHOPIFY_TOKEN",
            "currency": "SEK",
            "full_read": "paged",
        }))
        .expect("settings");
        assert_eq!(s.currency, Currency::SEK);
        assert_eq!(s.full_read, FullReadMode::Paged);
        assert_eq!(s.page_size, 250);
        assert!(s.webhook_secret.is_none());
        let s: Settings = serde_json::from_value(serde_json::json!({
            "base_url": "https://x.myshopify.com",
            "access_token": "env:SHOPIFY_TOKEN",
            "webhook_secret": "credential:shopify-webhook-secret",
        }))
        .expect("settings");
        assert_eq!(
            s.webhook_secret
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some("credential:shopify-webhook-secret")
        );
        let back = serde_json::to_value(&s).expect("serializes");
        assert_eq!(back["webhook_secret"], "credential:shopify-webhook-secret");
        assert!(
            serde_json::from_value::<Settings>(serde_json::json!({
                "base_url": "https://x.myshopify.com",
                "access_token": "env:T",
                "colour": "blue",
            }))
            .is_err()
        );
    }

    #[test]
    fn version_rules() {
        assert!(!idempotency_mandatory("2026-01"));
        assert!(idempotency_mandatory("2026-04"));
        assert!(idempotency_mandatory("2026-10"));
        assert!(idempotency_mandatory("unstable"));
        assert!(!api_version_supported("2026-1"));
    }
}

//! Configuration of one Meta catalog connector instance.
//!
//! Every field is documented because the daemon's config file exposes them as they are
//! (`[connectors.<id>.settings]` → [`Settings`]). Facts about the Graph API that are not
//! confirmed in Meta's documentation (the throttling codes that apply to catalogs, how long a
//! batch takes, what to send when creating an item) are settings with documented defaults.

use std::collections::BTreeMap;

use omnisync_sdk::{Currency, SecretRef};
use serde::{Deserialize, Serialize};

/// Settings of the Meta catalog connector.
///
/// ```toml
/// catalog_id = "1234567890"
/// access_token = "credential:meta-system-user-token"
/// currency = "NOK"
/// [create_fields]
/// condition = "new"
/// brand = "Example"
/// link = "https://shop.example.com/p/{sku}"
/// image_link = "https://shop.example.com/img/{sku}.jpg"
/// description = "See the shop for details."
/// ```
///
/// It also serializes (secrets as their references), so a demo can write a config file
/// from [`crate::sim::SimOptions::settings`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Root URL of the Graph API, without the version: `https://graph.facebook.com` or, for
    /// the simulator, `http://127.0.0.1:PORT`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The Graph API version path segment, e.g. `v25.0`. Every call goes to
    /// `{base_url}/{graph_version}/…`.
    #[serde(default = "default_graph_version")]
    pub graph_version: String,
    /// The product catalog id (numeric string from Commerce Manager).
    pub catalog_id: String,
    /// A system-user (or page) access token with the `catalog_management` permission, by
    /// reference (`env:…`, `file:…`, `credential:…`). Sent as `Authorization: Bearer`, never
    /// in the URL.
    pub access_token: SecretRef,
    /// The app secret, by reference. When set, every call carries `appsecret_proof` (hex
    /// HMAC-SHA256 of the token keyed by the secret, for apps with "Require App Secret"), and
    /// the connector accepts webhooks: their `X-Hub-Signature-256` is checked with it.
    /// Without it the connector accepts no webhooks. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_secret: Option<SecretRef>,
    /// The Verify Token set in the App Dashboard's Webhooks product, by reference: the
    /// subscription handshake (`hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`) is
    /// answered only when it matches. Default: none (every handshake is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_verify_token: Option<SecretRef>,
    /// The webhook change `field` that announces product item changes, whose `value` names
    /// `retailer_id` (or `retailer_ids`) and/or `product_id`. Meta does not document a
    /// catalog product webhook: the name (default `product_items`) and shape are assumptions
    /// to adjust to what the app actually receives.
    #[serde(default = "default_product_field")]
    pub webhook_product_field: String,
    /// The webhook change `field` that announces an order, whose `value.items` carry
    /// `retailer_id` and `quantity`. Unconfirmed like [`Settings::webhook_product_field`];
    /// default `orders`.
    #[serde(default = "default_order_field")]
    pub webhook_order_field: String,
    /// The catalog's currency (ISO 4217). Prices are written in it, and a product read in
    /// another currency is reported without an offer (and a warning).
    #[serde(default = "default_currency")]
    pub currency: Currency,
    /// Products per page of a full read (`limit` of `GET /{catalog_id}/products`). Larger
    /// pages spend less of the `catalog_management` call budget; Graph caps a `limit` above
    /// its maximum (which is not documented for this edge).
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// The most SKUs read back in one `read_skus` call (one `retailer_id` `is_any` filter;
    /// they travel in the query string, so keep it moderate).
    #[serde(default = "default_read_batch")]
    pub read_batch: usize,
    /// The most requests sent in one `items_batch` call. Meta's limit is 5000 per call and it
    /// recommends fewer than 3000.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// `allow_upsert` sent with every `items_batch` call: whether an UPDATE of an item the
    /// catalog does not hold creates it (Meta's default is `true`).
    #[serde(default = "default_true")]
    pub allow_upsert: bool,
    /// The `method` used for a create (`CREATE`, or `UPDATE` relying on `allow_upsert`).
    #[serde(default = "default_create_method")]
    pub create_method: CreateMethod,
    /// Extra fields sent with every create, such as `condition`, `brand`, `link`,
    /// `image_link` and `description`, which Meta requires for a new item but omnisync does
    /// not know. `{sku}` in a value is replaced by the retailer id. Default:
    /// `condition = "new"`.
    #[serde(default = "default_create_fields")]
    pub create_fields: BTreeMap<String, String>,
    /// What is sent as `sale_price` to end a sale (an offer without a sale price). Meta's
    /// batch documentation does not say how a field is cleared; the feed convention is an
    /// empty value (unconfirmed for `items_batch`).
    #[serde(default)]
    pub no_sale_price_value: String,
    /// How long to wait between two `check_batch_request_status` polls, in milliseconds.
    #[serde(default = "default_poll_interval_ms")]
    pub batch_poll_interval_ms: u64,
    /// How long a push waits for Meta to finish a batch, in seconds. When it runs out the push
    /// fails as transient (the batch may still be applied; a retry writes the same values).
    #[serde(default = "default_poll_timeout_secs")]
    pub batch_poll_timeout_secs: u64,
    /// Graph error codes that mean "throttled" (answered as
    /// [`omnisync_sdk::ErrorKind::Throttled`]). Default: 4, 17, 32, 341, 613 and the
    /// Business Use Case codes 80000–80014 (catalog batch is documented as 80014, catalog
    /// management as 80009; which of the others can reach a catalog is unconfirmed).
    #[serde(default = "default_throttle_codes")]
    pub throttle_codes: Vec<i64>,
    /// The Business Use Case usage (percent, as Meta reports it in
    /// `X-Business-Use-Case-Usage`) from which pushes are paced: from here to 100 % the
    /// connector asks the pusher to gather corrections for longer before its next call,
    /// growing linearly from 0 to [`Settings::pacing_max_window_ms`], so the hourly
    /// `items_batch` budget is not used up. 0–100; 100 paces only once the budget is used
    /// up. Default 50.
    #[serde(default = "default_pacing_from_percent")]
    pub pacing_from_percent: u32,
    /// The longest wait between two calls that pacing asks for below 100 % usage, in
    /// milliseconds (at most 3,600,000). From 100 % usage, or while Meta reports an
    /// `estimated_time_to_regain_access`, the wait is that time when it is longer. 0 paces
    /// only by the regain time. Default 120000 (at 60000 a cold start at a steady 100 changes/s can touch 100 % once).
    #[serde(default = "default_pacing_max_window_ms")]
    pub pacing_max_window_ms: u64,
    /// Total timeout of one HTTP request, in seconds.
    #[serde(default = "default_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Request budget: requests per second.
    #[serde(default = "default_requests_per_second")]
    pub requests_per_second: u32,
    /// Request budget: burst size.
    #[serde(default = "default_burst")]
    pub burst: u32,
}

/// The batch `method` used for creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CreateMethod {
    /// `CREATE`.
    Create,
    /// `UPDATE` (creates the item when `allow_upsert` is on).
    Update,
}

impl CreateMethod {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            CreateMethod::Create => "CREATE",
            CreateMethod::Update => "UPDATE",
        }
    }
}

/// The Graph API host.
pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com";
/// The Graph API version the connector was written against.
pub const DEFAULT_GRAPH_VERSION: &str = "v25.0";
/// Meta's hard limit of requests in one `items_batch` call.
pub const MAX_BATCH_LIMIT: usize = 5000;
/// The largest [`Settings::pacing_max_window_ms`] accepted (one hour, Meta's usage window).
pub const MAX_PACING_WINDOW_MS: u64 = 3_600_000;

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_string()
}
fn default_graph_version() -> String {
    DEFAULT_GRAPH_VERSION.to_string()
}
fn default_currency() -> Currency {
    Currency::SEK
}
fn default_page_size() -> usize {
    500
}
fn default_read_batch() -> usize {
    100
}
fn default_batch_size() -> usize {
    3000
}
fn default_true() -> bool {
    true
}
fn default_create_method() -> CreateMethod {
    CreateMethod::Create
}
fn default_create_fields() -> BTreeMap<String, String> {
    BTreeMap::from([("condition".to_string(), "new".to_string())])
}
fn default_product_field() -> String {
    crate::webhook::DEFAULT_PRODUCT_FIELD.to_string()
}
fn default_order_field() -> String {
    crate::webhook::DEFAULT_ORDER_FIELD.to_string()
}
fn default_poll_interval_ms() -> u64 {
    1000
}
fn default_poll_timeout_secs() -> u64 {
    300
}
/// The default throttling codes (see [`Settings::throttle_codes`]).
pub fn default_throttle_codes() -> Vec<i64> {
    let mut codes = vec![4, 17, 32, 341, 613];
    codes.extend(80000..=80014);
    codes
}
fn default_pacing_from_percent() -> u32 {
    50
}
fn default_pacing_max_window_ms() -> u64 {
    120_000
}
fn default_timeout_secs() -> u64 {
    30
}
fn default_requests_per_second() -> u32 {
    5
}
fn default_burst() -> u32 {
    10
}

impl Settings {
    /// Settings with every default, for this catalog and token.
    pub fn new(catalog_id: impl Into<String>, access_token: SecretRef) -> Self {
        Settings {
            base_url: default_base_url(),
            graph_version: default_graph_version(),
            catalog_id: catalog_id.into(),
            access_token,
            app_secret: None,
            webhook_verify_token: None,
            webhook_product_field: default_product_field(),
            webhook_order_field: default_order_field(),
            currency: default_currency(),
            page_size: default_page_size(),
            read_batch: default_read_batch(),
            batch_size: default_batch_size(),
            allow_upsert: true,
            create_method: default_create_method(),
            create_fields: default_create_fields(),
            no_sale_price_value: String::new(),
            batch_poll_interval_ms: default_poll_interval_ms(),
            batch_poll_timeout_secs: default_poll_timeout_secs(),
            throttle_codes: default_throttle_codes(),
            pacing_from_percent: default_pacing_from_percent(),
            pacing_max_window_ms: default_pacing_max_window_ms(),
            request_timeout_secs: default_timeout_secs(),
            requests_per_second: default_requests_per_second(),
            burst: default_burst(),
        }
    }

    /// Checks values that deserialize but make no sense. Returns the problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.catalog_id.trim().is_empty() || !self.catalog_id.chars().all(is_id_char) {
            return Err(format!(
                "catalog_id {:?} must be a non-empty id (letters, digits, '_' or '-')",
                self.catalog_id
            ));
        }
        if !self.graph_version.starts_with('v')
            || self.graph_version.len() < 2
            || !self.graph_version[1..]
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.')
        {
            return Err(format!(
                "graph_version {:?} must look like v25.0",
                self.graph_version
            ));
        }
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return Err(format!(
                "base_url {:?} must start with http:// or https://",
                self.base_url
            ));
        }
        if self.page_size == 0 || self.read_batch == 0 {
            return Err("page_size and read_batch must be at least 1".to_string());
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_LIMIT {
            return Err(format!(
                "batch_size {} must be between 1 and {MAX_BATCH_LIMIT} (Meta's items_batch limit)",
                self.batch_size
            ));
        }
        if self.pacing_from_percent > 100 {
            return Err(format!(
                "pacing_from_percent {} must be between 0 and 100 (a usage percentage)",
                self.pacing_from_percent
            ));
        }
        if self.pacing_max_window_ms > MAX_PACING_WINDOW_MS {
            return Err(format!(
                "pacing_max_window_ms {} must be at most {MAX_PACING_WINDOW_MS} (one hour)",
                self.pacing_max_window_ms
            ));
        }
        if self.request_timeout_secs == 0 {
            return Err("request_timeout_secs must be at least 1".to_string());
        }
        if self.webhook_product_field.trim().is_empty()
            || self.webhook_order_field.trim().is_empty()
        {
            return Err(
                "webhook_product_field and webhook_order_field must not be empty".to_string(),
            );
        }
        if self.webhook_product_field == self.webhook_order_field {
            return Err(format!(
                "webhook_product_field and webhook_order_field are both {:?}: they must differ",
                self.webhook_order_field
            ));
        }
        Ok(())
    }
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_settings_take_the_defaults() {
        let s: Settings = serde_json::from_value(serde_json::json!({
            "catalog_id": "123",
            "access_token": "env:META_TOKEN",
        }))
        .unwrap();
        assert_eq!(s.base_url, DEFAULT_BASE_URL);
        assert_eq!(s.graph_version, DEFAULT_GRAPH_VERSION);
        assert_eq!(s.currency, Currency::SEK);
        assert_eq!(s.batch_size, 3000);
        assert_eq!(s.create_method, CreateMethod::Create);
        assert!(s.throttle_codes.contains(&80014));
        assert!(s.app_secret.is_none() && s.webhook_verify_token.is_none());
        assert_eq!(s.webhook_product_field, "product_items");
        assert_eq!(s.webhook_order_field, "orders");
        assert_eq!(s.pacing_from_percent, 50);
        assert_eq!(s.pacing_max_window_ms, 120_000);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn serializes_to_what_it_reads() {
        let mut s = Settings::new("123", "literal:demo".parse().unwrap());
        s.create_method = CreateMethod::Update;
        let value = serde_json::to_value(&s).unwrap();
        assert_eq!(value["access_token"], "literal:demo");
        assert_eq!(value["create_method"], "UPDATE");
        assert_eq!(value["currency"], "SEK");
        assert!(value.get("app_secret").is_none());
        assert!(value.get("webhook_verify_token").is_none());
        let mut with = s.clone();
        with.app_secret = Some("credential:meta-app-secret".parse().unwrap());
        with.webhook_verify_token = Some("env:META_VERIFY_TOKEN".parse().unwrap());
        let v = serde_json::to_value(&with).unwrap();
        assert_eq!(v["app_secret"], "credential:meta-app-secret");
        assert_eq!(v["webhook_verify_token"], "env:META_VERIFY_TOKEN");
        let back: Settings = serde_json::from_value(v).unwrap();
        assert_eq!(back.webhook_verify_token, with.webhook_verify_token);
        let back: Settings = serde_json::from_value(value).unwrap();
        assert_eq!(back.create_method, CreateMethod::Update);
        assert_eq!(back.access_token, s.access_token);
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values() {
        let r = serde_json::from_value::<Settings>(serde_json::json!({
            "catalog_id": "123",
            "access_token": "env:T",
            "bogus": 1,
        }));
        assert!(r.is_err());
        let mut s = Settings::new("123", "literal:x".parse().unwrap());
        s.batch_size = 6000;
        assert!(s.validate().unwrap_err().contains("5000"));
        s.batch_size = 10;
        s.catalog_id = "12/../x".into();
        assert!(s.validate().is_err());
        s.catalog_id = "12".into();
        s.graph_version = "25".into();
        assert!(s.validate().is_err());
        s.graph_version = "v25.0".into();
        s.webhook_order_field = s.webhook_product_field.clone();
        assert!(s.validate().unwrap_err().contains("must differ"));
    }

    #[test]
    fn refuses_pacing_out_of_range() {
        let mut s = Settings::new("123", "literal:x".parse().unwrap());
        s.pacing_from_percent = 101;
        let e = s.validate().unwrap_err();
        assert!(
            e.contains("pacing_from_percent 101") && e.contains("0 and 100"),
            "{e}"
        );
        s.pacing_from_percent = 100;
        assert!(s.validate().is_ok());
        s.pacing_from_percent = 0;
        s.pacing_max_window_ms = 3_600_001;
        let e = s.validate().unwrap_err();
        assert!(
            e.contains("pacing_max_window_ms 3600001") && e.contains("3600000"),
            "{e}"
        );
        s.pacing_max_window_ms = 0;
        assert!(s.validate().is_ok());
        let r = serde_json::from_value::<Settings>(serde_json::json!({
            "catalog_id": "123",
            "access_token": "env:T",
            "pacing_from_percent": 75,
            "pacing_max_window_ms": 120000,
        }))
        .unwrap();
        assert_eq!(
            (r.pacing_from_percent, r.pacing_max_window_ms),
            (75, 120_000)
        );
    }
}

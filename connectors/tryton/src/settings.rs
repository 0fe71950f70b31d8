//! Configuration of one Tryton connector instance.
//!
//! Every field is documented because the daemon's config file exposes them as they are
//! (`[sources.erp]` → [`Settings`]). Facts about trytond that differ between versions or
//! installations (the RPC path, the price field) are settings with the trytond 8.0 defaults.

use std::time::Duration;

use omnisync_sdk::SecretRef;
use serde::{Deserialize, Serialize};

/// Settings of the Tryton connector.
///
/// ```toml
/// base_url = "https://erp.example.com"
/// database = "shop"
/// login = "omnisync"
/// password = "credential:tryton-password"
/// company = 1
/// locations = [3, 11]
/// currency = "NOK"
/// ```
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Root URL of the trytond web server, without the database: `https://erp.example.com`
    /// or, for the simulator, `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// The Tryton database name (the first path segment of every RPC URL).
    pub database: String,
    /// Path of the JSON-RPC endpoint below `/{database}/`. trytond 8.0 serves `rpc/`
    /// (`POST /{database}/rpc/`; `POST /{database}/` answers 405 there). Set `""` for servers
    /// that still answer on `/{database}/`.
    #[serde(default = "default_rpc_path")]
    pub rpc_path: String,
    /// The Tryton user to log in as (needs read access to products, stock locations and the
    /// company).
    pub login: String,
    /// That user's password, by reference (`env:…`, `file:…`, `credential:…`).
    pub password: SecretRef,
    /// Language sent with `common.db.login`.
    #[serde(default = "default_language")]
    pub language: String,
    /// The company id whose prices are read (`company` in every call's context; `list_price`
    /// is per company and reads as null without it).
    pub company: i64,
    /// The Tryton `stock.location` ids to report stock for, e.g. `[3, 11]` (storage or
    /// warehouse locations; a warehouse counts its storage children). Each becomes a stock
    /// location code: the id as a string (`"3"`). Empty: prices only, no stock.
    #[serde(default)]
    pub locations: Vec<i64>,
    /// The company currency (ISO 4217). Tryton prices carry no currency of their own; the
    /// healthcheck verifies this against the company's currency.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// The `product.product` field holding the price. `list_price` is the variant's own
    /// (company-dependent) list price and is null when the variant inherits the template's.
    #[serde(default = "default_price_field")]
    pub price_field: String,
    /// Field read when `price_field` is null. `list_price_used` is trytond's "price the
    /// variant is sold at" (the variant price, else the template price). `null` to disable.
    #[serde(default = "default_fallback_price_field")]
    pub fallback_price_field: Option<String>,
    /// Products per page of a full read (the `limit` of each `search_read`).
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// The most SKUs read back in one `read_skus` call (one `code in [...]` search).
    #[serde(default = "default_page_size")]
    pub read_batch: usize,
    /// Total timeout of one HTTP request, in seconds. trytond's own request timeout is 60 s.
    #[serde(default = "default_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Request budget: requests per second (Tryton has no rate limit; this protects the ERP).
    #[serde(default = "default_requests_per_second")]
    pub requests_per_second: u32,
    /// Request budget: burst size.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// How long to wait after trytond refuses a login with 429 (too many failed attempts).
    /// trytond sends no `Retry-After`; its attempt window is `[session] timeout` (300 s).
    #[serde(default = "default_login_retry_after_secs")]
    pub login_retry_after_secs: u64,
    /// Check in the healthcheck that the company's currency is `currency`.
    #[serde(default = "default_true")]
    pub verify_company_currency: bool,
}

impl Settings {
    /// Settings with every optional field at its default.
    pub fn new(
        base_url: impl Into<String>,
        database: impl Into<String>,
        login: impl Into<String>,
        password: SecretRef,
        company: i64,
        locations: Vec<i64>,
    ) -> Self {
        Settings {
            base_url: base_url.into(),
            database: database.into(),
            rpc_path: default_rpc_path(),
            login: login.into(),
            password,
            language: default_language(),
            company,
            locations,
            currency: default_currency(),
            price_field: default_price_field(),
            fallback_price_field: default_fallback_price_field(),
            page_size: default_page_size(),
            read_batch: default_page_size(),
            request_timeout_secs: default_timeout_secs(),
            requests_per_second: default_requests_per_second(),
            burst: default_burst(),
            login_retry_after_secs: default_login_retry_after_secs(),
            verify_company_currency: true,
        }
    }

    /// The request timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs.max(1))
    }

    /// The JSON-RPC endpoint URL: `{base_url}/{database}/{rpc_path}`.
    pub fn endpoint(&self) -> String {
        format!(
            "{}/{}/{}",
            self.base_url.trim_end_matches('/'),
            self.database,
            self.rpc_path.trim_start_matches('/')
        )
    }
}

fn default_rpc_path() -> String {
    "rpc/".to_string()
}
fn default_language() -> String {
    "en".to_string()
}
fn default_currency() -> String {
    "NOK".to_string()
}
fn default_price_field() -> String {
    "list_price".to_string()
}
fn default_fallback_price_field() -> Option<String> {
    Some("list_price_used".to_string())
}
fn default_page_size() -> usize {
    1000
}
fn default_timeout_secs() -> u64 {
    60
}
fn default_requests_per_second() -> u32 {
    20
}
fn default_burst() -> u32 {
    20
}
fn default_login_retry_after_secs() -> u64 {
    300
}
fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_endpoint() {
        let s: Settings = serde_json::from_value(serde_json::json!({
            "base_url": "http://127.0.0.1:8000/",
            "database": "shop",
            "login": "admin",
            "password": "literal:s3cret-pw",
            "company": 1,
            "locations": [3, 11],
        }))
        .unwrap();
        assert_eq!(s.endpoint(), "http://127.0.0.1:8000/shop/rpc/");
        assert_eq!(s.currency, "NOK");
        assert_eq!(s.price_field, "list_price");
        assert_eq!(s.fallback_price_field.as_deref(), Some("list_price_used"));
        assert_eq!(s.page_size, 1000);
        assert_eq!(s.read_batch, 1000);
        assert!(s.verify_company_currency);
        assert!(
            !format!("{s:?}").contains("s3cret"),
            "password must be redacted"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let r: Result<Settings, _> = serde_json::from_value(serde_json::json!({
            "base_url": "http://x", "database": "d", "login": "l", "password": "literal:p",
            "company": 1, "pasword": "typo",
        }));
        assert!(r.unwrap_err().to_string().contains("pasword"));
    }

    #[test]
    fn legacy_endpoint() {
        let mut s = Settings::new(
            "http://h",
            "db",
            "u",
            SecretRef::Literal("p".into()),
            1,
            vec![],
        );
        s.rpc_path = String::new();
        assert_eq!(s.endpoint(), "http://h/db/");
    }
}

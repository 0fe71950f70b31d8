//! Incoming webhooks: how a connector checks a delivery and says what it is about.
//!
//! The daemon's HTTP server hands every delivery for `/webhooks/{connector_id}` to that
//! connector's [`WebhookHandler`] in this order, and stores nothing before step 1 passes:
//!
//! 0. [`WebhookHandler::prepare`] (async, default: nothing) — I/O the check needs, such as
//!    fetching the public key a signature names (eBay).
//! 1. [`WebhookHandler::verify`] — the signature over the **raw body bytes**, in constant time
//!    (use [`hmac_sha256_verify`]). A missing or bad signature is [`WebhookError::Unauthorized`].
//! 2. [`WebhookHandler::event_id`] — the provider's id for the event (Shopify
//!    `X-Shopify-Event-Id`, …), the key the durable inbox dedupes on.
//! 3. [`WebhookHandler::parse`] — after the delivery is stored: the hints it carries. A body
//!    that does not parse is [`WebhookError::Malformed`]; it is kept as rejected with the reason.
//!
//! A webhook is a hint, never a blind overwrite: the daemon re-reads the SKUs it names
//! (or, for ids it cannot map yet, the whole channel on the next pass).

use std::collections::{BTreeMap, HashMap};

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Request headers, names lower-cased.
pub type Headers = BTreeMap<String, String>;

/// [`Headers`] from an HTTP header map: names lower-cased, values read as UTF-8 (lossily),
/// repeated headers joined with `, `.
pub fn headers_from(map: &HeaderMap) -> Headers {
    let mut out = Headers::new();
    for (name, value) in map {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_ascii_lowercase())
            .and_modify(|v: &mut String| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    out
}

/// A header by lower-case name (tolerating a map that kept the sender's case), trimmed;
/// `None` when it is absent or blank.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .or_else(|| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// Missing or wrong signature (answer 401, store nothing).
    #[error("signature check failed: {0}")]
    Unauthorized(String),
    /// Signed, but not a body we understand (answer 400, store as rejected).
    #[error("malformed delivery: {0}")]
    Malformed(String),
}

/// What a delivery says changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookHint {
    /// The provider's topic, e.g. `inventory_levels/update`.
    pub topic: String,
    /// SKUs the delivery names directly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skus: Vec<String>,
    /// Ids the delivery names instead of SKUs, as (`refs` key, value) pairs matching what the
    /// connector reports in `Record::refs` / `Record::external_id` (key `external_id`), e.g.
    /// `("inventory_item_id", "gid://shopify/InventoryItem/7")`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<(String, String)>,
    /// When the provider says the change happened (ms since the epoch), for ordering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at_ms: Option<i64>,
    /// An order: units sold per SKU (or per ref, resolved like `refs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sold: Vec<SoldLine>,
    /// Values the delivery says the channel shows now (Shopify's `inventory_levels/update`
    /// carries `available`). The daemon uses them to recognise its own writes coming back:
    /// an item whose every carried value equals what the daemon already holds as shown
    /// needs no read. Anything else is read as usual: a value carried here is never taken
    /// over blindly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shown: Vec<ShownValue>,
}

/// One value a delivery carries ([`WebhookHint::shown`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownValue {
    /// The SKU, when the delivery carries it.
    pub sku: Option<String>,
    /// Otherwise an id as (`refs` key, value), resolved like [`WebhookHint::refs`].
    pub reference: Option<(String, String)>,
    /// The value.
    pub value: Shown,
}

/// A value as a channel shows it, in the terms of [`crate::Record`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "field")]
pub enum Shown {
    /// Units available at one of the channel's locations (its location code).
    Stock {
        /// The location code, as in [`crate::Record::stock`].
        location: String,
        /// Units available.
        quantity: i64,
    },
    /// The price and sale price, as in [`crate::Record::offer`].
    Offer {
        /// The offer.
        offer: crate::Offer,
    },
}

/// One order line in an order webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoldLine {
    /// The SKU, when the order carries it.
    pub sku: Option<String>,
    /// Otherwise an id as (`refs` key, value).
    pub reference: Option<(String, String)>,
    /// Units sold.
    pub quantity: i64,
}

/// The future [`WebhookHandler::prepare`] returns.
pub type PrepareFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// A connector's webhook support.
pub trait WebhookHandler: Send + Sync {
    /// Asynchronous work [`WebhookHandler::verify`] depends on, awaited by the daemon just
    /// before it with the same headers: eBay fetches (and caches) the public key its
    /// `X-EBAY-SIGNATURE` names. Nothing is verified yet, so it must trust nothing in the
    /// headers beyond using them as a look-up key, and it reports nothing: `verify` refuses
    /// what it still cannot check. The default does nothing.
    fn prepare<'a>(&'a self, _headers: &'a Headers) -> PrepareFuture<'a> {
        Box::pin(std::future::ready(()))
    }

    /// Verifies the signature over the raw body. Must be constant time.
    fn verify(&self, headers: &Headers, body: &[u8]) -> Result<(), WebhookError>;

    /// The provider's event id for deduplication, if the delivery carries one.
    fn event_id(&self, headers: &Headers, body: &[u8]) -> Option<String>;

    /// What the (verified, stored) delivery is about.
    fn parse(&self, headers: &Headers, body: &[u8]) -> Result<Vec<WebhookHint>, WebhookError>;

    /// A subscription handshake answered on `GET /webhooks/{id}` (Meta's
    /// `hub.challenge`, …): `None` when this provider has none, otherwise the plain-text
    /// answer or the refusal.
    fn handshake(&self, _query: &HashMap<String, String>) -> Option<Result<String, WebhookError>> {
        None
    }
}

/// HMAC-SHA256 of `body` under `key`.
pub fn hmac_sha256(key: &[u8], body: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// Checks `expected` (the decoded signature from the request) against HMAC-SHA256 of `body`
/// under `key`, in constant time.
pub fn hmac_sha256_verify(key: &[u8], body: &[u8], expected: &[u8]) -> bool {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_lower_cased_and_joined() {
        let mut map = HeaderMap::new();
        map.insert("X-Shopify-Topic", "orders/create".parse().unwrap());
        map.append("Via", "a".parse().unwrap());
        map.append("Via", "b".parse().unwrap());
        let headers = headers_from(&map);
        assert_eq!(headers["x-shopify-topic"], "orders/create");
        assert_eq!(headers["via"], "a, b");
        let mut kept_case = Headers::new();
        kept_case.insert("X-Hub-Signature-256".into(), " sha256=ab ".into());
        kept_case.insert("x-blank".into(), "  ".into());
        assert_eq!(header(&kept_case, "x-hub-signature-256"), Some("sha256=ab"));
        assert_eq!(header(&kept_case, "x-blank"), None);
        assert_eq!(header(&headers, "x-missing"), None);
    }

    #[test]
    fn hmac_round_trip_and_refusal() {
        let sig = hmac_sha256(b"secret", b"{\"a\":1}");
        assert!(hmac_sha256_verify(b"secret", b"{\"a\":1}", &sig));
        assert!(!hmac_sha256_verify(b"secret", b"{\"a\":2}", &sig));
        assert!(!hmac_sha256_verify(b"other", b"{\"a\":1}", &sig));
        assert!(!hmac_sha256_verify(b"secret", b"{\"a\":1}", &sig[..31]));
        // RFC 4231 test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

//! The webhooks the simulated catalog sends, in the Graph webhook envelope.
//!
//! Confirmed by Meta's webhook documentation: the envelope `{"object", "entry": [{"id",
//! "time", "changes": [{"field", "value"}]}]}`, the `X-Hub-Signature-256: sha256=<hex>`
//! signature under the app secret, non-ASCII escaped as `\uXXXX` in the signed body, and the
//! `hub.mode=subscribe` / `hub.verify_token` / `hub.challenge` verification request (made here
//! before the first delivery to a subscriber).
//!
//! Unconfirmed (Meta documents no catalog product or order webhook): the object name
//! [`WEBHOOK_OBJECT`], the field names (settings, defaults `product_items` and `orders`)
//! and the values:
//!
//! - product change: `{"catalog_id", "retailer_id", "product_id", "verb":
//!   "create"|"update"|"delete", "changed_fields": […]}`;
//! - order: `{"order_id", "catalog_id", "created_time", "items": [{"retailer_id",
//!   "quantity"}]}`.
//!
//! A delivery holds at most [`super::SimOptions::webhook_max_changes`] changes (Meta batches
//! up to 1000 per notification; unconfirmed for these fields).

use std::time::{SystemTime, UNIX_EPOCH};

use omnisync_sdk::webhook::hmac_sha256;
use serde_json::{Value, json};

use omnisync_sdk::sim::delivery::{OutEvent, Provider};

/// The `object` of the simulator's webhooks (unconfirmed).
pub const WEBHOOK_OBJECT: &str = "product_catalog";

/// Signs deliveries and runs the verification handshake as Meta does. (No `Debug`: it
/// holds the secrets.)
pub struct MetaProvider {
    /// The app secret (the HMAC key).
    pub app_secret: String,
    /// The verify token sent in the handshake.
    pub verify_token: String,
}

impl Provider for MetaProvider {
    fn headers(&self, event: &OutEvent, _delivery_id: &str) -> Vec<(&'static str, String)> {
        let signature = hex::encode(hmac_sha256(self.app_secret.as_bytes(), &event.body));
        vec![("X-Hub-Signature-256", format!("sha256={signature}"))]
    }

    fn handshake(&self, challenge: &str) -> Option<Vec<(&'static str, String)>> {
        Some(vec![
            ("hub.mode", "subscribe".to_string()),
            ("hub.challenge", challenge.to_string()),
            ("hub.verify_token", self.verify_token.clone()),
        ])
    }
}

/// Unix seconds now.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// JSON with every non-ASCII character escaped as `\uXXXX` (lower-case hex), as Meta sends
/// and signs it. Non-ASCII only occurs inside strings in JSON, so this stays valid JSON.
fn ascii_json(v: &Value) -> Vec<u8> {
    let text = v.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out.into_bytes()
}

/// One delivery body: one entry for the catalog with `changes`.
pub(crate) fn envelope(catalog_id: &str, changes: Vec<Value>) -> Vec<u8> {
    ascii_json(&json!({
        "object": WEBHOOK_OBJECT,
        "entry": [{
            "id": catalog_id,
            "time": now_secs(),
            "changes": changes,
        }],
    }))
}

/// A product change.
pub(crate) fn product_change(
    field: &str,
    catalog_id: &str,
    retailer_id: &str,
    product_id: Option<u64>,
    verb: &str,
    changed_fields: &[&str],
) -> Value {
    let mut value = json!({
        "catalog_id": catalog_id,
        "retailer_id": retailer_id,
        "verb": verb,
        "changed_fields": changed_fields,
    });
    if let Some(id) = product_id {
        value["product_id"] = json!(id.to_string());
    }
    json!({ "field": field, "value": value })
}

/// An order of one line.
pub(crate) fn order(
    field: &str,
    catalog_id: &str,
    order_id: u64,
    retailer_id: &str,
    quantity: i64,
) -> Value {
    json!({
        "field": field,
        "value": {
            "order_id": order_id.to_string(),
            "catalog_id": catalog_id,
            "created_time": now_secs(),
            "items": [{ "retailer_id": retailer_id, "quantity": quantity }],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_ascii_and_still_json() {
        let body = envelope(
            "1",
            vec![product_change(
                "product_items",
                "1",
                "SKU-ø😀",
                Some(7),
                "update",
                &["price"],
            )],
        );
        assert!(body.is_ascii());
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(
            text.contains("\\u00f8") && text.contains("\\ud83d\\ude00"),
            "{text}"
        );
        let back: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            back["entry"][0]["changes"][0]["value"]["retailer_id"],
            "SKU-ø😀"
        );
        assert_eq!(back["entry"][0]["changes"][0]["value"]["product_id"], "7");
    }
}

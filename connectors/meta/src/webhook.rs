//! Incoming Meta (Graph API) webhooks: [`MetaWebhooks`] implements
//! [`omnisync_sdk::webhook::WebhookHandler`].
//!
//! Confirmed (Graph API webhooks, "Getting started"):
//!
//! - **Signature**: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(key = app secret, raw
//!   body)>`, checked in constant time ([`Settings::app_secret`](crate::Settings::app_secret)).
//!   Meta signs the body it sends, which escapes non-ASCII characters as `\uXXXX`: the check
//!   is over the raw bytes, never over re-encoded JSON.
//! - **Handshake**: `GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`; the
//!   answer is the challenge when the token matches
//!   [`Settings::webhook_verify_token`](crate::Settings::webhook_verify_token).
//! - **Shape**: `{"object": …, "entry": [{"id": …, "time": <unix s>, "changes": [{"field":
//!   …, "value": {…}}]}]}`; one delivery may batch several entries and changes.
//!
//! **Event id.** Graph deliveries carry no event or delivery id (no header, and `entry.id` +
//! `time` is not unique: several changes to one catalog share a second and a batch holds
//! several of them). The id is therefore `sha256:<hex SHA-256 of the raw body>`: Meta's
//! retries resend the same payload and dedupe to the same id, while a new change produces
//! a new body. Two identical changes batched into identical bodies within the same second
//! collapse into one hint, which is harmless: a hint only makes the daemon re-read.
//!
//! **Unconfirmed.** Meta does not document catalog or order webhook fields for a product
//! catalog (commerce orders are documented as pulled). The field names are therefore
//! settings ([`Settings::webhook_product_field`](crate::Settings::webhook_product_field),
//! [`Settings::webhook_order_field`](crate::Settings::webhook_order_field)), and the values
//! are read tolerantly:
//!
//! | field | value read | hint |
//! |---|---|---|
//! | product field (default `product_items`) | `retailer_id` (string) or `retailer_ids` (array), `product_id` | SKUs = retailer ids; ref `product_id` |
//! | order field (default `orders`) | `items` (or WhatsApp-style `product_items`) with `retailer_id` (or `product_retailer_id`) and `quantity` | `sold` lines and their SKUs |
//! | any other field | — | a hint naming the field |
//!
//! `occurred_at_ms` is the entry's `time` (seconds, or milliseconds when the value is that
//! large).

use std::collections::HashMap;
use std::fmt;

use omnisync_sdk::secret::{ExposeSecret, SecretString};
use omnisync_sdk::webhook::{
    Headers, SoldLine, WebhookError, WebhookHandler, WebhookHint, header, hmac_sha256,
    hmac_sha256_verify,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::adapter::REF_PRODUCT_ID;

/// The signature header (lower-cased, as [`Headers`] holds names).
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// The default name of the (unconfirmed) product change field.
pub const DEFAULT_PRODUCT_FIELD: &str = "product_items";
/// The default name of the (unconfirmed) order field.
pub const DEFAULT_ORDER_FIELD: &str = "orders";

/// Verifies and reads Meta webhooks for one app.
pub struct MetaWebhooks {
    app_secret: SecretString,
    verify_token: Option<SecretString>,
    product_field: String,
    order_field: String,
}

impl fmt::Debug for MetaWebhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaWebhooks")
            .field("product_field", &self.product_field)
            .field("order_field", &self.order_field)
            .field("verify_token", &self.verify_token.is_some())
            .finish_non_exhaustive()
    }
}

impl MetaWebhooks {
    /// A handler: signatures are checked with the app secret, the handshake with the verify
    /// token (refused when there is none), and changes are read by field name.
    pub fn new(
        app_secret: SecretString,
        verify_token: Option<SecretString>,
        product_field: impl Into<String>,
        order_field: impl Into<String>,
    ) -> Self {
        MetaWebhooks {
            app_secret,
            verify_token,
            product_field: product_field.into(),
            order_field: order_field.into(),
        }
    }
}

/// Equality of two secrets in time independent of where they differ.
fn same_secret(expected: &str, given: &str) -> bool {
    const CONTEXT: &[u8] = b"omnisync webhook verify token";
    hmac_sha256_verify(
        given.as_bytes(),
        CONTEXT,
        &hmac_sha256(expected.as_bytes(), CONTEXT),
    )
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn push_unique(list: &mut Vec<String>, s: String) {
    if !list.contains(&s) {
        list.push(s);
    }
}

fn malformed(at: &str, why: impl fmt::Display) -> WebhookError {
    WebhookError::Malformed(format!("{at}: {why}"))
}

fn product_change(at: &str, value: &Value, hint: &mut WebhookHint) -> Result<(), WebhookError> {
    if let Some(rid) = value.get("retailer_id").and_then(id_text) {
        push_unique(&mut hint.skus, rid);
    }
    match value.get("retailer_ids") {
        None | Some(Value::Null) => {}
        Some(Value::Array(ids)) => {
            for rid in ids.iter().filter_map(id_text) {
                push_unique(&mut hint.skus, rid);
            }
        }
        Some(_) => return Err(malformed(at, "retailer_ids is not an array")),
    }
    if let Some(id) = value.get("product_id").and_then(id_text) {
        hint.refs.push((REF_PRODUCT_ID.to_string(), id));
    }
    if hint.skus.is_empty() && hint.refs.is_empty() {
        return Err(malformed(
            at,
            "names no retailer_id, retailer_ids or product_id",
        ));
    }
    Ok(())
}

fn order(at: &str, value: &Value, hint: &mut WebhookHint) -> Result<(), WebhookError> {
    let items = match value.get("items").or_else(|| value.get("product_items")) {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => return Err(malformed(at, "order without items")),
        Some(_) => return Err(malformed(at, "items is not an array")),
    };
    for (i, item) in items.iter().enumerate() {
        let quantity = item
            .get("quantity")
            .and_then(|q| q.as_i64().or_else(|| q.as_str()?.trim().parse().ok()))
            .ok_or_else(|| malformed(at, format_args!("items[{i}] has no quantity")))?;
        let rid = item
            .get("retailer_id")
            .or_else(|| item.get("product_retailer_id"))
            .and_then(id_text);
        let reference = match rid {
            Some(_) => None,
            None => item
                .get("product_id")
                .and_then(id_text)
                .map(|id| (REF_PRODUCT_ID.to_string(), id)),
        };
        if rid.is_none() && reference.is_none() {
            return Err(malformed(
                at,
                format_args!("items[{i}] names no retailer_id or product_id"),
            ));
        }
        if let Some(rid) = &rid {
            push_unique(&mut hint.skus, rid.clone());
        }
        hint.sold.push(SoldLine {
            sku: rid,
            reference,
            quantity,
        });
    }
    Ok(())
}

impl WebhookHandler for MetaWebhooks {
    fn verify(&self, headers: &Headers, body: &[u8]) -> Result<(), WebhookError> {
        let signature = header(headers, SIGNATURE_HEADER).ok_or_else(|| {
            WebhookError::Unauthorized("missing X-Hub-Signature-256 header".to_string())
        })?;
        let hex_part = signature
            .strip_prefix("sha256=")
            .or_else(|| signature.strip_prefix("SHA256="))
            .ok_or_else(|| {
                WebhookError::Unauthorized(
                    "X-Hub-Signature-256 does not start with sha256=".to_string(),
                )
            })?;
        let expected = hex::decode(hex_part).map_err(|_| {
            WebhookError::Unauthorized("X-Hub-Signature-256 is not hex".to_string())
        })?;
        if hmac_sha256_verify(self.app_secret.expose_secret().as_bytes(), body, &expected) {
            Ok(())
        } else {
            Err(WebhookError::Unauthorized(
                "X-Hub-Signature-256 does not match the body (wrong app_secret, or the body was altered)"
                    .to_string(),
            ))
        }
    }

    fn event_id(&self, _headers: &Headers, body: &[u8]) -> Option<String> {
        Some(format!("sha256:{}", hex::encode(Sha256::digest(body))))
    }

    fn parse(&self, _headers: &Headers, body: &[u8]) -> Result<Vec<WebhookHint>, WebhookError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| WebhookError::Malformed(format!("body is not JSON: {e}")))?;
        let Some(root) = value.as_object() else {
            return Err(WebhookError::Malformed(
                "body is not a JSON object".to_string(),
            ));
        };
        let object = root
            .get("object")
            .and_then(Value::as_str)
            .unwrap_or("meta")
            .to_string();
        let entries = match root.get("entry") {
            Some(Value::Array(entries)) => entries,
            Some(_) => return Err(WebhookError::Malformed("entry is not an array".into())),
            None => return Err(WebhookError::Malformed("no entry array".into())),
        };
        let mut hints = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let time_ms = entry.get("time").and_then(Value::as_i64).map(|t| {
                if t > 100_000_000_000 {
                    t
                } else {
                    t.saturating_mul(1000)
                }
            });
            let changes = match entry.get("changes") {
                // Entries of other products (messaging, …) carry no changes.
                None | Some(Value::Null) => continue,
                Some(Value::Array(changes)) => changes,
                Some(_) => {
                    return Err(malformed(&format!("entry[{i}]"), "changes is not an array"));
                }
            };
            for (j, change) in changes.iter().enumerate() {
                let at = format!("entry[{i}].changes[{j}]");
                let field = change
                    .get("field")
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|f| !f.is_empty())
                    .ok_or_else(|| malformed(&at, "no field"))?;
                let mut hint = WebhookHint {
                    topic: field.to_string(),
                    occurred_at_ms: time_ms,
                    ..WebhookHint::default()
                };
                let value = change.get("value").unwrap_or(&Value::Null);
                if field == self.product_field {
                    product_change(&at, value, &mut hint)?;
                } else if field == self.order_field {
                    order(&at, value, &mut hint)?;
                }
                hints.push(hint);
            }
        }
        if hints.is_empty() {
            hints.push(WebhookHint {
                topic: object,
                ..WebhookHint::default()
            });
        }
        Ok(hints)
    }

    fn handshake(&self, query: &HashMap<String, String>) -> Option<Result<String, WebhookError>> {
        let get = |key: &str| {
            query
                .get(key)
                .or_else(|| query.get(&key.replace('.', "_")))
                .map(String::as_str)
        };
        Some((|| {
            if get("hub.mode") != Some("subscribe") {
                return Err(WebhookError::Unauthorized(
                    "hub.mode is not subscribe".to_string(),
                ));
            }
            let Some(expected) = &self.verify_token else {
                return Err(WebhookError::Unauthorized(
                    "no webhook_verify_token is configured for this connector".to_string(),
                ));
            };
            let given = get("hub.verify_token").unwrap_or_default();
            if !same_secret(expected.expose_secret(), given) {
                return Err(WebhookError::Unauthorized(
                    "hub.verify_token does not match".to_string(),
                ));
            }
            match get("hub.challenge") {
                Some(c)
                    if !c.is_empty()
                        && c.len() <= 256
                        && c.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
                {
                    Ok(c.to_string())
                }
                _ => Err(WebhookError::Malformed(
                    "hub.challenge is missing or not a plain token".to_string(),
                )),
            }
        })())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "meta-test-app-secret";

    fn handler() -> MetaWebhooks {
        MetaWebhooks::new(
            SecretString::from(SECRET.to_string()),
            Some(SecretString::from("verify-me".to_string())),
            DEFAULT_PRODUCT_FIELD,
            DEFAULT_ORDER_FIELD,
        )
    }

    fn signed(body: &str) -> Headers {
        let mut h = Headers::new();
        h.insert(
            SIGNATURE_HEADER.into(),
            format!(
                "sha256={}",
                hex::encode(hmac_sha256(SECRET.as_bytes(), body.as_bytes()))
            ),
        );
        h
    }

    fn parse(body: &str) -> Vec<WebhookHint> {
        let h = signed(body);
        handler().verify(&h, body.as_bytes()).expect("verifies");
        handler().parse(&h, body.as_bytes()).expect("parses")
    }

    const PRODUCT: &str = r#"{"object":"product_catalog","entry":[{"id":"1234567890","time":1772359200,"changes":[
        {"field":"product_items","value":{"verb":"update","retailer_id":"SKU-1","product_id":"100000000000001"}},
        {"field":"product_items","value":{"verb":"update","retailer_ids":["SKU-2","SKU-3"]}}]}]}"#;

    #[test]
    fn good_signature_passes() {
        assert_eq!(
            handler().verify(&signed(PRODUCT), PRODUCT.as_bytes()),
            Ok(())
        );
    }

    #[test]
    fn bad_signature_is_unauthorized() {
        let mut h = signed(PRODUCT);
        h.insert(
            SIGNATURE_HEADER.into(),
            format!(
                "sha256={}",
                hex::encode(hmac_sha256(b"other", PRODUCT.as_bytes()))
            ),
        );
        assert!(matches!(
            handler().verify(&h, PRODUCT.as_bytes()),
            Err(WebhookError::Unauthorized(_))
        ));
        for bad in ["sha256=zz", "deadbeef", "sha1=abc"] {
            h.insert(SIGNATURE_HEADER.into(), bad.into());
            assert!(
                matches!(
                    handler().verify(&h, PRODUCT.as_bytes()),
                    Err(WebhookError::Unauthorized(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn missing_header_is_unauthorized() {
        let e = handler()
            .verify(&Headers::new(), PRODUCT.as_bytes())
            .unwrap_err();
        assert!(matches!(e, WebhookError::Unauthorized(ref m) if m.contains("missing")));
    }

    #[test]
    fn tampered_body_is_unauthorized() {
        let h = signed(PRODUCT);
        let tampered = PRODUCT.replace("SKU-1", "SKU-9");
        assert!(matches!(
            handler().verify(&h, tampered.as_bytes()),
            Err(WebhookError::Unauthorized(_))
        ));
    }

    #[test]
    fn product_changes_name_retailer_ids() {
        let hints = parse(PRODUCT);
        assert_eq!(hints.len(), 2);
        assert_eq!(hints[0].topic, "product_items");
        assert_eq!(hints[0].skus, vec!["SKU-1".to_string()]);
        assert_eq!(
            hints[0].refs,
            vec![("product_id".to_string(), "100000000000001".to_string())]
        );
        assert_eq!(hints[0].occurred_at_ms, Some(1_772_359_200_000));
        assert_eq!(
            hints[1].skus,
            vec!["SKU-2".to_string(), "SKU-3".to_string()]
        );
    }

    #[test]
    fn orders_report_sold_lines() {
        let body = r#"{"object":"product_catalog","entry":[{"id":"1","time":1772359200000,"changes":[
            {"field":"orders","value":{"order_id":"7","items":[{"retailer_id":"SKU-1","quantity":2},{"product_id":"55","quantity":"1"}]}},
            {"field":"orders","value":{"product_items":[{"product_retailer_id":"SKU-4","quantity":3,"item_price":9.5,"currency":"SEK"}]}}]}]}"#;
        let hints = parse(body);
        assert_eq!(hints[0].occurred_at_ms, Some(1_772_359_200_000));
        assert_eq!(hints[0].skus, vec!["SKU-1".to_string()]);
        assert_eq!(
            hints[0].sold,
            vec![
                SoldLine {
                    sku: Some("SKU-1".into()),
                    reference: None,
                    quantity: 2
                },
                SoldLine {
                    sku: None,
                    reference: Some(("product_id".into(), "55".into())),
                    quantity: 1
                }
            ]
        );
        assert_eq!(hints[1].sold[0].sku.as_deref(), Some("SKU-4"));
        assert_eq!(hints[1].sold[0].quantity, 3);
    }

    #[test]
    fn field_names_are_configurable() {
        let h = MetaWebhooks::new(
            SecretString::from(SECRET.to_string()),
            None,
            "catalog_item",
            "commerce_order",
        );
        let body = r#"{"object":"x","entry":[{"id":"1","time":1,"changes":[{"field":"catalog_item","value":{"retailer_id":"A"}},{"field":"product_items","value":{"retailer_id":"B"}}]}]}"#;
        let hints = h.parse(&Headers::new(), body.as_bytes()).expect("parses");
        assert_eq!(hints[0].skus, vec!["A".to_string()]);
        assert!(
            hints[1].skus.is_empty(),
            "not the configured field: topic only"
        );
    }

    #[test]
    fn unknown_fields_and_empty_entries_are_bare_hints() {
        let hints = parse(
            r#"{"object":"page","entry":[{"id":"1","time":5,"changes":[{"field":"feed","value":{"item":"post"}}]}]}"#,
        );
        assert_eq!(
            hints,
            vec![WebhookHint {
                topic: "feed".into(),
                occurred_at_ms: Some(5000),
                ..WebhookHint::default()
            }]
        );
        let hints = parse(r#"{"object":"page","entry":[{"id":"1","time":5,"messaging":[]}]}"#);
        assert_eq!(hints[0].topic, "page");
    }

    #[test]
    fn malformed_json_after_a_valid_signature() {
        let body = r#"{"object":"product_catalog","entry":[{"#;
        let h = signed(body);
        assert_eq!(handler().verify(&h, body.as_bytes()), Ok(()));
        let e = handler().parse(&h, body.as_bytes()).unwrap_err();
        assert!(
            matches!(e, WebhookError::Malformed(ref m) if m.contains("not JSON")),
            "{e}"
        );
        for (body, why) in [
            ("[]", "not a JSON object"),
            (r#"{"object":"x"}"#, "no entry"),
            (r#"{"entry":{}}"#, "entry is not an array"),
            (r#"{"entry":[{"changes":{}}]}"#, "changes is not an array"),
            (r#"{"entry":[{"changes":[{"value":{}}]}]}"#, "no field"),
            (
                r#"{"entry":[{"changes":[{"field":"product_items","value":{}}]}]}"#,
                "names no",
            ),
            (
                r#"{"entry":[{"changes":[{"field":"orders","value":{"items":[{"retailer_id":"A"}]}}]}]}"#,
                "quantity",
            ),
            (
                r#"{"entry":[{"changes":[{"field":"orders","value":{}}]}]}"#,
                "without items",
            ),
        ] {
            let e = handler().parse(&signed(body), body.as_bytes()).unwrap_err();
            assert!(
                matches!(e, WebhookError::Malformed(ref m) if m.contains(why)),
                "{body}: {e}"
            );
        }
    }

    #[test]
    fn event_id_is_the_body_hash() {
        let a = handler().event_id(&Headers::new(), PRODUCT.as_bytes());
        let b = handler().event_id(&Headers::new(), PRODUCT.as_bytes());
        let c = handler().event_id(&Headers::new(), b"{}");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.is_some_and(|id| id.starts_with("sha256:") && id.len() == 7 + 64));
    }

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn handshake_accepts_the_right_token() {
        let q = query(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", "verify-me"),
            ("hub.challenge", "1158201444"),
        ]);
        assert_eq!(handler().handshake(&q), Some(Ok("1158201444".to_string())));
        // PHP-style names.
        let q = query(&[
            ("hub_mode", "subscribe"),
            ("hub_verify_token", "verify-me"),
            ("hub_challenge", "42"),
        ]);
        assert_eq!(handler().handshake(&q), Some(Ok("42".to_string())));
    }

    #[test]
    fn handshake_refuses_a_wrong_token_or_mode() {
        for q in [
            query(&[
                ("hub.mode", "subscribe"),
                ("hub.verify_token", "nope"),
                ("hub.challenge", "1"),
            ]),
            query(&[("hub.mode", "subscribe"), ("hub.challenge", "1")]),
            query(&[
                ("hub.mode", "unsubscribe"),
                ("hub.verify_token", "verify-me"),
                ("hub.challenge", "1"),
            ]),
        ] {
            assert!(
                matches!(
                    handler().handshake(&q),
                    Some(Err(WebhookError::Unauthorized(_)))
                ),
                "{q:?}"
            );
        }
        let q = query(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", "verify-me"),
            ("hub.challenge", "<script>"),
        ]);
        assert!(matches!(
            handler().handshake(&q),
            Some(Err(WebhookError::Malformed(_)))
        ));
        let no_token = MetaWebhooks::new(SecretString::from("s".to_string()), None, "a", "b");
        let q = query(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", ""),
            ("hub.challenge", "1"),
        ]);
        assert!(matches!(
            no_token.handshake(&q),
            Some(Err(WebhookError::Unauthorized(_)))
        ));
    }

    #[test]
    fn debug_does_not_show_secrets() {
        let shown = format!("{:?}", handler());
        assert!(
            !shown.contains(SECRET) && !shown.contains("verify-me"),
            "{shown}"
        );
    }
}

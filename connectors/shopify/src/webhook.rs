//! Incoming Shopify webhooks: [`ShopifyWebhooks`] implements
//! [`omnisync_sdk::webhook::WebhookHandler`].
//!
//! - **Signature**: `X-Shopify-Hmac-Sha256` is base64(HMAC-SHA256(key = the app's client
//!   secret, message = the raw body bytes)); it is checked in constant time before anything
//!   else ([`Settings::webhook_secret`](crate::Settings::webhook_secret)).
//! - **Event id**: `X-Shopify-Event-Id` (the same for every webhook one event causes, which
//!   is what Shopify's duplicate guide dedupes on), else `X-Shopify-Webhook-Id`.
//! - **Topics** (`X-Shopify-Topic`, REST payloads):
//!
//! | topic | hint |
//! |---|---|
//! | `inventory_levels/update` | ref `inventory_item_id` = `gid://shopify/InventoryItem/N` |
//! | `products/create`, `products/update` | the variants' SKUs; variants without a SKU as ref `external_id` = the variant gid; a product without variants as ref `product_id` |
//! | `products/delete` | ref `product_id` = `gid://shopify/Product/N` |
//! | `inventory_items/create`, `…/update`, `…/delete` | the SKU (if any) and ref `inventory_item_id` |
//! | `orders/create` | `sold` lines (SKU, else ref `external_id` = variant gid; quantity) and their SKUs |
//! | anything else | a hint naming only the topic |
//!
//! Refs use the keys and gid formats the adapter reports in [`omnisync_sdk::Record::refs`]
//! and `external_id`. `occurred_at_ms` is `X-Shopify-Triggered-At`, else the payload's
//! `updated_at` (`created_at` for orders).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use omnisync_sdk::Currency;
use omnisync_sdk::secret::{ExposeSecret, SecretString};
use omnisync_sdk::webhook::{
    Headers, Shown, ShownValue, SoldLine, WebhookError, WebhookHandler, WebhookHint, header,
    hmac_sha256_verify,
};
use serde_json::Value;

use crate::mapping::{REF_INVENTORY_ITEM_ID, REF_PRODUCT_ID, offer_from_prices};

/// The signature header (lower-cased, as [`Headers`] holds names).
pub const HMAC_HEADER: &str = "x-shopify-hmac-sha256";
/// The topic header.
pub const TOPIC_HEADER: &str = "x-shopify-topic";
/// The event id header (the same across the webhooks of one event).
pub const EVENT_ID_HEADER: &str = "x-shopify-event-id";
/// The delivery id header (the fallback event id).
pub const WEBHOOK_ID_HEADER: &str = "x-shopify-webhook-id";
/// When Shopify triggered the webhook (RFC 3339).
pub const TRIGGERED_AT_HEADER: &str = "x-shopify-triggered-at";

/// The `refs` key naming a listing by its `external_id` (the variant gid).
pub const REF_EXTERNAL_ID: &str = "external_id";

/// Verifies and reads Shopify webhooks for one shop.
pub struct ShopifyWebhooks {
    secret: SecretString,
    /// The shop's currency, to read the prices `products/update` carries; without it the
    /// hints carry no offers.
    currency: Option<Currency>,
}

impl fmt::Debug for ShopifyWebhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShopifyWebhooks").finish_non_exhaustive()
    }
}

impl ShopifyWebhooks {
    /// A handler checking signatures with the app's client secret.
    pub fn new(secret: SecretString) -> Self {
        ShopifyWebhooks {
            secret,
            currency: None,
        }
    }

    /// Reads the prices in `products/update` as offers in `currency` (the shop's), so
    /// that the hints carry them ([`WebhookHint::shown`]).
    pub fn with_currency(mut self, currency: Currency) -> Self {
        self.currency = Some(currency);
        self
    }
}

/// RFC 3339 → milliseconds since the epoch.
fn millis(text: &str) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
            .ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// `gid://shopify/{kind}/N` from a REST id (number or numeric string) or a gid of `kind`.
fn gid_of(kind: &str, v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => n.as_u64().map(|n| format!("gid://shopify/{kind}/{n}")),
        Value::String(s) => {
            let s = s.trim();
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                Some(format!("gid://shopify/{kind}/{s}"))
            } else {
                s.strip_prefix("gid://shopify/")
                    .and_then(|r| r.strip_prefix(kind))
                    .filter(|r| r.starts_with('/'))
                    .map(|_| s.to_string())
            }
        }
        _ => None,
    }
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn malformed(topic: &str, why: impl fmt::Display) -> WebhookError {
    WebhookError::Malformed(format!("{topic}: {why}"))
}

/// An optional array field: absent or `null` is empty, anything else but an array is an error.
fn array<'a>(topic: &str, v: &'a Value, key: &str) -> Result<&'a [Value], WebhookError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(malformed(topic, format_args!("{key} is not an array"))),
    }
}

fn push_unique(list: &mut Vec<String>, s: &str) {
    if !list.iter().any(|x| x == s) {
        list.push(s.to_string());
    }
}

fn inventory_level(topic: &str, body: &Value, hint: &mut WebhookHint) -> Result<(), WebhookError> {
    let item = body
        .get("inventory_item_id")
        .and_then(|v| gid_of("InventoryItem", v))
        .ok_or_else(|| malformed(topic, "no inventory_item_id"))?;
    // The level as it is now: lets the daemon recognise its own write coming back.
    let location = body.get("location_id").and_then(|v| gid_of("Location", v));
    let available = body.get("available").and_then(Value::as_i64);
    if let (Some(location), Some(quantity)) = (location, available) {
        hint.shown.push(ShownValue {
            sku: None,
            reference: Some((REF_INVENTORY_ITEM_ID.to_string(), item.clone())),
            value: Shown::Stock { location, quantity },
        });
    }
    hint.refs.push((REF_INVENTORY_ITEM_ID.to_string(), item));
    Ok(())
}

fn product(
    topic: &str,
    body: &Value,
    currency: Option<Currency>,
    hint: &mut WebhookHint,
) -> Result<(), WebhookError> {
    let variants = array(topic, body, "variants")?;
    for variant in variants {
        let named = if let Some(sku) = text(variant, "sku") {
            push_unique(&mut hint.skus, sku);
            Some((Some(sku.to_string()), None))
        } else if let Some(id) = variant.get("id").and_then(|v| gid_of("ProductVariant", v)) {
            hint.refs.push((REF_EXTERNAL_ID.to_string(), id.clone()));
            Some((None, Some((REF_EXTERNAL_ID.to_string(), id))))
        } else {
            None
        };
        // The variant's offer as a read would see it; a price that does not parse is left
        // to the read.
        let offer = currency.zip(text(variant, "price")).and_then(|(c, price)| {
            offer_from_prices(price, text(variant, "compare_at_price"), c).ok()
        });
        if let (Some((sku, reference)), Some(offer)) = (named, offer) {
            hint.shown.push(ShownValue {
                sku,
                reference,
                value: Shown::Offer { offer },
            });
        }
    }
    if variants.is_empty() {
        let id = body
            .get("id")
            .and_then(|v| gid_of("Product", v))
            .ok_or_else(|| malformed(topic, "no id and no variants"))?;
        hint.refs.push((REF_PRODUCT_ID.to_string(), id));
    }
    Ok(())
}

fn product_deleted(topic: &str, body: &Value, hint: &mut WebhookHint) -> Result<(), WebhookError> {
    let id = body
        .get("id")
        .and_then(|v| gid_of("Product", v))
        .ok_or_else(|| malformed(topic, "no id"))?;
    hint.refs.push((REF_PRODUCT_ID.to_string(), id));
    Ok(())
}

fn inventory_item(topic: &str, body: &Value, hint: &mut WebhookHint) -> Result<(), WebhookError> {
    let id = body
        .get("id")
        .and_then(|v| gid_of("InventoryItem", v))
        .ok_or_else(|| malformed(topic, "no id"))?;
    if let Some(sku) = text(body, "sku") {
        push_unique(&mut hint.skus, sku);
    }
    hint.refs.push((REF_INVENTORY_ITEM_ID.to_string(), id));
    Ok(())
}

fn order(topic: &str, body: &Value, hint: &mut WebhookHint) -> Result<(), WebhookError> {
    for (i, line) in array(topic, body, "line_items")?.iter().enumerate() {
        let quantity = line
            .get("quantity")
            .and_then(Value::as_i64)
            .ok_or_else(|| malformed(topic, format_args!("line_items[{i}] has no quantity")))?;
        let sku = text(line, "sku");
        let reference = match sku {
            Some(_) => None,
            None => line
                .get("variant_id")
                .and_then(|v| gid_of("ProductVariant", v))
                .map(|id| (REF_EXTERNAL_ID.to_string(), id)),
        };
        if sku.is_none() && reference.is_none() {
            // A custom line item: nothing of ours was sold.
            continue;
        }
        if let Some(sku) = sku {
            push_unique(&mut hint.skus, sku);
        }
        hint.sold.push(SoldLine {
            sku: sku.map(str::to_string),
            reference,
            quantity,
        });
    }
    Ok(())
}

impl WebhookHandler for ShopifyWebhooks {
    fn verify(&self, headers: &Headers, body: &[u8]) -> Result<(), WebhookError> {
        let signature = header(headers, HMAC_HEADER).ok_or_else(|| {
            WebhookError::Unauthorized("missing X-Shopify-Hmac-Sha256 header".to_string())
        })?;
        let expected = B64.decode(signature).map_err(|_| {
            WebhookError::Unauthorized("X-Shopify-Hmac-Sha256 is not base64".to_string())
        })?;
        if hmac_sha256_verify(self.secret.expose_secret().as_bytes(), body, &expected) {
            Ok(())
        } else {
            Err(WebhookError::Unauthorized(
                "X-Shopify-Hmac-Sha256 does not match the body (wrong webhook_secret, or the body was altered)"
                    .to_string(),
            ))
        }
    }

    fn event_id(&self, headers: &Headers, _body: &[u8]) -> Option<String> {
        header(headers, EVENT_ID_HEADER)
            .or_else(|| header(headers, WEBHOOK_ID_HEADER))
            .map(str::to_string)
    }

    fn parse(&self, headers: &Headers, body: &[u8]) -> Result<Vec<WebhookHint>, WebhookError> {
        let topic = header(headers, TOPIC_HEADER)
            .ok_or_else(|| WebhookError::Malformed("missing X-Shopify-Topic header".to_string()))?;
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| malformed(topic, format_args!("body is not JSON: {e}")))?;
        if !value.is_object() {
            return Err(malformed(topic, "body is not a JSON object"));
        }
        let mut hint = WebhookHint {
            topic: topic.to_string(),
            ..WebhookHint::default()
        };
        let mut at_field = "updated_at";
        match topic {
            "inventory_levels/update" => inventory_level(topic, &value, &mut hint)?,
            "products/create" | "products/update" => {
                product(topic, &value, self.currency, &mut hint)?;
            }
            "products/delete" => product_deleted(topic, &value, &mut hint)?,
            "inventory_items/create" | "inventory_items/update" | "inventory_items/delete" => {
                inventory_item(topic, &value, &mut hint)?;
            }
            "orders/create" => {
                at_field = "created_at";
                order(topic, &value, &mut hint)?;
            }
            _ => {}
        }
        hint.occurred_at_ms = header(headers, TRIGGERED_AT_HEADER)
            .and_then(millis)
            .or_else(|| text(&value, at_field).and_then(millis));
        Ok(vec![hint])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnisync_sdk::webhook::hmac_sha256;

    const SECRET: &str = "shpss_test_secret";

    fn handler() -> ShopifyWebhooks {
        ShopifyWebhooks::new(SecretString::from(SECRET.to_string()))
    }

    fn signed(topic: &str, body: &str) -> Headers {
        let mut h = Headers::new();
        h.insert(
            HMAC_HEADER.into(),
            B64.encode(hmac_sha256(SECRET.as_bytes(), body.as_bytes())),
        );
        h.insert(TOPIC_HEADER.into(), topic.into());
        h.insert(EVENT_ID_HEADER.into(), "evt-1".into());
        h.insert(WEBHOOK_ID_HEADER.into(), "wh-1".into());
        h
    }

    fn parse_one(topic: &str, body: &str) -> WebhookHint {
        let h = signed(topic, body);
        handler().verify(&h, body.as_bytes()).expect("verifies");
        let mut hints = handler().parse(&h, body.as_bytes()).expect("parses");
        assert_eq!(hints.len(), 1);
        hints.remove(0)
    }

    #[test]
    fn good_signature_passes() {
        let body = r#"{"inventory_item_id":7,"location_id":1,"available":3}"#;
        assert_eq!(
            handler().verify(&signed("inventory_levels/update", body), body.as_bytes()),
            Ok(())
        );
    }

    #[test]
    fn bad_signature_is_unauthorized() {
        let body = r#"{"id":1}"#;
        let mut h = signed("products/update", body);
        h.insert(
            HMAC_HEADER.into(),
            B64.encode(hmac_sha256(b"another secret", body.as_bytes())),
        );
        assert!(matches!(
            handler().verify(&h, body.as_bytes()),
            Err(WebhookError::Unauthorized(_))
        ));
        h.insert(HMAC_HEADER.into(), "not base64 !!".into());
        let e = handler().verify(&h, body.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("base64"), "{e}");
    }

    #[test]
    fn missing_header_is_unauthorized() {
        let body = r#"{"id":1}"#;
        let mut h = signed("products/update", body);
        h.remove(HMAC_HEADER);
        let e = handler().verify(&h, body.as_bytes()).unwrap_err();
        assert!(matches!(e, WebhookError::Unauthorized(ref m) if m.contains("missing")));
    }

    #[test]
    fn tampered_body_is_unauthorized() {
        let body = r#"{"inventory_item_id":7,"available":3}"#;
        let h = signed("inventory_levels/update", body);
        let tampered = r#"{"inventory_item_id":7,"available":300}"#;
        assert!(matches!(
            handler().verify(&h, tampered.as_bytes()),
            Err(WebhookError::Unauthorized(_))
        ));
    }

    #[test]
    fn header_names_in_any_case() {
        let body = r#"{"id":1}"#;
        let mut h = Headers::new();
        h.insert(
            "X-Shopify-Hmac-Sha256".into(),
            B64.encode(hmac_sha256(SECRET.as_bytes(), body.as_bytes())),
        );
        assert_eq!(handler().verify(&h, body.as_bytes()), Ok(()));
    }

    #[test]
    fn event_id_prefers_the_event_header() {
        let mut h = signed("products/update", "{}");
        assert_eq!(handler().event_id(&h, b"{}").as_deref(), Some("evt-1"));
        h.remove(EVENT_ID_HEADER);
        assert_eq!(handler().event_id(&h, b"{}").as_deref(), Some("wh-1"));
        h.remove(WEBHOOK_ID_HEADER);
        assert_eq!(handler().event_id(&h, b"{}"), None);
    }

    #[test]
    fn inventory_levels_update_names_the_inventory_item() {
        let hint = parse_one(
            "inventory_levels/update",
            r#"{"inventory_item_id":46000000001,"location_id":1,"available":4,"updated_at":"2026-03-01T10:00:00Z","admin_graphql_api_id":"gid://shopify/InventoryLevel/1?inventory_item_id=46000000001"}"#,
        );
        assert_eq!(hint.topic, "inventory_levels/update");
        assert_eq!(
            hint.refs,
            vec![(
                "inventory_item_id".to_string(),
                "gid://shopify/InventoryItem/46000000001".to_string()
            )]
        );
        assert!(hint.skus.is_empty());
        assert_eq!(hint.occurred_at_ms, Some(1_772_359_200_000));
    }

    #[test]
    fn triggered_at_header_wins_over_updated_at() {
        let body = r#"{"inventory_item_id":7,"updated_at":"2026-03-01T10:00:00Z"}"#;
        let mut h = signed("inventory_levels/update", body);
        h.insert(
            TRIGGERED_AT_HEADER.into(),
            "2026-03-01T10:00:01.500Z".into(),
        );
        let hints = handler().parse(&h, body.as_bytes()).expect("parses");
        assert_eq!(hints[0].occurred_at_ms, Some(1_772_359_201_500));
    }

    #[test]
    fn products_update_names_skus_and_skuless_variants() {
        let hint = parse_one(
            "products/update",
            r#"{"id":8000000001,"updated_at":"2026-03-01T10:00:00+01:00","variants":[
                {"id":44000000001,"sku":"SKU-1","price":"129.90","inventory_item_id":46000000001},
                {"id":44000000002,"sku":"","price":"99.00","inventory_item_id":46000000002},
                {"id":44000000003,"sku":"SKU-1","price":"129.90"}]}"#,
        );
        assert_eq!(hint.skus, vec!["SKU-1".to_string()]);
        assert_eq!(
            hint.refs,
            vec![(
                "external_id".to_string(),
                "gid://shopify/ProductVariant/44000000002".to_string()
            )]
        );
        assert_eq!(hint.occurred_at_ms, Some(1_772_355_600_000));
    }

    #[test]
    fn levels_and_products_carry_the_values_they_show() {
        let hint = parse_one(
            "inventory_levels/update",
            r#"{"inventory_item_id":46000000001,"location_id":1,"available":4}"#,
        );
        assert_eq!(
            hint.shown,
            vec![ShownValue {
                sku: None,
                reference: Some((
                    "inventory_item_id".into(),
                    "gid://shopify/InventoryItem/46000000001".into()
                )),
                value: Shown::Stock {
                    location: "gid://shopify/Location/1".into(),
                    quantity: 4
                },
            }]
        );
        // No `available` (an untracked item): nothing carried, the item is read.
        let hint = parse_one(
            "inventory_levels/update",
            r#"{"inventory_item_id":46000000001,"location_id":1,"available":null}"#,
        );
        assert!(hint.shown.is_empty());

        let body = r#"{"id":8000000001,"variants":[
            {"id":44000000001,"sku":"SKU-1","price":"99.00","compare_at_price":"129.90"},
            {"id":44000000002,"sku":"","price":"99.00","compare_at_price":null},
            {"id":44000000003,"sku":"SKU-3","price":"not a price"}]}"#;
        let h = signed("products/update", body);
        let shop = handler().with_currency(Currency::NOK);
        let hint = shop.parse(&h, body.as_bytes()).expect("parses").remove(0);
        let nok = |minor| omnisync_sdk::Money::new(minor, Currency::NOK);
        assert_eq!(
            hint.shown,
            vec![
                ShownValue {
                    sku: Some("SKU-1".into()),
                    reference: None,
                    value: Shown::Offer {
                        offer: omnisync_sdk::Offer {
                            price: nok(12_990),
                            sale: Some(nok(9_900))
                        }
                    },
                },
                ShownValue {
                    sku: None,
                    reference: Some((
                        "external_id".into(),
                        "gid://shopify/ProductVariant/44000000002".into()
                    )),
                    value: Shown::Offer {
                        offer: omnisync_sdk::Offer::regular(nok(9_900))
                    },
                },
            ]
        );
        // Without the shop's currency, prices are not read.
        assert!(
            handler().parse(&h, body.as_bytes()).unwrap()[0]
                .shown
                .is_empty()
        );
    }

    #[test]
    fn products_without_variants_and_deletes_name_the_product() {
        let hint = parse_one("products/update", r#"{"id":8000000001}"#);
        assert_eq!(
            hint.refs,
            vec![(
                "product_id".to_string(),
                "gid://shopify/Product/8000000001".to_string()
            )]
        );
        let hint = parse_one("products/delete", r#"{"id":"8000000002"}"#);
        assert_eq!(hint.refs[0].1, "gid://shopify/Product/8000000002");
    }

    #[test]
    fn inventory_items_update_names_sku_and_item() {
        let hint = parse_one(
            "inventory_items/update",
            r#"{"id":46000000001,"sku":"SKU-9","tracked":true}"#,
        );
        assert_eq!(hint.skus, vec!["SKU-9".to_string()]);
        assert_eq!(hint.refs[0].1, "gid://shopify/InventoryItem/46000000001");
    }

    #[test]
    fn orders_create_reports_sold_lines() {
        let hint = parse_one(
            "orders/create",
            r#"{"id":1,"created_at":"2026-03-01T10:00:00Z","line_items":[
                {"id":10,"variant_id":44000000001,"sku":"SKU-1","quantity":2},
                {"id":11,"variant_id":44000000002,"sku":null,"quantity":1},
                {"id":12,"variant_id":null,"sku":"","quantity":5,"title":"Gift wrap"}]}"#,
        );
        assert_eq!(hint.topic, "orders/create");
        assert_eq!(hint.skus, vec!["SKU-1".to_string()]);
        assert_eq!(
            hint.sold,
            vec![
                SoldLine {
                    sku: Some("SKU-1".into()),
                    reference: None,
                    quantity: 2
                },
                SoldLine {
                    sku: None,
                    reference: Some((
                        "external_id".into(),
                        "gid://shopify/ProductVariant/44000000002".into()
                    )),
                    quantity: 1
                },
            ]
        );
        assert_eq!(hint.occurred_at_ms, Some(1_772_359_200_000));
    }

    #[test]
    fn unknown_topic_is_a_bare_hint() {
        let hint = parse_one("customers/update", r#"{"id":5,"email":"x@example.com"}"#);
        assert_eq!(
            hint,
            WebhookHint {
                topic: "customers/update".into(),
                ..WebhookHint::default()
            }
        );
    }

    #[test]
    fn malformed_json_after_a_valid_signature() {
        let body = r#"{"inventory_item_id":7,"#;
        let h = signed("inventory_levels/update", body);
        assert_eq!(handler().verify(&h, body.as_bytes()), Ok(()));
        let e = handler().parse(&h, body.as_bytes()).unwrap_err();
        assert!(
            matches!(e, WebhookError::Malformed(ref m) if m.contains("not JSON")),
            "{e}"
        );
        for (topic, body, why) in [
            (
                "inventory_levels/update",
                r#"{"location_id":1}"#,
                "inventory_item_id",
            ),
            ("orders/create", r#"{"line_items":{}}"#, "not an array"),
            (
                "orders/create",
                r#"{"line_items":[{"sku":"A"}]}"#,
                "quantity",
            ),
            ("products/delete", r#"{}"#, "no id"),
            ("products/update", "[1,2]", "not a JSON object"),
        ] {
            let h = signed(topic, body);
            let e = handler().parse(&h, body.as_bytes()).unwrap_err();
            assert!(
                matches!(e, WebhookError::Malformed(ref m) if m.contains(why)),
                "{topic}: {e}"
            );
        }
        let mut h = signed("products/update", "{}");
        h.remove(TOPIC_HEADER);
        assert!(matches!(
            handler().parse(&h, b"{}"),
            Err(WebhookError::Malformed(_))
        ));
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        assert!(!format!("{:?}", handler()).contains(SECRET));
    }
}

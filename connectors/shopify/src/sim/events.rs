//! The webhooks the simulated shop sends: Shopify's headers and HMAC signature
//! ([`ShopifyProvider`]) and the REST-shaped payloads of the topics it emits.
//!
//! | topic | when | payload (the REST resource, trimmed to what matters here) |
//! |---|---|---|
//! | `inventory_levels/update` | a quantity changes (hand edit, `inventorySetQuantities`, a sale) | `inventory_item_id`, `location_id`, `available`, `updated_at`, `admin_graphql_api_id` |
//! | `products/update` | a price changes (hand edit, `productVariantsBulkUpdate`), a variant is replaced or removed | the product with `variants[]` (`id`, `product_id`, `sku`, `price`, `compare_at_price`, `inventory_item_id`, `inventory_quantity`, …) |
//! | `products/create` | a listing is added | as `products/update` |
//! | `products/delete` | the last variant of a product is removed | `{ "id": product_id }` |
//! | `orders/create` | [`crate::sim::Simulator::sell`] | `id`, `name`, `created_at`, `currency`, `line_items[]` (`variant_id`, `product_id`, `sku`, `quantity`, `price`, …) |
//!
//! Ids in payloads are numeric, as in Shopify's REST JSON; `admin_graphql_api_id` carries the
//! gid the GraphQL API (and the adapter's `Record::refs`) uses.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use omnisync_sdk::Money;
use omnisync_sdk::webhook::hmac_sha256;
use serde_json::{Value, json};

use super::catalog::{Catalog, Variant, gid, parse_gid};
use omnisync_sdk::sim::delivery::{OutEvent, Provider};

/// Signs and addresses deliveries as Shopify does. (No `Debug`: it holds the secret.)
pub struct ShopifyProvider {
    /// The app's client secret (the HMAC key).
    pub secret: String,
    /// `X-Shopify-Shop-Domain`.
    pub shop_domain: String,
    /// `X-Shopify-API-Version`.
    pub api_version: String,
}

impl Provider for ShopifyProvider {
    fn headers(&self, event: &OutEvent, delivery_id: &str) -> Vec<(&'static str, String)> {
        let hmac = B64.encode(hmac_sha256(self.secret.as_bytes(), &event.body));
        vec![
            ("X-Shopify-Topic", event.topic.clone()),
            ("X-Shopify-Hmac-Sha256", hmac),
            ("X-Shopify-Shop-Domain", self.shop_domain.clone()),
            ("X-Shopify-API-Version", self.api_version.clone()),
            ("X-Shopify-Webhook-Id", delivery_id.to_string()),
            ("X-Shopify-Event-Id", event.event_id.clone()),
            ("X-Shopify-Triggered-At", event.triggered_at.clone()),
        ]
    }
}

/// Topic of a quantity change.
pub(crate) const INVENTORY_LEVELS_UPDATE: &str = "inventory_levels/update";
/// Topic of a product change.
pub(crate) const PRODUCTS_UPDATE: &str = "products/update";
/// Topic of a new product.
pub(crate) const PRODUCTS_CREATE: &str = "products/create";
/// Topic of a deleted product.
pub(crate) const PRODUCTS_DELETE: &str = "products/delete";
/// Topic of a new order.
pub(crate) const ORDERS_CREATE: &str = "orders/create";

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// `inventory_levels/update` for one item at one location gid.
pub(crate) fn inventory_level(item: u64, location: &str, available: i64, at: &str) -> Vec<u8> {
    let location_id = parse_gid(location, "Location").unwrap_or(0);
    bytes(&json!({
        "inventory_item_id": item,
        "location_id": location_id,
        "available": available,
        "updated_at": at,
        "admin_graphql_api_id": format!("gid://shopify/InventoryLevel/{location_id}?inventory_item_id={item}"),
    }))
}

fn price(minor: i64, catalog: &Catalog) -> String {
    Money::new(minor, catalog.currency).major_string()
}

fn variant_json(v: &Variant, catalog: &Catalog, position: usize, at: &str) -> Value {
    json!({
        "id": v.id,
        "product_id": v.product,
        "title": v.title,
        "price": price(v.price, catalog),
        "compare_at_price": v.compare_at.map(|c| price(c, catalog)),
        "sku": v.sku,
        "position": position + 1,
        "inventory_policy": "deny",
        "inventory_management": "shopify",
        "inventory_item_id": v.item,
        "inventory_quantity": v.levels.values().sum::<i64>(),
        "updated_at": at,
        "admin_graphql_api_id": gid("ProductVariant", v.id),
    })
}

/// The product JSON (`products/create`, `products/update`): every variant of `product`.
/// `None` when the product has no variant left.
pub(crate) fn product(catalog: &Catalog, product: u64, at: &str) -> Option<Vec<u8>> {
    let variants: Vec<&Variant> = catalog.product_variants(product).collect();
    let first = variants.first()?;
    let title = first.title.clone();
    let variants: Vec<Value> = variants
        .iter()
        .enumerate()
        .map(|(i, v)| variant_json(v, catalog, i, at))
        .collect();
    Some(bytes(&json!({
        "id": product,
        "title": title,
        "status": "active",
        "updated_at": at,
        "admin_graphql_api_id": gid("Product", product),
        "variants": variants,
    })))
}

/// `products/delete`.
pub(crate) fn product_deleted(product: u64) -> Vec<u8> {
    bytes(&json!({ "id": product }))
}

/// `orders/create` for one line.
pub(crate) fn order(
    catalog: &Catalog,
    order: u64,
    line: u64,
    v: &Variant,
    quantity: i64,
    at: &str,
) -> Vec<u8> {
    let unit = price(v.price, catalog);
    let total = Money::new(v.price.saturating_mul(quantity), catalog.currency).major_string();
    bytes(&json!({
        "id": order,
        "admin_graphql_api_id": gid("Order", order),
        "name": format!("#{}", 1000 + order % 1_000_000),
        "created_at": at,
        "updated_at": at,
        "currency": catalog.currency.code(),
        "financial_status": "paid",
        "total_price": total,
        "line_items": [{
            "id": line,
            "admin_graphql_api_id": gid("LineItem", line),
            "variant_id": v.id,
            "product_id": v.product,
            "sku": v.sku,
            "title": v.title,
            "quantity": quantity,
            "price": unit,
        }],
    }))
}

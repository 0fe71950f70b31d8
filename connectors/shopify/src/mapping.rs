//! Mapping between Shopify's shapes and omnisync's canonical values: variants to
//! [`Record`]s, `price`/`compareAtPrice` to [`Offer`]s and back, SKU search strings, gids,
//! and the cost of the queries this connector sends (Shopify's documented cost rules).

use std::collections::BTreeMap;

use omnisync_sdk::{Currency, Money, Offer, Record, StockLevel};
use serde::Deserialize;

/// `Record::refs` key holding the product gid (needed to write prices).
pub const REF_PRODUCT_ID: &str = "product_id";
/// `Record::refs` key holding the inventory item gid (needed to write stock).
pub const REF_INVENTORY_ITEM_ID: &str = "inventory_item_id";

/// The gid prefix of a location: stock location codes are location gids.
pub const LOCATION_GID_PREFIX: &str = "gid://shopify/Location/";

/// The quantity name this connector reads and writes.
pub const AVAILABLE: &str = "available";

/// Fields selected on each variant, shared by the paged query and the bulk query.
pub const VARIANT_FIELDS: &str = "id sku barcode displayName price compareAtPrice product { id }";

/// A gid reference (`{ id }`).
#[derive(Debug, Clone, Deserialize)]
pub struct IdRef {
    /// The gid.
    pub id: String,
}

/// One variant as selected by [`VARIANT_FIELDS`] plus its inventory item.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VariantNode {
    /// Variant gid.
    pub id: String,
    /// SKU; Shopify gives `""` or `null` when none is set.
    #[serde(default)]
    pub sku: Option<String>,
    /// Barcode (GTIN/EAN/UPC) where set.
    #[serde(default)]
    pub barcode: Option<String>,
    /// Product title and variant title.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The price customers pay (a decimal string).
    #[serde(default)]
    pub price: Option<serde_json::Value>,
    /// The "was" price, when the variant is on sale.
    #[serde(default)]
    pub compare_at_price: Option<serde_json::Value>,
    /// The product.
    #[serde(default)]
    pub product: Option<IdRef>,
    /// The inventory item.
    #[serde(default)]
    pub inventory_item: Option<InventoryItemNode>,
}

/// A variant's inventory item.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryItemNode {
    /// Inventory item gid.
    pub id: String,
    /// Whether Shopify tracks quantities for it.
    #[serde(default)]
    pub tracked: Option<bool>,
    /// Its levels (absent in bulk lines, where levels come as child lines).
    #[serde(default)]
    pub inventory_levels: Option<LevelConnection>,
}

/// `inventoryLevels` in a paged answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LevelConnection {
    /// Whether more levels exist than were asked for.
    #[serde(default)]
    pub page_info: Option<PageInfo>,
    /// The levels.
    #[serde(default)]
    pub nodes: Vec<LevelNode>,
}

/// `pageInfo`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageInfo {
    /// More items follow.
    #[serde(default)]
    pub has_next_page: bool,
    /// Cursor of the last item.
    #[serde(default)]
    pub end_cursor: Option<String>,
}

/// One inventory level.
#[derive(Debug, Clone, Deserialize)]
pub struct LevelNode {
    /// The location.
    pub location: Option<IdRef>,
    /// The named quantities asked for.
    #[serde(default)]
    pub quantities: Vec<QuantityNode>,
}

/// One named quantity.
#[derive(Debug, Clone, Deserialize)]
pub struct QuantityNode {
    /// `available`, `on_hand`, …
    pub name: String,
    /// The quantity.
    pub quantity: i64,
}

/// The cost Shopify charges per variant in the paged query: the node (1), `product` (1),
/// `inventoryItem` (1), and the `inventoryLevels` connection (2 + levels × (level 1 +
/// location 1 + quantities 1)). Scalars are free.
pub fn variant_cost(levels: usize) -> u32 {
    let levels = u32::try_from(levels).unwrap_or(u32::MAX / 8);
    5u32.saturating_add(levels.saturating_mul(3))
}

/// Requested cost of a `productVariants(first: n)` page: 2 + n × [`variant_cost`].
pub fn page_cost(first: usize, levels: usize) -> u32 {
    let first = u32::try_from(first).unwrap_or(u32::MAX);
    2u32.saturating_add(first.saturating_mul(variant_cost(levels)))
}

/// The largest `first` whose page cost stays within `max_cost` (at least 1, at most 250).
pub fn max_first(max_cost: u32, levels: usize) -> usize {
    let per = variant_cost(levels).max(1);
    let n = max_cost.saturating_sub(2) / per;
    (n as usize).clamp(1, 250)
}

/// Builds an offer from Shopify's `price` (what customers pay) and `compareAtPrice`
/// (the "was" price): a compare-at price above the price means a live sale.
pub fn offer_from_prices(
    price: &str,
    compare_at: Option<&str>,
    currency: Currency,
) -> Result<Offer, String> {
    let price = Money::parse_major(price, currency).map_err(|e| format!("price: {e}"))?;
    let compare_at = match compare_at.map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(c) => {
            Some(Money::parse_major(c, currency).map_err(|e| format!("compareAtPrice: {e}"))?)
        }
    };
    Ok(offer_from_money(price, compare_at))
}

/// [`offer_from_prices`] on parsed amounts.
pub fn offer_from_money(price: Money, compare_at: Option<Money>) -> Offer {
    match compare_at {
        Some(was) if was.minor > price.minor => Offer {
            price: was,
            sale: Some(price),
        },
        _ => Offer::regular(price),
    }
}

/// The inverse of [`offer_from_money`]: `(price, compareAtPrice)`. A sale below the
/// regular price is written as price = sale, compare-at = regular; otherwise the
/// effective price is written with no compare-at price (Shopify cannot show "was X, now
/// X or more").
pub fn money_from_offer(offer: &Offer) -> (Money, Option<Money>) {
    match offer.sale {
        Some(sale) if sale.minor < offer.price.minor => (sale, Some(offer.price)),
        _ => (offer.effective(), None),
    }
}

/// A Shopify search string matching any of `skus`: `sku:"A" OR sku:"B"`. Values are
/// always quoted, with `\` and `"` escaped.
pub fn sku_search(skus: &[String]) -> String {
    skus.iter()
        .map(|s| format!("sku:\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// A scalar that may come as a JSON string or number (Shopify sends decimal strings).
fn scalar_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Converts one variant (and its levels) to a record. Never fails: a price that cannot be
/// read gives `offer: None` with a warning naming the variant; a level without a location
/// or an `available` quantity is skipped with a warning.
pub fn variant_to_record(node: &VariantNode, levels: &[LevelNode], currency: Currency) -> Record {
    let mut refs = BTreeMap::new();
    if let Some(p) = &node.product {
        refs.insert(REF_PRODUCT_ID.to_string(), p.id.clone());
    }
    let tracked = node
        .inventory_item
        .as_ref()
        .is_some_and(|i| i.tracked.unwrap_or(true));
    if let Some(item) = &node.inventory_item {
        refs.insert(REF_INVENTORY_ITEM_ID.to_string(), item.id.clone());
    }
    let offer = match node.price.as_ref().and_then(scalar_text) {
        None => {
            tracing::warn!(variant = %node.id, "shopify variant has no readable price; reporting no offer");
            None
        }
        Some(price) => {
            let compare_at = node.compare_at_price.as_ref().and_then(scalar_text);
            match offer_from_prices(&price, compare_at.as_deref(), currency) {
                Ok(o) => Some(o),
                Err(reason) => {
                    tracing::warn!(variant = %node.id, %reason, "shopify variant price cannot be read; reporting no offer");
                    None
                }
            }
        }
    };
    let mut stock = Vec::new();
    if tracked {
        for level in levels {
            let Some(location) = &level.location else {
                tracing::warn!(variant = %node.id, "shopify inventory level without a location; skipped");
                continue;
            };
            match level.quantities.iter().find(|q| q.name == AVAILABLE) {
                Some(q) => stock.push(StockLevel {
                    location: location.id.clone(),
                    available: q.quantity.max(0),
                    on_hand: None,
                }),
                None => {
                    tracing::warn!(variant = %node.id, location = %location.id, "shopify inventory level without an available quantity; skipped");
                }
            }
        }
        stock.sort_by(|a, b| a.location.cmp(&b.location));
    }
    Record {
        external_id: node.id.clone(),
        sku: non_empty(node.sku.as_deref()),
        gtin: non_empty(node.barcode.as_deref()),
        title: non_empty(node.display_name.as_deref()),
        offer,
        stock,
        refs,
    }
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Whether `s` is a Shopify gid of `kind`, e.g. `gid://shopify/Location/1`.
pub fn is_gid(s: &str, kind: &str) -> bool {
    s.strip_prefix("gid://shopify/")
        .and_then(|rest| rest.strip_prefix(kind))
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nok(minor: i64) -> Money {
        Money::new(minor, Currency::NOK)
    }

    #[test]
    fn compare_at_above_price_is_a_sale() {
        let o = offer_from_prices("79.90", Some("99.90"), Currency::NOK).unwrap();
        assert_eq!(o.price, nok(9990));
        assert_eq!(o.sale, Some(nok(7990)));
        assert_eq!(money_from_offer(&o), (nok(7990), Some(nok(9990))));
    }

    #[test]
    fn compare_at_not_above_price_is_ignored() {
        let o = offer_from_prices("99.90", Some("99.90"), Currency::NOK).unwrap();
        assert_eq!(o, Offer::regular(nok(9990)));
        let o = offer_from_prices("99.90", Some("10.00"), Currency::NOK).unwrap();
        assert_eq!(o, Offer::regular(nok(9990)));
        let o = offer_from_prices("99", None, Currency::NOK).unwrap();
        assert_eq!(o, Offer::regular(nok(9900)));
        let o = offer_from_prices("99", Some(""), Currency::NOK).unwrap();
        assert_eq!(o, Offer::regular(nok(9900)));
    }

    #[test]
    fn writes_effective_price_when_sale_is_not_lower() {
        let o = Offer {
            price: nok(1000),
            sale: Some(nok(1200)),
        };
        assert_eq!(money_from_offer(&o), (nok(1200), None));
        assert_eq!(
            money_from_offer(&Offer::regular(nok(500))),
            (nok(500), None)
        );
    }

    #[test]
    fn bad_prices_are_errors_not_panics() {
        assert!(offer_from_prices("12,50", None, Currency::NOK).is_err());
        assert!(offer_from_prices("1.005", None, Currency::NOK).is_err());
        assert!(offer_from_prices("10", Some("x"), Currency::NOK).is_err());
    }

    #[test]
    fn sku_search_quotes_and_escapes() {
        let s = sku_search(&["A-1".into(), "B \"2\"".into(), "C\\3".into()]);
        assert_eq!(s, r#"sku:"A-1" OR sku:"B \"2\"" OR sku:"C\\3""#);
    }

    #[test]
    fn maps_a_variant() {
        let node: VariantNode = serde_json::from_value(serde_json::json!({
            "id": "gid://shopify/ProductVariant/1",
            "sku": "SKU-1",
            "barcode": "",
            "displayName": "Shirt - M",
            "price": "79.90",
            "compareAtPrice": "99.90",
            "product": {"id": "gid://shopify/Product/9"},
            "inventoryItem": {"id": "gid://shopify/InventoryItem/5", "tracked": true},
        }))
        .unwrap();
        let levels: Vec<LevelNode> = serde_json::from_value(serde_json::json!([
            {"location": {"id": "gid://shopify/Location/2"}, "quantities": [{"name": "available", "quantity": -3}]},
            {"location": {"id": "gid://shopify/Location/1"}, "quantities": [{"name": "available", "quantity": 7}]},
            {"location": null, "quantities": []},
        ]))
        .unwrap();
        let r = variant_to_record(&node, &levels, Currency::NOK);
        assert_eq!(r.sku.as_deref(), Some("SKU-1"));
        assert_eq!(r.gtin, None);
        assert_eq!(r.offer.unwrap().sale, Some(nok(7990)));
        assert_eq!(r.stock.len(), 2);
        assert_eq!(r.stock[0].location, "gid://shopify/Location/1");
        assert_eq!(r.stock[1].available, 0);
        assert_eq!(r.refs[REF_PRODUCT_ID], "gid://shopify/Product/9");
        assert_eq!(
            r.refs[REF_INVENTORY_ITEM_ID],
            "gid://shopify/InventoryItem/5"
        );
    }

    #[test]
    fn unreadable_price_gives_no_offer() {
        let node: VariantNode = serde_json::from_value(serde_json::json!({
            "id": "gid://shopify/ProductVariant/2",
            "sku": null,
            "price": "abc",
        }))
        .unwrap();
        let r = variant_to_record(&node, &[], Currency::NOK);
        assert_eq!(r.offer, None);
        assert_eq!(r.sku, None);
        assert!(r.stock.is_empty());
    }

    #[test]
    fn costs_follow_shopify_rules() {
        assert_eq!(variant_cost(10), 35);
        assert_eq!(page_cost(28, 10), 2 + 28 * 35);
        assert_eq!(max_first(1000, 10), 28);
        assert_eq!(max_first(1000, 1), 124);
        assert_eq!(max_first(10, 250), 1);
    }

    #[test]
    fn gids() {
        assert!(is_gid("gid://shopify/Location/1", "Location"));
        assert!(!is_gid("gid://shopify/Location/", "Location"));
        assert!(!is_gid("gid://shopify/LocationX/1", "Location"));
        assert!(!is_gid("1", "Location"));
    }
}

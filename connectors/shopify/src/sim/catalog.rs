//! The simulator's shop catalog: variants keyed by numeric id (so `productVariants` pages
//! by id cursor in O(page size)), grouped into products of one to three variants, each with
//! one inventory item and `available` quantities per location gid; plus the SKU index
//! `read_skus` searches use and the conversion to and from [`SimRecord`].

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use omnisync_sdk::sim::SimRecord;
use omnisync_sdk::{Currency, Money, Offer};

use crate::mapping::{money_from_offer, offer_from_money};

/// First variant id (distinct id ranges per kind catch mixed-up gids).
const VARIANT_BASE: u64 = 44_000_000_001;
/// First inventory item id.
const ITEM_BASE: u64 = 46_000_000_001;
/// First product id.
const PRODUCT_BASE: u64 = 8_000_000_001;

/// One variant in the simulated shop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// Numeric variant id.
    pub id: u64,
    /// Numeric product id.
    pub product: u64,
    /// Numeric inventory item id.
    pub item: u64,
    /// SKU.
    pub sku: String,
    /// Title shown as `displayName`.
    pub title: String,
    /// `price` in minor units of the shop currency.
    pub price: i64,
    /// `compareAtPrice` in minor units.
    pub compare_at: Option<i64>,
    /// `available` per location gid where the item is stocked.
    pub levels: BTreeMap<String, i64>,
}

/// The catalog.
#[derive(Debug)]
pub struct Catalog {
    /// The shop currency.
    pub currency: Currency,
    /// Location gids the shop has.
    pub locations: Vec<String>,
    /// Variants by id.
    pub variants: BTreeMap<u64, Variant>,
    by_sku: HashMap<String, u64>,
    by_item: HashMap<u64, u64>,
    products: HashMap<u64, Vec<u64>>,
    next_variant: u64,
    next_item: u64,
    next_product: u64,
}

/// `gid://shopify/{kind}/{id}`.
pub fn gid(kind: &str, id: u64) -> String {
    format!("gid://shopify/{kind}/{id}")
}

/// The numeric id of a gid of `kind`.
pub fn parse_gid(s: &str, kind: &str) -> Option<u64> {
    s.strip_prefix("gid://shopify/")?
        .strip_prefix(kind)?
        .strip_prefix('/')?
        .parse()
        .ok()
}

impl Catalog {
    /// An empty catalog.
    pub fn new(currency: Currency, locations: Vec<String>) -> Self {
        Catalog {
            currency,
            locations,
            variants: BTreeMap::new(),
            by_sku: HashMap::new(),
            by_item: HashMap::new(),
            products: HashMap::new(),
            next_variant: VARIANT_BASE,
            next_item: ITEM_BASE,
            next_product: PRODUCT_BASE,
        }
    }

    /// Replaces everything with `records`, sorted by SKU and grouped into products of 1, 2,
    /// 3, 1, 2, 3, … variants (deterministic).
    pub fn seed(&mut self, mut records: Vec<SimRecord>) {
        *self = Catalog::new(self.currency, std::mem::take(&mut self.locations));
        records.sort_by(|a, b| a.sku.cmp(&b.sku));
        records.dedup_by(|a, b| a.sku == b.sku);
        self.by_sku.reserve(records.len());
        self.by_item.reserve(records.len());
        let mut group_size = 1usize;
        let mut in_group = 0usize;
        let mut product = self.take_product_id();
        for record in records {
            if in_group == group_size {
                product = self.take_product_id();
                group_size = group_size % 3 + 1;
                in_group = 0;
            }
            self.insert(record, product);
            in_group += 1;
        }
    }

    fn take_product_id(&mut self) -> u64 {
        let id = self.next_product;
        self.next_product += 1;
        id
    }

    fn levels_of(&self, record: &SimRecord) -> BTreeMap<String, i64> {
        if record.stock.is_empty() {
            // No stock given: stocked at every location with nothing available.
            self.locations.iter().map(|l| (l.clone(), 0)).collect()
        } else {
            record.stock.clone().into_iter().collect()
        }
    }

    fn insert(&mut self, record: SimRecord, product: u64) {
        let id = self.next_variant;
        self.next_variant += 1;
        let item = self.next_item;
        self.next_item += 1;
        let (price, compare_at) = money_from_offer(&record.offer);
        let levels = self.levels_of(&record);
        self.by_sku.insert(record.sku.clone(), id);
        self.by_item.insert(item, id);
        self.products.entry(product).or_default().push(id);
        self.variants.insert(
            id,
            Variant {
                id,
                product,
                item,
                sku: record.sku,
                title: record.title,
                price: price.minor,
                compare_at: compare_at.map(|m| m.minor),
                levels,
            },
        );
    }

    /// Adds a listing as a new single-variant product, or replaces the one with that SKU
    /// (keeping its ids).
    pub fn add(&mut self, record: SimRecord) {
        if let Some(id) = self.by_sku.get(&record.sku).copied() {
            let levels = self.levels_of(&record);
            let (price, compare_at) = money_from_offer(&record.offer);
            if let Some(v) = self.variants.get_mut(&id) {
                v.title = record.title;
                v.price = price.minor;
                v.compare_at = compare_at.map(|m| m.minor);
                v.levels = levels;
            }
            return;
        }
        let product = self.take_product_id();
        self.insert(record, product);
    }

    /// Deletes the variant with `sku` (and its product when it was the last variant).
    pub fn remove(&mut self, sku: &str) -> bool {
        let Some(id) = self.by_sku.remove(sku) else {
            return false;
        };
        if let Some(v) = self.variants.remove(&id) {
            self.by_item.remove(&v.item);
            if let Some(list) = self.products.get_mut(&v.product) {
                list.retain(|x| *x != id);
                if list.is_empty() {
                    self.products.remove(&v.product);
                }
            }
        }
        true
    }

    /// The variant with `sku`.
    pub fn by_sku_mut(&mut self, sku: &str) -> Option<&mut Variant> {
        let id = *self.by_sku.get(sku)?;
        self.variants.get_mut(&id)
    }

    /// The variant owning inventory item `item`.
    pub fn by_item(&self, item: u64) -> Option<&Variant> {
        self.variants.get(self.by_item.get(&item)?)
    }

    /// The variant owning inventory item `item`, mutably.
    pub fn by_item_mut(&mut self, item: u64) -> Option<&mut Variant> {
        let id = *self.by_item.get(&item)?;
        self.variants.get_mut(&id)
    }

    /// The variants of `product`, in creation order (no catalog scan).
    pub fn product_variants(&self, product: u64) -> impl Iterator<Item = &Variant> {
        self.products
            .get(&product)
            .into_iter()
            .flatten()
            .filter_map(|id| self.variants.get(id))
    }

    /// The variant with `sku`.
    pub fn by_sku(&self, sku: &str) -> Option<&Variant> {
        self.variants.get(self.by_sku.get(sku)?)
    }

    /// Whether the product exists.
    pub fn has_product(&self, product: u64) -> bool {
        self.products.contains_key(&product)
    }

    /// The listing as a [`SimRecord`].
    pub fn to_record(&self, v: &Variant) -> SimRecord {
        SimRecord {
            sku: v.sku.clone(),
            title: v.title.clone(),
            offer: self.offer(v),
            stock: v.levels.clone(),
        }
    }

    /// The variant's offer in omnisync terms.
    pub fn offer(&self, v: &Variant) -> Offer {
        offer_from_money(
            Money::new(v.price, self.currency),
            v.compare_at.map(|c| Money::new(c, self.currency)),
        )
    }

    /// All listings sorted by SKU.
    pub fn records(&self) -> Vec<SimRecord> {
        let mut out: Vec<SimRecord> = self.variants.values().map(|v| self.to_record(v)).collect();
        out.sort_by(|a, b| a.sku.cmp(&b.sku));
        out
    }

    /// Up to `first` variants after id `after` (exclusive) matching `filter`, and whether
    /// more follow. Without a filter this walks the id index from `after`: O(first).
    pub fn page(&self, after: u64, first: usize, filter: &Filter) -> (Vec<&Variant>, bool) {
        match filter {
            Filter::All => {
                let mut it = self
                    .variants
                    .range((Bound::Excluded(after), Bound::Unbounded))
                    .map(|(_, v)| v);
                let page: Vec<&Variant> = it.by_ref().take(first).collect();
                let more = it.next().is_some();
                (page, more)
            }
            Filter::Skus(skus) => {
                let mut ids: Vec<u64> = skus
                    .iter()
                    .filter_map(|s| self.by_sku.get(s).copied())
                    .filter(|id| *id > after)
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                let more = ids.len() > first;
                let page = ids
                    .into_iter()
                    .take(first)
                    .filter_map(|id| self.variants.get(&id))
                    .collect();
                (page, more)
            }
            Filter::Text(text) => {
                let mut it = self
                    .variants
                    .range((Bound::Excluded(after), Bound::Unbounded))
                    .map(|(_, v)| v)
                    .filter(|v| {
                        v.sku.to_lowercase().contains(text) || v.title.to_lowercase().contains(text)
                    });
                let page: Vec<&Variant> = it.by_ref().take(first).collect();
                let more = it.next().is_some();
                (page, more)
            }
        }
    }
}

/// A `productVariants(query:)` filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// No query.
    All,
    /// `sku:"A" OR sku:B …`: exact SKUs.
    Skus(Vec<String>),
    /// Anything else: a case-insensitive substring of SKU or title.
    Text(String),
}

impl Filter {
    /// Parses a Shopify search string as far as the simulator understands it.
    pub fn parse(query: Option<&str>) -> Filter {
        let Some(q) = query.map(str::trim).filter(|q| !q.is_empty()) else {
            return Filter::All;
        };
        parse_sku_terms(q).map_or_else(|| Filter::Text(q.to_lowercase()), Filter::Skus)
    }
}

/// `sku:"A" OR sku:B` → `["A", "B"]`; `None` for anything else.
fn parse_sku_terms(q: &str) -> Option<Vec<String>> {
    let chars: Vec<char> = q.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        let prefix: String = chars.get(i..i + 4)?.iter().collect();
        if !prefix.eq_ignore_ascii_case("sku:") {
            return None;
        }
        i += 4;
        let mut value = String::new();
        if chars.get(i) == Some(&'"') {
            i += 1;
            loop {
                match chars.get(i)? {
                    '\\' => {
                        value.push(*chars.get(i + 1)?);
                        i += 2;
                    }
                    '"' => {
                        i += 1;
                        break;
                    }
                    c => {
                        value.push(*c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < chars.len() && !chars[i].is_whitespace() {
                value.push(chars[i]);
                i += 1;
            }
        }
        out.push(value);
        skip_ws(&mut i);
        if i >= chars.len() {
            return Some(out);
        }
        let op: String = chars.get(i..i + 2)?.iter().collect();
        if op != "OR" {
            return None;
        }
        i += 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(sku: &str) -> SimRecord {
        SimRecord {
            sku: sku.into(),
            title: format!("Item {sku}"),
            offer: Offer::regular(Money::new(1000, Currency::NOK)),
            stock: BTreeMap::new(),
        }
    }

    #[test]
    fn parses_sku_searches() {
        assert_eq!(
            Filter::parse(Some(r#"sku:"A 1" OR sku:B OR sku:"C\"3""#)),
            Filter::Skus(vec!["A 1".into(), "B".into(), "C\"3".into()])
        );
        assert_eq!(Filter::parse(None), Filter::All);
        assert_eq!(Filter::parse(Some("shirt")), Filter::Text("shirt".into()));
        assert_eq!(
            Filter::parse(Some("sku:A AND title:x")),
            Filter::Text("sku:a and title:x".into())
        );
    }

    #[test]
    fn seeds_groups_and_pages() {
        let mut c = Catalog::new(Currency::NOK, vec![gid("Location", 1)]);
        c.seed((0..10).map(|i| rec(&format!("S{i:02}"))).collect());
        assert_eq!(c.variants.len(), 10);
        let products: Vec<u64> = c.variants.values().map(|v| v.product).collect();
        // Group sizes 1, 2, 3, 1, 2, …
        assert_eq!(products[0] + 1, products[1]);
        assert_eq!(products[1], products[2]);
        assert_eq!(products[3], products[5]);
        assert_eq!(products[6] + 1, products[7]);
        let (page, more) = c.page(0, 4, &Filter::All);
        assert_eq!(page.len(), 4);
        assert!(more);
        let last = page[3].id;
        let (rest, more) = c.page(last, 100, &Filter::All);
        assert_eq!(rest.len(), 6);
        assert!(!more);
        let (found, _) = c.page(0, 10, &Filter::Skus(vec!["S03".into(), "nope".into()]));
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].levels.len(),
            1,
            "empty stock → stocked at every location"
        );
        assert!(c.remove("S03"));
        assert!(!c.remove("S03"));
    }

    #[test]
    fn gids_roundtrip() {
        assert_eq!(parse_gid(&gid("Product", 7), "Product"), Some(7));
        assert_eq!(parse_gid("gid://shopify/Product/x", "Product"), None);
        assert_eq!(parse_gid(&gid("Product", 7), "ProductVariant"), None);
    }
}

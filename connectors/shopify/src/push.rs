//! Writing corrections: stock through `inventorySetQuantities` (≤ `max_input_array`
//! quantities per call, compare-and-set via `changeFromQuantity`, a deterministic
//! `@idempotent` key), prices through `productVariantsBulkUpdate` (one per product, several
//! aliased in one document within the cost budget, `allowPartialUpdates: true`). Outcomes
//! are per item; `userErrors` are attributed to items through their `field` path.

use std::collections::HashSet;

use omnisync_sdk::{Change, ConnectorError, Correction, PushOutcome};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::graphql::{Gql, short};
use crate::mapping::{AVAILABLE, REF_INVENTORY_ITEM_ID, REF_PRODUCT_ID, is_gid, money_from_offer};
use crate::settings::Settings;

/// Most resend rounds for a stock call whose userErrors left other items unapplied.
const MAX_ROUNDS: usize = 5;

/// One stock write.
#[derive(Debug, Clone)]
struct StockWrite {
    idx: usize,
    key: String,
    item: String,
    location: String,
    quantity: i64,
    expected: Option<i64>,
}

/// One price write.
#[derive(Debug, Clone)]
struct PriceWrite {
    idx: usize,
    key: String,
    variant: String,
    price: String,
    compare_at: Option<String>,
}

/// Price writes of one product (one `productVariantsBulkUpdate`).
#[derive(Debug, Clone)]
struct PriceGroup {
    product: String,
    writes: Vec<PriceWrite>,
}

#[derive(Debug, Clone, Deserialize)]
struct UserError {
    #[serde(default)]
    field: Option<Vec<String>>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: Option<String>,
}

impl UserError {
    fn describe(&self) -> String {
        match &self.code {
            Some(code) => format!("{code}: {}", self.message),
            None => self.message.clone(),
        }
    }

    /// The list index in `field` after `list` (e.g. `["input","quantities","3","quantity"]`).
    fn index_in(&self, list: &str) -> Option<usize> {
        let field = self.field.as_ref()?;
        let pos = field.iter().position(|f| f == list)?;
        field.get(pos + 1)?.parse().ok()
    }
}

fn rejected(reason: impl Into<String>, retryable: bool) -> PushOutcome {
    PushOutcome::Rejected {
        reason: reason.into(),
        retryable,
    }
}

/// A deterministic UUID-shaped key from the exact content of one call: the same request
/// gets the same key (Shopify drops the repeat), a changed request a new one.
pub fn call_key(parts: &[String]) -> String {
    let mut hasher = Sha256::new();
    for p in parts {
        hasher.update(p.as_bytes());
        hasher.update([0u8]);
    }
    let d = hasher.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80; // version 8: custom
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Pushes a batch; see the module docs.
pub async fn push(
    gql: &Gql,
    settings: &Settings,
    batch: &[Correction],
) -> Result<Vec<PushOutcome>, ConnectorError> {
    let mut outcomes: Vec<Option<PushOutcome>> = vec![None; batch.len()];
    let mut stock = Vec::new();
    let mut prices = Vec::new();
    for (idx, c) in batch.iter().enumerate() {
        match plan(idx, c, settings) {
            Ok(Planned::Stock(w)) => stock.push(w),
            Ok(Planned::Price(product, w)) => prices.push((product, w)),
            Err(outcome) => outcomes[idx] = Some(outcome),
        }
    }

    // The calls to make, in order.
    let mut calls: Vec<Call> = stock_chunks(stock, settings.max_input_array)
        .into_iter()
        .map(Call::Stock)
        .collect();
    calls.extend(
        price_documents(prices, settings)
            .into_iter()
            .map(Call::Prices),
    );

    let mut applied_any = false;
    let mut stop: Option<ConnectorError> = None;
    for call in &calls {
        if let Some(e) = &stop {
            for idx in call.indices() {
                outcomes[idx] = Some(rejected(
                    format!("not sent: an earlier call failed: {e}"),
                    true,
                ));
            }
            continue;
        }
        let result = match call {
            Call::Stock(writes) => set_quantities(gql, settings, writes).await,
            Call::Prices(groups) => update_prices(gql, groups).await,
        };
        match result {
            Ok(results) => {
                for (idx, outcome) in results {
                    applied_any |= outcome == PushOutcome::Applied;
                    outcomes[idx] = Some(outcome);
                }
            }
            // Nothing applied yet: the whole push failed and can be retried as is.
            Err(e) if !applied_any => return Err(e),
            Err(e) => {
                let retryable = e.is_retryable();
                for idx in call.indices() {
                    outcomes[idx] = Some(rejected(e.to_string(), retryable));
                }
                if retryable {
                    stop = Some(e);
                }
            }
        }
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| rejected("no outcome recorded (connector bug)", true)))
        .collect())
}

enum Planned {
    Stock(StockWrite),
    Price(String, PriceWrite),
}

enum Call {
    Stock(Vec<StockWrite>),
    Prices(Vec<PriceGroup>),
}

impl Call {
    fn indices(&self) -> Vec<usize> {
        match self {
            Call::Stock(w) => w.iter().map(|w| w.idx).collect(),
            Call::Prices(g) => g
                .iter()
                .flat_map(|g| g.writes.iter().map(|w| w.idx))
                .collect(),
        }
    }
}

/// Checks one correction and turns it into a write, or into an outcome when it cannot be
/// sent at all.
fn plan(idx: usize, c: &Correction, settings: &Settings) -> Result<Planned, PushOutcome> {
    match &c.change {
        Change::Create { .. } => Err(rejected(
            "creating listings is not supported by the shopify connector",
            false,
        )),
        Change::Stock {
            location,
            quantity,
            expected,
        } => {
            let item = c
                .refs
                .get(REF_INVENTORY_ITEM_ID)
                .filter(|i| is_gid(i, "InventoryItem"))
                .ok_or_else(|| {
                    rejected(
                        format!(
                            "missing or invalid refs.{REF_INVENTORY_ITEM_ID}: read the record again"
                        ),
                        false,
                    )
                })?;
            if !is_gid(location, "Location") {
                return Err(rejected(
                    format!(
                        "location code {location:?} is not a Shopify location gid (gid://shopify/Location/N)"
                    ),
                    false,
                ));
            }
            let in_range = |q: i64| i32::try_from(q).is_ok();
            if !in_range(*quantity) || !expected.is_none_or(in_range) {
                return Err(rejected(
                    format!("quantity {quantity} is out of range"),
                    false,
                ));
            }
            Ok(Planned::Stock(StockWrite {
                idx,
                key: c.idempotency_key.clone(),
                item: item.clone(),
                location: location.clone(),
                quantity: *quantity,
                expected: *expected,
            }))
        }
        Change::Offer { offer } => {
            let variant = c
                .external_id
                .as_ref()
                .filter(|v| is_gid(v, "ProductVariant"))
                .ok_or_else(|| {
                    rejected(
                        "missing or invalid external_id: expected a variant gid",
                        false,
                    )
                })?;
            let product = c
                .refs
                .get(REF_PRODUCT_ID)
                .filter(|p| is_gid(p, "Product"))
                .ok_or_else(|| {
                    rejected(
                        format!("missing or invalid refs.{REF_PRODUCT_ID}: read the record again"),
                        false,
                    )
                })?;
            let currencies_ok = offer.price.currency == settings.currency
                && offer.sale.is_none_or(|s| s.currency == settings.currency);
            if !currencies_ok {
                return Err(rejected(
                    format!(
                        "offer is in {} but the shop sells in {}",
                        offer.price.currency, settings.currency
                    ),
                    false,
                ));
            }
            let (price, compare_at) = money_from_offer(offer);
            Ok(Planned::Price(
                product.clone(),
                PriceWrite {
                    idx,
                    key: c.idempotency_key.clone(),
                    variant: variant.clone(),
                    price: price.major_string(),
                    compare_at: compare_at.map(|m| m.major_string()),
                },
            ))
        }
    }
}

/// Splits stock writes into calls of at most `max` quantities with no (item, location)
/// pair twice in one call (Shopify refuses duplicates).
fn stock_chunks(writes: Vec<StockWrite>, max: usize) -> Vec<Vec<StockWrite>> {
    /// A chunk and the (item, location) pairs in it.
    type Chunk = (Vec<StockWrite>, HashSet<(String, String)>);
    let mut chunks: Vec<Chunk> = Vec::new();
    for w in writes {
        let pair = (w.item.clone(), w.location.clone());
        let slot = chunks
            .iter_mut()
            .find(|(c, pairs)| c.len() < max && !pairs.contains(&pair));
        match slot {
            Some((c, pairs)) => {
                pairs.insert(pair);
                c.push(w);
            }
            None => chunks.push((vec![w], HashSet::from([pair]))),
        }
    }
    chunks.into_iter().map(|(c, _)| c).collect()
}

/// Groups price writes by product (first appearance order; a variant twice goes to a second
/// group) and packs groups into documents within the alias and cost budget.
fn price_documents(writes: Vec<(String, PriceWrite)>, settings: &Settings) -> Vec<Vec<PriceGroup>> {
    let mut groups: Vec<PriceGroup> = Vec::new();
    for (product, w) in writes {
        let slot = groups.iter_mut().find(|g| {
            g.product == product
                && g.writes.len() < settings.max_input_array
                && !g.writes.iter().any(|x| x.variant == w.variant)
        });
        match slot {
            Some(g) => g.writes.push(w),
            None => groups.push(PriceGroup {
                product,
                writes: vec![w],
            }),
        }
    }
    let per_doc = settings
        .price_mutations_per_request
        .min((settings.max_query_cost / 10).max(1) as usize)
        .max(1);
    let mut docs = Vec::new();
    let mut it = groups.into_iter().peekable();
    while it.peek().is_some() {
        docs.push(it.by_ref().take(per_doc).collect());
    }
    docs
}

const SET_QUANTITIES_SELECTION: &str =
    "{ inventoryAdjustmentGroup { id } userErrors { field message code } }";

/// One `inventorySetQuantities` call, resending the items a refused call left unapplied.
async fn set_quantities(
    gql: &Gql,
    settings: &Settings,
    writes: &[StockWrite],
) -> Result<Vec<(usize, PushOutcome)>, ConnectorError> {
    let what = "inventorySetQuantities";
    let mut results = Vec::new();
    let mut pending: Vec<&StockWrite> = writes.iter().collect();
    for _round in 0..MAX_ROUNDS {
        if pending.is_empty() {
            return Ok(results);
        }
        let mut parts = vec![settings.inventory_reason.clone()];
        for w in &pending {
            parts.push(format!(
                "{}|{}|{}|{}|{:?}",
                w.key, w.item, w.location, w.quantity, w.expected
            ));
        }
        let key = call_key(&parts);
        // The key is a hex UUID: safe to inline. Shopify's examples pass it as a literal.
        let query = format!(
            "mutation SetQuantities($input: InventorySetQuantitiesInput!) {{ inventorySetQuantities(input: $input) @idempotent(key: \"{key}\") {SET_QUANTITIES_SELECTION} }}"
        );
        let quantities: Vec<Value> = pending
            .iter()
            .map(|w| {
                json!({
                    "inventoryItemId": w.item,
                    "locationId": w.location,
                    "quantity": w.quantity,
                    // Always explicit: null opts out of compare-and-set (required from 2026-04).
                    "changeFromQuantity": w.expected,
                })
            })
            .collect();
        let variables = json!({
            "input": {
                "name": AVAILABLE,
                "reason": settings.inventory_reason,
                "referenceDocumentUri": format!("{}/{key}", settings.reference_document_prefix.trim_end_matches('/')),
                "quantities": quantities,
            }
        });
        let answer = gql.run(what, 10, &query, variables).await?;
        let payload = answer
            .data
            .get("inventorySetQuantities")
            .filter(|p| p.is_object())
            .ok_or_else(|| {
                ConnectorError::protocol(
                    gql.operation(what),
                    format!("unexpected answer shape: {}", short(&answer.data)),
                )
            })?;
        let applied = payload
            .get("inventoryAdjustmentGroup")
            .is_some_and(Value::is_object);
        let errors: Vec<UserError> = match payload.get("userErrors") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
                ConnectorError::protocol(
                    gql.operation(what),
                    format!("unreadable userErrors: {}", short(v)),
                )
            })?,
        };
        if errors.is_empty() {
            results.extend(pending.iter().map(|w| (w.idx, PushOutcome::Applied)));
            return Ok(results);
        }
        let mut failed = HashSet::new();
        let mut call_level = Vec::new();
        for e in &errors {
            match e.index_in("quantities").filter(|i| *i < pending.len()) {
                Some(i) => {
                    if failed.insert(i) {
                        results.push((pending[i].idx, stock_outcome(e)));
                    }
                }
                None => call_level.push(e.clone()),
            }
        }
        if applied {
            if !call_level.is_empty() {
                tracing::warn!(errors = ?call_level.iter().map(UserError::describe).collect::<Vec<_>>(), "shopify applied inventorySetQuantities despite call-level userErrors");
            }
            results.extend(
                pending
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !failed.contains(i))
                    .map(|(_, w)| (w.idx, PushOutcome::Applied)),
            );
            return Ok(results);
        }
        if !call_level.is_empty() || failed.is_empty() {
            return Err(stock_call_error(gql, &call_level, &errors));
        }
        // Nothing was applied: send the others again without the refused ones.
        pending = pending
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !failed.contains(i))
            .map(|(_, w)| w)
            .collect();
    }
    results.extend(pending.iter().map(|w| {
        (
            w.idx,
            rejected(
                "not applied: shopify kept refusing the call it was in",
                true,
            ),
        )
    }));
    Ok(results)
}

fn stock_outcome(e: &UserError) -> PushOutcome {
    match e.code.as_deref() {
        Some("CHANGE_FROM_QUANTITY_STALE" | "COMPARE_QUANTITY_STALE") => {
            PushOutcome::Stale { current: None }
        }
        Some("IDEMPOTENCY_CONCURRENT_REQUEST") => rejected(e.describe(), true),
        _ => rejected(e.describe(), false),
    }
}

fn stock_call_error(gql: &Gql, call_level: &[UserError], all: &[UserError]) -> ConnectorError {
    let operation = gql.operation("inventorySetQuantities");
    let shown = if call_level.is_empty() {
        all
    } else {
        call_level
    };
    let message = shown
        .iter()
        .take(3)
        .map(UserError::describe)
        .collect::<Vec<_>>()
        .join("; ");
    match shown.first().and_then(|e| e.code.as_deref()) {
        Some("IDEMPOTENCY_CONCURRENT_REQUEST") => ConnectorError::transient(operation, message),
        Some("INVALID_REASON" | "INVALID_NAME" | "INVALID_REFERENCE_DOCUMENT") => {
            ConnectorError::config(operation, message)
        }
        _ => ConnectorError::permanent(operation, message),
    }
}

const PRICE_SELECTION: &str = "{ productVariants { id } userErrors { field message code } }";

/// One document of aliased `productVariantsBulkUpdate` mutations.
async fn update_prices(
    gql: &Gql,
    groups: &[PriceGroup],
) -> Result<Vec<(usize, PushOutcome)>, ConnectorError> {
    let what = "productVariantsBulkUpdate";
    let mut params = Vec::new();
    let mut fields = Vec::new();
    let mut variables = serde_json::Map::new();
    for (k, g) in groups.iter().enumerate() {
        params.push(format!("$p{k}: ID!, $v{k}: [ProductVariantsBulkInput!]!"));
        fields.push(format!(
            "p{k}: productVariantsBulkUpdate(productId: $p{k}, variants: $v{k}, allowPartialUpdates: true) {PRICE_SELECTION}"
        ));
        variables.insert(format!("p{k}"), json!(g.product));
        let variants: Vec<Value> = g
            .writes
            .iter()
            .map(|w| json!({ "id": w.variant, "price": w.price, "compareAtPrice": w.compare_at }))
            .collect();
        variables.insert(format!("v{k}"), Value::Array(variants));
    }
    let query = format!(
        "mutation UpdatePrices({}) {{ {} }}",
        params.join(", "),
        fields.join(" ")
    );
    let cost = u32::try_from(groups.len() * 10).unwrap_or(u32::MAX);
    // Prices yield the bucket to stock writes and reads (`stock_reserve_percent`).
    let answer = gql
        .run_partial_spare(what, cost, &query, Value::Object(variables))
        .await?;
    let mut results = Vec::new();
    for (k, g) in groups.iter().enumerate() {
        let alias = format!("p{k}");
        if let Some(e) = answer
            .errors
            .iter()
            .find(|e| e.root_field() == Some(alias.as_str()))
        {
            let reason = match e.code() {
                Some(code) => format!("{code}: {}", e.message),
                None => e.message.clone(),
            };
            results.extend(
                g.writes
                    .iter()
                    .map(|w| (w.idx, rejected(reason.clone(), false))),
            );
            continue;
        }
        let Some(payload) = answer.data.get(&alias).filter(|p| p.is_object()) else {
            results.extend(g.writes.iter().map(|w| {
                (
                    w.idx,
                    rejected(
                        format!("{}: no payload for {alias}", gql.operation(what)),
                        true,
                    ),
                )
            }));
            continue;
        };
        let errors: Vec<UserError> = payload
            .get("userErrors")
            .filter(|v| !v.is_null())
            .map(|v| serde_json::from_value(v.clone()))
            .transpose()
            .map_err(|_| {
                ConnectorError::protocol(
                    gql.operation(what),
                    format!("unreadable userErrors: {}", short(payload)),
                )
            })?
            .unwrap_or_default();
        let mut item_errors: Vec<Option<&UserError>> = vec![None; g.writes.len()];
        let mut group_error: Option<&UserError> = None;
        for e in &errors {
            match e.index_in("variants").filter(|i| *i < g.writes.len()) {
                Some(i) => item_errors[i] = item_errors[i].or(Some(e)),
                None => group_error = group_error.or(Some(e)),
            }
        }
        for (i, w) in g.writes.iter().enumerate() {
            let outcome = match (item_errors[i], group_error) {
                (Some(e), _) | (None, Some(e)) => rejected(e.describe(), false),
                (None, None) => PushOutcome::Applied,
            };
            results.push((w.idx, outcome));
        }
        // Keys are not sent for prices (the mutation is an absolute set and takes none);
        // keep them in the log for correlation.
        tracing::debug!(product = %g.product, keys = ?g.writes.iter().map(|w| &w.key).collect::<Vec<_>>(), "shopify prices pushed");
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnisync_sdk::{Currency, Money, Offer};
    use std::collections::BTreeMap;

    fn settings() -> Settings {
        Settings::new("https://x.example", "literal:t".parse().expect("secret"))
    }

    fn stock(idx: usize, item: &str, loc: &str) -> StockWrite {
        StockWrite {
            idx,
            key: format!("k{idx}"),
            item: item.into(),
            location: loc.into(),
            quantity: 1,
            expected: None,
        }
    }

    #[test]
    fn keys_are_uuid_shaped_and_deterministic() {
        let a = call_key(&["x".into(), "y".into()]);
        assert_eq!(a, call_key(&["x".into(), "y".into()]));
        assert_ne!(a, call_key(&["xy".into()]));
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'8');
    }

    #[test]
    fn stock_chunks_respect_limit_and_duplicates() {
        let writes = vec![
            stock(0, "i1", "l1"),
            stock(1, "i1", "l1"),
            stock(2, "i2", "l1"),
            stock(3, "i3", "l1"),
        ];
        let chunks = stock_chunks(writes, 2);
        assert!(chunks.iter().all(|c| c.len() <= 2));
        for c in &chunks {
            let pairs: HashSet<_> = c.iter().map(|w| (&w.item, &w.location)).collect();
            assert_eq!(pairs.len(), c.len());
        }
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 4);
    }

    #[test]
    fn price_documents_group_by_product_within_budget() {
        let mut s = settings();
        s.price_mutations_per_request = 2;
        let w = |idx: usize, v: &str| PriceWrite {
            idx,
            key: String::new(),
            variant: v.into(),
            price: "1.00".into(),
            compare_at: None,
        };
        let docs = price_documents(
            vec![
                ("P1".into(), w(0, "V1")),
                ("P2".into(), w(1, "V2")),
                ("P1".into(), w(2, "V3")),
                ("P3".into(), w(3, "V4")),
                ("P1".into(), w(4, "V1")),
            ],
            &s,
        );
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0][0].product, "P1");
        assert_eq!(docs[0][0].writes.len(), 2);
        assert_eq!(
            docs[1].len(),
            2,
            "P3 and the second P1 group (duplicate variant)"
        );
    }

    #[test]
    fn plans_refuse_what_cannot_be_sent() {
        let s = settings();
        let mut refs = BTreeMap::new();
        refs.insert(
            REF_PRODUCT_ID.to_string(),
            "gid://shopify/Product/1".to_string(),
        );
        let c = Correction {
            idempotency_key: "k".into(),
            sku: "A".into(),
            external_id: Some("gid://shopify/ProductVariant/1".into()),
            refs: refs.clone(),
            change: Change::Offer {
                offer: Offer::regular(Money::new(100, Currency::SEK)),
            },
        };
        assert!(matches!(
            plan(0, &c, &s),
            Err(PushOutcome::Rejected {
                retryable: false,
                ..
            })
        ));
        let c = Correction {
            change: Change::Stock {
                location: "oslo".into(),
                quantity: 1,
                expected: None,
            },
            ..c
        };
        assert!(matches!(plan(0, &c, &s), Err(PushOutcome::Rejected { .. })));
    }

    #[test]
    fn user_error_indices() {
        let e = UserError {
            field: Some(vec![
                "input".into(),
                "quantities".into(),
                "3".into(),
                "changeFromQuantity".into(),
            ]),
            message: "m".into(),
            code: Some("CHANGE_FROM_QUANTITY_STALE".into()),
        };
        assert_eq!(e.index_in("quantities"), Some(3));
        assert_eq!(stock_outcome(&e), PushOutcome::Stale { current: None });
        let e = UserError {
            field: Some(vec!["productId".into()]),
            message: "m".into(),
            code: None,
        };
        assert_eq!(e.index_in("variants"), None);
    }
}

//! Helpers the Meta adapter's test files share.

use std::collections::BTreeMap;

use omnisync_sdk::{Change, Correction, StockLevel};

/// A stock correction for a catalog item, which holds one quantity.
pub fn stock(sku: &str, quantity: i64) -> Correction {
    Correction {
        idempotency_key: format!("{sku}-{quantity}"),
        sku: sku.to_string(),
        external_id: Some(sku.to_string()),
        refs: BTreeMap::new(),
        change: Change::Stock {
            location: StockLevel::DEFAULT_LOCATION.to_string(),
            quantity,
            expected: None,
        },
    }
}

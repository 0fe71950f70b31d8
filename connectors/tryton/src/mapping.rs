//! Mapping Tryton values onto the canonical model, item by item.
//!
//! - Prices are Tryton `Decimal` objects (`{"__class__": "Decimal", "decimal": "199.00"}`) in
//!   the company currency; they become exact [`Money`] (never a float). A price that does not
//!   fit the currency (too many decimals, junk) leaves the record without an offer.
//! - Quantities are floats (Tryton units of measure may be fractional). They are rounded
//!   toward zero, with a warning when a fraction is dropped. `available` is
//!   `max(0, min(quantity, forecast_quantity))` so stock already promised to planned
//!   shipments is not offered again; `on_hand` is `quantity`.
//! - A product without a code (SKU) is skipped with a warning.

use omnisync_sdk::{Currency, Money, MoneyError, Offer, StockLevel};
use serde_json::Value;

/// Why one product (or one of its values) could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ItemError {
    /// The product has no code, so it cannot be bound to a SKU.
    #[error("product has no code (SKU)")]
    NoCode,
    /// The price field holds something other than a decimal.
    #[error("field {field} is not a Decimal: {value}")]
    PriceShape {
        /// The field read.
        field: String,
        /// The value, shortened.
        value: String,
    },
    /// The price is a decimal that is not an amount of the currency.
    #[error("field {field}: {source}")]
    Price {
        /// The field read.
        field: String,
        /// Why.
        source: MoneyError,
    },
    /// A quantity is not a number.
    #[error("field {field} at location {location} is not a number: {value}")]
    Quantity {
        /// The field read.
        field: &'static str,
        /// The Tryton location id.
        location: i64,
        /// The value, shortened.
        value: String,
    },
    /// The product is missing from the answer for one location.
    #[error("product missing from the stock answer for location {0}")]
    MissingAtLocation(i64),
}

/// Reads a Tryton `Decimal` (or a plain decimal string). `null`/`false` is `Ok(None)`.
pub fn decimal_string(field: &str, value: &Value) -> Result<Option<String>, ItemError> {
    match value {
        Value::Null | Value::Bool(false) => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Object(o) if o.get("__class__").and_then(Value::as_str) == Some("Decimal") => {
            match o.get("decimal") {
                Some(Value::String(s)) => Ok(Some(s.clone())),
                _ => Err(price_shape(field, value)),
            }
        }
        _ => Err(price_shape(field, value)),
    }
}

fn price_shape(field: &str, value: &Value) -> ItemError {
    ItemError::PriceShape {
        field: field.to_string(),
        value: short(value),
    }
}

/// The offer from the price field, falling back to `fallback` when the price field is null.
/// `Ok(None)` when neither holds a price.
pub fn offer(
    row: &serde_json::Map<String, Value>,
    price_field: &str,
    fallback: Option<&str>,
    currency: Currency,
) -> Result<Option<Offer>, ItemError> {
    let mut fields = std::iter::once(price_field).chain(fallback);
    let found = fields.try_fold(None, |found, field| {
        if found.is_some() {
            return Ok(found);
        }
        let value = row.get(field).unwrap_or(&Value::Null);
        Ok::<_, ItemError>(decimal_string(field, value)?.map(|s| (field, s)))
    })?;
    match found {
        None => Ok(None),
        Some((field, amount)) => Money::parse_major(&amount, currency)
            .map(|m| Some(Offer::regular(m)))
            .map_err(|source| ItemError::Price {
                field: field.to_string(),
                source,
            }),
    }
}

/// A quantity in whole units: the float rounded toward zero, and whether a fraction was
/// dropped. `null` counts as zero (services carry no stock).
pub fn quantity(
    field: &'static str,
    location: i64,
    value: &Value,
) -> Result<(i64, bool), ItemError> {
    let q = match value {
        Value::Null => return Ok((0, false)),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
    .filter(|q| q.is_finite())
    .ok_or_else(|| ItemError::Quantity {
        field,
        location,
        value: short(value),
    })?;
    let whole = q.trunc();
    // `as` saturates at the i64 range, which no real stock reaches.
    Ok((whole as i64, whole != q))
}

/// A stock level from Tryton's `quantity` and `forecast_quantity` at one location.
pub fn stock_level(location: i64, quantity: i64, forecast: i64) -> StockLevel {
    StockLevel {
        location: location.to_string(),
        available: quantity.min(forecast).max(0),
        on_hand: Some(quantity),
    }
}

/// The product code, if it is a usable SKU.
pub fn sku(row: &serde_json::Map<String, Value>) -> Result<String, ItemError> {
    match row.get("code") {
        Some(Value::String(code)) if !code.trim().is_empty() => Ok(code.clone()),
        _ => Err(ItemError::NoCode),
    }
}

fn short(value: &Value) -> String {
    let s = value.to_string();
    if s.chars().count() > 60 {
        let head: String = s.chars().take(60).collect();
        format!("{head}…")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn decimals_map_exactly() {
        let r = row(json!({"list_price": {"__class__": "Decimal", "decimal": "199.00"}}));
        let o = offer(&r, "list_price", None, Currency::NOK)
            .unwrap()
            .unwrap();
        assert_eq!(o.price, Money::new(19900, Currency::NOK));
        assert_eq!(o.sale, None);
        // Tryton keeps 4 price digits: trailing zeros are fine, real sub-øre amounts are not.
        let r = row(json!({"list_price": {"__class__": "Decimal", "decimal": "24.9900"}}));
        assert_eq!(
            offer(&r, "list_price", None, Currency::NOK)
                .unwrap()
                .unwrap()
                .price
                .minor,
            2499
        );
        let r = row(json!({"list_price": {"__class__": "Decimal", "decimal": "24.9950"}}));
        assert!(matches!(
            offer(&r, "list_price", None, Currency::NOK),
            Err(ItemError::Price { .. })
        ));
        let r = row(json!({"list_price": 24.99}));
        assert!(matches!(
            offer(&r, "list_price", None, Currency::NOK),
            Err(ItemError::PriceShape { .. })
        ));
    }

    #[test]
    fn falls_back_to_the_template_price() {
        let r = row(json!({
            "list_price": null,
            "list_price_used": {"__class__": "Decimal", "decimal": "19.99"}
        }));
        let o = offer(&r, "list_price", Some("list_price_used"), Currency::EUR).unwrap();
        assert_eq!(o.unwrap().price, Money::new(1999, Currency::EUR));
        assert_eq!(offer(&r, "list_price", None, Currency::EUR).unwrap(), None);
        let r = row(json!({
            "list_price": {"__class__": "Decimal", "decimal": "24.99"},
            "list_price_used": {"__class__": "Decimal", "decimal": "19.99"}
        }));
        let o = offer(&r, "list_price", Some("list_price_used"), Currency::EUR).unwrap();
        assert_eq!(o.unwrap().price.minor, 2499);
    }

    #[test]
    fn quantities_round_toward_zero() {
        assert_eq!(quantity("quantity", 3, &json!(10.0)).unwrap(), (10, false));
        assert_eq!(quantity("quantity", 3, &json!(2.75)).unwrap(), (2, true));
        assert_eq!(quantity("quantity", 3, &json!(-1.5)).unwrap(), (-1, true));
        assert_eq!(quantity("quantity", 3, &json!(null)).unwrap(), (0, false));
        assert!(quantity("quantity", 3, &json!("7")).is_err());
    }

    #[test]
    fn available_is_bounded_by_forecast_and_zero() {
        let l = stock_level(3, 10, 4);
        assert_eq!(
            (l.location.as_str(), l.available, l.on_hand),
            ("3", 4, Some(10))
        );
        let l = stock_level(11, 5, 9);
        assert_eq!((l.available, l.on_hand), (5, Some(5)));
        let l = stock_level(7, -2, -3);
        assert_eq!((l.available, l.on_hand), (0, Some(-2)));
    }

    #[test]
    fn codes() {
        assert_eq!(sku(&row(json!({"code": "SHIRT-M"}))).unwrap(), "SHIRT-M");
        assert_eq!(sku(&row(json!({"code": null}))), Err(ItemError::NoCode));
        assert_eq!(sku(&row(json!({"code": "  "}))), Err(ItemError::NoCode));
        assert_eq!(sku(&row(json!({}))), Err(ItemError::NoCode));
    }
}

//! The canonical values shared by every connector and the daemon.
//!
//! Money is an integer number of minor units plus an ISO 4217 currency: never a float.
//! Conversions to and from the decimal strings that APIs use (`"129.90"`) are exact and
//! refuse values that cannot be represented (too many decimals, out of range).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Why a money value could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The currency code is not three ASCII capital letters.
    #[error("invalid currency code {0:?}: expected three capital letters such as NOK")]
    Currency(String),
    /// The amount is not a decimal number.
    #[error("invalid amount {0:?}: expected a decimal number such as 129.90")]
    Amount(String),
    /// The amount has more decimals than the currency's minor unit allows.
    #[error("amount {amount} has more than {exponent} decimals for {currency}")]
    Precision {
        /// The amount as given.
        amount: String,
        /// The currency.
        currency: Currency,
        /// Decimals the currency allows.
        exponent: u32,
    },
    /// The amount does not fit in 64-bit minor units.
    #[error("amount {0} is out of range")]
    Range(String),
}

/// An ISO 4217 currency code, stored inline (`Copy`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    /// Norwegian krone.
    pub const NOK: Currency = Currency(*b"NOK");
    /// Swedish krona.
    pub const SEK: Currency = Currency(*b"SEK");
    /// Danish krone.
    pub const DKK: Currency = Currency(*b"DKK");
    /// Euro.
    pub const EUR: Currency = Currency(*b"EUR");

    /// The three-letter code.
    pub fn code(&self) -> &str {
        // The constructor only admits ASCII capitals.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Number of decimals of the minor unit (ISO 4217). Zero-decimal currencies are listed;
    /// everything else has two.
    pub fn exponent(&self) -> u32 {
        match &self.0 {
            b"JPY" | b"KRW" | b"ISK" | b"CLP" | b"VND" | b"XOF" | b"XAF" | b"UGX" | b"PYG" => 0,
            b"BHD" | b"KWD" | b"OMR" | b"JOD" | b"TND" | b"IQD" | b"LYD" => 3,
            _ => 2,
        }
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() == 3 && b.iter().all(u8::is_ascii_uppercase) {
            Ok(Currency([b[0], b[1], b[2]]))
        } else {
            Err(MoneyError::Currency(s.to_string()))
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.code().to_string()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An amount of money: integer minor units (øre, cents) in one currency.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Minor units, e.g. `12990` for 129.90 NOK.
    pub minor: i64,
    /// The currency.
    pub currency: Currency,
}

impl Money {
    /// Money from minor units.
    pub const fn new(minor: i64, currency: Currency) -> Self {
        Money { minor, currency }
    }

    /// Parses a decimal string in major units (`"129.90"`, `"129.9"`, `"129"`) exactly.
    pub fn parse_major(amount: &str, currency: Currency) -> Result<Self, MoneyError> {
        let d =
            Decimal::from_str(amount.trim()).map_err(|_| MoneyError::Amount(amount.to_string()))?;
        Self::from_decimal(d, currency)
    }

    /// Exact conversion from a decimal in major units; refuses extra precision.
    pub fn from_decimal(d: Decimal, currency: Currency) -> Result<Self, MoneyError> {
        let exponent = currency.exponent();
        let normalized = d.normalize();
        if normalized.scale() > exponent {
            return Err(MoneyError::Precision {
                amount: d.to_string(),
                currency,
                exponent,
            });
        }
        let minor = d
            .checked_mul(Decimal::from(10i64.pow(exponent)))
            .and_then(|m| i64::try_from(m.trunc()).ok())
            .ok_or_else(|| MoneyError::Range(d.to_string()))?;
        Ok(Money { minor, currency })
    }

    /// The amount in major units as an exact decimal.
    pub fn to_decimal(&self) -> Decimal {
        Decimal::new(self.minor, self.currency.exponent())
    }

    /// The amount as a decimal string with exactly the currency's decimals: `"129.90"`.
    pub fn major_string(&self) -> String {
        let mut d = self.to_decimal();
        d.rescale(self.currency.exponent());
        d.to_string()
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.major_string(), self.currency)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What a channel sells an item for: the regular price and, when a sale is live, the sale price.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Offer {
    /// The regular price.
    pub price: Money,
    /// The sale price while a sale is live (shown as "was `price`, now `sale`").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sale: Option<Money>,
}

impl Offer {
    /// An offer without a sale.
    pub const fn regular(price: Money) -> Self {
        Offer { price, sale: None }
    }

    /// What the customer pays: the sale price when there is one.
    pub fn effective(&self) -> Money {
        self.sale.unwrap_or(self.price)
    }
}

/// Stock of one item at one location, as a system reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevel {
    /// The connector's own location code (a Shopify location gid, a Tryton location id, or
    /// [`StockLevel::DEFAULT_LOCATION`] for channels that keep one number per listing).
    pub location: String,
    /// Units the system offers for sale at this location (never below zero).
    pub available: i64,
    /// Units physically on hand, where the system reports it separately.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_hand: Option<i64>,
}

impl StockLevel {
    /// The location code used by channels that hold a single quantity per listing.
    pub const DEFAULT_LOCATION: &'static str = "default";

    /// A level where available equals on hand.
    pub fn new(location: impl Into<String>, available: i64) -> Self {
        StockLevel {
            location: location.into(),
            available: available.max(0),
            on_hand: None,
        }
    }
}

/// One listing (variant, inventory item, catalog product) as read from a system.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The system's own id for the listing (variant gid, seller SKU, retailer id, product id).
    pub external_id: String,
    /// The SKU the system carries, used to bind the record to a canonical item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// GTIN/EAN where the system has one (an alternative binding key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtin: Option<String>,
    /// A human title for reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The offer as the system shows it; `None` when the system reports no price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<Offer>,
    /// Stock per location as the system shows it. Empty when the system tracks no stock.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stock: Vec<StockLevel>,
    /// Further ids the connector needs to write this listing back (product id, inventory item
    /// id, offer id). Opaque to the daemon, stored with the binding and handed back in
    /// [`crate::Correction::refs`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refs: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_major_units_exactly() {
        let m = Money::parse_major("129.9", Currency::NOK).unwrap();
        assert_eq!(m.minor, 12990);
        assert_eq!(m.major_string(), "129.90");
        assert_eq!(m.to_string(), "129.90 NOK");
        assert_eq!(Money::parse_major("7", Currency::EUR).unwrap().minor, 700);
        assert_eq!(
            Money::parse_major("-0.05", Currency::EUR).unwrap().minor,
            -5
        );
    }

    #[test]
    fn refuses_extra_precision_and_junk() {
        assert!(matches!(
            Money::parse_major("1.005", Currency::EUR),
            Err(MoneyError::Precision { .. })
        ));
        assert!(Money::parse_major("1.500", Currency::EUR).is_ok());
        assert!(matches!(
            Money::parse_major("12,50", Currency::EUR),
            Err(MoneyError::Amount(_))
        ));
        assert!("nok".parse::<Currency>().is_err());
        assert!("NOKK".parse::<Currency>().is_err());
    }

    #[test]
    fn zero_decimal_currencies() {
        let yen: Currency = "JPY".parse().unwrap();
        assert_eq!(Money::parse_major("1500", yen).unwrap().minor, 1500);
        assert!(Money::parse_major("1500.5", yen).is_err());
        assert_eq!(Money::new(1500, yen).major_string(), "1500");
    }

    #[test]
    fn currency_serde_roundtrip() {
        let json = serde_json::to_string(&Money::new(100, Currency::SEK)).unwrap();
        assert_eq!(json, r#"{"minor":100,"currency":"SEK"}"#);
        let back: Money = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Money::new(100, Currency::SEK));
        assert!(serde_json::from_str::<Money>(r#"{"minor":1,"currency":"x"}"#).is_err());
    }
}

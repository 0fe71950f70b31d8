//! The price pipeline: source price → markup → currency conversion → VAT → rounding rule,
//! and sale windows. Deterministic and exact: everything runs on `rust_decimal` and ends in
//! integer minor units.

use std::collections::BTreeMap;

use omnisync_sdk::{Currency, Money, Offer};
use rust_decimal::prelude::*;
use serde::Serialize;
use time::{Date, OffsetDateTime};

/// How the source's prices are stated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePricing {
    /// The source currency.
    pub currency: Currency,
    /// Whether the source price includes VAT.
    pub includes_vat: bool,
    /// The source's VAT rate in percent (used to take VAT out when `includes_vat`).
    pub vat_percent: Decimal,
}

/// A price-ending rule: the result is `k * step + ending` minor units for a whole `k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rounding {
    /// The step in minor units (100 = whole units for a 2-decimal currency). 1 = none.
    pub step: i64,
    /// The ending in minor units, `0 <= ending < step` (90 for "x.90").
    pub ending: i64,
    /// Which neighbour to take.
    pub mode: RoundingMode,
}

/// Which neighbour a rounding rule picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundingMode {
    /// The nearer one; ties go up.
    Nearest,
    /// The next one at or above.
    Up,
    /// The next one at or below (never below one step's ending).
    Down,
}

impl Rounding {
    /// No rounding beyond minor units.
    pub const NONE: Rounding = Rounding {
        step: 1,
        ending: 0,
        mode: RoundingMode::Nearest,
    };

    /// Applies the rule to an amount in minor units. Never returns a negative amount.
    pub fn apply(&self, minor: i64) -> i64 {
        if self.step <= 1 {
            return minor.max(0);
        }
        let k = (minor - self.ending).div_euclid(self.step);
        let lo = k * self.step + self.ending;
        let hi = lo + self.step;
        let picked = match self.mode {
            RoundingMode::Down => lo,
            RoundingMode::Up => {
                if lo == minor {
                    lo
                } else {
                    hi
                }
            }
            RoundingMode::Nearest => {
                if minor - lo < hi - minor {
                    lo
                } else {
                    hi
                }
            }
        };
        if picked < 0 { hi.max(0) } else { picked }
    }
}

/// What a target channel wants its prices to look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceRules {
    /// The channel's currency.
    pub currency: Currency,
    /// Whether the channel's price field includes VAT.
    pub includes_vat: bool,
    /// The VAT rate the channel's market charges, in percent.
    pub vat_percent: Decimal,
    /// Markup over the source price, in percent (may be negative).
    pub markup_percent: Decimal,
    /// The price-ending rule.
    pub rounding: Rounding,
}

/// One exchange rate: 1 `from` = `rate` `to`, valid from `date`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FxRate {
    /// From this currency.
    pub from: Currency,
    /// To this currency.
    pub to: Currency,
    /// Units of `to` per unit of `from`.
    pub rate: Decimal,
    /// First day the rate applies.
    pub date: Date,
}

/// An explicit, dated table of exchange rates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FxTable {
    rates: BTreeMap<(Currency, Currency), Vec<(Date, Decimal)>>,
}

impl FxTable {
    /// Builds the table.
    pub fn new(rates: impl IntoIterator<Item = FxRate>) -> Self {
        let mut table = FxTable::default();
        for r in rates {
            table
                .rates
                .entry((r.from, r.to))
                .or_default()
                .push((r.date, r.rate));
        }
        for list in table.rates.values_mut() {
            list.sort();
        }
        table
    }

    /// The rate in force on `day`: the latest one dated on or before it.
    pub fn rate(&self, from: Currency, to: Currency, day: Date) -> Option<Decimal> {
        if from == to {
            return Some(Decimal::ONE);
        }
        self.rates
            .get(&(from, to))?
            .iter()
            .rev()
            .find(|(d, _)| *d <= day)
            .map(|(_, r)| *r)
    }

    /// Whether any rate exists for the pair (for config validation).
    pub fn has_pair(&self, from: Currency, to: Currency) -> bool {
        from == to || self.rates.contains_key(&(from, to))
    }
}

/// How a promotion sets the sale price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discount {
    /// Percent off the source price.
    PercentOff(Decimal),
    /// A fixed sale price in the source currency (and its VAT convention).
    Price(Money),
}

/// A sale with a validity window `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    /// A name for reports.
    pub name: String,
    /// The SKUs it covers (exact), or empty for "all SKUs with this prefix".
    pub skus: Vec<String>,
    /// A SKU prefix, when `skus` is empty.
    pub sku_prefix: Option<String>,
    /// The discount.
    pub discount: Discount,
    /// Live from (inclusive).
    pub from: OffsetDateTime,
    /// Live until (exclusive).
    pub to: OffsetDateTime,
    /// The channels it applies to; empty = all.
    pub channels: Vec<String>,
}

impl Promotion {
    /// Whether it covers `sku` on `channel` at `now`.
    pub fn applies(&self, sku: &str, channel: &str, now: OffsetDateTime) -> bool {
        let in_window = self.from <= now && now < self.to;
        let sku_ok = if self.skus.is_empty() {
            self.sku_prefix
                .as_deref()
                .is_some_and(|p| sku.starts_with(p))
        } else {
            self.skus.iter().any(|s| s == sku)
        };
        let channel_ok = self.channels.is_empty() || self.channels.iter().any(|c| c == channel);
        in_window && sku_ok && channel_ok
    }
}

/// Why a desired price could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// No rate for the pair on that day.
    #[error("no exchange rate {from}->{to} on or before {day}")]
    NoRate {
        /// From.
        from: Currency,
        /// To.
        to: Currency,
        /// The day.
        day: Date,
    },
    /// The source price is in another currency than the source is configured for.
    #[error("source price is in {found}, expected {expected}")]
    SourceCurrency {
        /// Configured.
        expected: Currency,
        /// Found.
        found: Currency,
    },
    /// Arithmetic left the representable range.
    #[error("price out of range")]
    Overflow,
}

/// Converts one source amount into the channel's terms.
pub fn convert(
    amount: Money,
    source: &SourcePricing,
    rules: &PriceRules,
    fx: &FxTable,
    day: Date,
) -> Result<Money, PriceError> {
    if amount.currency != source.currency {
        return Err(PriceError::SourceCurrency {
            expected: source.currency,
            found: amount.currency,
        });
    }
    let hundred = Decimal::ONE_HUNDRED;
    let mut value = amount.to_decimal();
    if source.includes_vat {
        value = value
            .checked_div(Decimal::ONE + source.vat_percent / hundred)
            .ok_or(PriceError::Overflow)?;
    }
    value = value
        .checked_mul(Decimal::ONE + rules.markup_percent / hundred)
        .ok_or(PriceError::Overflow)?;
    let rate = fx
        .rate(source.currency, rules.currency, day)
        .ok_or(PriceError::NoRate {
            from: source.currency,
            to: rules.currency,
            day,
        })?;
    value = value.checked_mul(rate).ok_or(PriceError::Overflow)?;
    if rules.includes_vat {
        value = value
            .checked_mul(Decimal::ONE + rules.vat_percent / hundred)
            .ok_or(PriceError::Overflow)?;
    }
    let scale = Decimal::from(10i64.pow(rules.currency.exponent()));
    let minor = value
        .checked_mul(scale)
        .ok_or(PriceError::Overflow)?
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        .to_i64()
        .ok_or(PriceError::Overflow)?;
    Ok(Money::new(rules.rounding.apply(minor), rules.currency))
}

/// The sale price in source terms, if a promotion is live for this SKU on this channel.
pub fn live_sale(
    sku: &str,
    channel: &str,
    regular: Money,
    promotions: &[Promotion],
    now: OffsetDateTime,
) -> Option<Money> {
    let promo = promotions.iter().find(|p| p.applies(sku, channel, now))?;
    let sale = match &promo.discount {
        Discount::Price(m) => *m,
        Discount::PercentOff(pct) => {
            let v = regular.to_decimal() * (Decimal::ONE - *pct / Decimal::ONE_HUNDRED);
            let minor = (v * Decimal::from(10i64.pow(regular.currency.exponent())))
                .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
                .to_i64()?;
            Money::new(minor, regular.currency)
        }
    };
    // A "sale" that is not below the regular price is no sale.
    (sale.minor < regular.minor && sale.minor >= 0).then_some(sale)
}

/// The desired offer for one SKU on one channel.
#[allow(clippy::too_many_arguments)]
pub fn desired_offer(
    sku: &str,
    channel: &str,
    source_price: Money,
    source: &SourcePricing,
    rules: &PriceRules,
    fx: &FxTable,
    promotions: &[Promotion],
    now: OffsetDateTime,
    channel_has_sale_field: bool,
) -> Result<Offer, PriceError> {
    let day = now.date();
    let price = convert(source_price, source, rules, fx, day)?;
    let sale = match live_sale(sku, channel, source_price, promotions, now) {
        Some(s) => Some(convert(s, source, rules, fx, day)?),
        None => None,
    };
    // Rounding can lift a sale price to the regular price: then there is no sale to show.
    let sale = sale.filter(|s| s.minor < price.minor);
    Ok(if channel_has_sale_field {
        Offer { price, sale }
    } else {
        Offer::regular(sale.unwrap_or(price))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    fn nok(minor: i64) -> Money {
        Money::new(minor, Currency::NOK)
    }

    fn source() -> SourcePricing {
        SourcePricing {
            currency: Currency::NOK,
            includes_vat: false,
            vat_percent: Decimal::from(25),
        }
    }

    #[test]
    fn rounding_rules() {
        let x90 = Rounding {
            step: 100,
            ending: 90,
            mode: RoundingMode::Nearest,
        };
        assert_eq!(x90.apply(12345), 12390);
        assert_eq!(x90.apply(12330), 12290);
        assert_eq!(x90.apply(12340), 12390); // tie goes up
        assert_eq!(x90.apply(10), 90);
        let x9 = Rounding {
            step: 1000,
            ending: 900,
            mode: RoundingMode::Up,
        };
        assert_eq!(x9.apply(19100), 19900);
        assert_eq!(x9.apply(19900), 19900);
        let whole_down = Rounding {
            step: 100,
            ending: 0,
            mode: RoundingMode::Down,
        };
        assert_eq!(whole_down.apply(12999), 12900);
        assert_eq!(Rounding::NONE.apply(-5), 0);
    }

    #[test]
    fn pipeline_vat_fx_markup() {
        let fx = FxTable::new([
            FxRate {
                from: Currency::NOK,
                to: Currency::EUR,
                rate: Decimal::new(85, 3),
                date: date!(2026 - 01 - 01),
            },
            FxRate {
                from: Currency::NOK,
                to: Currency::EUR,
                rate: Decimal::new(90, 3),
                date: date!(2026 - 12 - 01),
            },
        ]);
        let rules = PriceRules {
            currency: Currency::EUR,
            includes_vat: true,
            vat_percent: Decimal::from(19),
            markup_percent: Decimal::from(10),
            rounding: Rounding::NONE,
        };
        // 1000.00 NOK * 1.10 * 0.085 * 1.19 = 111.265 -> 111.27 EUR
        let m = convert(nok(100_000), &source(), &rules, &fx, date!(2026 - 11 - 23)).unwrap();
        assert_eq!(m, Money::new(11127, Currency::EUR));
        // The December rate is not in force yet in November, and is after.
        let m = convert(nok(100_000), &source(), &rules, &fx, date!(2026 - 12 - 02)).unwrap();
        assert_eq!(m, Money::new(11781, Currency::EUR));
        assert!(matches!(
            convert(nok(100), &source(), &rules, &fx, date!(2025 - 01 - 01)),
            Err(PriceError::NoRate { .. })
        ));
    }

    #[test]
    fn sale_window_is_half_open_and_not_live_early() {
        let promo = Promotion {
            name: "black week".into(),
            skus: vec!["A".into()],
            sku_prefix: None,
            discount: Discount::PercentOff(Decimal::from(20)),
            from: datetime!(2026-11-23 00:00 UTC),
            to: datetime!(2026-11-30 00:00 UTC),
            channels: vec![],
        };
        let rules = PriceRules {
            currency: Currency::NOK,
            includes_vat: false,
            vat_percent: Decimal::ZERO,
            markup_percent: Decimal::ZERO,
            rounding: Rounding::NONE,
        };
        let fx = FxTable::default();
        let offer = |now| {
            desired_offer(
                "A",
                "shop",
                nok(10000),
                &source(),
                &rules,
                &fx,
                std::slice::from_ref(&promo),
                now,
                true,
            )
            .unwrap()
        };
        assert_eq!(offer(datetime!(2026-11-22 23:59:59 UTC)).sale, None);
        assert_eq!(offer(datetime!(2026-11-23 00:00 UTC)).sale, Some(nok(8000)));
        assert_eq!(offer(datetime!(2026-11-30 00:00 UTC)).sale, None);
        // A channel without a sale field gets the effective price.
        let flat = desired_offer(
            "A",
            "shop",
            nok(10000),
            &source(),
            &rules,
            &fx,
            std::slice::from_ref(&promo),
            datetime!(2026-11-24 00:00 UTC),
            false,
        )
        .unwrap();
        assert_eq!(flat, Offer::regular(nok(8000)));
    }
}

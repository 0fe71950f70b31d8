//! Meta's price strings, to and from exact [`Money`].
//!
//! Writes (`items_batch`) use the feed format: amount, one space, ISO 4217 code
//! (`"129.90 NOK"`). Reads (`GET /{catalog_id}/products`) return the price formatted for
//! display, in the token user's locale: `"NOK129.90"`, `"kr129.90"`, `"kr 129,90"`,
//! `"Rp460.000"` (seen in the wild), alongside a separate `currency` field. So reading accepts
//! an ISO code or a known currency symbol before or after the amount, `.` or `,` as the
//! decimal separator and `,` `.` space or `'` as digit grouping — and stays strict: the
//! currency must be the expected one, groups must have three digits, the decimals must fit
//! the currency, and anything else is an error naming the text.

use omnisync_sdk::{Currency, Money, MoneyError};

/// Why a price string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// Nothing there.
    #[error("empty price")]
    Empty,
    /// No digits in it.
    #[error("price {0:?} has no amount")]
    NoAmount(String),
    /// A currency other than the expected one.
    #[error("price {text:?} is in {found}, expected {expected}")]
    Currency {
        /// The price text.
        text: String,
        /// The currency (code or symbol) found.
        found: String,
        /// The currency expected.
        expected: Currency,
    },
    /// A marker that is neither an ISO code nor a known symbol, and no currency field to
    /// confirm it.
    #[error("price {text:?}: cannot tell the currency from {marker:?}")]
    UnknownMarker {
        /// The price text.
        text: String,
        /// The marker.
        marker: String,
    },
    /// The amount is not a number in a format we read.
    #[error("price {text:?}: unreadable amount ({reason})")]
    Amount {
        /// The price text.
        text: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A negative price.
    #[error("price {0:?} is negative")]
    Negative(String),
    /// The amount does not fit the currency (too many decimals, out of range).
    #[error("price {text:?}: {source}")]
    Money {
        /// The price text.
        text: String,
        /// Why.
        source: MoneyError,
    },
}

/// Formats money the way `items_batch` takes it: `"129.90 NOK"`.
pub fn format_price(money: Money) -> String {
    format!("{} {}", money.major_string(), money.currency)
}

/// Parses the write format strictly: `"<amount> <CODE>"` with `.` as the only separator.
/// This is what the simulator accepts in `items_batch`.
pub fn parse_write_format(text: &str, expected: Currency) -> Result<Money, PriceError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(PriceError::Empty);
    }
    let Some((amount, code)) = trimmed.split_once(' ') else {
        return Err(PriceError::Amount {
            text: text.to_string(),
            reason: "expected \"<amount> <ISO code>\", e.g. \"129.90 NOK\"",
        });
    };
    if code != expected.code() {
        return Err(PriceError::Currency {
            text: text.to_string(),
            found: code.to_string(),
            expected,
        });
    }
    if amount.starts_with('-') {
        return Err(PriceError::Negative(text.to_string()));
    }
    if amount.is_empty() || !amount.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(PriceError::Amount {
            text: text.to_string(),
            reason: "the amount must be digits with '.' as the decimal separator",
        });
    }
    Money::parse_major(amount, expected).map_err(|source| PriceError::Money {
        text: text.to_string(),
        source,
    })
}

/// Parses a price as the products edge returns it (see the module docs).
///
/// `reported` is the product's `currency` field when the read returned one; it must be the
/// expected currency, and it is what confirms a price shown with an unknown symbol or none.
pub fn parse_price(
    text: &str,
    expected: Currency,
    reported: Option<&str>,
) -> Result<Money, PriceError> {
    let normalized: String = text
        .chars()
        .map(|c| match c {
            '\u{a0}' | '\u{202f}' | '\u{2009}' | '\u{2007}' => ' ',
            other => other,
        })
        .collect();
    let normalized = normalized.trim();
    if normalized.is_empty() {
        return Err(PriceError::Empty);
    }
    let confirmed = match reported.map(str::trim).filter(|r| !r.is_empty()) {
        Some(r) if r == expected.code() => true,
        Some(r) => {
            return Err(PriceError::Currency {
                text: text.to_string(),
                found: r.to_string(),
                expected,
            });
        }
        None => false,
    };
    let (Some(first), Some(last)) = (
        normalized.find(|c: char| c.is_ascii_digit()),
        normalized.rfind(|c: char| c.is_ascii_digit()),
    ) else {
        return Err(PriceError::NoAmount(text.to_string()));
    };
    let prefix = &normalized[..first];
    let core = &normalized[first..=last];
    let suffix = &normalized[last + 1..];
    if prefix.contains('-') || prefix.contains('\u{2212}') {
        return Err(PriceError::Negative(text.to_string()));
    }
    let (prefix, suffix) = (prefix.trim(), suffix.trim());
    let marker = match (prefix.is_empty(), suffix.is_empty()) {
        (true, true) => "",
        (false, true) => prefix,
        (true, false) => suffix,
        (false, false) => {
            return Err(PriceError::UnknownMarker {
                text: text.to_string(),
                marker: format!("{prefix} … {suffix}"),
            });
        }
    };
    check_marker(text, marker, expected, confirmed)?;
    // The feed/write format ("129.90 NOK") is strict: '.' is always the decimal separator.
    if !suffix.is_empty() && is_iso_code(suffix) && !core.contains([',', ' ', '\'']) {
        return Money::parse_major(core, expected).map_err(|source| PriceError::Money {
            text: text.to_string(),
            source,
        });
    }
    let plain = normalize_amount(text, core, expected.exponent())?;
    Money::parse_major(&plain, expected).map_err(|source| PriceError::Money {
        text: text.to_string(),
        source,
    })
}

fn is_iso_code(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

fn check_marker(
    text: &str,
    marker: &str,
    expected: Currency,
    confirmed: bool,
) -> Result<(), PriceError> {
    if marker.is_empty() {
        if confirmed {
            return Ok(());
        }
        return Err(PriceError::UnknownMarker {
            text: text.to_string(),
            marker: String::new(),
        });
    }
    if is_iso_code(marker) {
        if marker == expected.code() {
            return Ok(());
        }
        return Err(PriceError::Currency {
            text: text.to_string(),
            found: marker.to_string(),
            expected,
        });
    }
    match symbol_currencies(marker) {
        Some(codes) if codes.contains(&expected.code()) => Ok(()),
        Some(_) => Err(PriceError::Currency {
            text: text.to_string(),
            found: marker.to_string(),
            expected,
        }),
        None if confirmed => Ok(()),
        None => Err(PriceError::UnknownMarker {
            text: text.to_string(),
            marker: marker.to_string(),
        }),
    }
}

/// Currencies a display symbol can stand for.
fn symbol_currencies(symbol: &str) -> Option<&'static [&'static str]> {
    Some(match symbol {
        "kr" | "kr." | "Kr" | "Kr." => &["NOK", "SEK", "DKK", "ISK"],
        "€" => &["EUR"],
        "$" => &["USD", "CAD", "AUD", "NZD", "SGD", "HKD", "MXN"],
        "US$" => &["USD"],
        "CA$" => &["CAD"],
        "A$" => &["AUD"],
        "£" => &["GBP"],
        "¥" | "￥" => &["JPY", "CNY"],
        "zł" => &["PLN"],
        "Kč" => &["CZK"],
        "Ft" => &["HUF"],
        "Rp" => &["IDR"],
        "₹" => &["INR"],
        "R$" => &["BRL"],
        "₩" => &["KRW"],
        "₺" => &["TRY"],
        "฿" => &["THB"],
        "₱" => &["PHP"],
        "RM" => &["MYR"],
        "R" => &["ZAR"],
        _ => return None,
    })
}

/// Turns a localized amount (`1 299,90`, `1,299.90`, `460.000`) into `1299.90` form.
fn normalize_amount(text: &str, core: &str, exponent: u32) -> Result<String, PriceError> {
    let bad = |reason: &'static str| PriceError::Amount {
        text: text.to_string(),
        reason,
    };
    if !core
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | ',' | ' ' | '\''))
    {
        return Err(bad("unexpected character in the amount"));
    }
    let separators: Vec<(usize, char)> = core
        .char_indices()
        .filter(|(_, c)| !c.is_ascii_digit())
        .collect();
    let Some(&(last_pos, last_sep)) = separators.last() else {
        return Ok(core.to_string());
    };
    let digits_after = core.len() - last_pos - 1;
    let others_differ = separators.iter().any(|&(_, c)| c != last_sep);
    let is_decimal = if !matches!(last_sep, '.' | ',') {
        false
    } else if digits_after == 3 {
        if exponent == 3 {
            if !others_differ {
                return Err(bad(
                    "one separator before three digits is ambiguous for this currency",
                ));
            }
            true
        } else {
            false
        }
    } else if digits_after >= 1 && digits_after <= exponent as usize {
        true
    } else {
        return Err(bad(
            "the digits after the last separator fit neither decimals nor a group",
        ));
    };
    let (int_part, frac) = if is_decimal {
        (&core[..last_pos], Some(&core[last_pos + 1..]))
    } else {
        (core, None)
    };
    let group_seps: Vec<char> = int_part.chars().filter(|c| !c.is_ascii_digit()).collect();
    let mut plain = String::with_capacity(core.len());
    if let Some(&group) = group_seps.first() {
        if group_seps.iter().any(|&c| c != group) {
            return Err(bad("mixed digit-grouping separators"));
        }
        if is_decimal && group == last_sep {
            return Err(bad("the same separator is used for grouping and decimals"));
        }
        let groups: Vec<&str> = int_part.split(group).collect();
        let first_ok = groups.first().is_some_and(|g| (1..=3).contains(&g.len()));
        if !first_ok || groups[1..].iter().any(|g| g.len() != 3) {
            return Err(bad("digit groups must have three digits"));
        }
        for g in groups {
            plain.push_str(g);
        }
    } else {
        plain.push_str(int_part);
    }
    if let Some(frac) = frac {
        plain.push('.');
        plain.push_str(frac);
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sek(minor: i64) -> Money {
        Money::new(minor, Currency::SEK)
    }

    #[test]
    fn formats_the_write_format() {
        assert_eq!(format_price(sek(12990)), "129.90 SEK");
        assert_eq!(format_price(sek(7)), "0.07 SEK");
        let yen: Currency = "JPY".parse().unwrap();
        assert_eq!(format_price(Money::new(1500, yen)), "1500 JPY");
    }

    #[test]
    fn strict_write_format() {
        assert_eq!(
            parse_write_format("129.90 SEK", Currency::SEK),
            Ok(sek(12990))
        );
        assert_eq!(parse_write_format("129 SEK", Currency::SEK), Ok(sek(12900)));
        for bad in [
            "129,90 SEK",
            "SEK 129.90",
            "129.90SEK",
            "1,299.90 SEK",
            "abc SEK",
            "",
        ] {
            assert!(parse_write_format(bad, Currency::SEK).is_err(), "{bad}");
        }
        assert!(matches!(
            parse_write_format("129.90 NOK", Currency::SEK),
            Err(PriceError::Currency { .. })
        ));
        assert!(matches!(
            parse_write_format("-1.00 SEK", Currency::SEK),
            Err(PriceError::Negative(_))
        ));
        assert!(matches!(
            parse_write_format("1.005 SEK", Currency::SEK),
            Err(PriceError::Money { .. })
        ));
    }

    #[test]
    fn reads_every_display_form() {
        let cases = [
            ("129.90 SEK", None),
            ("SEK129.90", None),
            ("SEK 129.90", None),
            ("kr129.90", None),
            ("kr 129,90", Some("SEK")),
            ("129,90 kr", None),
            ("129,9 kr", None),
            ("129.90", Some("SEK")),
            ("kr\u{a0}129,90", None),
        ];
        for (text, reported) in cases {
            assert_eq!(
                parse_price(text, Currency::SEK, reported),
                Ok(sek(12990)),
                "{text}"
            );
        }
        let thousands = [
            "kr1,299.90",
            "1 299,90 kr",
            "1.299,90 kr",
            "SEK1,299.90",
            "1'299.90 SEK",
            "1\u{202f}299,90\u{a0}kr",
        ];
        for text in thousands {
            assert_eq!(
                parse_price(text, Currency::SEK, None),
                Ok(sek(129990)),
                "{text}"
            );
        }
        let idr: Currency = "IDR".parse().unwrap();
        assert_eq!(
            parse_price("Rp460.000", idr, Some("IDR")),
            Ok(Money::new(46_000_000, idr))
        );
        assert_eq!(
            parse_price("€5", Currency::EUR, None),
            Ok(Money::new(500, Currency::EUR))
        );
        assert_eq!(
            parse_price("12 kr", Currency::NOK, None),
            Ok(Money::new(1200, Currency::NOK))
        );
    }

    #[test]
    fn refuses_what_it_cannot_be_sure_of() {
        // Wrong currency, by code, by symbol, or by the currency field.
        for (text, reported) in [
            ("NOK129.90", None),
            ("129.90 NOK", None),
            ("€129.90", None),
            ("kr129.90", Some("NOK")),
        ] {
            assert!(
                matches!(
                    parse_price(text, Currency::SEK, reported),
                    Err(PriceError::Currency { .. })
                ),
                "{text}"
            );
        }
        // No currency at all, or an unknown symbol, without a currency field.
        assert!(matches!(
            parse_price("129.90", Currency::SEK, None),
            Err(PriceError::UnknownMarker { .. })
        ));
        assert!(matches!(
            parse_price("¤129.90", Currency::SEK, None),
            Err(PriceError::UnknownMarker { .. })
        ));
        assert!(parse_price("¤129.90", Currency::SEK, Some("SEK")).is_ok());
        // Junk amounts.
        for text in [
            "kr",
            "kr 12,34,56",
            "kr 1,2345",
            "kr 12.3.4",
            "kr 1,299,90",
            "kr 12a4",
            "kr 1 29,90",
            "kr 129.9055",
            "-kr 5",
            "kr -5",
            "kr 1.299.900,1234",
        ] {
            let r = parse_price(text, Currency::SEK, None);
            assert!(r.is_err(), "{text} parsed as {r:?}");
        }
        assert_eq!(
            parse_price("  ", Currency::SEK, None),
            Err(PriceError::Empty)
        );
        // Three-decimal currencies: one separator before three digits is ambiguous.
        let kwd: Currency = "KWD".parse().unwrap();
        assert!(parse_price("KWD1.250", kwd, None).is_err());
        assert_eq!(
            parse_price("KWD1,000.250", kwd, None),
            Ok(Money::new(1_000_250, kwd))
        );
    }

    #[test]
    fn error_messages_name_the_text() {
        let e = parse_price("NOK129.90", Currency::SEK, None).unwrap_err();
        assert_eq!(e.to_string(), "price \"NOK129.90\" is in NOK, expected SEK");
    }
}

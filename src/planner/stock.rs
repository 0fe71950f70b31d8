//! The stock rule: what quantity a target should show, per its own location codes.
//!
//! Available stock over the channel's location set, minus orders in flight, optionally a
//! percentage, minus a safety buffer, clamped to `[0, cap]`. A channel either holds stock
//! per location (each of its locations mirrors one canonical location) or one pooled number.

use std::collections::BTreeMap;

/// How a channel holds stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockMode {
    /// One quantity per channel location: canonical location → channel location code.
    PerLocation(BTreeMap<String, String>),
    /// One quantity (under `code`) pooled from these canonical locations.
    Pooled {
        /// The canonical locations summed.
        from: Vec<String>,
        /// The channel's location code for the pooled number.
        code: String,
    },
}

/// A target's stock rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockRules {
    /// Per-location or pooled.
    pub mode: StockMode,
    /// Units held back from the channel (per channel location).
    pub safety_buffer: i64,
    /// The most the channel is ever shown.
    pub cap: Option<i64>,
    /// Show only this percentage of what is available (rounded down).
    pub percent: Option<u32>,
}

impl StockRules {
    /// The desired quantity per channel location code, given canonical available stock per
    /// canonical location and units reserved by orders in flight (per canonical location;
    /// the empty key means "not tied to a location").
    pub fn desired(
        &self,
        available: &BTreeMap<String, i64>,
        in_flight: &BTreeMap<String, i64>,
    ) -> BTreeMap<String, i64> {
        let unplaced = in_flight.get("").copied().unwrap_or(0).max(0);
        match &self.mode {
            // Units in flight with no location are held off every location (fail closed):
            // nobody knows yet which one they will leave.
            StockMode::PerLocation(map) => map
                .iter()
                .map(|(canon, code)| {
                    let reserved = in_flight.get(canon).copied().unwrap_or(0).max(0) + unplaced;
                    let base = available.get(canon).copied().unwrap_or(0).max(0) - reserved;
                    (code.clone(), self.finish(base))
                })
                .collect(),
            StockMode::Pooled { from, code } => {
                let sum: i64 = from
                    .iter()
                    .map(|c| {
                        available.get(c).copied().unwrap_or(0).max(0)
                            - in_flight.get(c).copied().unwrap_or(0).max(0)
                    })
                    .sum();
                BTreeMap::from([(code.clone(), self.finish(sum - unplaced))])
            }
        }
    }

    fn finish(&self, base: i64) -> i64 {
        let mut q = base.max(0);
        if let Some(pct) = self.percent {
            q = q * i64::from(pct) / 100;
        }
        q -= self.safety_buffer.max(0);
        q = q.max(0);
        if let Some(cap) = self.cap {
            q = q.min(cap.max(0));
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avail() -> BTreeMap<String, i64> {
        BTreeMap::from([
            ("oslo".to_string(), 5),
            ("bergen".to_string(), 0),
            ("wh".to_string(), 40),
        ])
    }

    #[test]
    fn pooled_with_buffer_cap_and_percent() {
        let rules = StockRules {
            mode: StockMode::Pooled {
                from: vec!["oslo".into(), "wh".into()],
                code: "default".into(),
            },
            safety_buffer: 2,
            cap: Some(30),
            percent: None,
        };
        assert_eq!(rules.desired(&avail(), &BTreeMap::new())["default"], 30);
        let rules = StockRules {
            percent: Some(50),
            cap: None,
            ..rules
        };
        // (5 + 40) * 50% = 22 (rounded down), minus 2.
        assert_eq!(rules.desired(&avail(), &BTreeMap::new())["default"], 20);
    }

    #[test]
    fn per_location_never_negative_and_ignores_unmapped() {
        let rules = StockRules {
            mode: StockMode::PerLocation(BTreeMap::from([
                ("oslo".to_string(), "L1".to_string()),
                ("bergen".to_string(), "L2".to_string()),
            ])),
            safety_buffer: 1,
            cap: None,
            percent: None,
        };
        let d = rules.desired(&avail(), &BTreeMap::from([("oslo".to_string(), 7)]));
        assert_eq!(d["L1"], 0);
        assert_eq!(d["L2"], 0);
        assert_eq!(d.len(), 2, "the warehouse is not in this channel's set");
        // An order that names no location is held off every location.
        let d = rules.desired(&avail(), &BTreeMap::from([(String::new(), 2)]));
        assert_eq!((d["L1"], d["L2"]), (5 - 2 - 1, 0));
    }
}

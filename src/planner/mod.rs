//! The reconciliation planner: canonical × observed × rules → plan. Pure: no I/O and no
//! clock (the time is an input), so the same inputs always give the same plan.
//!
//! For one target channel it computes the desired value of every (item, field, location),
//! compares it with the live value read back from the channel and with what the previous
//! pass concluded (three-way), classifies each difference with a [`Cause`], and lists the
//! absolute corrections that would close it.

pub mod price;
pub mod stock;

use std::collections::{BTreeMap, HashMap};

use omnisync_sdk::{Change, Offer};
use serde::Serialize;
use time::OffsetDateTime;

use price::{FxTable, PriceRules, Promotion, SourcePricing, desired_offer};
use stock::StockRules;

/// One canonical item: what the sources say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalItem {
    /// The canonical SKU.
    pub sku: String,
    /// A title for reports and for creating listings.
    pub title: Option<String>,
    /// The source price (source currency and VAT convention), if the price source has one.
    pub price: Option<omnisync_sdk::Money>,
    /// Available units per canonical location.
    pub stock: BTreeMap<String, i64>,
}

/// One listing as a target shows it, bound to a canonical SKU.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    /// The channel's id for the listing.
    pub external_id: String,
    /// The connector's extra ids (handed back with corrections).
    pub refs: BTreeMap<String, String>,
    /// The offer the channel shows.
    pub offer: Option<Offer>,
    /// Quantity per channel location code.
    pub stock: BTreeMap<String, i64>,
}

/// What is reconciled on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// Regular and sale price.
    Offer,
    /// Quantity at one location.
    Stock,
    /// Whether the listing exists at all.
    Listing,
}

impl Field {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Offer => "offer",
            Field::Stock => "stock",
            Field::Listing => "listing",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Field> {
        match s {
            "offer" => Some(Field::Offer),
            "stock" => Some(Field::Stock),
            "listing" => Some(Field::Listing),
            _ => None,
        }
    }
}

/// Why a target differs from what it should show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Someone changed it in the channel: it was in sync and moved away.
    ChannelEdit,
    /// A sale not yet booked at the source.
    OrderInFlight,
    /// A push was refused for good.
    WriteFailed,
    /// The API accepted a push but the read-back shows nothing changed.
    WriteNoOp,
    /// The source (or a sale window) moved; the correction is pending.
    SourceChanged,
    /// Missing listing, orphan or unmapped location.
    Mapping,
}

impl Cause {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::ChannelEdit => "channel_edit",
            Cause::OrderInFlight => "order_in_flight",
            Cause::WriteFailed => "write_failed",
            Cause::WriteNoOp => "write_no_op",
            Cause::SourceChanged => "source_changed",
            Cause::Mapping => "mapping",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Cause> {
        [
            Cause::ChannelEdit,
            Cause::OrderInFlight,
            Cause::WriteFailed,
            Cause::WriteNoOp,
            Cause::SourceChanged,
            Cause::Mapping,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// Identifies one reconciled value on a channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateKey {
    /// The canonical SKU.
    pub sku: String,
    /// The field.
    pub field: Field,
    /// The channel's location code for stock; empty otherwise.
    pub location: String,
}

/// What the previous pass concluded about one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrevState {
    /// The desired value then (encoded).
    pub desired: String,
    /// Whether the channel showed it.
    pub in_sync: bool,
    /// The cause recorded for an open difference.
    pub cause: Option<Cause>,
    /// A write of `desired` was accepted by the API and taken as shown, but no read of the
    /// channel has confirmed it yet (a webhook pass reads it back later). A read that finds
    /// the channel different calls it `write_no_op`, not `channel_edit`.
    pub unverified: bool,
}

/// The conclusion of this pass about one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRow {
    /// Which value.
    pub key: StateKey,
    /// The desired value (encoded).
    pub desired: String,
    /// The observed value (encoded); `None` when the channel does not show one.
    pub observed: Option<String>,
    /// Whether they agree.
    pub in_sync: bool,
    /// Why not, where it can be told.
    pub cause: Option<Cause>,
}

/// One correction the plan wants pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Which value it corrects.
    pub key: StateKey,
    /// The desired value it sets (encoded), for the outbox and the idempotency key.
    pub value: String,
    /// The listing's id in the channel (`None` when creating one).
    pub external_id: Option<String>,
    /// The connector's extra ids.
    pub refs: BTreeMap<String, String>,
    /// The change.
    pub change: Change,
}

/// How one target channel is reconciled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// The channel id.
    pub id: String,
    /// Price rules, when the channel is a price target.
    pub price: Option<PriceRules>,
    /// Stock rules, when the channel is a stock target.
    pub stock: Option<StockRules>,
    /// The channel has a separate sale price field.
    pub sale_field: bool,
    /// The channel can create missing listings.
    pub creates_listings: bool,
    /// Stock writes can be compare-and-set.
    pub compare_and_set: bool,
}

/// Everything shared by all channels in one pass.
#[derive(Debug, Clone, Copy)]
pub struct PlanContext<'a> {
    /// The time the plan is for.
    pub now: OffsetDateTime,
    /// How the price source states prices.
    pub source: &'a SourcePricing,
    /// Exchange rates.
    pub fx: &'a FxTable,
    /// Sales.
    pub promotions: &'a [Promotion],
    /// Units reserved by orders in flight: SKU → canonical location ("" = unplaced) → units.
    pub in_flight: &'a HashMap<String, BTreeMap<String, i64>>,
}

/// The plan for one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelPlan {
    /// The state of every value checked.
    pub rows: Vec<TargetRow>,
    /// Corrections to push.
    pub corrections: Vec<Planned>,
    /// Canonical items the channel should show.
    pub items_checked: u64,
    /// Of those, items whose every value agrees.
    pub items_in_sync: u64,
    /// Items whose desired value could not be computed (SKU, reason).
    pub errors: Vec<(String, String)>,
}

/// Encodes an offer for storage and comparison: `"12990 NOK"` or `"12990 NOK sale 9990"`.
pub fn encode_offer(offer: &Offer) -> String {
    match offer.sale {
        Some(s) => format!(
            "{} {} sale {}",
            offer.price.minor, offer.price.currency, s.minor
        ),
        None => format!("{} {}", offer.price.minor, offer.price.currency),
    }
}

/// Reads back what [`encode_offer`] wrote.
pub fn decode_offer(text: &str) -> Option<Offer> {
    let mut parts = text.split(' ');
    let price: i64 = parts.next()?.parse().ok()?;
    let currency: omnisync_sdk::Currency = parts.next()?.parse().ok()?;
    let sale = match (parts.next(), parts.next()) {
        (Some("sale"), Some(minor)) => {
            Some(omnisync_sdk::Money::new(minor.parse().ok()?, currency))
        }
        (None, None) => None,
        _ => return None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(Offer {
        price: omnisync_sdk::Money::new(price, currency),
        sale,
    })
}

const LISTED: &str = "listed";
const ABSENT: &str = "absent";

/// Plans one target channel.
///
/// `items` are the canonical items the channel should list; `observed` maps canonical SKUs
/// to the channel's listings; `prev` is the previous pass's state for this channel.
pub fn plan_channel(
    spec: &TargetSpec,
    ctx: &PlanContext<'_>,
    items: &[CanonicalItem],
    observed: &HashMap<String, Observed>,
    prev: &HashMap<StateKey, PrevState>,
) -> ChannelPlan {
    let mut plan = ChannelPlan::default();
    let no_flight = BTreeMap::new();
    for item in items {
        plan.items_checked += 1;
        let desired_offer = match (&spec.price, item.price) {
            (Some(rules), Some(source_price)) => match desired_offer(
                &item.sku,
                &spec.id,
                source_price,
                ctx.source,
                rules,
                ctx.fx,
                ctx.promotions,
                ctx.now,
                spec.sale_field,
            ) {
                Ok(o) => Some(o),
                Err(e) => {
                    plan.errors.push((item.sku.clone(), e.to_string()));
                    continue;
                }
            },
            _ => None,
        };
        let in_flight = ctx.in_flight.get(&item.sku).unwrap_or(&no_flight);
        let desired_stock = spec
            .stock
            .as_ref()
            .map(|rules| rules.desired(&item.stock, in_flight))
            .unwrap_or_default();

        let listing_key = StateKey {
            sku: item.sku.clone(),
            field: Field::Listing,
            location: String::new(),
        };
        let Some(obs) = observed.get(&item.sku) else {
            // Missing is a mapping problem, unless creating it was tried and failed.
            let cause = match prev.get(&listing_key) {
                Some(p)
                    if !p.in_sync
                        && matches!(p.cause, Some(Cause::WriteFailed | Cause::WriteNoOp)) =>
                {
                    p.cause
                }
                _ => Some(Cause::Mapping),
            };
            plan.rows.push(TargetRow {
                key: listing_key.clone(),
                desired: LISTED.into(),
                observed: Some(ABSENT.into()),
                in_sync: false,
                cause,
            });
            if spec.creates_listings
                && let Some(offer) = desired_offer
            {
                plan.corrections.push(Planned {
                    key: listing_key,
                    value: LISTED.into(),
                    external_id: None,
                    refs: BTreeMap::new(),
                    change: Change::Create {
                        title: item.title.clone(),
                        offer,
                        stock: desired_stock,
                    },
                });
            }
            continue;
        };
        plan.rows.push(TargetRow {
            key: listing_key,
            desired: LISTED.into(),
            observed: Some(LISTED.into()),
            in_sync: true,
            cause: None,
        });

        let mut item_in_sync = true;
        if let Some(want) = desired_offer {
            let shown = obs.offer.map(|o| {
                if spec.sale_field {
                    o
                } else {
                    Offer::regular(o.effective())
                }
            });
            let key = StateKey {
                sku: item.sku.clone(),
                field: Field::Offer,
                location: String::new(),
            };
            let desired = encode_offer(&want);
            let in_sync = shown == Some(want);
            item_in_sync &= in_sync;
            let cause = (!in_sync)
                .then(|| cause_for(prev.get(&key), &desired))
                .flatten();
            if !in_sync {
                plan.corrections.push(Planned {
                    key: key.clone(),
                    value: desired.clone(),
                    external_id: Some(obs.external_id.clone()),
                    refs: obs.refs.clone(),
                    change: Change::Offer { offer: want },
                });
            }
            plan.rows.push(TargetRow {
                key,
                desired,
                observed: shown.as_ref().map(encode_offer),
                in_sync,
                cause,
            });
        }
        let units_in_flight: i64 = in_flight.values().copied().filter(|q| *q > 0).sum();
        for (code, want) in desired_stock {
            let shown = obs.stock.get(&code).copied();
            // A channel showing fewer units than desired by no more than the units in flight
            // is showing a sale the source has not booked (usually its own): never push it
            // back up; it is drift with cause `order_in_flight` until the source catches up.
            if let Some(s) = shown
                && s < want
                && want - s <= units_in_flight
            {
                item_in_sync = false;
                plan.rows.push(TargetRow {
                    key: StateKey {
                        sku: item.sku.clone(),
                        field: Field::Stock,
                        location: code,
                    },
                    desired: want.to_string(),
                    observed: Some(s.to_string()),
                    in_sync: false,
                    cause: Some(Cause::OrderInFlight),
                });
                continue;
            }
            let key = StateKey {
                sku: item.sku.clone(),
                field: Field::Stock,
                location: code.clone(),
            };
            let desired = want.to_string();
            let in_sync = shown == Some(want);
            item_in_sync &= in_sync;
            let cause = (!in_sync)
                .then(|| cause_for(prev.get(&key), &desired))
                .flatten();
            if !in_sync {
                plan.corrections.push(Planned {
                    key: key.clone(),
                    value: desired.clone(),
                    external_id: Some(obs.external_id.clone()),
                    refs: obs.refs.clone(),
                    change: Change::Stock {
                        location: code,
                        quantity: want,
                        expected: if spec.compare_and_set { shown } else { None },
                    },
                });
            }
            plan.rows.push(TargetRow {
                key,
                desired,
                observed: shown.map(|q| q.to_string()),
                in_sync,
                cause,
            });
        }
        if item_in_sync {
            plan.items_in_sync += 1;
        }
    }
    plan
}

/// Stock a channel stopped showing on its own, per SKU: the units by which a location read
/// now (`fresh`) fell below what the channel showed before (its value was in sync and
/// confirmed by a read) and below what it should show now. The daemon lowers a channel only
/// through a correction, and a location with a correction pending is not in sync, so such a
/// drop is someone else's: most likely a sale whose order has not reached the daemon (or
/// never will, from a system without order events). The engine reserves these units like
/// an order's, so the other channels drop at once and the channel is not pushed back up.
pub fn unexplained_drops(
    spec: &TargetSpec,
    ctx: &PlanContext<'_>,
    items: &[CanonicalItem],
    observed: &HashMap<String, Observed>,
    prev: &HashMap<StateKey, PrevState>,
    fresh: impl Fn(&str) -> bool,
) -> BTreeMap<String, i64> {
    let mut drops = BTreeMap::new();
    let Some(rules) = &spec.stock else {
        return drops;
    };
    let no_flight = BTreeMap::new();
    for item in items.iter().filter(|i| fresh(&i.sku)) {
        let Some(obs) = observed.get(&item.sku) else {
            continue;
        };
        let in_flight = ctx.in_flight.get(&item.sku).unwrap_or(&no_flight);
        let mut units = 0;
        for (code, want) in rules.desired(&item.stock, in_flight) {
            let key = StateKey {
                sku: item.sku.clone(),
                field: Field::Stock,
                location: code.clone(),
            };
            let before = prev
                .get(&key)
                .filter(|p| p.in_sync && !p.unverified)
                .and_then(|p| p.desired.parse::<i64>().ok());
            if let (Some(before), Some(&shown)) = (before, obs.stock.get(&code))
                && shown < before
                && shown < want
            {
                units += (before - shown).min(want - shown);
            }
        }
        if units > 0 {
            drops.insert(item.sku.clone(), units);
        }
    }
    drops
}

/// Three-way classification of an open difference: desired now vs desired before (did the
/// source move?), and whether the channel agreed before (did the channel move?). Otherwise
/// keep what the outbox learned (a failed or no-op write). A value that was in sync only
/// because an accepted write was taken as shown did not take: `write_no_op`. Unknown on
/// first sight.
fn cause_for(prev: Option<&PrevState>, desired: &str) -> Option<Cause> {
    let prev = prev?;
    if prev.desired != desired {
        Some(Cause::SourceChanged)
    } else if prev.in_sync && prev.unverified {
        Some(Cause::WriteNoOp)
    } else if prev.in_sync {
        Some(Cause::ChannelEdit)
    } else {
        prev.cause
    }
}

/// Applies corrections to a channel's listings as an API that honours them would. Used by
/// tests and by the dry run's "after" preview.
pub fn apply(observed: &mut HashMap<String, Observed>, corrections: &[Planned]) {
    for c in corrections {
        apply_change(observed, &c.key.sku, &c.change);
    }
}

/// Applies one change to `sku`'s listing as an API that honours it would (a created
/// listing gets the SKU as its id). A webhook pass takes accepted writes as shown this way.
pub fn apply_change(observed: &mut HashMap<String, Observed>, sku: &str, change: &Change) {
    match change {
        Change::Create { offer, stock, .. } => {
            observed.insert(
                sku.to_string(),
                Observed {
                    external_id: sku.to_string(),
                    refs: BTreeMap::new(),
                    offer: Some(*offer),
                    stock: stock.clone(),
                },
            );
        }
        Change::Offer { offer } => {
            if let Some(o) = observed.get_mut(sku) {
                o.offer = Some(*offer);
            }
        }
        Change::Stock {
            location, quantity, ..
        } => {
            if let Some(o) = observed.get_mut(sku) {
                o.stock.insert(location.clone(), *quantity);
            }
        }
    }
}

/// The state a plan leaves behind, as the next pass's `prev`.
pub fn as_prev(rows: &[TargetRow]) -> HashMap<StateKey, PrevState> {
    rows.iter()
        .map(|r| {
            (
                r.key.clone(),
                PrevState {
                    desired: r.desired.clone(),
                    in_sync: r.in_sync,
                    cause: r.cause,
                    unverified: false,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;

//! Planner tests: examples for each cause, and property tests for the invariants
//! (a plan applied leaves nothing to plan; stock is never negative; plans are deterministic).

use super::price::{Discount, FxRate, Rounding, RoundingMode};
use super::stock::StockMode;
use super::*;
use omnisync_sdk::{Currency, Money};
use proptest::prelude::*;
use rust_decimal::Decimal;
use time::macros::{date, datetime};

fn source() -> SourcePricing {
    SourcePricing {
        currency: Currency::NOK,
        includes_vat: false,
        vat_percent: Decimal::from(25),
    }
}

fn fx() -> FxTable {
    FxTable::new([FxRate {
        from: Currency::NOK,
        to: Currency::EUR,
        rate: Decimal::new(857, 4),
        date: date!(2026 - 01 - 01),
    }])
}

fn shop_spec(cas: bool) -> TargetSpec {
    TargetSpec {
        id: "shop".into(),
        price: Some(PriceRules {
            currency: Currency::NOK,
            includes_vat: true,
            vat_percent: Decimal::from(25),
            markup_percent: Decimal::ZERO,
            rounding: Rounding {
                step: 100,
                ending: 90,
                mode: RoundingMode::Nearest,
            },
        }),
        stock: Some(StockRules {
            mode: StockMode::PerLocation(BTreeMap::from([
                ("oslo".to_string(), "L1".to_string()),
                ("wh".to_string(), "L2".to_string()),
            ])),
            safety_buffer: 1,
            cap: None,
            percent: None,
        }),
        sale_field: true,
        creates_listings: false,
        compare_and_set: cas,
    }
}

fn market_spec() -> TargetSpec {
    TargetSpec {
        id: "market".into(),
        price: Some(PriceRules {
            currency: Currency::EUR,
            includes_vat: true,
            vat_percent: Decimal::from(19),
            markup_percent: Decimal::from(12),
            rounding: Rounding {
                step: 100,
                ending: 99,
                mode: RoundingMode::Up,
            },
        }),
        stock: Some(StockRules {
            mode: StockMode::Pooled {
                from: vec!["wh".into(), "oslo".into()],
                code: "default".into(),
            },
            safety_buffer: 2,
            cap: Some(50),
            percent: None,
        }),
        sale_field: false,
        creates_listings: true,
        compare_and_set: false,
    }
}

fn item(sku: &str, price: i64, oslo: i64, wh: i64) -> CanonicalItem {
    CanonicalItem {
        sku: sku.into(),
        title: Some(format!("Item {sku}")),
        price: Some(Money::new(price, Currency::NOK)),
        stock: BTreeMap::from([("oslo".to_string(), oslo), ("wh".to_string(), wh)]),
    }
}

fn ctx<'a>(
    promos: &'a [Promotion],
    src: &'a SourcePricing,
    fx: &'a FxTable,
    flight: &'a HashMap<String, BTreeMap<String, i64>>,
) -> PlanContext<'a> {
    PlanContext {
        now: datetime!(2026-11-23 12:00 UTC),
        source: src,
        fx,
        promotions: promos,
        in_flight: flight,
    }
}

#[test]
fn computes_desired_values_and_corrections() {
    let (src, fx, flight) = (source(), fx(), HashMap::new());
    let c = ctx(&[], &src, &fx, &flight);
    let items = vec![item("A", 10000, 3, 10)];
    let plan = plan_channel(
        &shop_spec(true),
        &c,
        &items,
        &HashMap::new(),
        &HashMap::new(),
    );
    // Not listed: a mapping drift, and this channel cannot create listings.
    assert_eq!(plan.items_in_sync, 0);
    assert!(plan.corrections.is_empty());
    assert_eq!(plan.rows[0].cause, Some(Cause::Mapping));

    let observed = HashMap::from([(
        "A".to_string(),
        Observed {
            external_id: "v1".into(),
            offer: Some(Offer::regular(Money::new(12500, Currency::NOK))),
            stock: BTreeMap::from([("L1".to_string(), 2), ("L2".to_string(), 4)]),
            ..Default::default()
        },
    )]);
    let plan = plan_channel(&shop_spec(true), &c, &items, &observed, &HashMap::new());
    // 100.00 NOK + 25 % VAT = 125.00 -> nearest x.90 = 124.90; L1 = 3-1 = 2 (in sync); L2 = 10-1 = 9.
    let changes: Vec<_> = plan.corrections.iter().map(|p| p.change.clone()).collect();
    assert_eq!(
        changes,
        vec![
            Change::Offer {
                offer: Offer::regular(Money::new(12490, Currency::NOK))
            },
            Change::Stock {
                location: "L2".into(),
                quantity: 9,
                expected: Some(4)
            },
        ]
    );
    assert_eq!(plan.items_checked, 1);
    assert_eq!(plan.items_in_sync, 0);
}

#[test]
fn classifies_channel_edit_and_source_change() {
    let (src, fx, flight) = (source(), fx(), HashMap::new());
    let c = ctx(&[], &src, &fx, &flight);
    let spec = shop_spec(false);
    let items = vec![item("A", 10000, 3, 10)];
    let in_sync = HashMap::from([(
        "A".to_string(),
        Observed {
            external_id: "v1".into(),
            offer: Some(Offer::regular(Money::new(12490, Currency::NOK))),
            stock: BTreeMap::from([("L1".to_string(), 2), ("L2".to_string(), 9)]),
            ..Default::default()
        },
    )]);
    let first = plan_channel(&spec, &c, &items, &in_sync, &HashMap::new());
    assert_eq!(first.items_in_sync, 1);
    assert!(first.corrections.is_empty());
    let prev = as_prev(&first.rows);

    // Someone edits the price in the shop admin.
    let mut edited = in_sync.clone();
    edited.get_mut("A").unwrap().offer = Some(Offer::regular(Money::new(9990, Currency::NOK)));
    let plan = plan_channel(&spec, &c, &items, &edited, &prev);
    let offer_row = plan
        .rows
        .iter()
        .find(|r| r.key.field == Field::Offer)
        .unwrap();
    assert_eq!(offer_row.cause, Some(Cause::ChannelEdit));
    assert_eq!(offer_row.observed.as_deref(), Some("9990 NOK"));

    // The same read after a write that was taken as shown without a read-back: the write
    // did not take.
    let unverified: HashMap<StateKey, PrevState> = prev
        .iter()
        .map(|(k, p)| {
            let mut p = p.clone();
            p.unverified = k.field == Field::Offer;
            (k.clone(), p)
        })
        .collect();
    let plan = plan_channel(&spec, &c, &items, &edited, &unverified);
    let offer_row = plan
        .rows
        .iter()
        .find(|r| r.key.field == Field::Offer)
        .unwrap();
    assert_eq!(offer_row.cause, Some(Cause::WriteNoOp));

    // The store sells units: the source moved, the channel did not.
    let moved = vec![item("A", 10000, 1, 10)];
    let plan = plan_channel(&spec, &c, &moved, &in_sync, &prev);
    let l1 = plan.rows.iter().find(|r| r.key.location == "L1").unwrap();
    assert_eq!(l1.cause, Some(Cause::SourceChanged));
    assert_eq!(l1.desired, "0");
}

#[test]
fn live_sale_goes_to_sale_field_or_effective_price() {
    let (src, fx, flight) = (source(), fx(), HashMap::new());
    let promos = vec![Promotion {
        name: "bw".into(),
        skus: vec![],
        sku_prefix: Some("A".into()),
        discount: Discount::PercentOff(Decimal::from(20)),
        from: datetime!(2026-11-20 00:00 UTC),
        to: datetime!(2026-11-30 00:00 UTC),
        channels: vec![],
    }];
    let c = ctx(&promos, &src, &fx, &flight);
    let items = vec![item("A1", 10000, 0, 0)];
    let listed = |code: &str| {
        HashMap::from([(
            "A1".to_string(),
            Observed {
                external_id: "x".into(),
                stock: BTreeMap::from([(code.to_string(), 0)]),
                ..Default::default()
            },
        )])
    };
    let shop = plan_channel(
        &shop_spec(false),
        &c,
        &items,
        &listed("L1"),
        &HashMap::new(),
    );
    let Change::Offer { offer } = &shop.corrections[0].change else {
        panic!("expected an offer correction")
    };
    assert_eq!(offer.price.minor, 12490);
    assert_eq!(offer.sale.map(|s| s.minor), Some(9990)); // 80.00*1.25=100.00 -> 99.90
    let market = plan_channel(
        &market_spec(),
        &c,
        &items,
        &listed("default"),
        &HashMap::new(),
    );
    let Change::Offer { offer } = &market.corrections[0].change else {
        panic!("expected an offer correction")
    };
    assert_eq!(offer.sale, None);
    // 80.00 NOK * 1.12 * 0.0857 * 1.19 = 9.1378... -> 9.14 -> up to x.99 = 9.99 EUR
    assert_eq!(*offer, Offer::regular(Money::new(999, Currency::EUR)));
}

#[test]
fn missing_listing_is_created_where_the_channel_can() {
    let (src, fx, flight) = (source(), fx(), HashMap::new());
    let c = ctx(&[], &src, &fx, &flight);
    let items = vec![item("A", 10000, 3, 10)];
    let plan = plan_channel(&market_spec(), &c, &items, &HashMap::new(), &HashMap::new());
    assert!(matches!(
        &plan.corrections[..],
        [Planned {
            change: Change::Create { stock, .. },
            ..
        }] if stock["default"] == 11
    ));
}

#[test]
fn orders_in_flight_lower_stock() {
    let (src, fx) = (source(), fx());
    let flight = HashMap::from([("A".to_string(), BTreeMap::from([("wh".to_string(), 4)]))]);
    let c = ctx(&[], &src, &fx, &flight);
    let items = vec![item("A", 10000, 3, 10)];
    let plan = plan_channel(&market_spec(), &c, &items, &HashMap::new(), &HashMap::new());
    let Change::Create { stock, .. } = &plan.corrections[0].change else {
        panic!("expected create")
    };
    assert_eq!(stock["default"], 3 + 10 - 4 - 2);
}

fn stock_key(sku: &str, location: &str) -> StateKey {
    StateKey {
        sku: sku.into(),
        field: Field::Stock,
        location: location.into(),
    }
}

fn shown_before(values: &[(&str, &str, i64)], unverified: bool) -> HashMap<StateKey, PrevState> {
    values
        .iter()
        .map(|(sku, loc, q)| {
            let prev = PrevState {
                desired: q.to_string(),
                in_sync: true,
                cause: None,
                unverified,
            };
            (stock_key(sku, loc), prev)
        })
        .collect()
}

fn showing(sku: &str, l1: i64, l2: i64) -> HashMap<String, Observed> {
    HashMap::from([(
        sku.to_string(),
        Observed {
            external_id: format!("x-{sku}"),
            refs: BTreeMap::new(),
            offer: None,
            stock: BTreeMap::from([("L1".to_string(), l1), ("L2".to_string(), l2)]),
        },
    )])
}

#[test]
fn a_stock_drop_nobody_asked_for_is_a_sale_in_flight() {
    let (src, fx, none) = (source(), fx(), HashMap::new());
    let spec = shop_spec(false);
    // Oslo 5 and the warehouse 10, less the buffer of 1: the shop showed 4 and 9.
    let items = vec![item("A", 10000, 5, 10)];
    let before = shown_before(&[("A", "L1", 4), ("A", "L2", 9)], false);
    let c = ctx(&[], &src, &fx, &none);
    let all = |_: &str| true;

    // Two units left Oslo in the shop, nothing at the source: two units in flight.
    let drops = unexplained_drops(&spec, &c, &items, &showing("A", 2, 9), &before, all);
    assert_eq!(drops, BTreeMap::from([("A".to_string(), 2)]));

    // Planned with them, the shop is not pushed back up where it sold.
    let flight = HashMap::from([("A".to_string(), BTreeMap::from([(String::new(), 2)]))]);
    let c2 = ctx(&[], &src, &fx, &flight);
    let plan = plan_channel(&spec, &c2, &items, &showing("A", 2, 9), &before);
    assert!(
        !plan
            .corrections
            .iter()
            .any(|p| p.key == stock_key("A", "L1")),
        "{:?}",
        plan.corrections
    );

    // Not a drop: the source fell as much (booked), the order is already reserved, the
    // value before was one of our writes not read back yet, the channel was not in sync
    // (a correction is pending), or the listing was not read now.
    let booked = vec![item("A", 10000, 3, 10)];
    assert!(unexplained_drops(&spec, &c, &booked, &showing("A", 2, 9), &before, all).is_empty());
    let ordered = HashMap::from([("A".to_string(), BTreeMap::from([(String::new(), 2)]))]);
    let c3 = ctx(&[], &src, &fx, &ordered);
    assert!(unexplained_drops(&spec, &c3, &items, &showing("A", 2, 9), &before, all).is_empty());
    let ours = shown_before(&[("A", "L1", 4), ("A", "L2", 9)], true);
    assert!(unexplained_drops(&spec, &c, &items, &showing("A", 2, 9), &ours, all).is_empty());
    let mut pending = before.clone();
    pending.get_mut(&stock_key("A", "L1")).unwrap().in_sync = false;
    assert!(unexplained_drops(&spec, &c, &items, &showing("A", 2, 9), &pending, all).is_empty());
    let stored = |_: &str| false;
    assert!(unexplained_drops(&spec, &c, &items, &showing("A", 2, 9), &before, stored).is_empty());

    // A partial booking leaves the rest in flight; drops at two locations add up.
    let partly = vec![item("A", 10000, 4, 10)];
    let drops = unexplained_drops(&spec, &c, &partly, &showing("A", 2, 9), &before, all);
    assert_eq!(drops["A"], 1);
    let drops = unexplained_drops(&spec, &c, &items, &showing("A", 3, 7), &before, all);
    assert_eq!(drops["A"], 3);
}

#[test]
fn offers_encode_and_decode() {
    for offer in [
        Offer::regular(Money::new(12990, Currency::NOK)),
        Offer {
            price: Money::new(12990, Currency::NOK),
            sale: Some(Money::new(9990, Currency::NOK)),
        },
    ] {
        assert_eq!(decode_offer(&encode_offer(&offer)), Some(offer));
    }
    assert_eq!(decode_offer("12 NOK extra"), None);
    assert_eq!(decode_offer("x NOK"), None);
}

fn arb_items() -> impl Strategy<Value = Vec<CanonicalItem>> {
    prop::collection::btree_map(
        "[A-Z]{1,3}[0-9]{0,2}",
        (1i64..5_000_000, -5i64..200, -5i64..200, any::<bool>()),
        0..30,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(sku, (price, oslo, wh, has_price))| CanonicalItem {
                sku,
                title: None,
                price: has_price.then_some(Money::new(price, Currency::NOK)),
                stock: BTreeMap::from([("oslo".to_string(), oslo), ("wh".to_string(), wh)]),
            })
            .collect()
    })
}

fn arb_observed(
    items: &[CanonicalItem],
) -> impl Strategy<Value = HashMap<String, Observed>> + use<> {
    let skus: Vec<String> = items.iter().map(|i| i.sku.clone()).collect();
    prop::collection::vec(
        (
            any::<bool>(),
            0i64..1_000_000,
            -3i64..300,
            -3i64..300,
            any::<bool>(),
        ),
        skus.len(),
    )
    .prop_map(move |rows| {
        skus.iter()
            .zip(rows)
            .filter(|(_, (listed, ..))| *listed)
            .map(|(sku, (_, price, a, b, eur))| {
                let cur = if eur { Currency::EUR } else { Currency::NOK };
                (
                    sku.clone(),
                    Observed {
                        external_id: format!("x-{sku}"),
                        refs: BTreeMap::new(),
                        offer: Some(Offer::regular(Money::new(price, cur))),
                        stock: BTreeMap::from([("L1".to_string(), a), ("default".to_string(), b)]),
                    },
                )
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn applying_a_plan_leaves_nothing_to_plan(
        (items, observed) in arb_items().prop_flat_map(|items| {
            let obs = arb_observed(&items);
            (Just(items), obs)
        }),
        cas in any::<bool>(),
    ) {
        let (src, fx, flight) = (source(), fx(), HashMap::new());
        let c = ctx(&[], &src, &fx, &flight);
        for spec in [shop_spec(cas), market_spec()] {
            let mut obs = observed.clone();
            let first = plan_channel(&spec, &c, &items, &obs, &HashMap::new());
            apply(&mut obs, &first.corrections);
            let second = plan_channel(&spec, &c, &items, &obs, &as_prev(&first.rows));
            prop_assert!(second.corrections.is_empty(), "{:?}", second.corrections);
        }
    }

    #[test]
    fn stock_is_never_negative(items in arb_items()) {
        let (src, fx, flight) = (source(), fx(), HashMap::new());
        let c = ctx(&[], &src, &fx, &flight);
        for spec in [shop_spec(false), market_spec()] {
            let plan = plan_channel(&spec, &c, &items, &HashMap::new(), &HashMap::new());
            for p in &plan.corrections {
                match &p.change {
                    Change::Stock { quantity, .. } => prop_assert!(*quantity >= 0),
                    Change::Create { stock, .. } => prop_assert!(stock.values().all(|q| *q >= 0)),
                    Change::Offer { .. } => {}
                }
            }
        }
    }

    #[test]
    fn plans_are_deterministic(
        (items, observed) in arb_items().prop_flat_map(|items| {
            let obs = arb_observed(&items);
            (Just(items), obs)
        }),
    ) {
        let (src, fx, flight) = (source(), fx(), HashMap::new());
        let c = ctx(&[], &src, &fx, &flight);
        let a = plan_channel(&market_spec(), &c, &items, &observed, &HashMap::new());
        let b = plan_channel(&market_spec(), &c, &items, &observed.clone(), &HashMap::new());
        prop_assert_eq!(a, b);
    }

    #[test]
    fn rounding_is_deterministic_and_lands_on_the_ending(
        minor in 0i64..100_000_000,
        step in prop::sample::select(vec![1i64, 10, 100, 1000]),
        ending_frac in 0u8..100,
        mode in prop::sample::select(vec![RoundingMode::Nearest, RoundingMode::Up, RoundingMode::Down]),
    ) {
        let ending = (step * i64::from(ending_frac)) / 100;
        let r = Rounding { step, ending, mode };
        let x = r.apply(minor);
        prop_assert_eq!(x, r.apply(minor));
        prop_assert!(x >= 0);
        if step > 1 {
            prop_assert_eq!((x - ending).rem_euclid(step), 0);
            prop_assert!((x - minor).abs() <= step);
        }
    }
}

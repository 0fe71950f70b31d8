//! Helpers shared by the integration tests: a seeded simulator on an ephemeral loopback
//! port, an adapter pointed at it, and deterministic catalogs.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use omnisync_sdk::sim::{SimControl, SimRecord, SimServer};
use omnisync_sdk::{Change, Connector, Correction, Currency, Money, Offer, Record};
use omnisync_shopify::sim::{SimOptions, Simulator, start};
use omnisync_shopify::{Settings, ShopifyConnector, connect};

/// A location gid.
pub fn loc(n: u64) -> String {
    format!("gid://shopify/Location/{n}")
}

/// NOK money.
pub fn nok(minor: i64) -> Money {
    Money::new(minor, Currency::NOK)
}

/// `n` listings: SKU-00000…, every fifth on sale, stocked at locations 1 and 2 (and 3 for
/// even ones).
pub fn catalog(n: usize) -> Vec<SimRecord> {
    (0..n)
        .map(|i| {
            let price = nok(10_000 + i as i64 * 10);
            let offer = if i % 5 == 0 {
                Offer {
                    price,
                    sale: Some(nok(8_000 + i as i64 * 10)),
                }
            } else {
                Offer::regular(price)
            };
            let mut stock = BTreeMap::from([(loc(1), (i % 7) as i64), (loc(2), (i % 3) as i64)]);
            if i % 2 == 0 {
                stock.insert(loc(3), 5);
            }
            SimRecord {
                sku: format!("SKU-{i:05}"),
                title: format!("Item {i}"),
                offer,
                stock,
            }
        })
        .collect()
}

/// A running simulator seeded with `records`, and adapter settings for it.
pub struct Harness {
    pub sim: Arc<Simulator>,
    pub server: SimServer,
    pub settings: Settings,
}

impl Harness {
    pub async fn new(options: SimOptions, records: Vec<SimRecord>) -> Harness {
        let (sim, server) = start("127.0.0.1:0".parse().expect("addr"), options.clone())
            .await
            .expect("simulator starts");
        sim.seed(records);
        let settings = options.settings(&server.base_url());
        Harness {
            sim,
            server,
            settings,
        }
    }

    pub fn connector(&self) -> ShopifyConnector {
        connect(self.settings.clone()).expect("connects")
    }

    pub fn connector_with(&self, edit: impl FnOnce(&mut Settings)) -> ShopifyConnector {
        let mut s = self.settings.clone();
        edit(&mut s);
        connect(s).expect("connects")
    }

    /// The simulator's listing for `sku`.
    pub fn record(&self, sku: &str) -> SimRecord {
        self.sim
            .records()
            .into_iter()
            .find(|r| r.sku == sku)
            .expect("sku in simulator")
    }
}

/// Every page of a full read.
pub async fn read_all(c: &dyn Connector) -> (Vec<Record>, usize) {
    let mut out = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = c.read_page(cursor).await.expect("page reads");
        pages += 1;
        out.extend(page.records);
        match page.next {
            Some(n) => cursor = Some(n),
            None => return (out, pages),
        }
        assert!(pages < 10_000, "paging never ends");
    }
}

/// A stock correction for a record read from the adapter.
pub fn stock_fix(r: &Record, location: &str, quantity: i64, expected: Option<i64>) -> Correction {
    Correction {
        idempotency_key: format!(
            "stock:{}:{location}:{quantity}",
            r.sku.clone().unwrap_or_default()
        ),
        sku: r.sku.clone().unwrap_or_default(),
        external_id: Some(r.external_id.clone()),
        refs: r.refs.clone(),
        change: Change::Stock {
            location: location.to_string(),
            quantity,
            expected,
        },
    }
}

/// An offer correction for a record read from the adapter.
pub fn offer_fix(r: &Record, offer: Offer) -> Correction {
    Correction {
        idempotency_key: format!(
            "offer:{}:{}",
            r.sku.clone().unwrap_or_default(),
            offer.price.minor
        ),
        sku: r.sku.clone().unwrap_or_default(),
        external_id: Some(r.external_id.clone()),
        refs: r.refs.clone(),
        change: Change::Offer { offer },
    }
}

/// The records for `skus`, read through the adapter, in SKU order.
pub async fn read(c: &dyn Connector, skus: &[&str]) -> Vec<Record> {
    let skus: Vec<String> = skus.iter().map(|s| s.to_string()).collect();
    let mut out = c.read_skus(&skus).await.expect("read_skus");
    out.sort_by(|a, b| a.sku.cmp(&b.sku));
    out
}

//! Drives the Tryton adapter against the loopback simulator: paging, read-back by SKU,
//! item-level tolerance, sessions, error classification and the read-only contract.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use omnisync_sdk::sim::{Fault, SimControl, SimRecord, SimServer};
use omnisync_sdk::{
    Change, Connector, Correction, Currency, ErrorKind, Money, Offer, Record, SecretRef,
};
use omnisync_tryton::sim::{self, SimOptions, SimProduct, Simulator};
use omnisync_tryton::{Settings, TrytonConnector, connect};

fn record(i: usize) -> SimRecord {
    SimRecord {
        sku: format!("SKU-{i:06}"),
        title: format!("Product {i}"),
        offer: Offer::regular(Money::new(10_000 + i as i64, Currency::NOK)),
        stock: [
            ("3".to_string(), (i % 7) as i64),
            ("7".to_string(), (i % 5) as i64),
            ("11".to_string(), 100 + (i % 3) as i64),
        ]
        .into_iter()
        .collect(),
    }
}

async fn start(n: usize) -> (Arc<Simulator>, SimServer, Settings) {
    let options = SimOptions::default();
    let (sim, server) = sim::start("127.0.0.1:0".parse().unwrap(), options.clone())
        .await
        .unwrap();
    sim.seed((0..n).map(record).collect());
    let settings = options.settings(&server.base_url());
    (sim, server, settings)
}

fn connector(settings: Settings) -> TrytonConnector {
    connect(settings).unwrap()
}

async fn read_all(c: &TrytonConnector) -> (Vec<Record>, usize) {
    let mut cursor = None;
    let mut records = Vec::new();
    let mut pages = 0;
    loop {
        let page = c.read_page(cursor).await.unwrap();
        pages += 1;
        records.extend(page.records);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    (records, pages)
}

fn level(r: &Record, loc: &str) -> (i64, Option<i64>) {
    let l = r.stock.iter().find(|l| l.location == loc).unwrap();
    (l.available, l.on_hand)
}

#[tokio::test]
async fn full_read_in_several_pages_matches_the_catalog() {
    let (sim, _server, mut settings) = start(2_500).await;
    settings.page_size = 1_000;
    let c = connector(settings);
    let (records, pages) = read_all(&c).await;
    assert_eq!(pages, 3);
    assert_eq!(records.len(), 2_500);
    let skus: BTreeSet<_> = records.iter().filter_map(|r| r.sku.clone()).collect();
    assert_eq!(skus.len(), 2_500);

    let expected: BTreeMap<String, SimRecord> = sim
        .records()
        .into_iter()
        .map(|r| (r.sku.clone(), r))
        .collect();
    for r in &records {
        let e = &expected[r.sku.as_deref().unwrap()];
        assert_eq!(r.offer, Some(e.offer));
        assert_eq!(r.title.as_deref(), Some(e.title.as_str()));
        assert_eq!(r.stock.len(), 3);
        for (loc, q) in &e.stock {
            assert_eq!(level(r, loc), (*q, Some(*q)), "{} @ {loc}", e.sku);
        }
        assert_eq!(r.external_id, sim.product_id(&e.sku).unwrap().to_string());
    }
    // One login, one location check, then per page one call per location: never per item.
    let stats = sim.counters().snapshot();
    assert_eq!(stats.requests, 1 + 1 + 3 * 3);
    assert_eq!(sim.logins(), 1);
}

#[tokio::test]
async fn paging_by_id_survives_changes_between_pages() {
    let (sim, _server, mut settings) = start(30).await;
    settings.page_size = 10;
    let c = connector(settings);
    let first = c.read_page(None).await.unwrap();
    assert_eq!(first.records.len(), 10);
    assert_eq!(first.next.as_deref(), Some("10"));
    // Deactivating a product of a later page and adding one between pages shifts nothing.
    assert!(sim.set_active("SKU-000012", false));
    sim.add(record(30));
    let mut cursor = first.next;
    let mut rest = Vec::new();
    while let Some(next) = cursor {
        let page = c.read_page(Some(next)).await.unwrap();
        assert!(page.records.iter().all(|r| r.stock.len() == 3));
        rest.extend(page.records);
        cursor = page.next;
    }
    let skus: BTreeSet<_> = first
        .records
        .iter()
        .chain(&rest)
        .filter_map(|r| r.sku.clone())
        .collect();
    assert_eq!(skus.len(), 30);
    assert!(!skus.contains("SKU-000012"));
    assert!(skus.contains("SKU-000030"));
}

#[tokio::test]
async fn read_skus_reads_back_only_known_skus_in_one_search_per_location() {
    let (sim, _server, settings) = start(50).await;
    let c = connector(settings);
    let before = sim.counters().snapshot().requests;
    let wanted = vec![
        "SKU-000003".to_string(),
        "SKU-000042".to_string(),
        "NOT-THERE".to_string(),
        "SKU-000003".to_string(),
    ];
    let records = c.read_skus(&wanted).await.unwrap();
    let skus: BTreeSet<_> = records.iter().filter_map(|r| r.sku.clone()).collect();
    assert_eq!(
        skus,
        ["SKU-000003", "SKU-000042"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    // login + location check + one search per location
    assert_eq!(sim.counters().snapshot().requests - before, 2 + 3);
    assert!(c.read_skus(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn read_skus_splits_above_the_read_batch() {
    let (_sim, _server, mut settings) = start(25).await;
    settings.read_batch = 10;
    let c = connector(settings);
    assert_eq!(c.capabilities().max_read_batch, 10);
    let wanted: Vec<String> = (0..25).map(|i| format!("SKU-{i:06}")).collect();
    assert_eq!(c.read_skus(&wanted).await.unwrap().len(), 25);
}

#[tokio::test]
async fn edits_in_tryton_show_up_in_reads() {
    let (sim, _server, settings) = start(5).await;
    let c = connector(settings);
    assert!(sim.set_offer(
        "SKU-000001",
        Offer::regular(Money::new(12_990, Currency::NOK))
    ));
    assert!(sim.set_stock("SKU-000001", "7", 42));
    let r = c.read_skus(&["SKU-000001".to_string()]).await.unwrap();
    assert_eq!(r[0].offer.unwrap().price, Money::new(12_990, Currency::NOK));
    assert_eq!(level(&r[0], "7"), (42, Some(42)));
}

#[tokio::test]
async fn one_bad_product_never_sinks_the_page() {
    let (sim, _server, settings) = start(3).await;
    let stock = |q: f64, f: f64| {
        [(3, (q, f)), (7, (q, f)), (11, (q, f))]
            .into_iter()
            .collect()
    };
    sim.insert_product(SimProduct {
        code: None,
        name: "No code".into(),
        list_price: Some("10.00".into()),
        active: true,
        stock: stock(1.0, 1.0),
    });
    sim.insert_product(SimProduct {
        code: Some("BAD-PRICE".into()),
        name: "Sub-øre price".into(),
        list_price: Some("10.0050".into()),
        active: true,
        stock: stock(4.0, 4.0),
    });
    sim.insert_product(SimProduct {
        code: Some("NO-PRICE".into()),
        name: "No price".into(),
        list_price: None,
        active: true,
        stock: stock(2.0, 2.0),
    });
    sim.insert_product(SimProduct {
        code: Some("KG".into()),
        name: "Sold by weight".into(),
        list_price: Some("99.9000".into()),
        active: true,
        stock: stock(2.75, 1.5),
    });
    sim.insert_product(SimProduct {
        code: Some("OVERSOLD".into()),
        name: "Oversold".into(),
        list_price: Some("5".into()),
        active: true,
        stock: stock(-3.0, -5.0),
    });
    sim.insert_product(SimProduct {
        code: Some("INACTIVE".into()),
        name: "Inactive".into(),
        list_price: Some("5".into()),
        active: false,
        stock: stock(9.0, 9.0),
    });
    let c = connector(settings);
    let page = c.read_page(None).await.unwrap();
    let by_sku: BTreeMap<String, Record> = page
        .records
        .into_iter()
        .map(|r| (r.sku.clone().unwrap(), r))
        .collect();
    // 3 good + bad price + no price + kg + oversold; no-code and inactive are absent.
    assert_eq!(by_sku.len(), 7, "{:?}", by_sku.keys());
    assert!(!by_sku.contains_key("INACTIVE"));
    assert_eq!(by_sku["BAD-PRICE"].offer, None);
    assert_eq!(level(&by_sku["BAD-PRICE"], "3"), (4, Some(4)));
    assert_eq!(by_sku["NO-PRICE"].offer, None);
    assert_eq!(by_sku["KG"].offer.unwrap().price.minor, 9990);
    assert_eq!(level(&by_sku["KG"], "11"), (1, Some(2)));
    assert_eq!(level(&by_sku["OVERSOLD"], "3"), (0, Some(-3)));
}

#[tokio::test]
async fn forecast_below_quantity_limits_available() {
    let (sim, _server, settings) = start(2).await;
    assert!(sim.set_quantities("SKU-000001", 3, 10.0, 6.0));
    let c = connector(settings);
    let r = c.read_skus(&["SKU-000001".to_string()]).await.unwrap();
    assert_eq!(level(&r[0], "3"), (6, Some(10)));
}

#[tokio::test]
async fn push_is_refused_because_tryton_is_the_source() {
    let (sim, _server, settings) = start(2).await;
    let c = connector(settings);
    let caps = c.capabilities();
    assert!(!caps.writes_price && !caps.writes_stock && !caps.creates_listings);
    assert!(caps.stock_per_location);
    let batch = vec![Correction {
        idempotency_key: "k".into(),
        sku: "SKU-000001".into(),
        external_id: Some("2".into()),
        refs: Default::default(),
        change: Change::Stock {
            location: "3".into(),
            quantity: 1,
            expected: None,
        },
    }];
    let e = c.push(&batch).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.to_string().contains("read-only"));
    assert_eq!(
        sim.counters().snapshot().requests,
        0,
        "no call reaches Tryton"
    );
    assert_eq!(sim.counters().snapshot().max_batch_seen, 0);
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_without_the_password() {
    let (_sim, _server, mut settings) = start(2).await;
    settings.password = SecretRef::Literal("hunter2-wrong".into());
    let c = connector(settings);
    let e = c.read_page(None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert_eq!(e.status, Some(401));
    assert!(!e.to_string().contains("hunter2"));
    assert!(!format!("{c:?}").contains("hunter2"));
    let e = c.healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
}

#[tokio::test]
async fn too_many_failed_logins_is_trytons_own_throttle() {
    let (sim, _server, mut settings) = start(2).await;
    let good = settings.clone();
    settings.password = SecretRef::Literal("wrong".into());
    let bad = connector(settings);
    let max = sim.options().max_login_attempts;
    for _ in 0..=max {
        assert_eq!(bad.healthcheck().await.unwrap_err().kind, ErrorKind::Auth);
    }
    let e = bad.healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Throttled);
    assert_eq!(e.status, Some(429));
    assert_eq!(e.retry_after, Some(Duration::from_secs(300)));
    // Even the right password is throttled now, as in trytond.
    let e = connector(good).healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Throttled);
    assert!(sim.counters().snapshot().throttled >= 2);
}

#[tokio::test]
async fn expired_session_logs_in_again_once() {
    let (sim, _server, settings) = start(5).await;
    let c = connector(settings);
    c.read_page(None).await.unwrap();
    assert_eq!(sim.logins(), 1);
    sim.expire_sessions();
    let page = c.read_page(None).await.unwrap();
    assert_eq!(page.records.len(), 5);
    assert_eq!(sim.logins(), 2);
}

#[tokio::test]
async fn injected_server_error_is_transient() {
    let (sim, _server, settings) = start(5).await;
    let c = connector(settings);
    c.healthcheck().await.unwrap();
    sim.faults().inject(
        Fault::Status {
            status: 500,
            retry_after: None,
        },
        1,
    );
    let e = c.read_page(None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient);
    assert!(e.is_retryable());
    assert_eq!(e.status, Some(500));
    // The next call goes through.
    assert_eq!(c.read_page(None).await.unwrap().records.len(), 5);
}

#[tokio::test]
async fn injected_429_is_throttled_with_retry_after() {
    let (sim, _server, settings) = start(5).await;
    let c = connector(settings);
    c.healthcheck().await.unwrap();
    sim.faults().inject(
        Fault::Status {
            status: 429,
            retry_after: Some(7),
        },
        1,
    );
    let e = c.read_skus(&["SKU-000001".into()]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Throttled);
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn injected_malformed_json_is_a_protocol_error_naming_the_call() {
    let (sim, _server, settings) = start(5).await;
    let c = connector(settings);
    c.healthcheck().await.unwrap();
    sim.faults().inject(Fault::MalformedJson, 1);
    let e = c.read_page(None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Protocol);
    assert!(
        e.to_string().contains("model.product.product.search_read"),
        "{e}"
    );
}

#[tokio::test]
async fn unknown_location_fails_closed_naming_it() {
    let (_sim, _server, mut settings) = start(5).await;
    settings.locations = vec![3, 999, 7];
    let c = connector(settings);
    let e = c.healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.to_string().contains("999"), "{e}");
    // Reads refuse too rather than report zero stock at a location that does not exist.
    let e = c.read_page(None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.to_string().contains("999"));
}

#[tokio::test]
async fn healthcheck_checks_the_company_currency() {
    let (_sim, _server, settings) = start(1).await;
    connector(settings.clone()).healthcheck().await.unwrap();
    let mut eur = settings.clone();
    eur.currency = "EUR".into();
    let e = connector(eur).healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.to_string().contains("NOK"), "{e}");
    let mut other = settings;
    other.company = 2;
    let e = connector(other).healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
}

#[tokio::test]
async fn a_tryton_error_answer_is_permanent() {
    let (_sim, _server, mut settings) = start(3).await;
    settings.price_field = "no_such_price".into();
    let e = connector(settings).read_page(None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(e.to_string().contains("no_such_price"), "{e}");
}

#[tokio::test]
async fn wrong_database_or_path_is_a_config_error() {
    let (_sim, _server, settings) = start(1).await;
    let mut db = settings.clone();
    db.database = "nope".into();
    let e = connector(db).healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert_eq!(e.status, Some(404));
    let mut legacy = settings;
    legacy.rpc_path = String::new();
    let e = connector(legacy).healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert_eq!(e.status, Some(405));
}

#[tokio::test]
async fn connect_validates_settings_without_network() {
    let options = SimOptions::default();
    let s = options.settings("http://127.0.0.1:9");
    let mut bad = s.clone();
    bad.currency = "kroner".into();
    assert_eq!(connect(bad).unwrap_err().kind, ErrorKind::Config);
    let mut bad = s.clone();
    bad.locations = vec![3, 3];
    assert_eq!(connect(bad).unwrap_err().kind, ErrorKind::Config);
    let mut bad = s.clone();
    bad.password = SecretRef::Env("OMNISYNC_TRYTON_TEST_UNSET_VAR".into());
    let e = connect(bad).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.to_string().contains("OMNISYNC_TRYTON_TEST_UNSET_VAR"));
    // Nothing listens on port 9: connect itself must not have tried.
    let c = connect(s).unwrap();
    assert_eq!(
        c.read_page(None).await.unwrap_err().kind,
        ErrorKind::Transient
    );
}

#[tokio::test]
async fn hundred_thousand_products_seed_and_page_cheaply() {
    let (sim, _server, settings) = start(0).await;
    let records: Vec<SimRecord> = (0..100_000).map(record).collect();
    sim.seed(records);
    let c = connector(settings);
    let deep = c.read_page(Some("99500".to_string())).await.unwrap();
    assert_eq!(deep.records.len(), 500);
    assert_eq!(deep.next, None);
    assert_eq!(deep.records[0].sku.as_deref(), Some("SKU-099500"));
    let found = c
        .read_skus(&["SKU-000000".into(), "SKU-099999".into()])
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
}

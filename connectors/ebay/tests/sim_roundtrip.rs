//! The adapter driven against the simulator on loopback: paged full reads with the active
//! inventory report, `read_skus`, batched pushes with per-item outcomes, and how auth
//! failures, throttling, server errors and unreadable answers are classified.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use omnisync_ebay::sim::{self, SimOptions, Simulator};
use omnisync_ebay::{EbayConnector, REF_LISTING_ID, REF_OFFER_ID, Settings, connect};
use omnisync_sdk::sim::{Fault, SimControl, SimRecord, SimServer};
use omnisync_sdk::{
    Change, Connector, Correction, Currency, ErrorKind, Money, Offer, PushOutcome, Record,
    StockLevel,
};
use serde_json::{Value, json};

const DEFAULT: &str = StockLevel::DEFAULT_LOCATION;

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

fn catalog(n: usize) -> Vec<SimRecord> {
    (0..n)
        .map(|i| SimRecord {
            sku: format!("SKU-{i:06}"),
            title: format!("Item {i}"),
            offer: Offer::regular(eur(1000 + i as i64)),
            stock: BTreeMap::from([(DEFAULT.to_string(), (i % 50) as i64)]),
        })
        .collect()
}

async fn start(options: SimOptions, n: usize) -> (Arc<Simulator>, SimServer, Settings) {
    let (sim, server) = sim::start("127.0.0.1:0".parse().unwrap(), options.clone())
        .await
        .unwrap();
    sim.seed(catalog(n));
    let settings = options.settings(&server.base_url());
    (sim, server, settings)
}

async fn full_read(c: &EbayConnector) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = c.read_page(cursor).await.unwrap();
        pages += 1;
        records.extend(page.records);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return (records, pages),
        }
    }
}

fn price(sku: &str, minor: i64) -> Correction {
    Correction {
        idempotency_key: format!("{sku}-price-{minor}"),
        sku: sku.to_string(),
        external_id: Some(sku.to_string()),
        refs: BTreeMap::new(),
        change: Change::Offer {
            offer: Offer::regular(eur(minor)),
        },
    }
}

fn stock(sku: &str, location: &str, quantity: i64) -> Correction {
    Correction {
        idempotency_key: format!("{sku}-stock-{quantity}"),
        sku: sku.to_string(),
        external_id: Some(sku.to_string()),
        refs: BTreeMap::new(),
        change: Change::Stock {
            location: location.to_string(),
            quantity,
            expected: None,
        },
    }
}

fn sim_record(sim: &Simulator, sku: &str) -> SimRecord {
    sim.record(sku).unwrap()
}

#[tokio::test]
async fn full_read_pages_through_the_catalog_with_report_prices() {
    let (sim, _server, settings) = start(SimOptions::default(), 250).await;
    let c = connect(settings).unwrap();
    let (records, pages) = full_read(&c).await;
    assert_eq!(pages, 3);
    assert_eq!(records.len(), 250);
    assert_eq!(sim.report_tasks(), 1, "one report per full read");
    for (i, r) in records.iter().enumerate() {
        let sku = format!("SKU-{i:06}");
        assert_eq!(r.external_id, sku);
        assert_eq!(r.sku.as_deref(), Some(sku.as_str()));
        assert_eq!(r.title.as_deref(), Some(format!("Item {i}").as_str()));
        assert_eq!(r.offer, Some(Offer::regular(eur(1000 + i as i64))));
        assert_eq!(r.stock, vec![StockLevel::new(DEFAULT, (i % 50) as i64)]);
        assert!(r.refs.contains_key(REF_LISTING_ID));
    }
    // A second full read takes a new snapshot.
    sim.set_offer("SKU-000007", Offer::regular(eur(4242)));
    let (again, _) = full_read(&c).await;
    assert_eq!(again[7].offer, Some(Offer::regular(eur(4242))));
    assert_eq!(sim.report_tasks(), 2);
}

#[tokio::test]
async fn a_later_page_survives_a_restart_by_downloading_the_report_again() {
    let (_sim, _server, settings) = start(SimOptions::default(), 150).await;
    let first = connect(settings.clone()).unwrap();
    let page = first.read_page(None).await.unwrap();
    let next = page.next.unwrap();
    let second = connect(settings).unwrap();
    let page2 = second.read_page(Some(next)).await.unwrap();
    assert_eq!(page2.records.len(), 50);
    assert!(page2.next.is_none());
    assert_eq!(
        page2.records[0].offer,
        Some(Offer::regular(eur(1000 + 100)))
    );
}

#[tokio::test]
async fn full_read_without_the_report_carries_stock_only() {
    let (sim, _server, mut settings) = start(SimOptions::default(), 120).await;
    settings.read_prices_from_report = false;
    let c = connect(settings).unwrap();
    let (records, pages) = full_read(&c).await;
    assert_eq!((records.len(), pages), (120, 2));
    assert!(records.iter().all(|r| r.offer.is_none()));
    assert_eq!(sim.report_tasks(), 0);
}

#[tokio::test]
async fn a_price_in_a_foreign_currency_is_reported_without_offer() {
    let (sim, _server, settings) = start(SimOptions::default(), 3).await;
    sim.set_offer(
        "SKU-000001",
        Offer::regular(Money::new(990, "SEK".parse().unwrap())),
    );
    let c = connect(settings).unwrap();
    let (records, _) = full_read(&c).await;
    assert_eq!(
        records.len(),
        3,
        "the record stays, only its price is dropped"
    );
    assert!(records[1].offer.is_none());
    assert!(records[0].offer.is_some() && records[2].offer.is_some());
}

#[tokio::test]
async fn read_skus_reads_stock_and_offers_of_the_skus_asked_for() {
    let (sim, _server, settings) = start(SimOptions::default(), 40).await;
    let c = connect(settings).unwrap();
    let asked: Vec<String> = [
        "SKU-000003",
        "SKU-000030",
        "NOPE",
        "SKU-000003",
        "SKU-000012",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let records = c.read_skus(&asked).await.unwrap();
    let skus: Vec<&str> = records.iter().map(|r| r.external_id.as_str()).collect();
    assert_eq!(skus, vec!["SKU-000003", "SKU-000030", "SKU-000012"]);
    for r in &records {
        let sim_offer = sim.offer_id(&r.external_id).unwrap();
        assert_eq!(r.refs.get(REF_OFFER_ID), Some(&sim_offer));
        let i: i64 = r.external_id[4..].parse().unwrap();
        assert_eq!(r.offer, Some(Offer::regular(eur(1000 + i))));
        assert_eq!(r.stock, vec![StockLevel::new(DEFAULT, i % 50)]);
    }
    // Nothing known: an empty answer, not an error.
    assert!(c.read_skus(&["NOPE".to_string()]).await.unwrap().is_empty());
}

#[tokio::test]
async fn push_splits_into_api_batches_and_changes_the_listings() {
    let (sim, _server, settings) = start(SimOptions::default(), 40).await;
    let c = connect(settings).unwrap();
    // 30 SKUs × (price + stock) = 60 corrections, 30 requests: two calls of ≤ 25.
    let mut batch = Vec::new();
    for i in 0..30 {
        let sku = format!("SKU-{i:06}");
        batch.push(price(&sku, 5000 + i));
        batch.push(stock(&sku, DEFAULT, 100 + i));
    }
    let outcomes = c.push(&batch).await.unwrap();
    assert_eq!(outcomes.len(), 60);
    assert!(
        outcomes.iter().all(|o| *o == PushOutcome::Applied),
        "{outcomes:?}"
    );
    let stats = sim.counters().snapshot();
    assert_eq!(stats.write_calls, 2);
    assert!(stats.max_batch_seen <= 25, "{stats:?}");
    assert_eq!(stats.items_written, 30);
    for i in 0..30 {
        let r = sim_record(&sim, &format!("SKU-{i:06}"));
        assert_eq!(r.offer, Offer::regular(eur(5000 + i)));
        assert_eq!(r.stock[DEFAULT], 100 + i);
    }
    // The read-back sees it, with the offer id for the next push.
    let back = c.read_skus(&["SKU-000004".to_string()]).await.unwrap();
    assert_eq!(back[0].offer, Some(Offer::regular(eur(5004))));
    assert_eq!(back[0].stock[0].available, 104);
}

#[tokio::test]
async fn known_offer_ids_save_the_look_up() {
    let (sim, _server, settings) = start(SimOptions::default(), 5).await;
    let c = connect(settings).unwrap();
    let mut correction = price("SKU-000002", 777);
    correction.refs.insert(
        REF_OFFER_ID.to_string(),
        sim.offer_id("SKU-000002").unwrap(),
    );
    let before = sim.counters().snapshot().requests;
    assert_eq!(
        c.push(&[correction]).await.unwrap(),
        vec![PushOutcome::Applied]
    );
    assert_eq!(
        sim.counters().snapshot().requests - before,
        1,
        "no GET /offer"
    );
    assert_eq!(
        sim_record(&sim, "SKU-000002").offer,
        Offer::regular(eur(777))
    );
}

#[tokio::test]
async fn one_bad_item_does_not_sink_the_others() {
    let (sim, _server, settings) = start(SimOptions::default(), 10).await;
    let c = connect(settings).unwrap();
    let mut stale = price("SKU-000006", 606);
    stale
        .refs
        .insert(REF_OFFER_ID.to_string(), "999".to_string());
    let batch = vec![
        price("SKU-000001", 1234),        // applied
        stock("SKU-000002", DEFAULT, -5), // eBay: 25004 invalid quantity
        stock("NOPE", DEFAULT, 3),        // eBay: 25702 unknown SKU
        price("NOPE-2", 100),             // no offer to price
        price("SKU-000003", 0),           // eBay: 25003 invalid price
        Correction {
            change: Change::Offer {
                offer: Offer::regular(Money::new(100, "SEK".parse().unwrap())),
            },
            ..price("SKU-000004", 1)
        }, // wrong currency, refused locally
        stock("SKU-000005", "oslo-store", 3), // unknown location, refused locally
        Correction {
            change: Change::Create {
                title: None,
                offer: Offer::regular(eur(100)),
                stock: BTreeMap::new(),
            },
            ..price("NEW", 1)
        }, // creates are not supported
        stale,                            // eBay: 25713 foreign offer id
        stock("SKU-000007", DEFAULT, 9),  // applied
    ];
    let outcomes = c.push(&batch).await.unwrap();
    assert_eq!(outcomes.len(), batch.len());
    assert_eq!(outcomes[0], PushOutcome::Applied);
    assert_eq!(outcomes[9], PushOutcome::Applied);
    let expect = [
        (1, "25004"),
        (2, "25702"),
        (3, "no offer"),
        (4, "25003"),
        (5, "marketplace currency"),
        (6, "unknown location"),
        (7, "does not create listings"),
        (8, "25713"),
    ];
    for (i, needle) in expect {
        match &outcomes[i] {
            PushOutcome::Rejected { reason, retryable } => {
                assert!(reason.contains(needle), "{i}: {reason}");
                assert!(!retryable, "{i}: {reason}");
            }
            other => panic!("{i}: {other:?}"),
        }
    }
    assert_eq!(
        sim_record(&sim, "SKU-000001").offer,
        Offer::regular(eur(1234))
    );
    assert_eq!(
        sim_record(&sim, "SKU-000002").stock[DEFAULT],
        2,
        "unchanged"
    );
    assert_eq!(
        sim_record(&sim, "SKU-000003").offer,
        Offer::regular(eur(1003))
    );
    assert_eq!(sim_record(&sim, "SKU-000007").stock[DEFAULT], 9);
}

#[tokio::test]
async fn a_wrong_token_is_an_auth_error_that_does_not_quote_it() {
    let (_sim, _server, mut settings) = start(SimOptions::default(), 3).await;
    settings.access_token = Some("literal:not-the-token-4711".parse().unwrap());
    let c = connect(settings).unwrap();
    for e in [
        c.healthcheck().await.unwrap_err(),
        c.read_page(None).await.unwrap_err(),
        c.push(&[stock("SKU-000001", DEFAULT, 1)])
            .await
            .unwrap_err(),
        c.read_skus(&["SKU-000001".to_string()]).await.unwrap_err(),
    ] {
        assert_eq!(e.kind, ErrorKind::Auth, "{e}");
        assert_eq!(e.status, Some(401));
        assert!(e.to_string().contains("Invalid access token"), "{e}");
        assert!(!e.to_string().contains("4711"), "{e}");
    }
}

#[tokio::test]
async fn injected_server_errors_are_transient() {
    let (sim, _server, settings) = start(SimOptions::default(), 3).await;
    let c = connect(settings).unwrap();
    sim.faults().inject(
        Fault::Status {
            status: 500,
            retry_after: None,
        },
        2,
    );
    let e = c.healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient);
    assert!(e.is_retryable());
    let e = c
        .push(&[stock("SKU-000001", DEFAULT, 1)])
        .await
        .unwrap_err();
    assert_eq!((e.kind, e.status), (ErrorKind::Transient, Some(500)));
    // Nothing was written; the daemon's retry writes it.
    sim.faults().inject(
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        1,
    );
    let policy = omnisync_sdk::retry::RetryPolicy {
        max_retries: 2,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        max_retry_after: Duration::from_secs(1),
    };
    let batch = [stock("SKU-000001", DEFAULT, 1)];
    let retried = omnisync_sdk::retry::retry(policy, || c.push(&batch))
        .await
        .unwrap();
    assert_eq!(retried, vec![PushOutcome::Applied]);
}

#[tokio::test]
async fn injected_429_is_throttled_with_a_wait() {
    let (sim, _server, settings) = start(SimOptions::default(), 3).await;
    let c = connect(settings).unwrap();
    sim.faults().inject(
        Fault::Status {
            status: 429,
            retry_after: Some(7),
        },
        1,
    );
    let e = c.healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Throttled);
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
    // Without Retry-After: the configured fallback (1 s in simulator settings).
    sim.faults().inject(
        Fault::Status {
            status: 429,
            retry_after: None,
        },
        1,
    );
    let e = c.read_skus(&["SKU-000001".to_string()]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Throttled);
    assert_eq!(e.retry_after, Some(Duration::from_secs(1)));
}

#[tokio::test]
async fn the_call_quota_answers_ebays_429() {
    let options = SimOptions {
        quota_per_window: Some(2),
        quota_window: Duration::from_secs(3600),
        ..SimOptions::default()
    };
    let (sim, _server, settings) = start(options, 3).await;
    let c = connect(settings).unwrap();
    c.healthcheck().await.unwrap();
    c.healthcheck().await.unwrap();
    let e = c
        .push(&[stock("SKU-000001", DEFAULT, 1)])
        .await
        .unwrap_err();
    assert_eq!((e.kind, e.status), (ErrorKind::Throttled, Some(429)));
    assert!(
        e.to_string().contains("errorId\":2001") || e.to_string().contains("2001"),
        "{e}"
    );
    let wait = e.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(3000) && wait <= Duration::from_secs(3600),
        "{wait:?}"
    );
    assert_eq!(sim.counters().snapshot().throttled, 1);
}

#[tokio::test]
async fn the_per_second_limit_answers_429() {
    let options = SimOptions {
        requests_per_second: Some(1),
        ..SimOptions::default()
    };
    let (_sim, _server, mut settings) = start(options, 3).await;
    // A client that ignores the limit (the simulator's settings pace themselves under it).
    settings.requests_per_second = 1000;
    settings.burst = 1000;
    let c = connect(settings).unwrap();
    let mut throttled = None;
    for _ in 0..3 {
        if let Err(e) = c.healthcheck().await {
            throttled = Some(e);
            break;
        }
    }
    let e = throttled.expect("three calls in a second exceed 1/s");
    assert_eq!(e.kind, ErrorKind::Throttled);
    assert_eq!(e.retry_after, Some(Duration::from_secs(1)));
}

#[tokio::test]
async fn malformed_json_is_a_protocol_error() {
    let (sim, _server, settings) = start(SimOptions::default(), 3).await;
    let c = connect(settings).unwrap();
    sim.faults().inject(Fault::MalformedJson, 1);
    let e = c.healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Protocol);
    assert!(
        e.to_string()
            .contains("GET /sell/inventory/v1/inventory_item"),
        "{e}"
    );
    sim.faults().inject(Fault::MalformedJson, 1);
    let e = c.push(&[price("SKU-000001", 5)]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Protocol, "{e}");
    // The report task answer without Location is unreadable too.
    sim.faults().inject(Fault::MalformedJson, 1);
    let e = c.read_page(None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Protocol, "{e}");
}

#[tokio::test]
async fn a_failed_report_poll_is_retried_on_the_same_task() {
    let (sim, _server, settings) = start(SimOptions::default(), 30).await;
    let c = connect(settings).unwrap();
    // The create goes through, the first status poll fails.
    sim.faults().inject(Fault::Delay { ms: 0 }, 1);
    sim.faults().inject(
        Fault::Status {
            status: 502,
            retry_after: None,
        },
        1,
    );
    let e = c.read_page(None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient);
    let page = c.read_page(None).await.unwrap();
    assert_eq!(page.records.len(), 30);
    assert_eq!(
        sim.report_tasks(),
        1,
        "the pending task was picked up again"
    );
}

#[tokio::test]
async fn too_many_running_report_tasks_is_throttled() {
    let options = SimOptions {
        report_delay: Duration::from_secs(60),
        ..SimOptions::default()
    };
    let (_sim, server, settings) = start(options, 3).await;
    let token = "ebay-sim-token";
    // Someone else's task is running.
    let r = reqwest::Client::new()
        .post(format!("{}/sell/feed/v1/inventory_task", server.base_url()))
        .bearer_auth(token)
        .header("X-EBAY-C-MARKETPLACE-ID", "EBAY_DE")
        .json(&json!({"feedType": "LMS_ACTIVE_INVENTORY_REPORT", "schemaVersion": "1.0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let c = connect(settings).unwrap();
    let e = c.read_page(None).await.unwrap_err();
    assert_eq!((e.kind, e.status), (ErrorKind::Throttled, Some(409)));
    assert!(e.to_string().contains("160024"), "{e}");
    assert!(e.retry_after.is_some());
}

#[tokio::test]
async fn the_simulator_answers_like_ebay() {
    let (_sim, server, _settings) = start(SimOptions::default(), 30).await;
    let base = server.base_url();
    let http = reqwest::Client::new();
    let token = "ebay-sim-token";
    let error_id = |v: &Value| v["errors"][0]["errorId"].as_i64().unwrap();

    // No token.
    let r = http
        .get(format!("{base}/sell/inventory/v1/inventory_item"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(error_id(&body), 1001);
    assert_eq!(body["errors"][0]["domain"], "OAuth");

    // Page limits; offset is a page number.
    let r = http
        .get(format!("{base}/sell/inventory/v1/inventory_item?limit=201"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_id(&r.json().await.unwrap()), 25706);
    let page: Value = http
        .get(format!(
            "{base}/sell/inventory/v1/inventory_item?limit=10&offset=2"
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["inventoryItems"][0]["sku"], "SKU-000020");
    assert_eq!(page["total"], 30);
    assert!(page.get("next").is_none(), "the last page has no next");

    // More than 25 requests.
    let requests: Vec<Value> = (0..26)
        .map(|i| json!({"sku": format!("SKU-{i:06}"), "shipToLocationAvailability": {"quantity": 1}}))
        .collect();
    for path in ["bulk_update_price_quantity", "bulk_get_inventory_item"] {
        let r = http
            .post(format!("{base}/sell/inventory/v1/{path}"))
            .bearer_auth(token)
            .json(&json!({ "requests": requests }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(error_id(&body), 25727, "{path}");
        assert_eq!(body["errors"][0]["domain"], "API_INVENTORY");
    }

    // Mixed outcomes are a 207.
    let r = http
        .post(format!(
            "{base}/sell/inventory/v1/bulk_update_price_quantity"
        ))
        .bearer_auth(token)
        .json(&json!({"requests": [
            {"sku": "SKU-000001", "shipToLocationAvailability": {"quantity": 4}},
            {"sku": "NOPE", "shipToLocationAvailability": {"quantity": 4}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 207);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["responses"][0]["statusCode"], 200);
    assert_eq!(body["responses"][1]["statusCode"], 400);
    assert_eq!(body["responses"][1]["errors"][0]["errorId"], 25702);

    // The report task needs the marketplace header.
    let r = http
        .post(format!("{base}/sell/feed/v1/inventory_task"))
        .bearer_auth(token)
        .json(&json!({"feedType": "LMS_ACTIVE_INVENTORY_REPORT", "schemaVersion": "1.0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_id(&r.json().await.unwrap()), 160027);
}

#[tokio::test]
async fn a_hundred_thousand_listings_page_and_report() {
    let (_sim, _server, settings) = start(SimOptions::default(), 100_000).await;
    let c = connect(settings).unwrap();
    let first = c.read_page(None).await.unwrap();
    assert_eq!(first.records.len(), 100);
    assert_eq!(first.records[0].offer, Some(Offer::regular(eur(1000))));
    let cursor = first.next.unwrap();
    let task = cursor.split_once('@').unwrap().1;
    let last = c.read_page(Some(format!("999@{task}"))).await.unwrap();
    assert_eq!(last.records.len(), 100);
    assert_eq!(last.records[99].external_id, "SKU-099999");
    assert_eq!(
        last.records[99].offer,
        Some(Offer::regular(eur(1000 + 99_999)))
    );
    assert!(last.next.is_none());
}

#[tokio::test]
async fn a_report_that_takes_too_long_is_given_up() {
    let options = SimOptions {
        report_delay: Duration::from_secs(60),
        ..SimOptions::default()
    };
    let (sim, _server, mut settings) = start(options, 3).await;
    settings.report_timeout_secs = 0;
    let c = connect(settings).unwrap();
    let e = c.read_page(None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient);
    assert!(e.to_string().contains("still QUEUED"), "{e}");
    // The next attempt starts a new task, which eBay refuses while the old one runs.
    let e = c.read_page(None).await.unwrap_err();
    assert_eq!((e.kind, e.status), (ErrorKind::Throttled, Some(409)));
    assert_eq!(sim.report_tasks(), 1);
}

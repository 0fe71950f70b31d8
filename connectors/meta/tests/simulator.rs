//! The Meta adapter driven against its loopback simulator: paging, read-back, batched
//! pushes with per-item outcomes, and every failure class the daemon tells apart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use omnisync_meta::sim::{self, PriceFormat, SimOptions, Simulator};
use omnisync_meta::{MetaConnector, connect};
use omnisync_sdk::sim::{Fault, SimControl, SimRecord, SimServer};
use omnisync_sdk::{
    Change, Connector, Correction, Currency, ErrorKind, Money, Offer, PushOutcome, StockLevel,
};

fn sek(minor: i64) -> Money {
    Money::new(minor, Currency::SEK)
}

fn sku(i: usize) -> String {
    format!("SKU-{i:05}")
}

fn catalog(n: usize) -> Vec<SimRecord> {
    (0..n)
        .map(|i| SimRecord {
            sku: sku(i),
            title: format!("Item {i}"),
            offer: Offer {
                price: sek(10_000 + i as i64),
                sale: (i % 10 == 0).then(|| sek(5_000)),
            },
            stock: BTreeMap::from([("default".to_string(), (i % 5) as i64)]),
        })
        .collect()
}

struct Harness {
    sim: Arc<Simulator>,
    server: SimServer,
    meta: MetaConnector,
}

async fn harness(options: SimOptions, records: usize) -> Harness {
    let (sim, server) = sim::start("127.0.0.1:0".parse().unwrap(), options.clone())
        .await
        .unwrap();
    sim.seed(catalog(records));
    let meta = connect(options.settings(&server.base_url())).unwrap();
    Harness { sim, server, meta }
}

fn correction(sku: &str, change: Change) -> Correction {
    Correction {
        idempotency_key: format!("{sku}-key"),
        sku: sku.to_string(),
        external_id: Some(sku.to_string()),
        refs: BTreeMap::new(),
        change,
    }
}

fn offer(sku: &str, price: i64, sale: Option<i64>) -> Correction {
    correction(
        sku,
        Change::Offer {
            offer: Offer {
                price: sek(price),
                sale: sale.map(sek),
            },
        },
    )
}

fn stock(sku: &str, quantity: i64) -> Correction {
    correction(
        sku,
        Change::Stock {
            location: StockLevel::DEFAULT_LOCATION.to_string(),
            quantity,
            expected: None,
        },
    )
}

fn record(sim: &Simulator, sku: &str) -> Option<SimRecord> {
    let found = sim.record(sku);
    assert_eq!(found, sim.records().into_iter().find(|r| r.sku == sku));
    found
}

#[tokio::test]
async fn full_read_walks_every_page() {
    let h = harness(SimOptions::default(), 1200).await;
    assert_eq!(h.meta.capabilities().max_read_batch, 100);
    h.meta.healthcheck().await.unwrap();
    let before = h.sim.counters().snapshot().requests;
    let mut cursor = None;
    let mut records = Vec::new();
    let mut pages = 0;
    loop {
        let page = h.meta.read_page(cursor).await.unwrap();
        pages += 1;
        records.extend(page.records);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(h.sim.counters().snapshot().requests - before, 3);
    assert_eq!(records.len(), 1200);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.external_id, sku(i));
        assert_eq!(r.sku.as_deref(), Some(sku(i).as_str()));
        assert_eq!(r.title.as_deref(), Some(format!("Item {i}").as_str()));
        let expected = Offer {
            price: sek(10_000 + i as i64),
            sale: (i % 10 == 0).then(|| sek(5_000)),
        };
        assert_eq!(r.offer, Some(expected), "{}", r.external_id);
        assert_eq!(r.stock, vec![StockLevel::new("default", (i % 5) as i64)]);
        assert_eq!(r.refs.get("product_id"), h.sim.product_id(&sku(i)).as_ref());
    }
    h.server.shutdown().await;
}

#[tokio::test]
async fn every_display_price_format_reads_back_exactly() {
    for format in [
        PriceFormat::CodeSuffix,
        PriceFormat::CodePrefix,
        PriceFormat::SymbolPrefix,
        PriceFormat::NordicLocale,
    ] {
        let options = SimOptions {
            price_format: format,
            ..SimOptions::default()
        };
        let h = harness(options, 0).await;
        h.sim.add(SimRecord {
            sku: "BIG".into(),
            title: "Big".into(),
            offer: Offer {
                price: sek(1_234_567_890),
                sale: Some(sek(99_900)),
            },
            stock: BTreeMap::new(),
        });
        let page = h.meta.read_page(None).await.unwrap();
        assert_eq!(
            page.records[0].offer,
            Some(Offer {
                price: sek(1_234_567_890),
                sale: Some(sek(99_900)),
            }),
            "{format:?}"
        );
        // No quantity, but "out of stock": zero.
        assert_eq!(page.records[0].stock, vec![StockLevel::new("default", 0)]);
        h.server.shutdown().await;
    }
}

#[tokio::test]
async fn a_product_in_another_currency_keeps_its_record_without_an_offer() {
    let h = harness(SimOptions::default(), 3).await;
    assert!(
        h.sim
            .set_offer(&sku(1), Offer::regular(Money::new(500, Currency::EUR)))
    );
    let page = h.meta.read_page(None).await.unwrap();
    assert_eq!(page.records.len(), 3);
    assert_eq!(page.records[1].offer, None);
    assert!(page.records[0].offer.is_some() && page.records[2].offer.is_some());
    h.server.shutdown().await;
}

#[tokio::test]
async fn read_skus_is_one_filtered_call() {
    let h = harness(SimOptions::default(), 500).await;
    let before = h.sim.counters().snapshot().requests;
    let wanted = vec![sku(3), sku(440), "NOT-THERE".to_string(), sku(3)];
    let records = h.meta.read_skus(&wanted).await.unwrap();
    assert_eq!(h.sim.counters().snapshot().requests - before, 1);
    let ids: Vec<&str> = records.iter().map(|r| r.external_id.as_str()).collect();
    assert_eq!(ids, vec![sku(3).as_str(), sku(440).as_str()]);
    assert_eq!(
        records[1].offer,
        Some(Offer {
            price: sek(10_440),
            sale: Some(sek(5_000))
        })
    );
    assert!(h.meta.read_skus(&[]).await.unwrap().is_empty());
    h.server.shutdown().await;
}

#[tokio::test]
async fn a_push_larger_than_a_batch_is_split_and_applied() {
    let options = SimOptions {
        max_batch: 40,
        ..SimOptions::default()
    };
    let h = harness(options, 100).await;
    assert_eq!(h.meta.capabilities().max_batch, 40);
    let batch: Vec<Correction> = (0..100)
        .map(|i| {
            if i % 2 == 0 {
                offer(&sku(i), 20_000 + i as i64, (i % 4 == 0).then_some(15_000))
            } else {
                stock(&sku(i), 50 + i as i64)
            }
        })
        .collect();
    let outcomes = h.meta.push(&batch).await.unwrap();
    assert_eq!(outcomes, vec![PushOutcome::Applied; 100]);
    let stats = h.sim.counters().snapshot();
    assert!(stats.max_batch_seen <= 40, "{stats:?}");
    assert_eq!(stats.write_calls, 3);
    assert_eq!(stats.items_written, 100);
    for i in 0..100 {
        let r = record(&h.sim, &sku(i)).unwrap();
        if i % 2 == 0 {
            assert_eq!(r.offer.price, sek(20_000 + i as i64));
            assert_eq!(r.offer.sale, (i % 4 == 0).then(|| sek(15_000)));
        } else {
            assert_eq!(r.stock.get("default"), Some(&(50 + i as i64)));
        }
    }
    // The read-back the daemon does sees the same.
    let back = h.meta.read_skus(&[sku(0), sku(1)]).await.unwrap();
    assert_eq!(
        back[0].offer,
        Some(Offer {
            price: sek(20_000),
            sale: Some(sek(15_000))
        })
    );
    assert_eq!(back[1].stock, vec![StockLevel::new("default", 51)]);
    assert_eq!(h.sim.pending_batches(), 0);
    h.server.shutdown().await;
}

#[tokio::test]
async fn one_bad_item_never_fails_the_others() {
    let h = harness(SimOptions::default(), 10).await;
    let mut no_title = correction(
        "NEW-1",
        Change::Create {
            title: None,
            offer: Offer::regular(sek(1000)),
            stock: BTreeMap::new(),
        },
    );
    no_title.external_id = None;
    let batch = vec![
        offer(&sku(1), 777, None),
        stock(&sku(2), -5),
        no_title,
        stock(&sku(3), 9),
        correction(
            &sku(4),
            Change::Offer {
                offer: Offer::regular(Money::new(100, Currency::NOK)),
            },
        ),
        correction(
            &sku(5),
            Change::Stock {
                location: "oslo-store".into(),
                quantity: 1,
                expected: None,
            },
        ),
    ];
    let outcomes = h.meta.push(&batch).await.unwrap();
    assert_eq!(outcomes.len(), 6);
    assert_eq!(outcomes[0], PushOutcome::Applied);
    assert_eq!(outcomes[3], PushOutcome::Applied);
    let reason = |o: &PushOutcome| match o {
        PushOutcome::Rejected {
            reason,
            retryable: false,
        } => reason.clone(),
        other => panic!("expected a final rejection, got {other:?}"),
    };
    assert!(
        reason(&outcomes[1]).contains("negative"),
        "{:?}",
        outcomes[1]
    );
    assert!(reason(&outcomes[2]).contains("title"), "{:?}", outcomes[2]);
    assert!(
        reason(&outcomes[4]).contains("catalog currency"),
        "{:?}",
        outcomes[4]
    );
    assert!(
        reason(&outcomes[5]).contains("unknown location"),
        "{:?}",
        outcomes[5]
    );
    // Only the two valid items reached the catalog (the local refusals were never sent).
    assert_eq!(h.sim.counters().snapshot().items_written, 4);
    assert_eq!(
        record(&h.sim, &sku(1)).unwrap().offer,
        Offer::regular(sek(777))
    );
    assert_eq!(
        record(&h.sim, &sku(2)).unwrap().stock.get("default"),
        Some(&2)
    );
    assert_eq!(
        record(&h.sim, &sku(3)).unwrap().stock.get("default"),
        Some(&9)
    );
    assert!(record(&h.sim, "NEW-1").is_none());
    h.server.shutdown().await;
}

#[tokio::test]
async fn errors_beyond_the_sample_are_found_through_invalid_ids() {
    let options = SimOptions {
        max_sample_errors: 1,
        ..SimOptions::default()
    };
    let h = harness(options, 5).await;
    let batch = vec![
        stock(&sku(0), -1),
        stock(&sku(1), -2),
        stock(&sku(2), 3),
        stock(&sku(3), -3),
    ];
    let outcomes = h.meta.push(&batch).await.unwrap();
    assert_eq!(outcomes[2], PushOutcome::Applied);
    for i in [0, 1, 3] {
        assert!(
            matches!(
                outcomes[i],
                PushOutcome::Rejected {
                    retryable: false,
                    ..
                }
            ),
            "{i}: {:?}",
            outcomes[i]
        );
    }
    h.server.shutdown().await;
}

#[tokio::test]
async fn creates_missing_listings_and_clears_sales() {
    let h = harness(SimOptions::default(), 2).await;
    let mut create = correction(
        "NEW-9",
        Change::Create {
            title: Some("New thing".into()),
            offer: Offer {
                price: sek(4_990),
                sale: Some(sek(3_990)),
            },
            stock: BTreeMap::from([("default".to_string(), 6)]),
        },
    );
    create.external_id = None;
    let outcomes = h
        .meta
        .push(&[create, offer(&sku(0), 10_000, None)])
        .await
        .unwrap();
    assert_eq!(outcomes, vec![PushOutcome::Applied, PushOutcome::Applied]);
    let back = h
        .meta
        .read_skus(&["NEW-9".to_string(), sku(0)])
        .await
        .unwrap();
    assert_eq!(back[0].external_id, "NEW-9");
    assert_eq!(back[0].title.as_deref(), Some("New thing"));
    assert_eq!(
        back[0].offer,
        Some(Offer {
            price: sek(4_990),
            sale: Some(sek(3_990))
        })
    );
    assert_eq!(back[0].stock, vec![StockLevel::new("default", 6)]);
    assert!(back[0].refs.contains_key("product_id"));
    // SKU-00000 had a sale in the seed; the offer without one ended it.
    assert_eq!(back[1].offer, Some(Offer::regular(sek(10_000))));
    h.server.shutdown().await;
}

#[tokio::test]
async fn refused_credentials_are_auth_errors_without_the_token() {
    for status in [400, 401] {
        let options = SimOptions {
            auth_error_status: status,
            ..SimOptions::default()
        };
        let (sim, server) = sim::start("127.0.0.1:0".parse().unwrap(), options.clone())
            .await
            .unwrap();
        sim.seed(catalog(3));
        let mut settings = options.settings(&server.base_url());
        settings.access_token = "literal:not-the-right-token-4711".parse().unwrap();
        let meta = connect(settings).unwrap();
        let e = meta.read_page(None).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Auth, "{e}");
        assert_eq!(e.status, Some(status));
        assert!(e.to_string().contains("190"), "{e}");
        assert!(!e.to_string().contains("not-the-right-token-4711"), "{e}");
        assert_eq!(meta.healthcheck().await.unwrap_err().kind, ErrorKind::Auth);
        let e = meta.push(&[stock(&sku(0), 1)]).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Auth);
        assert_eq!(sim.counters().snapshot().write_calls, 0);
        server.shutdown().await;
    }
}

#[tokio::test]
async fn a_wrong_catalog_id_is_permanent() {
    let options = SimOptions::default();
    let (_sim, server) = sim::start("127.0.0.1:0".parse().unwrap(), options.clone())
        .await
        .unwrap();
    let mut settings = options.settings(&server.base_url());
    settings.catalog_id = "555".into();
    let meta = connect(settings).unwrap();
    let e = meta.healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    assert!(e.message.contains("does not exist"), "{e}");
    server.shutdown().await;
}

#[tokio::test]
async fn injected_server_errors_are_transient() {
    let h = harness(SimOptions::default(), 3).await;
    h.sim.faults().inject(
        Fault::Status {
            status: 500,
            retry_after: None,
        },
        2,
    );
    let e = h.meta.read_page(None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient);
    assert!(e.is_retryable());
    let e = h.meta.push(&[stock(&sku(0), 4)]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient);
    assert_eq!(h.sim.counters().snapshot().write_calls, 0);
    // The fault is used up: the same calls now succeed.
    assert_eq!(h.meta.read_page(None).await.unwrap().records.len(), 3);
    h.server.shutdown().await;
}

#[tokio::test]
async fn injected_429_is_throttled_with_retry_after() {
    let h = harness(SimOptions::default(), 3).await;
    h.sim.faults().inject(
        Fault::Status {
            status: 429,
            retry_after: Some(7),
        },
        1,
    );
    let e = h.meta.read_skus(&[sku(1)]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Throttled);
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
    h.server.shutdown().await;
}

#[tokio::test]
async fn business_use_case_limits_answer_graph_throttling() {
    let options = SimOptions {
        catalog_management_calls: 3,
        catalog_batch_calls: 1,
        ..SimOptions::default()
    };
    let h = harness(options, 3).await;
    // Management: one read, two polls (started, finished). Batch: one call.
    h.meta.read_page(None).await.unwrap();
    let outcomes = h.meta.push(&[stock(&sku(0), 1)]).await.unwrap();
    assert_eq!(outcomes, vec![PushOutcome::Applied]);
    let e = h.meta.read_page(None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Throttled, "{e}");
    assert!(e.message.contains("80009"), "{e}");
    let wait = e.retry_after.expect("estimated_time_to_regain_access");
    assert!(
        wait >= Duration::from_secs(60) && wait <= Duration::from_secs(3600),
        "{wait:?}"
    );
    let e = h.meta.push(&[stock(&sku(1), 1)]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Throttled, "{e}");
    assert!(e.message.contains("80014"), "{e}");
    assert!(e.retry_after.is_some());
    assert!(h.sim.counters().snapshot().throttled >= 2);
    h.server.shutdown().await;
}

#[tokio::test]
async fn malformed_json_is_a_protocol_error() {
    let h = harness(SimOptions::default(), 3).await;
    h.sim.faults().inject(Fault::MalformedJson, 2);
    let e = h.meta.read_page(None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Protocol);
    assert!(e.to_string().contains("/products"), "{e}");
    let e = h.meta.push(&[stock(&sku(0), 1)]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Protocol);
    assert!(e.to_string().contains("items_batch"), "{e}");
    h.server.shutdown().await;
}

#[tokio::test]
async fn a_batch_that_does_not_finish_in_time_is_transient() {
    let options = SimOptions {
        polls_before_finish: 1_000,
        finish_after: Duration::from_secs(3600),
        ..SimOptions::default()
    };
    let (sim, server) = sim::start("127.0.0.1:0".parse().unwrap(), options.clone())
        .await
        .unwrap();
    sim.seed(catalog(2));
    let mut settings = options.settings(&server.base_url());
    settings.batch_poll_timeout_secs = 0;
    let meta = connect(settings).unwrap();
    let e = meta.push(&[stock(&sku(0), 3)]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("started"), "{e}");
    assert_eq!(sim.pending_batches(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_large_catalog_pages_from_any_cursor() {
    let h = harness(SimOptions::default(), 0).await;
    h.sim.seed(catalog(100_000));
    let first = h.meta.read_page(None).await.unwrap();
    assert_eq!(first.records.len(), 500);
    let second = h.meta.read_page(first.next.clone()).await.unwrap();
    assert_eq!(second.records[0].external_id, sku(500));
    // A filtered read-back deep in the catalog.
    let back = h.meta.read_skus(&[sku(99_999)]).await.unwrap();
    assert_eq!(back[0].offer.map(|o| o.price), Some(sek(10_000 + 99_999)));
    h.server.shutdown().await;
}

#[tokio::test]
async fn oversized_batches_are_refused_for_good() {
    let options = SimOptions {
        max_batch: 2,
        max_payload_bytes: 400,
        ..SimOptions::default()
    };
    let (sim, server) = sim::start("127.0.0.1:0".parse().unwrap(), options.clone())
        .await
        .unwrap();
    sim.seed(catalog(5));
    // More requests than Meta takes in one call (a misconfigured batch_size).
    let mut settings = options.settings(&server.base_url());
    settings.batch_size = 3;
    let meta = connect(settings).unwrap();
    let batch: Vec<Correction> = (0..3).map(|i| stock(&sku(i), 1)).collect();
    let e = meta.push(&batch).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    assert!(e.message.contains("at most 2"), "{e}");
    // A body over the payload limit.
    let meta = connect(options.settings(&server.base_url())).unwrap();
    let long = Correction {
        sku: "X".repeat(500),
        external_id: None,
        ..stock(&sku(0), 1)
    };
    let e = meta.push(&[long]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    assert!(e.message.contains("reduce the amount of data"), "{e}");
    assert_eq!(sim.counters().snapshot().write_calls, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn the_admin_api_lives_beside_the_graph_routes() {
    let h = harness(SimOptions::default(), 2).await;
    let base = h.server.base_url();
    let http = reqwest::Client::new();
    let put = http
        .put(format!("{base}/__sim/records/{}/offer", sku(1)))
        .json(&serde_json::json!({"price": {"minor": 4200, "currency": "SEK"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    let put = http
        .put(format!(
            "{base}/__sim/records/{}/stock?location=default",
            sku(1)
        ))
        .json(&serde_json::json!({"quantity": 11}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    let records: Vec<SimRecord> = http
        .get(format!("{base}/__sim/records"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(records[1].offer, Offer::regular(sek(4200)));
    let stats: serde_json::Value = http
        .get(format!("{base}/__sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(stats.get("max_batch_seen").is_some(), "{stats}");
    // The edit shows in the adapter's read, in its own terms.
    let back = h.meta.read_skus(&[sku(1)]).await.unwrap();
    assert_eq!(back[0].offer, Some(Offer::regular(sek(4200))));
    assert_eq!(back[0].stock, vec![StockLevel::new("default", 11)]);
    // Unknown Graph paths answer Graph's error.
    let unknown = http.get(format!("{base}/v25.0")).send().await.unwrap();
    assert_eq!(unknown.status(), 400);
    let body: serde_json::Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["code"], 2500);
    h.server.shutdown().await;
}

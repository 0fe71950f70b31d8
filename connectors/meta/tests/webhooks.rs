//! Webhooks end to end: the simulator runs Meta's verification handshake against a real
//! receiver on loopback (answered by the adapter's own handler), then POSTs signed
//! deliveries when products change (hand edits, `items_batch` pushes through the adapter,
//! sales); the adapter verifies and reads them into hints that name the listings as
//! `read_skus` reports them. Also: the rehearsal faults (drop, duplicate, reorder), chunking,
//! a refused handshake and `appsecret_proof`.

mod common;

use common::stock;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use omnisync_meta::sim::{self, DeliveryOptions, SimOptions, Simulator, WebhookFaults};
use omnisync_meta::{MetaConnector, REF_PRODUCT_ID, connect};
use omnisync_sdk::sim::delivery::WebhookAdmin;
use omnisync_sdk::sim::{SimControl, SimRecord, SimServer};
use omnisync_sdk::webhook::{Headers, SoldLine, WebhookError, WebhookHint, headers_from};
use omnisync_sdk::{Connector, Correction, Currency, Money, Offer, PushOutcome, SecretRef};

fn sek(minor: i64) -> Money {
    Money::new(minor, Currency::SEK)
}

fn catalog(n: usize) -> Vec<SimRecord> {
    (0..n)
        .map(|i| SimRecord {
            sku: format!("SKU-{i:05}"),
            title: format!("Item {i}"),
            offer: Offer::regular(sek(10_000 + i as i64)),
            stock: BTreeMap::from([("default".to_string(), (i % 5) as i64 + 1)]),
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Delivery {
    headers: Headers,
    body: Vec<u8>,
}

/// The receiver: records POSTs and answers the handshake with a connector's handler.
struct Inbox {
    got: Mutex<Vec<Delivery>>,
    handshakes: Mutex<u32>,
    connector: MetaConnector,
}

impl Inbox {
    fn all(&self) -> Vec<Delivery> {
        self.got.lock().expect("inbox").clone()
    }
}

async fn verify_request(
    State(inbox): State<Arc<Inbox>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    *inbox.handshakes.lock().expect("count") += 1;
    match inbox.connector.webhooks().and_then(|w| w.handshake(&query)) {
        Some(Ok(challenge)) => (StatusCode::OK, challenge).into_response(),
        _ => StatusCode::FORBIDDEN.into_response(),
    }
}

async fn receive(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    inbox.got.lock().expect("inbox").push(Delivery {
        headers: headers_from(&headers),
        body: body.to_vec(),
    });
    StatusCode::OK
}

struct Harness {
    sim: Arc<Simulator>,
    _server: SimServer,
    _receiver: SimServer,
    meta: MetaConnector,
    inbox: Arc<Inbox>,
    url: String,
}

fn fast() -> SimOptions {
    SimOptions {
        webhook_delivery: DeliveryOptions {
            retry_backoff: Duration::from_millis(10),
            reorder_hold: Duration::from_millis(300),
            ..DeliveryOptions::default()
        },
        ..SimOptions::default()
    }
}

/// A seeded simulator, an adapter for it, and a receiver whose handshake is answered by a
/// connector built from `receiver_settings` applied to the same settings.
async fn harness_with(
    options: SimOptions,
    records: usize,
    receiver_settings: impl FnOnce(&mut omnisync_meta::Settings),
) -> Harness {
    let (sim, server) = sim::start("127.0.0.1:0".parse().expect("addr"), options.clone())
        .await
        .expect("simulator starts");
    sim.seed(catalog(records));
    let settings = options.settings(&server.base_url());
    let meta = connect(settings.clone()).expect("connects");
    let mut theirs = settings;
    receiver_settings(&mut theirs);
    let inbox = Arc::new(Inbox {
        got: Mutex::new(Vec::new()),
        handshakes: Mutex::new(0),
        connector: connect(theirs).expect("connects"),
    });
    let router = Router::new()
        .route("/hooks/meta", post(receive).get(verify_request))
        .with_state(Arc::clone(&inbox));
    let receiver = SimServer::start(router, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("receiver starts");
    let url = format!("{}/hooks/meta", receiver.base_url());
    Harness {
        sim,
        _server: server,
        _receiver: receiver,
        meta,
        inbox,
        url,
    }
}

async fn harness(options: SimOptions, records: usize) -> Harness {
    let h = harness_with(options, records, |_| {}).await;
    h.sim.subscribe(h.url.clone(), Vec::new());
    h
}

async fn idle(h: &Harness) {
    assert!(
        h.sim.wait_webhooks_idle(Duration::from_secs(10)).await,
        "deliveries still pending: {:?}",
        h.sim.webhook_stats()
    );
}

fn hints(c: &MetaConnector, d: &Delivery) -> Vec<WebhookHint> {
    let handler = c.webhooks().expect("webhooks configured");
    handler
        .verify(&d.headers, &d.body)
        .expect("signature verifies");
    handler.parse(&d.headers, &d.body).expect("parses")
}

#[tokio::test]
async fn hand_edits_and_pushes_arrive_signed_and_name_the_listing() {
    let h = harness(fast(), 10).await;
    let records = h
        .meta
        .read_skus(&["SKU-00001".to_string()])
        .await
        .expect("read");
    let r1 = &records[0];

    assert!(h.sim.set_stock("SKU-00001", "default", 40));
    assert!(h.sim.set_offer("SKU-00002", Offer::regular(sek(77_700))));
    idle(&h).await;
    let got = h.inbox.all();
    assert_eq!(got.len(), 2);
    assert_eq!(
        *h.inbox.handshakes.lock().expect("count"),
        1,
        "one handshake per subscriber"
    );
    let stats = h.sim.webhook_stats();
    assert_eq!((stats.handshakes, stats.handshakes_failed), (1, 0));
    for d in &got {
        assert!(d.headers["x-hub-signature-256"].starts_with("sha256="));
        assert_eq!(d.headers["content-type"], "application/json");
    }
    let stock_hint = &hints(&h.meta, &got[0])[0];
    assert_eq!(stock_hint.topic, "product_items");
    assert_eq!(stock_hint.skus, vec![r1.sku.clone().expect("sku")]);
    assert_eq!(
        stock_hint.refs,
        vec![(REF_PRODUCT_ID.to_string(), r1.refs[REF_PRODUCT_ID].clone())]
    );
    assert!(stock_hint.occurred_at_ms.is_some());
    assert_eq!(
        hints(&h.meta, &got[1])[0].skus,
        vec!["SKU-00002".to_string()]
    );

    // A push through items_batch: notified once the batch is applied.
    let outcomes = h
        .meta
        .push(&[stock("SKU-00001", 7), stock("SKU-00003", 9)])
        .await
        .expect("push");
    assert!(
        outcomes.iter().all(|o| *o == PushOutcome::Applied),
        "{outcomes:?}"
    );
    idle(&h).await;
    let got = h.inbox.all();
    assert_eq!(got.len(), 3, "one delivery for the batch");
    let pushed = hints(&h.meta, &got[2]);
    assert_eq!(
        pushed
            .iter()
            .map(|h| h.skus[0].as_str())
            .collect::<Vec<_>>(),
        ["SKU-00001", "SKU-00003"]
    );
    let body: serde_json::Value = serde_json::from_slice(&got[2].body).expect("json");
    assert_eq!(body["object"], "product_catalog");
    assert_eq!(body["entry"][0]["id"], "1234567890");
    assert_eq!(
        body["entry"][0]["changes"][0]["value"]["changed_fields"],
        serde_json::json!(["availability", "quantity_to_sell_on_facebook"])
    );

    // Writing the values the catalog already holds sends nothing.
    h.meta.push(&[stock("SKU-00001", 7)]).await.expect("push");
    idle(&h).await;
    assert_eq!(h.inbox.all().len(), 3);
    // Event ids differ per delivery (body hashes).
    let handler = h.meta.webhooks().expect("webhooks");
    let ids: Vec<Option<String>> = h
        .inbox
        .all()
        .iter()
        .map(|d| handler.event_id(&d.headers, &d.body))
        .collect();
    assert!(ids[0] != ids[1] && ids[1] != ids[2]);
}

#[tokio::test]
async fn a_sale_sends_the_order_then_the_stock() {
    let h = harness(fast(), 5).await;
    // SKU-00002 holds 3.
    assert!(h.sim.sell("SKU-00002", 2));
    assert!(!h.sim.sell("SKU-00002", 2), "only one left");
    assert!(!h.sim.sell("nope", 1));
    idle(&h).await;
    assert_eq!(h.sim.record("SKU-00002").expect("sku").stock["default"], 1);
    let got = h.inbox.all();
    assert_eq!(got.len(), 2);
    let order = &hints(&h.meta, &got[0])[0];
    assert_eq!(order.topic, "orders");
    assert_eq!(
        order.sold,
        vec![SoldLine {
            sku: Some("SKU-00002".into()),
            reference: None,
            quantity: 2
        }]
    );
    let stock = &hints(&h.meta, &got[1])[0];
    assert_eq!(
        (stock.topic.as_str(), stock.skus[0].as_str()),
        ("product_items", "SKU-00002")
    );
}

#[tokio::test]
async fn removes_and_adds_name_their_verb() {
    let h = harness(fast(), 3).await;
    assert!(h.sim.remove("SKU-00000"));
    assert!(!h.sim.remove("SKU-00000"));
    let mut r = h.sim.record("SKU-00001").expect("sku");
    r.sku = "NEW-ø".into();
    h.sim.add(r);
    idle(&h).await;
    let got = h.inbox.all();
    assert_eq!(got.len(), 2);
    assert!(
        got[1].body.is_ascii(),
        "non-ASCII is escaped, as Meta sends it"
    );
    let verbs: Vec<serde_json::Value> = got
        .iter()
        .map(|d| {
            let v: serde_json::Value = serde_json::from_slice(&d.body).expect("json");
            v["entry"][0]["changes"][0]["value"]["verb"].clone()
        })
        .collect();
    assert_eq!(verbs, ["delete", "create"]);
    assert_eq!(hints(&h.meta, &got[1])[0].skus, vec!["NEW-ø".to_string()]);
}

#[tokio::test]
async fn large_batches_are_split_into_deliveries() {
    let options = SimOptions {
        webhook_max_changes: 2,
        ..fast()
    };
    let h = harness(options, 10).await;
    let fixes: Vec<Correction> = (0..5).map(|i| stock(&format!("SKU-{i:05}"), 50)).collect();
    h.meta.push(&fixes).await.expect("push");
    idle(&h).await;
    let got = h.inbox.all();
    let per: Vec<usize> = got.iter().map(|d| hints(&h.meta, d).len()).collect();
    assert_eq!(per, [2, 2, 1]);
}

#[tokio::test]
async fn duplicate_mode_sends_the_same_event_twice() {
    let h = harness(fast(), 3).await;
    h.sim.set_webhook_faults(WebhookFaults {
        duplicate_next: 1,
        ..WebhookFaults::default()
    });
    assert!(h.sim.set_stock("SKU-00001", "default", 5));
    idle(&h).await;
    let got = h.inbox.all();
    assert_eq!(got.len(), 2);
    let handler = h.meta.webhooks().expect("webhooks");
    assert_eq!(
        handler.event_id(&got[0].headers, &got[0].body),
        handler.event_id(&got[1].headers, &got[1].body)
    );
    assert!(
        got.iter()
            .all(|d| handler.verify(&d.headers, &d.body).is_ok())
    );
}

#[tokio::test]
async fn drop_mode_sends_nothing() {
    let h = harness(fast(), 3).await;
    h.sim.set_webhook_faults(WebhookFaults {
        drop_next: 1,
        ..WebhookFaults::default()
    });
    assert!(h.sim.set_stock("SKU-00001", "default", 5));
    idle(&h).await;
    assert!(h.inbox.all().is_empty());
    assert_eq!(h.sim.webhook_stats().dropped, 1);
    assert!(h.sim.set_stock("SKU-00001", "default", 6));
    idle(&h).await;
    assert_eq!(h.inbox.all().len(), 1);
}

#[tokio::test]
async fn reorder_mode_swaps_two_deliveries() {
    let h = harness(fast(), 3).await;
    h.sim.set_webhook_faults(WebhookFaults {
        reorder_next: 1,
        ..WebhookFaults::default()
    });
    assert!(h.sim.set_stock("SKU-00001", "default", 5));
    assert!(h.sim.set_stock("SKU-00002", "default", 6));
    idle(&h).await;
    let skus: Vec<String> = h
        .inbox
        .all()
        .iter()
        .map(|d| hints(&h.meta, d)[0].skus[0].clone())
        .collect();
    assert_eq!(skus, ["SKU-00002", "SKU-00001"]);
    assert_eq!(h.sim.webhook_stats().reordered, 1);
}

#[tokio::test]
async fn a_refused_handshake_means_no_deliveries() {
    let h = harness_with(fast(), 3, |s| {
        s.webhook_verify_token = Some(SecretRef::Literal("a different token".into()));
    })
    .await;
    h.sim.subscribe(h.url.clone(), Vec::new());
    assert!(h.sim.set_stock("SKU-00001", "default", 5));
    idle(&h).await;
    assert!(h.inbox.all().is_empty());
    let stats = h.sim.webhook_stats();
    assert_eq!(
        stats.handshakes_failed, 4,
        "first attempt and three retries: {stats:?}"
    );
    assert_eq!((stats.attempted, stats.given_up), (0, 1));
}

#[tokio::test]
async fn topic_filters_and_a_wrong_app_secret() {
    let h = harness_with(fast(), 3, |_| {}).await;
    h.sim.subscribe(h.url.clone(), vec!["orders".into()]);
    assert!(h.sim.set_stock("SKU-00001", "default", 5));
    assert!(h.sim.sell("SKU-00001", 1));
    idle(&h).await;
    let got = h.inbox.all();
    assert_eq!(got.len(), 1);
    assert_eq!(hints(&h.meta, &got[0])[0].topic, "orders");
    // Another app secret: the signature does not verify, and Graph refuses its proof.
    let mut settings = fast().settings(&h._server.base_url());
    settings.app_secret = Some(SecretRef::Literal("not the app secret".into()));
    let other = connect(settings).expect("connects");
    assert!(matches!(
        other
            .webhooks()
            .expect("configured")
            .verify(&got[0].headers, &got[0].body),
        Err(WebhookError::Unauthorized(_))
    ));
    let e = other.healthcheck().await.unwrap_err();
    assert!(e.to_string().contains("appsecret_proof"), "{e}");
    h.meta.healthcheck().await.expect("the right proof passes");
    // No app secret, no webhooks.
    let mut settings = fast().settings(&h._server.base_url());
    settings.app_secret = None;
    assert!(connect(settings).expect("connects").webhooks().is_none());
}

#[tokio::test]
async fn admin_routes_subscribe_and_sell() {
    let h = harness_with(fast(), 3, |_| {}).await;
    let base = h._server.base_url();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/__sim/webhooks/subscriptions"))
        .json(&serde_json::json!({ "url": h.url }))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(r.status(), 204);
    let r = http
        .post(format!("{base}/__sim/orders"))
        .json(&serde_json::json!({ "sku": "SKU-00001", "quantity": 1 }))
        .send()
        .await
        .expect("sell");
    assert_eq!(r.status(), 204);
    idle(&h).await;
    assert_eq!(h.inbox.all().len(), 2);
    let stats: serde_json::Value = http
        .get(format!("{base}/__sim/webhooks/stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["succeeded"], 2);
}

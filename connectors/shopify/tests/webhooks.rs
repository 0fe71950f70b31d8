//! Webhooks end to end: the simulator POSTs signed deliveries to a real receiver on
//! loopback when its state changes (hand edits, pushes through the adapter, sales), and the
//! adapter's own `WebhookHandler` verifies and reads them into hints that name the listings
//! as `read_skus` reports them. Also: topic filters, bounded retries, and the rehearsal
//! faults (drop, duplicate, reorder).

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{Harness, catalog, loc, nok, offer_fix, read, stock_fix};
use omnisync_sdk::sim::delivery::WebhookAdmin;
use omnisync_sdk::sim::{SimControl, SimServer};
use omnisync_sdk::webhook::{Headers, SoldLine, WebhookError, WebhookHint, headers_from};
use omnisync_sdk::{Connector, Offer, PushOutcome, SecretRef};
use omnisync_shopify::mapping::REF_INVENTORY_ITEM_ID;
use omnisync_shopify::sim::{DeliveryOptions, SimOptions, WebhookFaults};
use omnisync_shopify::{ShopifyConnector, connect};

/// One delivery as the receiver got it (header names lower-cased).
#[derive(Debug, Clone)]
struct Delivery {
    headers: Headers,
    body: Vec<u8>,
}

impl Delivery {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
    fn topic(&self) -> &str {
        self.header("x-shopify-topic")
    }
}

#[derive(Default)]
struct Inbox {
    got: Mutex<Vec<Delivery>>,
    /// Answer 500 to this many deliveries first.
    fail_next: AtomicU32,
}

impl Inbox {
    fn all(&self) -> Vec<Delivery> {
        self.got.lock().expect("inbox").clone()
    }
}

async fn receive(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if inbox
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    inbox.got.lock().expect("inbox").push(Delivery {
        headers: headers_from(&headers),
        body: body.to_vec(),
    });
    StatusCode::OK
}

/// A webhook receiver on an ephemeral loopback port.
async fn receiver() -> (Arc<Inbox>, String, SimServer) {
    let inbox = Arc::new(Inbox::default());
    let router = Router::new()
        .route("/hooks/shopify", post(receive))
        .with_state(Arc::clone(&inbox));
    let server = SimServer::start(router, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("receiver starts");
    let url = format!("{}/hooks/shopify", server.base_url());
    (inbox, url, server)
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

async fn idle(h: &Harness) {
    assert!(
        h.sim.wait_webhooks_idle(Duration::from_secs(10)).await,
        "deliveries still pending: {:?}",
        h.sim.webhook_stats()
    );
}

/// Verifies a delivery with the adapter's handler and returns its one hint.
fn check(c: &ShopifyConnector, d: &Delivery) -> WebhookHint {
    let handler = c.webhooks().expect("webhooks configured");
    handler
        .verify(&d.headers, &d.body)
        .expect("signature verifies");
    let mut hints = handler.parse(&d.headers, &d.body).expect("parses");
    assert_eq!(hints.len(), 1);
    hints.remove(0)
}

#[tokio::test]
async fn hand_edits_and_pushes_arrive_signed_and_name_the_listing() {
    let h = Harness::new(fast(), catalog(20)).await;
    let (inbox, url, _rx) = receiver().await;
    h.sim.subscribe(url, Vec::new());
    let c = h.connector();
    let records = read(&c, &["SKU-00003", "SKU-00004"]).await;
    let (r3, r4) = (&records[0], &records[1]);

    // Hand edits: a quantity and a price.
    assert!(h.sim.set_stock("SKU-00003", &loc(1), 42));
    assert!(h.sim.set_offer("SKU-00004", Offer::regular(nok(55_500))));
    idle(&h).await;
    let got = inbox.all();
    assert_eq!(
        got.iter().map(Delivery::topic).collect::<Vec<_>>(),
        ["inventory_levels/update", "products/update"]
    );
    let stock = check(&c, &got[0]);
    assert_eq!(
        stock.refs,
        vec![(
            REF_INVENTORY_ITEM_ID.to_string(),
            r3.refs[REF_INVENTORY_ITEM_ID].clone()
        )]
    );
    assert!(stock.occurred_at_ms.is_some());
    let body: serde_json::Value = serde_json::from_slice(&got[0].body).expect("json");
    assert_eq!(body["available"], 42);
    assert_eq!(body["location_id"], 1);
    let price = check(&c, &got[1]);
    assert!(price.skus.contains(&"SKU-00004".to_string()), "{price:?}");
    for d in &got {
        for name in [
            "x-shopify-shop-domain",
            "x-shopify-api-version",
            "x-shopify-webhook-id",
            "x-shopify-event-id",
            "x-shopify-triggered-at",
        ] {
            assert!(!d.header(name).is_empty(), "{name} missing");
        }
        assert_eq!(d.header("content-type"), "application/json");
    }
    assert_ne!(
        got[0].header("x-shopify-event-id"),
        got[1].header("x-shopify-event-id")
    );

    // Pushes through the adapter: Shopify notifies apps of their own changes too.
    let outcomes = c
        .push(&[
            stock_fix(r3, &loc(2), 17, Some(r3.stock[1].available)),
            offer_fix(r4, Offer::regular(nok(66_600))),
        ])
        .await
        .expect("push");
    assert!(
        outcomes.iter().all(|o| *o == PushOutcome::Applied),
        "{outcomes:?}"
    );
    idle(&h).await;
    let got = inbox.all();
    assert_eq!(
        got.len(),
        4,
        "{:?}",
        got.iter().map(Delivery::topic).collect::<Vec<_>>()
    );
    let pushed: Vec<WebhookHint> = got[2..].iter().map(|d| check(&c, d)).collect();
    let stock = pushed
        .iter()
        .find(|h| h.topic == "inventory_levels/update")
        .expect("stock webhook");
    assert_eq!(stock.refs[0].1, r3.refs[REF_INVENTORY_ITEM_ID]);
    let price = pushed
        .iter()
        .find(|h| h.topic == "products/update")
        .expect("price webhook");
    assert!(price.skus.contains(&"SKU-00004".to_string()));
    // The payload carries the new price as Shopify's REST JSON does.
    let body: serde_json::Value = serde_json::from_slice(
        &got[2..]
            .iter()
            .find(|d| d.topic() == "products/update")
            .expect("products/update")
            .body,
    )
    .expect("json");
    let variant = body["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .find(|v| v["sku"] == "SKU-00004")
        .expect("variant");
    assert_eq!(variant["price"], "666.00");

    // A push that changes nothing sends nothing.
    let same = read(&c, &["SKU-00004"]).await;
    c.push(&[offer_fix(&same[0], Offer::regular(nok(66_600)))])
        .await
        .expect("push");
    idle(&h).await;
    assert_eq!(inbox.all().len(), 4);
    let stats = h.sim.webhook_stats();
    assert_eq!((stats.attempted, stats.succeeded, stats.failed), (4, 4, 0));
}

#[tokio::test]
async fn a_sale_sends_the_order_then_the_stock() {
    let h = Harness::new(fast(), catalog(5)).await;
    let (inbox, url, _rx) = receiver().await;
    h.sim.subscribe(url, Vec::new());
    let c = h.connector();
    let before = h.record("SKU-00003");
    // SKU-00003: location 1 holds 3, location 2 holds 0.
    assert!(h.sim.sell("SKU-00003", 2));
    assert!(!h.sim.sell("SKU-00003", 50), "no location holds 50");
    assert!(!h.sim.sell("nope", 1));
    assert!(!h.sim.sell("SKU-00003", 0));
    idle(&h).await;
    assert_eq!(
        h.record("SKU-00003").stock[&loc(1)],
        before.stock[&loc(1)] - 2
    );
    let got = inbox.all();
    assert_eq!(
        got.iter().map(Delivery::topic).collect::<Vec<_>>(),
        ["orders/create", "inventory_levels/update"]
    );
    let order = check(&c, &got[0]);
    assert_eq!(
        order.sold,
        vec![SoldLine {
            sku: Some("SKU-00003".into()),
            reference: None,
            quantity: 2
        }]
    );
    let stock = check(&c, &got[1]);
    let r = read(&c, &["SKU-00003"]).await;
    assert_eq!(stock.refs[0].1, r[0].refs[REF_INVENTORY_ITEM_ID]);
}

#[tokio::test]
async fn removes_and_adds_are_product_webhooks() {
    let h = Harness::new(fast(), catalog(3)).await;
    let (inbox, url, _rx) = receiver().await;
    h.sim.subscribe(url, Vec::new());
    let c = h.connector();
    // Products are grouped 1, 2, …: SKU-00000 is alone; SKU-00001/2 share a product.
    assert!(h.sim.remove("SKU-00000"));
    assert!(h.sim.remove("SKU-00001"));
    let mut extra = h.record("SKU-00002");
    extra.sku = "NEW-1".into();
    h.sim.add(extra);
    idle(&h).await;
    let got = inbox.all();
    assert_eq!(
        got.iter().map(Delivery::topic).collect::<Vec<_>>(),
        ["products/delete", "products/update", "products/create"]
    );
    assert_eq!(check(&c, &got[0]).refs[0].0, "product_id");
    assert_eq!(check(&c, &got[1]).skus, vec!["SKU-00002".to_string()]);
    assert_eq!(check(&c, &got[2]).skus, vec!["NEW-1".to_string()]);
}

#[tokio::test]
async fn topic_filters_and_no_subscribers() {
    let h = Harness::new(fast(), catalog(3)).await;
    assert!(h.sim.set_stock("SKU-00001", &loc(1), 9));
    assert_eq!(
        h.sim.webhook_stats().emitted,
        0,
        "nobody listens: nothing is built"
    );
    let (inbox, url, _rx) = receiver().await;
    h.sim.subscribe(url.clone(), vec!["products/update".into()]);
    assert!(h.sim.set_stock("SKU-00001", &loc(1), 8));
    assert!(h.sim.set_offer("SKU-00001", Offer::regular(nok(1_000))));
    idle(&h).await;
    assert_eq!(
        inbox.all().iter().map(Delivery::topic).collect::<Vec<_>>(),
        ["products/update"]
    );
    // Subscribing the same URL again replaces its topics.
    h.sim.subscribe(url, vec!["inventory_levels/update".into()]);
    assert_eq!(h.sim.subscriptions().len(), 1);
    assert!(h.sim.set_stock("SKU-00001", &loc(1), 7));
    idle(&h).await;
    assert_eq!(inbox.all().len(), 2);
    h.sim.clear_subscriptions();
    assert!(h.sim.set_stock("SKU-00001", &loc(1), 6));
    idle(&h).await;
    assert_eq!(inbox.all().len(), 2);
}

#[tokio::test]
async fn failed_deliveries_are_retried_a_bounded_number_of_times() {
    let h = Harness::new(fast(), catalog(3)).await;
    let (inbox, url, _rx) = receiver().await;
    h.sim.subscribe(url, Vec::new());
    inbox.fail_next.store(2, Ordering::SeqCst);
    assert!(h.sim.set_stock("SKU-00001", &loc(1), 5));
    idle(&h).await;
    assert_eq!(inbox.all().len(), 1);
    let stats = h.sim.webhook_stats();
    assert_eq!(
        (
            stats.attempted,
            stats.failed,
            stats.retried,
            stats.succeeded
        ),
        (3, 2, 2, 1)
    );
    // More failures than retries: given up.
    inbox.fail_next.store(10, Ordering::SeqCst);
    assert!(h.sim.set_stock("SKU-00001", &loc(1), 4));
    idle(&h).await;
    let stats = h.sim.webhook_stats();
    assert_eq!(stats.given_up, 1);
    assert_eq!(stats.attempted, 3 + 4, "one attempt and three retries");
    assert_eq!(inbox.all().len(), 1);
}

#[tokio::test]
async fn duplicate_mode_sends_the_same_event_twice() {
    let h = Harness::new(fast(), catalog(3)).await;
    let (inbox, url, _rx) = receiver().await;
    h.sim.subscribe(url, Vec::new());
    let c = h.connector();
    h.sim.set_webhook_faults(WebhookFaults {
        duplicate_next: 1,
        ..WebhookFaults::default()
    });
    assert!(h.sim.set_stock("SKU-00001", &loc(1), 5));
    assert!(h.sim.set_stock("SKU-00001", &loc(1), 6));
    idle(&h).await;
    let got = inbox.all();
    assert_eq!(got.len(), 3);
    let handler = c.webhooks().expect("webhooks");
    let ids: Vec<Option<String>> = got
        .iter()
        .map(|d| handler.event_id(&d.headers, &d.body))
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_ne!(ids[1], ids[2]);
    assert_eq!(got[0].body, got[1].body);
    assert!(
        got.iter()
            .all(|d| handler.verify(&d.headers, &d.body).is_ok())
    );
    assert_eq!(h.sim.webhook_stats().duplicated, 1);
}

#[tokio::test]
async fn drop_mode_sends_nothing() {
    let h = Harness::new(fast(), catalog(3)).await;
    let (inbox, url, _rx) = receiver().await;
    h.sim.subscribe(url, Vec::new());
    h.sim.set_webhook_faults(WebhookFaults {
        drop_next: 2,
        ..WebhookFaults::default()
    });
    assert!(h.sim.set_stock("SKU-00001", &loc(1), 5));
    assert!(h.sim.set_offer("SKU-00001", Offer::regular(nok(1_000))));
    idle(&h).await;
    assert!(inbox.all().is_empty());
    let stats = h.sim.webhook_stats();
    assert_eq!((stats.dropped, stats.attempted), (2, 0));
    assert_eq!(h.sim.webhook_faults().drop_next, 0, "the count is used up");
    assert!(h.sim.set_stock("SKU-00001", &loc(1), 4));
    idle(&h).await;
    assert_eq!(inbox.all().len(), 1);
    // A certain drop probability drops everything.
    h.sim.set_webhook_faults(WebhookFaults {
        drop_probability: 1.0,
        ..WebhookFaults::default()
    });
    assert!(h.sim.set_stock("SKU-00001", &loc(1), 3));
    idle(&h).await;
    assert_eq!(inbox.all().len(), 1);
}

#[tokio::test]
async fn reorder_mode_swaps_two_deliveries() {
    let h = Harness::new(fast(), catalog(3)).await;
    let (inbox, url, _rx) = receiver().await;
    h.sim.subscribe(url, Vec::new());
    let c = h.connector();
    h.sim.set_webhook_faults(WebhookFaults {
        reorder_next: 1,
        ..WebhookFaults::default()
    });
    assert!(h.sim.set_stock("SKU-00001", &loc(1), 5));
    assert!(h.sim.set_offer("SKU-00002", Offer::regular(nok(1_000))));
    assert!(h.sim.set_stock("SKU-00001", &loc(1), 6));
    idle(&h).await;
    let got = inbox.all();
    assert_eq!(
        got.iter().map(Delivery::topic).collect::<Vec<_>>(),
        [
            "products/update",
            "inventory_levels/update",
            "inventory_levels/update"
        ]
    );
    let bodies: Vec<serde_json::Value> = got
        .iter()
        .map(|d| serde_json::from_slice(&d.body).expect("json"))
        .collect();
    assert_eq!(
        (
            bodies[1]["available"].clone(),
            bodies[2]["available"].clone()
        ),
        (5.into(), 6.into())
    );
    // Out of order, the trigger times still tell which came first.
    let first = check(&c, &got[0]).occurred_at_ms;
    let second = check(&c, &got[1]).occurred_at_ms;
    assert!(second <= first);
    // A held delivery with nothing after it is still sent.
    h.sim.set_webhook_faults(WebhookFaults {
        reorder_next: 1,
        ..WebhookFaults::default()
    });
    assert!(h.sim.set_stock("SKU-00001", &loc(1), 7));
    idle(&h).await;
    assert_eq!(inbox.all().len(), 4);
}

#[tokio::test]
async fn admin_routes_subscribe_fault_and_sell() {
    let h = Harness::new(fast(), catalog(5)).await;
    let (inbox, url, _rx) = receiver().await;
    let base = h.server.base_url();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/__sim/webhooks/subscriptions"))
        .json(&serde_json::json!({ "url": url, "topics": ["orders/create"] }))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(r.status(), 204);
    let r = http
        .post(format!("{base}/__sim/webhooks/subscriptions"))
        .json(&serde_json::json!({ "url": "not a url" }))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(r.status(), 400);
    let subs: serde_json::Value = http
        .get(format!("{base}/__sim/webhooks/subscriptions"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(subs[0]["topics"][0], "orders/create");
    let r = http
        .post(format!("{base}/__sim/webhooks/faults"))
        .json(&serde_json::json!({ "duplicate_next": 1 }))
        .send()
        .await
        .expect("faults");
    assert_eq!(r.status(), 204);
    let r = http
        .post(format!("{base}/__sim/webhooks/faults"))
        .json(&serde_json::json!({ "drop_probability": 2.0 }))
        .send()
        .await
        .expect("faults");
    assert_eq!(r.status(), 400);
    let r = http
        .post(format!("{base}/__sim/orders"))
        .json(&serde_json::json!({ "sku": "SKU-00001", "quantity": 1 }))
        .send()
        .await
        .expect("sell");
    assert_eq!(r.status(), 204);
    let r = http
        .post(format!("{base}/__sim/orders"))
        .json(&serde_json::json!({ "sku": "SKU-00001", "quantity": 1000 }))
        .send()
        .await
        .expect("sell");
    assert_eq!(r.status(), 409);
    idle(&h).await;
    assert_eq!(inbox.all().len(), 2, "one order, duplicated");
    let stats: serde_json::Value = http
        .get(format!("{base}/__sim/webhooks/stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["succeeded"], 2);
    assert_eq!(stats["duplicated"], 1);
}

#[tokio::test]
async fn a_connector_with_another_secret_refuses_the_deliveries() {
    let h = Harness::new(fast(), catalog(3)).await;
    let (inbox, url, _rx) = receiver().await;
    h.sim.subscribe(url, Vec::new());
    assert!(h.sim.set_stock("SKU-00001", &loc(1), 5));
    idle(&h).await;
    let d = &inbox.all()[0];
    let other = h.connector_with(|s| {
        s.webhook_secret = Some(SecretRef::Literal("some other secret".into()));
    });
    assert!(matches!(
        other
            .webhooks()
            .expect("configured")
            .verify(&d.headers, &d.body),
        Err(WebhookError::Unauthorized(_))
    ));
    let none = connect({
        let mut s = h.settings.clone();
        s.webhook_secret = None;
        s
    })
    .expect("connects");
    assert!(none.webhooks().is_none(), "no secret, no webhooks");
}

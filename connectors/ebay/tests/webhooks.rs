//! eBay notifications end to end on loopback: the simulator sells, signs and delivers;
//! the connector's handler fetches the key, verifies the raw body, answers the endpoint
//! validation and turns deliveries into hints with sold lines.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use omnisync_ebay::oauth::TokenSource;
use omnisync_ebay::sim::{
    self, DEMO_VERIFICATION_TOKEN, DeliveryOptions, SimOptions, Simulator, WebhookFaults,
};
use omnisync_ebay::webhook::{
    self, EbayWebhooks, ORDER_CONFIRMATION, PublicKeyResponse, SignatureDigest, SignatureHeader,
    WebhookConfig,
};
use omnisync_ebay::{EbayConnector, REF_LISTING_ID, connect};
use omnisync_sdk::secret::SecretString;
use omnisync_sdk::sim::delivery::WebhookAdmin;
use omnisync_sdk::sim::{SimControl, SimRecord, SimServer};
use omnisync_sdk::webhook::{Headers, SoldLine, WebhookError, WebhookHandler, headers_from};
use omnisync_sdk::{Connector, Currency, ErrorKind, Money, Offer, StockLevel};
use p256::ecdsa::SigningKey;
use serde_json::{Value, json};
use sha2::Digest;

const ENDPOINT: &str = "https://sync.example.com/webhooks/ebay";

/// One captured delivery.
#[derive(Debug, Clone)]
struct Delivery {
    headers: Headers,
    body: Bytes,
}

type Inbox = Arc<Mutex<Vec<Delivery>>>;
type KeyState = (Arc<HashMap<String, PublicKeyResponse>>, Arc<AtomicU64>);

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.ok();
    });
    format!("http://{addr}")
}

/// A receiver that keeps every POST and answers 200.
async fn receiver() -> (String, Inbox) {
    let inbox: Inbox = Arc::default();
    let router = Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes| async move {
                    inbox.lock().unwrap().push(Delivery {
                        headers: headers_from(&headers),
                        body,
                    });
                    StatusCode::OK
                },
            ),
        )
        .with_state(inbox.clone());
    (format!("{}/hook", serve(router).await), inbox)
}

/// A `getPublicKey` endpoint serving `keys`, counting its calls.
async fn key_server(keys: Vec<(String, PublicKeyResponse)>) -> (String, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let keys: Arc<HashMap<String, PublicKeyResponse>> = Arc::new(keys.into_iter().collect());
    let state = (keys, hits.clone());
    let router = Router::new()
        .route(
            "/commerce/notification/v1/public_key/{kid}",
            get(
                |State((keys, hits)): State<KeyState>, Path(kid): Path<String>| async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    match keys.get(&kid) {
                        Some(k) => (StatusCode::OK, axum::Json(json!(k))).into_response(),
                        None => (StatusCode::NOT_FOUND, axum::Json(json!({"errors": []})))
                            .into_response(),
                    }
                },
            ),
        )
        .with_state(state);
    (serve(router).await, hits)
}

fn handler_at(base_url: &str) -> EbayWebhooks {
    EbayWebhooks::new(config_for(base_url)).unwrap()
}

async fn start_sim(options: SimOptions) -> (Arc<Simulator>, SimServer, EbayConnector) {
    let (sim, server) = sim::start("127.0.0.1:0".parse().unwrap(), options.clone())
        .await
        .unwrap();
    sim.seed(vec![
        SimRecord {
            sku: "SKU-A".into(),
            title: "A".into(),
            offer: Offer::regular(Money::new(1999, Currency::EUR)),
            stock: BTreeMap::from([(StockLevel::DEFAULT_LOCATION.to_string(), 10)]),
        },
        SimRecord {
            sku: "SKU-B".into(),
            title: "B".into(),
            offer: Offer::regular(Money::new(500, Currency::EUR)),
            stock: BTreeMap::from([(StockLevel::DEFAULT_LOCATION.to_string(), 2)]),
        },
    ]);
    let settings = options.webhook_settings(&server.base_url(), ENDPOINT, DEMO_VERIFICATION_TOKEN);
    let connector = connect(settings).unwrap();
    (sim, server, connector)
}

async fn sell_and_receive(sim: &Simulator, inbox: &Inbox, sku: &str, quantity: i64) -> Delivery {
    let before = inbox.lock().unwrap().len();
    assert!(sim.sell(sku, quantity), "the sale went through");
    assert!(sim.wait_webhooks_idle(Duration::from_secs(10)).await);
    let got = inbox.lock().unwrap();
    assert_eq!(got.len(), before + 1, "one delivery per sale");
    got[before].clone()
}

fn stock(sim: &Simulator, sku: &str) -> i64 {
    sim.record(sku).unwrap().stock[StockLevel::DEFAULT_LOCATION]
}

#[tokio::test]
async fn a_sale_is_delivered_signed_and_carries_its_sold_line() {
    let (sim, _server, connector) = start_sim(SimOptions::default()).await;
    let (url, inbox) = receiver().await;
    sim.subscribe(url, vec![ORDER_CONFIRMATION.to_string()]);
    let d = sell_and_receive(&sim, &inbox, "SKU-A", 3).await;
    assert_eq!(
        stock(&sim, "SKU-A"),
        7,
        "the sold units came off the listing"
    );

    let handler = connector.webhooks().expect("webhooks are configured");
    handler.prepare(&d.headers).await;
    assert_eq!(handler.verify(&d.headers, &d.body), Ok(()));

    let body: Value = serde_json::from_slice(&d.body).unwrap();
    assert_eq!(body["metadata"]["topic"], ORDER_CONFIRMATION);
    let id = body["notification"]["notificationId"].as_str().unwrap();
    assert_eq!(handler.event_id(&d.headers, &d.body).as_deref(), Some(id));

    let hints = handler.parse(&d.headers, &d.body).unwrap();
    assert_eq!(hints.len(), 1);
    let hint = &hints[0];
    assert_eq!(hint.topic, ORDER_CONFIRMATION);
    assert_eq!(hint.skus, vec!["SKU-A".to_string()]);
    assert_eq!(
        hint.refs,
        vec![(REF_LISTING_ID.to_string(), sim.listing_id("SKU-A").unwrap())]
    );
    assert_eq!(
        hint.sold,
        vec![SoldLine {
            sku: Some("SKU-A".into()),
            reference: None,
            quantity: 3
        }]
    );
    assert!(hint.occurred_at_ms.is_some_and(|t| t > 1_700_000_000_000));
}

#[tokio::test]
async fn sales_that_cannot_happen_change_nothing_and_send_nothing() {
    let (sim, _server, _c) = start_sim(SimOptions::default()).await;
    let (url, inbox) = receiver().await;
    sim.subscribe(url, Vec::new());
    assert!(!sim.sell("SKU-B", 3), "more than listed");
    assert!(!sim.sell("SKU-B", 0));
    assert!(!sim.sell("NOPE", 1));
    assert!(sim.wait_webhooks_idle(Duration::from_secs(5)).await);
    assert!(inbox.lock().unwrap().is_empty());
    assert_eq!(stock(&sim, "SKU-B"), 2);
}

#[tokio::test]
async fn tampered_body_wrong_key_and_missing_header_are_unauthorized() {
    let (sim, _server, connector) = start_sim(SimOptions::default()).await;
    let (url, inbox) = receiver().await;
    sim.subscribe(url, Vec::new());
    let d = sell_and_receive(&sim, &inbox, "SKU-A", 2).await;
    let handler = connector.webhooks().unwrap();
    handler.prepare(&d.headers).await;
    assert_eq!(handler.verify(&d.headers, &d.body), Ok(()));

    // Tampered body.
    let text = std::str::from_utf8(&d.body).unwrap();
    let tampered = text.replace("\"quantity\":2", "\"quantity\":1");
    assert_ne!(tampered, text);
    assert!(matches!(
        handler.verify(&d.headers, tampered.as_bytes()),
        Err(WebhookError::Unauthorized(_))
    ));

    // Signed with another key under the simulator's key id.
    let other = SigningKey::from_slice(&[3u8; 32]).unwrap();
    let forged = SignatureHeader {
        alg: "ecdsa".into(),
        kid: sim.options().notification_key_id.clone(),
        signature: webhook::sign(&other, SignatureDigest::Sha1, &d.body),
        digest: Some("SHA1".into()),
    };
    let mut headers = d.headers.clone();
    headers.insert("x-ebay-signature".into(), forged.encode());
    assert!(matches!(
        handler.verify(&headers, &d.body),
        Err(WebhookError::Unauthorized(_))
    ));

    // Missing, not base64, not JSON, another algorithm.
    let e = handler.verify(&Headers::new(), &d.body).unwrap_err();
    assert!(
        matches!(e, WebhookError::Unauthorized(ref m) if m.contains("missing")),
        "{e}"
    );
    let not_ecdsa = SignatureHeader {
        alg: "hmac".into(),
        ..SignatureHeader::decode(&d.headers["x-ebay-signature"]).unwrap()
    };
    for bad in [
        "%%%".to_string(),
        B64.encode("not json"),
        not_ecdsa.encode(),
    ] {
        headers.insert("x-ebay-signature".into(), bad.clone());
        assert!(
            matches!(
                handler.verify(&headers, &d.body),
                Err(WebhookError::Unauthorized(_))
            ),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn the_key_is_fetched_once_and_cached() {
    let (sim, _server, connector) = start_sim(SimOptions::default()).await;
    let (url, inbox) = receiver().await;
    sim.subscribe(url, Vec::new());
    let handler = connector.webhooks().unwrap();
    let first = sell_and_receive(&sim, &inbox, "SKU-A", 1).await;
    // Concurrent first deliveries share one fetch.
    futures::future::join_all((0..5).map(|_| handler.prepare(&first.headers))).await;
    assert_eq!(handler.verify(&first.headers, &first.body), Ok(()));
    for _ in 0..3 {
        let d = sell_and_receive(&sim, &inbox, "SKU-A", 1).await;
        handler.prepare(&d.headers).await;
        assert_eq!(handler.verify(&d.headers, &d.body), Ok(()));
    }
    assert_eq!(sim.public_key_fetches(), 1);
}

#[tokio::test]
async fn without_prepare_the_first_delivery_is_refused_until_the_key_is_fetched() {
    let (sim, _server, connector) = start_sim(SimOptions::default()).await;
    let (url, inbox) = receiver().await;
    sim.subscribe(url, Vec::new());
    let d = sell_and_receive(&sim, &inbox, "SKU-A", 1).await;
    let handler = connector.webhooks().unwrap();
    let e = handler.verify(&d.headers, &d.body).unwrap_err();
    assert!(
        matches!(e, WebhookError::Unauthorized(ref m) if m.contains("not fetched yet")),
        "{e}"
    );
    // The background fetch makes the redelivery pass (bounded wait, no timing assertion).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while handler.verify(&d.headers, &d.body).is_err() {
        assert!(tokio::time::Instant::now() < deadline, "key never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sim.public_key_fetches(), 1);
}

/// A receiver that, like a daemon not calling `prepare`, only verifies: 401 until the key
/// is cached, then 200 (and keeps what it accepted).
#[tokio::test]
async fn without_prepare_the_simulators_redelivery_gets_the_sale_through() {
    let (sim, _server, connector) = start_sim(SimOptions {
        webhook_delivery: DeliveryOptions {
            retry_backoff: Duration::from_millis(20),
            ..DeliveryOptions::default()
        },
        ..SimOptions::default()
    })
    .await;
    let connector = Arc::new(connector);
    let inbox: Inbox = Arc::default();
    let router = Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |State((c, inbox)): State<(Arc<EbayConnector>, Inbox)>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    let headers = headers_from(&headers);
                    match c.webhooks().unwrap().verify(&headers, &body) {
                        Ok(()) => {
                            inbox.lock().unwrap().push(Delivery { headers, body });
                            StatusCode::OK
                        }
                        Err(_) => StatusCode::UNAUTHORIZED,
                    }
                },
            ),
        )
        .with_state((connector.clone(), inbox.clone()));
    let url = format!("{}/hook", serve(router).await);
    sim.subscribe(url, Vec::new());
    assert!(sim.sell("SKU-A", 1));
    assert!(sim.wait_webhooks_idle(Duration::from_secs(10)).await);
    let stats = sim.webhook_stats();
    assert_eq!((stats.succeeded, stats.given_up), (1, 0), "{stats:?}");
    assert!(stats.retried >= 1, "{stats:?}");
    assert_eq!(inbox.lock().unwrap().len(), 1);
    assert_eq!(sim.public_key_fetches(), 1);
}

#[tokio::test]
async fn an_unknown_key_id_is_refused_and_not_fetched_again_at_once() {
    let (base, hits) = key_server(Vec::new()).await;
    let handler = handler_at(&base);
    let key = SigningKey::from_slice(&[5u8; 32]).unwrap();
    let body = br#"{"metadata":{"topic":"X"},"notification":{"notificationId":"n1","data":{}}}"#;
    let mut headers = Headers::new();
    headers.insert(
        "x-ebay-signature".into(),
        SignatureHeader {
            alg: "ecdsa".into(),
            kid: "no-such-key".into(),
            signature: webhook::sign(&key, SignatureDigest::Sha1, body),
            digest: Some("SHA1".into()),
        }
        .encode(),
    );
    for _ in 0..3 {
        handler.prepare(&headers).await;
        assert!(matches!(
            handler.verify(&headers, body),
            Err(WebhookError::Unauthorized(_))
        ));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(handler.key_fetches(), 1);
}

#[tokio::test]
async fn made_up_key_ids_cost_at_most_twelve_fetches_a_minute() {
    let (base, hits) = key_server(Vec::new()).await;
    let handler = handler_at(&base);
    for i in 0..20 {
        let mut headers = Headers::new();
        headers.insert(
            "x-ebay-signature".into(),
            SignatureHeader {
                alg: "ecdsa".into(),
                kid: format!("made-up-{i}"),
                signature: B64.encode([0u8; 64]),
                digest: None,
            }
            .encode(),
        );
        handler.prepare(&headers).await;
        assert!(handler.verify(&headers, b"{}").is_err());
    }
    assert_eq!(hits.load(Ordering::SeqCst), 12);
}

#[tokio::test]
async fn an_expired_key_is_fetched_again_and_still_used_meanwhile() {
    let key = SigningKey::from_slice(&[13u8; 32]).unwrap();
    let (base, hits) = key_server(vec![(
        "k".to_string(),
        PublicKeyResponse {
            key: webhook::public_key_pem(key.verifying_key()),
            algorithm: "ECDSA".into(),
            digest: "SHA1".into(),
        },
    )])
    .await;
    // A zero lifetime: every cached key is expired at once.
    let handler = EbayWebhooks::new(WebhookConfig {
        key_ttl: Duration::ZERO,
        ..config_for(&base)
    })
    .unwrap();
    let body = b"{\"a\":1}";
    let mut headers = Headers::new();
    headers.insert(
        "x-ebay-signature".into(),
        SignatureHeader {
            alg: "ecdsa".into(),
            kid: "k".into(),
            signature: webhook::sign(&key, SignatureDigest::Sha1, body),
            digest: Some("SHA1".into()),
        }
        .encode(),
    );
    handler.prepare(&headers).await;
    handler.prepare(&headers).await;
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(
        handler.verify(&headers, body),
        Ok(()),
        "a stale key still verifies"
    );
}

/// eBay's own test notification (event-notification-java-sdk test data), fetched key and all.
#[tokio::test]
async fn ebays_own_test_notification_verifies_through_get_public_key() {
    const KID: &str = "9936261a-7d7b-4621-a0f1-96ccb428af49";
    const KEY: &str = "-----BEGIN PUBLIC KEY-----MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEZhhxXKtR+TOvtDbgTPCkSof02qgBB7IsYOyf76ilExJ/upAa/vKIKheOoCyOpcLmi4t0b4uepb7LLjmMr90FUg==-----END PUBLIC KEY-----";
    const HEADER: &str = "eyJhbGciOiJlY2RzYSIsImtpZCI6Ijk5MzYyNjFhLTdkN2ItNDYyMS1hMGYxLTk2Y2NiNDI4YWY0OSIsInNpZ25hdHVyZSI6Ik1FWUNJUUNmeGZJV3V4bVdjSUJRSjljNS9YN2lHREpxczJSQ0dzQkVhQWppbnlycmZBSWhBSVY2d0djVGlCdVY1S0pVaWYyaG9reXJMK1E5c3NIa2FkK214Mm5FRTI1dyIsImRpZ2VzdCI6IlNIQTEifQ==";
    const BODY: &str = r#"{"metadata":{"topic":"MARKETPLACE_ACCOUNT_DELETION","schemaVersion":"1.0","deprecated":false},"notification":{"notificationId":"49feeaeb-4982-42d9-a377-9645b8479411_33f7e043-fed8-442b-9d44-791923bd9a6d","eventDate":"2021-03-19T20:43:59.462Z","publishDate":"2021-03-19T20:43:59.679Z","publishAttemptCount":1,"data":{"username":"test_user","userId":"ma8vp1jySJC","eiasToken":"nY+sHZ2PrBmdj6wVnY+sEZ2PrA2dj6wJnY+gAZGEpwmdj6x9nY+seQ=="}}}"#;
    let (base, hits) = key_server(vec![(
        KID.to_string(),
        PublicKeyResponse {
            key: KEY.into(),
            algorithm: "ECDSA".into(),
            digest: "SHA1".into(),
        },
    )])
    .await;
    let handler = handler_at(&base);
    let mut headers = Headers::new();
    headers.insert("x-ebay-signature".into(), HEADER.into());
    handler.prepare(&headers).await;
    assert_eq!(handler.verify(&headers, BODY.as_bytes()), Ok(()));
    assert!(
        handler
            .verify(&headers, BODY.replace("1.0", "1.1").as_bytes())
            .is_err()
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        handler.event_id(&headers, BODY.as_bytes()).as_deref(),
        Some("49feeaeb-4982-42d9-a377-9645b8479411_33f7e043-fed8-442b-9d44-791923bd9a6d")
    );
    let hints = handler.parse(&headers, BODY.as_bytes()).unwrap();
    assert_eq!(hints[0].topic, "MARKETPLACE_ACCOUNT_DELETION");
    assert!(hints[0].skus.is_empty() && hints[0].sold.is_empty());
    assert_eq!(hints[0].occurred_at_ms, Some(1_616_186_639_462));
}

#[test]
fn the_challenge_answer_is_ebays_formula() {
    let handler = handler_at("http://127.0.0.1:9");
    let code = "a8628072-3d33-45ee-9004-bee86830a22d";
    let query = HashMap::from([("challenge_code".to_string(), code.to_string())]);
    let answer = handler.handshake(&query).unwrap().unwrap();
    let answer: Value = serde_json::from_str(&answer).unwrap();
    // Computed independently: SHA-256 over code, token, endpoint (and with Python's hashlib).
    let mut h = sha2::Sha256::new();
    h.update(code);
    h.update(DEMO_VERIFICATION_TOKEN);
    h.update(ENDPOINT);
    let expected = hex::encode(h.finalize());
    assert_eq!(
        expected,
        "2bb6a3e158e18f7fcd4e483a7be7d368a37eefcc8d5056c67ec1865e2efedd43"
    );
    assert_eq!(answer, json!({ "challengeResponse": expected }));

    assert!(matches!(
        handler.handshake(&HashMap::new()),
        Some(Err(WebhookError::Malformed(_)))
    ));
    let empty = HashMap::from([("challenge_code".to_string(), String::new())]);
    assert!(matches!(
        handler.handshake(&empty),
        Some(Err(WebhookError::Malformed(_)))
    ));
}

/// Serves eBay's validation request with `handler`'s handshake, as the daemon does.
fn handshake_router(handler: EbayWebhooks) -> Router {
    Router::new()
        .route(
            "/hook",
            get(
                |State(h): State<Arc<EbayWebhooks>>,
                 Query(q): Query<HashMap<String, String>>| async move {
                    match h.handshake(&q) {
                        Some(Ok(body)) => {
                            (StatusCode::OK, [("content-type", "application/json")], body)
                                .into_response()
                        }
                        _ => StatusCode::BAD_REQUEST.into_response(),
                    }
                },
            ),
        )
        .with_state(Arc::new(handler))
}

#[tokio::test]
async fn the_simulator_validates_an_endpoint_through_the_handshake() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let handler = EbayWebhooks::new(WebhookConfig {
        endpoint: url.clone(),
        ..config_for("http://127.0.0.1:9")
    })
    .unwrap();
    let router = handshake_router(handler);
    tokio::spawn(async move {
        axum::serve(listener, router).await.ok();
    });
    let sim = Simulator::new(SimOptions::default());
    assert_eq!(
        sim.validate_endpoint(&url, DEMO_VERIFICATION_TOKEN).await,
        Ok(())
    );
    let e = sim
        .validate_endpoint(&url, "another-verification-token-0123456789")
        .await
        .unwrap_err();
    assert!(e.contains("does not match"), "{e}");

    // A handler configured for another endpoint URL answers with the wrong hash.
    let elsewhere = format!(
        "{}/hook",
        serve(handshake_router(handler_at("http://127.0.0.1:9"))).await
    );
    let e = sim
        .validate_endpoint(&elsewhere, DEMO_VERIFICATION_TOKEN)
        .await
        .unwrap_err();
    assert!(e.contains("does not match"), "{e}");
}

fn config_for(base: &str) -> WebhookConfig {
    WebhookConfig {
        base_url: base.to_string(),
        application_token: Arc::new(TokenSource::fixed(SecretString::from(
            "app-token".to_string(),
        ))),
        verification_token: SecretString::from(DEMO_VERIFICATION_TOKEN.to_string()),
        endpoint: ENDPOINT.to_string(),
        order_topics: vec![ORDER_CONFIRMATION.to_string()],
        key_ttl: Duration::from_secs(3600),
        request_timeout: Duration::from_secs(5),
    }
}

/// A handler over a key server with one key, and a signer for it.
async fn signing_setup() -> (EbayWebhooks, impl Fn(&[u8]) -> Headers) {
    let key = SigningKey::from_slice(&[11u8; 32]).unwrap();
    let (base, _) = key_server(vec![(
        "test-key".to_string(),
        PublicKeyResponse {
            key: webhook::public_key_pem(key.verifying_key()),
            algorithm: "ECDSA".into(),
            digest: "SHA256".into(),
        },
    )])
    .await;
    let sign = move |body: &[u8]| {
        let mut h = Headers::new();
        h.insert(
            "x-ebay-signature".into(),
            SignatureHeader {
                alg: "ecdsa".into(),
                kid: "test-key".into(),
                signature: webhook::sign(&key, SignatureDigest::Sha256, body),
                digest: Some("SHA256".into()),
            }
            .encode(),
        );
        h
    };
    (handler_at(&base), sign)
}

fn envelope(topic: &str, data: Value) -> String {
    json!({
        "metadata": {"topic": topic, "schemaVersion": "1.0", "deprecated": false},
        "notification": {"notificationId": "n-1", "eventDate": "2026-11-23T10:00:00.000Z",
                         "publishDate": "2026-11-23T10:00:00.100Z", "publishAttemptCount": 1,
                         "data": data}
    })
    .to_string()
}

#[tokio::test]
async fn malformed_bodies_are_rejected_after_a_valid_signature() {
    let (handler, sign) = signing_setup().await;
    let cases = [
        ("{\"metadata\":", "not JSON"),
        ("[]", "not a JSON object"),
        (
            r#"{"notification":{"notificationId":"1"}}"#,
            "metadata.topic",
        ),
        (
            r#"{"metadata":{"topic":"ORDER_CONFIRMATION"}}"#,
            "no notification",
        ),
        (
            r#"{"metadata":{"topic":"ORDER_CONFIRMATION"},"notification":{"data":{}}}"#,
            "notificationId",
        ),
        (
            &envelope(ORDER_CONFIRMATION, json!([1])),
            "data is not an object",
        ),
        (
            &envelope(ORDER_CONFIRMATION, json!({"lineItems": {}})),
            "lineItems is not an array",
        ),
        (
            &envelope(ORDER_CONFIRMATION, json!({"lineItems": [{"quantity": 1}]})),
            "names no sku",
        ),
        (
            &envelope(
                ORDER_CONFIRMATION,
                json!({"lineItems": [{"sku": "A", "quantity": 0}]}),
            ),
            "quantity",
        ),
        (
            &envelope(
                ORDER_CONFIRMATION,
                json!({"lineItems": [{"sku": "A", "quantity": "x"}]}),
            ),
            "quantity",
        ),
        (
            &envelope(ORDER_CONFIRMATION, json!({"lineItems": ["A"]})),
            "not an object",
        ),
    ];
    for (body, why) in cases {
        let headers = sign(body.as_bytes());
        handler.prepare(&headers).await;
        assert_eq!(handler.verify(&headers, body.as_bytes()), Ok(()), "{body}");
        let e = handler.parse(&headers, body.as_bytes()).unwrap_err();
        assert!(
            matches!(e, WebhookError::Malformed(ref m) if m.contains(why)),
            "{body}: {e}"
        );
    }
}

#[tokio::test]
async fn order_payloads_are_read_tolerantly() {
    let (handler, sign) = signing_setup().await;
    let parse = |body: &str| {
        handler
            .parse(&sign(body.as_bytes()), body.as_bytes())
            .unwrap()
    };

    // One line in data itself, by listing id only, quantity as a string.
    let hints = parse(&envelope(
        ORDER_CONFIRMATION,
        json!({"orderId": "12-34567-89012", "legacyItemId": "110000000042", "quantity": "2"}),
    ));
    assert_eq!(
        hints[0].sold,
        vec![SoldLine {
            sku: None,
            reference: Some((REF_LISTING_ID.into(), "110000000042".into())),
            quantity: 2
        }]
    );
    assert_eq!(hints[0].occurred_at_ms, Some(1_795_428_000_000));

    // A line without quantity: re-read, nothing reserved. An order naming only its id: bare.
    let hints = parse(&envelope(
        ORDER_CONFIRMATION,
        json!({"lineItems": [{"sku": "SKU-9", "itemId": 7}]}),
    ));
    assert_eq!(hints[0].skus, vec!["SKU-9".to_string()]);
    assert!(hints[0].sold.is_empty());
    let hints = parse(&envelope(ORDER_CONFIRMATION, json!({"orderId": "1"})));
    assert!(hints[0].skus.is_empty() && hints[0].refs.is_empty() && hints[0].sold.is_empty());

    // Another topic: names what it carries, never reserves.
    let hints = parse(&envelope(
        "ITEM_PRICE_REVISION",
        json!({"itemId": "110000000042", "sku": "SKU-1", "quantity": 5}),
    ));
    assert_eq!(hints[0].topic, "ITEM_PRICE_REVISION");
    assert_eq!(hints[0].skus, vec!["SKU-1".to_string()]);
    assert!(hints[0].sold.is_empty());
}

#[tokio::test]
async fn duplicated_deliveries_keep_their_notification_id_and_orders_can_come_over_http() {
    let (sim, server, connector) = start_sim(SimOptions::default()).await;
    let (url, inbox) = receiver().await;
    sim.subscribe(url, vec![ORDER_CONFIRMATION.to_string()]);
    sim.set_webhook_faults(WebhookFaults {
        duplicate_next: 1,
        ..WebhookFaults::default()
    });
    let response = reqwest::Client::new()
        .post(format!("{}/__sim/orders", server.base_url()))
        .json(&json!({"sku": "SKU-B", "quantity": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(sim.wait_webhooks_idle(Duration::from_secs(10)).await);
    let got = inbox.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    let handler = connector.webhooks().unwrap();
    let ids: Vec<_> = got
        .iter()
        .map(|d| handler.event_id(&d.headers, &d.body).unwrap())
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(stock(&sim, "SKU-B"), 0);
    assert_eq!(sim.webhook_stats().duplicated, 1);
}

#[tokio::test]
async fn sha256_signing_is_verified_too() {
    let options = SimOptions {
        notification_digest: SignatureDigest::Sha256,
        notification_key_seed: Some([1u8; 32]),
        ..SimOptions::default()
    };
    let (sim, _server, connector) = start_sim(options).await;
    assert_eq!(sim.public_key().digest, "SHA256");
    let (url, inbox) = receiver().await;
    sim.subscribe(url, Vec::new());
    let d = sell_and_receive(&sim, &inbox, "SKU-A", 1).await;
    let handler = connector.webhooks().unwrap();
    handler.prepare(&d.headers).await;
    assert_eq!(handler.verify(&d.headers, &d.body), Ok(()));
}

#[test]
fn webhook_settings_are_checked_at_connect() {
    let options = SimOptions::default();
    let base = "http://127.0.0.1:9";
    let ok = options.webhook_settings(base, ENDPOINT, DEMO_VERIFICATION_TOKEN);
    assert!(connect(ok.clone()).unwrap().webhooks().is_some());
    assert!(
        connect(options.settings(base))
            .unwrap()
            .webhooks()
            .is_none()
    );

    let mut half = ok.clone();
    half.webhook_verification_token = None;
    let mut short = ok.clone();
    short.webhook_verification_token = Some("literal:too-short".parse().unwrap());
    let mut relative = ok.clone();
    relative.webhook_endpoint = Some("/webhooks/ebay".into());
    let mut no_topic = ok.clone();
    no_topic.webhook_order_topics = vec![" ".into()];
    for (s, why) in [
        (half, "go together"),
        (short, "32 to 80"),
        (relative, "absolute"),
        (no_topic, "empty topic"),
    ] {
        let e = connect(s).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(e.to_string().contains(why), "{e}");
    }
}

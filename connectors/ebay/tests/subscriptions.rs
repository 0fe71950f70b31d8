//! The connector creates its own Notification API destination and subscriptions against the
//! simulator, with an axum server on loopback standing in for the daemon's webhook endpoint
//! (answering eBay's challenge with the connector's own handler, taking deliveries).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use omnisync_ebay::notification::{ENABLED, ERR_CHALLENGE_FAILED};
use omnisync_ebay::sim::{
    self, DEMO_VERIFICATION_TOKEN, MARKETPLACE_ACCOUNT_DELETION, SimOptions, Simulator,
};
use omnisync_ebay::webhook::{self, ORDER_CONFIRMATION};
use omnisync_ebay::{EbayConnector, Settings, connect};
use omnisync_sdk::sim::delivery::WebhookAdmin;
use omnisync_sdk::sim::{SimControl, SimRecord, SimServer};
use omnisync_sdk::webhook::{Headers, SoldLine, headers_from};
use omnisync_sdk::{
    Capabilities, Connector, ConnectorError, Correction, Currency, ErrorKind, Money, Offer, Page,
    PushOutcome, Record, StockLevel,
};
use serde_json::{Value, json};

type Inbox = Arc<Mutex<Vec<(Headers, Bytes)>>>;

/// How the stand-in endpoint answers eBay's challenge.
#[derive(Clone)]
enum Answer {
    /// With the connector's own handler.
    Connector,
    /// With SHA-256 over this other verification token.
    OtherToken(String),
}

#[derive(Clone)]
struct Endpoint {
    connector: Arc<EbayConnector>,
    answer: Answer,
    url: String,
    inbox: Inbox,
}

async fn challenge(
    State(e): State<Endpoint>,
    Query(q): Query<HashMap<String, String>>,
) -> axum::response::Response {
    let body = match &e.answer {
        Answer::Connector => match e.connector.webhooks().unwrap().handshake(&q) {
            Some(Ok(body)) => body,
            _ => return StatusCode::BAD_REQUEST.into_response(),
        },
        Answer::OtherToken(token) => {
            let code = q.get("challenge_code").cloned().unwrap_or_default();
            json!({ "challengeResponse": webhook::challenge_response(&code, token, &e.url) })
                .to_string()
        }
    };
    (StatusCode::OK, [("content-type", "application/json")], body).into_response()
}

/// Verifies like the daemon (prepare, then verify on the raw body) and keeps what passed.
async fn deliver(State(e): State<Endpoint>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let handler = e.connector.webhooks().unwrap();
    let headers = headers_from(&headers);
    handler.prepare(&headers).await;
    match handler.verify(&headers, &body) {
        Ok(()) => {
            e.inbox.lock().unwrap().push((headers, body));
            StatusCode::OK
        }
        Err(_) => StatusCode::UNAUTHORIZED,
    }
}

/// Starts the stand-in endpoint and a connector whose `webhook_endpoint` is it.
async fn endpoint(
    settings: impl FnOnce(&str) -> Settings,
    answer: Answer,
) -> (Arc<EbayConnector>, String, Inbox) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/webhooks/marketplace",
        listener.local_addr().unwrap()
    );
    let connector = Arc::new(connect(settings(&url)).unwrap());
    let state = Endpoint {
        connector: connector.clone(),
        answer,
        url: url.clone(),
        inbox: Inbox::default(),
    };
    let inbox = state.inbox.clone();
    let router = Router::new()
        .route(
            "/webhooks/marketplace",
            axum::routing::get(challenge).post(deliver),
        )
        .with_state(state);
    tokio::spawn(async move {
        axum::serve(listener, router).await.ok();
    });
    (connector, url, inbox)
}

async fn start_sim() -> (Arc<Simulator>, SimServer) {
    let (sim, server) = sim::start("127.0.0.1:0".parse().unwrap(), SimOptions::default())
        .await
        .unwrap();
    sim.seed(vec![SimRecord {
        sku: "SKU-A".into(),
        title: "A".into(),
        offer: Offer::regular(Money::new(1999, Currency::EUR)),
        stock: BTreeMap::from([(StockLevel::DEFAULT_LOCATION.to_string(), 10)]),
    }]);
    (sim, server)
}

fn oauth(sim: &Simulator, server: &SimServer) -> impl FnOnce(&str) -> Settings {
    let options = sim.options().clone();
    let base = server.base_url();
    move |url| options.oauth_webhook_settings(&base, url, DEMO_VERIFICATION_TOKEN)
}

fn created(lines: &[String]) -> Vec<&String> {
    lines.iter().filter(|l| l.starts_with("created")).collect()
}

#[tokio::test]
async fn ensure_creates_destination_and_subscription_then_sales_arrive_and_a_second_call_creates_nothing()
 {
    let (sim, server) = start_sim().await;
    let (c, url, inbox) = endpoint(oauth(&sim, &server), Answer::Connector).await;

    let lines = c.ensure_webhook_subscriptions().await.unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("created destination"), "{lines:?}");
    assert!(lines[0].contains(&url), "{lines:?}");
    assert!(
        lines[1].starts_with("created subscription") && lines[1].contains(ORDER_CONFIRMATION),
        "{lines:?}"
    );
    let destinations = sim.destinations();
    assert_eq!(destinations.len(), 1);
    let d = &destinations[0];
    assert_eq!(d.status.as_deref(), Some(ENABLED));
    let config = d.delivery_config.clone().unwrap();
    assert_eq!(config.endpoint.as_deref(), Some(url.as_str()));
    assert_eq!(
        config.verification_token.as_deref(),
        Some(DEMO_VERIFICATION_TOKEN)
    );
    let subscriptions = sim.notification_subscriptions();
    assert_eq!(subscriptions.len(), 1);
    let s = &subscriptions[0];
    assert_eq!(s.topic_id.as_deref(), Some(ORDER_CONFIRMATION));
    assert_eq!(s.status.as_deref(), Some(ENABLED));
    assert_eq!(s.destination_id, d.destination_id);
    let payload = s.payload.clone().unwrap();
    assert_eq!(
        (
            payload.format.as_deref(),
            payload.schema_version.as_deref(),
            payload.delivery_protocol.as_deref()
        ),
        (Some("JSON"), Some("1.0"), Some("HTTPS"))
    );
    // Destinations took the application token, the subscription the user token.
    assert_eq!(sim.token_grants(), (1, 1));

    // A sale now reaches the endpoint, signed.
    assert!(sim.sell("SKU-A", 2));
    assert!(sim.wait_webhooks_idle(Duration::from_secs(10)).await);
    let got = inbox.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "one verified delivery");
    let hints = c.webhooks().unwrap().parse(&got[0].0, &got[0].1).unwrap();
    assert_eq!(
        hints[0].sold,
        vec![SoldLine {
            sku: Some("SKU-A".into()),
            reference: None,
            quantity: 2
        }]
    );

    // Idempotent.
    let again = c.ensure_webhook_subscriptions().await.unwrap();
    assert!(created(&again).is_empty(), "{again:?}");
    assert!(again[0].starts_with("kept destination"), "{again:?}");
    assert!(again[1].starts_with("kept subscription"), "{again:?}");
    assert_eq!(sim.destinations().len(), 1);
    assert_eq!(sim.notification_subscriptions().len(), 1);
    assert_eq!(sim.token_grants(), (1, 1), "the tokens were reused");
}

#[tokio::test]
async fn an_endpoint_answering_a_wrong_challenge_is_refused_with_the_reason() {
    let (sim, server) = start_sim().await;
    let (c, _url, _) = endpoint(
        oauth(&sim, &server),
        Answer::OtherToken("another-verification-token-0123456789".into()),
    )
    .await;
    let e = c.ensure_webhook_subscriptions().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    assert_eq!(e.status, Some(409));
    let text = e.to_string();
    assert!(
        text.contains(&format!("errorId {ERR_CHALLENGE_FAILED}")),
        "{text}"
    );
    assert!(
        text.contains("Challenge verification failed for requested endpoint"),
        "{text}"
    );
    assert!(text.contains("does not match"), "{text}");
    assert!(text.contains("settings.webhook_endpoint"), "{text}");
    assert!(sim.destinations().is_empty());
    assert!(sim.notification_subscriptions().is_empty());

    // Nobody listening at all.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/webhooks/marketplace", l.local_addr().unwrap())
    };
    let c = connect(sim.options().oauth_webhook_settings(
        &server.base_url(),
        &closed,
        DEMO_VERIFICATION_TOKEN,
    ))
    .unwrap();
    let e = c.ensure_webhook_subscriptions().await.unwrap_err();
    assert!(
        e.to_string().contains("did not answer") && e.to_string().contains("195020"),
        "{e}"
    );
    assert!(sim.destinations().is_empty());
}

#[tokio::test]
async fn a_disabled_subscription_and_destination_are_enabled_again() {
    let (sim, server) = start_sim().await;
    let (c, url, inbox) = endpoint(oauth(&sim, &server), Answer::Connector).await;
    c.ensure_webhook_subscriptions().await.unwrap();
    let destination = sim.destinations()[0].destination_id.clone().unwrap();
    let subscription = sim.notification_subscriptions()[0]
        .subscription_id
        .clone()
        .unwrap();

    // Someone disables both, with the simulator's static tokens.
    let http = reqwest::Client::new();
    let base = server.base_url();
    let options = sim.options().clone();
    let r = http
        .post(format!(
            "{base}/commerce/notification/v1/subscription/{subscription}/disable"
        ))
        .bearer_auth(&options.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .put(format!(
            "{base}/commerce/notification/v1/destination/{destination}"
        ))
        .bearer_auth(&options.application_token)
        .json(&json!({"name": "omnisync", "status": "DISABLED",
                      "deliveryConfig": {"endpoint": url, "verificationToken": DEMO_VERIFICATION_TOKEN}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(sim.sell("SKU-A", 1));
    assert!(sim.wait_webhooks_idle(Duration::from_secs(10)).await);
    assert!(
        inbox.lock().unwrap().is_empty(),
        "nothing is sent meanwhile"
    );

    let lines = c.ensure_webhook_subscriptions().await.unwrap();
    assert!(
        lines[0].starts_with(&format!("updated destination {destination}"))
            && lines[0].contains("it was DISABLED"),
        "{lines:?}"
    );
    assert_eq!(
        lines[1],
        format!(
            "enabled subscription {subscription} ({ORDER_CONFIRMATION} to destination {destination})"
        )
    );
    assert!(created(&lines).is_empty());
    assert!(sim.sell("SKU-A", 1));
    assert!(sim.wait_webhooks_idle(Duration::from_secs(10)).await);
    assert_eq!(inbox.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_topic_already_sent_elsewhere_is_reported_not_moved() {
    let (sim, server) = start_sim().await;
    let (first, _, _) = endpoint(oauth(&sim, &server), Answer::Connector).await;
    first.ensure_webhook_subscriptions().await.unwrap();
    let (second, url, _) = endpoint(oauth(&sim, &server), Answer::Connector).await;
    let e = second.ensure_webhook_subscriptions().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(
        e.to_string().contains(&format!(
            "already sends {ORDER_CONFIRMATION} to destination"
        )),
        "{e}"
    );
    assert!(e.to_string().contains(&url), "{e}");
    // Its destination exists now; the subscription stayed where it was.
    assert_eq!(sim.destinations().len(), 2);
    let subs = sim.notification_subscriptions();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].destination_id, sim.destinations()[0].destination_id);
}

#[tokio::test]
async fn static_tokens_work_and_an_application_token_is_required() {
    let (sim, server) = start_sim().await;
    let options = sim.options().clone();
    let base = server.base_url();
    // Static user token plus the static application token: works.
    let (c, _, _) = endpoint(
        |url| options.webhook_settings(&base, url, DEMO_VERIFICATION_TOKEN),
        Answer::Connector,
    )
    .await;
    let lines = c.ensure_webhook_subscriptions().await.unwrap();
    assert_eq!(created(&lines).len(), 2, "{lines:?}");
    assert_eq!(sim.token_grants(), (0, 0));

    // Static user token alone: destinations cannot be managed.
    let (c, _, _) = endpoint(
        |url| Settings {
            webhook_application_token: None,
            ..options.webhook_settings(&base, url, DEMO_VERIFICATION_TOKEN)
        },
        Answer::Connector,
    )
    .await;
    let e = c.ensure_webhook_subscriptions().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(
        e.to_string().contains("settings.client_id") && e.to_string().contains("application"),
        "{e}"
    );

    // No webhook settings at all.
    let c = connect(options.settings(&base)).unwrap();
    let e = c.ensure_webhook_subscriptions().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.to_string().contains("settings.webhook_endpoint"), "{e}");
}

#[tokio::test]
async fn the_simulator_enforces_which_token_each_call_takes() {
    let (sim, server) = start_sim().await;
    let (c, _, _) = endpoint(oauth(&sim, &server), Answer::Connector).await;
    c.ensure_webhook_subscriptions().await.unwrap();
    let destination = sim.destinations()[0].destination_id.clone().unwrap();
    let o = sim.options().clone();
    let base = server.base_url();
    let http = reqwest::Client::new();
    let error_id = |v: &Value| v["errors"][0]["errorId"].as_i64().unwrap_or(0);

    // Destinations: not with a user token.
    let r = http
        .get(format!("{base}/commerce/notification/v1/destination"))
        .bearer_auth(&o.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(error_id(&r.json().await.unwrap()), 1100);
    let r = http
        .get(format!(
            "{base}/commerce/notification/v1/destination?limit=5"
        ))
        .bearer_auth(&o.application_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_id(&r.json().await.unwrap()), 195004);
    let r = http
        .get(format!("{base}/commerce/notification/v1/destination"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A user-based topic is not for the application token, and the other way round.
    let subscribe = |token: String, topic: &str| {
        http.post(format!("{base}/commerce/notification/v1/subscription"))
            .bearer_auth(token)
            .json(&json!({"topicId": topic, "status": "ENABLED", "destinationId": destination,
                          "payload": {"format": "JSON", "schemaVersion": "1.0", "deliveryProtocol": "HTTPS"}}))
            .send()
    };
    let r = subscribe(o.application_token.clone(), ORDER_CONFIRMATION)
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(error_id(&r.json().await.unwrap()), 195011);
    let r = subscribe(o.access_token.clone(), MARKETPLACE_ACCOUNT_DELETION)
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = subscribe(o.access_token.clone(), "NO_SUCH_TOPIC")
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_id(&r.json().await.unwrap()), 195027);
    let r = subscribe(o.access_token.clone(), ORDER_CONFIRMATION)
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "one subscription per topic");
    assert_eq!(error_id(&r.json().await.unwrap()), 195012);
    let r = subscribe(o.application_token.clone(), MARKETPLACE_ACCOUNT_DELETION)
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("/commerce/notification/v1/subscription/")
    );

    // Each token kind lists its own subscriptions.
    let list = |token: String| {
        http.get(format!("{base}/commerce/notification/v1/subscription"))
            .bearer_auth(token)
            .send()
    };
    let user: Value = list(o.access_token.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let app: Value = list(o.application_token.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(user["subscriptions"][0]["topicId"], ORDER_CONFIRMATION);
    assert_eq!(user["total"], 1);
    assert_eq!(
        app["subscriptions"][0]["topicId"],
        MARKETPLACE_ACCOUNT_DELETION
    );
    assert_eq!(app["total"], 1);

    // A destination in use cannot be deleted.
    let r = http
        .delete(format!(
            "{base}/commerce/notification/v1/destination/{destination}"
        ))
        .bearer_auth(&o.application_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(error_id(&r.json().await.unwrap()), 195024);
}

/// A connector that keeps the trait's default.
struct Bare;

#[async_trait]
impl Connector for Bare {
    fn kind(&self) -> &'static str {
        "bare"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            writes_price: false,
            writes_stock: false,
            creates_listings: false,
            sale_price: false,
            stock_per_location: false,
            compare_and_set: false,
            max_batch: 1,
            max_read_batch: 1,
            stock_lane: false,
        }
    }
    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        Ok(())
    }
    async fn read_page(&self, _cursor: Option<String>) -> Result<Page, ConnectorError> {
        Ok(Page::default())
    }
    async fn read_skus(&self, _skus: &[String]) -> Result<Vec<Record>, ConnectorError> {
        Ok(Vec::new())
    }
    async fn push(&self, _batch: &[Correction]) -> Result<Vec<PushOutcome>, ConnectorError> {
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn connectors_without_support_say_so() {
    let e = Bare.ensure_webhook_subscriptions().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.to_string().contains("bare connector cannot"), "{e}");
}

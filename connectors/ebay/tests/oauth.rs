//! OAuth tokens minted and refreshed by the connector against the simulator's token
//! endpoint: the refresh token grant for the Sell API calls, the client credentials grant for
//! the notification key, refresh after a 401, refusals and outages, and the settings rules.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use omnisync_ebay::oauth::{APPLICATION_SCOPE, NOTIFICATION_SUBSCRIPTION_SCOPE};
use omnisync_ebay::sim::{self, DEMO_VERIFICATION_TOKEN, SimOptions, Simulator};
use omnisync_ebay::{Settings, connect};
use omnisync_sdk::sim::delivery::WebhookAdmin;
use omnisync_sdk::sim::{Fault, SimControl, SimRecord, SimServer};
use omnisync_sdk::webhook::{Headers, headers_from};
use omnisync_sdk::{
    Change, Connector, Correction, Currency, ErrorKind, Money, Offer, PushOutcome, StockLevel,
};
use serde_json::{Value, json};

const DEFAULT: &str = StockLevel::DEFAULT_LOCATION;

fn catalog() -> Vec<SimRecord> {
    (0..5)
        .map(|i| SimRecord {
            sku: format!("SKU-{i}"),
            title: format!("Item {i}"),
            offer: Offer::regular(Money::new(1000 + i, Currency::EUR)),
            stock: BTreeMap::from([(DEFAULT.to_string(), 10)]),
        })
        .collect()
}

async fn start(options: SimOptions) -> (Arc<Simulator>, SimServer, Settings) {
    let (sim, server) = sim::start("127.0.0.1:0".parse().unwrap(), options.clone())
        .await
        .unwrap();
    sim.seed(catalog());
    let settings = options.oauth_settings(&server.base_url());
    (sim, server, settings)
}

fn stock(sku: &str, quantity: i64) -> Correction {
    Correction {
        idempotency_key: format!("{sku}-{quantity}"),
        sku: sku.to_string(),
        external_id: Some(sku.to_string()),
        refs: BTreeMap::new(),
        change: Change::Stock {
            location: DEFAULT.to_string(),
            quantity,
            expected: None,
        },
    }
}

#[tokio::test]
async fn the_refresh_grant_mints_one_user_token_for_many_calls() {
    let (sim, _server, settings) = start(SimOptions::default()).await;
    let c = connect(settings).unwrap();
    assert_eq!(sim.token_grants(), (0, 0), "connect makes no call");
    c.healthcheck().await.unwrap();
    let records = c.read_skus(&["SKU-1".to_string()]).await.unwrap();
    assert_eq!(records[0].stock[0].available, 10);
    let outcomes = c.push(&[stock("SKU-1", 4)]).await.unwrap();
    assert_eq!(outcomes, vec![PushOutcome::Applied]);
    assert_eq!(sim.record("SKU-1").unwrap().stock[DEFAULT], 4);
    let (mut records, mut cursor) = (0, None);
    loop {
        let page = c.read_page(cursor).await.unwrap();
        records += page.records.len();
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(records, 5);
    assert_eq!(sim.token_grants(), (1, 0), "one user token, cached");
    assert_eq!(c.tokens_minted(), (1, 0));
    assert_eq!(sim.unauthorized_answers(), 0);
}

#[tokio::test]
async fn after_the_tokens_expire_the_next_call_gets_401_mints_again_and_succeeds() {
    let (sim, _server, settings) = start(SimOptions::default()).await;
    let c = connect(settings).unwrap();
    c.healthcheck().await.unwrap();
    sim.expire_tokens();
    // Read and write calls both survive it.
    let records = c.read_skus(&["SKU-2".to_string()]).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        sim.unauthorized_answers(),
        1,
        "the old token was refused once"
    );
    assert_eq!(sim.token_grants().0, 2, "and a new one minted");
    sim.expire_tokens();
    assert_eq!(
        c.push(&[stock("SKU-2", 7)]).await.unwrap(),
        vec![PushOutcome::Applied]
    );
    assert_eq!(sim.record("SKU-2").unwrap().stock[DEFAULT], 7);
    assert_eq!(sim.unauthorized_answers(), 2);
    assert_eq!(sim.token_grants().0, 3);
}

#[tokio::test]
async fn a_token_within_the_margin_of_its_expiry_is_replaced_before_use() {
    // Tokens live 60 s and the margin is the default 300 s: every call needs a new one,
    // and none is ever sent stale.
    let (sim, _server, settings) = start(SimOptions {
        token_ttl: Duration::from_secs(60),
        ..SimOptions::default()
    })
    .await;
    assert_eq!(settings.token_refresh_margin_secs, 300);
    let c = connect(settings.clone()).unwrap();
    for _ in 0..3 {
        c.healthcheck().await.unwrap();
    }
    assert_eq!(sim.token_grants().0, 3);
    assert_eq!(sim.unauthorized_answers(), 0);

    // With a margin shorter than the life, the token is kept.
    let c = connect(Settings {
        token_refresh_margin_secs: 10,
        ..settings
    })
    .unwrap();
    for _ in 0..3 {
        c.healthcheck().await.unwrap();
    }
    assert_eq!(sim.token_grants().0, 4);
}

#[tokio::test]
async fn a_refused_grant_is_a_clear_final_error() {
    let (sim, _server, settings) = start(SimOptions::default()).await;

    let mut wrong_secret = settings.clone();
    wrong_secret.client_secret = Some("literal:not-the-secret-4711".parse().unwrap());
    let e = connect(wrong_secret)
        .unwrap()
        .healthcheck()
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(!e.is_retryable());
    assert_eq!(e.status, Some(401));
    let text = e.to_string();
    assert!(text.contains("refresh_token grant"), "{text}");
    assert!(
        text.contains("invalid_client: client authentication failed"),
        "{text}"
    );
    assert!(text.contains("settings.client_secret"), "{text}");
    assert!(!text.contains("4711"), "{text}");

    sim.revoke_refresh_token();
    let c = connect(settings).unwrap();
    for e in [
        c.healthcheck().await.unwrap_err(),
        c.push(&[stock("SKU-1", 1)]).await.unwrap_err(),
    ] {
        assert_eq!(e.kind, ErrorKind::Auth, "{e}");
        assert!(!e.is_retryable());
        let text = e.to_string();
        assert!(
            text.contains("invalid_grant: the provided authorization refresh token is invalid"),
            "{text}"
        );
        assert!(text.contains("settings.refresh_token"), "{text}");
    }
    assert_eq!(sim.record("SKU-1").unwrap().stock[DEFAULT], 10);
}

#[tokio::test]
async fn scopes_are_asked_for_and_checked() {
    let (_sim, _server, settings) = start(SimOptions::default()).await;
    // A scope the seller did not consent to.
    let mut more = settings.clone();
    more.oauth_scopes
        .push("https://api.ebay.com/oauth/api_scope/sell.finances".into());
    let e = connect(more).unwrap().healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(e.to_string().contains("invalid_scope"), "{e}");
    assert!(e.to_string().contains("settings.oauth_scopes"), "{e}");
    // A token without sell.inventory is refused by the Inventory API.
    let mut fewer = settings;
    fewer.oauth_scopes = vec![NOTIFICATION_SUBSCRIPTION_SCOPE.into()];
    let e = connect(fewer).unwrap().healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert_eq!(e.status, Some(403));
    assert!(e.to_string().contains("errorId\":1100"), "{e}");
}

#[tokio::test]
async fn a_token_endpoint_outage_is_transient_and_the_next_call_recovers() {
    let (sim, _server, settings) = start(SimOptions::default()).await;
    let c = connect(settings).unwrap();
    // The first request of the connector is the mint.
    sim.faults().inject(
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        1,
    );
    let e = c.healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.to_string().contains("/identity/v1/oauth2/token"), "{e}");
    c.healthcheck().await.unwrap();
    assert_eq!(sim.token_grants().0, 1);
}

#[tokio::test]
async fn tokens_and_secrets_never_reach_debug_output() {
    let (sim, _server, settings) = start(SimOptions::default()).await;
    let options = sim.options().clone();
    let c = connect(options.oauth_webhook_settings(
        &settings.base_url,
        "https://sync.example.com/webhooks/ebay",
        DEMO_VERIFICATION_TOKEN,
    ))
    .unwrap();
    c.healthcheck().await.unwrap();
    let tokens = sim.live_tokens();
    assert_eq!(tokens.len(), 1);
    let debug = format!("{c:?} {:?} {settings:?}", c.settings());
    for secret in [
        tokens[0].as_str(),
        &options.client_secret,
        &options.refresh_token,
        DEMO_VERIFICATION_TOKEN,
    ] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert!(
        debug.contains("refresh_token") || debug.contains("RefreshToken"),
        "{debug}"
    );
}

type Inbox = Arc<Mutex<Vec<(Headers, Bytes)>>>;

#[tokio::test]
async fn the_public_key_is_fetched_with_a_minted_application_token() {
    let (sim, server, _) = start(SimOptions::default()).await;
    let settings = sim.options().oauth_webhook_settings(
        &server.base_url(),
        "https://sync.example.com/webhooks/ebay",
        DEMO_VERIFICATION_TOKEN,
    );
    assert!(settings.webhook_application_token.is_none());
    let c = connect(settings).unwrap();

    let inbox: Inbox = Arc::default();
    let router = Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes| async move {
                    inbox.lock().unwrap().push((headers_from(&headers), body));
                    StatusCode::OK
                },
            ),
        )
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, router).await.ok();
    });
    sim.subscribe(url, Vec::new());
    assert!(sim.sell("SKU-3", 1));
    assert!(sim.wait_webhooks_idle(Duration::from_secs(10)).await);
    let (headers, body) = inbox.lock().unwrap()[0].clone();

    let handler = c.webhooks().unwrap();
    handler.prepare(&headers).await;
    assert_eq!(handler.verify(&headers, &body), Ok(()));
    assert_eq!(sim.public_key_fetches(), 1);
    assert_eq!(
        sim.token_grants(),
        (0, 1),
        "an application token, no user token"
    );
    assert_eq!(c.tokens_minted(), (0, 1));
}

#[tokio::test]
async fn the_simulators_token_endpoint_answers_like_ebay() {
    let (_sim, server, _) = start(SimOptions::default()).await;
    let o = SimOptions::default();
    let http = reqwest::Client::new();
    let url = format!("{}/identity/v1/oauth2/token", server.base_url());
    let post = |body: String, user: &str, pass: &str| {
        http.post(&url)
            .basic_auth(user, Some(pass))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let scope = urlencoding::encode(APPLICATION_SCOPE).into_owned();
    let r = post(
        format!("grant_type=client_credentials&scope={scope}"),
        &o.client_id,
        &o.client_secret,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "Application Access Token");
    assert_eq!(v["expires_in"], 7200);
    assert!(v["access_token"].as_str().is_some_and(|t| !t.is_empty()));

    let r = post(
        format!(
            "grant_type=refresh_token&refresh_token={}",
            urlencoding::encode(&o.refresh_token)
        ),
        &o.client_id,
        &o.client_secret,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "User Access Token");

    for (body, user, pass, status, error) in [
        (
            format!("grant_type=client_credentials&scope={scope}"),
            o.client_id.as_str(),
            "wrong",
            401,
            "invalid_client",
        ),
        (
            "grant_type=refresh_token&refresh_token=nope".to_string(),
            &o.client_id,
            &o.client_secret,
            400,
            "invalid_grant",
        ),
        (
            "grant_type=password".to_string(),
            &o.client_id,
            &o.client_secret,
            400,
            "unsupported_grant_type",
        ),
        (
            "grant_type=client_credentials&scope=x".to_string(),
            &o.client_id,
            &o.client_secret,
            400,
            "invalid_scope",
        ),
    ] {
        let r = post(body.clone(), user, pass).await.unwrap();
        assert_eq!(r.status(), status, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], error, "{body}");
        assert!(v["error_description"].as_str().is_some(), "{body}");
    }
    // An application token is not a user token.
    let app: Value = post(
        format!("grant_type=client_credentials&scope={scope}"),
        &o.client_id,
        &o.client_secret,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let r = http
        .get(format!(
            "{}/sell/inventory/v1/inventory_item",
            server.base_url()
        ))
        .bearer_auth(app["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["errors"][0]["errorId"],
        json!(1001)
    );
}

#[test]
fn credentials_are_checked_at_connect_naming_the_keys() {
    let base = SimOptions::default().oauth_settings("http://127.0.0.1:9");
    assert!(connect(base.clone()).is_ok());
    assert!(connect(SimOptions::default().settings("http://127.0.0.1:9")).is_ok());

    let none = Settings {
        refresh_token: None,
        ..base.clone()
    };
    let both = Settings {
        access_token: Some("literal:t".parse().unwrap()),
        ..base.clone()
    };
    let no_secret = Settings {
        client_secret: None,
        ..base.clone()
    };
    let no_client = Settings {
        client_id: None,
        client_secret: None,
        ..base.clone()
    };
    let empty_id = Settings {
        client_id: Some(" ".into()),
        ..base.clone()
    };
    let two_scopes_in_one = Settings {
        oauth_scopes: vec!["a b".into()],
        ..base.clone()
    };
    let missing_env = Settings {
        refresh_token: Some("env:OMNISYNC_EBAY_TEST_SURELY_UNSET".parse().unwrap()),
        ..base.clone()
    };
    for (s, words) in [
        (
            none,
            &[
                "settings.access_token",
                "settings.refresh_token",
                "settings.client_id",
            ][..],
        ),
        (both, &["settings.access_token", "not both"][..]),
        (no_secret, &["settings.client_secret", "go together"][..]),
        (
            no_client,
            &["settings.refresh_token needs settings.client_id"][..],
        ),
        (empty_id, &["settings.client_id is empty"][..]),
        (two_scopes_in_one, &["settings.oauth_scopes"][..]),
        (
            missing_env,
            &["settings.refresh_token", "OMNISYNC_EBAY_TEST_SURELY_UNSET"][..],
        ),
    ] {
        let e = connect(s).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config, "{e}");
        for w in words {
            assert!(e.to_string().contains(w), "{w:?} not in {e}");
        }
    }
}

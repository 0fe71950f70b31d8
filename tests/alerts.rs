//! Alerts end to end: rules over a seeded store, incidents opened and resolved, and real
//! deliveries to receivers on loopback — an HTTP server (axum) for the JSON webhook and the
//! Slack-compatible notifier, and a real SMTP server (Python's aiosmtpd) for e-mail when
//! `OMNISYNC_TEST_AIOSMTPD_PYTHON` names a Python that has it (`scripts/test-services.sh
//! alerts` sets that up).

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use omnisync::alerts::Alerter;
use omnisync::alerts::notify::Event;
use omnisync::config::Config;
use omnisync::inbox::WebhookStats;
use omnisync::planner::TargetRow;
use omnisync::store::Store;
use omnisync_sdk::retry::RetryPolicy;
use serde_json::Value;

const MIN: i64 = 60_000;
const T0: i64 = 1_800_000_000_000;

const BASE: &str = r#"
[daemon]
database = "sqlite::memory:"

[canonical]
currency = "EUR"

[connectors.erp]
kind = "tryton"
price = "source"
stock = "source"
locations = { wh = "11" }
[connectors.erp.settings]
base_url = "http://127.0.0.1:9"
database = "shop"
login = "admin"
password = "literal:admin"
company = 1
locations = [11]
currency = "EUR"

[connectors.market]
kind = "ebay"
price = "target"
stock = "target"
currency = "EUR"
stock_from = ["wh"]
[connectors.market.settings]
base_url = "http://127.0.0.1:9"
access_token = "literal:token"
"#;

fn load(dir: &Path, alerts: &str) -> Result<Config, omnisync::config::ConfigError> {
    let file = dir.join("omnisync.toml");
    std::fs::write(&file, format!("{BASE}\n{alerts}")).unwrap();
    Config::load(&file)
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_retries: 1,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(1),
    }
}

/// What the loopback HTTP receiver got: (path, JSON body).
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Value)>>>);

impl Received {
    fn all(&self) -> Vec<(String, Value)> {
        self.0.lock().unwrap().clone()
    }
    fn on(&self, path: &str) -> Vec<Value> {
        self.all()
            .into_iter()
            .filter(|(p, _)| p == path)
            .map(|(_, v)| v)
            .collect()
    }
}

/// An HTTP receiver on 127.0.0.1:0: `/hook` and `/slack` answer 200, `/fail` answers 500.
async fn receiver() -> (String, Received) {
    let got = Received::default();
    let record = |path: &'static str, status: StatusCode| {
        move |State(r): State<Received>, Json(v): Json<Value>| async move {
            r.0.lock().unwrap().push((path.to_string(), v));
            status
        }
    };
    let app = Router::new()
        .route("/hook", post(record("hook", StatusCode::OK)))
        .route("/slack", post(record("slack", StatusCode::OK)))
        .route(
            "/fail",
            post(record("fail", StatusCode::INTERNAL_SERVER_ERROR)),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), got)
}

/// The database of a test: an SQLite file in `dir`, or, when
/// `OMNISYNC_TEST_ALERTS_POSTGRES_URL` names a PostgreSQL server (an admin connection, e.g.
/// `postgres://postgres@127.0.0.1:5432/postgres`), a database of its own named after the
/// test (`scripts/test-services.sh postgres` sets that). `fresh` starts it empty.
async fn store_for(dir: &Path, test: &str, fresh: bool) -> Store {
    store_with(dir, test, fresh, "").await
}

/// [`store_for`], creating the PostgreSQL database with `options` (e.g. a collation).
async fn store_with(dir: &Path, test: &str, fresh: bool, options: &str) -> Store {
    let Ok(admin) = std::env::var("OMNISYNC_TEST_ALERTS_POSTGRES_URL") else {
        return Store::open(&format!("sqlite://{}", dir.join("omnisync.db").display()))
            .await
            .unwrap();
    };
    let name = format!("omnisync_alerts_{test}");
    if fresh {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&admin).await.unwrap();
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name} {options}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    }
    let (base, _) = admin.rsplit_once('/').expect("a URL ending in /DATABASE");
    Store::open(&format!("{base}/{name}")).await.unwrap()
}

async fn exec(store: &Store, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(store.pool())
        .await
        .unwrap();
}

async fn drift(store: &Store, field: &str, sku: &str, desired: &str, observed: &str, since: i64) {
    exec(
        store,
        &format!(
            "INSERT INTO target_state (channel, sku, field, location, desired, observed, in_sync, cause, drift_since, checked_at) \
             VALUES ('market', '{sku}', '{field}', '', '{desired}', '{observed}', 0, 'channel_edit', {since}, {since}) \
             ON CONFLICT (channel, sku, field, location) DO UPDATE SET in_sync = 0, drift_since = {since}, \
             desired = '{desired}', observed = '{observed}'"
        ),
    )
    .await;
}

async fn clear_drift(store: &Store) {
    exec(
        store,
        "UPDATE target_state SET in_sync = 1, drift_since = NULL, observed = desired",
    )
    .await;
}

async fn dead_letter(store: &Store, sku: &str, at: i64) {
    exec(
        store,
        &format!(
            "INSERT INTO dead_letters (channel, sku, field, location, value, change, reason, attempts, created_at) \
             VALUES ('market', '{sku}', 'offer', '', '1', '{{}}', 'refused', 5, {at})"
        ),
    )
    .await;
}

async fn held(store: &Store, sku: &str, at: i64) {
    exec(
        store,
        &format!(
            "INSERT INTO outbox (channel, sku, field, location, value, change, refs, idempotency_key, status, hold_reason, \
             attempts, next_attempt_at, created_at, updated_at) \
             VALUES ('market', '{sku}', 'offer', '', '0', '{{}}', '{{}}', 'k-{sku}', 'held', 'price to zero', 0, {at}, {at}, {at})"
        ),
    )
    .await;
}

async fn run(store: &Store, started: i64, market_error: Option<&str>) {
    let report = serde_json::json!({
        "run_id": 0, "scope": "full", "status": "ok",
        "channels": [
            {"id": "erp", "kind": "tryton", "role": "source"},
            {"id": "market", "kind": "ebay", "role": "target/target", "error": market_error},
        ]
    });
    sqlx::query(
        "INSERT INTO runs (scope, dry_run, started_at, finished_at, status, report) VALUES ('full', 0, $1, $2, 'ok', $3)",
    )
    .bind(started)
    .bind(started + 1000)
    .bind(report.to_string())
    .execute(store.pool())
    .await
    .unwrap();
}

fn events(got: &[Value]) -> Vec<(String, String)> {
    got.iter()
        .map(|v| {
            (
                v["event"].as_str().unwrap_or("?").to_string(),
                v["incident"]["key"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn open_once_quiet_within_cooldown_resolve_once_and_a_restart_sends_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let (base, got) = receiver().await;
    let cfg = load(
        dir.path(),
        &format!(
            r#"
[alerts]
cooldown_secs = 600
[alerts.rules.stale-price]
kind = "drift_age"
field = "price"
older_than_minutes = 15
channels = ["market"]
notify = ["hook", "chat"]
[alerts.notifiers.hook]
kind = "webhook"
url = "literal:{base}/hook"
[alerts.notifiers.chat]
kind = "slack"
url = "literal:{base}/slack"
"#
        ),
    )
    .unwrap();
    let db = store_for(dir.path(), "cooldown", true).await;
    for i in 0..7 {
        drift(
            &db,
            "offer",
            &format!("SKU-{i}"),
            "10",
            "12",
            T0 - (20 + i) * MIN,
        )
        .await;
    }
    // A young difference and a stock difference do not count for this rule.
    drift(&db, "offer", "YOUNG", "10", "12", T0 - MIN).await;
    drift(&db, "stock", "STOCK", "1", "2", T0 - 60 * MIN).await;

    let mut alerter = Alerter::new(&cfg.alerts, db.clone(), None).with_retry(fast());
    let o = alerter.evaluate(T0).await.unwrap();
    assert_eq!(o.opened, vec!["stale-price/market/offer"]);
    let hook = got.on("hook");
    assert_eq!(
        events(&hook),
        vec![("open".into(), "stale-price/market/offer".into())]
    );
    let inc = &hook[0]["incident"];
    assert_eq!(inc["count"], 7);
    assert_eq!(inc["channel"], "market");
    assert_eq!(inc["kind"], "drift_age");
    assert_eq!(
        inc["examples"],
        serde_json::json!(["SKU-6", "SKU-5", "SKU-4", "SKU-3", "SKU-2"])
    );
    assert!(
        hook[0]["title"].as_str().unwrap().contains("OPEN"),
        "{hook:?}"
    );
    let slack = got.on("slack");
    assert_eq!(slack.len(), 1);
    let text = slack[0]["text"].as_str().unwrap();
    assert!(text.contains("OPEN") && text.contains("market"), "{text}");
    assert!(slack[0]["blocks"].is_array());

    // Still open a minute later: nothing repeated.
    let o = alerter.evaluate(T0 + MIN).await.unwrap();
    assert!(o.sent.is_empty() && o.opened.is_empty(), "{o:?}");
    assert_eq!(got.all().len(), 2);

    // Restart: a new evaluator over the same database sends nothing for the open incident.
    drop(alerter);
    drop(db);
    let db = store_for(dir.path(), "cooldown", false).await;
    let mut alerter = Alerter::new(&cfg.alerts, db.clone(), None).with_retry(fast());
    let o = alerter.evaluate(T0 + 2 * MIN).await.unwrap();
    assert!(o.sent.is_empty() && o.opened.is_empty(), "{o:?}");
    assert_eq!(o.firing, vec!["stale-price/market/offer"]);
    assert_eq!(got.all().len(), 2);

    // Resolved: one message each.
    clear_drift(&db).await;
    let o = alerter.evaluate(T0 + 3 * MIN).await.unwrap();
    assert_eq!(o.resolved, vec!["stale-price/market/offer"]);
    assert_eq!(
        events(&got.on("hook")),
        vec![
            ("open".into(), "stale-price/market/offer".into()),
            ("resolved".into(), "stale-price/market/offer".into())
        ]
    );
    assert_eq!(got.on("slack").len(), 2);
    assert!(
        got.on("slack")[1]["text"]
            .as_str()
            .unwrap()
            .contains("RESOLVED")
    );
    let o = alerter.evaluate(T0 + 4 * MIN).await.unwrap();
    assert!(o.sent.is_empty(), "{o:?}");

    // Flapping within the cooldown (600 s from the opening sent at T0): quiet.
    drift(&db, "offer", "SKU-1", "10", "12", T0 - 30 * MIN).await;
    let o = alerter.evaluate(T0 + 5 * MIN).await.unwrap();
    assert_eq!(o.opened, vec!["stale-price/market/offer"]);
    assert!(o.sent.is_empty(), "{o:?}");
    clear_drift(&db).await;
    let o = alerter.evaluate(T0 + 6 * MIN).await.unwrap();
    assert_eq!(o.resolved.len(), 1);
    assert!(o.sent.is_empty(), "{o:?}");
    assert_eq!(got.all().len(), 4);

    // Open again after the cooldown: announced again.
    drift(&db, "offer", "SKU-1", "10", "12", T0 - 30 * MIN).await;
    let o = alerter.evaluate(T0 + 11 * MIN).await.unwrap();
    assert_eq!(o.sent.len(), 2, "{o:?}");
    assert_eq!(got.all().len(), 6);
    assert_eq!(got.on("hook")[2]["event"], "open");
    assert_eq!(got.on("hook")[2]["incident"]["count"], 1);
}

#[tokio::test]
async fn a_failing_notifier_does_not_stop_the_others_and_is_tried_again() {
    let dir = tempfile::tempdir().unwrap();
    let (base, got) = receiver().await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = load(
        dir.path(),
        &format!(
            r#"
[alerts.rules.dead]
kind = "dead_letters"
notify = ["erroring", "nobody-home", "no-secret", "good"]
[alerts.notifiers.erroring]
kind = "webhook"
url = "literal:{base}/fail"
[alerts.notifiers.nobody-home]
kind = "slack"
url = "literal:http://{closed}/hook"
[alerts.notifiers.no-secret]
kind = "webhook"
url = "env:OMNISYNC_TEST_SURELY_UNSET_ALERT_URL"
[alerts.notifiers.good]
kind = "webhook"
url = "literal:{base}/hook"
"#
        ),
    )
    .unwrap();
    let db = store_for(dir.path(), "failing", true).await;
    dead_letter(&db, "A", T0).await;
    dead_letter(&db, "B", T0).await;
    let mut alerter = Alerter::new(&cfg.alerts, db.clone(), None).with_retry(fast());
    let o = alerter.evaluate(T0).await.unwrap();
    let sent: Vec<&str> = o.sent.iter().map(|(_, n, _)| n.as_str()).collect();
    let mut failed: Vec<&str> = o.failed.iter().map(|(_, n, _)| n.as_str()).collect();
    failed.sort();
    assert_eq!(sent, vec!["good"]);
    assert_eq!(failed, vec!["erroring", "no-secret", "nobody-home"]);
    assert_eq!(got.on("hook").len(), 1);
    assert_eq!(got.on("hook")[0]["incident"]["count"], 2);
    // The 500 was retried (1 retry in the fast policy).
    assert_eq!(got.on("fail").len(), 2);

    // Next evaluation: the failed ones are tried again, the good one is not repeated.
    let o = alerter.evaluate(T0 + MIN).await.unwrap();
    assert!(o.sent.is_empty(), "{o:?}");
    assert_eq!(o.failed.len(), 3);
    assert_eq!(got.on("hook").len(), 1);
    assert_eq!(got.on("fail").len(), 4);
}

#[tokio::test]
async fn each_rule_kind_fires_on_a_seeded_store_and_resolves_when_it_clears() {
    let dir = tempfile::tempdir().unwrap();
    let (base, got) = receiver().await;
    let cfg = load(
        dir.path(),
        &format!(
            r#"
[alerts]
evaluate_every_secs = 5
[alerts.rules.age]
kind = "drift_age"
older_than_minutes = 10
notify = ["hook"]
[alerts.rules.oversell]
kind = "oversell_risk"
channels = ["market"]
notify = ["hook"]
[alerts.rules.down]
kind = "connector_failing"
for_minutes = 10
notify = ["hook"]
[alerts.rules.dead]
kind = "dead_letters"
notify = ["hook"]
[alerts.rules.approval]
kind = "held"
at_least = 2
notify = ["hook"]
[alerts.rules.signatures]
kind = "webhook_signature_failures"
above_per_minute = 3
notify = ["hook"]
[alerts.notifiers.hook]
kind = "webhook"
url = "literal:{base}/hook"
"#
        ),
    )
    .unwrap();
    let db = store_for(dir.path(), "kinds", true).await;
    // drift_age: a price difference 30 minutes old.
    drift(&db, "offer", "P1", "10", "12", T0 - 30 * MIN).await;
    // oversell_risk: the channel shows 5 where 2 are available (and one shows less: fine).
    drift(&db, "stock", "S1", "2", "5", T0 - 20 * MIN).await;
    drift(&db, "stock", "S2", "5", "2", T0 - 20 * MIN).await;
    // connector_failing: market failed in runs 15 and 5 minutes ago.
    run(&db, T0 - 40 * MIN, None).await;
    run(
        &db,
        T0 - 15 * MIN,
        Some("GET /sell/inventory/v1/inventory_item: HTTP 503"),
    )
    .await;
    run(
        &db,
        T0 - 5 * MIN,
        Some("GET /sell/inventory/v1/inventory_item: HTTP 503"),
    )
    .await;
    // dead_letters and held (two needed).
    dead_letter(&db, "D1", T0 - MIN).await;
    held(&db, "H1", T0 - MIN).await;
    held(&db, "H2", T0 - MIN).await;
    // webhook_signature_failures: counted between evaluations.
    let stats = Arc::new(WebhookStats::default());

    let mut alerter = Alerter::new(&cfg.alerts, db.clone(), Some(stats.clone())).with_retry(fast());
    let o = alerter.evaluate(T0).await.unwrap();
    let mut want = vec![
        "age/market/offer",
        "age/market/stock",
        "approval/market",
        "dead/market",
        "down/market",
        "oversell/market",
    ];
    assert_eq!(o.opened, want, "{o:?}");
    for _ in 0..10 {
        WebhookStats::bump(&stats.unauthorized);
    }
    let o = alerter.evaluate(T0 + MIN).await.unwrap();
    assert_eq!(o.opened, vec!["signatures"], "{o:?}");
    want.push("signatures");
    want.sort();
    let mut opened: Vec<String> = events(&got.on("hook"))
        .into_iter()
        .map(|(e, k)| {
            assert_eq!(e, "open");
            k
        })
        .collect();
    opened.sort();
    assert_eq!(opened, want);
    let by_key = |k: &str| {
        got.on("hook")
            .into_iter()
            .find(|v| v["incident"]["key"] == k)
            .unwrap()
    };
    assert_eq!(
        by_key("oversell/market")["incident"]["examples"],
        serde_json::json!(["S1"])
    );
    assert!(
        by_key("down/market")["incident"]["summary"]
            .as_str()
            .unwrap()
            .contains("HTTP 503")
    );
    assert_eq!(by_key("approval/market")["incident"]["count"], 2);
    assert_eq!(by_key("signatures")["incident"]["count"], 10);

    // One held correction is below at_least = 2: that one resolves on its own.
    exec(&db, "DELETE FROM outbox WHERE sku = 'H2'").await;
    let o = alerter.evaluate(T0 + 2 * MIN).await.unwrap();
    assert_eq!(o.resolved, vec!["approval/market", "signatures"], "{o:?}");

    // Everything clears.
    clear_drift(&db).await;
    run(&db, T0 + 2 * MIN, None).await;
    exec(&db, &format!("UPDATE dead_letters SET resolved_at = {T0}")).await;
    exec(&db, "DELETE FROM outbox").await;
    let o = alerter.evaluate(T0 + 3 * MIN).await.unwrap();
    let mut resolved = o.resolved.clone();
    resolved.sort();
    assert_eq!(
        resolved,
        vec![
            "age/market/offer",
            "age/market/stock",
            "dead/market",
            "down/market",
            "oversell/market"
        ]
    );
    let hook = events(&got.on("hook"));
    assert_eq!(hook.iter().filter(|(e, _)| e == "open").count(), 7);
    assert_eq!(hook.iter().filter(|(e, _)| e == "resolved").count(), 7);
    let o = alerter.evaluate(T0 + 4 * MIN).await.unwrap();
    assert!(o.firing.is_empty() && o.sent.is_empty(), "{o:?}");
}

/// The evaluation as it was before the rules read aggregates: every open row read, grouped
/// and sorted in Rust. Kept here, verbatim in what it computes, as the reference the
/// aggregate path must agree with.
mod before {
    use std::collections::BTreeMap;

    use omnisync::alerts::config::{Condition, Rule};
    use omnisync::planner::Field;
    use omnisync::store::Store;
    use sqlx::Row;

    pub const EXAMPLES: usize = 5;

    pub struct DriftRow {
        pub channel: String,
        pub field: String,
        pub sku: String,
        pub since: i64,
        pub desired: String,
        pub observed: Option<String>,
    }

    pub struct ItemRow {
        pub channel: String,
        pub sku: String,
        pub at: i64,
    }

    /// What an incident says: kind, channel, field, count, examples, summary.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Said {
        pub kind: String,
        pub channel: Option<String>,
        pub field: Option<String>,
        pub count: u64,
        pub examples: Vec<String>,
        pub summary: String,
    }

    /// Every open row, as the alerter used to read them.
    pub async fn read(store: &Store) -> (Vec<DriftRow>, Vec<ItemRow>, Vec<ItemRow>) {
        let drift = sqlx::query(
            "SELECT channel, field, sku, location, drift_since, desired, observed FROM target_state \
             WHERE in_sync = 0 AND drift_since IS NOT NULL ORDER BY drift_since",
        )
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| DriftRow {
            channel: r.get(0),
            field: r.get(1),
            sku: r.get(2),
            since: r.get(4),
            desired: r.get(5),
            observed: r.get(6),
        })
        .collect();
        let items = |sql: &'static str| async move {
            sqlx::query(sql)
                .fetch_all(store.pool())
                .await
                .unwrap()
                .iter()
                .map(|r| ItemRow {
                    channel: r.get(0),
                    sku: r.get(1),
                    at: r.get(2),
                })
                .collect::<Vec<_>>()
        };
        let dead =
            items("SELECT channel, sku, created_at FROM dead_letters WHERE resolved_at IS NULL")
                .await;
        let held = items("SELECT channel, sku, updated_at FROM outbox WHERE status = 'held'").await;
        (drift, dead, held)
    }

    fn examples<'a>(skus: impl Iterator<Item = &'a str>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in skus {
            if out.len() == EXAMPLES {
                break;
            }
            if !out.iter().any(|o| o == s) {
                out.push(s.to_string());
            }
        }
        out
    }

    fn plural(n: u64, one: &str, many: &str) -> String {
        format!("{n} {}", if n == 1 { one } else { many })
    }

    fn field_word(field: &str) -> &str {
        match field {
            "offer" => "price",
            other => other,
        }
    }

    /// The drift-age, oversell-risk, dead-letter and held rules over every row.
    pub fn evaluate(
        rules: &[Rule],
        (drift, dead_letters, held): &(Vec<DriftRow>, Vec<ItemRow>, Vec<ItemRow>),
        now: i64,
    ) -> BTreeMap<String, Said> {
        let mut out = BTreeMap::new();
        for rule in rules {
            let mut fire = |channel: &str, field: Option<&str>, count, examples, summary| {
                let key = match field {
                    Some(f) => format!("{}/{channel}/{f}", rule.name),
                    None => format!("{}/{channel}", rule.name),
                };
                out.insert(
                    key,
                    Said {
                        kind: rule.condition.kind().to_string(),
                        channel: Some(channel.to_string()),
                        field: field.map(str::to_string),
                        count,
                        examples,
                        summary,
                    },
                );
            };
            match &rule.condition {
                Condition::DriftAge {
                    field,
                    older_than_minutes,
                } => {
                    let cutoff = now - *older_than_minutes as i64 * 60_000;
                    let mut groups: BTreeMap<(&str, &str), Vec<&DriftRow>> = BTreeMap::new();
                    for d in drift {
                        if d.since <= cutoff
                            && rule.watches(&d.channel)
                            && field.is_none_or(|f| f.as_str() == d.field)
                        {
                            groups
                                .entry((d.channel.as_str(), d.field.as_str()))
                                .or_default()
                                .push(d);
                        }
                    }
                    for ((channel, f), mut rows) in groups {
                        rows.sort_by(|a, b| (a.since, &a.sku).cmp(&(b.since, &b.sku)));
                        let oldest = (now - rows[0].since).max(0) / 60_000;
                        let n = rows.len() as u64;
                        fire(
                            channel,
                            Some(f),
                            n,
                            examples(rows.iter().map(|r| r.sku.as_str())),
                            format!(
                                "{} on {channel} differ for more than {older_than_minutes} min (oldest {oldest} min)",
                                plural(
                                    n,
                                    &format!("{} value", field_word(f)),
                                    &format!("{} values", field_word(f))
                                ),
                            ),
                        );
                    }
                }
                Condition::OversellRisk {
                    min_excess,
                    older_than_minutes,
                } => {
                    let cutoff = now - *older_than_minutes as i64 * 60_000;
                    let mut groups: BTreeMap<&str, Vec<(&DriftRow, i64)>> = BTreeMap::new();
                    for d in drift {
                        if d.field != Field::Stock.as_str()
                            || d.since > cutoff
                            || !rule.watches(&d.channel)
                        {
                            continue;
                        }
                        let (Ok(want), Some(Ok(shown))) = (
                            d.desired.trim().parse::<i64>(),
                            d.observed.as_deref().map(|o| o.trim().parse::<i64>()),
                        ) else {
                            continue;
                        };
                        if shown - want >= *min_excess {
                            groups
                                .entry(d.channel.as_str())
                                .or_default()
                                .push((d, shown - want));
                        }
                    }
                    for (channel, mut rows) in groups {
                        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.sku.cmp(&b.0.sku)));
                        let n = rows.len() as u64;
                        let units: i64 = rows.iter().map(|r| r.1).sum();
                        fire(
                            channel,
                            None,
                            n,
                            examples(rows.iter().map(|r| r.0.sku.as_str())),
                            format!(
                                "{} on {channel} show more than is available ({units} units too many): risk of overselling",
                                plural(n, "stock value", "stock values")
                            ),
                        );
                    }
                }
                Condition::DeadLetters { at_least } | Condition::Held { at_least } => {
                    let dead = matches!(rule.condition, Condition::DeadLetters { .. });
                    let rows = if dead { dead_letters } else { held };
                    let mut groups: BTreeMap<&str, Vec<&ItemRow>> = BTreeMap::new();
                    for r in rows.iter().filter(|r| rule.watches(&r.channel)) {
                        groups.entry(r.channel.as_str()).or_default().push(r);
                    }
                    for (channel, mut rows) in groups {
                        let n = rows.len() as u64;
                        if n < *at_least {
                            continue;
                        }
                        rows.sort_by(|a, b| (a.at, &a.sku).cmp(&(b.at, &b.sku)));
                        let summary = if dead {
                            format!(
                                "{} on {channel}: the API refused them for good (omnisync dead-letters)",
                                plural(n, "dead-lettered correction", "dead-lettered corrections")
                            )
                        } else {
                            format!(
                                "{} on {channel} held for approval (omnisync approve --channel {channel} --list)",
                                plural(n, "correction", "corrections")
                            )
                        };
                        fire(
                            channel,
                            None,
                            n,
                            examples(rows.iter().map(|r| r.sku.as_str())),
                            summary,
                        );
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// Saves differences through the store's own API, each opening at its `since`: one pass per
/// time, in time order, as the engine would.
async fn save_drift(store: &Store, channel: &str, rows: &[(i64, TargetRow)]) {
    let mut times: Vec<i64> = rows.iter().map(|(t, _)| *t).collect();
    times.sort();
    times.dedup();
    for t in times {
        let batch: Vec<TargetRow> = rows
            .iter()
            .filter(|(at, _)| *at == t)
            .map(|(_, r)| r.clone())
            .collect();
        let prev = store.load_prev(channel, None).await.unwrap();
        store.save_state(channel, &batch, &prev, t).await.unwrap();
    }
}

/// A mix of channels, fields, locations, causes, ages (with ties) and stock values, numeric
/// and not, as target rows by channel with the time each opened.
fn mixed_drift() -> BTreeMap<&'static str, Vec<(i64, TargetRow)>> {
    use omnisync::planner::{Cause, Field, StateKey};
    let channels = ["market", "erp", "legacy"];
    let causes = [
        Some(Cause::ChannelEdit),
        Some(Cause::WriteFailed),
        None,
        Some(Cause::OrderInFlight),
        Some(Cause::SourceChanged),
    ];
    let ages = [90, 40, 25, 16, 5, 0];
    let prefixes = ["a-", "A", "b_", "B-", "Z", "sku "];
    let numbers = [
        "3",
        " 7",
        "+2",
        "0",
        "-1",
        "abc",
        "",
        "12",
        "1.5",
        "99999999999999999999999",
        "0000000000000000000000005",
        "\t4\n",
        "\u{a0}6",
        "2 3",
        "+-1",
        "-",
        "40",
        "999999999999999999",
    ];
    let mut out: BTreeMap<&str, Vec<(i64, TargetRow)>> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..600usize {
        let channel = channels[i % 3];
        let field = [Field::Offer, Field::Stock, Field::Stock, Field::Listing][i / 3 % 4];
        let sku = format!("{}{}", prefixes[i / 2 % 6], i % 23);
        let location = match field {
            Field::Stock => ["wh", "l2", "l3"][i / 7 % 3].to_string(),
            _ => String::new(),
        };
        if !seen.insert((channel, sku.clone(), field, location.clone())) {
            continue;
        }
        let (desired, observed) = match field {
            Field::Stock => (
                numbers[i % numbers.len()].to_string(),
                (i % 13 != 0).then(|| numbers[(i / 17 + 3 * i) % numbers.len()].to_string()),
            ),
            Field::Offer => ("10".to_string(), Some("12".to_string())),
            Field::Listing => ("1".to_string(), None),
        };
        out.entry(channel).or_default().push((
            T0 - ages[i / 5 % ages.len()] * MIN,
            TargetRow {
                key: StateKey {
                    sku,
                    field,
                    location,
                },
                desired,
                observed,
                in_sync: i % 11 == 0,
                cause: causes[i % causes.len()],
            },
        ));
    }
    out
}

/// Checks one evaluation against the reference: the same incidents firing, saying the same.
async fn same_as_before(alerter: &mut Alerter, db: &Store, cfg: &Config, now: i64) -> usize {
    let o = alerter.evaluate(now).await.unwrap();
    let want = before::evaluate(&cfg.alerts.rules, &before::read(db).await, now);
    assert_eq!(o.firing, want.keys().cloned().collect::<Vec<_>>());
    let got: std::collections::BTreeMap<String, before::Said> =
        omnisync::alerts::store::open_incidents(db)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, i)| {
                (
                    k,
                    before::Said {
                        kind: i.kind,
                        channel: i.channel,
                        field: i.field,
                        count: i.count,
                        examples: i.examples,
                        summary: i.summary,
                    },
                )
            })
            .collect();
    for (k, w) in &want {
        assert_eq!(got.get(k), Some(w), "{k} at {now}");
    }
    assert_eq!(got.len(), want.len());
    want.len()
}

#[tokio::test]
async fn aggregates_give_the_same_incidents_as_reading_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = load(
        dir.path(),
        r#"
[alerts.rules.age-price]
kind = "drift_age"
field = "price"
older_than_minutes = 15
channels = ["market"]
notify = ["hook"]
[alerts.rules.age-any]
kind = "drift_age"
older_than_minutes = 30
notify = ["hook"]
[alerts.rules.age-stock]
kind = "drift_age"
field = "stock"
older_than_minutes = 0
notify = ["hook"]
[alerts.rules.age-listing]
kind = "drift_age"
field = "listing"
older_than_minutes = 15
channels = ["erp"]
notify = ["hook"]
[alerts.rules.over]
kind = "oversell_risk"
notify = ["hook"]
[alerts.rules.over-big]
kind = "oversell_risk"
min_excess = 5
older_than_minutes = 20
channels = ["market"]
notify = ["hook"]
[alerts.rules.dead]
kind = "dead_letters"
notify = ["hook"]
[alerts.rules.held]
kind = "held"
at_least = 4
notify = ["hook"]
[alerts.rules.held-erp]
kind = "held"
channels = ["erp"]
notify = ["hook"]
[alerts.notifiers.hook]
kind = "webhook"
url = "literal:http://127.0.0.1:9/hook"
"#,
    )
    .unwrap();
    // On PostgreSQL, a database whose collation does not sort SKUs as Rust does ('a' < 'B'):
    // the examples must still come out in the same order.
    let db = store_with(
        dir.path(),
        "aggregates",
        true,
        "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'",
    )
    .await;
    let drift = mixed_drift();
    for (channel, rows) in &drift {
        save_drift(&db, channel, rows).await;
    }
    let channels = ["market", "erp", "legacy"];
    let prefixes = ["a-", "A", "b_", "B-", "Z", "sku "];
    for i in 0..40i64 {
        let u = i as usize;
        sqlx::query(
            "INSERT INTO dead_letters (channel, sku, field, location, value, change, reason, attempts, created_at, resolved_at) \
             VALUES ($1, $2, 'offer', '', '1', '{}', 'refused', 5, $3, $4)",
        )
        .bind(channels[u % 3])
        .bind(format!("{}{}", prefixes[u / 3 % 6], i % 7))
        .bind(T0 - (i % 4) * MIN)
        .bind((i % 9 == 0).then_some(T0))
        .execute(db.pool())
        .await
        .unwrap();
    }
    for i in 0..30i64 {
        let u = i as usize;
        sqlx::query(
            "INSERT INTO outbox (channel, sku, field, location, value, change, refs, idempotency_key, status, \
             attempts, next_attempt_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, '0', '{}', '{}', $5, $6, 0, $7, $7, $7)",
        )
        .bind(channels[u % 2])
        .bind(format!("{}{}", prefixes[u / 2 % 6], i % 5))
        .bind(["offer", "stock", "listing"][u % 3])
        .bind(format!("l{i}"))
        .bind(format!("k-{i}"))
        .bind(if i % 4 == 0 { "pending" } else { "held" })
        .bind(T0 - (i % 3) * MIN)
        .execute(db.pool())
        .await
        .unwrap();
    }

    // An incident for every rule, with a fair number of them.
    let want = before::evaluate(&cfg.alerts.rules, &before::read(&db).await, T0);
    for rule in &cfg.alerts.rules {
        assert!(
            want.keys()
                .any(|k| k.starts_with(&format!("{}/", rule.name))),
            "{} never fires: {:?}",
            rule.name,
            want.keys()
        );
    }
    assert!(want.len() >= 20, "{want:?}");

    let mut alerter = Alerter::new(&cfg.alerts, db.clone(), None).with_retry(fast());
    for now in [T0, T0 + 10 * MIN, T0 + 30 * MIN] {
        same_as_before(&mut alerter, &db, &cfg, now).await;
    }

    // Some of it clears, some stays: still the same.
    for (channel, rows) in &drift {
        let prev = db.load_prev(channel, None).await.unwrap();
        let closed: Vec<TargetRow> = rows
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 == 0)
            .map(|(_, (_, r))| TargetRow {
                observed: Some(r.desired.clone()),
                in_sync: true,
                cause: None,
                ..r.clone()
            })
            .collect();
        db.save_state(channel, &closed, &prev, T0 + 31 * MIN)
            .await
            .unwrap();
    }
    exec(
        &db,
        &format!("UPDATE dead_letters SET resolved_at = {T0} WHERE channel = 'erp'"),
    )
    .await;
    exec(
        &db,
        "DELETE FROM outbox WHERE location IN ('l1', 'l2', 'l3')",
    )
    .await;
    let n = same_as_before(&mut alerter, &db, &cfg, T0 + 32 * MIN).await;
    assert!(n >= 10, "{n}");
}

#[test]
fn bad_alert_config_names_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let err = load(
        dir.path(),
        r#"
[alerts.rules.stale]
kind = "drift_age"
older_than_minutes = 5
channels = ["shop"]
notify = ["pager"]
[alerts.notifiers.mail]
kind = "smtp"
host = "smtp.example.com"
from = "omnisync@example.com"
to = ["ops@example.com"]
username = "ops"
"#,
    )
    .unwrap_err();
    let text = err.to_string();
    for want in [
        "omnisync.toml: alerts.rules.stale.notify: unknown notifier \"pager\"",
        "alerts.rules.stale.channels: unknown connector \"shop\"",
        "alerts.notifiers.mail.password: username and password go together",
    ] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }
    // Secrets that cannot be read are named (for check-config), never their values.
    let cfg = load(
        dir.path(),
        "[alerts.notifiers.s]\nkind = \"slack\"\nurl = \"env:OMNISYNC_TEST_SURELY_UNSET_SLACK\"\n\
         [alerts.notifiers.w]\nkind = \"webhook\"\nurl = \"literal:http://127.0.0.1:9/x\"\n",
    )
    .unwrap();
    let problems = omnisync::alerts::check_secrets(&cfg.alerts);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, "alerts.notifiers.s.url");
    assert!(
        problems[0].1.contains("OMNISYNC_TEST_SURELY_UNSET_SLACK"),
        "{problems:?}"
    );
    // Unknown keys are refused with their path.
    let err = load(
        dir.path(),
        "[alerts.rules.x]\nkind = \"held\"\nnotify = []\ncolour = \"red\"\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("colour"), "{err}");
    // A secret must be a reference.
    let err = load(
        dir.path(),
        "[alerts.notifiers.s]\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T0/B0/secret\"\n",
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("alerts.notifiers.s.url"), "{text}");
    assert!(
        !text.contains("hooks.slack.com/services/T0/B0/secret"),
        "{text}"
    );
}

#[test]
fn the_documented_alerts_section_is_valid_once_uncommented() {
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml"))
            .unwrap();
    let start = example
        .find("\n# [alerts]\n")
        .expect("an [alerts] section in the example");
    let (head, block) = example.split_at(start);
    let uncommented: String = block
        .lines()
        .map(|l| l.strip_prefix("# ").or(l.strip_prefix('#')).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("example.toml");
    std::fs::write(&file, format!("{head}\n{uncommented}\n")).unwrap();
    let cfg = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.alerts.rules.len(), 6);
    assert_eq!(cfg.alerts.notifiers.len(), 3);
    let kinds: std::collections::BTreeSet<&str> = cfg
        .alerts
        .rules
        .iter()
        .map(|r| r.condition.kind())
        .collect();
    assert_eq!(kinds.len(), 6, "{kinds:?}");
}

#[tokio::test]
async fn the_daemon_evaluates_the_rules_and_notifies() {
    let dir = tempfile::tempdir().unwrap();
    let (base, got) = receiver().await;
    // The ERP at 127.0.0.1:9 answers nothing: every pass records its error.
    let cfg = load(
        dir.path(),
        &format!(
            r#"
[alerts]
evaluate_every_secs = 1
[alerts.rules.erp-down]
kind = "connector_failing"
for_minutes = 0
channels = ["erp"]
notify = ["hook"]
[alerts.notifiers.hook]
kind = "webhook"
url = "literal:{base}/hook"
"#
        ),
    )
    .unwrap();
    let db = store_for(dir.path(), "daemon", true).await;
    let engine = std::sync::Arc::new(omnisync::engine::Engine::new(cfg, db).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daemon = omnisync::daemon::start(engine, listener).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while got.on("hook").is_empty() {
        assert!(
            Instant::now() < deadline,
            "no alert from the daemon: {:?}",
            got.all()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    daemon.shutdown().await;
    let hook = got.on("hook");
    assert_eq!(
        events(&hook),
        vec![("open".to_string(), "erp-down/erp".to_string())]
    );
    assert!(
        hook[0]["incident"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("erp has been failing"),
        "{hook:?}"
    );
}

/// Kills the SMTP server when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        // Already gone is fine: the point is that it is gone.
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn mails(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join("new")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        // Unfold folded header lines.
        .map(|m| {
            m.replace("\r\n", "\n")
                .replace("\n ", " ")
                .replace("\n\t", " ")
        })
        .collect();
    out.sort();
    out
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn smtp_mail_reaches_a_real_aiosmtpd() {
    let Ok(python) = std::env::var("OMNISYNC_TEST_AIOSMTPD_PYTHON") else {
        eprintln!(
            "note: skipped: set OMNISYNC_TEST_AIOSMTPD_PYTHON to a python with aiosmtpd \
             (scripts/test-services.sh alerts does)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Child(
        std::process::Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .spawn()
            .expect("starting aiosmtpd"),
    );
    wait_for("aiosmtpd to listen", || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });

    let cfg = load(
        dir.path(),
        &format!(
            r#"
[alerts.rules.approval]
kind = "held"
notify = ["mail"]
[alerts.notifiers.mail]
kind = "smtp"
host = "127.0.0.1"
port = {port}
security = "plain"
from = "omnisync <omnisync@example.com>"
to = ["ops@example.com", "Shop Owner <owner@example.com>"]
timeout_secs = 20
"#
        ),
    )
    .unwrap();
    let db = store_for(dir.path(), "smtp", true).await;
    held(&db, "ZERO-1", T0).await;
    let mut alerter = Alerter::new(&cfg.alerts, db.clone(), None).with_retry(fast());
    let o = alerter.evaluate(T0).await.unwrap();
    assert_eq!(
        o.sent,
        vec![(
            "approval/market".to_string(),
            "mail".to_string(),
            Event::Open
        )],
        "{o:?}"
    );
    let got = wait_for("the opening mail", || {
        let m = mails(&maildir);
        (!m.is_empty()).then_some(m)
    });
    assert_eq!(got.len(), 1, "{got:?}");
    let mail = &got[0];
    assert!(
        mail.contains("Subject: [omnisync] OPEN approval on market"),
        "{mail}"
    );
    assert!(
        mail.contains("1 correction on market held for approval"),
        "{mail}"
    );
    assert!(mail.contains("examples: ZERO-1"), "{mail}");
    assert!(mail.contains("owner@example.com"), "{mail}");

    exec(&db, "DELETE FROM outbox").await;
    let o = alerter.evaluate(T0 + MIN).await.unwrap();
    assert_eq!(o.sent.len(), 1, "{o:?}");
    let got = wait_for("the resolving mail", || {
        let m = mails(&maildir);
        (m.len() >= 2).then_some(m)
    });
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.iter()
            .any(|m| m.contains("Subject: [omnisync] RESOLVED approval on market")),
        "{got:?}"
    );
}

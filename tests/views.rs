//! The operators' read models: open drift and its filters, one item across every system
//! after a demo-like scenario (with its timeline of observed changes, pushes and
//! confirmations), consistency over time, the overview, the HTML report (escaped) and
//! retention.

use omnisync::config::Config;
use omnisync::demo::{World, catalog_item};
use omnisync::engine::{Engine, Scope};
use omnisync::report::{ChannelReport, RunReport};
use omnisync::store::Store;
use omnisync::views::{self, DriftFilter};
use omnisync_sdk::sim::SimControl;
use omnisync_sdk::{Currency, Money, Offer};
use time::OffsetDateTime;

const N: usize = 40;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

async fn temp_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("views.db").display());
    (Store::open(&url).await.unwrap(), dir)
}

async fn exec(store: &Store, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(store.pool())
        .await
        .unwrap();
}

/// One seeded target-state row: (channel, sku, field, location, desired, observed, cause,
/// in sync, drift since).
type SeedRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    i64,
    i64,
);

/// Open drift of three kinds on two channels at known ages, one value in sync, an orphan
/// and a dead letter.
async fn seed_drift(store: &Store, now: i64) {
    let rows: [SeedRow; 5] = [
        (
            "webshop",
            "TEE-1",
            "offer",
            "",
            "12990 SEK",
            "100 SEK",
            Some("channel_edit"),
            0,
            now - 3 * HOUR,
        ),
        (
            "webshop",
            "TEE-2",
            "stock",
            "loc-1",
            "7",
            "9",
            Some("source_changed"),
            0,
            now - 10 * 60_000,
        ),
        (
            "marketplace",
            "TEE-1",
            "stock",
            "default",
            "4",
            "5",
            Some("write_failed"),
            0,
            now - 2 * DAY,
        ),
        (
            "social", "TEE-3", "offer", "", "9990 SEK", "9990 SEK", None, 1, now,
        ),
        (
            "social",
            "TEE-4",
            "stock",
            "default",
            "3",
            "2",
            None,
            0,
            now - 30_000,
        ),
    ];
    for (channel, sku, field, location, desired, observed, cause, in_sync, since) in rows {
        sqlx::query(
            "INSERT INTO target_state (channel, sku, field, location, desired, observed, pushed, in_sync, cause, drift_since, checked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(channel)
        .bind(sku)
        .bind(field)
        .bind(location)
        .bind(desired)
        .bind(observed)
        .bind((channel == "marketplace").then_some("4"))
        .bind(in_sync)
        .bind(cause)
        .bind((in_sync == 0).then_some(since))
        .bind(now)
        .execute(store.pool())
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO dead_letters (channel, sku, field, location, value, change, reason, attempts, created_at) \
         VALUES ('marketplace', 'TEE-1', 'stock', 'default', '4', '{}', 'listing ended', 5, $1)",
    )
    .bind(now - DAY)
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO orphans (channel, external_id, sku, reason, first_seen, last_seen) \
         VALUES ('marketplace', 'ebay-77', 'OLD-9', 'SKU is not in the canonical catalog', $1, $2)",
    )
    .bind(now - 5 * DAY)
    .bind(now)
    .execute(store.pool())
    .await
    .unwrap();
}

fn keys(rows: &[views::DriftRow]) -> Vec<(String, String, String)> {
    rows.iter()
        .map(|r| (r.channel.clone(), r.sku.clone(), r.field.clone()))
        .collect()
}

fn key(c: &str, s: &str, f: &str) -> (String, String, String) {
    (c.into(), s.into(), f.into())
}

#[tokio::test]
async fn drift_is_listed_oldest_first_and_filtered_by_channel_cause_field_and_age() {
    let (store, _dir) = temp_store().await;
    drift_filters(&store).await;
}

async fn drift_filters(store: &Store) {
    let store = store.clone();
    let now = 1_800_000_000_000;
    seed_drift(&store, now).await;

    let all = views::open_drift(&store, &DriftFilter::default(), now)
        .await
        .unwrap();
    assert_eq!(
        keys(&all),
        vec![
            key("marketplace", "OLD-9", "orphan"),
            key("marketplace", "TEE-1", "stock"),
            key("webshop", "TEE-1", "offer"),
            key("webshop", "TEE-2", "stock"),
            key("social", "TEE-4", "stock"),
        ],
        "in-sync values are not drift; oldest first"
    );
    let edit = &all[2];
    assert_eq!(edit.desired.as_deref(), Some("129.90 SEK"));
    assert_eq!(edit.observed.as_deref(), Some("1.00 SEK"));
    assert_eq!(edit.cause, "channel_edit");
    assert_eq!(edit.age_secs, 3 * 3600);
    assert_eq!(edit.location, None);
    let failed = &all[1];
    assert_eq!(failed.last_pushed.as_deref(), Some("4"));
    assert_eq!(failed.location.as_deref(), Some("default"));
    assert!(
        failed
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("dead-lettered") && d.contains("listing ended")),
        "{failed:?}"
    );
    assert_eq!(all[4].cause, "unknown");

    let by_channel = views::open_drift(
        &store,
        &DriftFilter {
            channel: Some("webshop".into()),
            ..Default::default()
        },
        now,
    )
    .await
    .unwrap();
    assert_eq!(
        keys(&by_channel),
        vec![
            key("webshop", "TEE-1", "offer"),
            key("webshop", "TEE-2", "stock")
        ]
    );

    let by_cause = views::open_drift(
        &store,
        &DriftFilter {
            cause: Some("source_changed".into()),
            ..Default::default()
        },
        now,
    )
    .await
    .unwrap();
    assert_eq!(keys(&by_cause), vec![key("webshop", "TEE-2", "stock")]);
    let unknown = views::open_drift(
        &store,
        &DriftFilter {
            cause: Some("unknown".into()),
            ..Default::default()
        },
        now,
    )
    .await
    .unwrap();
    assert_eq!(keys(&unknown), vec![key("social", "TEE-4", "stock")]);
    let mapping = views::open_drift(
        &store,
        &DriftFilter {
            cause: Some("mapping".into()),
            ..Default::default()
        },
        now,
    )
    .await
    .unwrap();
    assert_eq!(keys(&mapping), vec![key("marketplace", "OLD-9", "orphan")]);

    let old = views::open_drift(
        &store,
        &DriftFilter {
            older_than_ms: Some(views::parse_duration("1h").unwrap()),
            ..Default::default()
        },
        now,
    )
    .await
    .unwrap();
    assert_eq!(
        keys(&old),
        vec![
            key("marketplace", "OLD-9", "orphan"),
            key("marketplace", "TEE-1", "stock"),
            key("webshop", "TEE-1", "offer"),
        ]
    );
    let stock_only = views::open_drift(
        &store,
        &DriftFilter {
            field: Some("stock".into()),
            limit: Some(2),
            ..Default::default()
        },
        now,
    )
    .await
    .unwrap();
    assert_eq!(
        keys(&stock_only),
        vec![
            key("marketplace", "TEE-1", "stock"),
            key("webshop", "TEE-2", "stock")
        ]
    );

    // Bad filters are refused, naming the bad value.
    let err = views::open_drift(
        &store,
        &DriftFilter {
            cause: Some("gremlins".into()),
            ..Default::default()
        },
        now,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("gremlins") && err.contains("source_changed"),
        "{err}"
    );

    // The renderings carry every row.
    let table = views::drift_table(&all);
    assert!(
        table.contains("129.90 SEK") && table.contains("3h 0m"),
        "{table}"
    );
    let csv = views::drift_csv(&all).unwrap();
    assert_eq!(csv.lines().count(), 6, "{csv}");
    assert!(csv.starts_with(
        "channel,sku,field,location,desired,observed,last_pushed,cause,since,age_secs,detail"
    ));
}

#[test]
fn durations_are_read_as_operators_type_them() {
    assert_eq!(views::parse_duration("90s").unwrap(), 90_000);
    assert_eq!(views::parse_duration("15m").unwrap(), 900_000);
    assert_eq!(views::parse_duration("2h").unwrap(), 7_200_000);
    assert_eq!(views::parse_duration("1d").unwrap(), 86_400_000);
    assert_eq!(views::parse_duration("1h30m").unwrap(), 5_400_000);
    for bad in ["", "15", "m", "2 hours", "-1h", "1y"] {
        let e = views::parse_duration(bad).unwrap_err().to_string();
        assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
    }
}

struct Setup {
    world: World,
    config: Config,
    engine: Engine,
    baseline: i64,
    _dir: tempfile::TempDir,
}

/// The demo world with `N` items, seeded consistent, after a baseline pass, on a fresh
/// SQLite database (or on `database`).
async fn setup(database: Option<&str>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let world = World::start(0).await.unwrap();
    let database = database.map_or_else(
        || format!("sqlite://{}", dir.path().join("omnisync.db").display()),
        str::to_string,
    );
    let path = dir.path().join("omnisync.toml");
    let now = OffsetDateTime::now_utc();
    std::fs::write(&path, world.config_toml(&database, now).unwrap()).unwrap();
    let config = Config::load(&path).unwrap();
    world.seed_in_sync(&config, N, now).unwrap();
    let engine = Engine::new(config.clone(), Store::open(&database).await.unwrap()).unwrap();
    let baseline = engine.reconcile(&Scope::default()).await.unwrap();
    assert!(baseline.converged(), "{}", baseline.table());
    Setup {
        world,
        config,
        engine,
        baseline: baseline.run_id,
        _dir: dir,
    }
}

fn channel<'a>(r: &'a RunReport, id: &str) -> &'a ChannelReport {
    r.channels.iter().find(|c| c.id == id).unwrap()
}

#[tokio::test]
async fn item_view_and_timeline_after_a_hand_edit_and_a_source_change() {
    item_scenario(None).await;
}

async fn item_scenario(database: Option<&str>) {
    let s = setup(database).await;
    let edited = catalog_item(4).sku;
    let changed = catalog_item(7).sku;
    // Someone edits a price in the webshop; the ERP changes another item's price.
    s.world
        .shopify
        .set_offer(&edited, Offer::regular(Money::new(100, Currency::NOK)));
    let item7 = catalog_item(7);
    assert!(s.world.tryton.set_offer(
        &changed,
        Offer::regular(Money::new(item7.offer.price.minor + 1000, Currency::NOK))
    ));
    let r = s.engine.reconcile(&Scope::default()).await.unwrap();
    assert_eq!(
        channel(&r, "webshop").corrections.confirmed,
        2,
        "{}",
        r.table()
    );
    let after = s.engine.reconcile(&Scope::default()).await.unwrap();
    assert!(after.converged(), "{}", after.table());

    // Time to converge after the source change is kept in the run's report.
    for id in ["webshop", "marketplace", "social"] {
        let c = channel(&r, id);
        assert!(c.source_changes_converged >= 1, "{id}: {c:?}");
        let (p50, max) = (c.converge_ms_p50.unwrap(), c.converge_ms_max.unwrap());
        assert!(p50 <= max, "{id}");
    }
    let stored = s.engine.store().run(Some(r.run_id)).await.unwrap().unwrap();
    let stored: RunReport = serde_json::from_str(stored.report.as_deref().unwrap()).unwrap();
    assert_eq!(
        channel(&stored, "webshop").converge_ms_p50,
        channel(&r, "webshop").converge_ms_p50
    );

    // The hand-edited item.
    let v = views::item(s.engine.store(), &s.config, &edited)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.sku, edited);
    assert_eq!(v.name.as_deref(), Some(catalog_item(4).title.as_str()));
    assert_eq!(v.locations.len(), 3, "{:?}", v.locations);
    assert!(
        v.locations
            .iter()
            .all(|l| l.source.as_deref() == Some("erp"))
    );
    assert_eq!(
        v.available_total,
        v.locations.iter().map(|l| l.available).sum::<i64>()
    );
    let ids: Vec<&str> = v.channels.iter().map(|c| c.channel.as_str()).collect();
    assert_eq!(ids, ["marketplace", "social", "webshop"]);
    for c in &v.channels {
        assert!(c.listed, "{c:?}");
        assert_eq!(c.in_sync, Some(true), "{c:?}");
        assert!(c.price.is_some(), "{c:?}");
        assert_eq!(
            c.price,
            c.desired_offer
                .as_ref()
                .map(|d| d.split(',').next().unwrap().to_string())
        );
    }
    let shop = v.channels.iter().find(|c| c.channel == "webshop").unwrap();
    assert!(shop.price.as_deref().unwrap().ends_with(" NOK"));
    assert_eq!(shop.stock.len(), 3, "per location: {:?}", shop.stock);
    assert!(v.drift.is_empty(), "{:?}", v.drift);

    let kinds = |channel: &str| -> Vec<(String, Option<String>)> {
        v.timeline
            .iter()
            .filter(|e| e.channel == channel && e.field.as_deref() == Some("offer"))
            .map(|e| (e.kind.clone(), e.cause.clone()))
            .collect()
    };
    let edit = Some("channel_edit".to_string());
    let shop_events = kinds("webshop");
    for want in ["observed", "drift_opened", "pushed", "confirmed"] {
        assert!(
            shop_events.contains(&(want.to_string(), edit.clone())),
            "{want} with cause channel_edit in {shop_events:?}"
        );
    }
    let observed = v
        .timeline
        .iter()
        .find(|e| e.kind == "observed" && e.cause == edit)
        .unwrap();
    assert_eq!(observed.value.as_deref(), Some("1.00 NOK"));
    // Chronological: the edit is observed before the push, the push before the confirmation.
    let pos = |k: &str| shop_events.iter().position(|(kind, _)| kind == k).unwrap();
    assert!(pos("observed") < pos("pushed") && pos("pushed") < pos("confirmed"));
    // Nothing happened to the other channels' offers.
    assert!(kinds("social").is_empty(), "{:?}", kinds("social"));

    // The source change: pushed and confirmed on every channel, cause source_changed.
    let v = views::item(s.engine.store(), &s.config, &changed)
        .await
        .unwrap()
        .unwrap();
    for id in ["webshop", "marketplace", "social"] {
        for want in ["pushed", "confirmed"] {
            assert!(
                v.timeline.iter().any(|e| e.channel == id
                    && e.kind == want
                    && e.cause.as_deref() == Some("source_changed")),
                "{id} {want}: {:?}",
                v.timeline
            );
        }
    }
    let text = views::item_table(&v);
    assert!(text.contains("Where can the customer get it?"), "{text}");
    for id in ["webshop", "marketplace", "social"] {
        assert!(text.contains(id), "{text}");
    }

    // An order in flight shows in the item and its timeline.
    let now = omnisync::outbox::now_ms();
    let sold = omnisync::reservations::SoldLine {
        channel: "webshop".into(),
        event_id: "order-1".into(),
        line: 0,
        sku: changed.clone(),
        quantity: 2,
    };
    s.engine
        .store()
        .reserve(&[sold], now, now + HOUR)
        .await
        .unwrap();
    let v = views::item(s.engine.store(), &s.config, &changed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.reservations.len(), 1);
    assert!(v.reservations[0].open && v.reservations[0].quantity == 2);
    let reserved = v.timeline.iter().find(|e| e.kind == "reserved").unwrap();
    assert_eq!(
        (
            reserved.channel.as_str(),
            reserved.value.as_deref(),
            reserved.cause.as_deref()
        ),
        ("webshop", Some("2"), Some("order_in_flight"))
    );
    assert!(views::item_table(&v).contains("HELD"));

    assert!(
        views::item(s.engine.store(), &s.config, "NO-SUCH-SKU")
            .await
            .unwrap()
            .is_none()
    );

    // Consistency per run, oldest first, for the whole-catalog passes only.
    let scoped = s
        .engine
        .reconcile(&Scope {
            skus: Some(vec![edited.clone()]),
            ..Scope::default()
        })
        .await
        .unwrap();
    let series = views::consistency_series(s.engine.store(), Some("webshop"), 10)
        .await
        .unwrap();
    let runs: Vec<i64> = series.iter().map(|p| p.run_id).collect();
    assert_eq!(runs, [s.baseline, r.run_id, after.run_id], "{series:?}");
    assert!(!runs.contains(&scoped.run_id));
    assert!(series.iter().all(|p| p.channel == "webshop"));
    assert_eq!(series[1].checked, N as u64);
    assert_eq!(
        series[1].in_sync,
        N as u64 - 2,
        "drift was found in that run"
    );
    assert_eq!(series[2].consistency, 1.0);
    assert!(series[1].converge_ms_p50.is_some());

    // The overview: every configured channel, open backlog, the latest runs.
    let o = views::overview(s.engine.store(), &s.config).await.unwrap();
    assert_eq!(o.channels.len(), s.config.connectors.len());
    let shop = o.channels.iter().find(|c| c.id == "webshop").unwrap();
    assert_eq!(shop.checked, N as u64);
    assert_eq!(
        (shop.drift_open, shop.outbox_queued, shop.dead_letters),
        (0, 0, 0)
    );
    assert!(shop.last_ok.is_some() && shop.last_error.is_none());
    assert_eq!(
        o.channels.iter().find(|c| c.id == "erp").unwrap().role,
        "source"
    );
    assert_eq!(o.recent_runs.first().map(|r| r.id), Some(scoped.run_id));
}

#[tokio::test]
async fn a_failing_write_shows_as_open_drift_with_its_reason_and_the_channel_as_failing() {
    let s = setup(None).await;
    // An item the social catalog refuses to create (no name): dead-lettered, drift stays.
    let mut nameless = catalog_item(N + 1);
    nameless.title = String::new();
    s.world.tryton.add(nameless.clone());
    s.engine.reconcile(&Scope::default()).await.unwrap();
    let again = s.engine.reconcile(&Scope::default()).await.unwrap();
    assert_eq!(
        channel(&again, "social").drift.by_cause.get("write_failed"),
        Some(&1)
    );

    let drift = views::open_drift(
        s.engine.store(),
        &DriftFilter {
            channel: Some("social".into()),
            cause: Some("write_failed".into()),
            ..Default::default()
        },
        omnisync::outbox::now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(drift.len(), 1, "{drift:#?}");
    assert_eq!(drift[0].sku, nameless.sku);
    assert!(
        drift[0]
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("dead-lettered")
    );

    let v = views::item(s.engine.store(), &s.config, &nameless.sku)
        .await
        .unwrap()
        .unwrap();
    let social = v.channels.iter().find(|c| c.channel == "social").unwrap();
    assert!(!social.listed);
    assert_eq!(social.in_sync, Some(false));
    assert!(
        v.timeline
            .iter()
            .any(|e| e.channel == "social" && e.kind == "dead_lettered"),
        "{:?}",
        v.timeline
    );
    assert!(
        v.drift
            .iter()
            .any(|d| d.channel == "social" && d.cause == "write_failed"),
        "{:?}",
        v.drift
    );

    // A channel that cannot be read shows as failing since that pass, with the error and
    // its last good pass.
    s.world
        .meta
        .faults()
        .inject(omnisync_sdk::sim::Fault::MalformedJson, 1000);
    let failing = s.engine.reconcile(&Scope::default()).await.unwrap();
    let error = channel(&failing, "social").error.clone().unwrap();
    let o = views::overview(s.engine.store(), &s.config).await.unwrap();
    let social = o.channels.iter().find(|c| c.id == "social").unwrap();
    assert_eq!(social.last_error.as_deref(), Some(error.as_str()));
    assert!(
        social.failing_since.is_some() && social.last_ok.is_some(),
        "{social:?}"
    );
    assert!(social.failing_since > social.last_ok, "{social:?}");
    let shop = o.channels.iter().find(|c| c.id == "webshop").unwrap();
    assert!(shop.failing_since.is_none() && shop.last_error.is_none());
    s.world.meta.faults().clear();

    // An unknown channel in a filter is named, with what is configured.
    let err = DriftFilter {
        channel: Some("shopp".into()),
        ..Default::default()
    }
    .check(Some(&s.config))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("\"shopp\"") && err.contains("webshop"),
        "{err}"
    );
}

#[tokio::test]
async fn html_report_is_self_contained_names_channels_and_escapes_hostile_text() {
    let report = RunReport {
        run_id: 12,
        scope: "full".into(),
        status: "ok".into(),
        started_at: "2026-11-23T10:00:00Z".into(),
        finished_at: "2026-11-23T10:00:02Z".into(),
        channels: vec![
            ChannelReport {
                id: "webshop".into(),
                kind: "shopify".into(),
                role: "target/target".into(),
                items_checked: 10,
                in_sync: 9,
                consistency: 0.9,
                converge_ms_p50: Some(120),
                converge_ms_max: Some(480),
                source_changes_converged: 3,
                ..Default::default()
            },
            ChannelReport {
                id: "<script>alert('x')</script>".into(),
                kind: "meta".into(),
                role: "target/target".into(),
                error: Some("bad \"gateway\" & <b>worse</b>".into()),
                ..Default::default()
            },
        ],
        problems: vec!["<img src=x onerror=alert(1)>".into()],
        ..Default::default()
    };
    let series = vec![
        views::ConsistencyPoint {
            run_id: 11,
            at: "2026-11-23T09:00:02Z".into(),
            channel: "webshop".into(),
            checked: 10,
            in_sync: 10,
            consistency: 1.0,
            converge_ms_p50: None,
        },
        views::ConsistencyPoint {
            run_id: 12,
            at: "2026-11-23T10:00:02Z".into(),
            channel: "webshop".into(),
            checked: 10,
            in_sync: 9,
            consistency: 0.9,
            converge_ms_p50: Some(120),
        },
    ];
    let drift = vec![views::DriftRow {
        channel: "webshop".into(),
        sku: "TEE-<1>".into(),
        field: "offer".into(),
        location: None,
        desired: Some("129.90 NOK".into()),
        observed: Some("1.00 NOK".into()),
        last_pushed: None,
        cause: "channel_edit".into(),
        since: "2026-11-23T09:30:00Z".into(),
        age_secs: 1800,
        detail: Some("held for approval: <marquee>".into()),
    }];
    let html = views::report_html(&report, &series, &drift, "2026-11-23T10:05:00Z").unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("webshop") && html.contains("shopify"));
    assert!(
        html.contains("<svg") && html.contains("<polyline"),
        "a chart"
    );
    assert!(html.contains("120 / 480 ms (3)"));
    assert!(html.contains("129.90 NOK") && html.contains("channel_edit"));
    // Hostile text is escaped, never markup.
    for raw in ["<script>", "<b>worse</b>", "<img", "<marquee>", "TEE-<1>"] {
        assert!(!html.contains(raw), "{raw} unescaped");
    }
    assert!(html.contains("&lt;script&gt;"));
    assert!(
        html.contains("&lt;b&gt;worse&lt;&#x2f;b&gt;") || html.contains("&lt;b&gt;worse&lt;/b&gt;")
    );
    // Self-contained: no external stylesheets, scripts or images.
    for external in ["<link", "<script", "src=\"http", "href=\"http", "@import"] {
        assert!(!html.contains(external), "{external}");
    }
}

#[tokio::test]
async fn retention_deletes_old_history_and_keeps_open_drift_queued_work_and_open_dead_letters() {
    let (store, _dir) = temp_store().await;
    retention(&store).await;
}

async fn retention(store: &Store) {
    let store = store.clone();
    let now = 1_800_000_000_000;
    let old = now - 100 * DAY;
    let recent = now - DAY;
    seed_drift(&store, now).await;
    // Open drift that is very old is still open: never pruned.
    exec(
        &store,
        &format!("UPDATE target_state SET drift_since = {old} WHERE sku = 'TEE-1'"),
    )
    .await;
    for (at, status) in [(old, "ok"), (old + 1, "ok"), (recent, "ok")] {
        exec(
            &store,
            &format!("INSERT INTO runs (scope, dry_run, started_at, finished_at, status, report) VALUES ('full', 0, {at}, {at}, '{status}', '{{}}')"),
        )
        .await;
    }
    for at in [old, recent] {
        exec(&store, &format!(
            "INSERT INTO drift_history (channel, sku, field, location, desired, observed, cause, first_seen, resolved_at) \
             VALUES ('webshop', 'TEE-9', 'offer', '', '1 NOK', '2 NOK', 'channel_edit', {at}, {at})"
        )).await;
        exec(
            &store,
            &format!(
                "INSERT INTO push_log (run_id, channel, sku, field, location, value, outcome, at) \
             VALUES (1, 'webshop', 'TEE-9', 'offer', '', '1 NOK', 'applied', {at})"
            ),
        )
        .await;
        exec(&store, &format!(
            "INSERT INTO item_events (run_id, channel, sku, field, location, kind, value, in_sync, at) \
             VALUES (1, 'webshop', 'TEE-9', 'offer', '', 'observed', '2 NOK', 0, {at})"
        )).await;
    }
    for (id, status, at) in [
        ("a", "done", old),
        ("b", "pending", old),
        ("c", "rejected", old),
        ("d", "done", recent),
    ] {
        exec(&store, &format!(
            "INSERT INTO webhook_inbox (connector, event_id, received_at, headers, body, status, processed_at) \
             VALUES ('webshop', '{id}', {at}, '{{}}', '{{}}', '{status}', {at})"
        )).await;
    }
    // An old open dead letter (kept) and an old resolved one (pruned); the seeded one is open.
    exec(&store, &format!(
        "INSERT INTO dead_letters (channel, sku, field, location, value, change, reason, attempts, created_at, resolved_at) \
         VALUES ('social', 'TEE-5', 'offer', '', '1 SEK', '{{}}', 'nope', 5, {old}, {old}), \
                ('social', 'TEE-6', 'offer', '', '1 SEK', '{{}}', 'nope', 5, {old}, NULL)"
    )).await;
    // Old queued and held corrections stay.
    exec(&store, &format!(
        "INSERT INTO outbox (channel, sku, field, location, value, change, refs, idempotency_key, status, attempts, next_attempt_at, created_at, updated_at) \
         VALUES ('webshop', 'TEE-1', 'offer', '', '12990 SEK', '{{}}', '{{}}', 'k1', 'queued', 3, {old}, {old}, {old}), \
                ('webshop', 'TEE-7', 'offer', '', '1 SEK', '{{}}', '{{}}', 'k2', 'held', 0, {old}, {old}, {old})"
    )).await;
    // Reservations: an old released one goes, an old open one stays.
    exec(&store, &format!(
        "INSERT INTO reservations (channel, event_id, line, sku, quantity, created_at, expires_at, released_at, release_reason) \
         VALUES ('webshop', 'o1', 0, 'TEE-1', 1, {old}, {old}, {old}, 'timed out'), \
                ('webshop', 'o2', 0, 'TEE-1', 1, {old}, {now}, NULL, NULL)"
    )).await;

    // More old push outcomes than one delete batch takes.
    exec(
        &store,
        &format!(
            "INSERT INTO push_log (run_id, channel, sku, field, location, value, outcome, at) \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5001) \
             SELECT 1, 'webshop', 'TEE-8', 'stock', 'loc-1', '3', 'applied', {old} FROM n"
        ),
    )
    .await;
    let drift_before = views::open_drift(&store, &DriftFilter::default(), now)
        .await
        .unwrap();
    let n = views::prune(&store, now - 90 * DAY).await.unwrap();
    assert_eq!(
        n,
        views::PruneCounts {
            runs: 2,
            drift_history: 1,
            push_log: 5_002,
            item_events: 1,
            webhook_inbox: 1,
            reservations: 1,
            dead_letters: 1,
        }
    );
    let count = |sql: &'static str| {
        let store = store.clone();
        async move {
            let r = sqlx::query(sql).fetch_one(store.pool()).await.unwrap();
            sqlx::Row::try_get::<i64, _>(&r, 0).unwrap()
        }
    };
    assert_eq!(count("SELECT COUNT(*) FROM runs").await, 1);
    assert_eq!(count("SELECT COUNT(*) FROM drift_history").await, 1);
    assert_eq!(count("SELECT COUNT(*) FROM push_log").await, 1);
    assert_eq!(
        count("SELECT COUNT(*) FROM webhook_inbox WHERE event_id IN ('b', 'c', 'd')").await,
        3
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM dead_letters WHERE resolved_at IS NULL").await,
        2
    );
    assert_eq!(count("SELECT COUNT(*) FROM outbox").await, 2);
    assert_eq!(
        count("SELECT COUNT(*) FROM reservations WHERE released_at IS NULL").await,
        1
    );
    let drift_after = views::open_drift(&store, &DriftFilter::default(), now)
        .await
        .unwrap();
    assert_eq!(drift_after, drift_before, "open drift is never pruned");

    // The newest finished run is kept even when it is older than the retention.
    let n = views::prune(&store, now + DAY).await.unwrap();
    assert_eq!(n.runs, 0);
    assert_eq!(count("SELECT COUNT(*) FROM runs").await, 1);
}

#[test]
fn retention_days_is_validated_with_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("omnisync.toml");
    std::fs::write(
        &path,
        r#"
[daemon]
database = "sqlite://x.db"
retention_days = 0

[canonical]
currency = "NOK"

[connectors.erp]
kind = "tryton"
price = "source"
stock = "source"
locations = { main = "1" }
settings = { url = "http://127.0.0.1:1", database = "db", username = "u", password = "env:NOPE" }
"#,
    )
    .unwrap();
    let err = Config::load(&path).unwrap_err();
    let text = err.to_string();
    assert!(
        err.problems
            .iter()
            .any(|p| p.key == "daemon.retention_days"),
        "{text}"
    );
    assert!(
        text.contains("omnisync.toml")
            && text.contains("daemon.retention_days: must be between 1 and 36500"),
        "{text}"
    );
}

/// Every table the checks above write, emptied (for a shared PostgreSQL database).
async fn clear(store: &Store) {
    for table in [
        "items",
        "item_stock",
        "bindings",
        "orphans",
        "target_state",
        "drift_history",
        "outbox",
        "dead_letters",
        "push_log",
        "runs",
        "webhook_inbox",
        "reservations",
        "item_events",
    ] {
        exec(store, &format!("DELETE FROM {table}")).await;
    }
}

/// The same checks on PostgreSQL: drift filters, retention and the item scenario (which
/// writes observed changes through the engine). Runs when `TEST_POSTGRES_URL` is set
/// (`scripts/test-services.sh`); the database is emptied first.
#[tokio::test]
async fn postgres_views() {
    let Ok(url) = std::env::var("TEST_POSTGRES_URL") else {
        eprintln!(
            "TEST_POSTGRES_URL not set: the PostgreSQL views suite runs in scripts/test-services.sh"
        );
        return;
    };
    let store = Store::open(&url).await.unwrap();
    clear(&store).await;
    drift_filters(&store).await;
    clear(&store).await;
    retention(&store).await;
    clear(&store).await;
    item_scenario(Some(&url)).await;
}

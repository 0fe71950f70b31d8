//! End to end: the daemon's engine against all four simulators, through the generated config
//! file and an SQLite database, from seeded drift to convergence, and the report's figures.

use omnisync::demo::{DemoOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_converges_and_reports_every_kind_of_drift() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = run(DemoOptions {
        skus: 400,
        json: true,
        dir: Some(dir.path().to_path_buf()),
        max_passes: 6,
    })
    .await
    .unwrap();
    assert!(outcome.converged, "after: {}", outcome.after.table());

    let before = &outcome.before;
    let ch = |id: &str| before.channels.iter().find(|c| c.id == id).unwrap();
    let shop = ch("webshop");
    let market = ch("marketplace");
    let social = ch("social");

    // Every target checks the whole catalog.
    for c in [shop, market, social] {
        assert_eq!(c.items_checked, 400, "{}", c.id);
        assert!(c.consistency < 1.0, "{} should start with drift", c.id);
        assert!(c.corrections.sent > 0, "{}", c.id);
        assert!(c.corrections.confirmed > 0, "{}", c.id);
        assert_eq!(c.corrections.failed, 0, "{}", c.id);
    }
    // Hand edits in the webshop are told apart from source changes.
    assert!(
        shop.drift
            .by_cause
            .get("channel_edit")
            .copied()
            .unwrap_or(0)
            > 0,
        "{:?}",
        shop.drift
    );
    assert!(
        shop.drift
            .by_cause
            .get("source_changed")
            .copied()
            .unwrap_or(0)
            > 0,
        "{:?}",
        shop.drift
    );
    assert!(shop.drift.price > 0 && shop.drift.stock > 0);
    // Stale marketplace stock and orphans.
    assert!(market.drift.stock > 0);
    assert_eq!(market.drift.orphan, 3);
    // Missing social listings are created; the early Christmas sale is taken back.
    assert!(social.drift.missing > 0);
    assert!(social.drift.price > 0);

    // After convergence every target is consistent and nothing is left queued.
    for c in outcome.after.channels.iter().filter(|c| c.role != "source") {
        assert_eq!(c.consistency, 1.0, "{}", c.id);
        assert_eq!(c.in_sync, c.items_checked, "{}", c.id);
        assert_eq!(c.corrections.queued, 0, "{}", c.id);
    }
    // Orphans are reported, never deleted or guessed.
    let market_after = outcome
        .after
        .channels
        .iter()
        .find(|c| c.id == "marketplace")
        .unwrap();
    assert_eq!(market_after.drift.orphan, 3);

    // The run is recorded and readable by `omnisync report`.
    let store = omnisync::store::Store::open(&format!(
        "sqlite://{}",
        dir.path().join("omnisync.db").display()
    ))
    .await
    .unwrap();
    let latest = store.run(None).await.unwrap().unwrap();
    assert_eq!(latest.id, outcome.after.run_id);
    let stored: omnisync::report::RunReport =
        serde_json::from_str(latest.report.as_deref().unwrap()).unwrap();
    assert_eq!(stored, outcome.after);
}

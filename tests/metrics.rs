//! `/metrics` against a live daemon: what a pass, a throttled API and a webhook leave in the
//! Prometheus exposition, gauges read from the store (and set back to zero when the state
//! clears), and no SKU anywhere in the labels.

mod common;

use common::{live, settle};
use omnisync::demo::catalog_item;
use omnisync::engine::Scope;
use omnisync_sdk::sim::{Fault, SimControl};
use omnisync_sdk::{Currency, Money, Offer};

async fn scrape(addr: std::net::SocketAddr) -> String {
    let answer = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let kind = answer.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(kind.starts_with("text/plain"), "{kind}");
    answer.text().await.unwrap()
}

/// The value of the sample whose line starts with `series` (name and labels, exactly).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_a_throttled_api_and_a_webhook_show_up_without_skus() {
    let l = live(20).await;
    let addr = l.daemon.local_addr();
    let sku = catalog_item(4).sku;
    let desired = l.world.shopify.record(&sku).unwrap().offer.price.minor;

    // A hand edit in the webshop (its webhook reaches the daemon) and two 429s from the
    // marketplace during the next pass.
    l.world.shopify.set_offer(
        &sku,
        Offer::regular(Money::new(desired - 500, Currency::NOK)),
    );
    settle(&l).await;
    l.world.ebay.faults().inject(
        Fault::Status {
            status: 429,
            retry_after: Some(0),
        },
        2,
    );
    let r = l.engine.reconcile(&Scope::default()).await.unwrap();
    assert!(r.converged(), "{}", r.table());
    // The pass's own write to the webshop comes back as a webhook: let the daemon take it
    // in, so the inbox is empty when scraped, and the write is confirmed (by that webhook,
    // or by the read-back when the webhook came before the write was recorded).
    settle(&l).await;
    let mut confirmed = false;
    for _ in 0..400 {
        if l.engine.store().unverified(10).await.unwrap().1 == 0 {
            confirmed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(confirmed, "the webshop's write was never confirmed");

    let text = scrape(addr).await;
    for series in [
        r#"omnisync_reconcile_runs_total{scope="full",status="ok"}"#,
        r#"omnisync_api_requests_total{connector="webshop",status="2xx"}"#,
        r#"omnisync_api_requests_total{connector="marketplace",status="429"}"#,
        r#"omnisync_api_throttled_total{connector="marketplace"}"#,
        r#"omnisync_webhooks_total{connector="webshop",outcome="accepted"}"#,
        r#"omnisync_corrections_total{channel="webshop",outcome="applied"}"#,
        r#"omnisync_corrections_total{channel="webshop",outcome="confirmed"}"#,
    ] {
        let v = sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
        assert!(v >= 1.0, "{series} = {v}");
    }
    assert_eq!(
        sample(&text, r#"omnisync_consistency{channel="webshop"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&text, "omnisync_inbox_depth"), Some(0.0));
    assert!(text.contains("omnisync_reconcile_duration_seconds_bucket{scope=\"full\""));
    assert!(text.contains("omnisync_last_successful_read_timestamp_seconds{connector=\"erp\"}"));
    assert!(text.contains("omnisync_build_info{version="));
    // Bounded labels: no SKU of the catalog is ever a label value.
    for i in 0..20 {
        let sku = catalog_item(i).sku;
        assert!(!text.contains(&format!("\"{sku}\"")), "{sku} in\n{text}");
    }
    l.daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_gauges_follow_the_store_and_fall_back_to_zero() {
    let l = live(5).await;
    let addr = l.daemon.local_addr();
    let pool = l.engine.store().pool();
    let sku = catalog_item(1).sku;
    sqlx::query(
        "UPDATE target_state SET in_sync = 0, cause = 'channel_edit' \
         WHERE channel = 'social' AND sku = $1 AND field = 'offer'",
    )
    .bind(&sku)
    .execute(pool)
    .await
    .unwrap();
    let open = r#"omnisync_drift_open{channel="social",cause="channel_edit"}"#;
    assert_eq!(sample(&scrape(addr).await, open), Some(1.0));

    sqlx::query("UPDATE target_state SET in_sync = 1, cause = NULL WHERE channel = 'social'")
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(sample(&scrape(addr).await, open), Some(0.0));
    l.daemon.shutdown().await;
}

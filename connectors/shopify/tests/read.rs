//! Reading through the adapter against the simulator: full snapshots (bulk and paged),
//! resuming a bulk read in a new process, `read_skus`, and the healthcheck.

mod common;

use std::collections::HashSet;

use common::{Harness, catalog, loc, nok, read, read_all};
use omnisync_sdk::sim::SimControl;
use omnisync_sdk::{Connector, Currency, ErrorKind, Offer};
use omnisync_shopify::FullReadMode;
use omnisync_shopify::mapping::{REF_INVENTORY_ITEM_ID, REF_PRODUCT_ID};
use omnisync_shopify::sim::SimOptions;

#[tokio::test]
async fn bulk_full_read_returns_every_variant_in_several_pages() {
    let h = Harness::new(SimOptions::default(), catalog(1000)).await;
    let c = h.connector_with(|s| s.page_size = 300);
    let before = h.sim.counters().snapshot().requests;
    let (records, pages) = read_all(&c).await;
    assert_eq!(pages, 4);
    assert_eq!(records.len(), 1000);
    // One bulk run, two polls (RUNNING then COMPLETED), one download.
    assert_eq!(h.sim.counters().snapshot().requests - before, 4);

    let expected = h.sim.records();
    let mut got = records.clone();
    got.sort_by(|a, b| a.sku.cmp(&b.sku));
    for (sim, rec) in expected.iter().zip(&got) {
        assert_eq!(rec.sku.as_deref(), Some(sim.sku.as_str()));
        assert_eq!(rec.offer, Some(sim.offer), "offer of {}", sim.sku);
        let stock: Vec<(String, i64)> = rec
            .stock
            .iter()
            .map(|s| (s.location.clone(), s.available))
            .collect();
        let sim_stock: Vec<(String, i64)> = sim.stock.clone().into_iter().collect();
        assert_eq!(stock, sim_stock, "stock of {}", sim.sku);
        assert!(rec.external_id.starts_with("gid://shopify/ProductVariant/"));
        assert!(rec.refs[REF_PRODUCT_ID].starts_with("gid://shopify/Product/"));
        assert!(rec.refs[REF_INVENTORY_ITEM_ID].starts_with("gid://shopify/InventoryItem/"));
    }
    // Sales read back as sales.
    let sale = got
        .iter()
        .find(|r| r.sku.as_deref() == Some("SKU-00005"))
        .unwrap();
    assert_eq!(
        sale.offer,
        Some(Offer {
            price: nok(10_050),
            sale: Some(nok(8_050))
        })
    );
    // Products group variants: fewer products than variants.
    let products: HashSet<&String> = got.iter().map(|r| &r.refs[REF_PRODUCT_ID]).collect();
    assert!(products.len() < got.len() && products.len() > got.len() / 3);
}

#[tokio::test]
async fn bulk_read_resumes_in_a_new_connector() {
    let h = Harness::new(SimOptions::default(), catalog(50)).await;
    let first = h.connector_with(|s| s.page_size = 20);
    let page = first.read_page(None).await.expect("first page");
    assert_eq!(page.records.len(), 20);
    // A restarted daemon continues with the cursor it stored.
    let second = h.connector_with(|s| s.page_size = 20);
    let mut all = page.records;
    let mut cursor = page.next;
    while let Some(c) = cursor {
        let p = second.read_page(Some(c)).await.expect("resumed page");
        all.extend(p.records);
        cursor = p.next;
    }
    assert_eq!(all.len(), 50);
    let skus: HashSet<_> = all.iter().map(|r| r.sku.clone()).collect();
    assert_eq!(skus.len(), 50);
}

#[tokio::test]
async fn paged_full_read_matches_bulk() {
    // Three 702-point pages drain a Standard bucket; a Plus-sized one keeps the test fast.
    let options = SimOptions {
        bucket_size: 20_000.0,
        restore_rate: 1_000.0,
        ..SimOptions::default()
    };
    let h = Harness::new(options, catalog(120)).await;
    let paged = h.connector_with(|s| {
        s.full_read = FullReadMode::Paged;
        s.page_size = 50;
    });
    let (mut by_pages, pages) = read_all(&paged).await;
    assert_eq!(pages, 3);
    let (mut by_bulk, _) = read_all(&h.connector()).await;
    by_pages.sort_by(|a, b| a.sku.cmp(&b.sku));
    by_bulk.sort_by(|a, b| a.sku.cmp(&b.sku));
    assert_eq!(by_pages, by_bulk);
}

#[tokio::test]
async fn read_skus_reads_a_batch_in_one_call() {
    let h = Harness::new(SimOptions::default(), catalog(300)).await;
    let c = h.connector();
    let max = c.capabilities().max_read_batch;
    assert!(
        max >= 50,
        "three locations leave room for {max} variants per query"
    );
    let mut skus: Vec<String> = (0..40).map(|i| format!("SKU-{:05}", i * 7)).collect();
    skus.push("NOT-THERE".into());
    skus.push("SKU-00007".into()); // duplicate
    let before = h.sim.counters().snapshot().requests;
    let found = c.read_skus(&skus).await.expect("read_skus");
    assert_eq!(h.sim.counters().snapshot().requests - before, 1);
    assert_eq!(found.len(), 40);
    assert!(found.iter().all(|r| r.sku.as_deref() != Some("NOT-THERE")));
    let r = found
        .iter()
        .find(|r| r.sku.as_deref() == Some("SKU-00014"))
        .unwrap();
    assert_eq!(r.stock.len(), 3);
    assert_eq!(r.stock[0].location, loc(1));
    assert_eq!(r.stock[0].available, 0);
    assert!(c.read_skus(&[]).await.expect("empty").is_empty());
}

#[tokio::test]
async fn read_skus_with_quotes_and_more_than_one_query() {
    let mut records = catalog(3);
    records[0].sku = "A \"quoted\" sku".into();
    records[1].sku = "back\\slash".into();
    let h = Harness::new(SimOptions::default(), records).await;
    let c = h.connector_with(|s| s.max_query_cost = 50); // 3 variants per query
    assert_eq!(c.capabilities().max_read_batch, 3);
    let found = read(&c, &["A \"quoted\" sku", "back\\slash", "SKU-00002"]).await;
    assert_eq!(found.len(), 3);
    let h2 = Harness::new(SimOptions::default(), catalog(10)).await;
    let c2 = h2.connector_with(|s| s.max_query_cost = 50);
    let skus: Vec<String> = (0..10).map(|i| format!("SKU-{i:05}")).collect();
    let before = h2.sim.counters().snapshot().requests;
    assert_eq!(c2.read_skus(&skus).await.expect("read").len(), 10);
    assert_eq!(
        h2.sim.counters().snapshot().requests - before,
        4,
        "ceil(10 / 3) queries"
    );
}

#[tokio::test]
async fn healthcheck_checks_the_shop_currency() {
    let h = Harness::new(SimOptions::default(), catalog(1)).await;
    h.connector().healthcheck().await.expect("healthy");
    let wrong = h.connector_with(|s| s.currency = Currency::SEK);
    let e = wrong.healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.to_string().contains("NOK"), "{e}");
}

#[tokio::test]
async fn a_foreign_cursor_is_refused() {
    let h = Harness::new(SimOptions::default(), catalog(1)).await;
    let e = h
        .connector()
        .read_page(Some("offset=5".into()))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
}

#[tokio::test]
async fn empty_shop_reads_empty() {
    let h = Harness::new(SimOptions::default(), Vec::new()).await;
    let (records, pages) = read_all(&h.connector()).await;
    assert!(records.is_empty());
    assert_eq!(pages, 1);
}

#[tokio::test]
async fn scales_to_100k_variants() {
    let h = Harness::new(SimOptions::default(), Vec::new()).await;
    h.sim.seed(catalog(100_000));
    let c = h.connector_with(|s| s.page_size = 5_000);
    let found = read(&c, &["SKU-99999", "SKU-50000", "SKU-00000"]).await;
    assert_eq!(found.len(), 3);
    // Paged reads walk the id index: a page deep in the catalog is as cheap as the first.
    let paged = h.connector_with(|s| s.full_read = FullReadMode::Paged);
    let first = paged.read_page(None).await.expect("page");
    assert!(first.next.is_some());
    let (records, pages) = read_all(&c).await;
    assert_eq!(records.len(), 100_000);
    assert_eq!(pages, 20);
}

//! Failures and how the adapter classifies them: refused credentials, injected HTTP
//! faults, Shopify's own `THROTTLED` and `MAX_COST_EXCEEDED` answers, pacing by the cost
//! bucket, and the simulator's enforcement of the 2026-04 inventory rules.

mod common;

use std::time::Duration;

use common::{Harness, catalog, loc, read, stock_fix};
use omnisync_sdk::sim::{Fault, SimControl};
use omnisync_sdk::{Connector, ErrorKind, SecretRef};
use omnisync_shopify::sim::{DEMO_ACCESS_TOKEN, INVALID_TOKEN_BODY, SimOptions};
use serde_json::{Value, json};

#[tokio::test]
async fn wrong_token_is_an_auth_error_and_never_echoed() {
    let h = Harness::new(SimOptions::default(), catalog(2)).await;
    let c = h
        .connector_with(|s| s.access_token = SecretRef::Literal("shpat_wrong_secret_value".into()));
    let e = c.healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert_eq!(e.status, Some(401));
    assert!(!e.to_string().contains("shpat_wrong_secret_value"));
    assert_eq!(c.read_page(None).await.unwrap_err().kind, ErrorKind::Auth);
    assert_eq!(
        c.read_skus(&["SKU-00000".into()]).await.unwrap_err().kind,
        ErrorKind::Auth
    );

    // The exact body Shopify sends, also for a missing header.
    let url = format!("{}/admin/api/2026-10/graphql.json", h.server.base_url());
    let resp = reqwest::Client::new()
        .post(&url)
        .json(&json!({"query": "{ shop { name } }"}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.text().await.expect("body"), INVALID_TOKEN_BODY);
}

#[tokio::test]
async fn injected_500_is_transient() {
    let h = Harness::new(SimOptions::default(), catalog(2)).await;
    h.sim.faults().inject(
        Fault::Status {
            status: 500,
            retry_after: None,
        },
        1,
    );
    let e = h
        .connector()
        .read_skus(&["SKU-00000".into()])
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient);
    assert!(e.is_retryable());
    // The fault was one-shot.
    assert_eq!(read(&h.connector(), &["SKU-00000"]).await.len(), 1);
}

#[tokio::test]
async fn injected_429_is_throttled_with_retry_after() {
    let h = Harness::new(SimOptions::default(), catalog(2)).await;
    let c = h.connector();
    let r = read(&c, &["SKU-00000"]).await;
    h.sim.faults().inject(
        Fault::Status {
            status: 429,
            retry_after: Some(3),
        },
        1,
    );
    let e = c
        .push(&[stock_fix(&r[0], &loc(1), 1, None)])
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Throttled);
    assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
    assert_eq!(h.record("SKU-00000").stock[&loc(1)], 0, "nothing applied");
}

#[tokio::test]
async fn injected_malformed_json_is_a_protocol_error() {
    let h = Harness::new(SimOptions::default(), catalog(2)).await;
    h.sim.faults().inject(Fault::MalformedJson, 1);
    let e = h.connector().healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Protocol);
    assert!(e.to_string().contains("graphql.json (shop)"), "{e}");
}

#[tokio::test]
async fn malformed_bulk_result_is_a_protocol_error() {
    let h = Harness::new(SimOptions::default(), catalog(2)).await;
    let c = h.connector();
    // Run, poll, poll pass; the download gets garbage.
    h.sim.faults().inject(Fault::Delay { ms: 0 }, 3);
    h.sim.faults().inject(Fault::MalformedJson, 1);
    let e = c.read_page(None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Protocol);
}

#[tokio::test]
async fn shopify_throttled_answer_is_throttled_with_the_bucket_wait() {
    // A bucket that barely refills, so the expected wait does not depend on test speed.
    let options = SimOptions {
        bucket_size: 100.0,
        restore_rate: 0.01,
        ..SimOptions::default()
    };
    let h = Harness::new(options, catalog(10)).await;
    let skus: Vec<String> = (0..5).map(|i| format!("SKU-{i:05}")).collect();
    // 2 + 5 × 14 = 72 points: the first query fits, leaving about 28.
    let a = h.connector();
    assert_eq!(a.read_skus(&skus).await.expect("first").len(), 5);
    // A second process (knowing nothing of the bucket) asks again: Shopify says THROTTLED.
    let b = h.connector();
    let e = b.read_skus(&skus).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Throttled);
    assert!(e.to_string().contains("THROTTLED"), "{e}");
    let wait = e.retry_after.expect("retry_after");
    // (72 − 28 available) / 0.01 points per second.
    assert!(
        wait >= Duration::from_secs(4_300) && wait <= Duration::from_secs(4_410),
        "{wait:?}"
    );
    assert_eq!(h.sim.counters().snapshot().throttled, 1);

    // The first process knows the bucket is short and does not even ask.
    let requests = h.sim.counters().snapshot().requests;
    let e = a.read_skus(&skus).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Throttled);
    assert!(e.retry_after.is_some_and(|w| w > Duration::from_secs(30)));
    assert_eq!(h.sim.counters().snapshot().requests, requests);
}

#[tokio::test]
async fn the_connector_waits_for_a_short_bucket_instead_of_being_throttled() {
    let options = SimOptions {
        bucket_size: 100.0,
        restore_rate: 200.0,
        ..SimOptions::default()
    };
    let h = Harness::new(options, catalog(10)).await;
    let c = h.connector();
    let skus: Vec<String> = (0..6).map(|i| format!("SKU-{i:05}")).collect();
    // 86 points each against a 100-point bucket: every query after the first must wait.
    for _ in 0..5 {
        assert_eq!(c.read_skus(&skus).await.expect("paced").len(), 6);
    }
    assert_eq!(h.sim.counters().snapshot().throttled, 0);
}

#[tokio::test]
async fn query_over_the_cost_limit_is_a_config_error() {
    let options = SimOptions {
        max_query_cost: 100,
        ..SimOptions::default()
    };
    let h = Harness::new(options.clone(), catalog(20)).await;
    // Adapter configured for the documented 1000 against a shop allowing 100.
    let c = h.connector_with(|s| s.max_query_cost = 1000);
    let skus: Vec<String> = (0..20).map(|i| format!("SKU-{i:05}")).collect();
    let e = c.read_skus(&skus).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.to_string().contains("MAX_COST_EXCEEDED"), "{e}");
}

async fn raw(h: &Harness, version: &str, query: &str, variables: Value) -> Value {
    let url = format!("{}/admin/api/{version}/graphql.json", h.server.base_url());
    reqwest::Client::new()
        .post(&url)
        .header("X-Shopify-Access-Token", DEMO_ACCESS_TOKEN)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn simulator_enforces_the_2026_04_inventory_rules() {
    let h = Harness::new(SimOptions::default(), catalog(2)).await;
    let c = h.connector();
    let r = read(&c, &["SKU-00000"]).await;
    let item = r[0].refs["inventory_item_id"].clone();
    let input = |cfq: bool| {
        let mut q = json!({ "inventoryItemId": item, "locationId": loc(1), "quantity": 3 });
        if cfq {
            q["changeFromQuantity"] = Value::Null;
        }
        json!({ "input": { "name": "available", "reason": "correction", "quantities": [q] } })
    };
    let without_directive = "mutation M($input: InventorySetQuantitiesInput!) { inventorySetQuantities(input: $input) { userErrors { code } } }";
    let with_directive = "mutation M($input: InventorySetQuantitiesInput!) { inventorySetQuantities(input: $input) @idempotent(key: \"k-1\") { inventoryAdjustmentGroup { id } userErrors { code field } } }";

    let v = raw(&h, "2026-10", without_directive, input(true)).await;
    assert_eq!(v["errors"][0]["extensions"]["code"], "BAD_REQUEST", "{v}");
    let v = raw(&h, "2026-10", with_directive, input(false)).await;
    assert_eq!(
        v["errors"][0]["extensions"]["code"], "INVALID_FIELD_ARGUMENTS",
        "{v}"
    );
    let v = raw(&h, "2026-10", with_directive, input(true)).await;
    assert!(
        v["data"]["inventorySetQuantities"]["inventoryAdjustmentGroup"]["id"].is_string(),
        "{v}"
    );
    assert!(
        v["extensions"]["cost"]["throttleStatus"]["restoreRate"].is_number(),
        "{v}"
    );
    // Same key, other parameters.
    let mut other = input(true);
    other["input"]["quantities"][0]["quantity"] = json!(4);
    let v = raw(&h, "2026-10", with_directive, other).await;
    assert_eq!(
        v["data"]["inventorySetQuantities"]["userErrors"][0]["code"],
        "IDEMPOTENCY_KEY_PARAMETER_MISMATCH",
        "{v}"
    );
    // 2026-01: the directive is optional.
    let v = raw(&h, "2026-01", without_directive, input(true)).await;
    assert!(v.get("errors").is_none(), "{v}");

    // Oversized input arrays are refused as Shopify refuses them.
    let many: Vec<Value> = (0..251)
        .map(|_| json!({ "inventoryItemId": item, "locationId": loc(1), "quantity": 1, "changeFromQuantity": null }))
        .collect();
    let v = raw(
        &h,
        "2026-10",
        with_directive,
        json!({ "input": { "name": "available", "reason": "correction", "quantities": many } }),
    )
    .await;
    assert_eq!(
        v["errors"][0]["extensions"]["code"], "MAX_INPUT_SIZE_EXCEEDED",
        "{v}"
    );

    // Pages are at most 250.
    let v = raw(
        &h,
        "2026-10",
        "{ productVariants(first: 251) { nodes { id } } }",
        json!({}),
    )
    .await;
    assert_eq!(v["errors"][0]["extensions"]["code"], "BAD_REQUEST", "{v}");

    // Aliases and costs: two aliased shop queries, each an object (1 point).
    let v = raw(
        &h,
        "2026-10",
        "{ a: shop { name } b: shop { currencyCode } }",
        json!({}),
    )
    .await;
    assert_eq!(v["data"]["b"]["currencyCode"], "NOK");
    assert_eq!(v["extensions"]["cost"]["requestedQueryCost"], 2);
}

#[tokio::test]
async fn a_bulk_query_already_running_is_transient() {
    let options = SimOptions {
        max_concurrent_bulk_queries: 1,
        ..SimOptions::default()
    };
    let h = Harness::new(options, catalog(3)).await;
    // Someone else's bulk query is running (never polled to completion).
    let v = raw(
        &h,
        "2026-10",
        "mutation { bulkOperationRunQuery(query: \"{ productVariants { edges { node { id } } } }\") { bulkOperation { id status } userErrors { code } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        v["data"]["bulkOperationRunQuery"]["bulkOperation"]["status"], "CREATED",
        "{v}"
    );
    let e = h.connector().read_page(None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient);
    assert!(e.to_string().contains("OPERATION_IN_PROGRESS"), "{e}");
}

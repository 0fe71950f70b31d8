//! The simulator's raw answers match what trytond 8.0.12 answered to the same requests
//! (recorded with curl against a server set up by /work/shared/real-servers/tryton).

use std::io::Read;

use base64::Engine;
use omnisync_sdk::sim::{SimControl, SimRecord};
use omnisync_sdk::{Currency, Money, Offer};
use omnisync_tryton::sim::{self, SimOptions};
use serde_json::{Value, json};

struct Wire {
    client: reqwest::Client,
    url: String,
    _server: omnisync_sdk::sim::SimServer,
}

async fn wire(n: usize) -> Wire {
    let (sim, server) = sim::start("127.0.0.1:0".parse().unwrap(), SimOptions::default())
        .await
        .unwrap();
    sim.seed(
        (0..n)
            .map(|i| SimRecord {
                sku: format!("SHIRT-{i}"),
                title: "Test Shirt".into(),
                offer: Offer::regular(Money::new(2499, Currency::NOK)),
                stock: [("3".to_string(), 5), ("11".to_string(), 7)]
                    .into_iter()
                    .collect(),
            })
            .collect(),
    );
    Wire {
        client: reqwest::Client::new(),
        url: format!("{}/omnisync/rpc/", server.base_url()),
        _server: server,
    }
}

impl Wire {
    async fn post(&self, body: Value, auth: Option<&str>) -> reqwest::Response {
        let mut r = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send().await.unwrap()
    }

    async fn login(&self) -> String {
        let v: Value = self
            .post(json!({"id": 1, "method": "common.db.login", "params": ["admin", {"password": "admin"}, "en"]}), None)
            .await
            .json()
            .await
            .unwrap();
        let result = v["result"].as_array().unwrap();
        assert_eq!(result.len(), 3, "[user_id, session, bus_url]");
        assert_eq!(result[2], Value::Null);
        let raw = format!("admin:{}:{}", result[0], result[1].as_str().unwrap());
        format!(
            "Session {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

#[tokio::test]
async fn login_answers() {
    let w = wire(0).await;
    let r = w
        .post(json!({"id": 1, "method": "common.db.login", "params": ["admin", {"password": "nope"}, "en"]}), None)
        .await;
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let r = w
        .post(
            json!({"id": 1, "method": "common.db.login", "params": ["admin", {}, "en"]}),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"id": 1, "error": ["LoginException", ["password", "Password for admin", "password"]]})
    );
}

#[tokio::test]
async fn session_answers() {
    let w = wire(2).await;
    let call = json!({"id": 1, "method": "model.product.product.search_read", "params": [[], 0, 10, null, ["code"], {}]});
    let r = w.post(call.clone(), None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"Tryton\"");
    assert!(r.bytes().await.unwrap().is_empty());
    let fake = format!(
        "Session {}",
        base64::engine::general_purpose::STANDARD.encode("admin:1:deadbeef")
    );
    assert_eq!(w.post(call.clone(), Some(&fake)).await.status(), 401);
    let auth = w.login().await;
    assert_eq!(w.post(call, Some(&auth)).await.status(), 200);
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("admin:admin")
    );
    let v: Value = w
        .post(
            json!({"id": 2, "method": "model.product.product.search_count", "params": [[], {}]}),
            Some(&basic),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"id": 2, "result": 2}));
}

#[tokio::test]
async fn read_answers() {
    let w = wire(2).await;
    let auth = w.login().await;
    let v: Value = w
        .post(json!({"id": 2, "method": "model.product.product.search_read", "params": [[["id", ">", 0]], 0, 1000, [["id", "ASC"]], ["code", "name", "rec_name", "list_price", "quantity", "forecast_quantity"], {"company": 1, "locations": [3]}]}), Some(&auth))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["result"][0],
        json!({"id": 1, "code": "SHIRT-0", "name": "Test Shirt", "rec_name": "[SHIRT-0] Test Shirt",
               "list_price": {"__class__": "Decimal", "decimal": "24.99"},
               "quantity": 5.0, "forecast_quantity": 5.0})
    );
    // Without the company in the context the company-dependent price reads as null.
    let v: Value = w
        .post(json!({"id": 3, "method": "model.product.product.search_read", "params": [[["code", "in", ["SHIRT-1", "NOPE"]]], 0, null, null, ["code", "list_price", "quantity"], {"locations": [3, 11]}]}), Some(&auth))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["result"],
        json!([{"id": 2, "code": "SHIRT-1", "list_price": null, "quantity": 12.0}])
    );
    let v: Value = w
        .post(json!({"id": 4, "method": "model.stock.location.read", "params": [[3, 998, 999], ["name"], {}]}), Some(&auth))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({"id": 4, "error": ["UserError", ["You are trying to read records \"998, 999\" of \"Stock Location\" that don't exist.", "", null]]})
    );
    let v: Value = w
        .post(json!({"id": 5, "method": "model.product.product.search_read", "params": [[], 0, null, null, ["code", "nosuchfield"], {}]}), Some(&auth))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"id": 5, "error": ["'nosuchfield'", ""]}));
    let v: Value = w
        .post(json!({"id": 6, "method": "model.company.company.read", "params": [[1], ["currency.code", "rec_name"], {}]}), Some(&auth))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["result"][0]["currency."]["code"], "NOK");
    let r = w
        .post(
            json!({"id": 7, "method": "model.product.product.nosuchmeth", "params": [[1], {}]}),
            Some(&auth),
        )
        .await;
    assert_eq!(r.status(), 403);
    let v: Value = w
        .post(
            json!({"id": 8, "method": "model.foo.bar.read", "params": [[1], ["code"], {}]}),
            Some(&auth),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"id": 8, "error": ["'foo.bar'", ""]}));
}

#[tokio::test]
async fn large_answers_are_marked_gzip_and_compressed_on_request() {
    let w = wire(40).await;
    let auth = w.login().await;
    let call = json!({"id": 2, "method": "model.product.product.search_read", "params": [[], 0, null, null, ["code", "name", "rec_name"], {}]});
    // Not accepted: trytond still marks the plain body gzip.
    let r = w.post(call.clone(), Some(&auth)).await;
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let plain = r.bytes().await.unwrap();
    assert_eq!(plain[0], b'{');
    // Accepted: compressed.
    let r = w
        .client
        .post(&w.url)
        .header("content-type", "application/json")
        .header("accept-encoding", "gzip")
        .header("authorization", &auth)
        .body(call.to_string())
        .send()
        .await
        .unwrap();
    let gz = r.bytes().await.unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, plain);
}

#[tokio::test]
async fn other_paths() {
    let w = wire(0).await;
    let base = w.url.trim_end_matches("omnisync/rpc/").to_string();
    let login = json!({"id": 1, "method": "common.db.login", "params": ["admin", {"password": "admin"}, "en"]});
    let r = w
        .client
        .post(format!("{base}omnisync/"))
        .header("content-type", "application/json")
        .body(login.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = w
        .client
        .post(format!("{base}nodb/rpc/"))
        .header("content-type", "application/json")
        .body(login.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = w
        .client
        .post(format!("{base}rpc/"))
        .header("content-type", "application/json")
        .body(json!({"id": 1, "method": "common.server.version", "params": []}).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"id": 1, "result": "8.0"}));
}

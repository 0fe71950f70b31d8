//! The web page and the JSON API against a store with real runs (the demo's simulators and
//! engine) and hand-made rows: every page answers with what the store holds, the API's
//! shapes and errors, the token rules, HTML escaping of hostile text, the OpenAPI document.

mod web_support;

use omnisync::web::{self, auth::Guard};
use web_support::{HOSTILE_REASON, HOSTILE_SKU, env, get, seed_rows, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_show_what_the_store_holds() {
    let e = env(60, 1, "").await;
    seed_rows(&e.engine).await;
    let addr = serve(web::router(e.engine.clone())).await;

    let home = get(addr, "/", &[]).await;
    assert_eq!(home.status, 200, "{}", home.body);
    assert!(home.headers["content-type"].starts_with("text/html"));
    for want in [
        "webshop",
        "marketplace",
        "social",
        "erp",
        "Consistency over time",
        "<svg",
        "<polyline",
        "Recent runs",
        "href=\"/runs/2\"",
    ] {
        assert!(home.body.contains(want), "overview lacks {want:?}");
    }

    let drift = get(addr, "/drift?channel=webshop&cause=channel_edit", &[]).await;
    assert_eq!(drift.status, 200);
    let jacket = "href=\"/items/JKT-000004\"";
    assert!(drift.body.contains(jacket), "{}", drift.body);
    assert!(
        drift.body.contains("129.90 NOK"),
        "offers are shown formatted"
    );
    assert!(
        !drift.body.contains("oslo</td>"),
        "the filter leaves out other causes"
    );
    let older = get(addr, "/drift?older_than=1h&field=offer", &[]).await;
    assert_eq!(older.status, 200);
    assert!(older.body.contains(jacket));
    let newer = get(addr, "/drift?older_than=3h", &[]).await;
    assert_eq!(newer.status, 200);
    assert!(!newer.body.contains(jacket), "open for only 2 h");

    let held = get(addr, "/held", &[]).await;
    assert_eq!(held.status, 200);
    assert!(held.body.contains("TEE-000001") && held.body.contains("max_price_change_percent"));

    let dead = get(addr, "/dead-letters", &[]).await;
    assert_eq!(dead.status, 200);
    assert!(dead.body.contains("CAP-000003"));

    let runs = get(addr, "/runs", &[]).await;
    assert_eq!(runs.status, 200);
    assert!(runs.body.contains("href=\"/runs/1\"") && runs.body.contains("href=\"/runs/2\""));
    let run = get(addr, "/runs/2", &[]).await;
    assert_eq!(run.status, 200);
    assert!(run.body.contains("Run #2") && run.body.contains("channel_edit"));

    let item = get(addr, "/items/JKT-000004", &[]).await;
    assert_eq!(item.status, 200, "{}", item.body);
    for want in [
        "Stock per location",
        "oslo-store",
        "central-wh",
        "On the channels",
        "Timeline",
    ] {
        assert!(item.body.contains(want), "item page lacks {want:?}");
    }

    let search = get(addr, "/search?sku=JKT-000004", &[]).await;
    assert_eq!(search.status, 303);
    assert_eq!(search.headers["location"], "/items/JKT-000004");
    e.world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_is_escaped() {
    let e = env(20, 0, "").await;
    seed_rows(&e.engine).await;
    let addr = serve(web::router(e.engine.clone())).await;
    for path in ["/drift", "/dead-letters"] {
        let page = get(addr, path, &[]).await;
        assert_eq!(page.status, 200);
        assert!(
            !page.body.contains("<script>alert"),
            "{path} renders a script"
        );
        assert!(
            !page.body.contains("<img src=x"),
            "{path} renders an image tag"
        );
    }
    let drift = get(addr, "/drift", &[]).await;
    assert!(
        drift.body.contains("&lt;script&gt;alert("),
        "{}",
        drift.body
    );
    let dead = get(addr, "/dead-letters", &[]).await;
    assert!(dead.body.contains("&lt;img src=x onerror=alert(1)&gt;"));
    // In a path and in the search box too.
    let item = get(addr, "/items/%3Cscript%3Ealert('sku')%3C%2Fscript%3E", &[]).await;
    assert_eq!(item.status, 200, "{}", item.body);
    assert!(!item.body.contains("<script>alert"));
    // The API returns the text as it is, as JSON.
    let api = get(addr, "/api/v1/dead-letters", &[]).await;
    assert_eq!(api.json()[0]["reason"], HOSTILE_REASON);
    let api = get(addr, "/api/v1/drift?channel=webshop&field=stock", &[]).await;
    assert!(
        api.json()
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["sku"] == HOSTILE_SKU)
    );
    e.world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_with_the_documented_shapes() {
    let e = env(60, 1, "").await;
    seed_rows(&e.engine).await;
    let addr = serve(web::router(e.engine.clone())).await;

    let o = get(addr, "/api/v1/overview", &[]).await;
    assert_eq!(o.status, 200);
    assert!(o.headers["content-type"].starts_with("application/json"));
    let o = o.json();
    let channels = o["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 4);
    let shop = channels.iter().find(|c| c["id"] == "webshop").unwrap();
    assert!(shop["consistency"].is_f64());
    assert!(shop["drift_open"].as_u64().unwrap() >= 2);
    assert!(o["recent_runs"].as_array().unwrap().len() >= 2);

    let drift = get(
        addr,
        "/api/v1/drift?channel=webshop&cause=channel_edit&older_than=1h",
        &[],
    )
    .await
    .json();
    let rows = drift.as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["sku"] == "JKT-000004" && r["cause"] == "channel_edit")
    );
    assert!(rows.iter().all(|r| r["channel"] == "webshop"));

    let item = get(addr, "/api/v1/items/JKT-000004", &[]).await.json();
    assert_eq!(item["sku"], "JKT-000004");
    assert_eq!(item["locations"].as_array().unwrap().len(), 3);
    assert!(item["channels"].is_array() && item["timeline"].is_array());

    let runs = get(addr, "/api/v1/runs", &[]).await.json();
    let runs = runs.as_array().unwrap();
    assert!(runs.len() >= 2);
    assert_eq!(runs[0]["id"], 2, "newest first");
    assert!(runs[0]["channels"].as_array().unwrap().len() == 4);

    let run = get(addr, "/api/v1/runs/1", &[]).await.json();
    assert_eq!(run["run"]["id"], 1);
    assert_eq!(run["report"]["run_id"], 1);

    let series = get(addr, "/api/v1/consistency?channel=social", &[])
        .await
        .json();
    let series = series.as_array().unwrap();
    assert_eq!(series.len(), 2, "one point per full run: {series:?}");
    assert!(series.iter().all(|p| p["channel"] == "social"));

    let held = get(addr, "/api/v1/held", &[]).await.json();
    assert_eq!(held[0]["sku"], "TEE-000001");
    assert_eq!(held[0]["channel"], "marketplace");

    let dead = get(addr, "/api/v1/dead-letters", &[]).await.json();
    assert_eq!(dead[0]["sku"], "CAP-000003");
    assert_eq!(dead[0]["attempts"], 5);
    e.world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_named_and_unknown_things_are_404() {
    let e = env(20, 0, "").await;
    let addr = serve(web::router(e.engine.clone())).await;
    for (path, status, names) in [
        ("/api/v1/items/NO-SUCH-SKU", 404, "NO-SUCH-SKU"),
        ("/api/v1/runs/999", 404, "999"),
        ("/api/v1/runs/latest", 400, "id"),
        ("/api/v1/drift?cause=gremlins", 400, "cause"),
        ("/api/v1/drift?field=colour", 400, "field"),
        ("/api/v1/drift?older_than=soon", 400, "older_than"),
        ("/api/v1/drift?channel=nowhere", 400, "channel"),
        ("/api/v1/drift?limit=0", 400, "limit"),
        ("/api/v1/drift?colour=red", 400, "colour"),
        ("/api/v1/consistency?runs=lots", 400, "runs"),
    ] {
        let a = get(addr, path, &[]).await;
        assert_eq!(a.status, status, "{path}: {}", a.body);
        let error = a.json()["error"].as_str().unwrap().to_string();
        assert!(
            error.contains(names),
            "{path}: {error:?} does not name {names:?}"
        );
    }
    let page = get(addr, "/drift?cause=gremlins", &[]).await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("cause") && page.body.contains("<form"));
    assert_eq!(get(addr, "/items/NO-SUCH-SKU", &[]).await.status, 404);
    assert_eq!(get(addr, "/runs/999", &[]).await.status, 404);
    e.world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_the_page_and_the_api() {
    let e = env(20, 0, "").await;
    let addr = serve(web::router_with_guard(
        e.engine.clone(),
        Guard::with_token("s3cret-token"),
    ))
    .await;

    // The API: a bearer token.
    let none = get(addr, "/api/v1/overview", &[]).await;
    assert_eq!(none.status, 401);
    assert!(none.headers["www-authenticate"].starts_with("Bearer"));
    assert!(none.json()["error"].as_str().unwrap().contains("token"));
    let wrong = get(
        addr,
        "/api/v1/overview",
        &[("Authorization", "Bearer s3cret-tokem")],
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(!wrong.body.contains("s3cret"), "the token is never echoed");
    let right = get(
        addr,
        "/api/v1/overview",
        &[("Authorization", "Bearer s3cret-token")],
    )
    .await;
    assert_eq!(right.status, 200);
    assert_eq!(
        get(addr, "/api/v1/openapi.json", &[]).await.status,
        401,
        "all of /api is guarded"
    );

    // The page: 401 with a form; ?token= once sets a session cookie and drops the token.
    let page = get(addr, "/drift", &[]).await;
    assert_eq!(page.status, 401);
    assert!(page.body.contains("name=\"token\""));
    // (minijinja's HTML escaping writes `/` as `&#x2f;`, which browsers read as `/`)
    assert!(
        page.body.contains("action=\"&#x2f;drift\""),
        "the form comes back here: {}",
        page.body
    );
    let login = get(addr, "/drift?channel=webshop&token=s3cret-token", &[]).await;
    assert_eq!(login.status, 303);
    assert_eq!(login.headers["location"], "/drift?channel=webshop");
    let cookie = &login.headers["set-cookie"];
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert!(
        !cookie.contains("s3cret"),
        "the cookie holds a digest, not the token"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let page = get(addr, "/drift?channel=webshop", &[("Cookie", &session)]).await;
    assert_eq!(page.status, 200);
    let forged = get(addr, "/", &[("Cookie", "omnisync_session=00ff")]).await;
    assert_eq!(forged.status, 401);
    assert_eq!(get(addr, "/?token=guess", &[]).await.status, 401);
    e.world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_mounts_the_page_behind_its_configured_token() {
    let e = env(20, 0, "token = \"literal:daemon-token\"").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daemon = omnisync::daemon::start(e.engine.clone(), listener).unwrap();
    let addr = daemon.local_addr();
    assert_eq!(
        get(addr, "/healthz", &[]).await.status,
        200,
        "health stays open"
    );
    assert_eq!(get(addr, "/", &[]).await.status, 401);
    assert_eq!(get(addr, "/api/v1/runs", &[]).await.status, 401);
    let ok = get(
        addr,
        "/api/v1/runs",
        &[("Authorization", "Bearer daemon-token")],
    )
    .await;
    assert_eq!(ok.status, 200);
    let ok = get(addr, "/", &[("Authorization", "Bearer daemon-token")]).await;
    assert_eq!(ok.status, 200);
    assert!(ok.body.contains("Consistency over time"));
    daemon.shutdown().await;
    e.world.shutdown().await;
}

#[test]
fn listening_beyond_loopback_requires_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let base = "[daemon]\ndatabase = \"sqlite://x.db\"\n\n[canonical]\ncurrency = \"NOK\"\n\n\
                [connectors.erp]\nkind = \"tryton\"\nprice = \"source\"\nstock = \"source\"\n\
                locations = { main = \"3\" }\n[connectors.erp.settings]\nbase_url = \"http://127.0.0.1:1\"\n\
                database = \"d\"\nlogin = \"u\"\npassword = \"literal:p\"\ncompany = 1\n";
    let with = |http: &str| {
        std::fs::write(
            &path,
            base.replace(
                "[canonical]",
                &format!("[daemon.http]\n{http}\n\n[canonical]"),
            ),
        )
        .unwrap();
        omnisync::config::Config::load(&path)
    };
    let err = with("listen = \"0.0.0.0:8080\"").unwrap_err().to_string();
    assert!(err.contains("daemon.http.token"), "{err}");
    with("listen = \"0.0.0.0:8080\"\ntoken = \"literal:t\"").unwrap();
    with("listen = \"127.0.0.1:8080\"").unwrap();
    with("listen = \"[::1]:8080\"").unwrap();
    let err = with("token = \"env:OMNISYNC_TEST_NO_SUCH_VARIABLE\"")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("daemon.http.token") && err.contains("OMNISYNC_TEST_NO_SUCH_VARIABLE"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_api_route() {
    let e = env(20, 0, "").await;
    seed_rows(&e.engine).await;
    let addr = serve(web::router(e.engine.clone())).await;
    let doc = get(addr, "/api/v1/openapi.json", &[]).await;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for route in web::API_ROUTES {
        assert!(
            paths.contains_key(*route),
            "{route} is not in the OpenAPI document"
        );
    }
    assert_eq!(paths.len(), web::API_ROUTES.len(), "{:?}", paths.keys());
    // And every documented route answers.
    for route in paths.keys() {
        let path = route.replace("{sku}", "JKT-000004").replace("{id}", "1");
        let a = get(addr, &path, &[]).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
    }
    for schema in [
        "Overview",
        "DriftRow",
        "ItemView",
        "ErrorBody",
        "RunRecord",
        "HeldRow",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "schema {schema} missing"
        );
    }
    e.world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serve_keeps_the_page_up_until_sigterm() {
    use std::io::BufRead;
    /// Kills the demo if the test fails before it stopped it.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            if self.0.kill().is_ok() {
                self.0.wait().ok();
            }
        }
    }
    let mut child = Reap(
        std::process::Command::new(env!("CARGO_BIN_EXE_omnisync"))
            .args(["demo", "--skus", "60", "--serve", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.strip_prefix("serving the page at http://") {
                let addr = rest.split('/').next().unwrap_or_default().to_string();
                tx.send(addr).unwrap();
            }
        }
    });
    let addr: std::net::SocketAddr = tokio::task::spawn_blocking(move || {
        rx.recv_timeout(std::time::Duration::from_secs(120))
            .expect("the demo converges and prints the URL")
    })
    .await
    .unwrap()
    .parse()
    .unwrap();
    assert_eq!(get(addr, "/healthz", &[]).await.status, 200);
    let page = get(addr, "/", &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Consistency over time"));
    let api = get(addr, "/api/v1/overview", &[]).await;
    assert_eq!(api.json()["channels"].as_array().unwrap().len(), 4);
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.0.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "the demo exits 0 after SIGTERM: {status}");
}

#[test]
fn demo_serve_refuses_a_non_loopback_address() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_omnisync"))
        .args(["demo", "--skus", "10", "--serve", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--serve") && err.contains("loopback"), "{err}");
}

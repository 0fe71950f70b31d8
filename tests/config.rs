//! Config loading: a bad config stops with the file, the key and the reason.

use std::path::PathBuf;

use omnisync::config::Config;

const GOOD: &str = r#"
[daemon]
database = "sqlite://omnisync.db"

[canonical]
currency = "NOK"

[[fx]]
from = "NOK"
to = "EUR"
rate = "0.0857"
date = "2026-01-01"

[connectors.erp]
kind = "tryton"
price = "source"
stock = "source"
locations = { oslo-store = "3", central-wh = "11" }
[connectors.erp.settings]
base_url = "http://127.0.0.1:8000"
database = "shop"
login = "admin"
password = "env:TRYTON_PASSWORD"
company = 1
locations = [3, 11]

[connectors.marketplace]
kind = "ebay"
price = "target"
stock = "target"
currency = "EUR"
prices_include_vat = true
vat_percent = "19"
rounding = "x.99"
stock_from = ["central-wh"]
safety_buffer = 2
[connectors.marketplace.settings]
base_url = "http://127.0.0.1:8001"
access_token = "env:EBAY_TOKEN"
"#;

fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("omnisync.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn problems(text: &str) -> String {
    let (_dir, path) = write(text);
    let err = Config::load(&path).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains(&path.display().to_string()),
        "names the file: {shown}"
    );
    shown
}

#[test]
fn a_good_config_loads() {
    let (_dir, path) = write(GOOD);
    let cfg = Config::load(&path).unwrap();
    assert_eq!(cfg.connectors.len(), 2);
    assert_eq!(
        cfg.connector("marketplace")
            .unwrap()
            .stock_rules
            .as_ref()
            .unwrap()
            .safety_buffer,
        2
    );
}

#[test]
fn unknown_keys_are_refused_with_their_path() {
    let shown = problems(&GOOD.replace("safety_buffer = 2", "safety_bufer = 2"));
    assert!(shown.contains("connectors.marketplace"), "{shown}");
    assert!(shown.contains("safety_bufer"), "{shown}");
}

#[test]
fn unknown_connector_settings_are_refused_with_their_path() {
    let shown = problems(&GOOD.replace("company = 1", "company = 1\ncompnay = 2"));
    assert!(shown.contains("connectors.erp.settings"), "{shown}");
    assert!(shown.contains("compnay"), "{shown}");
}

#[test]
fn semantic_problems_are_all_listed() {
    let text = GOOD
        .replace("rounding = \"x.99\"", "rounding = \"x.95\"")
        .replace(
            "stock_from = [\"central-wh\"]",
            "stock_from = [\"bergen-store\"]",
        )
        .replace("currency = \"EUR\"", "currency = \"SEK\"");
    let shown = problems(&text);
    assert!(
        shown.contains("connectors.marketplace.rounding: unknown rounding rule \"x.95\""),
        "{shown}"
    );
    assert!(
        shown.contains(
            "connectors.marketplace.stock_from: no stock source provides location \"bergen-store\""
        ),
        "{shown}"
    );
    assert!(
        shown.contains("connectors.marketplace.currency: no [[fx]] rate from NOK to SEK"),
        "{shown}"
    );
    assert!(shown.contains("3 problems"), "{shown}");
}

#[test]
fn two_stock_sources_for_one_location_are_refused() {
    let text = GOOD.replace(
        "[connectors.marketplace]",
        r#"[connectors.pos]
kind = "tryton"
stock = "source"
locations = { oslo-store = "5" }
[connectors.pos.settings]
base_url = "http://127.0.0.1:8002"
database = "pos"
login = "admin"
password = "env:POS_PASSWORD"
company = 1

[connectors.marketplace]"#,
    );
    let shown = problems(&text);
    assert!(shown.contains("already has a stock source"), "{shown}");
}

#[test]
fn bad_schedules_and_syntax_are_explained() {
    let shown =
        problems(&GOOD.replace("[daemon]", "[daemon]\nreconcile_schedule = \"every hour\""));
    assert!(shown.contains("daemon.reconcile_schedule"), "{shown}");
    let shown = problems("[canonical\ncurrency = 1");
    assert!(shown.contains("(file)"), "{shown}");
}

#[test]
fn a_missing_file_is_named() {
    let err = Config::load(std::path::Path::new("/nonexistent/omnisync.toml")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/omnisync.toml"));
    assert!(err.to_string().contains("file not found"));
}

#[test]
fn the_documented_example_config_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
    let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.connectors.len(), 4);
    assert_eq!(cfg.promotions.len(), 1);
}

/// `check-config` as systemd's `ExecReload=` runs it: `--no-secrets` passes a config whose
/// secrets cannot be read here, and still refuses a broken one with the file, key and reason.
#[test]
fn check_config_without_secrets_checks_everything_else() {
    let run = |text: &str, extra: &[&str]| {
        let (_dir, path) = write(text);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_omnisync"))
            .arg("check-config")
            .arg("--config")
            .arg(&path)
            .args(extra)
            .env_remove("TRYTON_PASSWORD")
            .env_remove("EBAY_TOKEN")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    // The secrets (env:TRYTON_PASSWORD, env:EBAY_TOKEN) are not set.
    let (code, text) = run(GOOD, &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("TRYTON_PASSWORD"), "{text}");
    let (code, text) = run(GOOD, &["--no-secrets"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("secrets not read"), "{text}");
    let broken = GOOD.replace("rounding = \"x.99\"", "rounding = \"x.95\"");
    let (code, text) = run(&broken, &["--no-secrets"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("connectors.marketplace.rounding"), "{text}");
}

//! The adapter against a real trytond 8.0 seeded by `/work/shared/real-servers/tryton`
//! (`install.sh`, `createdb.sh`, `start.sh`). Skipped unless `OMNISYNC_TRYTON_URL` is set,
//! e.g. `OMNISYNC_TRYTON_URL=http://127.0.0.1:8000`. Optional: `OMNISYNC_TRYTON_DB`
//! (default `shop`), `OMNISYNC_TRYTON_PRISTINE=1` to also check the exact seeded values
//! (they change once `smoke.sh` has run).
//!
//! Seed: company 1 in EUR; storage locations STO = 3 and STO2 = 11; SHIRT-S (template price
//! 19.99, 10 @ 3) and SHIRT-M (own price 24.99, 5 @ 3, 7 @ 11).

use omnisync_sdk::{Connector, Currency, ErrorKind, Money, Record, SecretRef};
use omnisync_tryton::{Settings, connect};

fn settings() -> Option<Settings> {
    let url = std::env::var("OMNISYNC_TRYTON_URL").ok()?;
    let db = std::env::var("OMNISYNC_TRYTON_DB").unwrap_or_else(|_| "shop".into());
    let mut s = Settings::new(
        url,
        db,
        "admin",
        SecretRef::Literal("admin".into()),
        1,
        vec![3, 11],
    );
    s.currency = "EUR".into();
    Some(s)
}

fn level(r: &Record, loc: &str) -> i64 {
    r.stock
        .iter()
        .find(|l| l.location == loc)
        .map_or(-1, |l| l.available)
}

#[tokio::test]
async fn reads_the_seeded_shirts_from_a_real_trytond() {
    let Some(settings) = settings() else {
        eprintln!("OMNISYNC_TRYTON_URL not set: skipping the real-trytond test");
        return;
    };
    let c = connect(settings).unwrap();
    c.healthcheck().await.unwrap();
    let page = c.read_page(None).await.unwrap();
    let shirt_s = page
        .records
        .iter()
        .find(|r| r.sku.as_deref() == Some("SHIRT-S"))
        .unwrap();
    let shirt_m = page
        .records
        .iter()
        .find(|r| r.sku.as_deref() == Some("SHIRT-M"))
        .unwrap();
    for r in [shirt_s, shirt_m] {
        assert!(r.offer.is_some(), "{r:?}");
        assert_eq!(r.stock.len(), 2);
    }
    // SHIRT-S has no variant price: the template's comes through list_price_used.
    assert_eq!(
        shirt_s.offer.unwrap().price,
        Money::parse_major("19.99", Currency::EUR).unwrap()
    );
    let back = c
        .read_skus(&["SHIRT-M".into(), "NOPE".into()])
        .await
        .unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].external_id, shirt_m.external_id);
    if std::env::var("OMNISYNC_TRYTON_PRISTINE").as_deref() == Ok("1") {
        assert_eq!(shirt_m.offer.unwrap().price.minor, 2499);
        assert_eq!((level(shirt_s, "3"), level(shirt_s, "11")), (10, 0));
        assert_eq!((level(shirt_m, "3"), level(shirt_m, "11")), (5, 7));
    }
}

#[tokio::test]
async fn real_trytond_refusals_are_classified() {
    let Some(settings) = settings() else {
        eprintln!("OMNISYNC_TRYTON_URL not set: skipping the real-trytond test");
        return;
    };
    let mut unknown = settings.clone();
    unknown.locations = vec![3, 99_999];
    let e = connect(unknown).unwrap().healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.to_string().contains("99999"), "{e}");

    let mut nok = settings.clone();
    nok.currency = "NOK".into();
    let e = connect(nok).unwrap().healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.to_string().contains("EUR"), "{e}");

    let mut legacy = settings.clone();
    legacy.rpc_path = String::new();
    let e = connect(legacy).unwrap().healthcheck().await.unwrap_err();
    assert_eq!((e.kind, e.status), (ErrorKind::Config, Some(405)));

    let mut wrong = settings;
    wrong.password = SecretRef::Literal("not-the-password".into());
    let e = connect(wrong).unwrap().healthcheck().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(!e.to_string().contains("not-the-password"));
}

/// Needs a trytond started with a short `[session] max_age` (e.g. 2 s) and
/// `OMNISYNC_TRYTON_SESSION_MAX_AGE=2`: the second read comes after the session expired, gets
/// HTTP 401, and the connector logs in again once.
#[tokio::test]
async fn real_trytond_session_expiry_logs_in_again() {
    let (Some(settings), Ok(timeout)) =
        (settings(), std::env::var("OMNISYNC_TRYTON_SESSION_MAX_AGE"))
    else {
        eprintln!("OMNISYNC_TRYTON_URL or OMNISYNC_TRYTON_SESSION_MAX_AGE not set: skipping");
        return;
    };
    let max_age: u64 = timeout.parse().unwrap();
    let c = connect(settings).unwrap();
    let first = c.read_skus(&["SHIRT-M".into()]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(max_age + 1)).await;
    let second = c.read_skus(&["SHIRT-M".into()]).await.unwrap();
    assert_eq!(first, second);
}

/// Small pages against the real server: every product once, answers over 1400 bytes (which
/// trytond marks gzip) included.
#[tokio::test]
async fn real_trytond_pages_by_id() {
    let Some(mut settings) = settings() else {
        eprintln!("OMNISYNC_TRYTON_URL not set: skipping the real-trytond test");
        return;
    };
    settings.page_size = 25;
    let c = connect(settings).unwrap();
    let mut cursor = None;
    let mut skus = std::collections::BTreeSet::new();
    let mut total = 0;
    loop {
        let page = c.read_page(cursor).await.unwrap();
        total += page.records.len();
        skus.extend(page.records.iter().filter_map(|r| r.sku.clone()));
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(skus.len(), total, "no product twice");
    assert!(skus.contains("SHIRT-S") && skus.contains("SHIRT-M"));
}

//! The web page in a real browser: Debian's headless Chromium opens the overview and an
//! item page of a daemon that converged the demo's drift, the test checks what the browser
//! got (the DOM after parsing), and saves a screenshot to `target/test-output/dashboard.png`.
//!
//! Needs Chromium, so it runs only when `OMNISYNC_CHROMIUM` names the binary
//! (`OMNISYNC_CHROMIUM=/usr/bin/chromium cargo test --test browser`;
//! `scripts/test-services.sh browser` installs the Debian package and does that). Without
//! it the test prints a note and passes.

mod web_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use omnisync::engine::Scope;
use web_support::env;

fn chromium(binary: &Path, profile: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", binary.display()));
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_the_page_of_a_converged_demo() {
    let Some(binary) = std::env::var_os("OMNISYNC_CHROMIUM").map(PathBuf::from) else {
        println!(
            "note: OMNISYNC_CHROMIUM is not set; skipping the browser test (scripts/test-services.sh browser runs it)"
        );
        return;
    };
    // The demo: drift injected, passes until every target is consistent again.
    let e = env(400, 0, "").await;
    for _ in 0..6 {
        if e.engine
            .reconcile(&Scope::default())
            .await
            .unwrap()
            .converged()
        {
            break;
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daemon = omnisync::daemon::start(e.engine.clone(), listener).unwrap();
    let ready = daemon.readiness().clone();
    for _ in 0..400 {
        if ready.is_ready() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(ready.is_ready(), "the daemon's first pass did not finish");
    let base = format!("http://{}", daemon.local_addr());
    let profile = tempfile::tempdir().unwrap();

    // What the browser shows (blocking calls off the runtime's workers).
    let (bin, prof, url) = (binary.clone(), profile.path().to_path_buf(), base.clone());
    let dom = tokio::task::spawn_blocking(move || {
        let out = chromium(&bin, &prof, &["--dump-dom", &format!("{url}/")]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap();
    for want in [
        "<h1>Channels</h1>",
        "webshop",
        "marketplace",
        "social",
        "Consistency over time",
        "<polyline",
        "100.00 %",
        "Recent runs",
    ] {
        assert!(
            dom.contains(want),
            "the browser's page lacks {want:?}:\n{dom}"
        );
    }
    let (bin, prof, url) = (binary.clone(), profile.path().to_path_buf(), base.clone());
    let item = tokio::task::spawn_blocking(move || {
        let out = chromium(
            &bin,
            &prof,
            &["--dump-dom", &format!("{url}/items/JKT-000004")],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap();
    for want in [
        "JKT-000004",
        "Stock per location",
        "oslo-store",
        "On the channels",
        "Timeline",
    ] {
        assert!(item.contains(want), "the item page lacks {want:?}:\n{item}");
    }

    // The screenshot.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-output");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("dashboard.png");
    if shot.exists() {
        std::fs::remove_file(&shot).unwrap();
    }
    let (bin, prof, url, file) = (binary, profile.path().to_path_buf(), base, shot.clone());
    tokio::task::spawn_blocking(move || {
        chromium(
            &bin,
            &prof,
            &[
                &format!("--screenshot={}", file.display()),
                "--window-size=1280,1600",
                &format!("{url}/"),
            ],
        )
    })
    .await
    .unwrap();
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 20_000,
        "suspiciously small screenshot: {} bytes",
        png.len()
    );
    println!("screenshot: {}", shot.display());

    daemon.shutdown().await;
    e.world.shutdown().await;
}

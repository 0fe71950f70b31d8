//! Names the build for `omnisync --version`: the crate version, the git commit (with a
//! `-dirty` mark for uncommitted changes to tracked files), the build date and the cargo
//! profile, e.g. `0.1.0 (66440e4a1b2c-dirty 2026-11-23 release)`.
//!
//! The values come from `vergen-gitcl`, which runs `git`. A crates.io tarball has no
//! repository but the `.cargo_vcs_info.json` that `cargo package` writes: its commit is used
//! then. Anything else without a repository (a source export) reads "unknown commit": the
//! build never fails for it.
//!
//! Sets `OMNISYNC_VERSION` (one line: `omnisync -V`) and writes `$OUT_DIR/long_version.txt`
//! (`omnisync --version`: also the full commit, its date, rustc and target).

use std::collections::BTreeMap;
use std::error::Error;
use std::path::Path;

use vergen_gitcl::{BuildBuilder, Emitter, GitclBuilder, RustcBuilder};

type Values = BTreeMap<String, String>;

fn main() {
    let mut values = vergen().unwrap_or_else(|e| {
        println!("cargo:warning=build metadata unavailable ({e}); --version says unknown");
        Values::new()
    });
    if let Some((sha, dirty)) = cargo_vcs_info() {
        values.insert("VERGEN_GIT_SHA".into(), sha);
        values.insert("VERGEN_GIT_DIRTY".into(), dirty.to_string());
        values.remove("VERGEN_GIT_COMMIT_DATE");
    }
    let get = |k: &str| values.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    let commit = match get("VERGEN_GIT_SHA") {
        Some(sha) => {
            let short: String = sha.chars().take(12).collect();
            let dirty = get("VERGEN_GIT_DIRTY") == Some("true");
            format!("{short}{}", if dirty { "-dirty" } else { "" })
        }
        None => "unknown commit".to_string(),
    };
    let date = get("VERGEN_BUILD_DATE").unwrap_or("unknown date");
    let short = format!("{version} ({commit} {date} {profile})");

    let mut long = format!("{short}\n");
    for (label, key) in [
        ("commit", "VERGEN_GIT_SHA"),
        ("committed", "VERGEN_GIT_COMMIT_DATE"),
        ("built", "VERGEN_BUILD_DATE"),
        ("rustc", "VERGEN_RUSTC_SEMVER"),
        ("target", "VERGEN_RUSTC_HOST_TRIPLE"),
    ] {
        if let Some(v) = get(key) {
            long.push_str(&format!("{label:<10} {v}\n"));
        }
    }
    long.push_str(&format!("{:<10} {profile}", "profile"));

    println!("cargo:rustc-env=OMNISYNC_VERSION={short}");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR for build scripts");
    std::fs::write(Path::new(&out).join("long_version.txt"), long)
        .expect("writing $OUT_DIR/long_version.txt");

    // vergen reruns this on a commit or branch switch (.git/HEAD and the ref); rerun on
    // source edits as well so the -dirty mark follows the tree. Only paths that exist: a
    // missing one would make cargo rerun it on every build.
    for path in [
        "src",
        "connectors",
        "migrations",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        if Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// Emits vergen's `cargo:` lines and returns the values it found.
fn vergen() -> Result<Values, Box<dyn Error + Send + Sync>> {
    let build = BuildBuilder::default().build_date(true).build()?;
    let rustc = RustcBuilder::default()
        .semver(true)
        .host_triple(true)
        .build()?;
    let git = GitclBuilder::default()
        .sha(false)
        .dirty(false)
        .commit_date(true)
        .build()?;
    let mut emitter = Emitter::default();
    emitter
        .quiet()
        .add_instructions(&build)?
        .add_instructions(&rustc)?
        .add_instructions(&git)?;
    emitter.emit()?;
    Ok(emitter
        .cargo_rustc_env_map()
        .iter()
        // What vergen could not find it fills with a placeholder: leave it out.
        .filter(|(_, v)| v.as_str() != "VERGEN_IDEMPOTENT_OUTPUT")
        .map(|(k, v)| (k.name().to_string(), v.clone()))
        .collect())
}

/// The commit `cargo package` recorded in `.cargo_vcs_info.json` (a crates.io tarball):
/// `{"git": {"sha1": "…", "dirty": true}, "path_in_vcs": ""}`.
fn cargo_vcs_info() -> Option<(String, bool)> {
    let text = std::fs::read_to_string(".cargo_vcs_info.json").ok()?;
    let after = |key: &str| text.split_once(key).map(|(_, rest)| rest.trim_start());
    let sha: String = after("\"sha1\":")?
        .trim_start_matches('"')
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    let dirty = after("\"dirty\":").is_some_and(|rest| rest.starts_with("true"));
    (!sha.is_empty()).then_some((sha, dirty))
}

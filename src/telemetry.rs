//! Logging with `tracing-subscriber`: human-readable or JSON lines on stderr, filtered by
//! `RUST_LOG` (default `info`). Connectors never log credentials; request URLs carry none.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `format` is `human` or `json`. Calling it twice is
/// harmless (the second call does nothing).
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = if format == "json" {
        builder.json().with_current_span(false).try_init()
    } else {
        builder.compact().try_init()
    };
    if installed.is_err() {
        // A subscriber is already installed (tests, a second init): keep it.
    }
}

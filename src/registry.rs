//! The connector registry: one match over the config's `kind`, no registration magic.
//!
//! Adding a connector means adding its crate to the workspace, a line to [`KINDS`], and an
//! arm to [`check_settings`] and [`build`] (see ARCHITECTURE.md, "Adding a connector").

use std::sync::Arc;

use omnisync_sdk::{Connector, ConnectorError};
use serde::de::DeserializeOwned;

/// Every connector kind this build knows.
pub const KINDS: &[&str] = &[
    omnisync_tryton::KIND,
    omnisync_shopify::KIND,
    omnisync_ebay::KIND,
    omnisync_meta::KIND,
];

fn parse<S: DeserializeOwned>(settings: &serde_json::Value) -> Result<S, (String, String)> {
    let value = if settings.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        settings.clone()
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            String::new()
        } else {
            format!(".{path}")
        };
        (path, e.into_inner().to_string())
    })
}

/// Checks a connector's `settings` table against its crate's schema. On failure returns
/// the dotted path inside `settings` (may be empty) and the reason.
pub fn check_settings(kind: &str, settings: &serde_json::Value) -> Result<(), (String, String)> {
    match kind {
        omnisync_tryton::KIND => parse::<omnisync_tryton::Settings>(settings).map(drop),
        omnisync_shopify::KIND => parse::<omnisync_shopify::Settings>(settings).map(drop),
        omnisync_ebay::KIND => parse::<omnisync_ebay::Settings>(settings).map(drop),
        omnisync_meta::KIND => parse::<omnisync_meta::Settings>(settings).map(drop),
        other => Err((String::new(), format!("unknown connector kind {other:?}"))),
    }
}

/// Builds a connector (resolving its secrets; no network I/O).
pub fn build(
    kind: &str,
    settings: &serde_json::Value,
) -> Result<Arc<dyn Connector>, ConnectorError> {
    let bad = |(path, reason): (String, String)| {
        ConnectorError::config(format!("settings{path}"), reason)
    };
    Ok(match kind {
        omnisync_tryton::KIND => Arc::new(omnisync_tryton::connect(parse(settings).map_err(bad)?)?),
        omnisync_shopify::KIND => {
            Arc::new(omnisync_shopify::connect(parse(settings).map_err(bad)?)?)
        }
        omnisync_ebay::KIND => Arc::new(omnisync_ebay::connect(parse(settings).map_err(bad)?)?),
        omnisync_meta::KIND => Arc::new(omnisync_meta::connect(parse(settings).map_err(bad)?)?),
        other => {
            return Err(ConnectorError::config(
                "building connector",
                format!("unknown connector kind {other:?}"),
            ));
        }
    })
}

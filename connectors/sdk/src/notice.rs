//! Change notices: omnisync's own signed webhook, for systems that send none of their own.
//!
//! A legacy ERP, an SQL database or a nightly export cannot send Shopify-style webhooks, but
//! nearly all of them can run one HTTP request from a trigger, a job or a script. A connector
//! configured with `notify_secret` takes such a *change notice* on the same endpoint as
//! native webhooks, `POST /webhooks/{connector_id}`:
//!
//! ```text
//! POST /webhooks/erp
//! Content-Type: application/json
//! X-Omnisync-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>
//! X-Omnisync-Event-Id: <optional unique id; without it a byte-identical body is a redelivery>
//!
//! {"skus": ["SKU-1", "SKU-2"]}
//! ```
//!
//! Like every webhook it is a hint: the daemon re-reads the named SKUs from that system (and
//! plans every channel from them); nothing in the body is taken as a value.
//! [`ChangeNotice::sign`] makes the signature header's value, for clients and tests; in a
//! shell: `printf %s "$body" | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1`.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::webhook::{Headers, WebhookError, WebhookHandler, WebhookHint, header};

/// The header carrying the signature: `sha256=` and the lower-case hex HMAC-SHA256.
pub const SIGNATURE_HEADER: &str = "x-omnisync-signature";
/// The header carrying the sender's event id (optional).
pub const EVENT_ID_HEADER: &str = "x-omnisync-event-id";
/// The topic stored with a notice.
pub const TOPIC: &str = "change_notice";
/// The most SKUs one notice may name.
pub const MAX_SKUS: usize = 10_000;

/// The [`WebhookHandler`] of change notices, for one connector.
pub struct ChangeNotice {
    secret: SecretString,
}

impl std::fmt::Debug for ChangeNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeNotice").finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    skus: Vec<String>,
}

impl ChangeNotice {
    /// A handler checking signatures made with `secret`.
    pub fn new(secret: SecretString) -> ChangeNotice {
        ChangeNotice { secret }
    }

    /// The value of the [`SIGNATURE_HEADER`] for `body` signed with `secret`.
    pub fn sign(secret: &[u8], body: &[u8]) -> String {
        format!(
            "sha256={}",
            hex::encode(crate::webhook::hmac_sha256(secret, body))
        )
    }
}

impl WebhookHandler for ChangeNotice {
    fn verify(&self, headers: &Headers, body: &[u8]) -> Result<(), WebhookError> {
        let value = header(headers, SIGNATURE_HEADER)
            .ok_or_else(|| WebhookError::Unauthorized(format!("no {SIGNATURE_HEADER} header")))?;
        let hex_part = value.strip_prefix("sha256=").ok_or_else(|| {
            WebhookError::Unauthorized(format!("{SIGNATURE_HEADER} must start with sha256="))
        })?;
        let expected = hex::decode(hex_part).map_err(|_| {
            WebhookError::Unauthorized(format!("{SIGNATURE_HEADER} is not hexadecimal"))
        })?;
        if crate::webhook::hmac_sha256_verify(
            self.secret.expose_secret().as_bytes(),
            body,
            &expected,
        ) {
            Ok(())
        } else {
            Err(WebhookError::Unauthorized(format!(
                "{SIGNATURE_HEADER} does not match the body"
            )))
        }
    }

    fn event_id(&self, headers: &Headers, _body: &[u8]) -> Option<String> {
        header(headers, EVENT_ID_HEADER).map(str::to_string)
    }

    fn parse(&self, _headers: &Headers, body: &[u8]) -> Result<Vec<WebhookHint>, WebhookError> {
        let body: Body = serde_json::from_slice(body).map_err(|e| {
            WebhookError::Malformed(format!("a change notice is {{\"skus\": [\"…\"]}}: {e}"))
        })?;
        if body.skus.len() > MAX_SKUS {
            return Err(WebhookError::Malformed(format!(
                "a change notice names at most {MAX_SKUS} SKUs; this one names {}",
                body.skus.len()
            )));
        }
        let skus: Vec<String> = body
            .skus
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        Ok(vec![WebhookHint {
            topic: TOPIC.into(),
            skus,
            ..WebhookHint::default()
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler() -> ChangeNotice {
        ChangeNotice::new(SecretString::from("s3cret"))
    }

    fn signed(body: &[u8]) -> Headers {
        Headers::from([(
            SIGNATURE_HEADER.to_string(),
            ChangeNotice::sign(b"s3cret", body),
        )])
    }

    #[test]
    fn a_signed_notice_names_its_skus() {
        let body = br#"{"skus": ["A-1", " B-2 ", ""]}"#;
        let h = handler();
        h.verify(&signed(body), body).unwrap();
        let hints = h.parse(&Headers::new(), body).unwrap();
        assert_eq!(hints.len(), 1);
        assert_eq!(hints[0].topic, TOPIC);
        assert_eq!(hints[0].skus, ["A-1", "B-2"]);
    }

    #[test]
    fn wrong_missing_or_malformed_signatures_are_refused() {
        let body = br#"{"skus": ["A-1"]}"#;
        let h = handler();
        let mut other = signed(br#"{"skus": ["A-2"]}"#);
        assert!(matches!(
            h.verify(&other, body),
            Err(WebhookError::Unauthorized(_))
        ));
        other.insert(SIGNATURE_HEADER.into(), "md5=00".into());
        assert!(h.verify(&other, body).is_err());
        other.insert(SIGNATURE_HEADER.into(), "sha256=zz".into());
        assert!(h.verify(&other, body).is_err());
        assert!(h.verify(&Headers::new(), body).is_err());
    }

    #[test]
    fn bodies_that_are_not_notices_are_malformed() {
        let h = handler();
        for body in [&b"[]"[..], b"{\"sku\": \"A\"}", b"{\"skus\": [1]}", b"nope"] {
            assert!(matches!(
                h.parse(&Headers::new(), body),
                Err(WebhookError::Malformed(_))
            ));
        }
        let many = serde_json::json!({ "skus": vec!["x"; MAX_SKUS + 1] }).to_string();
        assert!(h.parse(&Headers::new(), many.as_bytes()).is_err());
    }

    #[test]
    fn the_event_id_comes_from_its_header() {
        let h = handler();
        let headers = Headers::from([(EVENT_ID_HEADER.to_string(), "n-7".to_string())]);
        assert_eq!(h.event_id(&headers, b"{}").as_deref(), Some("n-7"));
        assert_eq!(h.event_id(&Headers::new(), b"{}"), None);
    }
}

//! Secrets by reference.
//!
//! Config never holds a credential in clear: it names where to find it —
//! `env:NAME` (an environment variable), `file:/path` (the first line of a file),
//! `credential:NAME` (a systemd credential under `$CREDENTIALS_DIRECTORY`) — and the value is
//! read at start into a [`SecretString`] whose `Debug` prints `[REDACTED]`. `literal:VALUE`
//! exists for demos and tests against the local simulators only.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Where a secret comes from.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SecretRef {
    /// An environment variable.
    Env(String),
    /// A file; its first line (without the line break) is the secret.
    File(PathBuf),
    /// A systemd credential, read from `$CREDENTIALS_DIRECTORY/NAME`.
    Credential(String),
    /// The value itself. For rehearsals against simulators only.
    Literal(String),
}

/// Why a secret could not be read. Never contains the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The reference does not start with a known scheme.
    #[error("secret reference {0:?} must start with env:, file:, credential: or literal:")]
    Syntax(String),
    /// The environment variable is not set.
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    /// The file could not be read.
    #[error("cannot read secret file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `$CREDENTIALS_DIRECTORY` is not set (not running under systemd with `LoadCredential=`).
    #[error(
        "credential {0}: $CREDENTIALS_DIRECTORY is not set (is the service started with LoadCredential=?)"
    )]
    NoCredentialsDirectory(String),
    /// The secret is empty.
    #[error("secret from {0} is empty")]
    Empty(String),
}

impl SecretRef {
    /// Reads the secret.
    pub fn resolve(&self) -> Result<SecretString, SecretError> {
        let value = match self {
            SecretRef::Env(name) => {
                std::env::var(name).map_err(|_| SecretError::MissingEnv(name.clone()))?
            }
            SecretRef::File(path) => read_first_line(path.clone())?,
            SecretRef::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .ok_or_else(|| SecretError::NoCredentialsDirectory(name.clone()))?;
                read_first_line(PathBuf::from(dir).join(name))?
            }
            SecretRef::Literal(v) => v.clone(),
        };
        if value.is_empty() {
            return Err(SecretError::Empty(self.to_string()));
        }
        Ok(SecretString::from(value))
    }
}

fn read_first_line(path: PathBuf) -> Result<String, SecretError> {
    let text = std::fs::read_to_string(&path).map_err(|source| SecretError::File {
        path: path.clone(),
        source,
    })?;
    Ok(text.lines().next().unwrap_or("").trim_end().to_string())
}

impl FromStr for SecretRef {
    type Err = SecretError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = s
            .split_once(':')
            .ok_or_else(|| SecretError::Syntax(redact_value(s)))?;
        match scheme {
            "env" if !rest.is_empty() => Ok(SecretRef::Env(rest.to_string())),
            "file" if !rest.is_empty() => Ok(SecretRef::File(PathBuf::from(rest))),
            "credential" if !rest.is_empty() => Ok(SecretRef::Credential(rest.to_string())),
            "literal" => Ok(SecretRef::Literal(rest.to_string())),
            _ => Err(SecretError::Syntax(redact_value(s))),
        }
    }
}

/// A malformed reference may be a pasted secret: quote only its start.
fn redact_value(s: &str) -> String {
    let head: String = s.chars().take(4).collect();
    format!("{head}…")
}

impl TryFrom<String> for SecretRef {
    type Error = SecretError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SecretRef> for String {
    fn from(r: SecretRef) -> String {
        match r {
            SecretRef::Literal(v) => format!("literal:{v}"),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
            SecretRef::Credential(n) => write!(f, "credential:{n}"),
            SecretRef::Literal(_) => f.write_str("literal:[REDACTED]"),
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves() {
        let r: SecretRef = "literal:s3cret".parse().unwrap();
        assert_eq!(r.resolve().unwrap().expose_secret(), "s3cret");
        assert_eq!(format!("{r:?}"), "literal:[REDACTED]");
        let dir = std::env::temp_dir().join(format!("omnisync-secret-{}", std::process::id()));
        std::fs::write(&dir, "tok\nignored\n").unwrap();
        let r: SecretRef = format!("file:{}", dir.display()).parse().unwrap();
        assert_eq!(r.resolve().unwrap().expose_secret(), "tok");
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_problem_not_the_secret() {
        let e = "hunter2-long-token".parse::<SecretRef>().unwrap_err();
        assert!(!e.to_string().contains("hunter2-long"));
        let r: SecretRef = "env:OMNISYNC_TEST_SURELY_UNSET".parse().unwrap();
        assert!(
            r.resolve()
                .unwrap_err()
                .to_string()
                .contains("OMNISYNC_TEST_SURELY_UNSET")
        );
        assert!("literal:".parse::<SecretRef>().unwrap().resolve().is_err());
    }
}

//! `acme = { … }` on a terminate listener: certificates from an ACME server (RFC 8555).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tlsgate_core::names::NamePattern;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The ACME server's directory URL (https://).
    pub directory: String,
    /// An account contact, e.g. `mailto:ops@example.com`.
    pub contact: Option<String>,
    /// The DNS names the certificate is ordered for (no wildcards: neither TLS-ALPN-01 nor HTTP-01 can prove them).
    pub names: Vec<String>,
    /// Where the account key and certificates are kept; created with mode 0700.
    #[serde(default = "default_state")]
    pub state: PathBuf,
    /// A PEM CA bundle trusted for the directory's own HTTPS instead of the system's roots.
    pub directory_ca: Option<PathBuf>,
    /// The first wait after a failed order; it doubles (with jitter) up to `retry_max`.
    #[serde(default = "default_retry_min", with = "humantime_serde")]
    pub retry_min: Duration,
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub retry_max: Duration,
    /// Validate by HTTP-01 (RFC 8555 §8.3) on this plain port, on the listener's address, instead
    /// of TLS-ALPN-01 on the listener. The port answers challenge requests and 404 to the rest.
    pub http_port: Option<u16>,
}

fn default_state() -> PathBuf {
    PathBuf::from("/var/lib/tlsgate/acme")
}

fn default_retry_min() -> Duration {
    Duration::from_secs(10)
}

fn default_retry_max() -> Duration {
    Duration::from_secs(3600)
}

impl AcmeConfig {
    /// The table for `--acme-directory URL --acme-name NAME… --acme-state DIR`.
    pub fn new(directory: String, names: Vec<String>, state: PathBuf) -> Self {
        AcmeConfig {
            directory,
            contact: None,
            names,
            state,
            directory_ca: None,
            retry_min: default_retry_min(),
            retry_max: default_retry_max(),
            http_port: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if !self.directory.starts_with("https://") {
            return Err(format!("acme.directory {:?} must be an https:// URL", self.directory));
        }
        if self.names.is_empty() {
            return Err("acme.names is empty".into());
        }
        for n in &self.names {
            if n.starts_with("*.") {
                return Err(format!(
                    "acme.names: {n:?} is a wildcard, which neither TLS-ALPN-01 nor HTTP-01 can validate"
                ));
            }
            NamePattern::parse(n).map_err(|e| format!("acme.names: {e}"))?;
        }
        if self.http_port == Some(0) {
            return Err("acme.http_port must be a port number the ACME server can reach, not 0".into());
        }
        if self.retry_min.is_zero() || self.retry_max < self.retry_min {
            return Err("acme.retry_min must be above zero and at most retry_max".into());
        }
        Ok(())
    }
}

//! `[originate]`: plaintext in, TLS out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::terminate::{default_versions, BackendAddr, TlsVersion};
use crate::ConfigError;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OriginateConfig {
    #[serde(default)]
    pub listener: Vec<OriginateListener>,
}

/// A plaintext listener whose connections leave as TLS toward an upstream.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OriginateListener {
    pub name: Option<String>,
    pub listen: SocketAddr,
    /// `host:port` of each upstream, tried in order: the first that connects serves.
    pub upstreams: Vec<BackendAddr>,
    /// Name sent as SNI and checked against the upstream's certificate. Defaults to the host of
    /// the upstream being connected.
    pub sni: Option<String>,
    /// PEM bundle of CAs trusted for upstream certificates; absent: the system's roots.
    pub ca: Option<PathBuf>,
    /// Client certificate chain and key, presented when the upstream asks.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// ALPN protocols offered to the upstream.
    #[serde(default)]
    pub alpn: Vec<String>,
    #[serde(default = "default_versions")]
    pub tls_versions: Vec<TlsVersion>,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Connect plus TLS handshake toward the upstream.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

impl OriginateListener {
    /// `tlsgate originate --listen … --connect … [--ca …] [--cert … --key …] [--sni …]`.
    pub fn from_flags(listen: SocketAddr, upstreams: Vec<BackendAddr>) -> Self {
        OriginateListener {
            name: None,
            listen,
            upstreams,
            sni: None,
            ca: None,
            cert: None,
            key: None,
            alpn: Vec::new(),
            tls_versions: default_versions(),
            connect_timeout: default_connect_timeout(),
            handshake_timeout: default_handshake_timeout(),
        }
    }

    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.listen.to_string())
    }
}

impl OriginateConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.listener.is_empty() {
            return Err(ConfigError::invalid("[originate]", "no [[originate.listener]] defined"));
        }
        for (i, l) in self.listener.iter().enumerate() {
            let place = format!("originate.listener[{i}] ({})", l.display_name());
            let bad = |p: &str| ConfigError::invalid(&place, p);
            if l.upstreams.is_empty() {
                return Err(bad("no upstreams"));
            }
            if l.cert.is_some() != l.key.is_some() {
                return Err(bad("cert and key go together"));
            }
            if l.tls_versions.is_empty() {
                return Err(bad("tls_versions is empty"));
            }
            if l.connect_timeout.is_zero() || l.handshake_timeout.is_zero() {
                return Err(bad("timeouts must be above zero"));
            }
            if let Some(sni) = &l.sni {
                if rustls_name_ok(sni).is_none() {
                    return Err(bad("sni is not a valid DNS name or IP address"));
                }
            }
        }
        Ok(())
    }
}

fn rustls_name_ok(s: &str) -> Option<()> {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return Some(());
    }
    tlsgate_core::names::NamePattern::parse(s)
        .ok()
        .filter(|p| matches!(p, tlsgate_core::names::NamePattern::Exact(_)))?;
    Some(())
}

//! `[connect]`: an HTTPS proxy for browsers whose tunnels drop their outer TLS once open.
//!
//! `[connect.gate]` accepts portals (TLS, client certificate required), authorises each CONNECT
//! against the portal's identity and a destination policy, and downgrades to the raw TCP
//! connection; plain HTTPS-proxy clients (`curl --proxy https://…`) get nested TLS.
//! `[connect.portal]` is the plain HTTP proxy on the user's machine. See docs/connect.md.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::terminate::{default_versions, BackendAddr, TlsVersion};
use crate::ConfigError;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConnectConfig {
    pub gate: Option<ConnectGateConfig>,
    pub portal: Option<ConnectPortalConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConnectGateConfig {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CAs that issue portal certificates; a client without a certificate is refused.
    pub client_ca: PathBuf,
    /// CRLs of those CAs, re-read on reload.
    #[serde(default)]
    pub crl: Vec<PathBuf>,
    /// Refuse every portal while a CRL is past its next update.
    #[serde(default)]
    pub crl_strict: bool,
    /// Destinations per portal identity; none: every CONNECT is refused.
    #[serde(default)]
    pub allow: Vec<ConnectGrant>,
    /// Names the gate resolves to fixed addresses before asking DNS (`"internal.test" =
    /// "10.1.2.3"`): the gate's own view of internal names. Policy is checked on the result.
    #[serde(default)]
    pub hosts: BTreeMap<String, IpAddr>,
    /// DNS server for other names; absent: the system resolver.
    pub resolver: Option<SocketAddr>,
    /// Time a client has for its handshake and its CONNECT head.
    #[serde(default = "default_head_timeout", with = "humantime_serde")]
    pub head_timeout: Duration,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// TLS versions of the outer connection (the downgrade works with either).
    #[serde(default = "default_versions")]
    pub tls_versions: Vec<TlsVersion>,
    /// Interfaces portals and destinations are reached through: downgraded connections are
    /// then spliced into one TCP connection below the gate's sockets (a BPF program at tc
    /// ingress of each). Empty: relayed with `splice`.
    #[serde(default)]
    pub kernel_splice: Vec<String>,
}

/// Rules for the portals an identity pattern matches.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConnectGrant {
    /// `*`, `cn:NAME`, `dns:NAME`, `uri:URI`, or a bare CN / DNS name / URI.
    pub identity: String,
    /// Tunnel policy rules (`allow tcp internal.test 443 to 10.1.0.0/16`); a rule without an
    /// action is an `allow tcp` rule.
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConnectPortalConfig {
    /// The plain HTTP proxy browsers use; keep it on loopback: it serves whoever reaches it.
    pub listen: SocketAddr,
    /// `host:port` of the gate.
    pub gate: BackendAddr,
    /// Name checked against the gate's certificate (and sent as SNI); defaults to the gate host.
    pub server_name: Option<String>,
    /// CAs trusted for the gate's certificate.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Hosts that go through the gate: `name`, `*.name`, `.name` (and everything under), `*`.
    #[serde(default)]
    pub route: Vec<String>,
    /// Other hosts are connected directly instead of refused.
    #[serde(default)]
    pub direct: bool,
    #[serde(default = "default_head_timeout", with = "humantime_serde")]
    pub head_timeout: Duration,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
}

fn default_head_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

impl ConnectGateConfig {
    pub fn from_flags(listen: SocketAddr, cert: PathBuf, key: PathBuf, client_ca: PathBuf) -> Self {
        ConnectGateConfig {
            listen,
            cert,
            key,
            client_ca,
            crl: Vec::new(),
            crl_strict: false,
            allow: Vec::new(),
            hosts: BTreeMap::new(),
            resolver: None,
            head_timeout: default_head_timeout(),
            connect_timeout: default_connect_timeout(),
            tls_versions: default_versions(),
            kernel_splice: Vec::new(),
        }
    }

    /// The grants as (identity, rules) pairs.
    pub fn grants(&self) -> Vec<(String, Vec<String>)> {
        self.allow.iter().map(|g| (g.identity.clone(), g.rules.clone())).collect()
    }

    /// Files a reload re-reads.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut f = vec![self.cert.clone(), self.key.clone(), self.client_ca.clone()];
        f.extend(self.crl.iter().cloned());
        f
    }
}

impl ConnectPortalConfig {
    pub fn files(&self) -> Vec<PathBuf> {
        vec![self.ca.clone(), self.cert.clone(), self.key.clone()]
    }
}

impl ConnectConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(g) = &self.gate {
            tlsgate_connect::policy::ConnectPolicy::from_grants(&g.grants())
                .map_err(|e| ConfigError::invalid("[connect.gate] allow", e.to_string()))?;
            if g.tls_versions.is_empty() {
                return Err(ConfigError::invalid("[connect.gate] tls_versions", "is empty"));
            }
            for iface in &g.kernel_splice {
                if iface.is_empty() || iface.len() >= 16 || iface.contains(['/', ' ']) {
                    return Err(ConfigError::invalid(
                        "[connect.gate] kernel_splice",
                        format!("{iface:?} is not an interface name"),
                    ));
                }
            }
            for name in g.hosts.keys() {
                tlsgate_tunnel::Target::name(name, 1).map_err(|_| {
                    ConfigError::invalid("[connect.gate] hosts", format!("{name:?} is not a host name"))
                })?;
            }
        }
        if let Some(p) = &self.portal {
            tlsgate_connect::routes::Routes::parse(&p.route)
                .map_err(|e| ConfigError::invalid("[connect.portal] route", e))?;
            if p.route.is_empty() && !p.direct {
                return Err(ConfigError::invalid(
                    "[connect.portal]",
                    "no route and no `direct`: every request would be refused",
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn resolve_paths(&mut self, dir: &Path) {
        if let Some(g) = &mut self.gate {
            for p in [&mut g.cert, &mut g.key, &mut g.client_ca].into_iter().chain(g.crl.iter_mut()) {
                *p = dir.join(&*p);
            }
        }
        if let Some(p) = &mut self.portal {
            for f in [&mut p.ca, &mut p.cert, &mut p.key] {
                *f = dir.join(&*f);
            }
        }
    }
}

//! `[originate]`: plaintext in, TLS out.

use std::collections::BTreeMap;
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
    #[serde(default)]
    pub transparent: Vec<TransparentListener>,
    /// The control socket for application directives (docs/directives.md); off when absent.
    #[serde(default)]
    pub control: Option<PathBuf>,
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
    /// A STARTTLS protocol spoken to the upstream before TLS (`smtp`, `imap`, `pop3`, `ftp`,
    /// `postgres`, `ldap`); the client stays plaintext. See docs/starttls.md.
    #[serde(default, deserialize_with = "crate::starttls::protocol")]
    pub starttls: Option<crate::StartTls>,
    /// The name tlsgate gives in SMTP's EHLO; default: the machine's host name.
    pub starttls_host: Option<String>,
    /// Kernel TLS offload of the record layer after the handshake (docs/ktls.md).
    #[serde(default)]
    pub ktls: crate::KtlsMode,
    /// Connections start as a plain byte relay; the client application starts and stops TLS
    /// with `start_tls` / `stop_tls` on the control socket (docs/directives.md).
    #[serde(default)]
    pub directed: bool,
    /// Client certificates a directed connection's `start_tls` may present instead of
    /// `cert`/`key`, by name (`"client_cert":"NAME"`): a directive picks one, it never names a
    /// file.
    #[serde(default)]
    pub client_identities: BTreeMap<String, ClientIdentity>,
}

/// A client certificate chain and its key, named for `start_tls`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A name a directive can carry: letters, digits, `-`, `_`, `.`; 1 to 64 bytes.
fn identity_name_ok(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
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
            starttls: None,
            starttls_host: None,
            ktls: crate::KtlsMode::default(),
            directed: false,
            client_identities: BTreeMap::new(),
        }
    }

    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.listen.to_string())
    }
}

impl OriginateConfig {
    /// Every file the listeners read (CAs, client certificates and keys): what a reload re-reads.
    pub fn files(&self) -> Vec<PathBuf> {
        let plain = self.listener.iter().flat_map(|l| [&l.ca, &l.cert, &l.key]);
        let transparent = self.transparent.iter().flat_map(|l| [&l.ca, &l.cert, &l.key]);
        let mut files: Vec<PathBuf> = plain.chain(transparent).flatten().cloned().collect();
        let identities = self.listener.iter().flat_map(|l| l.client_identities.values());
        files.extend(identities.flat_map(|i| [i.cert.clone(), i.key.clone()]));
        files.sort();
        files.dedup();
        files
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.listener.is_empty() && self.transparent.is_empty() {
            return Err(ConfigError::invalid(
                "[originate]",
                "neither [[originate.listener]] nor [[originate.transparent]] defined",
            ));
        }
        for (i, t) in self.transparent.iter().enumerate() {
            let place = format!("originate.transparent[{i}] ({})", t.display_name());
            let bad = |p: String| ConfigError::invalid(&place, p);
            t.policy().map_err(bad)?;
            if t.rule.is_empty() {
                return Err(bad("no rules: every connection would be denied".into()));
            }
            if t.cert.is_some() != t.key.is_some() {
                return Err(bad("cert and key go together".into()));
            }
            for (j, r) in t.rule.iter().enumerate() {
                if r.action != RuleAction::Originate && (r.server_name.is_some() || r.tls_port.is_some()) {
                    return Err(bad(format!(
                        "rule[{j}]: server_name and tls_port only apply to action = \"originate\""
                    )));
                }
            }
        }
        for (i, l) in self.listener.iter().enumerate() {
            let place = format!("originate.listener[{i}] ({})", l.display_name());
            let bad = |p: &str| ConfigError::invalid(&place, p);
            if l.upstreams.is_empty() {
                return Err(bad("no upstreams"));
            }
            if l.directed && l.starttls.is_some() {
                return Err(bad(
                    "directed and starttls exclude each other: the application directs when TLS starts",
                ));
            }
            if l.directed && self.control.is_none() {
                return Err(bad("directed needs [originate]'s control socket, where the directives arrive"));
            }
            if l.cert.is_some() != l.key.is_some() {
                return Err(bad("cert and key go together"));
            }
            if !l.client_identities.is_empty() && !l.directed {
                return Err(bad("client_identities are for directed listeners, whose start_tls picks one"));
            }
            if let Some(name) = l.client_identities.keys().find(|n| !identity_name_ok(n)) {
                return Err(ConfigError::invalid(
                    &place,
                    format!("client identity name {name:?}: 1 to 64 of letters, digits, '-', '_', '.'"),
                ));
            }
            if l.tls_versions.is_empty() {
                return Err(bad("tls_versions is empty"));
            }
            if l.connect_timeout.is_zero() || l.handshake_timeout.is_zero() {
                return Err(bad("timeouts must be above zero"));
            }
            crate::starttls::check(l.starttls, l.starttls_host.as_deref()).map_err(|e| bad(&e))?;
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

/// `[[originate.transparent]]`: connections of unmodified programs redirected here by the kernel
/// (iptables REDIRECT), handled by the first matching rule for their original destination.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TransparentListener {
    pub name: Option<String>,
    /// Where the REDIRECT rule sends connections.
    pub listen: SocketAddr,
    /// CAs trusted for destinations the `originate` action wraps in TLS; absent: system roots.
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub alpn: Vec<String>,
    #[serde(default = "default_versions")]
    pub tls_versions: Vec<TlsVersion>,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// SO_MARK on tlsgate's own outbound connections, so the REDIRECT rule can exclude them
    /// (`-m mark ! --mark N`) instead of sending them back to tlsgate.
    pub outbound_mark: Option<u32>,
    /// When a rule looks at SNI: how long to wait for the client's first bytes.
    #[serde(default = "default_sni_wait", with = "humantime_serde")]
    pub sni_wait: Duration,
    /// Tried in order; the first match decides. No match: the connection is denied.
    pub rule: Vec<RuleConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Destination blocks (`10.0.0.0/8`, `2001:db8::/32`, a bare address); empty: any.
    #[serde(default)]
    pub cidr: Vec<String>,
    /// Destination ports (`"443"`, `"8000-8099"`); empty: any.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Server names in the client's ClientHello (exact or `*.`); empty: not looked at.
    #[serde(default)]
    pub sni: Vec<String>,
    pub action: RuleAction,
    /// `originate`: name sent as SNI and verified; default: the destination address (IP SAN).
    pub server_name: Option<String>,
    /// `originate`: port to connect with TLS; default: the original port.
    pub tls_port: Option<u16>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    Originate,
    Passthrough,
    Deny,
}

fn default_sni_wait() -> Duration {
    Duration::from_secs(1)
}

impl TransparentListener {
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.listen.to_string())
    }

    /// The rules as the sans-IO policy evaluates them.
    pub fn policy(&self) -> Result<tlsgate_core::policy::Policy, String> {
        use tlsgate_core::policy::{Action, Policy, Rule};
        let mut rules = Vec::new();
        for (i, r) in self.rule.iter().enumerate() {
            let ctx = |e: String| format!("rule[{i}]: {e}");
            rules.push(Rule {
                cidrs: r.cidr.iter().map(|c| c.parse()).collect::<Result<_, _>>().map_err(ctx)?,
                ports: r.ports.iter().map(|p| p.parse()).collect::<Result<_, _>>().map_err(ctx)?,
                sni: r
                    .sni
                    .iter()
                    .map(|s| tlsgate_core::names::NamePattern::parse(s).map_err(|e| e.to_string()))
                    .collect::<Result<_, _>>()
                    .map_err(ctx)?,
                action: match r.action {
                    RuleAction::Originate => Action::Originate,
                    RuleAction::Passthrough => Action::Passthrough,
                    RuleAction::Deny => Action::Deny,
                },
            });
        }
        Ok(Policy { rules })
    }
}

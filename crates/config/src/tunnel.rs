//! `[tunnel]`: many TCP and UDP flows over one mutually authenticated TLS connection.
//!
//! `[tunnel.gate]` accepts portals and opens connections on their behalf under a per-identity
//! policy; `[tunnel.portal]` keeps one TLS connection to a gate and offers SOCKS5, static
//! forwards and a DNS forwarder on its own side. See docs/tunnel.md.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tlsgate_tunnel::policy::Policy;

use crate::terminate::BackendAddr;
use crate::ConfigError;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TunnelConfig {
    pub gate: Option<GateConfig>,
    pub portal: Option<PortalConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CAs that issue portal certificates; a portal without a certificate is refused.
    pub client_ca: PathBuf,
    /// CRLs of those CAs, checked on every handshake (a stolen laptop's key is revoked here).
    #[serde(default)]
    pub crl: Vec<PathBuf>,
    /// Refuse every portal while a CRL is past its next update (by default that is a warning).
    #[serde(default)]
    pub crl_strict: bool,
    /// Rules for portals without their own entry in `policy`. Absent (and no `policy` either):
    /// every authenticated portal may open anything, with a warning at start.
    pub default_policy: Option<Vec<String>>,
    /// Rules per portal identity (its certificate's first URI SAN, else first DNS SAN, else CN).
    #[serde(default)]
    pub policy: BTreeMap<String, Vec<String>>,
    /// DNS server the gate resolves host names with, and that answers portals' DNS forwarders.
    /// Absent: the system resolver, and DNS forwarding is refused.
    pub resolver: Option<SocketAddr>,
    /// Listeners on the gate whose connections go through a portal to a destination on its side.
    #[serde(default)]
    pub reverse: Vec<ReverseForward>,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    #[serde(default)]
    pub limits: TunnelLimits,
    /// Kernel TLS offload of the tunnel connection's record layer after the handshake
    /// (docs/ktls.md): `auto`, `on`, `off`.
    #[serde(default)]
    pub ktls: crate::KtlsMode,
}

/// A gate-side listener reaching a destination on a portal's side (a reverse forward).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReverseForward {
    pub listen: SocketAddr,
    /// Identity of the portal whose tunnel carries these connections.
    pub portal: String,
    /// `host:port` as the portal resolves it; the portal's `allow_reverse` must admit it.
    pub target: BackendAddr,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortalConfig {
    /// `host:port` of the gate, or a list of them tried in order: on a failed connection or a
    /// lost tunnel the portal moves to the next (the backoff grows once the whole list failed).
    #[serde(deserialize_with = "one_or_many")]
    pub gate: Vec<BackendAddr>,
    /// Name checked against the gate's certificate (and sent as SNI); defaults to the gate host.
    pub server_name: Option<String>,
    /// CAs trusted for the gate's certificate.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// SOCKS5 listener (CONNECT and UDP ASSOCIATE). Keep it on loopback: it serves whoever
    /// reaches it.
    pub socks: Option<SocketAddr>,
    /// Require this username/password (RFC 1929) on the SOCKS listener.
    pub socks_auth: Option<SocksAuth>,
    /// Static forwards: `tcp:LISTEN=HOST:PORT` or `udp:LISTEN=HOST:PORT`, HOST resolved by the gate.
    #[serde(default)]
    pub forward: Vec<Forward>,
    /// Local UDP port whose DNS queries the gate's resolver answers.
    pub dns: Option<SocketAddr>,
    /// Reach the gate through a proxy: `http://[user:pass@]host:port` or `socks5://…`.
    pub proxy: Option<ProxyUrl>,
    /// Which destinations on this side the gate may open (reverse forwards); none by default.
    #[serde(default)]
    pub allow_reverse: Vec<String>,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Reconnect backoff: doubles from `reconnect_min` up to `reconnect_max`.
    #[serde(default = "default_reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// How long a new local session (SOCKS request, forward connection) waits for the tunnel
    /// while it is being (re)connected before it is refused ('network unreachable').
    #[serde(default = "default_session_wait", with = "humantime_serde")]
    pub session_wait: Duration,
    #[serde(default)]
    pub limits: TunnelLimits,
    /// Kernel TLS offload of the tunnel connection's record layer after the handshake
    /// (docs/ktls.md): `auto`, `on`, `off`.
    #[serde(default)]
    pub ktls: crate::KtlsMode,
}

/// `gate = "h:p"` or `gate = ["h:p", "h2:p"]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<BackendAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(BackendAddr),
        Many(Vec<BackendAddr>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(a) => vec![a],
        OneOrMany::Many(v) => v,
    })
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SocksAuth {
    pub username: String,
    pub password: String,
}

/// Per-connection and per-session bounds, the same on both ends.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TunnelLimits {
    pub max_sessions: usize,
    /// Receive window per session, bytes.
    pub session_window: u32,
    /// Bytes queued per session before the local reader pauses.
    pub session_buffer: usize,
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub session_idle_timeout: Duration,
}

impl Default for TunnelLimits {
    fn default() -> Self {
        TunnelLimits {
            max_sessions: 1024,
            session_window: 256 * 1024,
            session_buffer: 256 * 1024,
            keepalive: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            // Long, like HAProxy's `timeout tunnel`: an idle interactive session (ssh) must survive.
            session_idle_timeout: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardProtocol {
    Tcp,
    Udp,
}

/// `tcp:127.0.0.1:15432=db.internal:5432`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Forward {
    pub protocol: ForwardProtocol,
    pub listen: SocketAddr,
    pub target: BackendAddr,
}

impl TryFrom<String> for Forward {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for Forward {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (proto, rest) =
            s.split_once(':').ok_or_else(|| format!("forward {s:?} is not PROTO:LISTEN=HOST:PORT"))?;
        let protocol = match proto {
            "tcp" => ForwardProtocol::Tcp,
            "udp" => ForwardProtocol::Udp,
            _ => return Err(format!("forward {s:?}: protocol must be tcp or udp")),
        };
        let (listen, target) =
            rest.split_once('=').ok_or_else(|| format!("forward {s:?} is not PROTO:LISTEN=HOST:PORT"))?;
        let listen = listen.parse().map_err(|_| format!("forward {s:?}: {listen:?} is not IP:PORT"))?;
        Ok(Forward { protocol, listen, target: target.parse()? })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    Http,
    Socks5,
}

/// `http://[user:pass@]host:port` or `socks5://[user:pass@]host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ProxyUrl {
    pub kind: ProxyKind,
    pub addr: BackendAddr,
    pub credentials: Option<(String, String)>,
}

impl TryFrom<String> for ProxyUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for ProxyUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (scheme, rest) = s.split_once("://").ok_or_else(|| format!("proxy {s:?} has no scheme"))?;
        let kind = match scheme {
            "http" => ProxyKind::Http,
            "socks5" | "socks5h" => ProxyKind::Socks5,
            _ => return Err(format!("proxy {s:?}: scheme must be http or socks5")),
        };
        let rest = rest.trim_end_matches('/');
        let (credentials, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hp)) => {
                let (u, p) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some((u.to_string(), p.to_string())), hp)
            }
            None => (None, rest),
        };
        Ok(ProxyUrl { kind, addr: hostport.parse()?, credentials })
    }
}

/// A proxy URL as logs show it: credentials never appear.
impl std::fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.kind {
            ProxyKind::Http => "http",
            ProxyKind::Socks5 => "socks5",
        };
        write!(f, "{scheme}://{}", self.addr)
    }
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_reconnect_min() -> Duration {
    Duration::from_millis(200)
}

fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}

fn default_session_wait() -> Duration {
    Duration::from_secs(10)
}

fn rules(what: &str, lines: &[String]) -> Result<Policy, ConfigError> {
    Policy::parse(&lines.join("\n")).map_err(|e| ConfigError::invalid(what, e.to_string()))
}

impl GateConfig {
    /// The files the gate reads: what a reload re-reads.
    pub fn files(&self) -> Vec<PathBuf> {
        [&self.cert, &self.key, &self.client_ca].into_iter().chain(&self.crl).cloned().collect()
    }

    /// `tlsgate tunnel gate --listen … --cert … --key … --client-ca …`.
    pub fn from_flags(listen: SocketAddr, cert: PathBuf, key: PathBuf, client_ca: PathBuf) -> Self {
        GateConfig {
            listen,
            cert,
            key,
            client_ca,
            crl: Vec::new(),
            crl_strict: false,
            default_policy: None,
            policy: BTreeMap::new(),
            resolver: None,
            reverse: Vec::new(),
            connect_timeout: default_connect_timeout(),
            handshake_timeout: default_handshake_timeout(),
            limits: TunnelLimits::default(),
            ktls: crate::KtlsMode::default(),
        }
    }

    /// Policies by identity and the default one, parsed. With no rules at all, everything is
    /// allowed (the portal is already authenticated), and `open` says so.
    pub fn policies(&self) -> Result<(BTreeMap<String, Policy>, Policy, bool), ConfigError> {
        let mut by_id = BTreeMap::new();
        for (id, lines) in &self.policy {
            by_id.insert(id.clone(), rules(&format!("policy for {id:?}"), lines)?);
        }
        let open = self.default_policy.is_none() && self.policy.is_empty();
        let default = match &self.default_policy {
            Some(lines) => rules("default_policy", lines)?,
            None if open => Policy::unrestricted(),
            None => Policy::default(),
        };
        Ok((by_id, default, open))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.policies()?;
        self.limits.validate()?;
        let mut seen = std::collections::HashSet::new();
        for r in &self.reverse {
            if !seen.insert(r.listen) || r.listen == self.listen {
                return Err(ConfigError::invalid("tunnel gate", format!("address {} used twice", r.listen)));
            }
        }
        Ok(())
    }
}

impl PortalConfig {
    /// The files the portal reads for its connection to the gate: what a reload re-reads.
    pub fn files(&self) -> Vec<PathBuf> {
        vec![self.ca.clone(), self.cert.clone(), self.key.clone()]
    }

    pub fn from_flags(gate: Vec<BackendAddr>, ca: PathBuf, cert: PathBuf, key: PathBuf) -> Self {
        PortalConfig {
            gate,
            server_name: None,
            ca,
            cert,
            key,
            socks: None,
            socks_auth: None,
            forward: Vec::new(),
            dns: None,
            proxy: None,
            allow_reverse: Vec::new(),
            connect_timeout: default_connect_timeout(),
            handshake_timeout: default_handshake_timeout(),
            reconnect_min: default_reconnect_min(),
            reconnect_max: default_reconnect_max(),
            session_wait: default_session_wait(),
            limits: TunnelLimits::default(),
            ktls: crate::KtlsMode::default(),
        }
    }

    pub fn reverse_policy(&self) -> Result<Policy, ConfigError> {
        rules("allow_reverse", &self.allow_reverse)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.reverse_policy()?;
        self.limits.validate()?;
        if self.gate.is_empty() {
            return Err(ConfigError::invalid("tunnel portal", "gate: at least one host:port"));
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            return Err(ConfigError::invalid("tunnel portal", "need 0 < reconnect_min <= reconnect_max"));
        }
        let mut seen = std::collections::HashSet::new();
        let tcp = self
            .socks
            .iter()
            .copied()
            .chain(self.forward.iter().filter(|f| f.protocol == ForwardProtocol::Tcp).map(|f| f.listen));
        let udp = self
            .dns
            .iter()
            .copied()
            .chain(self.forward.iter().filter(|f| f.protocol == ForwardProtocol::Udp).map(|f| f.listen));
        // Port 0 asks the kernel for a free port each time, so it never collides.
        for a in tcp.map(|a| (a, "tcp")).chain(udp.map(|a| (a, "udp"))).filter(|a| a.0.port() != 0) {
            if !seen.insert(a) {
                return Err(ConfigError::invalid("tunnel portal", format!("{} {} used twice", a.1, a.0)));
            }
        }
        Ok(())
    }
}

impl TunnelLimits {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_sessions == 0 || self.session_window < 1024 || self.session_buffer < 1024 {
            return Err(ConfigError::invalid(
                "tunnel limits",
                "max_sessions >= 1, session_window and session_buffer >= 1024",
            ));
        }
        if self.keepalive >= self.idle_timeout {
            return Err(ConfigError::invalid("tunnel limits", "keepalive must be shorter than idle_timeout"));
        }
        Ok(())
    }
}

impl TunnelConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(g) = &self.gate {
            g.validate()?;
        }
        if let Some(p) = &self.portal {
            p.validate()?;
        }
        Ok(())
    }

    pub(crate) fn resolve_paths(&mut self, dir: &std::path::Path) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_and_proxies_parse() {
        let f: Forward = "tcp:127.0.0.1:15432=db.internal:5432".parse().unwrap();
        assert_eq!(f.protocol, ForwardProtocol::Tcp);
        assert_eq!(f.listen, "127.0.0.1:15432".parse().unwrap());
        assert_eq!(f.target.to_string(), "db.internal:5432");
        let f: Forward = "udp:127.0.0.1:5353=127.0.0.1:53".parse().unwrap();
        assert_eq!(f.protocol, ForwardProtocol::Udp);
        assert!("sctp:127.0.0.1:1=a:2".parse::<Forward>().is_err());
        assert!("tcp:127.0.0.1:1".parse::<Forward>().is_err());

        let p: ProxyUrl = "http://bob:s3cret@proxy.lan:3128".parse().unwrap();
        assert_eq!(p.kind, ProxyKind::Http);
        assert_eq!(p.credentials, Some(("bob".into(), "s3cret".into())));
        assert_eq!(p.to_string(), "http://proxy.lan:3128", "credentials never shown");
        let p: ProxyUrl = "socks5://127.0.0.1:1080".parse().unwrap();
        assert_eq!((p.kind, p.credentials), (ProxyKind::Socks5, None));
        assert!("ftp://x:1".parse::<ProxyUrl>().is_err());
    }

    #[test]
    fn portal_gate_is_one_address_or_a_list() {
        let base = "ca = \"ca.pem\"\ncert = \"p.pem\"\nkey = \"p.key\"\n";
        let one: PortalConfig = toml::from_str(&format!("gate = \"g:7443\"\n{base}")).unwrap();
        assert_eq!(one.gate.len(), 1);
        assert_eq!(one.session_wait, Duration::from_secs(10));
        let two: PortalConfig =
            toml::from_str(&format!("gate = [\"a:7443\", \"b:7443\"]\nsession_wait = \"2s\"\n{base}"))
                .unwrap();
        assert_eq!(two.gate.iter().map(|g| g.to_string()).collect::<Vec<_>>(), ["a:7443", "b:7443"]);
        assert_eq!(two.session_wait, Duration::from_secs(2));
        let none: PortalConfig = toml::from_str(&format!("gate = []\n{base}")).unwrap();
        assert!(none.validate().is_err());
    }

    #[test]
    fn gate_policy_defaults_open_only_without_any_rules() {
        let mut g = GateConfig::from_flags(
            "127.0.0.1:7443".parse().unwrap(),
            "g.pem".into(),
            "g.key".into(),
            "ca.pem".into(),
        );
        let (_, default, open) = g.policies().unwrap();
        assert!(open && default.unrestricted);
        g.policy.insert("laptop".into(), vec!["allow tcp 10.0.0.0/8 22".into()]);
        let (by_id, default, open) = g.policies().unwrap();
        assert!(!open && default.rules.is_empty() && by_id.contains_key("laptop"));
        g.policy.insert("bad".into(), vec!["permit tcp".into()]);
        assert!(g.validate().is_err());
    }
}

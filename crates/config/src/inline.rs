//! `[inline]`: the inline engine between two interfaces, offloading TLS inside the packets of
//! the client's own TCP connection (docs/inline-engine.md).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::ConfigError;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InlineConfig {
    /// The interface facing the clients.
    pub client_iface: String,
    /// The interface facing the servers.
    pub server_iface: String,
    /// When client plaintext reaches the server, for services that do not say.
    #[serde(default)]
    pub mode: ReleaseMode,
    #[serde(default)]
    pub limits: InlineLimits,
    #[serde(default)]
    pub service: Vec<InlineService>,
}

/// When client plaintext reaches the server.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ReleaseMode {
    /// Only after the record's tag verified.
    #[default]
    Buffered,
    /// As decrypted, the tag checked at the record's end (weaker: the server may see bytes of a
    /// record that then fails).
    CutThrough,
}

impl std::str::FromStr for ReleaseMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "buffered" => Ok(ReleaseMode::Buffered),
            "cut-through" => Ok(ReleaseMode::CutThrough),
            _ => Err(format!("{s:?}: expected buffered or cut-through")),
        }
    }
}

impl std::fmt::Display for ReleaseMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReleaseMode::Buffered => "buffered",
            ReleaseMode::CutThrough => "cut-through",
        })
    }
}

/// Bounds of the flow table.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct InlineLimits {
    /// Flows tracked at once; a SYN beyond it is dropped (the client retries).
    pub max_flows: usize,
    /// A flow with no packet either way for this long is forgotten.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A flow whose server has not answered the SYN within this is forgotten.
    #[serde(with = "humantime_serde")]
    pub syn_timeout: Duration,
    /// A client whose SYN advertises a window below this many bytes is served by the full
    /// proxy (terminated on both sides) instead of end to end; 0: never.
    pub window_floor: u32,
    /// Full-proxy flows at once (the fallback for windows below the floor and for SYNs beyond
    /// `max_flows`); a SYN that would need one more is dropped. 0: no fallback.
    pub full_proxy_max_flows: usize,
    /// Bytes each flow may have in flight per direction: records the client has not
    /// acknowledged, plaintext the server has not. A flow carries at most this per round trip.
    pub flow_window: usize,
}

/// The most full-proxy flows one engine may hold: each holds four 64 KiB socket buffers.
pub const FULL_PROXY_MAX_FLOWS: usize = 4096;
/// Bounds of `flow_window`: room for a few records; a window a peer's TCP can still be told.
pub const FLOW_WINDOW_MIN: usize = 64 << 10;
pub const FLOW_WINDOW_MAX: usize = 64 << 20;

impl Default for InlineLimits {
    fn default() -> Self {
        InlineLimits {
            max_flows: 65536,
            idle_timeout: Duration::from_secs(300),
            syn_timeout: Duration::from_secs(5),
            // The smallest segment every host must accept (RFC 9293's default MSS): below it the
            // end-to-end path would cut records into pieces smaller than their own overhead.
            window_floor: 536,
            full_proxy_max_flows: 256,
            // The engine's default (`tlsgate_inline::engine::FLOW_WINDOW`).
            flow_window: 1 << 20,
        }
    }
}

/// One offloaded service: direct (`listen`, the server's own address, `plain_port` its
/// plaintext port) or balanced (`vip` in front of a `pool`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InlineService {
    /// Direct: the address clients connect to, which is the server's.
    pub listen: Option<SocketAddr>,
    /// Direct: the server's plaintext port (the TLS port is rewritten to it both ways); absent:
    /// the same port.
    pub plain_port: Option<u16>,
    /// Balanced: a virtual address the bridge answers ARP for.
    pub vip: Option<SocketAddr>,
    /// Balanced: the servers behind `vip`; a client sticks to one.
    #[serde(default)]
    pub pool: Vec<SocketAddr>,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// This service's release mode; absent: `[inline] mode`.
    pub mode: Option<ReleaseMode>,
}

impl InlineService {
    /// `listen` or `vip`: where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.listen.or(self.vip).expect("validated: listen or vip")
    }

    pub fn is_balanced(&self) -> bool {
        self.vip.is_some()
    }

    /// As logs name it: `10.0.0.2:443=80`, or `10.0.0.100:443 -> 10.0.0.11:80,10.0.0.12:80`.
    pub fn label(&self) -> String {
        match (self.listen, self.vip) {
            (Some(l), _) => match self.plain_port {
                Some(p) => format!("{l}={p}"),
                None => l.to_string(),
            },
            (None, Some(v)) => {
                let pool: Vec<String> = self.pool.iter().map(|m| m.to_string()).collect();
                format!("{v} -> {}", pool.join(","))
            }
            (None, None) => "?".into(),
        }
    }

    fn validate(&self, place: &str) -> Result<(), ConfigError> {
        let bad = |problem: &str| Err(ConfigError::invalid(place, problem));
        match (self.listen, self.vip) {
            (Some(_), Some(_)) => return bad("listen (direct) and vip (balanced) exclude each other"),
            (None, None) => return bad("needs listen (direct) or vip with a pool (balanced)"),
            (Some(l), None) => {
                if !self.pool.is_empty() {
                    return bad("pool needs vip, not listen");
                }
                if l.port() == 0 || self.plain_port == Some(0) {
                    return bad("port 0 names no service");
                }
            }
            (None, Some(v)) => {
                if self.plain_port.is_some() {
                    return bad("plain_port is for a direct service (listen); a pool names its ports");
                }
                if self.pool.is_empty() {
                    return bad("vip needs a non-empty pool");
                }
                if v.port() == 0 || self.pool.iter().any(|m| m.port() == 0) {
                    return bad("port 0 names no service");
                }
                let mut seen = HashSet::new();
                if let Some(m) = self.pool.iter().find(|m| !seen.insert(**m) || **m == v) {
                    return Err(ConfigError::invalid(place, format!("pool member {m} is listed twice")));
                }
            }
        }
        Ok(())
    }
}

impl InlineConfig {
    /// `tlsgate inline run --client-iface … --server-iface …`, the services added by the caller.
    pub fn from_flags(client_iface: String, server_iface: String, mode: ReleaseMode) -> Self {
        InlineConfig {
            client_iface,
            server_iface,
            mode,
            limits: InlineLimits::default(),
            service: Vec::new(),
        }
    }

    /// A service's release mode: its own, else the section's.
    pub fn mode_of(&self, s: &InlineService) -> ReleaseMode {
        s.mode.unwrap_or(self.mode)
    }

    /// The certificate and key files: what a reload re-reads.
    pub fn files(&self) -> Vec<PathBuf> {
        self.service.iter().flat_map(|s| [s.cert.clone(), s.key.clone()]).collect()
    }

    /// Why `new` cannot be applied to the running bridge without a restart (interfaces, limits,
    /// services other than their certificates), or `None` when only certificates changed.
    pub fn restart_needed(&self, new: &InlineConfig) -> Option<String> {
        if (&self.client_iface, &self.server_iface) != (&new.client_iface, &new.server_iface) {
            return Some("the interfaces changed; a restart moves the bridge".into());
        }
        if self.limits != new.limits {
            return Some("the limits changed; a restart applies them".into());
        }
        let shape = |c: &InlineConfig| -> Vec<_> {
            c.service.iter().map(|s| (s.listen, s.plain_port, s.vip, s.pool.clone(), c.mode_of(s))).collect()
        };
        if shape(self) != shape(new) {
            return Some("the services changed (addresses, pools or modes); a restart applies them".into());
        }
        None
    }

    pub(crate) fn resolve_paths(&mut self, dir: &std::path::Path) {
        for s in &mut self.service {
            s.cert = dir.join(&s.cert);
            s.key = dir.join(&s.key);
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |problem: String| Err(ConfigError::invalid("[inline]", problem));
        for (key, name) in [("client_iface", &self.client_iface), ("server_iface", &self.server_iface)] {
            // IFNAMSIZ: 16 bytes with the terminating NUL.
            if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
                return bad(format!("{key} {name:?} is not an interface name"));
            }
        }
        if self.client_iface == self.server_iface {
            return bad(format!(
                "client_iface and server_iface are both {:?}; a bridge needs two",
                self.client_iface
            ));
        }
        if self.service.is_empty() {
            return bad("no [[inline.service]] defined".into());
        }
        let l = &self.limits;
        if l.max_flows == 0 || l.idle_timeout.is_zero() || l.syn_timeout.is_zero() {
            return bad("limits: max_flows, idle_timeout and syn_timeout must be above zero".into());
        }
        if l.window_floor > u32::from(u16::MAX) {
            return bad(format!(
                "limits: window_floor {} is above any SYN's window (65535): every flow would be proxied",
                l.window_floor
            ));
        }
        if l.full_proxy_max_flows > FULL_PROXY_MAX_FLOWS {
            return bad(format!(
                "limits: full_proxy_max_flows {} is above {FULL_PROXY_MAX_FLOWS} (each flow holds 256 KiB of buffers)",
                l.full_proxy_max_flows
            ));
        }
        if !(FLOW_WINDOW_MIN..=FLOW_WINDOW_MAX).contains(&l.flow_window) {
            return bad(format!(
                "limits: flow_window {} is outside {FLOW_WINDOW_MIN}..={FLOW_WINDOW_MAX} bytes",
                l.flow_window
            ));
        }
        let mut seen = HashSet::new();
        for (i, s) in self.service.iter().enumerate() {
            let place = format!("inline.service[{i}]");
            s.validate(&place)?;
            // A packet is matched to one service by its address, and a pool member to one vip.
            for addr in std::iter::once(s.addr()).chain(s.pool.iter().copied()) {
                if !seen.insert(addr) {
                    return Err(ConfigError::invalid(place, format!("{addr} is used by another service")));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    const GOOD: &str = r#"
[inline]
client_iface = "eth0"
server_iface = "eth1"
mode = "cut-through"
limits = { max_flows = 1000, idle_timeout = "2m", window_floor = 400, flow_window = 4194304 }

[[inline.service]]
listen = "10.0.0.2:443"
plain_port = 80
cert = "a.pem"
key = "a.key"

[[inline.service]]
vip = "10.0.0.100:443"
pool = ["10.0.0.11:80", "10.0.0.12:80"]
cert = "b.pem"
key = "b.key"
mode = "buffered"
"#;

    #[test]
    fn a_direct_and_a_balanced_service_parse() {
        let c = Config::from_toml(GOOD).unwrap().inline.unwrap();
        assert_eq!((c.client_iface.as_str(), c.server_iface.as_str()), ("eth0", "eth1"));
        assert_eq!(c.limits.max_flows, 1000);
        assert_eq!(c.limits.idle_timeout, std::time::Duration::from_secs(120));
        assert_eq!(c.limits.syn_timeout, std::time::Duration::from_secs(5), "unset limits keep defaults");
        assert_eq!((c.limits.window_floor, c.limits.full_proxy_max_flows), (400, 256));
        assert_eq!(c.limits.flow_window, 4 << 20);
        assert_eq!(c.service[0].label(), "10.0.0.2:443=80");
        assert_eq!(c.mode_of(&c.service[0]), super::ReleaseMode::CutThrough, "the section's mode");
        assert_eq!(c.mode_of(&c.service[1]), super::ReleaseMode::Buffered, "the service's own");
        assert!(c.service[1].is_balanced());
        assert_eq!(c.service[1].label(), "10.0.0.100:443 -> 10.0.0.11:80,10.0.0.12:80");
        assert_eq!(c.files().len(), 4);
    }

    #[test]
    fn what_could_not_run_is_refused_with_its_reason() {
        let cases = [
            ("server_iface = \"eth1\"", "server_iface = \"eth0\"", "a bridge needs two"),
            ("client_iface = \"eth0\"", "client_iface = \"\"", "is not an interface name"),
            ("client_iface = \"eth0\"", "client_iface = \"a-very-long-name0\"", "is not an interface name"),
            ("plain_port = 80", "plain_port = 80\nvip = \"10.0.0.9:443\"", "exclude each other"),
            ("listen = \"10.0.0.2:443\"\nplain_port = 80", "plain_port = 80", "needs listen"),
            ("pool = [\"10.0.0.11:80\", \"10.0.0.12:80\"]", "pool = []", "vip needs a non-empty pool"),
            ("\"10.0.0.12:80\"]", "\"10.0.0.11:80\"]", "pool member 10.0.0.11:80 is listed twice"),
            ("vip = \"10.0.0.100:443\"", "vip = \"10.0.0.2:443\"", "10.0.0.2:443 is used by another service"),
            ("mode = \"cut-through\"", "mode = \"eager\"", "unknown variant `eager`"),
            ("max_flows = 1000", "max_flows = 0", "must be above zero"),
            ("window_floor = 400", "window_floor = 70000", "window_floor 70000 is above any SYN's window"),
            ("flow_window = 4194304", "flow_window = 16384", "flow_window 16384 is outside 65536..="),
            ("flow_window = 4194304", "flow_window = 134217728", "flow_window 134217728 is outside"),
            ("window_floor = 400", "full_proxy_max_flows = 5000", "full_proxy_max_flows 5000 is above 4096"),
            ("plain_port = 80", "plain_port = 80\ntls_versions = [\"1.1\"]", "unknown field `tls_versions`"),
        ];
        for (from, to, want) in cases {
            let text = GOOD.replacen(from, to, 1);
            assert_ne!(text, GOOD, "{from:?} not in the example");
            let err = Config::from_toml(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{to:?}: got {err}");
        }
        let none = GOOD.split("[[inline.service]]").next().unwrap();
        let err = Config::from_toml(none).unwrap_err().to_string();
        assert!(err.contains("no [[inline.service]] defined"), "{err}");
    }

    #[test]
    fn only_certificates_change_without_a_restart() {
        let c = Config::from_toml(GOOD).unwrap().inline.unwrap();
        let mut new = c.clone();
        new.service[0].cert = "renewed.pem".into();
        assert_eq!(c.restart_needed(&new), None);
        new.server_iface = "eth2".into();
        assert!(c.restart_needed(&new).unwrap().contains("interfaces"));
        let mut new = c.clone();
        new.service[1].pool.pop();
        assert!(c.restart_needed(&new).unwrap().contains("services"));
        let mut new = c.clone();
        new.mode = super::ReleaseMode::Buffered;
        assert!(c.restart_needed(&new).unwrap().contains("services"), "service 0 inherits the mode");
    }
}

//! `[terminate]`: TLS in, plaintext to backends.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tlsgate_core::names::NamePattern;

use crate::ConfigError;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TerminateConfig {
    #[serde(default)]
    pub listener: Vec<ListenerConfig>,
    /// How often certificate, key, CA and CRL files are checked for changes; a change reloads
    /// them. `"0s"` turns watching off (SIGHUP still reloads).
    #[serde(default = "default_watch_interval", with = "humantime_serde")]
    pub watch_interval: Duration,
    /// On SIGTERM, how long open connections may run on before they are cut.
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Connections open at once across every listener; more wait in the kernel's accept queue.
    pub max_connections: Option<usize>,
    /// The control socket (a Unix stream socket, mode 0660) where applications send directives
    /// about their own connections (docs/directives.md); off when absent. Read at start only.
    pub control: Option<PathBuf>,
}

impl TerminateConfig {
    pub fn new(listener: Vec<ListenerConfig>) -> Self {
        TerminateConfig {
            listener,
            watch_interval: default_watch_interval(),
            drain_timeout: default_drain_timeout(),
            max_connections: None,
            control: None,
        }
    }

    /// Every file the running listeners read: what a change to should reload.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for l in &self.listener {
            for c in &l.certificate {
                files.push(c.cert.clone());
                // `keyd:` and `pkcs11:` keys live in another process or a token, not a file.
                if c.key_is_file() {
                    files.push(c.key.clone());
                }
                files.extend(c.ocsp_file.iter().cloned());
            }
            files.extend(l.client_auth.ca.iter().cloned());
            files.extend(l.client_auth.crl.iter().cloned());
        }
        files.sort();
        files.dedup();
        files
    }
}

fn default_watch_interval() -> Duration {
    Duration::from_secs(2)
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}

/// One listening socket with its certificates and routes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// A name for logs; defaults to the listen address.
    pub name: Option<String>,
    pub listen: SocketAddr,
    /// ALPN protocols offered, in order of preference. Empty: no ALPN.
    #[serde(default)]
    pub alpn: Vec<String>,
    #[serde(default = "default_versions")]
    pub tls_versions: Vec<TlsVersion>,
    /// Time a client has from TCP accept to a finished TLS handshake.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A relayed connection with no byte either way for this long is closed; `"0s"`: never.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections of this listener open at once; more wait in the kernel's accept queue.
    pub max_connections: Option<usize>,
    /// Expect a PROXY protocol header (v1 or v2) from a load balancer in front before the TLS
    /// handshake, and take the client's address from it. Only for listeners that only trusted
    /// load balancers can reach: whoever sends the header chooses the address.
    #[serde(default)]
    pub accept_proxy_protocol: bool,
    /// A STARTTLS protocol (`smtp`, `imap`, `pop3`, `ftp`, `postgres`, `ldap`): tlsgate answers
    /// the plaintext prologue itself and starts TLS when the client asks. See docs/starttls.md.
    #[serde(default, deserialize_with = "crate::starttls::protocol")]
    pub starttls: Option<crate::StartTls>,
    /// The name in tlsgate's STARTTLS greeting; default: the machine's host name.
    pub starttls_host: Option<String>,
    /// Certificates loaded from files; may be empty when `acme` issues this listener's.
    #[serde(default)]
    pub certificate: Vec<CertificateConfig>,
    /// Certificates issued and renewed by an ACME server (RFC 8555), validated by TLS-ALPN-01 on
    /// this listener. See docs/acme.md.
    pub acme: Option<crate::acme::AcmeConfig>,
    pub route: Vec<RouteConfig>,
    /// Mutual TLS: whether and how clients present certificates.
    #[serde(default)]
    pub client_auth: ClientAuthConfig,
    /// Kernel TLS offload of the record layer after the handshake (docs/ktls.md).
    #[serde(default)]
    pub ktls: KtlsMode,
    /// Connections start as a plain byte relay; the backend application starts and stops TLS
    /// with `start_tls` / `stop_tls` on the control socket (docs/directives.md).
    #[serde(default)]
    pub directed: bool,
}

/// `ktls = "auto" | "on" | "off"`: whether the kernel's TLS (the `tls` ULP) takes over a
/// connection's record layer after the handshake.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KtlsMode {
    /// Offload when the kernel has the ULP and the suite; otherwise, or on any error, the
    /// connection stays in tlsgate's own record layer.
    #[default]
    Auto,
    /// Offload every connection; a kernel without the ULP is a start-up error.
    On,
    /// Never offload.
    Off,
}

impl std::str::FromStr for KtlsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(KtlsMode::Auto),
            "on" => Ok(KtlsMode::On),
            "off" => Ok(KtlsMode::Off),
            other => Err(format!("{other:?}: expected auto, on or off")),
        }
    }
}

/// `[terminate.listener.client_auth]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthConfig {
    #[serde(default)]
    pub mode: ClientAuthMode,
    /// PEM bundle of the CAs that issue client certificates.
    pub ca: Option<PathBuf>,
    /// PEM CRL files of those CAs; re-read on reload. A client whose issuer has no CRL here is
    /// refused once any CRL is configured (fail closed).
    #[serde(default)]
    pub crl: Vec<PathBuf>,
    /// Refuse every client while a CRL is past its next update (by default that is a warning).
    #[serde(default)]
    pub crl_strict: bool,
    /// Subject common names admitted.
    #[serde(default)]
    pub allow_cn: Vec<String>,
    /// DNS SANs admitted (exact or `*.` wildcard).
    #[serde(default)]
    pub allow_dns: Vec<String>,
    /// URI SANs admitted (SPIFFE IDs); an entry ending in `/*` admits that prefix.
    #[serde(default)]
    pub allow_uri: Vec<String>,
    /// IP address SANs admitted.
    #[serde(default)]
    pub allow_ip: Vec<std::net::IpAddr>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    /// No certificate is asked for.
    #[default]
    None,
    /// Asked for; a client without one is admitted, a client with a bad one is refused.
    Optional,
    /// Required: no certificate, no connection.
    Required,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// A certificate chain and its key, served for the names it lists.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM file: the leaf first, then intermediates.
    pub cert: PathBuf,
    /// PEM file: PKCS#8, SEC1 (EC) or PKCS#1 (RSA) private key; or `keyd:SOCKET#NAME`, a key
    /// held by `tlsgate keyd`; or `pkcs11:…`, a key in a PKCS#11 token (docs/keyd.md).
    pub key: PathBuf,
    /// Server names this certificate answers (exact or `*.` wildcard). When absent, the DNS names
    /// in the certificate's subjectAltName are used.
    pub names: Option<Vec<String>>,
    /// Serve this certificate when the client sent no SNI or a name no certificate lists. Without
    /// a default such handshakes are refused with an `unrecognized_name` alert.
    #[serde(default)]
    pub default: bool,
    /// A DER OCSP response (RFC 6960) to staple, reloaded with the certificate. One for another
    /// certificate is refused; one past its `nextUpdate` is not stapled.
    pub ocsp_file: Option<PathBuf>,
    /// Without `ocsp_file`: fetch a response from the OCSP responder the certificate names
    /// (authorityInfoAccess) and staple it, refreshed before its `nextUpdate`. `false` turns
    /// fetching off; a certificate naming no responder is served without staple either way.
    #[serde(default = "default_true")]
    pub ocsp: bool,
    /// A fetched or provided response stops being stapled this long before its `nextUpdate`, so
    /// no client with a slightly fast clock sees a stale one; refreshes aim at half of the time
    /// before that point.
    #[serde(default = "default_ocsp_margin", with = "humantime_serde")]
    pub ocsp_margin: Duration,
}

fn default_true() -> bool {
    true
}

fn default_ocsp_margin() -> Duration {
    Duration::from_secs(3600)
}

impl CertificateConfig {
    /// False for `keyd:` and `pkcs11:` keys, which live in another process or a token.
    pub fn key_is_file(&self) -> bool {
        !self.key.to_str().is_some_and(|k| k.starts_with("keyd:") || k.starts_with("pkcs11:"))
    }
}

/// A backend pool and the server names that reach it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Server names (exact or `*.` wildcard) routed here. A route without names is the listener's
    /// default route, taken by handshakes that match no other route.
    #[serde(default)]
    pub sni: Vec<String>,
    /// ALPN protocols this route takes: it matches only when the handshake negotiated one of
    /// them. Empty: any protocol, and handshakes that negotiated none.
    #[serde(default)]
    pub alpn: Vec<String>,
    /// `host:port` of each backend; host names are resolved at connect time.
    pub backends: Vec<BackendAddr>,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Backends tried for one connection before giving up; defaults to every member once.
    pub connect_attempts: Option<usize>,
    #[serde(default)]
    pub balance: BalancePolicy,
    /// Relay HTTP/1.1 requests instead of bytes, adding `X-Forwarded-*` and client-certificate
    /// headers (and removing any the client sent itself). See docs/http-headers.md.
    #[serde(default)]
    pub http_headers: bool,
    /// Send a PROXY protocol header (v1 text, or v2 binary with TLS details as TLVs) to the
    /// backend before the client's bytes. See docs/proxy-protocol.md.
    pub proxy_protocol: Option<ProxyProtocol>,
    #[serde(default)]
    pub health: HealthConfig,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    V1,
    V2,
}

impl std::str::FromStr for ProxyProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v1" => Ok(ProxyProtocol::V1),
            "v2" => Ok(ProxyProtocol::V2),
            _ => Err(format!("{s:?}: expected v1 or v2")),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BalancePolicy {
    #[default]
    RoundRobin,
    LeastConnections,
    SourceHash,
}

/// `[terminate.listener.route.health]`: active TCP checks and passive ejection.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Active TCP connect checks every `interval`; absent: none (passive ejection only).
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    #[serde(default = "default_check_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive successful checks that bring a member back.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures (checks or real connects) that take a member out.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Without active checks: how long a member that failed `fall` connects stays out.
    #[serde(default = "default_eject_time", with = "humantime_serde")]
    pub eject_time: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: None,
            timeout: default_check_timeout(),
            rise: default_rise(),
            fall: default_fall(),
            eject_time: default_eject_time(),
        }
    }
}

fn default_check_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}
fn default_eject_time() -> Duration {
    Duration::from_secs(10)
}

/// `host:port`, checked for shape when the config loads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct BackendAddr {
    pub host: String,
    pub port: u16,
}

impl TryFrom<String> for BackendAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for BackendAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(BackendAddr { host: sa.ip().to_string(), port: sa.port() });
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("backend {s:?} is not host:port"))?;
        let port = port.parse().map_err(|_| format!("backend {s:?} has no valid port"))?;
        if host.is_empty() || host.contains(['[', ']', ':', '/', ' ']) {
            return Err(format!("backend {s:?} has no valid host"));
        }
        Ok(BackendAddr { host: host.to_string(), port })
    }
}

impl std::fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

pub(crate) fn default_versions() -> Vec<TlsVersion> {
    vec![TlsVersion::Tls12, TlsVersion::Tls13]
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(600)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

impl ListenerConfig {
    /// The listener for `tlsgate terminate --listen … --cert … --key … --backend …`: one
    /// certificate served for every name, one route to the given backends.
    pub fn from_flags(listen: SocketAddr, cert: PathBuf, key: PathBuf, backends: Vec<BackendAddr>) -> Self {
        ListenerConfig {
            name: None,
            listen,
            alpn: Vec::new(),
            tls_versions: default_versions(),
            handshake_timeout: default_handshake_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: None,
            accept_proxy_protocol: false,
            starttls: None,
            starttls_host: None,
            certificate: vec![CertificateConfig {
                cert,
                key,
                names: Some(Vec::new()),
                default: true,
                ocsp_file: None,
                ocsp: true,
                ocsp_margin: default_ocsp_margin(),
            }],
            route: vec![RouteConfig {
                sni: Vec::new(),
                alpn: Vec::new(),
                backends,
                connect_timeout: default_connect_timeout(),
                connect_attempts: None,
                balance: BalancePolicy::default(),
                http_headers: false,
                proxy_protocol: None,
                health: HealthConfig::default(),
            }],
            client_auth: ClientAuthConfig::default(),
            ktls: KtlsMode::default(),
            directed: false,
            acme: None,
        }
    }

    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.listen.to_string())
    }

    /// The ALPN protocols offered in the handshake: the listener's `alpn`, or when it has none,
    /// every protocol its routes name, in route order (validation allows that only when every
    /// route names its protocols, so nothing a route takes goes unoffered).
    pub fn offered_alpn(&self) -> Vec<String> {
        if !self.alpn.is_empty() {
            return self.alpn.clone();
        }
        let mut offered: Vec<String> = Vec::new();
        for p in self.route.iter().flat_map(|r| &r.alpn) {
            if !offered.contains(p) {
                offered.push(p.clone());
            }
        }
        offered
    }
}

impl TerminateConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.listener.is_empty() {
            return Err(ConfigError::invalid("[terminate]", "no [[terminate.listener]] defined"));
        }
        if self.max_connections == Some(0) {
            return Err(ConfigError::invalid("[terminate]", "max_connections must be at least 1"));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, l) in self.listener.iter().enumerate() {
            let place = format!("terminate.listener[{i}] ({})", l.display_name());
            if !seen.insert(l.listen) && l.listen.port() != 0 {
                return Err(ConfigError::invalid(place, format!("{} is listed twice", l.listen)));
            }
            l.validate(&place)?;
            if l.directed && (l.starttls.is_some() || l.accept_proxy_protocol) {
                return Err(ConfigError::invalid(
                    place,
                    "directed excludes starttls and accept_proxy_protocol: the application directs when TLS starts",
                ));
            }
            if l.directed && self.control.is_none() {
                return Err(ConfigError::invalid(
                    place,
                    "directed needs [terminate]'s control socket, where the directives arrive",
                ));
            }
        }
        Ok(())
    }
}

impl ListenerConfig {
    fn validate(&self, place: &str) -> Result<(), ConfigError> {
        let bad = |problem: String| ConfigError::invalid(place, problem);
        if self.tls_versions.is_empty() {
            return Err(bad("tls_versions is empty".into()));
        }
        if self.max_connections == Some(0) {
            return Err(bad("max_connections must be at least 1".into()));
        }
        if self.handshake_timeout.is_zero() {
            return Err(bad("handshake_timeout must be above zero".into()));
        }
        if self.certificate.is_empty() && self.acme.is_none() {
            return Err(bad("no certificate (and no acme table to obtain one)".into()));
        }
        if let Some(acme) = &self.acme {
            acme.validate().map_err(bad)?;
        }
        if self.certificate.iter().filter(|c| c.default).count() > 1 {
            return Err(bad("more than one certificate has default = true".into()));
        }
        for alpn in &self.alpn {
            if alpn.is_empty() || alpn.len() > 255 {
                return Err(bad(format!("ALPN protocol {alpn:?} must be 1 to 255 bytes")));
            }
        }
        for c in &self.certificate {
            for n in c.names.iter().flatten() {
                NamePattern::parse(n).map_err(|e| bad(e.to_string()))?;
            }
        }
        self.client_auth.validate(&bad)?;
        crate::starttls::check(self.starttls, self.starttls_host.as_deref()).map_err(bad)?;
        if self.starttls.is_some() && self.route.iter().any(|r| r.http_headers) {
            return Err(bad("starttls relays bytes: no route can have http_headers".into()));
        }
        if self.route.is_empty() {
            return Err(bad("no route".into()));
        }
        if self.route.iter().filter(|r| r.sni.is_empty() && r.alpn.is_empty()).count() > 1 {
            return Err(bad("more than one default route (a route without sni and alpn)".into()));
        }
        self.validate_route_alpn(place)?;
        for (j, r) in self.route.iter().enumerate() {
            let bad = |problem: String| ConfigError::invalid(format!("{place} route[{j}]"), problem);
            if r.backends.is_empty() {
                return Err(bad("no backends".into()));
            }
            if r.connect_timeout.is_zero() {
                return Err(bad("connect_timeout must be above zero".into()));
            }
            let h = &r.health;
            if h.rise == 0 || h.fall == 0 {
                return Err(bad("health rise and fall must be at least 1".into()));
            }
            if h.interval.is_some_and(|i| i.is_zero()) || h.timeout.is_zero() {
                return Err(bad("health interval and timeout must be above zero".into()));
            }
            if r.connect_attempts == Some(0) {
                return Err(bad("connect_attempts must be at least 1".into()));
            }
            for n in &r.sni {
                NamePattern::parse(n).map_err(|e| bad(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// A route's protocols must be ones the listener offers, or the route could never match.
    fn validate_route_alpn(&self, place: &str) -> Result<(), ConfigError> {
        let named = self.route.iter().any(|r| !r.alpn.is_empty());
        if named && self.alpn.is_empty() {
            if let Some(j) = self.route.iter().position(|r| r.alpn.is_empty()) {
                return Err(ConfigError::invalid(
                    format!("{place} route[{j}]"),
                    "other routes name ALPN protocols and this one takes any, but the listener \
                     has no `alpn` list: list every protocol the listener offers in its `alpn` \
                     (e.g. [\"h2\", \"http/1.1\"])",
                ));
            }
        }
        for (j, r) in self.route.iter().enumerate() {
            let bad = |problem: String| ConfigError::invalid(format!("{place} route[{j}]"), problem);
            for p in &r.alpn {
                if p.is_empty() || p.len() > 255 {
                    return Err(bad(format!("ALPN protocol {p:?} must be 1 to 255 bytes")));
                }
                if !self.alpn.is_empty() && !self.alpn.contains(p) {
                    return Err(bad(format!(
                        "alpn {p:?} is not offered by the listener (its alpn is {:?}), so this \
                         route could never match",
                        self.alpn
                    )));
                }
                if r.http_headers && !matches!(p.as_str(), "http/1.1" | "http/1.0") {
                    return Err(bad(format!("http_headers relays HTTP/1.x, but this route takes {p:?}")));
                }
                // Without names, a protocol an earlier nameless route took already never comes here.
                let earlier = self.route[..j].iter().position(|o| o.sni.is_empty() && o.alpn.contains(p));
                if let (true, Some(k)) = (r.sni.is_empty(), earlier) {
                    return Err(bad(format!(
                        "alpn {p:?} without sni is already taken by route[{k}], so this route \
                         could never match it"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl ClientAuthConfig {
    pub fn has_allow_list(&self) -> bool {
        !(self.allow_cn.is_empty()
            && self.allow_dns.is_empty()
            && self.allow_uri.is_empty()
            && self.allow_ip.is_empty())
    }

    fn validate(&self, bad: &dyn Fn(String) -> ConfigError) -> Result<(), ConfigError> {
        match self.mode {
            ClientAuthMode::None => {
                if self.ca.is_some() || !self.crl.is_empty() || self.has_allow_list() {
                    return Err(bad(
                        "client_auth has a CA, CRL or allow-list but mode = \"none\"; set mode \
                         to \"optional\" or \"required\""
                            .into(),
                    ));
                }
            }
            ClientAuthMode::Optional | ClientAuthMode::Required => {
                if self.ca.is_none() {
                    return Err(bad("client_auth needs `ca` when mode is not \"none\"".into()));
                }
            }
        }
        for n in &self.allow_dns {
            NamePattern::parse(n).map_err(|e| bad(e.to_string()))?;
        }
        Ok(())
    }
}

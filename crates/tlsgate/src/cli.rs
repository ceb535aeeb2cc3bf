//! Command-line interface. Flags for the quick cases map onto the same config model as the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tlsgate_config::{BackendAddr, ProxyProtocol, ReleaseMode, StartTls};

use crate::examples;

#[derive(Debug, Parser)]
#[command(name = "tlsgate", version, about = "TLS offload gateway")]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    /// Worker threads (default: one per CPU). `--workers 1` runs everything on one thread.
    #[arg(long, global = true, help_heading = "Global options", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,
    /// Started as root, run as this user once the listeners are bound (overrides [process] user).
    #[arg(long, global = true, help_heading = "Global options")]
    pub user: Option<String>,
    /// ... and as this group (overrides [process] group; default: the user's primary group).
    #[arg(long, global = true, help_heading = "Global options")]
    pub group: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct LogArgs {
    /// Log filter (overrides [log] level; RUST_LOG overrides both).
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// Log format (overrides [log] format).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// TLS in, plaintext to backends.
    #[command(after_help = examples::TERMINATE)]
    Terminate(Box<TerminateArgs>),
    /// Plaintext in, TLS out: for programs that have no TLS code.
    #[command(after_help = examples::ORIGINATE)]
    Originate(Box<OriginateArgs>),
    /// Many TCP and UDP flows over one mutually authenticated TLS connection.
    #[command(subcommand, after_help = examples::TUNNEL)]
    Tunnel(TunnelCommand),
    /// An HTTPS proxy for browsers whose tunnels drop the outer TLS once open (gate, portal).
    #[command(subcommand, after_help = examples::CONNECT)]
    Connect(ConnectCommand),
    /// Packet-level TLS offload that keeps the client's TCP connection, between two interfaces.
    #[command(subcommand, about = examples::INLINE_ABOUT, after_help = examples::INLINE)]
    Inline(InlineCommand),
    /// A throwaway CA, a built-in HTTP backend and a terminator in front of it, on loopback.
    #[command(after_help = examples::DEMO)]
    Demo(DemoArgs),
    /// The built-in plaintext HTTP backend alone (GET /, POST /echo, POST /sha256).
    #[command(after_help = examples::BACKEND)]
    Backend(BackendArgs),
    /// Holds private keys in a process of its own and signs for terminate over a Unix socket
    /// (terminate's `key = "keyd:SOCKET#NAME"`).
    #[command(after_help = examples::KEYD)]
    Keyd(KeydArgs),
    /// Every section of one config file ([terminate], [originate], [tunnel.gate],
    /// [tunnel.portal], [inline]) in one process, with one admin listener.
    #[command(after_help = examples::RUN)]
    Run(RunArgs),
    /// Loads a config and every file it names as a start would, binds nothing: `config OK`, or
    /// each problem and exit status 1.
    #[command(after_help = examples::CHECK)]
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// TOML config file.
    #[arg(long, short)]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct TerminateArgs {
    /// TOML config file; when given, it is the whole configuration.
    #[arg(long, short, conflicts_with_all = ["listen", "cert", "key", "backend"])]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, required_unless_present = "config")]
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain, leaf first.
    #[arg(long, required_unless_present_any = ["config", "acme_directory"])]
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    #[arg(long, required_unless_present_any = ["config", "acme_directory"])]
    pub key: Option<PathBuf>,
    /// Backend host:port; repeat for a round-robin pool.
    #[arg(long, required_unless_present = "config")]
    pub backend: Vec<BackendAddr>,
    /// ACME directory URL: certificates for the --acme-name names are ordered from it, validated
    /// by TLS-ALPN-01 on this listener (a throwaway certificate serves until the first issuance).
    #[arg(long, value_name = "URL", conflicts_with_all = ["config", "cert", "key"], requires_all = ["acme_name", "acme_state"])]
    pub acme_directory: Option<String>,
    /// A DNS name to order the certificate for; repeat for several.
    #[arg(long, value_name = "NAME", requires = "acme_directory")]
    pub acme_name: Vec<String>,
    /// Directory (mode 0700) for the ACME account key and certificates.
    #[arg(long, value_name = "DIR", requires = "acme_directory")]
    pub acme_state: Option<PathBuf>,
    /// PEM CA bundle trusted for the ACME directory's own HTTPS instead of the system's roots.
    #[arg(long, value_name = "FILE", requires = "acme_directory")]
    pub acme_directory_ca: Option<PathBuf>,
    /// ACME account contact, e.g. mailto:ops@example.com.
    #[arg(long, value_name = "URI", requires = "acme_directory")]
    pub acme_contact: Option<String>,
    /// Validate by HTTP-01 on this plain port (on the --listen address) instead of TLS-ALPN-01.
    #[arg(long, value_name = "PORT", requires = "acme_directory")]
    pub acme_http_port: Option<u16>,
    /// ALPN protocol to offer; repeat for several, most preferred first.
    #[arg(long, conflicts_with = "config")]
    pub alpn: Vec<String>,
    /// Time a client has to finish its handshake.
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "config")]
    pub handshake_timeout: Option<Duration>,
    /// CA bundle for client certificates: turns on mutual TLS (required).
    #[arg(long, conflicts_with = "config")]
    pub client_ca: Option<PathBuf>,
    /// CRL file for client certificates; repeat for several.
    #[arg(long, requires = "client_ca", conflicts_with = "config")]
    pub crl: Vec<PathBuf>,
    /// Admit client certificates with this subject CN; repeat for several.
    #[arg(long, requires = "client_ca", conflicts_with = "config")]
    pub allow_cn: Vec<String>,
    /// Admit client certificates with this DNS SAN (exact or *.wildcard); repeat for several.
    #[arg(long, requires = "client_ca", conflicts_with = "config")]
    pub allow_dns: Vec<String>,
    /// Admit client certificates with this URI SAN (a SPIFFE ID; "/*" suffix for a prefix).
    #[arg(long, requires = "client_ca", conflicts_with = "config")]
    pub allow_uri: Vec<String>,
    /// Send a PROXY protocol header (v1 or v2, with TLS details) to the backends.
    #[arg(long, conflicts_with = "config")]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Answer this protocol's plaintext prologue and start TLS on request: smtp, imap, pop3,
    /// ftp, postgres or ldap. The backend stays plaintext.
    #[arg(long, value_name = "PROTO", conflicts_with = "config")]
    pub starttls: Option<StartTls>,
    /// Name in the STARTTLS greeting (default: the machine's host name).
    #[arg(long, value_name = "NAME", requires = "starttls", conflicts_with = "config")]
    pub starttls_host: Option<String>,
    /// Kernel TLS offload after the handshake: auto (when the kernel has it), on (required),
    /// off. Overrides every listener's `ktls` in a config file.
    #[arg(long, value_name = "auto|on|off")]
    pub ktls: Option<tlsgate_config::KtlsMode>,
    /// Share TLS session resumption with the other instances of a fleet through this Redis:
    /// `redis://[:PASSWORD@]HOST:PORT/DB` or `rediss://…`. Sets `[fleet]`'s `redis`.
    #[arg(long, value_name = "URL", requires = "fleet_key")]
    pub fleet_redis: Option<tlsgate_config::RedisUrl>,
    /// The fleet key: a file of 32 random bytes, mode 0600 (`head -c 32 /dev/urandom`).
    #[arg(long, value_name = "FILE", requires = "fleet_redis")]
    pub fleet_key: Option<PathBuf>,
    /// CAs (PEM) that verify a `rediss://` Redis instead of the system's.
    #[arg(long, value_name = "FILE", requires = "fleet_redis")]
    pub fleet_redis_ca: Option<PathBuf>,
    /// How often the fleet's ticket key rotates (default 1h; overrides `[fleet]`'s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub ticket_rotation: Option<Duration>,
    /// Admin listener address (/healthz, /metrics, /status).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Start connections as a plain relay; the backend application starts and stops TLS with
    /// directives on the control socket (--control; docs/directives.md).
    #[arg(long, requires = "control", conflicts_with_all = ["config", "starttls"])]
    pub directed: bool,
    /// Control socket (Unix, mode 0660) for application directives (docs/directives.md); sets
    /// `[terminate]`'s `control`.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Start even if the key file is readable by group or others.
    #[arg(long)]
    pub allow_insecure_key_permissions: bool,
}

#[derive(Debug, Args)]
pub struct OriginateArgs {
    /// TOML config file; when given, it is the whole configuration.
    #[arg(long, short, conflicts_with_all = ["listen", "connect"])]
    pub config: Option<PathBuf>,
    /// Plaintext address to listen on.
    #[arg(long, required_unless_present = "config")]
    pub listen: Option<SocketAddr>,
    /// Upstream host:port spoken to over TLS; repeat for failover, in order.
    #[arg(long, required_unless_present = "config")]
    pub connect: Vec<BackendAddr>,
    /// PEM CA bundle trusted for the upstream's certificate (default: the system's roots).
    #[arg(long, conflicts_with = "config")]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM) presented to the upstream.
    #[arg(long, requires = "key", conflicts_with = "config")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, requires = "cert", conflicts_with = "config")]
    pub key: Option<PathBuf>,
    /// Name sent as SNI and verified in the upstream's certificate (default: the upstream's host).
    #[arg(long, conflicts_with = "config")]
    pub sni: Option<String>,
    /// ALPN protocol offered to the upstream; repeat for several.
    #[arg(long, conflicts_with = "config")]
    pub alpn: Vec<String>,
    /// Speak this protocol's STARTTLS prologue to the upstream before TLS: smtp, imap, pop3,
    /// ftp, postgres or ldap. The client stays plaintext.
    #[arg(long, value_name = "PROTO", conflicts_with = "config")]
    pub starttls: Option<StartTls>,
    /// Name given in SMTP's EHLO (default: the machine's host name).
    #[arg(long, value_name = "NAME", requires = "starttls", conflicts_with = "config")]
    pub starttls_host: Option<String>,
    /// Kernel TLS offload after the handshake: auto (when the kernel has it), on (required),
    /// off. Overrides every listener's `ktls` in a config file.
    #[arg(long, value_name = "auto|on|off")]
    pub ktls: Option<tlsgate_config::KtlsMode>,
    /// Start connections as a plain relay; the client application starts and stops TLS with
    /// directives on the control socket (--control; docs/directives.md).
    #[arg(long, requires = "control", conflicts_with_all = ["config", "starttls"])]
    pub directed: bool,
    /// A client certificate a directed connection's start_tls may pick by NAME
    /// (`"client_cert":"NAME"`); repeat for several.
    #[arg(long, value_name = "NAME=CERT,KEY", requires = "directed", value_parser = client_identity)]
    pub client_identity: Vec<(String, tlsgate_config::ClientIdentity)>,
    /// Control socket (Unix, mode 0660) for application directives; sets `[originate]`'s
    /// `control`.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Admin listener address (/healthz, /metrics).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Start even if the key file is readable by group or others.
    #[arg(long)]
    pub allow_insecure_key_permissions: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum InlineCommand {
    /// Bridges two interfaces, offloading TLS for the services named inside the packets of the
    /// clients' own TCP connections (needs CAP_NET_RAW and CAP_NET_ADMIN).
    #[command(after_help = examples::INLINE_RUN)]
    Run(Box<InlineRunArgs>),
    /// Runs flows through a deterministic simulated network with loss, reordering and
    /// duplication; prints one summary line and exits non-zero on any violation.
    #[command(after_help = examples::SIMULATE)]
    Simulate(SimulateArgs),
}

#[derive(Debug, Args)]
pub struct InlineRunArgs {
    /// TOML config file with an [inline] section; when given, it is the whole configuration.
    #[arg(long, short, conflicts_with_all = ["client_iface", "server_iface", "service", "vip", "cert", "key"])]
    pub config: Option<PathBuf>,
    /// The interface facing the clients.
    #[arg(long, value_name = "IF", required_unless_present = "config")]
    pub client_iface: Option<String>,
    /// The interface facing the servers.
    #[arg(long, value_name = "IF", required_unless_present = "config")]
    pub server_iface: Option<String>,
    /// A direct service: `ADDR:PORT` clients connect to (the server's own address), `=PLAIN_PORT`
    /// the server's plaintext port; repeat for several.
    #[arg(long, value_name = "ADDR:PORT[=PORT]")]
    pub service: Vec<DirectService>,
    /// A balanced service: a virtual `ADDR:PORT` in front of --pool.
    #[arg(long, value_name = "ADDR:PORT", requires = "pool")]
    pub vip: Option<SocketAddr>,
    /// The servers behind --vip, comma-separated `ADDR:PORT`s.
    #[arg(
        long,
        value_name = "ADDR:PORT,…",
        value_delimiter = ',',
        requires = "vip",
        conflicts_with = "config"
    )]
    pub pool: Vec<SocketAddr>,
    /// PEM certificate chain of the services, leaf first.
    #[arg(long, required_unless_present = "config")]
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    #[arg(long, required_unless_present = "config")]
    pub key: Option<PathBuf>,
    /// When client plaintext reaches the server: after its record's tag verified (`buffered`),
    /// or as decrypted, the tag checked at the record's end (`cut-through`, weaker).
    #[arg(long, value_name = "buffered|cut-through", conflicts_with = "config")]
    pub mode: Option<ReleaseMode>,
    /// End-to-end flows tracked at once (`[inline] limits.max_flows`); beyond it new flows go
    /// to the full proxy.
    #[arg(long, value_name = "N", conflicts_with = "config")]
    pub max_flows: Option<usize>,
    /// Clients whose SYN advertises a window below this many bytes are served by the full
    /// proxy (`limits.window_floor`; 0: never).
    #[arg(long, value_name = "BYTES", conflicts_with = "config")]
    pub window_floor: Option<u32>,
    /// Full-proxy flows at once (`limits.full_proxy_max_flows`; 0: no fallback).
    #[arg(long, value_name = "N", conflicts_with = "config")]
    pub full_proxy_max_flows: Option<usize>,
    /// Bytes each flow may have in flight per direction (`limits.flow_window`): at most this
    /// per round trip.
    #[arg(long, value_name = "BYTES", conflicts_with = "config")]
    pub flow_window: Option<usize>,
    /// Admin listener address (/healthz, /metrics, /status, /status.json).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Start even if the key file is readable by group or others.
    #[arg(long)]
    pub allow_insecure_key_permissions: bool,
}

/// `--service 10.0.0.2:443=80`.
#[derive(Debug, Clone, Copy)]
pub struct DirectService {
    pub listen: SocketAddr,
    pub plain_port: Option<u16>,
}

impl std::str::FromStr for DirectService {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (listen, plain) = match s.split_once('=') {
            Some((l, p)) => (l, Some(p.parse().map_err(|_| format!("{s:?}: {p:?} is not a port"))?)),
            None => (s, None),
        };
        let listen = listen.parse().map_err(|_| format!("{s:?}: {listen:?} is not ADDR:PORT"))?;
        Ok(DirectService { listen, plain_port: plain })
    }
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[arg(long, default_value_t = 20)]
    pub flows: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Probability that a packet is lost, per hop.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Probability that a packet is held back so later ones overtake it.
    #[arg(long, default_value_t = 0.0)]
    pub reorder: f64,
    #[arg(long, default_value_t = 0.0)]
    pub duplicate: f64,
    /// Plaintext each client sends, and gets back from the echo server.
    #[arg(long, default_value_t = 1 << 20)]
    pub bytes: usize,
    /// When client plaintext reaches the server: after its record's tag verified (`buffered`),
    /// or as decrypted, the tag checked at the record's end (`cut-through`, weaker).
    #[arg(long, value_enum, default_value = "buffered")]
    pub mode: SimMode,
    /// A virtual address in front of a pool instead of direct mode (443 toward 80).
    #[arg(long)]
    pub balanced: bool,
    /// The clients' receive buffer (their window), bytes.
    #[arg(long, default_value_t = 65535)]
    pub client_window: usize,
    /// Each client updates its keys after this many bytes.
    #[arg(long)]
    pub key_update_at: Option<usize>,
    /// The echo server writes at most this many bytes at a time (a seeded amount), so that
    /// its retransmissions are cut differently from its first transmissions.
    #[arg(long)]
    pub server_write: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimMode {
    Buffered,
    CutThrough,
}

#[derive(Debug, clap::Subcommand)]
pub enum TunnelCommand {
    /// The far end: accepts portals, opens destinations for them under policy.
    #[command(after_help = examples::GATE)]
    Gate(Box<GateArgs>),
    /// The near end: one TLS connection to a gate; SOCKS5, forwards and DNS on this side.
    #[command(after_help = examples::PORTAL)]
    Portal(Box<PortalArgs>),
}

#[derive(Debug, Args)]
pub struct GateArgs {
    /// TOML config file with a [tunnel.gate] section; when given, it is the whole configuration.
    #[arg(long, short, conflicts_with_all = ["listen", "cert", "key", "client_ca"])]
    pub config: Option<PathBuf>,
    /// TLS address portals connect to.
    #[arg(long, required_unless_present = "config")]
    pub listen: Option<SocketAddr>,
    /// The gate's certificate chain (PEM).
    #[arg(long, required_unless_present = "config")]
    pub cert: Option<PathBuf>,
    /// The gate's private key (PEM).
    #[arg(long, required_unless_present = "config")]
    pub key: Option<PathBuf>,
    /// CAs that issue portal certificates; portals must present one.
    #[arg(long, required_unless_present = "config")]
    pub client_ca: Option<PathBuf>,
    /// CRL file of that CA; repeat for several.
    #[arg(long, conflicts_with = "config")]
    pub crl: Vec<PathBuf>,
    /// Policy rule for every portal (`allow tcp 10.0.0.0/8 22,443`); repeat, first match wins.
    /// Without any, every authenticated portal may open anything.
    #[arg(long = "allow", conflicts_with = "config")]
    pub rules: Vec<String>,
    /// DNS server for resolving names and answering portals' DNS forwarders.
    #[arg(long, conflicts_with = "config")]
    pub resolver: Option<SocketAddr>,
    /// Kernel TLS offload of the tunnel connection after the handshake: auto (when the kernel
    /// has it), on (required), off. Overrides `ktls` in a config file.
    #[arg(long, value_name = "auto|on|off")]
    pub ktls: Option<tlsgate_config::KtlsMode>,
    /// Admin listener address (/healthz, /metrics, /status).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Start even if the key file is readable by group or others.
    #[arg(long)]
    pub allow_insecure_key_permissions: bool,
}

#[derive(Debug, Args)]
pub struct PortalArgs {
    /// TOML config file with a [tunnel.portal] section; when given, it is the whole configuration.
    #[arg(long, short, conflicts_with_all = ["gate", "ca", "cert", "key"])]
    pub config: Option<PathBuf>,
    /// The gate's host:port; repeat for gates tried in order (failover).
    #[arg(long, required_unless_present = "config")]
    pub gate: Vec<BackendAddr>,
    /// CAs trusted for the gate's certificate.
    #[arg(long, required_unless_present = "config")]
    pub ca: Option<PathBuf>,
    /// The portal's certificate chain (PEM).
    #[arg(long, required_unless_present = "config")]
    pub cert: Option<PathBuf>,
    /// The portal's private key (PEM).
    #[arg(long, required_unless_present = "config")]
    pub key: Option<PathBuf>,
    /// Name verified in the gate's certificate (default: the gate's host).
    #[arg(long, conflicts_with = "config")]
    pub server_name: Option<String>,
    /// How long a new session waits for the tunnel while it (re)connects (default 10s; with
    /// --config it overrides `session_wait`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub session_wait: Option<Duration>,
    /// SOCKS5 listener: `IP:PORT`, or a bare `PORT` for loopback (it serves whoever reaches it).
    #[arg(long, conflicts_with = "config", value_parser = loopback_by_default)]
    pub socks: Option<SocketAddr>,
    /// `tcp:LISTEN=HOST:PORT` or `udp:LISTEN=HOST:PORT`, HOST resolved by the gate; repeat.
    #[arg(long, conflicts_with = "config")]
    pub forward: Vec<tlsgate_config::Forward>,
    /// Local UDP address whose DNS queries the gate's resolver answers.
    #[arg(long, conflicts_with = "config")]
    pub dns: Option<SocketAddr>,
    /// Reach the gate through `http://[user:pass@]host:port` or `socks5://…`.
    #[arg(long, conflicts_with = "config")]
    pub proxy: Option<tlsgate_config::ProxyUrl>,
    /// Kernel TLS offload of the tunnel connection after the handshake: auto (when the kernel
    /// has it), on (required), off. Overrides `ktls` in a config file.
    #[arg(long, value_name = "auto|on|off")]
    pub ktls: Option<tlsgate_config::KtlsMode>,
    /// Admin listener address (/healthz, /metrics, /status).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Start even if the key file is readable by group or others.
    #[arg(long)]
    pub allow_insecure_key_permissions: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum ConnectCommand {
    /// The far end: an HTTPS proxy requiring client certificates, CONNECT under policy.
    #[command(after_help = examples::CONNECT_GATE)]
    Gate(Box<ConnectGateArgs>),
    /// The near end: a plain HTTP proxy and PAC file for this machine's browsers.
    #[command(after_help = examples::CONNECT_PORTAL)]
    Portal(Box<ConnectPortalArgs>),
}

#[derive(Debug, Args)]
pub struct ConnectGateArgs {
    /// TOML config file with a [connect.gate] section; when given, it is the whole configuration.
    #[arg(long, short, conflicts_with_all = ["listen", "cert", "key", "client_ca"])]
    pub config: Option<PathBuf>,
    /// TLS address portals and HTTPS-proxy clients connect to.
    #[arg(long, required_unless_present = "config")]
    pub listen: Option<SocketAddr>,
    /// The gate's certificate chain (PEM).
    #[arg(long, required_unless_present = "config")]
    pub cert: Option<PathBuf>,
    /// The gate's private key (PEM).
    #[arg(long, required_unless_present = "config")]
    pub key: Option<PathBuf>,
    /// CAs that issue client certificates; clients must present one.
    #[arg(long, required_unless_present = "config")]
    pub client_ca: Option<PathBuf>,
    /// CRL file of that CA; repeat for several.
    #[arg(long, conflicts_with = "config")]
    pub crl: Vec<PathBuf>,
    /// `IDENTITY=DESTINATION`: clients matching IDENTITY (`*`, CN, DNS or URI SAN) may CONNECT to
    /// DESTINATION (`internal.test 443`, `10.0.0.0/8 22,443`, `db.corp 5432 to 10.1.0.0/16`);
    /// repeat. Without any, every CONNECT is refused.
    #[arg(long, conflicts_with = "config")]
    pub allow: Vec<String>,
    /// `NAME=IP`: resolve NAME to IP on the gate (before DNS); repeat.
    #[arg(long = "host", conflicts_with = "config")]
    pub hosts: Vec<String>,
    /// DNS server for resolving destination names (default: the system resolver).
    #[arg(long, conflicts_with = "config")]
    pub resolver: Option<SocketAddr>,
    /// Time a client has for its TLS handshake and CONNECT head together (default 10s).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "config")]
    pub head_timeout: Option<Duration>,
    /// Splice downgraded connections in the kernel (BPF at tc ingress of IFACE): one TCP
    /// connection from portal to destination, none of its bytes through the gate's process.
    /// Name every interface portals and destinations are reached through; repeat.
    #[arg(long, value_name = "IFACE", conflicts_with = "config")]
    pub kernel_splice: Vec<String>,
    /// Admin listener address (/healthz, /metrics, /status).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Start even if the key file is readable by group or others.
    #[arg(long)]
    pub allow_insecure_key_permissions: bool,
}

#[derive(Debug, Args)]
pub struct ConnectPortalArgs {
    /// TOML config file with a [connect.portal] section; when given, it is the whole configuration.
    #[arg(long, short, conflicts_with_all = ["gate", "ca", "cert", "key"])]
    pub config: Option<PathBuf>,
    /// The plain HTTP proxy (and PAC file) address: `IP:PORT`, or a bare `PORT` for loopback.
    #[arg(long, default_value = "127.0.0.1:3128", value_parser = loopback_by_default)]
    pub listen: SocketAddr,
    /// The gate's host:port.
    #[arg(long, required_unless_present = "config")]
    pub gate: Option<BackendAddr>,
    /// CAs trusted for the gate's certificate.
    #[arg(long, required_unless_present = "config")]
    pub ca: Option<PathBuf>,
    /// The portal's certificate chain (PEM).
    #[arg(long, required_unless_present = "config")]
    pub cert: Option<PathBuf>,
    /// The portal's private key (PEM).
    #[arg(long, required_unless_present = "config")]
    pub key: Option<PathBuf>,
    /// Name verified in the gate's certificate (default: the gate's host).
    #[arg(long, conflicts_with = "config")]
    pub server_name: Option<String>,
    /// Hosts that go through the gate: `name`, `*.name`, `.name` (it and all under it), `*`; repeat.
    #[arg(long, conflicts_with = "config")]
    pub route: Vec<String>,
    /// Connect other hosts directly instead of refusing them.
    #[arg(long, conflicts_with = "config")]
    pub direct: bool,
    /// Admin listener address (/healthz, /metrics, /status).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Start even if the key file is readable by group or others.
    #[arg(long)]
    pub allow_insecure_key_permissions: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo's TLS listener listens.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Keep the throwaway CA certificate, server certificate and key, and a client certificate
    /// and key from the same CA, in this directory (created if missing) instead of deleting them
    /// on exit.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BackendArgs {
    #[arg(long)]
    pub listen: SocketAddr,
    /// Name the server gives in its answers.
    #[arg(long, default_value = "tlsgate built-in backend")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct KeydArgs {
    /// Unix socket to listen on (a stale one left by a previous keyd is replaced).
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// A key to hold: NAME=FILE (PEM, PKCS#8, SEC1 or PKCS#1, mode 0600); repeat for several.
    #[arg(long, value_name = "NAME=FILE", required = true, value_parser = parse_named_key)]
    pub key: Vec<(String, PathBuf)>,
    /// Uid (or user name) allowed to ask for signatures; repeat for several. Default: the uid
    /// that started keyd.
    #[arg(long, value_name = "UID|USER")]
    pub allow_uid: Vec<String>,
    /// Start even if a key file is readable by group or others.
    #[arg(long)]
    pub allow_insecure_key_permissions: bool,
}

fn parse_named_key(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => {
            Ok((name.to_string(), PathBuf::from(file)))
        }
        _ => Err("expected NAME=FILE".into()),
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML config file; every mode section in it runs.
    #[arg(long, short)]
    pub config: PathBuf,
}

/// `1080` means `127.0.0.1:1080`: a listener that serves anyone who reaches it stays local unless
/// an address is spelled out.
fn loopback_by_default(s: &str) -> Result<SocketAddr, String> {
    match s.parse::<u16>() {
        Ok(port) => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
        Err(_) => s.parse().map_err(|_| format!("{s:?} is neither PORT nor IP:PORT")),
    }
}

/// `--client-identity NAME=CERT,KEY`.
fn client_identity(s: &str) -> Result<(String, tlsgate_config::ClientIdentity), String> {
    let parsed = s.split_once('=').and_then(|(name, files)| Some((name, files.split_once(',')?)));
    match parsed {
        Some((name, (cert, key))) if !name.is_empty() && !cert.is_empty() && !key.is_empty() => {
            Ok((name.to_string(), tlsgate_config::ClientIdentity { cert: cert.into(), key: key.into() }))
        }
        _ => Err(format!("{s:?} is not NAME=CERT,KEY")),
    }
}

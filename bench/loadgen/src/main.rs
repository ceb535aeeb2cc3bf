//! tlsgate-loadgen: the TLS client of `bench/run.sh`.
//!
//! Off-the-shelf load generators (h2load, wrk) resume TLS sessions when they reconnect, so they
//! cannot measure full handshakes. This one says exactly which kind of handshake it did:
//!
//! * `full`: `--conns` connections over `--concurrency` workers, with resumption disabled
//!   (`Resumption::disabled()`), each sending one `GET` with `Connection: close` and reading the
//!   response to the end; every handshake is checked with `handshake_kind()`.
//! * `resumed`: each worker has its own session cache, warms it with one uncounted connection,
//!   then reconnects, offering the ticket of the previous connection; it counts how many
//!   handshakes the server actually resumed.
//! * `idle`: opens `--conns` connections, completes their handshakes, prints `ready` and holds
//!   them until a line or end of file on stdin (or `--hold-max-s`).
//!
//! Only TLS 1.3 is offered, with one key-exchange group (`--group`, X25519 by default), so every
//! peer does the same work; `--suite` narrows the offered cipher suites to one, so that bulk
//! transfers compare terminators on the same cipher rather than each one's preference. Results
//! are one JSON line on stdout.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rustls::client::Resumption;
use rustls::crypto::{aws_lc_rs, CryptoProvider, SupportedKxGroup};
use rustls::{ClientConfig, HandshakeKind, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, Parser)]
#[command(name = "tlsgate-loadgen", about = "TLS load generator for bench/run.sh")]
struct Args {
    /// What to do.
    #[arg(value_enum)]
    mode: Mode,
    /// TLS address of the terminator.
    #[arg(long)]
    addr: SocketAddr,
    /// PEM CA certificate the server's certificate must chain to.
    #[arg(long)]
    ca: PathBuf,
    /// Server name sent as SNI and verified in the certificate.
    #[arg(long, default_value = "localhost")]
    sni: String,
    /// Number of measured connections (idle: connections held).
    #[arg(long, default_value_t = 1000)]
    conns: u32,
    /// Connections in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: u32,
    /// Path requested (full and resumed).
    #[arg(long, default_value = "/small")]
    path: String,
    /// Key-exchange group offered (the only one).
    #[arg(long, value_enum, default_value = "x25519")]
    group: Group,
    /// The only cipher suite offered (default: all of rustls's TLS 1.3 suites, the server picks).
    #[arg(long, value_enum)]
    suite: Option<Suite>,
    /// Time one connection may take, handshake and response included.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
    /// Longest time `idle` holds its connections (and `--wait-go` waits) when stdin stays silent.
    #[arg(long, default_value_t = 300)]
    hold_max_s: u64,
    /// full/resumed: after the warm-up, print `warmed` and start only on a line on stdin, so a
    /// caller can read the server's CPU time between the two.
    #[arg(long)]
    wait_go: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Full,
    Resumed,
    Idle,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Group {
    X25519,
    Secp256r1,
    X25519mlkem768,
}

impl Group {
    fn kx(self) -> &'static dyn SupportedKxGroup {
        match self {
            Group::X25519 => aws_lc_rs::kx_group::X25519,
            Group::Secp256r1 => aws_lc_rs::kx_group::SECP256R1,
            Group::X25519mlkem768 => aws_lc_rs::kx_group::X25519MLKEM768,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Suite {
    #[value(name = "TLS_AES_128_GCM_SHA256")]
    Aes128Gcm,
    #[value(name = "TLS_AES_256_GCM_SHA384")]
    Aes256Gcm,
    #[value(name = "TLS_CHACHA20_POLY1305_SHA256")]
    Chacha20Poly1305,
}

impl Suite {
    fn suite(self) -> rustls::SupportedCipherSuite {
        match self {
            Suite::Aes128Gcm => aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
            Suite::Aes256Gcm => aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
            Suite::Chacha20Poly1305 => aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        }
    }
}

/// What one connection did.
struct Conn {
    kind: Option<HandshakeKind>,
    body_bytes: u64,
    suite: String,
    group: String,
}

impl Conn {
    /// The handshake's kind, cipher suite and group; no body yet.
    fn of(tls: &TlsStream<TcpStream>) -> Conn {
        let conn = tls.get_ref().1;
        Conn {
            kind: conn.handshake_kind(),
            body_bytes: 0,
            suite: conn.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default(),
            group: conn
                .negotiated_key_exchange_group()
                .map(|g| format!("{:?}", g.name()))
                .unwrap_or_default(),
        }
    }
}

/// Sums over the connections of a run.
#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    full: u64,
    /// Full handshakes that needed a HelloRetryRequest (counted in `full` too).
    hrr: u64,
    resumed: u64,
    body_bytes: u64,
    suite: String,
    group: String,
    first_error: Option<String>,
}

impl Tally {
    fn add(&mut self, result: Result<Conn, String>) {
        match result {
            Ok(c) => {
                self.ok += 1;
                match c.kind {
                    Some(HandshakeKind::Resumed) => self.resumed += 1,
                    Some(HandshakeKind::FullWithHelloRetryRequest) => {
                        self.full += 1;
                        self.hrr += 1;
                    }
                    _ => self.full += 1,
                }
                self.body_bytes += c.body_bytes;
                if self.suite.is_empty() {
                    self.suite = c.suite;
                    self.group = c.group;
                }
            }
            Err(e) => {
                self.failed += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.full += other.full;
        self.hrr += other.hrr;
        self.resumed += other.resumed;
        self.body_bytes += other.body_bytes;
        if self.suite.is_empty() {
            self.suite = other.suite;
            self.group = other.group;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn json(&self, mode: Mode, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 { self.ok as f64 / secs } else { 0.0 };
        format!(
            "{{\"mode\":\"{}\",\"ok\":{},\"failed\":{},\"full\":{},\"hrr\":{},\"resumed\":{},\"body_bytes\":{},\
             \"elapsed_s\":{:.6},\"conns_per_s\":{:.1},\"suite\":\"{}\",\"group\":\"{}\",\"first_error\":{}}}",
            format!("{mode:?}").to_lowercase(),
            self.ok,
            self.failed,
            self.full,
            self.hrr,
            self.resumed,
            self.body_bytes,
            secs,
            rate,
            escape(&self.suite),
            escape(&self.group),
            match &self.first_error {
                Some(e) => format!("\"{}\"", escape(e)),
                None => "null".to_string(),
            }
        )
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Everything a worker needs to make one connection.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    name: ServerName<'static>,
    request: Arc<Vec<u8>>,
    timeout: Duration,
}

fn roots(ca: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots.add(cert).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate", ca.display()));
    }
    Ok(roots)
}

/// A TLS 1.3-only client config offering one group (and one suite if `suite`); `resume` chooses
/// between an in-memory session cache and none at all.
fn client_config(
    roots: &RootCertStore,
    group: Group,
    suite: Option<Suite>,
    resume: bool,
) -> Result<Arc<ClientConfig>, String> {
    let mut provider = CryptoProvider { kx_groups: vec![group.kx()], ..aws_lc_rs::default_provider() };
    if let Some(suite) = suite {
        provider.cipher_suites = vec![suite.suite()];
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    config.resumption = if resume { Resumption::in_memory_sessions(64) } else { Resumption::disabled() };
    Ok(Arc::new(config))
}

async fn handshake(connector: &TlsConnector, target: &Target) -> Result<TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(target.addr).await.map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    connector.connect(target.name.clone(), tcp).await.map_err(|e| format!("handshake: {e}"))
}

/// One connection: handshake, one request, the response read to the end and checked.
async fn one(connector: &TlsConnector, target: &Target) -> Result<Conn, String> {
    let work = async {
        let mut tls = handshake(connector, target).await?;
        let mut conn = Conn::of(&tls);
        tls.write_all(&target.request).await.map_err(|e| format!("write: {e}"))?;
        tls.flush().await.map_err(|e| format!("write: {e}"))?;
        conn.body_bytes = read_response(&mut tls).await?;
        Ok(conn)
    };
    tokio::time::timeout(target.timeout, work).await.map_err(|_| "timed out".to_string())?
}

/// Reads an HTTP/1.1 response to end of stream; checks the status is 200 and the body is as long
/// as Content-Length says. Returns the body's length.
async fn read_response(tls: &mut TlsStream<TcpStream>) -> Result<u64, String> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut head: Vec<u8> = Vec::new();
    let mut header_len: Option<usize> = None;
    let mut total: u64 = 0;
    loop {
        let n = match tls.read(&mut buf).await {
            Ok(n) => n,
            // A peer that closes TCP without close_notify: the length check below still applies.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(format!("read: {e}")),
        };
        if n == 0 {
            break;
        }
        total += n as u64;
        if header_len.is_none() {
            head.extend_from_slice(&buf[..n]);
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                header_len = Some(i + 4);
            } else if head.len() > 16 * 1024 {
                return Err("response header longer than 16 KiB".into());
            }
        }
    }
    let header_len = header_len.ok_or_else(|| format!("no complete response header ({total} bytes)"))?;
    let header = String::from_utf8_lossy(&head[..header_len]);
    let status = header.lines().next().unwrap_or("");
    if !status.starts_with("HTTP/1.1 200") && !status.starts_with("HTTP/1.0 200") {
        return Err(format!("status line {status:?}"));
    }
    let body = total - header_len as u64;
    let length = header.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<u64>().ok()).flatten()
    });
    match length {
        Some(len) if len != body => Err(format!("body {body} bytes, Content-Length {len}")),
        _ => Ok(body),
    }
}

/// `full` and `resumed`: `conns` connections spread over `concurrency` sequential workers.
async fn run_requests(
    args: &Args,
    roots: &RootCertStore,
    target: &Target,
) -> Result<(Tally, Duration), String> {
    let resume = args.mode == Mode::Resumed;
    let shared = client_config(roots, args.group, args.suite, false)?;
    let workers = args.concurrency.clamp(1, args.conns.max(1));
    let mut connectors = Vec::new();
    for _ in 0..workers {
        if resume {
            // Own cache per worker: each connection offers the ticket its predecessor received.
            let connector = TlsConnector::from(client_config(roots, args.group, args.suite, true)?);
            let warm = one(&connector, target).await.map_err(|e| format!("warm-up connection: {e}"))?;
            if warm.kind == Some(HandshakeKind::Resumed) {
                return Err("warm-up connection resumed with an empty cache".into());
            }
            connectors.push(connector);
        } else {
            connectors.push(TlsConnector::from(shared.clone()));
        }
    }
    if args.wait_go {
        println!("warmed");
        wait_for_line(Duration::from_secs(args.hold_max_s)).await;
    }
    let start = Instant::now();
    let mut set = JoinSet::new();
    for (w, connector) in connectors.into_iter().enumerate() {
        let w = w as u32;
        let count = args.conns / workers + u32::from(w < args.conns % workers);
        let target = target.clone();
        set.spawn(async move {
            let mut tally = Tally::default();
            for _ in 0..count {
                tally.add(one(&connector, &target).await);
            }
            tally
        });
    }
    let mut tally = Tally::default();
    while let Some(t) = set.join_next().await {
        tally.merge(t.map_err(|e| format!("worker: {e}"))?);
    }
    Ok((tally, start.elapsed()))
}

/// `idle`: open, handshake, hold until told to stop.
async fn run_idle(args: &Args, roots: &RootCertStore, target: &Target) -> Result<(), String> {
    let connector = TlsConnector::from(client_config(roots, args.group, args.suite, false)?);
    let workers = args.concurrency.clamp(1, args.conns.max(1));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for w in 0..workers {
        let count = args.conns / workers + u32::from(w < args.conns % workers);
        let (connector, target) = (connector.clone(), target.clone());
        set.spawn(async move {
            let mut held = Vec::new();
            let mut tally = Tally::default();
            for _ in 0..count {
                match tokio::time::timeout(target.timeout, handshake(&connector, &target)).await {
                    Ok(Ok(tls)) => {
                        tally.add(Ok(Conn::of(&tls)));
                        held.push(tls);
                    }
                    Ok(Err(e)) => tally.add(Err(e)),
                    Err(_) => tally.add(Err("handshake timed out".into())),
                }
            }
            (held, tally)
        });
    }
    let mut held = Vec::new();
    let mut tally = Tally::default();
    while let Some(r) = set.join_next().await {
        let (h, t) = r.map_err(|e| format!("worker: {e}"))?;
        held.extend(h);
        tally.merge(t);
    }
    println!("ready {}", tally.json(args.mode, start.elapsed()));
    wait_for_line(Duration::from_secs(args.hold_max_s)).await;
    drop(held);
    Ok(())
}

/// Returns on a line or end of file on stdin, or after `max`. (A plain thread reads stdin: the
/// workspace's tokio has no `io-std`.)
async fn wait_for_line(max: Duration) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = tx.send(());
    });
    let _ = tokio::time::timeout(max, rx).await;
}

async fn run(args: Args) -> Result<(), String> {
    let roots = roots(&args.ca)?;
    let name = ServerName::try_from(args.sni.clone()).map_err(|e| format!("--sni: {e}"))?;
    let request = format!("GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", args.path).into_bytes();
    let target = Target {
        addr: args.addr,
        name,
        request: Arc::new(request),
        timeout: Duration::from_secs(args.timeout_s),
    };
    match args.mode {
        Mode::Full | Mode::Resumed => {
            let (tally, elapsed) = run_requests(&args, &roots, &target).await?;
            println!("{}", tally.json(args.mode, elapsed));
            Ok(())
        }
        Mode::Idle => run_idle(&args, &roots, &target).await,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    // exit() rather than returning: the thread reading stdin may still be parked.
    match run(args).await {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("tlsgate-loadgen: {e}");
            std::process::exit(1);
        }
    }
}

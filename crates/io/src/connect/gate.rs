//! `tlsgate connect gate`: accepts portals and HTTPS-proxy clients (TLS, client certificate
//! required), reads one CONNECT, authorises it against the client's identity and the
//! destination policy before any byte reaches the destination, connects, answers, then either
//! downgrades to the raw TCP connection (a portal asked, `Tlsgate-Downgrade: 1`) or relays the
//! client's nested TLS inside its own records.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tlsgate_config::ConnectGateConfig;
use tlsgate_connect::downgrade;
use tlsgate_connect::head::{parse_request, response, MAX_HEAD};
use tlsgate_connect::policy::{self, ConnectPolicy};
use tlsgate_core::identity::PeerIdentity;
use tlsgate_record::crypto::RecordLayer;
use tlsgate_tls::revocation::{RevocationKey, Revocations};
use tlsgate_tls::server_handshake::ServerHandshake;
use tlsgate_tunnel::addr::Host;
use tlsgate_tunnel::policy::Decision;
use tlsgate_tunnel::Target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::kernel_splice::{self, KernelSplice, NotSpliced, Spliced};
use super::meter::{self, Meter, State};
use super::{read_head, HeadFailure};
use crate::record_stream::RecordStream;
use crate::relay::Tally;
use crate::terminate::handshake::drive;
use crate::tunnel::resolve::Resolver;
use crate::ProxyError;

struct Shared {
    config: ArcSwap<ConnectGateConfig>,
    tls: ArcSwap<ServerConfig>,
    policy: ArcSwap<ConnectPolicy>,
    resolver: Resolver,
    kernel_splice: Option<Arc<KernelSplice>>,
}

pub struct ConnectGate {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ConnectGate {
    pub async fn start(config: &ConnectGateConfig, insecure: bool) -> Result<ConnectGate, ProxyError> {
        let (tls, policy) = load(config, insecure)?;
        let resolver = Resolver::new(config.resolver).map_err(ProxyError::config)?;
        let kernel_splice = match config.kernel_splice.as_slice() {
            [] => None,
            ifaces => Some(
                KernelSplice::start(ifaces)
                    .map_err(|e| ProxyError::config(format!("connect gate: kernel splice: {e}")))?,
            ),
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| ProxyError::bind(&format!("connect gate {}", config.listen), &e))?;
        let local_addr = listener.local_addr().map_err(|e| ProxyError::internal(e.to_string()))?;
        let shared = Arc::new(Shared {
            config: ArcSwap::from_pointee(config.clone()),
            tls: ArcSwap::from(tls),
            policy: ArcSwap::from_pointee(policy),
            resolver,
            kernel_splice,
        });
        let task = tokio::spawn(super::accept_loop(listener, "connect gate", shared.clone(), serve));
        tracing::info!(listen = %local_addr, "connect gate listening");
        Ok(ConnectGate { shared, local_addr, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Certificate, key, client CA and CRLs (re-read) for the next handshake, grants, hosts and
    /// timeouts for the next CONNECT. All or nothing. Tunnels already open stay, but for those
    /// of a portal whose certificate the new CRLs revoke: they are closed.
    pub fn reload(&self, config: &ConnectGateConfig, insecure: bool) -> Result<(), ProxyError> {
        let running = self.shared.config.load();
        if (config.listen, config.resolver, &config.kernel_splice)
            != (running.listen, running.resolver, &running.kernel_splice)
        {
            return Err(ProxyError::config(
                "[connect.gate]: listen, resolver or kernel_splice changed; a restart applies that",
            ));
        }
        let (tls, policy) = load(config, insecure)?;
        let revocations = Revocations::load(&config.crl).map_err(|e| ProxyError::config(e.to_string()))?;
        self.shared.tls.store(tls);
        self.shared.policy.store(Arc::new(policy));
        self.shared.config.store(Arc::new(config.clone()));
        crate::revoked::close_revoked(&listener_name(config), &revocations);
        Ok(())
    }

    pub fn shutdown(&self) {
        self.task.abort();
    }
}

/// The name revoked connections are registered under.
fn listener_name(config: &ConnectGateConfig) -> String {
    format!("connect gate {}", config.listen)
}

fn load(
    config: &ConnectGateConfig,
    insecure: bool,
) -> Result<(Arc<ServerConfig>, ConnectPolicy), ProxyError> {
    let label = format!("connect gate {}", config.listen);
    let tls = tlsgate_tls::connect::gate_server_config(config, insecure)
        .map_err(|e| ProxyError::config(format!("{label}: {e}")))?;
    let policy = ConnectPolicy::from_grants(&config.grants())
        .map_err(|e| ProxyError::config(format!("{label}: {e}")))?;
    if policy.grants.is_empty() {
        tracing::warn!("connect gate: no `allow` grants: every CONNECT will be refused");
    }
    Ok((tls, policy))
}

/// A refusal: the status, its reason phrase, and why (sent in `Tlsgate-Reason`, logged).
struct Refusal {
    status: u16,
    why: String,
}

impl Refusal {
    fn new(status: u16, why: impl Into<String>) -> Refusal {
        Refusal { status, why: why.into() }
    }

    /// Its short name, for the metrics.
    fn reason(&self) -> &'static str {
        match self.status {
            403 => "policy",
            405 => "not_connect",
            408 => "head_timeout",
            431 => "head_too_large",
            502 => "destination_failed",
            504 => "destination_timeout",
            _ => "bad_request",
        }
    }

    fn phrase(&self) -> &'static str {
        match self.status {
            400 => "Bad Request",
            403 => "Forbidden",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            502 => "Bad Gateway",
            504 => "Gateway Timeout",
            _ => "Error",
        }
    }
}

async fn serve(tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let config = shared.config.load_full();
    let deadline = tokio::time::Instant::now() + config.head_timeout;
    let listener = listener_name(&config);
    let accepted = tokio::time::timeout_at(deadline, handshake(tcp, shared.tls.load_full())).await;
    let (mut stream, identity, revocation, (version, suite)) = match accepted {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            meter::handshake(&listener, "failed", "", "");
            tracing::warn!(client = %peer, error = %e, "connect gate: refused: TLS handshake failed (client side)");
            return;
        }
        Err(_) => {
            meter::handshake(&listener, "timeout", "", "");
            tracing::warn!(client = %peer, "connect gate: refused: TLS handshake timed out (client side)");
            return;
        }
    };
    meter::handshake(&listener, "ok", &version, &suite);
    let name = tlsgate_tls::tunnel::portal_name(&identity);
    let mut meter = Meter::new(&listener, peer, identity.summary(), version.clone(), suite);
    let mut buf = Vec::new();
    let head = match tokio::time::timeout_at(deadline, read_head(&mut *stream, &mut buf, MAX_HEAD)).await {
        Ok(Ok(end)) => end,
        Ok(Err(HeadFailure::Bad(e))) => {
            return refuse(stream, peer, &name, None, Refusal::new(e.status(), e.to_string())).await
        }
        Ok(Err(e)) => {
            tracing::warn!(client = %peer, identity = %name, error = %e, "connect gate: no CONNECT (client side)");
            return;
        }
        Err(_) => {
            return refuse(stream, peer, &name, None, Refusal::new(408, "no complete CONNECT head in time"))
                .await
        }
    };
    let request = match parse_request(&buf[..head]) {
        Ok(r) => r,
        Err(e) => return refuse(stream, peer, &name, None, Refusal::new(e.status(), e.to_string())).await,
    };
    let target = match request.connect_target() {
        Ok(t) => t,
        Err(e) => return refuse(stream, peer, &name, None, Refusal::new(e.status(), e.to_string())).await,
    };
    let downgrade = downgrade::requested(&request.headers);
    let early = buf.split_off(head);
    if downgrade && !early.is_empty() {
        let e = "sent data after a CONNECT asking for the downgrade, before the answer";
        return refuse(stream, peer, &name, Some(&target), Refusal::new(400, e)).await;
    }
    // Authorised before any byte (or connection) reaches the destination.
    let policy = shared.policy.load().policy_for(&identity);
    let dest = match authorise(&shared, &config, &policy, &target).await {
        Ok(addrs) => addrs,
        Err(r) => return refuse(stream, peer, &name, Some(&target), r).await,
    };
    let kernel = shared.kernel_splice.as_ref().filter(|_| downgrade);
    let (upstream, spliced) = match connect_any(&dest, target.port, config.connect_timeout, kernel).await {
        Ok(s) => s,
        Err(r) => return refuse(stream, peer, &name, Some(&target), r).await,
    };
    let to = upstream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let mode = match (&spliced, downgrade) {
        (Some(_), _) => "downgrade, kernel splice",
        (None, true) => "downgrade",
        (None, false) => "nested",
    };
    meter::allowed();
    meter.destination(&target.to_string(), &to);
    tracing::info!(client = %peer, identity = %name, target = %target, to = %to, mode, version = %version, "connect gate: tunnel open");
    let started = Instant::now();
    // A reload whose CRLs revoke the portal's certificate ends the tunnel, downgraded or not:
    // the gate still holds both TCP connections.
    let revoked = Arc::new(Notify::new());
    let _registered = revocation.map(|key| crate::revoked::register(&listener, peer, key, revoked.clone()));
    let relay = async {
        if let Some(spliced) = spliced {
            downgraded_in_kernel(stream, upstream, spliced, config.head_timeout, &mut meter).await
        } else if downgrade {
            downgraded(stream, upstream, config.head_timeout, &mut meter).await
        } else {
            nested(stream, upstream, early, &mut meter).await
        }
    };
    let result = tokio::select! {
        r = relay => r,
        () = revoked.notified() => Err(std::io::Error::other("the portal's certificate is revoked now")),
    };
    match result {
        Ok((up, down)) => tracing::info!(
            client = %peer, identity = %name, target = %target, mode, up, down,
            secs = started.elapsed().as_secs_f64(), "connect gate: tunnel closed"
        ),
        Err(e) => tracing::warn!(
            client = %peer, identity = %name, target = %target, mode, error = %e, "connect gate: tunnel failed"
        ),
    }
}

/// Sends the refusal, logs it with the identity, closes with close_notify.
async fn refuse(
    mut stream: Box<RecordStream>,
    peer: SocketAddr,
    name: &str,
    target: Option<&Target>,
    r: Refusal,
) {
    meter::refused(r.reason());
    let target = target.map(|t| t.to_string()).unwrap_or_default();
    tracing::warn!(client = %peer, identity = %name, target = %target, status = r.status, reason = %r.why, "connect gate: refused");
    let answer = response(r.status, r.phrase(), &[("Tlsgate-Reason", &r.why)]);
    let _ = stream.write_all(&answer).await;
    let _ = stream.shutdown().await;
}

/// The policy on the target as asked, then on every address it is or resolves to.
async fn authorise(
    shared: &Shared,
    config: &ConnectGateConfig,
    policy: &tlsgate_tunnel::policy::Policy,
    target: &Target,
) -> Result<Vec<IpAddr>, Refusal> {
    let deny = |d: Decision| match d {
        Decision::Allow => Ok(()),
        Decision::Deny { reason } => Err(Refusal::new(403, reason)),
    };
    deny(policy::check(policy, target))?;
    let addrs = match &target.host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(n) => match config.hosts.get(n.trim_end_matches('.')) {
            Some(ip) => vec![*ip],
            None => shared.resolver.resolve(n).await.map_err(|e| Refusal::new(502, e))?,
        },
    };
    for ip in &addrs {
        let own = crate::tunnel::own_addrs::is_own(*ip);
        deny(policy::check_resolved(policy, target, *ip, own))?;
    }
    Ok(addrs)
}

/// The first address that answers; with the kernel splice on (and IPv4), from a port whose
/// leg is already in place.
async fn connect_any(
    addrs: &[IpAddr],
    port: u16,
    timeout: Duration,
    kernel: Option<&Arc<KernelSplice>>,
) -> Result<(TcpStream, Option<Spliced>), Refusal> {
    let mut last = Refusal::new(502, "no address");
    for ip in addrs {
        let sa = SocketAddr::new(*ip, port);
        let connected = match (kernel, sa) {
            (Some(ks), SocketAddr::V4(v4)) => ks.connect(v4, timeout).await,
            _ => match tokio::time::timeout(timeout, TcpStream::connect(sa)).await {
                Ok(r) => r.map(|s| (s, None)),
                Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out")),
            },
        };
        match connected {
            Ok((s, spliced)) => {
                let _ = s.set_nodelay(true);
                if kernel.is_some() && sa.is_ipv6() {
                    NotSpliced::new("ipv6", "an IPv6 destination").report();
                }
                return Ok((s, spliced));
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = Refusal::new(504, format!("connect {sa}: timed out (destination side)"))
            }
            Err(e) => last = Refusal::new(502, format!("connect {sa}: {e} (destination side)")),
        }
    }
    Err(last)
}

/// Nested: the client's bytes (its own TLS, usually) inside our records both ways.
async fn nested(
    mut stream: Box<RecordStream>,
    mut upstream: TcpStream,
    early: Vec<u8>,
    meter: &mut Meter,
) -> std::io::Result<(u64, u64)> {
    stream.write_all(&response(200, "Connection established", &[])).await?;
    stream.flush().await?;
    meter.set_state(State::Nested);
    upstream.write_all(&early).await?;
    meter.up(early.len() as u64);
    let t = crate::relay::relay(stream, upstream, &*meter, None).await.map_err(|(e, _)| relay_error(e))?;
    Ok((t.up + early.len() as u64, t.down))
}

fn relay_error(e: ProxyError) -> std::io::Error {
    let side = match e.side {
        tlsgate_core::side::Side::Backend => "destination side",
        _ => "client side",
    };
    std::io::Error::other(format!("{} ({side})", e.context))
}

/// Downgrade: answer and close_notify, the portal's close_notify, then the raw connection.
async fn downgraded(
    mut stream: Box<RecordStream>,
    mut upstream: TcpStream,
    wait: Duration,
    meter: &mut Meter,
) -> std::io::Result<(u64, u64)> {
    let answer = response(200, "Connection established", &[(downgrade::HEADER, downgrade::VALUE)]);
    stream.write_all(&answer).await?;
    stream.send_close_notify().await?;
    // Up to the portal's close_notify nothing may arrive: the head was all it could send.
    let mut probe = [0u8; 1];
    let n = tokio::time::timeout(wait, stream.read(&mut probe)).await.map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no close_notify from the client in time (client side)",
        )
    })??;
    if n != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "client sent data inside TLS after the downgrade answer (client side)",
        ));
    }
    let parts = stream
        .into_raw_parts()
        .map_err(|_| std::io::Error::other("record layer not ready for the downgrade"))?;
    meter.set_state(State::Downgraded);
    // What was read past the close_notify is the raw stream's first bytes.
    upstream.write_all(&parts.read_ahead).await?;
    meter.up(parts.read_ahead.len() as u64);
    // TCP to TCP from here: spliced through a pipe each way, never copied through user space.
    let relayed = crate::ktls::splice::relay(parts.tcp, upstream, &*meter, None).await;
    let t = relayed.map_err(|(e, _)| relay_error(e))?;
    Ok((t.up + parts.read_ahead.len() as u64, t.down))
}

/// Downgrade with the kernel splice: the `200`, both legs live before the gate's close_notify
/// leaves, then the gate steps out (the module's doc says how). Connections that cannot be
/// spliced are relayed as [`downgraded`] does.
async fn downgraded_in_kernel(
    mut stream: Box<RecordStream>,
    upstream: TcpStream,
    mut spliced: Spliced,
    wait: Duration,
    meter: &mut Meter,
) -> std::io::Result<(u64, u64)> {
    let prepared = match spliced.prepare(stream.socket(), &upstream) {
        Ok(p) => p,
        Err(not) => {
            not.report();
            drop(spliced);
            return downgraded(stream, upstream, wait, meter).await;
        }
    };
    let answer = response(200, "Connection established", &[(downgrade::HEADER, downgrade::VALUE)]);
    stream.write_all(&answer).await?;
    stream.flush().await?;
    let queued = stream.seal_close_notify()?;
    let sent = kernel_splice::write_seq(stream.socket())?;
    spliced.splice(prepared, sent.wrapping_add(queued as u32))?;
    stream.send_queued().await?;
    let portal = stream.into_tcp().map_err(|_| std::io::Error::other("records left unsent"))?;
    meter.set_state(State::Spliced);
    spliced.keep_dest(upstream)?;
    spliced.release_portal(portal, wait).await?;
    spliced.finished().await;
    let (up, down) = spliced.totals();
    meter.up(up);
    meter.down(down);
    Ok((up, down))
}

/// The TLS handshake on tlsgate's record layer; the client's verified identity; the version
/// and suite.
async fn handshake(
    mut tcp: TcpStream,
    config: Arc<ServerConfig>,
) -> Result<(Box<RecordStream>, PeerIdentity, Option<RevocationKey>, (String, String)), String> {
    let tls_failed =
        |e: rustls::Error| tlsgate_tls::describe::tls_error(&e, tlsgate_tls::describe::Peer::Client);
    let mut hs = ServerHandshake::new(config).map_err(tls_failed)?;
    let mut input = Vec::new();
    drive(&mut tcp, &mut hs, &mut input)
        .await
        .map_err(|stop| stop.message(tlsgate_tls::describe::Peer::Client))?;
    let finished = hs.finish().map_err(tls_failed)?;
    let identity = finished.facts.peer.clone().ok_or("presented no readable certificate")?;
    let described = (format!("{:?}", finished.facts.version), format!("{:?}", finished.facts.suite.suite()));
    let layer =
        RecordLayer::new(finished.secrets, finished.kernel).map_err(|e| format!("record layer: {e}"))?;
    let stream = RecordStream::new(tcp, layer, &input).map_err(|e| e.to_string())?;
    Ok((Box::new(stream), identity, finished.facts.revocation.clone(), described))
}

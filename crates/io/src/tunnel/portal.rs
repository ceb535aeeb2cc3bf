//! `tlsgate tunnel portal`: one TLS connection to the gate, kept up with backoff, and the local
//! services that use it (SOCKS5, TCP and UDP forwards, the DNS forwarder).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustls::pki_types::ServerName;
use std::sync::atomic::{AtomicU64, Ordering};
use tlsgate_config::BackendAddr;
use tlsgate_config::{ForwardProtocol, PortalConfig, ProxyKind};
use tlsgate_telemetry::conns::{live, ConnInfo};
use tlsgate_tunnel::addr::Host;
use tlsgate_tunnel::policy::{Decision, Policy};
use tlsgate_tunnel::proxy_client::{ClientProgress, HttpConnectClient, Socks5Client};
use tlsgate_tunnel::wire::{OpenRc, Protocol};
use tlsgate_tunnel::{Endpoint, Role, SessionId, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::connect::connect_any;
use super::driver::{Acceptor, Driver};
use super::{endpoint_config, Handle, OpenFailure, TunnelWait, DNS_TARGET_NAME};
use crate::ktls::ClientStream;
use crate::ProxyError;

/// Local addresses the portal serves, as bound (port 0 in the config becomes a real port).
#[derive(Debug, Clone, Default)]
pub struct PortalAddrs {
    pub socks: Option<SocketAddr>,
    pub forwards: Vec<SocketAddr>,
    pub dns: Option<SocketAddr>,
}

pub struct Portal {
    tasks: Vec<JoinHandle<()>>,
    tunnel: watch::Receiver<Option<Handle>>,
    link: Arc<ArcSwap<Link>>,
    session_wait_ms: Arc<AtomicU64>,
    pub addrs: PortalAddrs,
}

/// How the next connection to the gate is made; a reload swaps it, the live connection keeps
/// the one it started with.
struct Link {
    config: PortalConfig,
    /// The config for tlsgate's handshake driver; its keys go to tlsgate's record layer or the
    /// kernel's.
    tls: Arc<rustls::ClientConfig>,
    /// One per gate, in the config's order.
    server_names: Vec<ServerName<'static>>,
    acceptor: Arc<PortalAcceptor>,
}

impl Link {
    fn load(config: &PortalConfig, insecure: bool) -> Result<Link, ProxyError> {
        if config.ktls == tlsgate_config::KtlsMode::On {
            crate::ktls::require().map_err(|e| ProxyError::config(format!("tunnel portal: {e}")))?;
        }
        let tls = tlsgate_tls::tunnel::portal_client_config(config, insecure)
            .map_err(|e| ProxyError::config(format!("tunnel portal: {e}")))?;
        let reverse =
            config.reverse_policy().map_err(|e| ProxyError::config(format!("tunnel portal: {e}")))?;
        let server_names = config
            .gate
            .iter()
            .map(|g| {
                let name = config.server_name.clone().unwrap_or_else(|| g.host.clone());
                ServerName::try_from(name.clone())
                    .map_err(|e| ProxyError::config(format!("tunnel portal: gate name {name}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if server_names.is_empty() {
            return Err(ProxyError::config("tunnel portal: no gate configured"));
        }
        Ok(Link {
            config: config.clone(),
            tls,
            server_names,
            acceptor: Arc::new(PortalAcceptor { reverse, connect_timeout: config.connect_timeout }),
        })
    }
}

/// The local services, bound at start: a reload cannot move them.
fn local_services(c: &PortalConfig) -> impl PartialEq + '_ {
    (c.socks, &c.socks_auth, &c.forward, c.dns)
}

impl Portal {
    /// Loads TLS material and binds every local socket (failing as a whole), then connects.
    pub async fn start(
        config: &PortalConfig,
        allow_insecure_key_permissions: bool,
    ) -> Result<Portal, ProxyError> {
        let link = Arc::new(ArcSwap::from_pointee(Link::load(config, allow_insecure_key_permissions)?));
        let (publish, tunnel) = watch::channel(None);
        let session_wait_ms = Arc::new(AtomicU64::new(millis(config.session_wait)));
        let waiter = TunnelWait::new(tunnel.clone(), session_wait_ms.clone());
        let mut tasks = Vec::new();
        let mut addrs = PortalAddrs::default();
        let bind_err =
            |a: SocketAddr, e: std::io::Error| ProxyError::bind(&format!("tunnel portal: listener {a}"), &e);
        if let Some(a) = config.socks {
            let l = TcpListener::bind(a).await.map_err(|e| bind_err(a, e))?;
            addrs.socks = l.local_addr().ok();
            let auth = config.socks_auth.clone().map(Arc::new);
            tasks.push(tokio::spawn(super::socks::serve(l, auth, waiter.clone())));
        }
        for f in &config.forward {
            let target = Target::name(&f.target.host, f.target.port)
                .map_err(|e| ProxyError::config(format!("tunnel portal: forward {}: {e}", f.target)))?;
            match f.protocol {
                ForwardProtocol::Tcp => {
                    let l = TcpListener::bind(f.listen).await.map_err(|e| bind_err(f.listen, e))?;
                    let bound = l.local_addr().map_err(|e| bind_err(f.listen, e))?;
                    addrs.forwards.push(bound);
                    tasks.push(tokio::spawn(tcp_forward(l, target, waiter.clone())));
                    tracing::info!(listen = %bound, target = %f.target, "tunnel portal: TCP forward");
                }
                ForwardProtocol::Udp => {
                    let s = UdpSocket::bind(f.listen).await.map_err(|e| bind_err(f.listen, e))?;
                    let bound = s.local_addr().map_err(|e| bind_err(f.listen, e))?;
                    addrs.forwards.push(bound);
                    tasks.push(tokio::spawn(super::udp::forward(s, target, waiter.clone())));
                    tracing::info!(listen = %bound, target = %f.target, "tunnel portal: UDP forward");
                }
            }
        }
        if let Some(a) = config.dns {
            let s = UdpSocket::bind(a).await.map_err(|e| bind_err(a, e))?;
            let bound = s.local_addr().map_err(|e| bind_err(a, e))?;
            addrs.dns = Some(bound);
            let target = Target::name(DNS_TARGET_NAME, 53).expect("a valid constant name");
            tasks.push(tokio::spawn(super::udp::forward(s, target, waiter.clone())));
            tracing::info!(listen = %bound, "tunnel portal: DNS forwarder");
        }
        if let Some(a) = addrs.socks {
            tracing::info!(listen = %a, "tunnel portal: SOCKS5 listening");
            if !a.ip().is_loopback() && config.socks_auth.is_none() {
                tracing::warn!(listen = %a, "tunnel portal: SOCKS5 listens beyond loopback without socks_auth; \
                    anyone who reaches it uses the tunnel");
            }
        }
        let keeper = Keeper { link: link.clone(), publish };
        tasks.push(tokio::spawn(keeper.run()));
        Ok(Portal { tasks, tunnel, link, session_wait_ms, addrs })
    }

    /// Applies `config` to the next connection to the gate: CA, certificate and key (re-read
    /// from disk), gate address, proxy, timeouts, `allow_reverse`. The live tunnel carries on.
    /// All or nothing; the local services (SOCKS5, forwards, DNS) stay as started.
    pub fn reload(
        &self,
        config: &PortalConfig,
        allow_insecure_key_permissions: bool,
    ) -> Result<(), ProxyError> {
        let running = self.link.load_full();
        if local_services(config) != local_services(&running.config) {
            return Err(ProxyError::config(
                "[tunnel.portal]: socks, socks_auth, forward or dns changed; a restart applies that",
            ));
        }
        self.link.store(Arc::new(Link::load(config, allow_insecure_key_permissions)?));
        self.session_wait_ms.store(millis(config.session_wait), Ordering::Relaxed);
        Ok(())
    }

    /// The live connection's handle, once connected.
    pub fn tunnel(&self) -> watch::Receiver<Option<Handle>> {
        self.tunnel.clone()
    }

    /// Closes the tunnel with GoAway and stops every local service.
    pub async fn shutdown(self) {
        for t in &self.tasks[..self.tasks.len() - 1] {
            t.abort();
        }
        let handle = self.tunnel.borrow().clone();
        if let Some(h) = handle {
            h.shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), h.closed()).await;
        }
        if let Some(t) = self.tasks.last() {
            t.abort();
        }
    }
}

/// Keeps one connection to a gate, reconnecting with exponential backoff. The gates are tried
/// in order, each after the backoff; the backoff doubles once every gate failed in a row, and a
/// lost tunnel starts again from the first gate.
struct Keeper {
    link: Arc<ArcSwap<Link>>,
    publish: watch::Sender<Option<Handle>>,
}

impl Keeper {
    async fn run(self) {
        let mut backoff = self.link.load().config.reconnect_min;
        let mut next = 0usize;
        loop {
            // Each attempt uses the link as the last reload left it.
            let link = self.link.load_full();
            let index = next % link.config.gate.len();
            let gate_addr = &link.config.gate[index];
            match link.connect(index).await {
                Ok((tls, gate, suite)) => {
                    let record_layer = tls.record_layer();
                    let endpoint =
                        Endpoint::new(endpoint_config(Role::Portal, &link.config.limits), Instant::now());
                    let label: Arc<str> = format!("gate {gate_addr}").into();
                    let driver = Driver::new(endpoint, link.acceptor.clone(), true, label);
                    let handle = driver.handle();
                    let (tx, accepted) = tokio::sync::oneshot::channel();
                    let run = driver.run(tls, Some(tx));
                    tokio::pin!(run);
                    let mut _listed = None;
                    let mut was_connected = false;
                    let ended = tokio::select! {
                        ended = &mut run => ended,
                        Ok(()) = accepted => {
                            was_connected = true;
                            backoff = link.config.reconnect_min;
                            // Published before it is announced: whoever saw the log line finds it.
                            let _ = self.publish.send(Some(handle));
                            _listed = gate.map(|g| link.listed(gate_addr, g, suite, record_layer));
                            tracing::info!(gate = %gate_addr, addr = ?gate, "tunnel portal: connected to gate");
                            run.await
                        }
                    };
                    let _ = self.publish.send(None);
                    if was_connected {
                        tracing::warn!(gate = %gate_addr, reason = %ended, "tunnel portal: tunnel to gate ended; reconnecting");
                        // Back to the first gate: it is the preferred one.
                        next = 0;
                        tokio::time::sleep(jitter(backoff)).await;
                        continue;
                    }
                    tracing::warn!(gate = %gate_addr, error = %ended, retry_in = ?backoff, "tunnel portal: cannot reach gate");
                }
                Err(e) => {
                    tracing::warn!(gate = %gate_addr, error = %e, retry_in = ?backoff, "tunnel portal: cannot reach gate");
                }
            }
            tokio::time::sleep(jitter(backoff)).await;
            next = index + 1;
            if next >= link.config.gate.len() {
                next = 0;
                backoff = (backoff * 2).min(link.config.reconnect_max);
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Link {
    /// The tunnel connection as the status page lists it.
    fn listed(
        &self,
        to: &BackendAddr,
        gate: SocketAddr,
        suite: String,
        record_layer: &str,
    ) -> tlsgate_telemetry::conns::Listed {
        live().insert(ConnInfo {
            listener: "tunnel portal".into(),
            client: gate,
            sni: to.host.clone(),
            version: "TLSv1.3".into(),
            suite,
            identity: String::new(),
            record_layer: record_layer.into(),
            backend: std::sync::Mutex::new(to.to_string()),
            state: Default::default(),
            started: Instant::now(),
            up: Default::default(),
            down: Default::default(),
        })
    }

    /// The TLS connection to gate `index` of the list: tlsgate's handshake driver, then the
    /// record layer (the kernel's where `ktls` and the kernel allow, else tlsgate's, as the
    /// gate's side); with the gate's address and the suite.
    async fn connect(&self, index: usize) -> Result<(ClientStream, Option<SocketAddr>, String), String> {
        let c = &self.config;
        let gate = &c.gate[index];
        let (hop, via) = match &c.proxy {
            Some(p) => (&p.addr, Some(p)),
            None => (gate, None),
        };
        let mut stream =
            tokio::time::timeout(c.connect_timeout, TcpStream::connect((hop.host.as_str(), hop.port)))
                .await
                .map_err(|_| format!("connect {hop}: timed out"))?
                .map_err(|e| format!("connect {hop}: {e}"))?;
        let _ = stream.set_nodelay(true);
        if let Some(p) = via {
            tokio::time::timeout(c.handshake_timeout, through_proxy(&mut stream, p, gate))
                .await
                .map_err(|_| format!("proxy {p}: timed out"))??;
        }
        let gate = stream.peer_addr().ok();
        let server_name = self.server_names[index].clone();
        let (tls, facts) = tokio::time::timeout(
            c.handshake_timeout,
            crate::ktls::client::connect(c.ktls, self.tls.clone(), server_name, stream),
        )
        .await
        .map_err(|_| "TLS handshake with the gate timed out".to_string())?
        .map_err(|e| format!("TLS handshake with the gate failed (gate side): {e}"))?;
        Ok((tls, gate, facts.suite))
    }
}

/// Runs the proxy's prologue on the raw stream; afterwards the stream belongs to TLS.
async fn through_proxy(
    stream: &mut TcpStream,
    p: &tlsgate_config::ProxyUrl,
    to: &BackendAddr,
) -> Result<(), String> {
    let gate = Target::name(&to.host, to.port).map_err(|e| format!("gate {to}: {e}"))?;
    let creds = p.credentials.as_ref();
    enum Prologue {
        Http(HttpConnectClient),
        Socks(Socks5Client),
    }
    let mut m = match p.kind {
        ProxyKind::Http => {
            Prologue::Http(HttpConnectClient::new(&gate, creds.map(|(u, p)| (u.as_str(), p.as_str()))))
        }
        ProxyKind::Socks5 => {
            Prologue::Socks(Socks5Client::new(gate, creds.map(|(u, p)| (u.as_bytes(), p.as_bytes()))))
        }
    };
    let mut buf = [0u8; 4096];
    loop {
        let out = match &mut m {
            Prologue::Http(h) => h.take_output(),
            Prologue::Socks(s) => s.take_output(),
        };
        if !out.is_empty() {
            stream.write_all(&out).await.map_err(|e| format!("proxy {p}: {e}"))?;
        }
        let n = stream.read(&mut buf).await.map_err(|e| format!("proxy {p}: {e}"))?;
        if n == 0 {
            return Err(format!("proxy {p} closed the connection"));
        }
        let progress = match &mut m {
            Prologue::Http(h) => h.handle_input(&buf[..n]),
            Prologue::Socks(s) => s.handle_input(&buf[..n]),
        }
        .map_err(|e| format!("proxy {p}: {e}"))?;
        if let ClientProgress::Established { .. } = progress {
            let leftover = match &mut m {
                Prologue::Http(h) => h.take_leftover(),
                Prologue::Socks(s) => s.take_leftover(),
            };
            // The gate speaks only after our ClientHello; bytes before it are not the gate's.
            if !leftover.is_empty() {
                return Err(format!("proxy {p} sent data before TLS started"));
            }
            return Ok(());
        }
    }
}

/// Up to a quarter more, so portals that lost the same gate do not return in lockstep.
fn jitter(d: Duration) -> Duration {
    d + d.mul_f64(rand::random::<f64>() * 0.25)
}

async fn tcp_forward(listener: TcpListener, target: Target, tunnel: TunnelWait) {
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "tunnel portal: forward accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let target = target.clone();
        let tunnel = tunnel.clone();
        tokio::spawn(async move {
            let Some(handle) = tunnel.handle().await else {
                tracing::info!(%client, %target, "tunnel portal: forward refused: tunnel to the gate is down (waited session_wait)");
                return;
            };
            match handle.open(Protocol::TCP, target.clone()).await {
                Ok(id) => {
                    let listed = super::list_session(
                        "tunnel portal forward",
                        client,
                        &target,
                        target.to_string(),
                        String::new(),
                    );
                    handle.attach_tcp(id, stream, Vec::new(), Some(listed));
                }
                Err(f) => {
                    tracing::info!(%client, %target, reason = %f, "tunnel portal: forward refused by gate")
                }
            }
        });
    }
}

/// Sessions the gate opens toward this side (reverse forwards), under `allow_reverse`.
struct PortalAcceptor {
    reverse: Policy,
    connect_timeout: Duration,
}

impl Acceptor for PortalAcceptor {
    fn open_request(&self, handle: Handle, id: SessionId, protocol: Protocol, target: Target) {
        let decision = if protocol == Protocol::TCP {
            self.reverse.check(protocol, &target)
        } else {
            Decision::Deny { reason: "the portal accepts only TCP from the gate".into() }
        };
        if let Decision::Deny { reason } = decision {
            tracing::info!(%target, %reason, "tunnel portal: reverse session refused");
            handle.refuse(id, OpenRc::REFUSED_BY_POLICY, reason);
            return;
        }
        let policy = self.reverse.clone();
        let timeout = self.connect_timeout;
        tokio::spawn(async move {
            let result = async {
                let addrs = match &target.host {
                    Host::Ip(ip) => vec![*ip],
                    Host::Name(n) => tokio::net::lookup_host((n.as_str(), 0))
                        .await
                        .map_err(|e| OpenFailure {
                            rc: OpenRc::NAME_NOT_RESOLVED,
                            reason: format!("{n}: {e}"),
                        })?
                        .map(|a| a.ip())
                        .collect(),
                };
                for ip in &addrs {
                    if let Decision::Deny { reason } =
                        policy.check_resolved(Protocol::TCP, &target, *ip, false)
                    {
                        return Err(OpenFailure { rc: OpenRc::REFUSED_BY_POLICY, reason });
                    }
                }
                connect_any(&addrs, target.port, timeout).await
            }
            .await;
            match result {
                Ok(stream) => handle.accept_tcp(id, stream, None),
                Err(f) => {
                    tracing::info!(%target, reason = %f.reason, "tunnel portal: reverse session refused");
                    handle.refuse(id, f.rc, f.reason);
                }
            }
        });
    }
}

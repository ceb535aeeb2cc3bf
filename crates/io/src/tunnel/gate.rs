//! `tlsgate tunnel gate`: accepts portals, opens destinations for them under policy, and runs
//! the reverse-forward listeners.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tlsgate_config::GateConfig;
use tlsgate_telemetry::conns::{live, ConnInfo, Listed};
use tlsgate_tls::revocation::{RevocationKey, Revocations};
use tlsgate_tunnel::addr::Host;
use tlsgate_tunnel::policy::{Decision, PolicySet};
use tlsgate_tunnel::wire::{OpenRc, Protocol};
use tlsgate_tunnel::{Datagram, Endpoint, Role, SessionId, Target};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::connect::connect_any;
use super::driver::{Acceptor, Driver};
use super::resolve::Resolver;
use super::{endpoint_config, Handle, OpenFailure, DNS_TARGET_NAME};
use crate::ProxyError;

/// The connected portals by identity. One identity may hold several connections (a portal
/// reconnecting before the gate noticed the old one died); reverse forwards use the newest.
type Registry = Arc<Mutex<HashMap<String, Vec<Handle>>>>;

/// What every portal connection reads. `config`, `tls` and `policies` are swapped whole by a
/// reload: a handshake uses the TLS material current when it starts, an open request the policy
/// current when it arrives.
struct Shared {
    config: ArcSwap<GateConfig>,
    tls: ArcSwap<ServerConfig>,
    policies: ArcSwap<PolicySet>,
    resolver: Resolver,
    portals: Registry,
    /// Every connected portal's certificate, for closing it once a reload finds it revoked.
    certs: Mutex<HashMap<u64, Connected>>,
    next_conn: std::sync::atomic::AtomicU64,
}

/// A connected portal as revocation sees it.
struct Connected {
    key: RevocationKey,
    portal: String,
    peer: SocketAddr,
    revoked: Arc<tokio::sync::Notify>,
}

pub struct Gate {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Gate {
    /// Loads the TLS material and policy, binds every socket; fails as a whole.
    pub async fn start(
        config: &GateConfig,
        allow_insecure_key_permissions: bool,
    ) -> Result<Gate, ProxyError> {
        if config.ktls == tlsgate_config::KtlsMode::On {
            crate::ktls::require().map_err(|e| ProxyError::config(format!("tunnel gate: {e}")))?;
        }
        let (tls, policies, _) = load(config, allow_insecure_key_permissions)?;
        let resolver = Resolver::new(config.resolver).map_err(ProxyError::internal)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| ProxyError::bind(&format!("tunnel gate {}", config.listen), &e))?;
        let local_addr = listener.local_addr().map_err(|e| ProxyError::internal(e.to_string()))?;
        let mut reverse = Vec::new();
        for r in &config.reverse {
            let l = TcpListener::bind(r.listen)
                .await
                .map_err(|e| ProxyError::bind(&format!("tunnel gate: reverse forward {}", r.listen), &e))?;
            reverse.push((l, r.clone()));
        }
        let shared = Arc::new(Shared {
            config: ArcSwap::from_pointee(config.clone()),
            tls: ArcSwap::from(tls),
            policies: ArcSwap::from_pointee(policies),
            resolver,
            portals: Default::default(),
            certs: Default::default(),
            next_conn: Default::default(),
        });
        let mut tasks = vec![tokio::spawn(accept_loop(listener, shared.clone()))];
        for (l, r) in reverse {
            tracing::info!(listen = %r.listen, portal = %r.portal, target = %r.target, "tunnel gate: reverse forward");
            tasks.push(tokio::spawn(reverse_loop(l, r, shared.clone())));
        }
        tracing::info!(listen = %local_addr, "tunnel gate listening");
        Ok(Gate { shared, local_addr, tasks })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Applies `config`: certificate, key, client CA and CRLs (re-read from disk) for the next
    /// handshake, policy for the next open request, timeouts and limits for the next portal.
    /// Portals already connected keep their TLS session. All or nothing: on error the old
    /// material stays. The sockets (listen, reverse forwards) and the resolver stay as started.
    pub fn reload(
        &self,
        config: &GateConfig,
        allow_insecure_key_permissions: bool,
    ) -> Result<(), ProxyError> {
        let running = self.shared.config.load();
        let fixed = |c: &GateConfig| (c.listen, c.reverse.clone(), c.resolver);
        if fixed(config) != fixed(&running) {
            return Err(ProxyError::config(
                "[tunnel.gate]: listen, reverse or resolver changed; a restart applies that",
            ));
        }
        let (tls, policies, revocations) = load(config, allow_insecure_key_permissions)?;
        self.shared.tls.store(tls);
        self.shared.policies.store(Arc::new(policies));
        self.shared.config.store(Arc::new(config.clone()));
        // The new CRLs hold for portals already connected too: a revoked one is closed now
        // rather than whenever its TCP connection drops.
        for c in self.shared.certs.lock().unwrap_or_else(|e| e.into_inner()).values() {
            if revocations.revokes(&c.key) {
                tracing::warn!(
                    portal = %c.portal, client = %c.peer,
                    "tunnel gate: closing a portal connection: its certificate is revoked now"
                );
                c.revoked.notify_one();
            }
        }
        Ok(())
    }

    /// Stops accepting, sends GoAway on every portal connection and waits (at most `grace`) for
    /// them to be written, so portals learn the gate left on purpose.
    pub async fn shutdown(&self, grace: Duration) {
        for t in &self.tasks {
            t.abort();
        }
        let handles: Vec<Handle> = self
            .shared
            .portals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flatten()
            .cloned()
            .collect();
        for h in &handles {
            h.shutdown();
        }
        let all_closed = futures_join(handles.iter().map(|h| h.closed()));
        let _ = tokio::time::timeout(grace, all_closed).await;
    }
}

/// The gate's TLS config, policy and revoked certificates from `config`, read from disk.
fn load(
    config: &GateConfig,
    insecure: bool,
) -> Result<(Arc<ServerConfig>, PolicySet, Revocations), ProxyError> {
    let label = format!("tunnel gate {}", config.listen);
    let tls = tlsgate_tls::tunnel::gate_server_config(config, insecure)
        .map_err(|e| ProxyError::config(format!("{label}: {e}")))?;
    let revocations =
        Revocations::load(&config.crl).map_err(|e| ProxyError::config(format!("{label}: {e}")))?;
    let (identities, default, open) =
        config.policies().map_err(|e| ProxyError::config(format!("{label}: {e}")))?;
    if open {
        tracing::warn!(
            "tunnel gate: no policy configured; every authenticated portal may open any destination, \
             the gate's own loopback services included"
        );
    }
    for (who, policy) in
        identities.iter().map(|(id, p)| (id.as_str(), p)).chain([("default_policy", &default)])
    {
        for warning in policy.warnings() {
            tracing::warn!(policy = %who, "tunnel gate: {warning}");
        }
    }
    Ok((tls, PolicySet { identities, default: Some(default) }, revocations))
}

/// Waits for every future (a handful of portal connections: no need for a join set).
async fn futures_join<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    for f in futures {
        f.await;
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(serve_portal(stream, peer, shared.clone()));
            }
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "tunnel gate: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_portal(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let config = shared.config.load_full();
    let handshake = tokio::time::timeout(config.handshake_timeout, accept(stream, &shared, config.ktls));
    let (tls, facts) = match handshake.await {
        Ok(Ok(done)) => done,
        Ok(Err(error)) => {
            tracing::warn!(client = %peer, %error, "tunnel gate: portal refused: TLS handshake failed (client side)");
            return;
        }
        Err(_) => {
            tracing::warn!(client = %peer, "tunnel gate: portal refused: TLS handshake timed out (client side)");
            return;
        }
    };
    let (Some(identity), Some(key)) = (facts.peer, facts.revocation) else {
        tracing::warn!(client = %peer, "tunnel gate: portal refused: certificate unreadable (client side)");
        return;
    };
    let name = tlsgate_tls::tunnel::portal_name(&identity);
    let suite = format!("{:?}", facts.suite.suite());
    let _listed = live().insert(ConnInfo {
        listener: "tunnel gate".into(),
        client: peer,
        sni: String::new(),
        version: "TLSv1.3".into(),
        suite,
        identity: identity.summary(),
        record_layer: tls.record_layer().into(),
        backend: Default::default(),
        state: Default::default(),
        started: Instant::now(),
        up: Default::default(),
        down: Default::default(),
    });
    tracing::info!(client = %peer, portal = %name, "tunnel gate: portal connected");
    let label: Arc<str> = format!("portal {name} at {peer}").into();
    let acceptor = Arc::new(GateAcceptor { shared: shared.clone(), portal: name.clone(), peer });
    let endpoint = Endpoint::new(endpoint_config(Role::Gate, &config.limits), Instant::now());
    let driver = Driver::new(endpoint, acceptor, false, label);
    let handle = driver.handle();
    shared
        .portals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(name.clone())
        .or_default()
        .push(handle.clone());
    let conn_id = shared.next_conn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let revoked = Arc::new(tokio::sync::Notify::new());
    let entry = Connected { key, portal: name.clone(), peer, revoked: revoked.clone() };
    shared.certs.lock().unwrap_or_else(|e| e.into_inner()).insert(conn_id, entry);
    // Revoked: the driver is dropped with the TLS stream and every session's socket.
    let ended = tokio::select! {
        ended = driver.run(tls, None) => ended.to_string(),
        () = revoked.notified() => "certificate revoked".to_string(),
    };
    shared.certs.lock().unwrap_or_else(|e| e.into_inner()).remove(&conn_id);
    {
        let mut portals = shared.portals.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = portals.get_mut(&name) {
            list.retain(|h| !h.same(&handle));
            if list.is_empty() {
                portals.remove(&name);
            }
        }
    }
    tracing::info!(client = %peer, portal = %name, reason = %ended, "tunnel gate: portal disconnected");
}

struct GateAcceptor {
    shared: Arc<Shared>,
    portal: String,
    peer: SocketAddr,
}

impl Acceptor for GateAcceptor {
    fn open_request(&self, handle: Handle, id: SessionId, protocol: Protocol, target: Target) {
        let shared = self.shared.clone();
        let portal = self.portal.clone();
        let peer = self.peer;
        tokio::spawn(async move {
            let result = if protocol == Protocol::TCP {
                open_tcp(&shared, &portal, peer, &target).await.map(|(stream, listed)| {
                    handle.accept_tcp(id, stream, Some(listed));
                })
            } else if protocol == Protocol::UDP {
                open_udp(&shared, &portal, &handle, id, &target)
            } else {
                Err(OpenFailure { rc: OpenRc::UNSUPPORTED, reason: "unsupported protocol".into() })
            };
            if let Err(f) = result {
                tracing::info!(portal = %portal, %target, reason = %f.reason, "tunnel gate: open refused");
                handle.refuse(id, f.rc, f.reason);
            }
        });
    }
}

/// Where a name resolves, checked against policy again (DNS rebinding into a denied range).
pub(crate) async fn resolve_checked(
    shared: &SharedView<'_>,
    protocol: Protocol,
    target: &Target,
) -> Result<Vec<IpAddr>, OpenFailure> {
    if let Host::Name(n) = &target.host {
        if n == DNS_TARGET_NAME {
            return match shared.resolver.dns_server() {
                Some(s) => Ok(vec![s.ip()]),
                None => Err(OpenFailure {
                    rc: OpenRc::REFUSED_BY_POLICY,
                    reason: "gate has no DNS resolver configured".into(),
                }),
            };
        }
    }
    let refuse = |d: Decision| match d {
        Decision::Allow => Ok(()),
        Decision::Deny { reason } => Err(OpenFailure { rc: OpenRc::REFUSED_BY_POLICY, reason }),
    };
    refuse(shared.policies.check(shared.portal, protocol, target))?;
    let addrs = match &target.host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(name) => shared
            .resolver
            .resolve(name)
            .await
            .map_err(|reason| OpenFailure { rc: OpenRc::NAME_NOT_RESOLVED, reason })?,
    };
    // Every address it would connect to, with what only the I/O side knows: whether it is the
    // gate's own.
    for ip in &addrs {
        let own = super::own_addrs::is_own(*ip);
        refuse(shared.policies.check_resolved(shared.portal, protocol, target, *ip, own))?;
    }
    Ok(addrs)
}

/// [`resolve_checked`] under the policy current now: a reload applies to every new session and
/// every new UDP destination.
async fn resolve_now(
    shared: &Shared,
    portal: &str,
    protocol: Protocol,
    target: &Target,
) -> Result<Vec<IpAddr>, OpenFailure> {
    let policies = shared.policies.load_full();
    let view = SharedView { policies: &policies, resolver: &shared.resolver, portal };
    resolve_checked(&view, protocol, target).await
}

/// What resolution and policy need, borrowed.
pub(crate) struct SharedView<'a> {
    pub policies: &'a PolicySet,
    pub resolver: &'a Resolver,
    pub portal: &'a str,
}

async fn open_tcp(
    shared: &Shared,
    portal: &str,
    peer: SocketAddr,
    target: &Target,
) -> Result<(TcpStream, Listed), OpenFailure> {
    let addrs = resolve_now(shared, portal, Protocol::TCP, target).await?;
    let port = match &target.host {
        Host::Name(n) if n == DNS_TARGET_NAME => shared.resolver.dns_server().map_or(53, |s| s.port()),
        _ => target.port,
    };
    let stream = connect_any(&addrs, port, shared.config.load().connect_timeout).await?;
    let backend = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::debug!(portal = %portal, %target, %backend, "tunnel gate: session opened");
    let listed = super::list_session("tunnel gate session", peer, target, backend, portal.to_string());
    Ok((stream, listed))
}

fn open_udp(
    shared: &Arc<Shared>,
    portal: &str,
    handle: &Handle,
    id: SessionId,
    target: &Target,
) -> Result<(), OpenFailure> {
    // A SOCKS UDP association names the client's source (often 0.0.0.0:0), not a destination;
    // each datagram's destination is checked as it comes.
    let is_hint = matches!(target.host, Host::Ip(ip) if ip.is_unspecified()) || target.port == 0;
    if !is_hint && !is_dns(target) {
        if let Decision::Deny { reason } = shared.policies.load().check(portal, Protocol::UDP, target) {
            return Err(OpenFailure { rc: OpenRc::REFUSED_BY_POLICY, reason });
        }
    }
    let (sink, rx) = tokio::sync::mpsc::channel(UDP_QUEUE);
    handle.attach_udp(id, sink, true);
    tokio::spawn(udp_session(shared.clone(), portal.to_string(), handle.clone(), id, rx));
    Ok(())
}

/// Datagrams queued from the tunnel toward one UDP session's socket.
const UDP_QUEUE: usize = 64;
/// Destinations remembered per UDP session (a DNS client asks few servers; a scan gets no more).
const UDP_PEERS: usize = 256;

/// One UDP session on the gate: its own socket, datagrams sent where the portal says (each
/// checked against policy), replies accepted only from addresses this session sent to.
async fn udp_session(
    shared: Arc<Shared>,
    portal: String,
    handle: Handle,
    id: SessionId,
    mut rx: tokio::sync::mpsc::Receiver<Datagram>,
) {
    let Ok(sock) = tokio::net::UdpSocket::bind((IpAddr::from([0u8; 16]), 0)).await else {
        tracing::warn!(portal = %portal, "tunnel gate: cannot bind a UDP socket");
        handle.end_session(id);
        return;
    };
    let mut resolved: HashMap<Target, SocketAddr> = HashMap::new();
    let mut peers: HashMap<SocketAddr, Target> = HashMap::new();
    let mut reply_to: Option<Target> = None;
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            d = rx.recv() => {
                let Some(d) = d else { return };
                reply_to = Some(d.src.clone());
                let to = match resolved.get(&d.dst) {
                    Some(a) => *a,
                    None => match resolve_now(&shared, &portal, Protocol::UDP, &d.dst).await {
                        Ok(addrs) => {
                            let port = if is_dns(&d.dst) { shared.resolver.dns_server().map_or(53, |s| s.port()) } else { d.dst.port };
                            let a = SocketAddr::new(v6_mapped(addrs[0]), port);
                            if resolved.len() < UDP_PEERS {
                                resolved.insert(d.dst.clone(), a);
                            }
                            a
                        }
                        Err(f) => {
                            tracing::info!(portal = %portal, target = %d.dst, reason = %f.reason, "tunnel gate: datagram refused");
                            continue;
                        }
                    },
                };
                if peers.len() < UDP_PEERS || peers.contains_key(&to) {
                    peers.insert(to, d.dst.clone());
                }
                if let Err(e) = sock.send_to(&d.data, to).await {
                    tracing::debug!(portal = %portal, %to, error = %e, "tunnel gate: UDP send failed");
                }
            }
            r = sock.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let (Some(src), Some(dst)) = (peers.get(&from), reply_to.clone()) else { continue };
                handle.send_datagram(id, Datagram { src: src.clone(), dst, data: buf[..n].to_vec() });
            }
        }
    }
}

/// The session's socket is dual-stack IPv6; IPv4 destinations are reached as mapped addresses.
fn v6_mapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        v6 => v6,
    }
}

fn is_dns(t: &Target) -> bool {
    matches!(&t.host, Host::Name(n) if n == DNS_TARGET_NAME)
}

async fn reverse_loop(listener: TcpListener, r: tlsgate_config::ReverseForward, shared: Arc<Shared>) {
    let target = match Target::name(&r.target.host, r.target.port) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(target = %r.target, error = %e, "tunnel gate: reverse forward target invalid");
            return;
        }
    };
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "tunnel gate: reverse accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handle = shared
            .portals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&r.portal)
            .and_then(|list| list.iter().rev().find(|h| !h.is_closed()).cloned());
        let Some(handle) = handle else {
            tracing::warn!(%client, portal = %r.portal, "tunnel gate: reverse forward refused: portal not connected");
            continue;
        };
        let target = target.clone();
        let portal = r.portal.clone();
        tokio::spawn(async move {
            match handle.open(Protocol::TCP, target.clone()).await {
                Ok(id) => {
                    let listed =
                        super::list_session("tunnel gate reverse", client, &target, String::new(), portal);
                    handle.attach_tcp(id, stream, Vec::new(), Some(listed));
                }
                Err(f) => {
                    tracing::info!(%client, portal = %portal, %target, reason = %f, "tunnel gate: reverse forward refused by portal");
                }
            }
        });
    }
}

/// The portal's handshake (tlsgate's server driver, as terminate's), then the record layer: the
/// kernel's when `mode` and the kernel allow, else tlsgate's.
async fn accept(
    mut tcp: TcpStream,
    shared: &Shared,
    mode: tlsgate_config::KtlsMode,
) -> Result<(crate::ktls::ClientStream, tlsgate_tls::server_handshake::SessionFacts), String> {
    use crate::terminate::handshake::drive;
    let failed = |e: rustls::Error| tlsgate_tls::describe::tls_error(&e, tlsgate_tls::describe::Peer::Client);
    let mut hs =
        tlsgate_tls::server_handshake::ServerHandshake::new(shared.tls.load_full()).map_err(failed)?;
    let mut input = Vec::new();
    drive(&mut tcp, &mut hs, &mut input)
        .await
        .map_err(|stop| stop.message(tlsgate_tls::describe::Peer::Client))?;
    let finished = hs.finish().map_err(failed)?;
    let stream = crate::ktls::establish(mode, tcp, finished.secrets, finished.kernel, input)
        .await
        .map_err(|e| e.context)?;
    Ok((stream, finished.facts))
}

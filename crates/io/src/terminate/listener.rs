//! One terminate listener: its TLS material and routes (swappable on reload), its accept loop,
//! and the life of each connection.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tlsgate_config::{KtlsMode, ListenerConfig, SecurityConfig, StartTls};
use tlsgate_core::side::Side;
use tlsgate_telemetry::conns::{live, ConnInfo};
use tlsgate_telemetry::metrics::{metrics, BytesLabels, HandshakeLabels, ListenerLabel};
use tlsgate_tls::server::{listener_tls_with, ListenerTls};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::handshake::{self, HandshakeFailure};
use super::http_headers::{self, ClientFacts};
use super::routes::Routes;
use crate::counted::Counted;
use crate::error::listener_label;
use crate::ktls::ClientStream;
use crate::proxy_header;
use crate::relay::{relay, Tally};
use crate::starttls::{self, server::Prologue};
use crate::ProxyError;

/// What the connections of a listener share. A reload builds a new one and swaps it in; a
/// connection keeps the one it started with, so reloads never disturb open connections.
#[derive(Debug)]
pub struct ListenerState {
    pub name: String,
    tls: ListenerTls,
    pub routes: Routes,
    handshake_timeout: Duration,
    /// Kernel TLS offload after the handshake.
    ktls: KtlsMode,
    idle_timeout: Option<Duration>,
    accept_proxy_protocol: bool,
    /// A STARTTLS prologue before the handshake, and the host name its greeting gives.
    starttls: Option<(StartTls, String)>,
    /// This listener's connection limit (a reload starts a fresh count).
    limit: Option<Arc<Semaphore>>,
    /// A plain relay until the backend application's `start_tls` (crate::directed).
    directed: bool,
    /// Its metric handles, looked up once instead of per connection.
    counters: Counters,
}

#[derive(Debug)]
struct Counters {
    accepted: Counter,
    open: Gauge,
    handshake_seconds: Histogram,
    bytes_up: Counter,
    bytes_down: Counter,
}

impl Counters {
    fn new(listener: &str) -> Self {
        let m = metrics();
        let label = ListenerLabel { listener: listener.to_string() };
        let bytes = |direction: &str| {
            m.bytes.get_or_create_owned(&BytesLabels {
                listener: listener.to_string(),
                direction: direction.into(),
            })
        };
        Counters {
            accepted: m.connections_total.get_or_create_owned(&label),
            open: m.connections_open.get_or_create_owned(&label),
            handshake_seconds: m.handshake_seconds.get_or_create_owned(&label),
            bytes_up: bytes("up"),
            bytes_down: bytes("down"),
        }
    }
}

impl ListenerState {
    /// Every certificate's slot with its config (for OCSP fetching).
    pub fn cert_slots(&self) -> &[(Arc<tlsgate_tls::slot::CertSlot>, tlsgate_config::CertificateConfig)] {
        self.tls.certs.slots()
    }

    /// Loads the listener's certificates, keys, CAs and CRLs; any problem is reported here.
    /// With `fleet`, resumption (tickets, session IDs) is the fleet's instead of the process's.
    pub fn build(
        config: &ListenerConfig,
        security: &SecurityConfig,
        fleet: Option<&crate::fleet::Fleet>,
    ) -> Result<Self, ProxyError> {
        let name = config.display_name();
        let acme = match &config.acme {
            Some(a) => Some(crate::acme::prepare(a, &name).map_err(|e| {
                ProxyError::config(format!("{}: acme: {e}", listener_label(&name, config.listen)))
            })?),
            None => None,
        };
        Self::build_with(config, security, fleet, acme)
    }

    /// [`ListenerState::build`] with the ACME state kept by the server across reloads.
    pub fn build_with(
        config: &ListenerConfig,
        security: &SecurityConfig,
        fleet: Option<&crate::fleet::Fleet>,
        acme: Option<Arc<tlsgate_tls::acme::AcmeShared>>,
    ) -> Result<Self, ProxyError> {
        let name = config.display_name();
        let label = listener_label(&name, config.listen);
        let mut tls =
            listener_tls_with(config, security.allow_insecure_key_permissions, acme).map_err(|e| {
                crate::ocsp_fetch::file_refused(config, &name, &e);
                ProxyError::config(format!("{label}: {e}"))
            })?;
        if let Some(f) = fleet {
            tls.config = Arc::new(f.apply(&tls.config));
        }
        let routes = Routes::from_config(config).map_err(|e| ProxyError::config(format!("{label}: {e}")))?;
        if config.ktls == KtlsMode::On {
            crate::ktls::require().map_err(|e| ProxyError::config(format!("{label}: {e}")))?;
        }
        Ok(ListenerState {
            counters: Counters::new(&name),
            name,
            tls,
            routes,
            handshake_timeout: config.handshake_timeout,
            ktls: config.ktls,
            accept_proxy_protocol: config.accept_proxy_protocol,
            starttls: config
                .starttls
                .map(|p| (p, config.starttls_host.clone().unwrap_or_else(starttls::local_host_name))),
            idle_timeout: Some(config.idle_timeout).filter(|d| !d.is_zero()),
            limit: config.max_connections.map(|n| Arc::new(Semaphore::new(n))),
            directed: config.directed,
        })
    }
}

/// Accepts until the task is aborted; every connection runs on `tracker` so shutdown can drain.
/// At a connection limit (the process's `global`, or the listener's own) it stops accepting, so
/// further clients wait in the kernel's accept queue instead of being refused.
pub async fn accept_loop(
    socket: TcpListener,
    state: Arc<ArcSwap<ListenerState>>,
    global: Option<Arc<Semaphore>>,
    tracker: TaskTracker,
) {
    let addr = socket.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(listener = %state.load().name, %addr, "listening");
    if let Err(e) = nodelay_for_accepted(&socket) {
        tracing::warn!(side = %Side::Internal, error = %e, %addr, "TCP_NODELAY on the listening socket");
    }
    loop {
        let limits = state.load_full();
        // The process's limit is shared by every listener: a listener waiting in accept must not
        // hold one of its permits (an idle listener then starved a busy one), so here it only
        // waits until one is free, and takes one once a client arrived.
        drop(acquire(&global, &limits.name, "process").await);
        let own = acquire(&limits.limit, &limits.name, "listener").await;
        drop(limits);
        match socket.accept().await {
            Ok((tcp, peer)) => {
                // Loaded after accept: a reload while this loop waited applies to this client.
                let current = state.load_full();
                let permits = (acquire(&global, &current.name, "process").await, own);
                let span = tracing::info_span!("conn", listener = %current.name, client = %peer);
                tracker.spawn(
                    async move {
                        let _permits = permits;
                        handle(tcp, current).await
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning on accept.
                tracing::error!(side = %Side::Internal, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Accepted sockets inherit TCP_NODELAY from the listening one (Linux copies the listener's TCP
/// options into each child): one setsockopt here instead of one per connection.
fn nodelay_for_accepted(socket: &TcpListener) -> std::io::Result<()> {
    socket2::SockRef::from(socket).set_tcp_nodelay(true)
}

/// A permit of `limit`, waiting (and saying so once) when none is free.
async fn acquire(
    limit: &Option<Arc<Semaphore>>,
    listener: &str,
    scope: &str,
) -> Option<OwnedSemaphorePermit> {
    let limit = limit.as_ref()?;
    if let Ok(p) = limit.clone().try_acquire_owned() {
        return Some(p);
    }
    tracing::warn!(%listener, %scope, "connection limit reached, new connections wait in the accept queue");
    limit.clone().acquire_owned().await.ok()
}

/// The client's address is asked again here (one getpeername) rather than passed in from
/// accept: passing it grew every idle connection by 2 KiB of RSS (measured by bench/run.sh's
/// idle phase, 5.3 → 7.3 KiB), more than a system call is worth.
async fn handle(tcp: TcpStream, state: Arc<ListenerState>) {
    let m = metrics();
    state.counters.accepted.inc();
    let client = tcp.peer_addr().unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    let started = Instant::now();
    let handshake_result = |result: &str, version: &str, suite: &str| {
        let labels = HandshakeLabels {
            listener: state.name.clone(),
            result: result.into(),
            version: version.into(),
            suite: suite.into(),
        };
        m.handshakes.get_or_create(&labels).inc();
    };
    if state.directed {
        // Boxed: its future is large and would otherwise size every connection's task.
        return Box::pin(directed(tcp, &state, client)).await;
    }
    // Our own address matters only to a PROXY header sent on to a backend: no getsockname
    // per connection otherwise.
    let local = if state.routes.any_proxy_protocol() { tcp.local_addr().unwrap_or(client) } else { client };
    // A load balancer's PROXY header (when the listener expects one), the STARTTLS prologue and
    // the handshake share the handshake timeout: a client gets that long to say everything
    // before TLS is up.
    let accept = async {
        let mut tcp = tcp;
        let (client, local, initial) = if state.accept_proxy_protocol {
            let (header, rest) = proxy_header::read(&mut tcp).await.map_err(HandshakeFailure::Failed)?;
            let (client, local) = match proxy_header::source(&header) {
                Some((client, local)) => {
                    tracing::info!(%client, "client address from PROXY header");
                    (client, local)
                }
                None => {
                    tracing::info!(command = ?header.command, "PROXY header without a client address: keeping the peer's");
                    (client, local)
                }
            };
            (client, local, rest)
        } else {
            (client, local, Vec::new())
        };
        let initial = match &state.starttls {
            Some((protocol, host)) => {
                match starttls::server::prologue(&mut tcp, initial, *protocol, host).await {
                    // The prologue left nothing unread: the handshake starts afresh.
                    Ok(Prologue::StartTls) => Vec::new(),
                    Ok(Prologue::Closed) => {
                        return Err(HandshakeFailure::Failed(ProxyError::client(format!(
                            "ended the {protocol} prologue without asking for TLS"
                        ))))
                    }
                    Err(e) => return Err(HandshakeFailure::Failed(e)),
                }
            }
            None => initial,
        };
        Ok::<_, HandshakeFailure>((
            // After a STARTTLS prologue the client asked for TLS: its bytes are no HTTP request.
            handshake::accept(
                tcp,
                initial,
                &state.tls,
                &state.routes,
                &state.name,
                state.starttls.is_none(),
                state.ktls,
            )
            .await?,
            client,
            local,
        ))
    };
    // Boxed: the handshake's state (buffers, rustls's acceptor) is freed once it is done,
    // instead of sizing every connection's task for its whole life.
    let accepted = tokio::time::timeout(state.handshake_timeout, Box::pin(accept)).await;
    let (est, client, local) = match accepted {
        Ok(Ok(ok)) => ok,
        Ok(Err(HandshakeFailure::AcmeValidated(what))) => {
            handshake_result("acme", "", "");
            tracing::info!("{}", what.context);
            return;
        }
        Ok(Err(failure)) => {
            handshake_result(
                if matches!(failure, HandshakeFailure::Refused(_)) { "refused" } else { "failed" },
                "",
                "",
            );
            let e = failure.error();
            tracing::warn!(side = %e.side, error = %e.context, "handshake failed, connection closed");
            return;
        }
        Err(_) => {
            handshake_result("timeout", "", "");
            tracing::warn!(
                side = %Side::Client,
                timeout = ?state.handshake_timeout,
                "handshake timed out, connection closed"
            );
            return;
        }
    };
    let (version, suite, alpn) = est.describe();
    handshake_result("ok", &version, &suite);
    state.counters.handshake_seconds.observe(started.elapsed().as_secs_f64());
    let sni = est.sni.clone().unwrap_or_default();
    let client_cert = est.peer().map(|p| p.summary()).unwrap_or_default();
    tracing::info!(%sni, %version, %suite, %alpn, %client_cert, route = %est.route.label, "handshake done");

    let _open = OpenGuard::new(state.counters.open.clone());
    let revocation = est.facts.revocation.clone();
    let serve = async {
        let identity = est.peer().cloned();
        // Only with a control socket running can an application ask for them.
        let peer_facts = crate::control::registry::enabled().then(|| est.peer_facts());
        let listed = live().insert(ConnInfo {
            listener: state.name.clone(),
            client,
            sni,
            version,
            suite,
            identity: client_cert,
            record_layer: est.stream.record_layer().to_string(),
            backend: Default::default(),
            state: Default::default(),
            started,
            up: Default::default(),
            down: Default::default(),
        });
        let meter = Meter {
            conn: &listed.info,
            up: state.counters.bytes_up.clone(),
            down: state.counters.bytes_down.clone(),
        };
        let proxy_header_bytes = match est.route.proxy_protocol {
            Some(v) => match proxy_header::outbound(v, client, local, &est.tls_info()) {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    tracing::error!(side = %e.side, error = %e.context, "cannot build the PROXY header");
                    return;
                }
            },
            None => None,
        };
        if est.route.http_headers {
            let facts = ClientFacts { addr: client, identity, proxy_header: proxy_header_bytes };
            let stream = Counted::new(est.stream, &meter);
            match Box::pin(http_headers::serve(stream, est.route.clone(), facts)).await {
                Ok(()) => tracing::info!(
                    up = meter.conn.up.load(Ordering::Relaxed), down = meter.conn.down.load(Ordering::Relaxed),
                    duration = ?started.elapsed(), "connection closed"
                ),
                Err(e) => {
                    tracing::warn!(side = %e.side, error = %e.context, duration = ?started.elapsed(), "connection aborted")
                }
            }
            return;
        }

        let mut client_stream = est.stream;
        // Not after a STARTTLS prologue: the backend's own greeting is read first, and a server
        // may refuse a client that speaks before it (SMTP's early talkers).
        let ahead = if state.starttls.is_none() { client_stream.take_plain_ahead() } else { Vec::new() };
        let ahead_len = ahead.len();
        let connect =
            connect_backend(&est.route, client.ip(), proxy_header_bytes, ahead, peer_facts, &listed.info);
        let Some((mut backend, _lease, member, _directives)) = Box::pin(connect).await else { return };
        meter.up(ahead_len as u64);
        if let Some((protocol, _)) = &state.starttls {
            // Boxed: its greeting buffer would otherwise be part of every connection's task.
            let joined = Box::pin(starttls::server::join_backend(
                &mut backend,
                &mut client_stream,
                *protocol,
                state.handshake_timeout,
            ));
            match joined.await {
                Ok(n) => meter.down(n),
                Err(e) => {
                    tracing::warn!(
                        backend = %member, side = %e.side, error = %e.context,
                        "backend greeting failed, client connection closed"
                    );
                    return;
                }
            }
        }
        let (relayed, how) = match *client_stream {
            // Both record directions in the kernel: zero-copy.
            ClientStream::Kernel(k) => {
                (crate::ktls::splice::relay(k, backend, &meter, state.idle_timeout).await, "splice")
            }
            other => (relay(other, backend, &meter, state.idle_timeout).await, "copy"),
        };
        // The client's first bytes went with the connect, before the relay.
        let up = |t: &crate::relay::Transferred| t.up + ahead_len as u64;
        match relayed {
            Ok(t) => tracing::info!(
                backend = %member, up = up(&t), down = t.down, duration = ?started.elapsed(), relay = how,
                "connection closed"
            ),
            Err((e, t)) => tracing::warn!(
                backend = %member, side = %e.side, error = %e.context, up = up(&t), down = t.down,
                duration = ?started.elapsed(), relay = how, "connection aborted"
            ),
        }
    };
    // A client certificate that a reload's CRLs revoke drops the connection wherever it is. Only
    // such connections wait on a notification too: polling one at every wake-up of the task was
    // a lock per wake-up (tokio's `Notified`) on every connection.
    match revocation {
        None => serve.await,
        Some(key) => {
            let revoked = Arc::new(Notify::new());
            let _registered = crate::revoked::register(&state.name, client, key, revoked.clone());
            tokio::select! {
                biased;
                () = serve => {}
                () = revoked.notified() => tracing::warn!(
                    side = %Side::Client, "connection closed: client certificate revoked"
                ),
            }
        }
    }
}

/// The backend connection of an established client connection, the PROXY header (`header`)
/// and the client's first bytes (`ahead`: its request, when it came with its Finished) sent
/// before anything else, with the connect itself ([`crate::backend::Pool::connect_sending`])
/// unless a control socket runs (`peer_facts`): then the connection is registered for the
/// backend application's questions before the application can hear from it. `None` when it
/// failed (logged). A function of its own, boxed by the caller, so that none of this stays in
/// the connection's task while it relays.
async fn connect_backend(
    route: &super::routes::Route,
    client: std::net::IpAddr,
    header: Option<Vec<u8>>,
    ahead: Vec<u8>,
    peer_facts: Option<tlsgate_directive::PeerFacts>,
    info: &ConnInfo,
) -> Option<(TcpStream, crate::backend::Lease, String, Option<crate::control::registry::Registered>)> {
    let (has_header, ahead_len) = (header.is_some(), ahead.len());
    let first = match header {
        Some(mut header) => {
            header.extend_from_slice(&ahead);
            header
        }
        None => ahead,
    };
    let with_connect = if peer_facts.is_some() { &[][..] } else { &first[..] };
    let (mut backend, lease, sent) = match route.pool.connect_sending(client, with_connect).await {
        Ok(ok) => ok,
        Err(e) => {
            tracing::warn!(side = %e.side, error = %e.context, "no backend, client connection closed");
            return None;
        }
    };
    let member = lease.member().addr.to_string();
    if let Ok(mut b) = info.backend.lock() {
        b.clone_from(&member);
    }
    // The backend application names this connection by its own socket's addresses: its local
    // address is our peer, and ours is its peer. Asked for only with a control socket running
    // (two system calls per connection otherwise).
    let directives = peer_facts.and_then(|facts| match (backend.peer_addr(), backend.local_addr()) {
        (Ok(app_local), Ok(app_peer)) => Some(crate::control::registry::register(
            app_local,
            app_peer,
            crate::control::registry::Entry::new(Some(facts), None),
        )),
        _ => None,
    });
    if sent < first.len() {
        if let Err(e) = backend.write_all(&first[sent..]).await {
            let what = match (has_header, ahead_len) {
                (true, 0) => "the PROXY header",
                (true, _) => "the PROXY header and the client's first bytes",
                (false, _) => "the client's first bytes",
            };
            tracing::warn!(backend = %member, side = %Side::Backend, error = %e, "sending {what} failed");
            return None;
        }
    }
    Some((backend, lease, member, directives))
}

/// A directed connection: to the default route's backend, in the clear until the backend
/// application's `start_tls`, when tlsgate runs the handshake as server (crate::directed).
async fn directed(tcp: TcpStream, state: &ListenerState, client: std::net::SocketAddr) {
    let started = Instant::now();
    let Some(route) = state.routes.lookup(None, None).cloned() else {
        tracing::warn!(side = %Side::Internal, "a directed listener needs a route without sni, connection closed");
        return;
    };
    let (backend, lease) = match Box::pin(route.pool.connect(client.ip())).await {
        Ok(ok) => ok,
        Err(e) => {
            tracing::warn!(side = %e.side, error = %e.context, "no backend, client connection closed");
            return;
        }
    };
    let member = lease.member().addr.to_string();
    let role =
        crate::directed::Role::Server { tls: &state.tls, routes: &state.routes, listener: &state.name };
    let timeouts = crate::directed::Timeouts { handshake: state.handshake_timeout, idle: state.idle_timeout };
    let (moved, result) = crate::directed::run(backend, tcp, role, &state.name, timeouts).await;
    // The application is the backend: what it sent went down to the client.
    let (up, down) = (moved.to_app, moved.from_app);
    match result {
        Ok(()) => {
            tracing::info!(backend = %member, up, down, duration = ?started.elapsed(), "connection closed")
        }
        Err(e) => tracing::warn!(
            backend = %member, side = %e.side, error = %e.context, up, down, duration = ?started.elapsed(),
            "connection aborted"
        ),
    }
}

/// Live byte counts of one connection: its status-page entry and the listener's counters.
struct Meter<'a> {
    conn: &'a ConnInfo,
    up: Counter,
    down: Counter,
}

impl Tally for Meter<'_> {
    fn up(&self, n: u64) {
        self.conn.up.fetch_add(n, Ordering::Relaxed);
        self.up.inc_by(n);
    }
    fn down(&self, n: u64) {
        self.conn.down.fetch_add(n, Ordering::Relaxed);
        self.down.inc_by(n);
    }
}

/// Counts a connection as open until dropped, however its task ends.
struct OpenGuard(Gauge);

impl OpenGuard {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        OpenGuard(gauge)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `accept_loop` relies on instead of a setsockopt per connection.
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        nodelay_for_accepted(&listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (accepted, _) = accepted.unwrap();
        assert!(accepted.nodelay().unwrap(), "the accepted socket has TCP_NODELAY");
        assert!(
            !client.unwrap().nodelay().unwrap(),
            "a fresh client socket has not (the option is per socket)"
        );
    }
}

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tlsgate_config::{Config, KtlsMode, OriginateListener};
use tlsgate_core::side::Side;
use tlsgate_telemetry::metrics::{metrics, UpstreamLabels};
use tlsgate_tls::describe::{self, Peer};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::transparent::Transparent;
use crate::backend::connect_one;
use crate::error::listener_label;
use crate::ktls::client::Facts;
use crate::ktls::{self, ClientStream};
use crate::relay::{relay, Transferred};
use crate::starttls;
use crate::ProxyError;

struct Listener {
    name: String,
    config: OriginateListener,
    /// rustls's own connection, when the kernel cannot take the record layer.
    connector: TlsConnector,
    /// The same config for tlsgate's handshake driver, whose keys the kernel can take.
    tls: Arc<ClientConfig>,
    /// The name SMTP's EHLO gives, when the listener speaks STARTTLS.
    starttls_host: String,
    /// `client_identities`: a directed connection's `start_tls` picks one by name.
    identities: Arc<crate::directed::ClientIdentities>,
}

impl Listener {
    fn build(l: &OriginateListener, allow_insecure_key_permissions: bool) -> Result<Listener, ProxyError> {
        let name = l.display_name();
        let tls = tlsgate_tls::client::client_config(l.into(), allow_insecure_key_permissions)
            .map_err(|e| ProxyError::config(format!("originate {}: {e}", listener_label(&name, l.listen))))?;
        if l.ktls == KtlsMode::On {
            ktls::require().map_err(|e| {
                ProxyError::config(format!("originate {}: {e}", listener_label(&name, l.listen)))
            })?;
        }
        let starttls_host = l.starttls_host.clone().unwrap_or_else(starttls::local_host_name);
        let mut identities = crate::directed::ClientIdentities::new();
        for (id, files) in &l.client_identities {
            let mut settings = tlsgate_tls::client::ClientSettings::from(l);
            (settings.cert, settings.key) = (Some(files.cert.as_path()), Some(files.key.as_path()));
            let config = tlsgate_tls::client::client_config(settings, allow_insecure_key_permissions)
                .map_err(|e| {
                    let label = listener_label(&name, l.listen);
                    ProxyError::config(format!("originate {label}: client identity {id:?}: {e}"))
                })?;
            identities.insert(id.clone(), config);
        }
        Ok(Listener {
            name,
            config: l.clone(),
            connector: TlsConnector::from(tls.clone()),
            tls,
            starttls_host,
            identities: Arc::new(identities),
        })
    }
}

/// One listener's state, built from its config section; a reload swaps it whole.
enum State {
    Plain(Arc<ArcSwap<Listener>>),
    Transparent(Arc<ArcSwap<Transparent>>),
}

impl State {
    fn store(&self, new: Built) {
        match (self, new) {
            (State::Plain(s), Built::Plain(l)) => s.store(Arc::new(l)),
            (State::Transparent(s), Built::Transparent(t)) => s.store(Arc::new(t)),
            _ => unreachable!("reload checks that every listener keeps its kind and address"),
        }
    }
}

enum Built {
    Plain(Listener),
    Transparent(Transparent),
}

/// Every originate listener of the process.
pub struct Originator {
    /// Configured address (port 0 allowed), bound address, state and accept task, in config
    /// order: plain listeners first, then transparent ones.
    listeners: Vec<(SocketAddr, SocketAddr, State, JoinHandle<()>)>,
    tracker: TaskTracker,
    /// `[originate]`'s `control` socket, started once (a restart moves it).
    _control: Option<crate::control::ControlServer>,
}

impl std::fmt::Debug for Originator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Originator").field("listeners", &self.local_addrs()).finish()
    }
}

fn section(config: &Config) -> Result<&tlsgate_config::OriginateConfig, ProxyError> {
    config.originate.as_ref().ok_or_else(|| ProxyError::config("config has no [originate] section"))
}

/// Every listener's state from `config`, with its configured address; fails as a whole.
fn build_all(config: &Config) -> Result<Vec<(SocketAddr, Built)>, ProxyError> {
    let section = section(config)?;
    let insecure = config.security.allow_insecure_key_permissions;
    let mut built = Vec::new();
    for l in &section.listener {
        built.push((l.listen, Built::Plain(Listener::build(l, insecure)?)));
    }
    for t in &section.transparent {
        built.push((t.listen, Built::Transparent(Transparent::build(t, insecure)?)));
    }
    Ok(built)
}

impl Originator {
    /// Loads every listener's TLS material and binds its socket; fails as a whole.
    pub async fn start(config: &Config) -> Result<Originator, ProxyError> {
        let built = build_all(config)?;
        let control = match &section(config)?.control {
            Some(path) => Some(crate::control::ControlServer::start(path)?),
            None => None,
        };
        let mut sockets = Vec::new();
        for (addr, _) in &built {
            let socket = TcpListener::bind(addr)
                .await
                .map_err(|e| ProxyError::bind(&format!("originate listener {addr}"), &e))?;
            sockets.push(socket);
        }
        let tracker = TaskTracker::new();
        let mut listeners = Vec::new();
        for ((addr, b), socket) in built.into_iter().zip(sockets) {
            let local = socket.local_addr().map_err(|e| ProxyError::internal(e.to_string()))?;
            let (state, task) = match b {
                Built::Plain(l) => {
                    let s = Arc::new(ArcSwap::from_pointee(l));
                    (State::Plain(s.clone()), tokio::spawn(accept_loop(socket, s, tracker.clone())))
                }
                Built::Transparent(t) => {
                    let s = Arc::new(ArcSwap::from_pointee(t));
                    let task =
                        tokio::spawn(super::transparent::accept_loop(socket, s.clone(), tracker.clone()));
                    (State::Transparent(s), task)
                }
            };
            listeners.push((addr, local, state, task));
        }
        Ok(Originator { listeners, tracker, _control: control })
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|(_, local, _, _)| *local).collect()
    }

    /// Re-reads every listener's CA, client certificate and key, and the transparent listeners'
    /// rules: new connections use them, open ones keep what they started with. All or nothing;
    /// the listeners (their kinds and addresses) must stay as they are, since their sockets do.
    pub fn reload(&self, config: &Config) -> Result<(), ProxyError> {
        let built = build_all(config)?;
        let now: Vec<(SocketAddr, bool)> = self
            .listeners
            .iter()
            .map(|(addr, _, state, _)| (*addr, matches!(state, State::Transparent(_))))
            .collect();
        let new: Vec<(SocketAddr, bool)> =
            built.iter().map(|(addr, b)| (*addr, matches!(b, Built::Transparent(_)))).collect();
        if now != new {
            return Err(ProxyError::config(format!(
                "[originate]: listeners added, removed or moved (running {}, new {}); a restart applies that",
                describe(&now),
                describe(&new)
            )));
        }
        for ((_, _, state, _), (_, b)) in self.listeners.iter().zip(built) {
            state.store(b);
        }
        Ok(())
    }

    /// Stops accepting, then lets open connections finish for at most `drain`.
    pub async fn shutdown(self, drain: Duration) {
        for (_, _, _, task) in self.listeners {
            task.abort();
            let _ = task.await;
        }
        self.tracker.close();
        tracing::info!(open = self.tracker.len(), ?drain, "draining connections");
        if tokio::time::timeout(drain, self.tracker.wait()).await.is_err() {
            tracing::warn!(left = self.tracker.len(), "drain period over, cutting remaining connections");
        }
    }
}

fn describe(listeners: &[(SocketAddr, bool)]) -> String {
    let each: Vec<String> = listeners
        .iter()
        .map(|(a, transparent)| if *transparent { format!("transparent {a}") } else { a.to_string() })
        .collect();
    each.join(", ")
}

async fn accept_loop(socket: TcpListener, state: Arc<ArcSwap<Listener>>, tracker: TaskTracker) {
    let addr = socket.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(listener = %state.load().name, %addr, "originate listening");
    loop {
        match socket.accept().await {
            Ok((tcp, peer)) => {
                let l = state.load_full();
                let span = tracing::info_span!("conn", listener = %l.name, client = %peer);
                tracker.spawn(handle(tcp, l).instrument(span));
            }
            Err(e) => {
                tracing::error!(side = %Side::Internal, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(mut client: TcpStream, l: Arc<Listener>) {
    if l.config.directed {
        // Boxed: its future is large and would otherwise size every connection's task.
        return Box::pin(directed(client, &l)).await;
    }
    let started = Instant::now();
    let _ = client.set_nodelay(true);
    let (mut upstream, name, greeting) = match connect_upstream(&l).await {
        Ok(ok) => ok,
        Err(e) => {
            tracing::warn!(side = %e.side, error = %e.context, "no upstream, client connection closed");
            return;
        }
    };
    if let Some(protocol) = l.config.starttls {
        let prepared = tokio::time::timeout(l.config.handshake_timeout, async {
            match &mut upstream {
                Upstream::Rustls(tls) => after_starttls(&mut client, tls, protocol, &greeting).await,
                Upstream::Own(own) => after_starttls(&mut client, own, protocol, &greeting).await,
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(ProxyError::client(format!(
                "{protocol} start not done within {:?}",
                l.config.handshake_timeout
            )))
        });
        if let Err(e) = prepared {
            tracing::warn!(upstream = %name, side = %e.side, error = %e.context, "connection aborted");
            return;
        }
    }
    let (relayed, how) = match upstream {
        // Both record directions in the kernel: zero-copy. The spliced relay counts from the
        // TLS side; here that is the upstream, so its directions are swapped back.
        Upstream::Own(ClientStream::Kernel(k)) => {
            let swap = |t: Transferred| Transferred { up: t.down, down: t.up };
            let sides = (Side::Backend, Side::Client);
            let r = crate::ktls::splice::relay_sides(k, client, &(), None, sides).await;
            (r.map(swap).map_err(|(e, t)| (e, swap(t))), "splice")
        }
        Upstream::Own(own) => (relay(client, own, &(), None).await, "copy"),
        Upstream::Rustls(tls) => (relay(client, tls, &(), None).await, "copy"),
    };
    match relayed {
        Ok(t) => tracing::info!(
            upstream = %name, up = t.up, down = t.down, duration = ?started.elapsed(), relay = how,
            "connection closed"
        ),
        Err((e, t)) => tracing::warn!(
            upstream = %name, side = %e.side, error = %e.context, up = t.up, down = t.down,
            duration = ?started.elapsed(), relay = how, "connection aborted"
        ),
    }
}

/// The upstream's TLS connection after the handshake.
enum Upstream {
    /// rustls's own connection: `ktls = "off"` (boxed: its buffers are large).
    Rustls(Box<TlsStream<TcpStream>>),
    /// tlsgate's handshake driver ran: the record layer is the kernel's or, where it fell back,
    /// tlsgate's (crate::ktls::establish).
    Own(ClientStream),
}

/// Once the upstream's TLS is up: the plaintext client gets the upstream's greeting; a PostgreSQL
/// client's own SSLRequest is answered here, and its startup message is sent on.
async fn after_starttls<U: AsyncWrite + Unpin>(
    client: &mut TcpStream,
    upstream: &mut U,
    protocol: tlsgate_config::StartTls,
    greeting: &[u8],
) -> Result<(), ProxyError> {
    if !greeting.is_empty() {
        client.write_all(greeting).await.map_err(|e| ProxyError::client(format!("write: {e}")))?;
    }
    if protocol == tlsgate_config::StartTls::Postgres {
        let first = starttls::client::postgres_first_bytes(client).await?;
        upstream.write_all(&first).await.map_err(|e| ProxyError::backend(format!("write: {e}")))?;
        upstream.flush().await.map_err(|e| ProxyError::backend(format!("write: {e}")))?;
    }
    Ok(())
}

/// The first upstream, in order, that connects, agrees to STARTTLS when the listener speaks it,
/// and completes a verified handshake; with the greeting the plaintext client is owed. Nothing
/// of the client's has been read yet, so moving on after any failure is safe.
async fn connect_upstream(l: &Listener) -> Result<(Upstream, String, Vec<u8>), ProxyError> {
    let mode = l.config.ktls;
    // tlsgate's own handshake driver and record layer unless `ktls = "off"`, as in terminate:
    // the offload decision (and its `no_ulp` fallback) comes after the handshake. `off` keeps
    // rustls's own connection.
    let own = mode != KtlsMode::Off;
    let mut failures = Vec::new();
    for upstream in &l.config.upstreams {
        let sni = l.config.sni.clone().unwrap_or_else(|| upstream.host.clone());
        let attempt = async {
            let server_name =
                ServerName::try_from(sni.clone()).map_err(|e| format!("bad server name {sni:?}: {e}"))?;
            let mut tcp = connect_one(upstream, l.config.connect_timeout).await?;
            let greeting = match l.config.starttls {
                Some(protocol) => starttls::client::prologue(&mut tcp, protocol, &l.starttls_host).await?,
                None => Vec::new(),
            };
            if own {
                let (stream, facts) = ktls::client::connect(mode, l.tls.clone(), server_name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e} (SNI {sni})"))?;
                return Ok(((Upstream::Own(stream), facts), greeting));
            }
            let tls = l.connector.connect(server_name, tcp).await.map_err(|e| {
                format!("TLS handshake failed: {} (SNI {sni})", describe::io_error(&e, Peer::Server))
            })?;
            let conn = tls.get_ref().1;
            let facts = Facts {
                resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
                version: conn.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default(),
                suite: conn.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default(),
            };
            Ok::<_, String>(((Upstream::Rustls(Box::new(tls)), facts), greeting))
        };
        let result = match tokio::time::timeout(l.config.handshake_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(format!("no TLS session within {:?}", l.config.handshake_timeout)),
        };
        let count = |result: &str, resumed: bool| {
            let labels = UpstreamLabels {
                listener: l.name.clone(),
                result: result.into(),
                resumed: resumed.to_string(),
            };
            metrics().upstream_handshakes.get_or_create(&labels).inc();
        };
        match result {
            Ok(((tls, Facts { resumed, version, suite }), greeting)) => {
                count("ok", resumed);
                tracing::info!(upstream = %upstream, %sni, %version, %suite, resumed, "upstream handshake done");
                return Ok((tls, upstream.to_string(), greeting));
            }
            Err(e) => {
                count("failed", false);
                tracing::warn!(side = %Side::Backend, upstream = %upstream, error = %e, "upstream failed");
                failures.push(format!("{upstream}: {e}"));
            }
        }
    }
    Err(ProxyError::backend(format!("no upstream usable ({})", failures.join("; "))))
}

/// A directed connection: to the first upstream that connects, in the clear until the
/// application's `start_tls` (crate::directed).
async fn directed(client: TcpStream, l: &Listener) {
    let started = Instant::now();
    let mut failures = Vec::new();
    for upstream in &l.config.upstreams {
        let tcp = match connect_one(upstream, l.config.connect_timeout).await {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::warn!(side = %Side::Backend, %upstream, error = %e, "upstream failed");
                failures.push(format!("{upstream}: {e}"));
                continue;
            }
        };
        let default_sni = l.config.sni.clone().unwrap_or_else(|| upstream.host.clone());
        let identities = l.identities.clone();
        // Originate listeners have no idle timeout of their own.
        let timeouts = crate::directed::Timeouts { handshake: l.config.handshake_timeout, idle: None };
        let role = crate::directed::Role::Client { config: l.tls.clone(), default_sni, identities };
        let (moved, result) = crate::directed::run(client, tcp, role, &l.name, timeouts).await;
        let (up, down) = (moved.from_app, moved.to_app);
        match result {
            Ok(()) => tracing::info!(%upstream, up, down, duration = ?started.elapsed(), "connection closed"),
            Err(e) => tracing::warn!(
                %upstream, side = %e.side, error = %e.context, up, down, duration = ?started.elapsed(),
                "connection aborted"
            ),
        }
        return;
    }
    tracing::warn!(side = %Side::Backend, error = %failures.join("; "), "no upstream, client connection closed");
}

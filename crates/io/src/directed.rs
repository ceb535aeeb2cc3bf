//! A directed connection (`directed = true`, originate or terminate): a plain byte relay between
//! the application's socket and the far side until the application says otherwise on the
//! control socket. `start_tls` names the offset in the application's outgoing stream where TLS
//! begins: exactly that many bytes go out in the clear, the rest waits unread in the socket while
//! tlsgate runs the handshake with the far side (as client for originate, as server for
//! terminate), and everything after is sealed. `stop_tls` sends close_notify at its offset, waits
//! for the far side's, and hands the raw socket back to the relay with whatever was read past that
//! close_notify (the record layer's downgrade, [`RecordStream::into_raw_parts`]). A failed
//! handshake closes both sides: nothing the application meant for TLS ever goes out in the clear.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::time::Duration;

use tlsgate_config::KtlsMode;
use tlsgate_core::side::Side;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::control::registry::{self, Entry, Steer, SteerOp};
use crate::directed_status::{Session, Shown};
use crate::ktls::{self, ClientStream};
use crate::record_stream::{RawParts, RecordStream};
use crate::terminate::routes::Routes;
use crate::ProxyError;
use tlsgate_tls::server::ListenerTls;

/// The upstream side: plain TCP, or TLS on tlsgate's record layer.
enum Upstream {
    Clear(TcpStream),
    Tls(Box<RecordStream>),
    /// Moved into a handshake or a downgrade that failed: the connection is ending.
    Gone,
}

fn gone() -> std::io::Error {
    std::io::Error::other("the upstream connection was closed by a failed directive")
}

/// The record type a ClientHello arrives in.
const HANDSHAKE_RECORD: u8 = 0x16;

impl Upstream {
    /// Like `read`, but with `hold_hello` a TLS handshake record arriving in the clear is left
    /// unread (`None`): the far side started TLS, and the handshake waits for the application's
    /// `start_tls`, whose offset may not have been reached yet.
    async fn read_or_hold(&mut self, buf: &mut [u8], hold_hello: bool) -> std::io::Result<Option<usize>> {
        if let (Upstream::Clear(t), true) = (&mut *self, hold_hello) {
            let mut first = [0u8; 1];
            if t.peek(&mut first).await? == 1 && first[0] == HANDSHAKE_RECORD {
                return Ok(None);
            }
        }
        self.read(buf).await.map(Some)
    }

    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Upstream::Clear(t) => t.read(buf).await,
            Upstream::Tls(r) => r.read(buf).await,
            Upstream::Gone => Err(gone()),
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Upstream::Clear(t) => t.write_all(data).await,
            Upstream::Tls(r) => {
                r.write_all(data).await?;
                r.flush().await
            }
            Upstream::Gone => Err(gone()),
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Upstream::Clear(t) => t.shutdown().await,
            Upstream::Tls(r) => r.shutdown().await,
            Upstream::Gone => Ok(()),
        }
    }
}

/// How tlsgate takes part in the application's handshakes.
pub enum Role<'a> {
    /// The far side is a TLS server (originate): tlsgate is its client, with this config and
    /// this name unless a directive gives one; `identities` are the same config with each of
    /// the listener's named client certificates, for a directive's `client_cert`.
    Client { config: Arc<ClientConfig>, default_sni: String, identities: Arc<ClientIdentities> },
    /// The far side is a TLS client (terminate): tlsgate serves the listener's certificates.
    Server { tls: &'a ListenerTls, routes: &'a Routes, listener: &'a str },
}

/// The listener's client configs by identity name.
pub type ClientIdentities = BTreeMap<String, Arc<ClientConfig>>;

/// How long a directed connection waits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A handshake, a close_notify exchange, a held ClientHello's wait for `start_tls`, and a
    /// directive's wait for its offset.
    pub handshake: Duration,
    /// Nothing relayed either way for this long, in the clear or in TLS: closed.
    pub idle: Option<Duration>,
}

/// Bytes moved by a directed connection: from the application, and to it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Moved {
    pub from_app: u64,
    pub to_app: u64,
}

/// Relays between the application's socket `app` and the far side `far` (both connected) until
/// both directions ended or a directive failed. The connection is registered for directives
/// under the application's addresses, and listed on `/status` under `listener`, for as long as
/// this runs.
pub async fn run(
    app: TcpStream,
    far: TcpStream,
    role: Role<'_>,
    listener: &str,
    timeouts: Timeouts,
) -> (Moved, Result<(), ProxyError>) {
    let (app_side, far_side) = match role {
        Role::Client { .. } => (Side::Client, Side::Backend),
        Role::Server { .. } => (Side::Backend, Side::Client),
    };
    let _ = app.set_nodelay(true);
    let _ = far.set_nodelay(true);
    // The application names its connection from its own side: our peer is its local address.
    let (Ok(app_local), Ok(app_peer)) = (app.peer_addr(), app.local_addr()) else {
        return (Moved::default(), Err(err(app_side, "the application's socket has no addresses")));
    };
    let Ok(far_addr) = far.peer_addr() else {
        return (Moved::default(), Err(err(far_side, "the far side's socket has no address")));
    };
    let app_is_client = matches!(role, Role::Client { .. });
    let (client, backend) = if app_is_client { (app_local, far_addr) } else { (far_addr, app_local) };
    let shown = Shown::new(listener, client, backend, app_is_client);
    let (tx, rx) = mpsc::channel(1);
    let registered = registry::register(app_local, app_peer, Entry::new(None, Some(tx)));
    tracing::info!(app = %app_local, "directed connection open, in the clear");
    let mut conn = Directed {
        client: app,
        upstream: Upstream::Clear(far),
        sent: 0,
        received: 0,
        app: app_side,
        far: far_side,
        entry: registered.entry().clone(),
        shown,
    };
    let result = conn.run(rx, &role, timeouts).await;
    (Moved { from_app: conn.sent, to_app: conn.received }, result)
}

/// `client` is the application's socket, `upstream` the far side's (names from originate, where
/// the application is the client).
struct Directed {
    client: TcpStream,
    upstream: Upstream,
    /// Bytes of the application's outgoing stream relayed so far: the offsets directives name.
    sent: u64,
    received: u64,
    /// Who the application and the far side are, for error messages.
    app: Side,
    far: Side,
    /// Its registry entry: a `peer` directive sees the session once TLS is up.
    entry: Arc<Entry>,
    /// Its `/status` row and state gauge.
    shown: Shown,
}

impl Directed {
    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Steer>,
        role: &Role<'_>,
        timeouts: Timeouts,
    ) -> Result<(), ProxyError> {
        let (app, far) = (self.app, self.far);
        let timeout = timeouts.handshake;
        let mut pending: Option<Steer> = None;
        // When the pending directive must have reached its offset.
        let mut pending_until = tokio::time::Instant::now();
        let mut last_moved = tokio::time::Instant::now();
        // select! builds every branch's future, disabled or not: no Instant + Duration::MAX.
        let idle = timeouts.idle.unwrap_or(Duration::from_secs(365 * 86_400));
        let (mut client_eof, mut upstream_eof) = (false, false);
        // As TLS server, a ClientHello in the clear is held for the handshake (not relayed).
        let hold_hello = matches!(role, Role::Server { .. });
        let mut hello_held = false;
        let mut cbuf = vec![0u8; 16 * 1024];
        let mut ubuf = vec![0u8; 16 * 1024];
        loop {
            if pending.as_ref().is_some_and(|s| s.op.after() == self.sent) {
                let Some(steer) = pending.take() else { continue };
                let outcome = match &steer.op {
                    SteerOp::Start { sni, alpn, client_cert, .. } => {
                        let options =
                            Options { sni: sni.as_deref(), alpn, client_cert: client_cert.as_deref() };
                        self.shown.set_state("starting");
                        self.start_tls(role, timeout, options).await
                    }
                    SteerOp::Stop { .. } => {
                        self.shown.set_state("stopping");
                        self.stop_tls(timeout, &mut ubuf).await
                    }
                };
                self.shown.moved(self.sent, self.received);
                hello_held = false;
                match outcome {
                    Ok(what) => {
                        tracing::info!(at = self.sent, "{what}");
                        let _ = steer.done.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = steer.done.send(Err(e.context.clone()));
                        return Err(e);
                    }
                }
                continue;
            }
            if client_eof && upstream_eof {
                return Ok(());
            }
            // Up to a pending directive's offset and no further: the rest waits in the socket.
            let room = match &pending {
                Some(s) => (s.op.after() - self.sent).min(cbuf.len() as u64) as usize,
                None => cbuf.len(),
            };
            tokio::select! {
                read = self.client.read(&mut cbuf[..room]), if !client_eof => {
                    let n = read.map_err(|e| err(app, format!("read: {e}")))?;
                    if n == 0 {
                        client_eof = true;
                        if let Some(s) = pending.take() {
                            let _ = s.done.send(Err(format!(
                                "the application closed its connection at byte {}, before byte {}",
                                self.sent, s.op.after()
                            )));
                        }
                        let _ = self.upstream.shutdown().await;
                        continue;
                    }
                    self.upstream.write_all(&cbuf[..n]).await.map_err(|e| err(far, format!("write: {e}")))?;
                    self.sent += n as u64;
                    self.shown.moved(self.sent, self.received);
                    last_moved = tokio::time::Instant::now();
                }
                read = self.upstream.read_or_hold(&mut ubuf, hold_hello), if !upstream_eof && !hello_held => {
                    let Some(n) = read.map_err(|e| err(far, format!("read: {e}")))? else {
                        tracing::info!("the client started TLS: its ClientHello waits for start_tls");
                        hello_held = true;
                        continue;
                    };
                    if n == 0 {
                        upstream_eof = true;
                        let _ = self.client.shutdown().await;
                        continue;
                    }
                    self.client.write_all(&ubuf[..n]).await.map_err(|e| err(app, format!("write: {e}")))?;
                    self.received += n as u64;
                    self.shown.moved(self.sent, self.received);
                    last_moved = tokio::time::Instant::now();
                }
                // A client that started TLS gets an answer within the handshake timeout, or none.
                () = tokio::time::sleep(timeout), if hello_held && pending.is_none() => {
                    return Err(err(far, format!("started TLS, and the application sent no start_tls within {timeout:?}")));
                }
                // The application named an offset and does not write up to it: what it holds back
                // was meant for TLS (or for the clear), so neither goes out.
                () = tokio::time::sleep_until(pending_until), if pending.is_some() => {
                    let context = format!(
                        "byte {} of the application's stream not reached within {timeout:?} ({} relayed)",
                        pending.as_ref().map_or(0, |s| s.op.after()),
                        self.sent
                    );
                    if let Some(s) = pending.take() {
                        let _ = s.done.send(Err(context.clone()));
                    }
                    return Err(err(app, context));
                }
                () = tokio::time::sleep_until(last_moved + idle), if timeouts.idle.is_some() && pending.is_none() && !hello_held => {
                    return Err(err(app, format!("idle for {idle:?}, closed")));
                }
                Some(steer) = rx.recv(), if pending.is_none() => {
                    match self.check(&steer.op, role) {
                        Ok(()) => {
                            pending_until = tokio::time::Instant::now() + timeout;
                            pending = Some(steer);
                        }
                        Err(e) => {
                            tracing::warn!(side = %Side::Client, error = %e, "directive refused");
                            let _ = steer.done.send(Err(e));
                        }
                    }
                }
            }
        }
    }

    /// Whether a directive can be carried out here: the right state, an offset still ahead.
    fn check(&self, op: &SteerOp, role: &Role<'_>) -> Result<(), String> {
        let secured = matches!(self.upstream, Upstream::Tls(_));
        match op {
            SteerOp::Start { client_cert: Some(_), .. } if matches!(role, Role::Server { .. }) => return Err(
                "start_tls: client_cert is for originate (terminate presents the listener's certificates)"
                    .into(),
            ),
            SteerOp::Start { .. } if secured => {
                return Err("start_tls: the connection is already secured".into())
            }
            SteerOp::Stop { .. } if !secured => return Err("stop_tls: the connection is not secured".into()),
            _ => {}
        }
        if op.after() < self.sent {
            return Err(format!(
                "offset {} already passed: {} bytes of the application's stream were relayed",
                op.after(),
                self.sent
            ));
        }
        Ok(())
    }

    /// The handshake with the far side on the plain socket, in `role`.
    async fn start_tls(
        &mut self,
        role: &Role<'_>,
        timeout: Duration,
        options: Options<'_>,
    ) -> Result<String, ProxyError> {
        let (app, far) = (self.app, self.far);
        let Options { sni, alpn, client_cert } = options;
        // An unknown identity fails like a handshake: the application meant what follows for TLS.
        let identity = match (role, client_cert) {
            (Role::Client { identities, .. }, Some(name)) => Some(identities.get(name).ok_or_else(|| {
                let known: Vec<&str> = identities.keys().map(String::as_str).collect();
                err(
                    app,
                    format!(
                        "start_tls: unknown client_cert {name:?} (this listener has: {})",
                        known.join(", ")
                    ),
                )
            })?),
            _ => None,
        };
        // The socket moves into the handshake; on failure it is dropped (closed) with it.
        let Upstream::Clear(tcp) = std::mem::replace(&mut self.upstream, Upstream::Gone) else {
            return Err(ProxyError::internal("start_tls on a secured connection"));
        };
        let late = |side: Side| ProxyError {
            side,
            context: format!("start_tls: no TLS session within {timeout:?}"),
        };
        // The kernel cannot hand its record layer back: tlsgate's own, so stop_tls can.
        let (stream, what) = match role {
            Role::Client { config, default_sni, .. } => {
                let config = identity.unwrap_or(config);
                let sni = sni.unwrap_or(default_sni);
                let server_name = ServerName::try_from(sni.to_string())
                    .map_err(|e| err(app, format!("start_tls: bad server name {sni:?}: {e}")))?;
                let config = if alpn.is_empty() {
                    config.clone()
                } else {
                    let mut c = (**config).clone();
                    c.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
                    Arc::new(c)
                };
                let handshake = ktls::client::connect(KtlsMode::Off, config, server_name, tcp);
                let (stream, facts) = tokio::time::timeout(timeout, handshake)
                    .await
                    .map_err(|_| late(far))?
                    .map_err(|e| err(far, format!("start_tls: TLS handshake failed: {e} (SNI {sni})")))?;
                let who = client_cert.map(|n| format!(", client certificate {n:?}")).unwrap_or_default();
                let what =
                    format!("TLS started as client (SNI {sni}, {}, {}{who})", facts.version, facts.suite);
                self.shown.set_session(Some(Session {
                    sni: sni.to_string(),
                    version: facts.version.to_string(),
                    suite: facts.suite.to_string(),
                    identity: client_cert.map(|n| format!("client_cert={n}")).unwrap_or_default(),
                }));
                (stream, what)
            }
            Role::Server { tls, routes, listener } => {
                let handshake = crate::terminate::handshake::accept(
                    tcp,
                    Vec::new(),
                    tls,
                    routes,
                    listener,
                    false,
                    KtlsMode::Off,
                );
                let est =
                    tokio::time::timeout(timeout, handshake).await.map_err(|_| late(far))?.map_err(|f| {
                        ProxyError {
                            side: f.error().side,
                            context: format!("start_tls: {}", f.error().context),
                        }
                    })?;
                let (version, suite, _) = est.describe();
                let client_cert = est.peer().map(|p| p.summary()).unwrap_or_default();
                let facts = est.peer_facts();
                self.shown.set_session(Some(Session {
                    sni: facts.sni.clone().unwrap_or_default(),
                    version: facts.version.clone(),
                    suite: facts.suite.clone(),
                    identity: client_cert.clone(),
                }));
                self.entry.set_facts(Some(facts));
                let what = format!("TLS started as server (SNI {:?}, {version}, {suite}, client certificate {client_cert:?})", est.sni);
                (*est.stream, what)
            }
        };
        let ClientStream::Records(records) = stream else {
            return Err(ProxyError::internal("start_tls: the kernel took the record layer"));
        };
        self.upstream = Upstream::Tls(Box::new(records));
        self.shown.set_state("tls");
        Ok(what)
    }

    /// close_notify both ways, then the raw socket again.
    async fn stop_tls(&mut self, timeout: Duration, buf: &mut [u8]) -> Result<String, ProxyError> {
        let (app, far) = (self.app, self.far);
        let Upstream::Tls(records) = &mut self.upstream else {
            return Err(ProxyError::internal("stop_tls on a plain connection"));
        };
        records
            .send_close_notify()
            .await
            .map_err(|e| err(far, format!("stop_tls: sending close_notify: {e}")))?;
        // What the upstream still sends before its close_notify is the application's.
        let drained = async {
            loop {
                let n = records.read(buf).await.map_err(|e| err(far, format!("stop_tls: {e}")))?;
                if n == 0 {
                    return Ok::<_, ProxyError>(());
                }
                self.client.write_all(&buf[..n]).await.map_err(|e| err(app, format!("write: {e}")))?;
                self.received += n as u64;
            }
        };
        tokio::time::timeout(timeout, drained).await.map_err(|_| {
            err(far, format!("stop_tls: no close_notify from the far side within {timeout:?}"))
        })??;
        let Upstream::Tls(records) = std::mem::replace(&mut self.upstream, Upstream::Gone) else {
            return Err(ProxyError::internal("stop_tls on a plain connection"));
        };
        let RawParts { tcp, read_ahead } = records
            .into_raw_parts()
            .map_err(|_| err(far, "stop_tls: the far side's TLS did not end cleanly"))?;
        if !read_ahead.is_empty() {
            self.client.write_all(&read_ahead).await.map_err(|e| err(app, format!("write: {e}")))?;
            self.received += read_ahead.len() as u64;
        }
        self.upstream = Upstream::Clear(tcp);
        self.entry.set_facts(None);
        self.shown.set_state("clear");
        self.shown.set_session(None);
        Ok("TLS stopped, in the clear again".into())
    }
}

/// What a `start_tls` asks for beyond the listener's defaults.
struct Options<'a> {
    sni: Option<&'a str>,
    alpn: &'a [String],
    client_cert: Option<&'a str>,
}

fn err(side: Side, context: impl Into<String>) -> ProxyError {
    ProxyError { side, context: context.into() }
}

#[cfg(test)]
#[path = "directed_tests.rs"]
mod tests;

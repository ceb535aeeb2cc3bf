use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tlsgate_config::{Config, OriginateListener};
use tlsgate_core::side::Side;
use tlsgate_telemetry::metrics::{metrics, UpstreamLabels};
use tlsgate_tls::describe::{self, Peer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::transparent::Transparent;
use crate::backend::connect_one;
use crate::error::listener_label;
use crate::relay::relay;
use crate::starttls;
use crate::ProxyError;

struct Listener {
    name: String,
    config: OriginateListener,
    connector: TlsConnector,
    /// The name SMTP's EHLO gives, when the listener speaks STARTTLS.
    starttls_host: String,
}

/// Every originate listener of the process.
pub struct Originator {
    accepts: Vec<(SocketAddr, JoinHandle<()>)>,
    tracker: TaskTracker,
}

impl std::fmt::Debug for Originator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Originator").field("listeners", &self.local_addrs()).finish()
    }
}

impl Originator {
    /// Loads every listener's TLS material and binds its socket; fails as a whole.
    pub async fn start(config: &Config) -> Result<Originator, ProxyError> {
        let section = config
            .originate
            .as_ref()
            .ok_or_else(|| ProxyError::config("the config has no [originate] section"))?;
        let mut ready = Vec::new();
        for l in &section.listener {
            let name = l.display_name();
            let label = listener_label(&name, l.listen);
            let tls =
                tlsgate_tls::client::client_config(l.into(), config.security.allow_insecure_key_permissions)
                    .map_err(|e| ProxyError::config(format!("{label}: {e}")))?;
            let socket = TcpListener::bind(l.listen).await.map_err(|e| ProxyError::bind(&label, &e))?;
            let starttls_host = l.starttls_host.clone().unwrap_or_else(starttls::local_host_name);
            let connector = TlsConnector::from(tls);
            ready.push((socket, Arc::new(Listener { name, config: l.clone(), connector, starttls_host })));
        }
        let mut transparent = Vec::new();
        for t in &section.transparent {
            let name = t.display_name();
            let label = format!("transparent {}", listener_label(&name, t.listen));
            let fail = |e: String| ProxyError::config(format!("{label}: {e}"));
            let tls =
                tlsgate_tls::client::client_config(t.into(), config.security.allow_insecure_key_permissions)
                    .map_err(|e| fail(e.to_string()))?;
            let policy = t.policy().map_err(fail)?;
            let socket = TcpListener::bind(t.listen).await.map_err(|e| ProxyError::bind(&label, &e))?;
            let state = Transparent {
                name: name.clone(),
                config: t.clone(),
                policy,
                connector: TlsConnector::from(tls),
            };
            transparent.push((socket, Arc::new(state)));
        }
        let tracker = TaskTracker::new();
        let mut accepts = Vec::new();
        for (socket, l) in ready {
            let local = socket.local_addr().map_err(|e| ProxyError::internal(e.to_string()))?;
            accepts.push((local, tokio::spawn(accept_loop(socket, l, tracker.clone()))));
        }
        for (socket, t) in transparent {
            let local = socket.local_addr().map_err(|e| ProxyError::internal(e.to_string()))?;
            accepts.push((local, tokio::spawn(super::transparent::accept_loop(socket, t, tracker.clone()))));
        }
        Ok(Originator { accepts, tracker })
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.accepts.iter().map(|(a, _)| *a).collect()
    }

    /// Stops accepting, then lets open connections finish for at most `drain`.
    pub async fn shutdown(self, drain: Duration) {
        for (_, task) in self.accepts {
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

async fn accept_loop(socket: TcpListener, l: Arc<Listener>, tracker: TaskTracker) {
    let addr = socket.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(listener = %l.name, %addr, "originate listening");
    loop {
        match socket.accept().await {
            Ok((tcp, peer)) => {
                let span = tracing::info_span!("conn", listener = %l.name, client = %peer);
                tracker.spawn(handle(tcp, l.clone()).instrument(span));
            }
            Err(e) => {
                tracing::error!(side = %Side::Internal, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(mut client: TcpStream, l: Arc<Listener>) {
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
        let prepared = tokio::time::timeout(
            l.config.handshake_timeout,
            after_starttls(&mut client, &mut upstream, protocol, &greeting),
        )
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
    match relay(client, upstream, &(), None).await {
        Ok(t) => tracing::info!(
            upstream = %name, up = t.up, down = t.down, duration = ?started.elapsed(), "connection closed"
        ),
        Err((e, t)) => tracing::warn!(
            upstream = %name, side = %e.side, error = %e.context, up = t.up, down = t.down,
            duration = ?started.elapsed(), "connection aborted"
        ),
    }
}

/// Once the upstream's TLS is up: the plaintext client gets the upstream's greeting; a PostgreSQL
/// client's own SSLRequest is answered here, and its startup message is sent on.
async fn after_starttls(
    client: &mut TcpStream,
    upstream: &mut TlsStream<TcpStream>,
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
async fn connect_upstream(l: &Listener) -> Result<(TlsStream<TcpStream>, String, Vec<u8>), ProxyError> {
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
            let tls = l.connector.connect(server_name, tcp).await.map_err(|e| {
                format!("TLS handshake failed: {} (SNI {sni})", describe::io_error(&e, Peer::Server))
            })?;
            Ok::<_, String>((tls, greeting))
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
            Ok((tls, greeting)) => {
                let conn = tls.get_ref().1;
                let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                let version = conn.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
                let suite =
                    conn.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default();
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

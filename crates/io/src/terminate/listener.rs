//! One terminate listener: its socket, TLS material and routes, and the life of each connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tlsgate_config::{ListenerConfig, SecurityConfig};
use tlsgate_core::side::Side;
use tlsgate_tls::server::{listener_tls, ListenerTls};
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use super::handshake;
use super::routes::Routes;
use crate::relay::relay;
use crate::ProxyError;

/// What every connection of a listener shares.
#[derive(Debug)]
struct Shared {
    name: String,
    tls: ListenerTls,
    routes: Routes,
    handshake_timeout: Duration,
}

#[derive(Debug)]
pub struct Listener {
    socket: TcpListener,
    shared: Arc<Shared>,
}

impl Listener {
    /// Loads the listener's certificates and binds its socket; any problem is reported here,
    /// before the first client arrives.
    pub async fn bind(
        config: &ListenerConfig,
        security: &SecurityConfig,
    ) -> Result<Self, ProxyError> {
        let name = config.display_name();
        let tls = listener_tls(config, security.allow_insecure_key_permissions)
            .map_err(|e| ProxyError::internal(format!("listener {name}: {e}")))?;
        let routes = Routes::from_config(config)
            .map_err(|e| ProxyError::internal(format!("listener {name}: {e}")))?;
        let socket = TcpListener::bind(config.listen).await.map_err(|e| {
            ProxyError::internal(format!("listener {name}: bind {}: {e}", config.listen))
        })?;
        let shared = Shared {
            name,
            tls,
            routes,
            handshake_timeout: config.handshake_timeout,
        };
        Ok(Listener {
            socket,
            shared: Arc::new(shared),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .expect("bound socket has an address")
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub async fn serve(self) {
        tracing::info!(listener = %self.shared.name, addr = %self.local_addr(), "listening");
        loop {
            match self.socket.accept().await {
                Ok((tcp, peer)) => {
                    let shared = self.shared.clone();
                    let span = tracing::info_span!("conn", listener = %shared.name, client = %peer);
                    tokio::spawn(handle(tcp, shared).instrument(span));
                }
                Err(e) => {
                    // Out of descriptors or memory: back off instead of spinning on accept.
                    tracing::error!(side = %Side::Internal, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn handle(tcp: TcpStream, shared: Arc<Shared>) {
    let started = Instant::now();
    let _ = tcp.set_nodelay(true);
    let accepted = tokio::time::timeout(
        shared.handshake_timeout,
        handshake::accept(tcp, &shared.tls, &shared.routes),
    )
    .await;
    let est = match accepted {
        Ok(Ok(est)) => est,
        Ok(Err(e)) => {
            tracing::warn!(side = %e.side, error = %e.context, "handshake failed, connection closed");
            return;
        }
        Err(_) => {
            tracing::warn!(
                side = %Side::Client,
                timeout = ?shared.handshake_timeout,
                "handshake timed out, connection closed"
            );
            return;
        }
    };
    let (version, suite, alpn) = est.describe();
    let sni = est.sni.as_deref().unwrap_or("");
    let client_cert = est.peer.as_ref().map(|p| p.summary()).unwrap_or_default();
    tracing::info!(%sni, %version, %suite, %alpn, %client_cert, route = %est.route.label, "handshake done");

    let (backend, member) = match est.route.pool.connect().await {
        Ok(ok) => ok,
        Err(e) => {
            tracing::warn!(side = %e.side, error = %e.context, "no backend, client connection closed");
            return;
        }
    };
    let member = member.to_string();
    match relay(est.stream, backend).await {
        Ok(t) => tracing::info!(
            backend = %member, up = t.up, down = t.down, duration = ?started.elapsed(),
            "connection closed"
        ),
        Err((e, t)) => tracing::warn!(
            backend = %member, side = %e.side, error = %e.context, up = t.up, down = t.down,
            duration = ?started.elapsed(), "connection aborted"
        ),
    }
}

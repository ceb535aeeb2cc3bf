//! One terminate listener: its TLS material and routes (swappable on reload), its accept loop,
//! and the life of each connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tlsgate_config::{ListenerConfig, SecurityConfig};
use tlsgate_core::side::Side;
use tlsgate_tls::server::{listener_tls, ListenerTls};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::handshake;
use super::routes::Routes;
use crate::relay::relay;
use crate::ProxyError;

/// What the connections of a listener share. A reload builds a new one and swaps it in; a
/// connection keeps the one it started with, so reloads never disturb open connections.
#[derive(Debug)]
pub struct ListenerState {
    pub name: String,
    tls: ListenerTls,
    routes: Routes,
    handshake_timeout: Duration,
}

impl ListenerState {
    /// Loads the listener's certificates, keys, CAs and CRLs; any problem is reported here.
    pub fn build(config: &ListenerConfig, security: &SecurityConfig) -> Result<Self, ProxyError> {
        let name = config.display_name();
        let tls = listener_tls(config, security.allow_insecure_key_permissions)
            .map_err(|e| ProxyError::internal(format!("listener {name}: {e}")))?;
        let routes =
            Routes::from_config(config).map_err(|e| ProxyError::internal(format!("listener {name}: {e}")))?;
        Ok(ListenerState { name, tls, routes, handshake_timeout: config.handshake_timeout })
    }
}

/// Accepts until the task is aborted; every connection runs on `tracker` so shutdown can drain.
pub async fn accept_loop(socket: TcpListener, state: Arc<ArcSwap<ListenerState>>, tracker: TaskTracker) {
    let addr = socket.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(listener = %state.load().name, %addr, "listening");
    loop {
        match socket.accept().await {
            Ok((tcp, peer)) => {
                let current = state.load_full();
                let span = tracing::info_span!("conn", listener = %current.name, client = %peer);
                tracker.spawn(handle(tcp, current).instrument(span));
            }
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning on accept.
                tracing::error!(side = %Side::Internal, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(tcp: TcpStream, state: Arc<ListenerState>) {
    let client_ip = tcp.peer_addr().map(|a| a.ip()).unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let started = Instant::now();
    let _ = tcp.set_nodelay(true);
    let accepted =
        tokio::time::timeout(state.handshake_timeout, handshake::accept(tcp, &state.tls, &state.routes))
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
                timeout = ?state.handshake_timeout,
                "handshake timed out, connection closed"
            );
            return;
        }
    };
    let (version, suite, alpn) = est.describe();
    let sni = est.sni.as_deref().unwrap_or("");
    let client_cert = est.peer.as_ref().map(|p| p.summary()).unwrap_or_default();
    tracing::info!(%sni, %version, %suite, %alpn, %client_cert, route = %est.route.label, "handshake done");

    let (backend, lease) = match est.route.pool.connect(client_ip).await {
        Ok(ok) => ok,
        Err(e) => {
            tracing::warn!(side = %e.side, error = %e.context, "no backend, client connection closed");
            return;
        }
    };
    let member = lease.member().addr.to_string();
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

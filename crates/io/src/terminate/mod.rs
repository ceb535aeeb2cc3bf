//! `tlsgate terminate`: TLS listeners in front of plaintext backend pools.
//!
//! - [`routes`]: which pool a handshake's SNI selects;
//! - [`handshake`]: reading the ClientHello, refusing unknown names, finishing the handshake;
//! - [`listener`]: the accept loop and the life of one connection.

pub mod handshake;
pub mod listener;
pub mod routes;

use std::net::SocketAddr;

use tlsgate_config::{Config, ConfigError};

pub use listener::Listener;

/// Binds every listener of `[terminate]` (so that a bad address fails at start, not later) and
/// returns them ready to serve.
pub async fn bind_all(config: &Config) -> Result<Vec<Listener>, crate::ProxyError> {
    let terminate = config.terminate.as_ref().ok_or_else(|| {
        crate::ProxyError::internal(
            ConfigError::invalid("config", "no [terminate] section").to_string(),
        )
    })?;
    let mut listeners = Vec::new();
    for l in &terminate.listener {
        listeners.push(Listener::bind(l, &config.security).await?);
    }
    Ok(listeners)
}

/// Serves every listener until the process ends.
pub async fn serve_all(listeners: Vec<Listener>) {
    let mut tasks = tokio::task::JoinSet::new();
    for l in listeners {
        tasks.spawn(l.serve());
    }
    while tasks.join_next().await.is_some() {}
}

/// Addresses actually bound (port 0 resolved), in config order.
pub fn local_addrs(listeners: &[Listener]) -> Vec<SocketAddr> {
    listeners.iter().map(|l| l.local_addr()).collect()
}

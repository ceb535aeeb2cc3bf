//! The tunnel's I/O shells around the sans-IO `tlsgate-tunnel` endpoint.
//!
//! - [`driver`]: one task per tunnel connection owning the `Endpoint`, the TLS stream and the
//!   map from sessions to local sockets; everything else talks to it through a [`Handle`];
//! - [`pump`]: the per-session socket tasks, with the credit that bounds their memory;
//! - [`gate`]: accepts portals (TLS 1.3, client certificates), applies policy, connects out,
//!   runs reverse-forward listeners;
//! - [`portal`]: keeps the connection to the gate (through a proxy if configured, reconnecting
//!   with backoff) and serves SOCKS5, forwards and the DNS forwarder;
//! - [`resolve`]: the gate's name resolution (system, or a configured DNS server).

pub(crate) mod connect;
pub mod driver;
pub mod gate;
pub(crate) mod own_addrs;
mod pool;
pub mod portal;
mod pump;
pub mod resolve;
mod socks;
mod udp;

pub use driver::{Handle, OpenFailure};

/// The portal's live tunnel as local services see it: a new session waits for it while it is
/// (re)connecting, up to `session_wait` (which a reload may change), rather than being refused
/// at once.
#[derive(Clone)]
pub(crate) struct TunnelWait {
    rx: tokio::sync::watch::Receiver<Option<Handle>>,
    wait_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl TunnelWait {
    pub(crate) fn new(
        rx: tokio::sync::watch::Receiver<Option<Handle>>,
        wait_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        TunnelWait { rx, wait_ms }
    }

    /// A handle to a live tunnel, or None once `session_wait` passed without one.
    pub(crate) async fn handle(&self) -> Option<Handle> {
        let live = |h: &Option<Handle>| h.as_ref().is_some_and(|h| !h.is_closed());
        if let Some(h) = self.rx.borrow().clone().filter(|h| !h.is_closed()) {
            return Some(h);
        }
        let wait = std::time::Duration::from_millis(self.wait_ms.load(std::sync::atomic::Ordering::Relaxed));
        let mut rx = self.rx.clone();
        let found = match tokio::time::timeout(wait, rx.wait_for(live)).await {
            Ok(Ok(h)) => h.clone(),
            _ => None,
        };
        found
    }
}

/// The destination name a portal's DNS forwarder sends to: `.invalid` never resolves (RFC 2606),
/// so it cannot collide with a real host; the gate maps it to its configured resolver.
pub const DNS_TARGET_NAME: &str = "dns.tunnel.invalid";

/// The endpoint's settings from the config's limits.
fn endpoint_config(role: tlsgate_tunnel::Role, l: &tlsgate_config::TunnelLimits) -> tlsgate_tunnel::Config {
    let mut c = tlsgate_tunnel::Config::new(role);
    c.max_sessions = l.max_sessions;
    c.recv_window = l.session_window;
    // A Send record of this much data fills one TLS record (16 KiB of plaintext) exactly.
    c.max_data_chunk = tlsgate_record::frame::MAX_PLAINTEXT - tlsgate_tunnel::wire::HEADER_LEN;
    c.send_buffer = l.session_buffer;
    c.keepalive_interval = l.keepalive;
    c.idle_timeout = l.idle_timeout;
    c.session_idle_timeout = l.session_idle_timeout;
    c
}

/// Lists a session on the status page until the returned guard drops: `requested` is what the
/// opener asked for (shown as SNI), `backend` where it went.
fn list_session(
    listener: &str,
    client: std::net::SocketAddr,
    requested: &tlsgate_tunnel::Target,
    backend: String,
    identity: String,
) -> tlsgate_telemetry::conns::Listed {
    tlsgate_telemetry::conns::live().insert(tlsgate_telemetry::conns::ConnInfo {
        listener: listener.into(),
        client,
        sni: requested.to_string(),
        version: String::new(),
        suite: String::new(),
        identity,
        record_layer: String::new(),
        backend: std::sync::Mutex::new(backend),
        state: Default::default(),
        started: std::time::Instant::now(),
        up: Default::default(),
        down: Default::default(),
    })
}

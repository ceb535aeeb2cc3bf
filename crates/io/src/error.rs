use std::net::SocketAddr;

use tlsgate_core::os_error::os_error;
use tlsgate_core::side::Side;

/// A failure on one proxied connection, with the side that caused it.
#[derive(Debug, thiserror::Error)]
#[error("{side}: {context}")]
pub struct ProxyError {
    pub side: Side,
    pub context: String,
}

impl ProxyError {
    pub fn client(context: impl Into<String>) -> Self {
        Self { side: Side::Client, context: context.into() }
    }
    pub fn backend(context: impl Into<String>) -> Self {
        Self { side: Side::Backend, context: context.into() }
    }
    pub fn config(context: impl Into<String>) -> Self {
        Self { side: Side::Config, context: context.into() }
    }
    pub fn internal(context: impl Into<String>) -> Self {
        Self { side: Side::Internal, context: context.into() }
    }

    /// A socket `what` (e.g. [`listener_label`]) cannot listen on: `listener 127.0.0.1:8443:
    /// address already in use`. The operator chose the address, so it is theirs to fix.
    pub fn bind(what: &str, e: &std::io::Error) -> Self {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => " (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
            std::io::ErrorKind::AddrNotAvailable => " (no interface of this host has that address)",
            _ => "",
        };
        Self::config(format!("{what}: {}{hint}", os_error(e)))
    }
}

/// A listener as errors name it: `listener 127.0.0.1:8443`, or `listener web (127.0.0.1:8443)`
/// when its name (`display_name`) is not just its address.
pub fn listener_label(name: &str, addr: SocketAddr) -> String {
    if name == addr.to_string() {
        format!("listener {addr}")
    } else {
        format!("listener {name} ({addr})")
    }
}

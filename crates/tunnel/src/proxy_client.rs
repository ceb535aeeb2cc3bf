//! The portal reaching the gate through a proxy: the client side of an HTTP CONNECT or a SOCKS5
//! prologue, run over the raw TCP stream before TLS starts.
//!
//! Both have the same shape: `new` queues the first bytes; feed the proxy's bytes to
//! `handle_input` and send `take_output` until it returns [`ClientProgress::Established`];
//! then `take_leftover` holds bytes that arrived after the proxy's answer (the start of the
//! gate's TLS stream) and must be given to TLS first.

mod http;
mod socks5;

pub use http::HttpConnectClient;
pub use socks5::Socks5Client;

/// Largest proxy answer buffered (HTTP response head; SOCKS replies are far smaller).
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientProgress {
    NeedMore,
    /// The tunnel to the gate is open. `bound` is the SOCKS5 BND address (None for HTTP).
    Established {
        bound: Option<crate::Target>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("proxy refused CONNECT: {status} {reason}")]
    HttpStatus { status: u16, reason: String },
    #[error("malformed proxy response: {0}")]
    Malformed(&'static str),
    #[error("proxy response head longer than {MAX_RESPONSE_HEAD} bytes")]
    TooLong,
    #[error("SOCKS5 proxy accepts none of our authentication methods")]
    NoAcceptableMethod,
    #[error("SOCKS5 proxy rejected our credentials")]
    AuthRejected,
    #[error("SOCKS5 proxy refused the connection (reply {0})")]
    SocksReply(u8),
    #[error("call not valid in this state")]
    WrongState,
}

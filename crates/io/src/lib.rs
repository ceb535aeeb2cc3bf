//! tlsgate's I/O shells: tokio sockets around the sans-IO logic in `tlsgate-core` and the rustls
//! setup in `tlsgate-tls`.
//!
//! - [`terminate`]: TLS listeners that relay plaintext to backend pools;
//! - [`backend`]: connecting to a pool member, with timeout and retry;
//! - [`relay`]: the bidirectional byte pump with half-close;
//! - [`http_backend`]: a small plaintext HTTP server, the demo's backend and a test peer.

pub mod backend;
pub mod counted;
pub mod error;
pub mod http_backend;
pub mod originate;
pub mod proxy_header;
pub mod relay;
pub mod terminate;

pub use error::ProxyError;

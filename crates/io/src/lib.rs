//! tlsgate's I/O shells: tokio sockets around the sans-IO logic in `tlsgate-core` and the rustls
//! setup in `tlsgate-tls`.
//!
//! - [`terminate`]: TLS listeners that relay plaintext to backend pools;
//! - [`originate`]: plaintext listeners whose connections leave as TLS, and transparent policy;
//! - [`inline`]: the inline engine between two interfaces over AF_PACKET rings;
//! - [`tunnel`]: the portal and gate around the sans-IO tunnel endpoint;
//! - [`connect`]: the HTTPS-proxy gate and the browser-facing portal, with the downgrade;
//! - [`control`]: the control socket where applications direct tlsgate about their connections;
//! - [`directed`]: a connection whose application starts and stops TLS by directives;
//! - [`backend`]: backend pools: balancing, connecting with timeout and retry, health checks;
//! - [`relay`]: the bidirectional byte pump with half-close and idle timeout;
//! - [`starttls`]: STARTTLS prologues before the handshake, both directions;
//! - [`counted`]: byte counting for streams that do not go through the relay;
//! - [`proxy_header`]: the PROXY protocol on sockets;
//! - [`ktls`]: kernel TLS offload of a terminated connection's record layer, and its
//!   zero-copy relay;
//! - [`record_stream`]: a terminated connection after its handshake, records sealed and opened
//!   by tlsgate's own record layer, no buffer held while idle;
//! - [`http_backend`]: a small plaintext HTTP server, the demo's backend and a test peer.

pub mod acme;
pub mod backend;
pub mod connect;
pub mod control;
pub mod counted;
pub mod directed;
mod directed_status;
pub mod error;
pub mod fleet;
pub mod http_backend;
pub mod inline;
pub mod ktls;
pub mod ocsp_fetch;
pub mod originate;
pub mod proxy_header;
pub mod record_stream;
pub mod relay;
mod relay_wakers;
mod revoked;
pub mod starttls;
pub mod terminate;
pub mod tunnel;

pub use error::ProxyError;

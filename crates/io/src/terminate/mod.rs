//! `tlsgate terminate`: TLS listeners in front of plaintext backend pools.
//!
//! - [`server`]: every listener of the process; reload and graceful shutdown;
//! - [`listener`]: a listener's swappable state, its accept loop, the life of one connection;
//! - [`handshake`]: reading the ClientHello, refusing unknown names, finishing the handshake;
//! - [`plain_http`]: answering a plain HTTP request sent to a TLS port;
//! - [`routes`]: which pool a handshake's SNI and negotiated ALPN select;
//! - [`http_headers`]: HTTP header mode (`X-Forwarded-*`, client-certificate headers);
//! - [`watch`]: noticing changed certificate, key, CA and CRL files.

pub mod handshake;
pub mod http_headers;
pub mod listener;
pub mod plain_http;
pub mod routes;
pub mod server;
pub mod watch;

pub use server::Server;

//! The tunnel between a portal and a gate, free of I/O (docs/tunnel-protocol.md).
//!
//! One mutually authenticated TLS byte stream carries many TCP and UDP sessions. This crate holds
//! the logic only; the tokio shells own sockets, TLS and the clock.
//!
//! - [`wire`]: frame header and records, encoder and incremental decoder.
//! - [`session`]: one session's states and its Ack-based send/receive windows.
//! - [`endpoint`]: the multiplexer over one byte stream, shared by portal and gate.
//! - [`policy`]: which destinations a portal identity may open (gate side).
//! - [`socks5`]: the portal's SOCKS5 server prologue and the UDP request header.
//! - [`proxy_client`]: reaching the gate through an HTTP CONNECT or SOCKS5 proxy.
//!
//! The protocol is specified in `docs/tunnel-protocol.md`.

pub mod addr;
pub mod endpoint;
#[doc(hidden)]
pub mod fuzzing;
pub mod policy;
pub mod proxy_client;
pub mod session;
pub mod socks5;
pub mod wire;

pub use addr::{Host, Target};
pub use endpoint::{Config, ConnectionError, Endpoint, Event, Role};
pub use session::{Datagram, SessionError, SessionId, State};

//! `tlsgate connect`: an HTTPS proxy whose tunnels can drop their outer TLS, sans-IO.
//!
//! - [`head`]: HTTP/1.1 request and response heads (CONNECT, the PAC request, the gate's
//!   answer) read from bytes cut anywhere, with size limits; the fuzz target drives it;
//! - [`downgrade`]: the opt-in and the order of the switch from the outer TLS to the raw TCP
//!   connection (docs/connect-protocol.md);
//! - [`policy`]: which portal identity may reach which destination (tunnel policy rules, so the
//!   special addresses and the re-check after resolving are the tunnel gate's);
//! - [`routes`]: the portal's host patterns, and the PAC file built from them.

pub mod downgrade;
pub mod head;
pub mod policy;
pub mod routes;

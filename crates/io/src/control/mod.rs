//! The control socket: applications direct tlsgate about their own connections
//! (docs/directives.md). The messages are `tlsgate-directive`'s; this is their I/O shell.
//!
//! - [`server`]: the Unix socket, its callers' credentials, one answer per request line;
//! - [`registry`]: the open connections an application may name, by its socket's addresses;
//! - [`sock_diag`]: who owns the application's socket, asked of the kernel (NETLINK_SOCK_DIAG).

pub mod registry;
pub mod server;
pub mod sock_diag;

pub use server::ControlServer;

//! STARTTLS prologues as sans-IO state machines: bytes in, bytes and decisions out, no sockets.
//!
//! Six protocols (SMTP, IMAP, POP3, FTP control channel, PostgreSQL, LDAP), both directions:
//!
//! - [`ServerSide`]: tlsgate is the TLS server in front of a plaintext backend. It answers the
//!   plaintext prologue itself (greeting, capabilities, "STARTTLS first" errors; nothing reaches
//!   the backend in plaintext) and says when to start the TLS handshake.
//! - [`GreetingSkip`]: once TLS is up on that side, the backend's own greeting is consumed, since
//!   the client already had tlsgate's.
//! - [`ClientSide`]: tlsgate accepts a plaintext client and speaks the client part of the prologue
//!   to a STARTTLS upstream, then hands the client the upstream's greeting
//!   ([`ClientSide::greeting_for_client`]). [`PostgresClientFilter`] answers a plaintext
//!   PostgreSQL client's own SSLRequest with `N`.
//!
//! Every machine is fed with `receive(&[u8])`; what it wants sent is in `take_output()`, which the
//! caller writes even when `receive` failed (a last error reply). [`Step`] says what comes next.
//! Bytes that arrive after the upgrade and before TLS (CVE-2011-0411) are an error on both sides.
//! docs/starttls.md describes each prologue.

mod ber;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod greeting;
mod lines;
mod postgres;
mod protocol;

pub mod client;
pub mod server;

pub use client::ClientSide;
pub use error::{Error, ErrorKind};
pub use greeting::GreetingSkip;
pub use postgres::PostgresClientFilter;
pub use protocol::Protocol;
pub use server::ServerSide;

/// What a prologue machine waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// More bytes from the peer.
    NeedInput,
    /// The upgrade was agreed: write the output, then start the TLS handshake. The peer must not
    /// have sent anything else in plaintext.
    StartTls,
    /// The prologue ended without TLS (QUIT, a plaintext PostgreSQL startup, another LDAP
    /// operation): write the output, then close.
    Close,
}

/// Commands refused before the upgrade after which the peer is cut off.
pub const MAX_BAD_COMMANDS: usize = 10;

#[cfg(test)]
mod tests;

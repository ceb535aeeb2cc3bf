//! Application directives, sans-IO: what an application says to tlsgate's control socket about
//! its own connection, and what tlsgate answers. One JSON object per line each way.
//!
//! - [`message`]: requests (`peer`, `start_tls`, `stop_tls`), their validation, and answers;
//! - [`lines`]: cutting the byte stream into lines of bounded length;
//! - [`fuzzing`]: the fuzz target's checks.
//!
//! The I/O (the Unix socket, the caller's credentials, finding the connection) is the control
//! server's in `tlsgate-io`; the C library (`libtlsgate`) encodes requests and decodes answers
//! with this crate.

pub mod fuzzing;
pub mod lines;
pub mod message;

pub use lines::Lines;
pub use message::{Answer, DirectiveError, PeerFacts, Request};

/// The longest line either way (a `peer` answer carries a certificate chain's leaf as PEM).
pub const MAX_LINE: usize = 64 * 1024;

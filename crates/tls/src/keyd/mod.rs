//! Keys held by `tlsgate keyd`, a separate process that signs over a Unix socket, so the process
//! facing the network never holds a private key (docs/keyd.md).
//!
//! - [`wire`]: the length-prefixed messages (sans-IO);
//! - [`store`]: keyd's keys and its answers;
//! - [`remote`]: terminate's rustls signing key that asks keyd.

pub mod remote;
pub mod store;
pub mod wire;

pub use wire::fuzz_check;

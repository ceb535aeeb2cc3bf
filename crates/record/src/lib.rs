//! The TLS record layer after the handshake, sans-IO, shared by the inline engine and terminate.
//!
//! - [`frame`]: the record framer over one direction's byte stream cut at any offset; it never
//!   copies a body.
//! - [`handshake`]: the rustls server handshake fed whole client records, up to the handover of
//!   its keys (the one place a rustls server connection is driven for terminate and inline).
//! - [`crypto`]: opening and sealing records with the traffic keys rustls extracted after the
//!   handshake (its `KernelConnection`), TLS 1.3 key updates followed both ways.
//! - [`session`]: the session after the handshake as one sans-IO state machine: every
//!   post-handshake rule (alerts, KeyUpdate, record limits, renegotiation, close_notify) and the
//!   alert that answers each violation, for every driver.
//! - [`offload`]: the key material a kernel TLS offload takes over.
//! - [`traffic`]: a server's own TLS 1.3 traffic secrets (captured through rustls's key log
//!   hook, verified against the extracted keys) for key updates without rustls's key schedule.
//! - [`stream`]: opening a record piece by piece as its segments arrive, the tag checked at its
//!   end (the inline engine's cut-through release).
//!
//! rustls runs the handshake; from then on the bytes on the wire are produced and consumed here,
//! which is what lets a caller hold no buffer while a connection is idle and process records in
//! place (and what a kernel TLS offload would take over).

pub mod crypto;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod offload;
pub mod session;
pub mod stream;
pub mod traffic;

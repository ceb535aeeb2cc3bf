//! A deterministic simulated network for testing the inline engine under loss, reordering,
//! duplication and delay.
//!
//! Two user-space TCP/IP hosts (smoltcp, driven with simulated time) sit on either side of a
//! [`Middlebox`] slot; every hop between them is an impaired [`link::Link`] whose randomness
//! comes from one seed, so a failing run replays exactly. Flows carry a known byte pattern each
//! way and both ends verify every byte ([`flow`]); [`run::simulate`] drives it all and returns a
//! [`run::Report`].
//!
//! The client speaks TLS through rustls. The server speaks TLS too when the middlebox is a plain
//! [`middlebox::PassThrough`] (a self-test of the harness), and plaintext when the middlebox
//! terminates TLS itself (the inline engine).

mod consistency;
pub mod flow;
pub mod host;
pub mod link;
pub mod middlebox;
pub mod pki;
pub mod run;

pub use link::Impairments;
pub use middlebox::{Middlebox, PassThrough, Side};
pub use pki::SimPki;
pub use run::{simulate, Report, SimConfig};

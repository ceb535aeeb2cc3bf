//! Protocol logic of tlsgate, free of I/O.
//!
//! Everything here takes bytes, names and time as arguments and returns decisions; the tokio shells
//! in `tlsgate-io` own the sockets. That keeps the logic testable without a network and fuzzable.

pub mod balance;
pub mod health;
pub mod identity;
pub mod names;
pub mod os_error;
pub mod policy;
pub mod proxy_protocol;
pub mod routing;
pub mod side;

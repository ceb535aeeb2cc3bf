//! Which side of a proxied connection an error came from.
//!
//! A gateway's log is read by operators who want to know whom to blame: the client, the backend,
//! the configuration they wrote, or tlsgate itself.

use std::fmt;

/// The party responsible for a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The peer that connected to tlsgate.
    Client,
    /// The server tlsgate connects to on the client's behalf.
    Backend,
    /// What the operator gave tlsgate: config file, flags, certificate and key files, addresses
    /// to listen on. Found at start or at a reload.
    Config,
    /// tlsgate itself: resources, bugs.
    Internal,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Backend => "backend",
            Side::Config => "config",
            Side::Internal => "internal",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

//! Which side of a proxied connection an error came from.
//!
//! A gateway's log is read by operators who want to know whom to blame: the client, the backend,
//! or tlsgate itself.

use std::fmt;

/// The party responsible for a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The peer that connected to tlsgate.
    Client,
    /// The server tlsgate connects to on the client's behalf.
    Backend,
    /// tlsgate itself: resources, bugs.
    Internal,
    /// The configuration or a file it names (certificate, key, CA, CRL): refused at start or
    /// reload, before any connection is involved.
    Config,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Backend => "backend",
            Side::Internal => "internal",
            Side::Config => "config",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

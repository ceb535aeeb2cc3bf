//! SOCKS5 (RFC 1928) with username/password (RFC 1929), parsed from bytes, never from a socket.
//!
//! [`Server`] is the portal's listener-side prologue: CONNECT and UDP ASSOCIATE, host names kept
//! unresolved so the gate resolves them. [`udp`] encodes and decodes the UDP request header. The
//! client side (portal reaching the gate through a SOCKS5 proxy) is in `proxy_client`.

mod addr;
mod server;
pub mod udp;

pub use server::{Command, Progress, Request, Server, ServerConfig};

pub(crate) use addr::{put_addr, read_addr, AddrError};

/// SOCKS protocol version byte.
pub const VERSION: u8 = 5;
/// Methods (RFC 1928 section 3).
pub const METHOD_NONE: u8 = 0x00;
pub const METHOD_USER_PASS: u8 = 0x02;
pub const METHOD_NO_ACCEPTABLE: u8 = 0xFF;

/// Reply field of a SOCKS5 reply (RFC 1928 section 6); an open newtype like the wire enums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply(pub u8);

impl Reply {
    pub const SUCCEEDED: Reply = Reply(0);
    pub const GENERAL_FAILURE: Reply = Reply(1);
    pub const NOT_ALLOWED: Reply = Reply(2);
    pub const NETWORK_UNREACHABLE: Reply = Reply(3);
    pub const HOST_UNREACHABLE: Reply = Reply(4);
    pub const CONNECTION_REFUSED: Reply = Reply(5);
    pub const TTL_EXPIRED: Reply = Reply(6);
    pub const COMMAND_NOT_SUPPORTED: Reply = Reply(7);
    pub const ADDRESS_TYPE_NOT_SUPPORTED: Reply = Reply(8);
}

impl From<crate::wire::OpenRc> for Reply {
    /// What a SOCKS client is told when the gate answers its Open.
    fn from(rc: crate::wire::OpenRc) -> Reply {
        use crate::wire::OpenRc;
        match rc {
            OpenRc::OK => Reply::SUCCEEDED,
            OpenRc::REFUSED_BY_POLICY => Reply::NOT_ALLOWED,
            OpenRc::NETWORK_UNREACHABLE => Reply::NETWORK_UNREACHABLE,
            OpenRc::HOST_UNREACHABLE | OpenRc::NAME_NOT_RESOLVED => Reply::HOST_UNREACHABLE,
            OpenRc::CONNECTION_REFUSED => Reply::CONNECTION_REFUSED,
            OpenRc::TIMED_OUT => Reply::TTL_EXPIRED,
            OpenRc::UNSUPPORTED => Reply::COMMAND_NOT_SUPPORTED,
            _ => Reply::GENERAL_FAILURE,
        }
    }
}

/// Why a SOCKS5 exchange failed. Where the protocol has a reply for it, the reply bytes were
/// queued in the output before the error was returned: flush them, then close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Socks5Error {
    #[error("not SOCKS5 (version byte {0})")]
    BadVersion(u8),
    #[error("no acceptable authentication method offered")]
    NoAcceptableMethod,
    #[error("bad username/password subnegotiation version {0}")]
    BadAuthVersion(u8),
    #[error("authentication failed")]
    AuthFailed,
    #[error("command {0} not supported")]
    CommandNotSupported(u8),
    #[error("address type {0} not supported")]
    AddressTypeNotSupported(u8),
    #[error("invalid host name")]
    BadHostName,
    #[error("reserved field not zero")]
    BadReserved,
    #[error("client sent more than the handshake allows before the reply")]
    TooMuchInput,
    #[error("call not valid in this state")]
    WrongState,
}

/// Compares secrets without an early exit on the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

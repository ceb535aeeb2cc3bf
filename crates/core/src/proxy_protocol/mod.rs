//! The PROXY protocol (HAProxy), versions 1 and 2: how a proxy tells the server behind it who
//! the client is, in a header sent before the client's own bytes.
//!
//! tlsgate sends it to backends (with TLS details as v2 TLVs, see [`tls`]) and can accept it
//! from a load balancer in front. Parsing is incremental: [`parse`] answers
//! [`ParseError::Incomplete`] until a whole header has arrived, and never panics on any input.
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.

pub mod tls;
mod v1;
mod v2;

use std::net::SocketAddr;

pub use v2::SIGNATURE as V2_SIGNATURE;

/// Which encoding to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// `PROXY` (relayed connection) or `LOCAL` (the proxy's own, e.g. a health check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Local,
    Proxy,
}

/// The connection's endpoints, when known and TCP over IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addresses {
    /// Unknown or not TCP/IP (v1 `UNKNOWN`, v2 `AF_UNSPEC` or a family tlsgate does not relay).
    Unspecified,
    Tcp {
        source: SocketAddr,
        destination: SocketAddr,
    },
}

/// A v2 type-length-value extension. The type is an open byte: unknown ones are kept as they came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlv {
    pub kind: TlvType,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TlvType(pub u8);

impl TlvType {
    pub const ALPN: TlvType = TlvType(0x01);
    pub const AUTHORITY: TlvType = TlvType(0x02);
    pub const CRC32C: TlvType = TlvType(0x03);
    pub const NOOP: TlvType = TlvType(0x04);
    pub const UNIQUE_ID: TlvType = TlvType(0x05);
    pub const SSL: TlvType = TlvType(0x20);
    pub const SSL_VERSION: TlvType = TlvType(0x21);
    pub const SSL_CN: TlvType = TlvType(0x22);
    pub const SSL_CIPHER: TlvType = TlvType(0x23);
    pub const SSL_SIG_ALG: TlvType = TlvType(0x24);
    pub const SSL_KEY_ALG: TlvType = TlvType(0x25);
    pub const NETNS: TlvType = TlvType(0x30);
    /// tlsgate's own, in the custom range 0xE0-0xEF: the client certificate's subject and SANs.
    /// 0xE7 because clouds already use 0xE0 (GCP), 0xEA (AWS) and 0xEE (Azure).
    pub const TLSGATE_CLIENT_CERT: TlvType = TlvType(0xE7);
}

/// A whole PROXY header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: Version,
    pub command: Command,
    pub addresses: Addresses,
    /// Always empty in v1.
    pub tlvs: Vec<Tlv>,
}

impl Header {
    /// A relayed TCP connection from `source` to `destination`.
    pub fn tcp(version: Version, source: SocketAddr, destination: SocketAddr, tlvs: Vec<Tlv>) -> Self {
        Header { version, command: Command::Proxy, addresses: Addresses::Tcp { source, destination }, tlvs }
    }

    /// The bytes to send. v1 cannot carry TLVs (they are left out); a v2 header whose TLVs would
    /// exceed the 16-bit length is an error.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        match self.version {
            Version::V1 => Ok(v1::encode(self)),
            Version::V2 => v2::encode(self),
        }
    }

    /// The relayed connection's source and destination: `None` for `LOCAL` (the spec says its
    /// addresses must be ignored: the connection is the proxy's own) and for unknown families.
    pub fn relayed(&self) -> Option<(SocketAddr, SocketAddr)> {
        match (self.command, self.addresses) {
            (Command::Proxy, Addresses::Tcp { source, destination }) => Some((source, destination)),
            _ => None,
        }
    }

    /// The value of the first TLV of `kind`.
    pub fn tlv(&self, kind: TlvType) -> Option<&[u8]> {
        self.tlvs.iter().find(|t| t.kind == kind).map(|t| t.value.as_slice())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    TooLong(usize),
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EncodeError::TooLong(n) => write!(f, "PROXY v2 header of {n} bytes exceeds 65535"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Why bytes are not (yet) a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// A prefix of a valid header: read more.
    Incomplete,
    /// Not a PROXY header, or a malformed one: close the connection.
    Invalid(String),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Incomplete => f.write_str("incomplete PROXY header"),
            ParseError::Invalid(why) => write!(f, "invalid PROXY header: {why}"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Largest v2 header accepted (signature and fixed part included). The protocol allows 64 KiB;
/// nothing real comes near 4 KiB, and a cap keeps a connection's memory bounded.
pub const MAX_V2_LEN: usize = 4096;

/// Parses a header at the start of `input`: the header and how many bytes it took.
pub fn parse(input: &[u8]) -> Result<(Header, usize), ParseError> {
    if input.is_empty() {
        return Err(ParseError::Incomplete);
    }
    let v2_prefix = input.len().min(V2_SIGNATURE.len());
    if input[..v2_prefix] == V2_SIGNATURE[..v2_prefix] {
        return v2::parse(input);
    }
    let v1_prefix = input.len().min(v1::PREFIX.len());
    if input[..v1_prefix] == v1::PREFIX[..v1_prefix] {
        return v1::parse(input);
    }
    Err(ParseError::Invalid("neither a v1 nor a v2 signature".into()))
}

#[cfg(test)]
mod tests;

/// The fuzz target's check, kept beside the parser: parsing arbitrary bytes never panics, a
/// header never claims more bytes than it was given, and a parsed header re-encodes to bytes that
/// parse to the same header.
pub fn fuzz_check(data: &[u8]) {
    if let Ok((header, used)) = parse(data) {
        assert!(used <= data.len());
        // v1 carries no TLVs; v2 re-encoding may normalise nothing else.
        let bytes = header.encode().expect("a parsed header fits the 16-bit length");
        let (again, again_used) = parse(&bytes).expect("re-encoded header parses");
        assert_eq!(again, header);
        assert_eq!(again_used, bytes.len());
    }
}

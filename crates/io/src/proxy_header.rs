//! The PROXY protocol on sockets: reading a load balancer's header before the TLS handshake, and
//! building the header tlsgate sends to a backend. The codec is `tlsgate_core::proxy_protocol`.

use std::net::SocketAddr;

use tlsgate_config::ProxyProtocol;
use tlsgate_core::proxy_protocol::tls::{tlvs, TlsInfo};
use tlsgate_core::proxy_protocol::{parse, Header, ParseError, Version, MAX_V2_LEN};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::ProxyError;

/// Reads a PROXY header (v1 or v2) off `tcp`. Returns it with the bytes read past it (the start
/// of the TLS handshake), which the caller must not lose.
pub async fn read(tcp: &mut TcpStream) -> Result<(Header, Vec<u8>), ProxyError> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        match parse(&buf) {
            Ok((header, used)) => return Ok((header, buf.split_off(used))),
            Err(ParseError::Incomplete) if buf.len() <= MAX_V2_LEN => {}
            Err(ParseError::Incomplete) => return Err(ProxyError::client("PROXY header too long")),
            Err(ParseError::Invalid(why)) => {
                return Err(ProxyError::client(format!("expected a PROXY header: {why}")))
            }
        }
        let n =
            tcp.read(&mut chunk).await.map_err(|e| ProxyError::client(format!("read PROXY header: {e}")))?;
        if n == 0 {
            return Err(ProxyError::client("closed before a complete PROXY header"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The client's address as the header tells it: only a `PROXY` command with TCP/IP addresses
/// tells one (a `LOCAL` header's addresses are ignored, as the spec requires).
pub fn source(header: &Header) -> Option<(SocketAddr, SocketAddr)> {
    header.relayed()
}

/// The header for a backend: `client` to `local` (the address the client reached), with the TLS
/// details as TLVs in v2.
pub fn outbound(
    version: ProxyProtocol,
    client: SocketAddr,
    local: SocketAddr,
    info: &TlsInfo,
) -> Result<Vec<u8>, ProxyError> {
    let header = match version {
        ProxyProtocol::V1 => Header::tcp(Version::V1, client, local, Vec::new()),
        ProxyProtocol::V2 => Header::tcp(Version::V2, client, local, tlvs(info)),
    };
    header.encode().map_err(|e| ProxyError::internal(e.to_string()))
}

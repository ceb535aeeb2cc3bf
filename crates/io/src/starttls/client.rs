//! Client side: tlsgate speaks the prologue to the upstream before the TLS handshake; for
//! PostgreSQL it also answers the plaintext client's own SSLRequest.

use tlsgate_starttls::{ClientSide, PostgresClientFilter, Protocol, Step};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::READ;
use crate::ProxyError;

/// Runs the prologue on `upstream` until it agreed to TLS; returns what the plaintext client
/// must be sent first (the upstream's greeting). Errors name the upstream's failure in words.
pub async fn prologue(upstream: &mut TcpStream, protocol: Protocol, name: &str) -> Result<Vec<u8>, String> {
    let mut client = ClientSide::new(protocol, name);
    let mut buf = [0u8; READ];
    loop {
        let out = client.take_output();
        if !out.is_empty() {
            upstream.write_all(&out).await.map_err(|e| format!("{protocol} prologue: write: {e}"))?;
        }
        if client.state() == Step::StartTls {
            return Ok(client.greeting_for_client().to_vec());
        }
        let n = upstream.read(&mut buf).await.map_err(|e| format!("{protocol} prologue: read: {e}"))?;
        if n == 0 {
            return Err(format!("{protocol} prologue: closed the connection"));
        }
        client.receive(&buf[..n]).map_err(|e| format!("{protocol} prologue: {e}"))?;
    }
}

/// Reads the plaintext PostgreSQL client's first bytes, answering its SSLRequest or
/// GSSENCRequest with `N` (its leg is plaintext by design); returns the bytes to forward, from
/// its StartupMessage on.
pub async fn postgres_first_bytes(client: &mut TcpStream) -> Result<Vec<u8>, ProxyError> {
    let mut filter = PostgresClientFilter::new();
    let mut buf = [0u8; READ];
    loop {
        let n = client.read(&mut buf).await.map_err(|e| ProxyError::client(format!("read: {e}")))?;
        if n == 0 {
            return Err(ProxyError::client("closed the connection before its startup message"));
        }
        let result = filter.receive(&buf[..n]);
        let reply = filter.take_reply();
        if !reply.is_empty() {
            client.write_all(&reply).await.map_err(|e| ProxyError::client(format!("write: {e}")))?;
        }
        match result.map_err(|e| ProxyError { side: e.side, context: format!("postgres: {e}") })? {
            Some(forward) => return Ok(forward),
            None => continue,
        }
    }
}

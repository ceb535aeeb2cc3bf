//! Server side: tlsgate answers the client's plaintext prologue before the TLS handshake, and
//! swallows the plaintext backend's greeting after it.

use std::time::Duration;
use tlsgate_starttls::{GreetingSkip, Protocol, ServerSide, Step};

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::READ;
use crate::ProxyError;

/// How a prologue ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prologue {
    /// The client asked for TLS and sent nothing else: the handshake comes next.
    StartTls,
    /// The client quit, or opened a session without TLS and was refused: close.
    Closed,
}

/// Runs the prologue on `tcp`; `initial` holds bytes already read (after a PROXY header). Every
/// answer is written before an error is returned, so a refused client sees why.
pub async fn prologue(
    tcp: &mut TcpStream,
    initial: Vec<u8>,
    protocol: Protocol,
    host: &str,
) -> Result<Prologue, ProxyError> {
    let mut server = ServerSide::new(protocol, host);
    let mut pending = initial;
    let mut buf = [0u8; READ];
    loop {
        let result = server.receive(&pending);
        let out = server.take_output();
        if !out.is_empty() {
            tcp.write_all(&out)
                .await
                .map_err(|e| ProxyError::client(format!("{protocol} prologue: write: {e}")))?;
        }
        result.map_err(|e| ProxyError { side: e.side, context: format!("{protocol} prologue: {e}") })?;
        match server.state() {
            Step::StartTls => return Ok(Prologue::StartTls),
            Step::Close => {
                let _ = tcp.shutdown().await;
                return Ok(Prologue::Closed);
            }
            Step::NeedInput => {}
        }
        let n = tcp
            .read(&mut buf)
            .await
            .map_err(|e| ProxyError::client(format!("{protocol} prologue: read: {e}")))?;
        if n == 0 {
            return Err(ProxyError::client(format!("closed the connection during the {protocol} prologue")));
        }
        pending = buf[..n].to_vec();
    }
}

/// After the handshake and the backend connect: swallows the backend's greeting within `timeout`
/// (the client already had tlsgate's, and must not see two) and sends the client whatever came
/// after it in the same read. Returns how many bytes that was.
pub async fn join_backend<C: AsyncWrite + Unpin>(
    backend: &mut TcpStream,
    client: &mut C,
    protocol: Protocol,
    timeout: Duration,
) -> Result<u64, ProxyError> {
    let after = tokio::time::timeout(timeout, skip_greeting(backend, protocol))
        .await
        .map_err(|_| ProxyError::backend(format!("no {protocol} greeting within {timeout:?}")))??;
    if !after.is_empty() {
        let written = async {
            client.write_all(&after).await?;
            client.flush().await
        };
        written.await.map_err(|e| ProxyError::client(format!("write: {e}")))?;
    }
    Ok(after.len() as u64)
}

/// Reads the backend's greeting and drops it; returns the bytes that came after it in the same
/// read, which belong to the session.
async fn skip_greeting(backend: &mut TcpStream, protocol: Protocol) -> Result<Vec<u8>, ProxyError> {
    let mut skip = GreetingSkip::new(protocol);
    if skip.is_done() {
        return Ok(Vec::new());
    }
    let mut buf = [0u8; READ];
    loop {
        let n = backend
            .read(&mut buf)
            .await
            .map_err(|e| ProxyError::backend(format!("reading the {protocol} greeting: {e}")))?;
        if n == 0 {
            return Err(ProxyError::backend(format!("closed the connection before its {protocol} greeting")));
        }
        let used = skip
            .receive(&buf[..n])
            .map_err(|e| ProxyError { side: e.side, context: format!("{protocol} greeting: {e}") })?;
        if let Some(used) = used {
            return Ok(buf[used..n].to_vec());
        }
    }
}

//! A plain HTTP request sent to a TLS port (`http://` instead of `https://`).
//!
//! A TLS handshake starts with a record of type 22 (0x16); an HTTP request starts with a method
//! in capital letters. Such a client gets what nginx answers in the same case, a 400 that says
//! what happened, instead of a TLS alert its HTTP parser cannot read.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the log says about such a connection.
pub const LOGGED: &str = "plain HTTP request sent to TLS port (client should use https://)";

const BODY: &str =
    "400 Bad Request: the plain HTTP request was sent to an HTTPS port; use https:// instead.\n";

/// The methods of RFC 9110 and RFC 5789, and `PRI`, HTTP/2's prior-knowledge preface.
const METHODS: [&str; 10] =
    ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PRI"];

/// Whether `first` (the connection's first bytes) begins with an HTTP method and a space, or is
/// the start of one.
pub fn looks_like_request(first: &[u8]) -> bool {
    !first.is_empty()
        && METHODS.iter().any(|m| {
            let line = [m.as_bytes(), b" "].concat();
            let n = first.len().min(line.len());
            first[..n] == line[..n]
        })
}

/// Answers with the 400 and closes. The request is drained first (bounded in time and size):
/// closing with unread bytes makes the kernel send a reset, which can destroy the response
/// before the client reads it.
pub async fn answer(tcp: &mut TcpStream) {
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    if tcp.write_all(response.as_bytes()).await.is_err() || tcp.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut left = 64 * 1024usize;
        while left > 0 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

#[cfg(test)]
mod tests {
    use super::looks_like_request;

    #[test]
    fn requests_and_their_starts_are_recognised() {
        assert!(looks_like_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(looks_like_request(b"POST /echo HTTP/1.1\r\n"));
        assert!(looks_like_request(b"OPTIONS * HTTP/1.1\r\n"));
        assert!(looks_like_request(b"PRI * HTTP/2.0\r\n"));
        assert!(looks_like_request(b"DELE"));
    }

    #[test]
    fn tls_and_garbage_are_not_http() {
        assert!(!looks_like_request(&[0x16, 0x03, 0x01, 0x00, 0x10]));
        assert!(!looks_like_request(b"GETX / HTTP/1.1"));
        assert!(!looks_like_request(b"get / HTTP/1.1"));
        assert!(!looks_like_request(b"B\x00\x01garbage"));
        assert!(!looks_like_request(b""));
    }
}

//! HTTP-01 (RFC 8555 §8.3) on the optional plain port (`acme.http_port`): each connection sends
//! one request head, gets the answer `tlsgate_tls::acme_http` chose (the key authorization of a
//! token under validation, else 404) and is closed. Nothing else is served there.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tlsgate_tls::acme::Challenges;
use tlsgate_tls::acme_http;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A validation request arrives at once; a connection idle this long is closed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections answered at once; more wait in the kernel's accept queue.
const CONCURRENT: usize = 64;

/// Answers on `addr` until aborted.
pub async fn serve(addr: SocketAddr, challenges: Arc<Challenges>, listener: String) {
    let socket = match TcpListener::bind(addr).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%listener, %addr, error = %e, "ACME: cannot bind the HTTP-01 port; HTTP-01 validations will fail");
            return;
        }
    };
    tracing::info!(%listener, %addr, "ACME: answering HTTP-01 on the plain port");
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENT));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let (tcp, peer) = match socket.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%listener, error = %e, "ACME: HTTP-01 accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let challenges = challenges.clone();
        let listener = listener.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) =
                tokio::time::timeout(REQUEST_TIMEOUT, answer(tcp, &challenges, &listener, peer)).await
            {
                tracing::debug!(%listener, %peer, error = %e, "ACME: HTTP-01 client sent no request in time");
            }
        });
    }
}

async fn answer(mut tcp: TcpStream, challenges: &Challenges, listener: &str, peer: SocketAddr) {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !acme_http::complete(&head) {
        if head.len() > acme_http::MAX_HEAD {
            tracing::info!(%listener, %peer, "ACME: HTTP-01 request head too large, closed");
            return;
        }
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let answer = acme_http::answer(&head, |token| challenges.http_key_authorization(token));
    match &answer {
        acme_http::Answer::KeyAuthorization(_) => {
            tracing::info!(%listener, %peer, "ACME: answered an HTTP-01 validation request")
        }
        acme_http::Answer::BadRequest => {
            tracing::info!(%listener, %peer, "ACME: not an HTTP request on the HTTP-01 port, answered 400")
        }
        acme_http::Answer::NotFound => {}
    }
    let _ = tcp.write_all(&acme_http::response(&answer)).await;
    let _ = tcp.shutdown().await;
}

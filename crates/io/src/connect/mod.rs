//! `tlsgate connect`: the I/O shells of the HTTPS-proxy gate and the browser-facing portal
//! around `tlsgate-connect` (heads, downgrade, policy, routes).
//!
//! - [`gate`]: TLS with client certificates on tlsgate's record layer, one CONNECT per
//!   connection, authorised, connected, answered, then downgraded (or relayed nested);
//! - [`portal`]: the plain HTTP proxy and PAC file on the user's machine;
//! - [`outer_client`]: the portal's TLS client, stopped exactly at the gate's close_notify;
//! - [`kernel_splice`]: the gate out of the data path after the downgrade (BPF at tc ingress);
//! - `meter`: the gate's connections on the status page and in the metrics.

pub mod gate;
pub mod kernel_splice;
mod meter;
pub mod outer_client;
pub mod portal;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tlsgate_connect::head::{head_end, HeadError};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Copy buffer per direction of a raw tunnel: tokio's default (8 KiB) costs a pair of system
/// calls per 8 KiB; 64 KiB moves a socket buffer's worth per pair.
pub(crate) const RAW_BUF: usize = 64 * 1024;

/// Why a head could not be read.
#[derive(Debug)]
pub enum HeadFailure {
    Bad(HeadError),
    Io(io::Error),
    /// The stream ended (or its TLS session closed) before the head did.
    Closed,
}

impl std::fmt::Display for HeadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadFailure::Bad(e) => e.fmt(f),
            HeadFailure::Io(e) => e.fmt(f),
            HeadFailure::Closed => f.write_str("closed before the end of its head"),
        }
    }
}

/// Reads into `buf` until it holds a whole head (at most `limit` bytes); returns the head's
/// length. Bytes after it stay in `buf`.
pub async fn read_head<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<usize, HeadFailure> {
    loop {
        if let Some(end) = head_end(buf, limit).map_err(HeadFailure::Bad)? {
            return Ok(end);
        }
        buf.reserve(4096);
        let n = r.read_buf(buf).await.map_err(HeadFailure::Io)?;
        if n == 0 {
            return Err(HeadFailure::Closed);
        }
    }
}

/// Accepts connections and serves each in its own task; a failed accept (out of descriptors,
/// say) is logged and retried after a pause rather than spinning.
async fn accept_loop<S, F, Fut>(
    listener: tokio::net::TcpListener,
    what: &'static str,
    shared: Arc<S>,
    serve: F,
) where
    S: Send + Sync + 'static,
    F: Fn(tokio::net::TcpStream, SocketAddr, Arc<S>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                tokio::spawn(serve(tcp, peer, shared.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what}: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

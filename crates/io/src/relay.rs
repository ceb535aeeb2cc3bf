//! The byte pump between a client stream and a backend stream.
//!
//! Each direction copies until end of stream, then shuts down writing on the other side, so a
//! client that half-closes still receives the reply. An error in either direction ends both and
//! is reported with the side that caused it; the TLS side is then dropped without close_notify,
//! which tells a TLS client the response was cut short.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tlsgate_core::side::Side;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::ProxyError;

const BUF: usize = 16 * 1024;

/// Bytes moved by a finished relay.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Transferred {
    /// Client to backend.
    pub up: u64,
    /// Backend to client.
    pub down: u64,
}

/// Told of every chunk as it is relayed: live byte counts for metrics and the status page.
pub trait Tally {
    fn up(&self, n: u64);
    fn down(&self, n: u64);
}

/// No live counting.
impl Tally for () {
    fn up(&self, _: u64) {}
    fn down(&self, _: u64) {}
}

/// Relays until both directions ended, or nothing moved either way for `idle`. `client` is the
/// TLS side, `backend` the plaintext side.
pub async fn relay<C, B, T>(
    client: C,
    backend: B,
    tally: &T,
    idle: Option<Duration>,
) -> Result<Transferred, (ProxyError, Transferred)>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
    T: Tally,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut br, mut bw) = tokio::io::split(backend);
    let mut t = Transferred::default();
    let start = Instant::now();
    // Milliseconds since `start` of the last byte moved, either way.
    let last = AtomicU64::new(0);
    let moved = || last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    let up = pump(&mut cr, Side::Client, &mut bw, Side::Backend, &mut t.up, |n| {
        moved();
        tally.up(n)
    });
    let down = pump(&mut br, Side::Backend, &mut cw, Side::Client, &mut t.down, |n| {
        moved();
        tally.down(n)
    });
    let watchdog = async {
        let Some(idle) = idle else { return std::future::pending().await };
        loop {
            let deadline = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
            tokio::time::sleep_until(deadline.into()).await;
            let quiet = start.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
            if quiet >= idle {
                return ProxyError::client(format!("idle for {idle:?}, closed"));
            }
        }
    };
    let result = tokio::select! {
        r = async { tokio::try_join!(up, down) } => r.map(|_| ()),
        e = watchdog => Err(e),
    };
    match result {
        Ok(()) => Ok(t),
        Err(e) => Err((e, t)),
    }
}

async fn pump<R, W>(
    from: &mut R,
    from_side: Side,
    to: &mut W,
    to_side: Side,
    count: &mut u64,
    tally: impl Fn(u64),
) -> Result<(), ProxyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            // A TLS peer that closes TCP without close_notify: the stream has ended all the same;
            // whatever it sent was delivered, and truncation attacks concern what it receives.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                tracing::debug!(side = %from_side, "peer closed without close_notify");
                break;
            }
            Err(e) => {
                return Err(ProxyError {
                    side: from_side,
                    context: format!("read failed after {count} bytes: {e}"),
                })
            }
        };
        to.write_all(&buf[..n]).await.map_err(|e| ProxyError {
            side: to_side,
            context: format!("write failed after {count} bytes: {e}"),
        })?;
        *count += n as u64;
        tally(n as u64);
    }
    // End of stream from one side: pass the half-close on.
    to.shutdown().await.map_err(|e| ProxyError {
        side: to_side,
        context: format!("shutdown after {count} bytes failed: {e}"),
    })
}

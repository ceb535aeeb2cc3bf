//! A stream wrapper that reports the bytes read and written through it to a [`Tally`], for
//! modes that do not move bytes through [`crate::relay`] (HTTP header mode).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::relay::Tally;

/// Reads count as `up` (from the client), writes as `down` (to it).
pub struct Counted<'t, S, T> {
    inner: S,
    tally: &'t T,
}

impl<'t, S, T> Counted<'t, S, T> {
    pub fn new(inner: S, tally: &'t T) -> Self {
        Counted { inner, tally }
    }
}

impl<S: AsyncRead + Unpin, T: Tally> AsyncRead for Counted<'_, S, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.tally.up(n as u64);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin, T: Tally> AsyncWrite for Counted<'_, S, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            self.tally.down(n as u64);
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

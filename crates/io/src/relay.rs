//! The byte pump between a client stream and a backend stream.
//!
//! Each direction copies until end of stream, then shuts down writing on the other side, so a
//! client that half-closes still receives the reply. (The direction that ends last leaves a
//! plain TCP destination to the close that follows at once: [`LastWrites::ends_on_drop`].) An error in either direction ends both and
//! is reported with the side that caused it; the TLS side is then dropped without close_notify,
//! which tells a TLS client the response was cut short.
//!
//! Memory: an idle connection holds no relay buffer. Reads go into one scratch buffer per thread
//! and are written on at once; only bytes the destination cannot take right now are copied into
//! a buffer of the connection's own, freed again once they are written. (A relay with a buffer
//! per direction per connection held 32 KiB per idle connection.)

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tlsgate_core::side::Side;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::record_stream::RecordStream;
use crate::relay_wakers::DirectionWakers;
use crate::ProxyError;

/// A destination the relay tells that its next writes are the last before it shuts it down,
/// so that it may send them and its end together. Streams with nothing to gain ignore it.
pub trait LastWrites {
    fn last_writes(&mut self) {}

    /// Whether dropping the stream ends it as its shutdown would: then the direction that
    /// ends last skips the shutdown, since the relay drops both streams right after (a plain
    /// TCP socket whose peer's end was read: close sends the same FIN, one system call less).
    fn ends_on_drop(&self) -> bool {
        false
    }

    /// Whether a read may be waiting to write right now (a TLS stream's answer to a KeyUpdate,
    /// sent from its read path): the reading direction then needs this stream's write readiness,
    /// whose single waker the writing direction registers too, so the relay polls the reading
    /// direction on every wake-up. True unless a stream knows better.
    fn reads_may_write(&self) -> bool {
        true
    }

    /// Whether bytes a write took are still waiting for the socket (a TLS stream's sealed
    /// records): the relay then reads no more than [`FIRST_READ`] next. False unless a stream
    /// keeps such bytes.
    fn holds_unsent(&self) -> bool {
        false
    }
}

impl LastWrites for tokio::net::TcpStream {
    fn ends_on_drop(&self) -> bool {
        true
    }
    fn reads_may_write(&self) -> bool {
        false
    }
}
impl LastWrites for tokio_rustls::client::TlsStream<tokio::net::TcpStream> {}
impl LastWrites for crate::ktls::KtlsStream {
    fn last_writes(&mut self) {
        crate::ktls::KtlsStream::last_writes(self)
    }
}
impl LastWrites for RecordStream {
    fn last_writes(&mut self) {
        RecordStream::last_writes(self)
    }
    fn reads_may_write(&self) -> bool {
        RecordStream::queued(self)
    }
    fn holds_unsent(&self) -> bool {
        RecordStream::queued(self)
    }
}
impl<T: LastWrites + ?Sized> LastWrites for Box<T> {
    fn last_writes(&mut self) {
        (**self).last_writes()
    }
    fn ends_on_drop(&self) -> bool {
        (**self).ends_on_drop()
    }
    fn reads_may_write(&self) -> bool {
        (**self).reads_may_write()
    }
    fn holds_unsent(&self) -> bool {
        (**self).holds_unsent()
    }
}

/// A direction's first read, and its read again after its destination could not take
/// everything: eight TLS records' worth of plaintext, the record stream's write batch. A bulk
/// transfer then takes one read from the backend and one write of eight records to the client
/// per 128 KiB, instead of one of each per record (half the system calls of 64 KiB reads, which
/// a backend's socket filled every time).
const FIRST_READ: usize = 128 * 1024;

/// The largest read, reached by doubling from [`FIRST_READ`] while the source fills every read
/// and the destination sends it all at once. Each read of a bulk download frees receive space,
/// and on loopback the window update that follows wakes the sender again: reads of 512 KiB (with
/// the record stream sealing as much per write) cut tlsgate's CPU per GiB relayed by about a
/// third against 128 KiB ones (docs/benchmarks.md). The buffer is per thread, not per
/// connection. A connection holds bytes only while its destination cannot take them: the rest
/// of one read, and what a TLS destination sealed but could not send (one write batch); a
/// destination that falls behind sets reads back to [`FIRST_READ`], so a slow client holds no
/// more than with 128 KiB reads, and one that stalls right after keeping up at most one large
/// read and one batch.
const SCRATCH: usize = 512 * 1024;

/// Bytes a direction moves in one poll before it lets the runtime's other tasks run. With a
/// source and a destination that both keep up, nothing else ends a bulk transfer's loop but
/// tokio's cooperative budget (128 operations per poll of the task: about 64 of these 512 KiB
/// reads and their writes, 32 MiB, some 30 ms at tlsgate's loopback bulk rate), while every
/// other connection on the thread waits. One MiB is about a millisecond.
const TURN: usize = 1024 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
}

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
    mut client: C,
    mut backend: B,
    tally: &T,
    idle: Option<Duration>,
) -> Result<Transferred, (ProxyError, Transferred)>
where
    C: AsyncRead + AsyncWrite + LastWrites + Unpin,
    B: AsyncRead + AsyncWrite + LastWrites + Unpin,
    T: Tally,
{
    // Times are milliseconds on the coarse clock ([`coarse_ms`]).
    // When the last byte moved, either way.
    let last = AtomicU64::new(coarse_ms());
    // When the current wake-up moved bytes: the time it read then (`u64::MAX` when it moved
    // none). Atomics only because the future must be `Send`.
    let moved_at = AtomicU64::new(u64::MAX);
    // The watchdog's current deadline (0 before it has one).
    let watch_at = AtomicU64::new(0);
    let mut up = Pump::new(Side::Client, Side::Backend);
    let mut down = Pump::new(Side::Backend, Side::Client);
    // Each direction polls its streams with a waker of its own: a direction waiting on its
    // source is polled again only when that direction was woken (see `relay_wakers`).
    let mut wakers: Option<DirectionWakers> = None;
    let both = poll_fn(|cx| {
        let wakers = wakers.get_or_insert_with(|| DirectionWakers::new(cx.waker()));
        let (up_woken, down_woken) = wakers.woken(cx);
        // A direction whose source's read may write (a KeyUpdate answer) shares that stream's
        // one write waker with the other direction: it is polled every time.
        let poll_up = up_woken || !up.waits_on_read || client.reads_may_write();
        let poll_down = down_woken || !down.waits_on_read || backend.reads_may_write();
        let moved = |n: u64, up: bool| {
            let now = coarse_ms();
            last.store(now, Ordering::Relaxed);
            moved_at.store(now, Ordering::Relaxed);
            if up {
                tally.up(n)
            } else {
                tally.down(n)
            }
        };
        if !up.finished && poll_up {
            let last = down.finished;
            let mut cx = wakers.up(cx);
            if let Poll::Ready(Err(e)) = up.poll(&mut cx, &mut client, &mut backend, last, |n| moved(n, true))
            {
                return Poll::Ready(Err(e));
            }
        }
        if !down.finished && poll_down {
            let last = up.finished;
            let mut cx = wakers.down(cx);
            if let Poll::Ready(Err(e)) =
                down.poll(&mut cx, &mut backend, &mut client, last, |n| moved(n, false))
            {
                return Poll::Ready(Err(e));
            }
        }
        if up.finished && down.finished {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    });
    let watchdog = async {
        let Some(idle) = idle else { return std::future::pending().await };
        let idle_ms = idle.as_millis().max(1) as u64;
        loop {
            let deadline = last.load(Ordering::Relaxed) + idle_ms;
            watch_at.store(deadline, Ordering::Relaxed);
            // The coarse clock lags the timer's by up to a tick: a deadline the timer passed
            // and the coarse clock not yet is slept for again, never spun on.
            match deadline.checked_sub(coarse_ms()) {
                Some(left) if left > 0 => tokio::time::sleep(Duration::from_millis(left)).await,
                _ => return ProxyError::client(format!("idle for {idle:?}, closed")),
            }
        }
    };
    // The relay first: it is what wakes the task nearly every time. The watchdog only when the
    // wake-up may be its own: a wake-up that moved bytes well before the watchdog's deadline is
    // not, and its timer, not yet fired, still holds this task's waker for that deadline (where
    // it finds the new `last` and sleeps again). Re-polling the sleep at every chunk was a timer
    // re-registration per chunk.
    let (mut both, mut watchdog) = (pin!(both), pin!(watchdog));
    let result = poll_fn(|cx| {
        moved_at.store(u64::MAX, Ordering::Relaxed);
        if let Poll::Ready(r) = both.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        if !watchdog_may_have_fired(moved_at.load(Ordering::Relaxed), watch_at.load(Ordering::Relaxed)) {
            return Poll::Pending;
        }
        watchdog.as_mut().poll(cx).map(Err)
    })
    .await;
    let t = Transferred { up: up.count, down: down.count };
    match result {
        Ok(()) => Ok(t),
        Err(e) => Err((e, t)),
    }
}

/// Milliseconds on the kernel's coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`), which the
/// relay reads on every move for its idle timeout: a read of the time the kernel keeps at each
/// tick (1-10 ms), without the counter read (`rdtscp`) of the precise clock. That read cost a
/// keep-alive request about 5 % of its user-space time in a VM (two per request), and an idle
/// timeout is seconds.
fn coarse_ms() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    // It cannot fail on Linux (the clock exists since 2.6.32); were it to, 0 at every read
    // would leave the relay without an idle timeout, not close it early.
    clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE)
        .map_or(0, |t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
}

/// How far the coarse clock may trail the timer's (`CLOCK_MONOTONIC`), in milliseconds: a
/// tick (10 ms at the slowest kernel tick rate, 100 Hz) and the milliseconds each side rounds
/// away, with room to spare.
const COARSE_LAG_MS: u64 = 20;

/// Whether the watchdog's timer, armed for coarse time `deadline`, may have fired by a wake-up
/// that moved bytes at coarse time `moved_at` (`u64::MAX`: it moved none). The timer fires once
/// `CLOCK_MONOTONIC` reaches the deadline, and the coarse clock may read up to a tick behind it
/// then: a move read just before the deadline may come after the timer fired, and a fired
/// timer that is not polled again never wakes the task again (the connection would never time
/// out). So only moves read well before the deadline skip it.
fn watchdog_may_have_fired(moved_at: u64, deadline: u64) -> bool {
    moved_at.saturating_add(COARSE_LAG_MS) >= deadline
}

/// One direction.
struct Pump {
    from: Side,
    to: Side,
    /// Read but not yet taken by the destination; empty (and unallocated) most of the time.
    pending: Vec<u8>,
    written: usize,
    /// Written since the last flush: a TLS writer may hold records until flushed.
    unflushed: bool,
    eof: bool,
    /// A read error found by the read-ahead, reported after the bytes before it are written.
    deferred: Option<ProxyError>,
    finished: bool,
    /// The last poll ended waiting for the source to be readable, with nothing left to write:
    /// only the source's readiness (this direction's waker) has something for it.
    waits_on_read: bool,
    /// The most the next read takes: [`FIRST_READ`] up to [`SCRATCH`].
    read_limit: usize,
    count: u64,
}

impl Pump {
    fn new(from: Side, to: Side) -> Self {
        Pump {
            from,
            to,
            pending: Vec::new(),
            written: 0,
            unflushed: false,
            eof: false,
            deferred: None,
            finished: false,
            waits_on_read: false,
            read_limit: FIRST_READ,
            count: 0,
        }
    }

    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        // The other direction has ended: when this one does, the relay is over.
        last: bool,
        moved: impl Fn(u64),
    ) -> Poll<Result<(), ProxyError>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + LastWrites + Unpin,
    {
        self.waits_on_read = false;
        // Bytes moved in this poll, against TURN.
        let mut turn = 0;
        loop {
            // 1. What the destination could not take before.
            while self.written < self.pending.len() {
                let n = ready!(self.poll_write(cx, w, None))?;
                self.written += n;
            }
            if !self.pending.is_empty() {
                self.pending = Vec::new();
                self.written = 0;
            }
            // 2. End of stream from the source: pass the half-close on.
            if self.eof {
                if !(last && w.ends_on_drop()) {
                    ready!(Pin::new(&mut *w).poll_shutdown(cx))
                        .map_err(|e| self.write_error("shutdown", e))?;
                }
                self.finished = true;
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = self.deferred.take() {
                return Poll::Ready(Err(e));
            }
            // 3. Read into the thread's scratch buffer, write on from there at once.
            let step = SCRATCH_BUF.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let limit = self.read_limit;
                let mut n = match ready!(self.poll_read(cx, r, &mut scratch[..limit])) {
                    Ok(n) => n,
                    Err(e) => return Poll::Ready(Err(e)),
                };
                if n == 0 {
                    self.eof = true;
                    return Poll::Ready(Ok(0));
                }
                // Read ahead once: is the end already here too?
                let mut read_pending = false;
                if n < limit {
                    match self.poll_read(cx, r, &mut scratch[n..limit]) {
                        Poll::Ready(Ok(0)) => {
                            self.eof = true;
                            w.last_writes();
                        }
                        Poll::Ready(Ok(more)) => n += more,
                        Poll::Ready(Err(e)) => self.deferred = Some(e),
                        Poll::Pending => read_pending = true,
                    }
                }
                let data = &scratch[..n];
                self.count += data.len() as u64;
                moved(data.len() as u64);
                let mut off = 0;
                while off < data.len() {
                    match self.poll_write(cx, w, Some(&data[off..])) {
                        Poll::Ready(Ok(n)) => off += n,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {
                            self.pending = data[off..].to_vec();
                            break;
                        }
                    }
                }
                // Larger reads only while the source fills them and the destination keeps up.
                self.read_limit = if !self.pending.is_empty() || w.holds_unsent() {
                    FIRST_READ
                } else if n == limit {
                    (limit * 2).min(SCRATCH)
                } else {
                    limit
                };
                // Nothing more to read (and the source's waker is set): done for now, once the
                // destination took everything.
                if read_pending && self.pending.is_empty() {
                    return Poll::Pending;
                }
                Poll::Ready(Ok(n))
            });
            match step {
                Poll::Ready(Ok(n)) => {
                    turn += n;
                    if turn >= TURN {
                        // Polled again at once, after the runtime's other tasks.
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Nothing to read now: push out what the writer still holds.
                    if self.unflushed {
                        ready!(Pin::new(&mut *w).poll_flush(cx)).map_err(|e| self.write_error("flush", e))?;
                        self.unflushed = false;
                    }
                    self.waits_on_read = true;
                    return Poll::Pending;
                }
            }
        }
    }

    /// One read into `buf`: the number of bytes, 0 at the end of the stream.
    fn poll_read<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        buf: &mut [u8],
    ) -> Poll<Result<usize, ProxyError>> {
        let mut buf = ReadBuf::new(buf);
        match ready!(Pin::new(&mut *r).poll_read(cx, &mut buf)) {
            Ok(()) => Poll::Ready(Ok(buf.filled().len())),
            // A TLS peer that closes TCP without close_notify: the stream has ended all the
            // same; whatever it sent was delivered, and truncation attacks concern what it
            // receives.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                tracing::debug!(side = %self.from, "peer closed without close_notify");
                Poll::Ready(Ok(0))
            }
            Err(e) => Poll::Ready(Err(self.read_error(e))),
        }
    }

    fn read_error(&self, e: std::io::Error) -> ProxyError {
        ProxyError { side: self.from, context: format!("read failed after {} bytes: {e}", self.count) }
    }

    /// Writes `data`, or the pending bytes when `None`.
    fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        w: &mut W,
        data: Option<&[u8]>,
    ) -> Poll<Result<usize, ProxyError>> {
        let bytes = data.unwrap_or(&self.pending[self.written..]);
        match ready!(Pin::new(&mut *w).poll_write(cx, bytes)) {
            Ok(0) => Poll::Ready(Err(self.write_error("write", std::io::ErrorKind::WriteZero.into()))),
            Ok(n) => {
                self.unflushed = true;
                Poll::Ready(Ok(n))
            }
            Err(e) => Poll::Ready(Err(self.write_error("write", e))),
        }
    }

    fn write_error(&self, what: &str, e: std::io::Error) -> ProxyError {
        ProxyError { side: self.to, context: format!("{what} failed after {} bytes: {e}", self.count) }
    }
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;

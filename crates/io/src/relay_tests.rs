//! The relay's read size: it grows while the destination keeps up and falls back when it does
//! not; and a direction that always has work lets other tasks run every TURN bytes (in-memory
//! streams that record every read asked of them). Its idle timeout, over loopback TCP.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{relay, LastWrites, FIRST_READ, SCRATCH, TURN};

/// The backend: `total` bytes (byte i is `i % 251`), every read filled as far as asked; records
/// how much each read asked for. Writes to it (the client's direction) are taken and dropped.
struct Source {
    total: usize,
    sent: usize,
    asked: Arc<Mutex<Vec<usize>>>,
}

impl AsyncRead for Source {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.asked.lock().unwrap().push(buf.remaining());
        let n = buf.remaining().min(this.total - this.sent);
        let bytes: Vec<u8> = (this.sent..this.sent + n).map(|i| (i % 251) as u8).collect();
        buf.put_slice(&bytes);
        this.sent += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Source {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl LastWrites for Source {}

/// How the client side takes writes.
#[derive(Clone, Copy)]
enum Pace {
    /// Everything, at once.
    Fast,
    /// Every other write, the first among them, is refused for now (the task is woken at once
    /// to try again).
    Blocking,
    /// Everything, but it says it holds part of it unsent (as a TLS stream whose socket was full).
    Holding,
}

/// The client: sends nothing (end of stream at once), takes writes at `pace` and checks every
/// byte against the source's pattern.
struct Sink {
    pace: Pace,
    got: usize,
    writes: usize,
    /// `got`, for the test to watch.
    seen: Arc<AtomicUsize>,
}

impl AsyncRead for Sink {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Sink {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.writes += 1;
        if matches!(this.pace, Pace::Blocking) && this.writes % 2 == 1 {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        for (k, b) in data.iter().enumerate() {
            assert_eq!(*b, ((this.got + k) % 251) as u8, "byte {} relayed wrong", this.got + k);
        }
        this.got += data.len();
        this.seen.store(this.got, Ordering::Relaxed);
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl LastWrites for Sink {
    fn holds_unsent(&self) -> bool {
        matches!(self.pace, Pace::Holding)
    }
}

/// Relays `total` bytes from a source to a client of `pace`; the sizes the source was asked for.
fn reads(total: usize, pace: Pace) -> Vec<usize> {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let source = Source { total, sent: 0, asked: asked.clone() };
    let sink = Sink { pace, got: 0, writes: 0, seen: Arc::default() };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let t = rt.block_on(relay(sink, source, &(), None)).map_err(|(e, _)| e.to_string()).unwrap();
    assert_eq!(t.down, total as u64);
    let asked = asked.lock().unwrap().clone();
    asked
}

const TOTAL: usize = 8 << 20;

#[test]
fn reads_grow_to_the_largest_while_the_client_keeps_up() {
    let asked = reads(TOTAL, Pace::Fast);
    assert_eq!(&asked[..3], &[FIRST_READ, 2 * FIRST_READ, SCRATCH]);
    // Every read filled: all but the last three (the short one, its read-ahead, the end) ask
    // for the largest.
    assert!(asked[2..asked.len() - 3].iter().all(|&n| n == SCRATCH), "{asked:?}");
}

#[test]
fn reads_stay_small_for_a_client_that_blocks() {
    let asked = reads(TOTAL, Pace::Blocking);
    assert!(asked.iter().all(|&n| n <= FIRST_READ), "{asked:?}");
}

#[test]
fn reads_stay_small_while_the_client_holds_unsent_bytes() {
    let asked = reads(TOTAL, Pace::Holding);
    assert!(asked.iter().all(|&n| n <= FIRST_READ), "{asked:?}");
}

#[test]
fn a_direction_that_always_has_work_yields_every_turn() {
    let seen = Arc::new(AtomicUsize::new(0));
    let source = Source { total: TOTAL, sent: 0, asked: Arc::default() };
    let sink = Sink { pace: Pace::Fast, got: 0, writes: 0, seen: seen.clone() };
    let mut relay = pin!(relay(sink, source, &(), None));
    let mut cx = Context::from_waker(Waker::noop());
    let (mut polls, mut before) = (0, 0);
    loop {
        polls += 1;
        let done = relay.as_mut().poll(&mut cx);
        let now = seen.load(Ordering::Relaxed);
        // Never more than a turn and the read that crossed it.
        assert!(now - before < TURN + SCRATCH, "{} bytes in one poll", now - before);
        before = now;
        if let Poll::Ready(t) = done {
            assert_eq!(t.map_err(|(e, _)| e.to_string()).unwrap().down, TOTAL as u64);
            break;
        }
    }
    assert!(polls >= TOTAL / (TURN + SCRATCH), "{polls} polls");
}

/// The idle timeout on the coarse clock, over loopback TCP: a connection with a byte every
/// 100 ms outlives a 600 ms timeout three times over; once it falls quiet the relay ends with
/// the idle error, not before the timeout (less the coarse clock's tick) has passed.
#[test]
fn traffic_keeps_a_relay_open_and_quiet_closes_it_after_the_timeout() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    let idle = Duration::from_millis(600);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pair = || async {
            let near = TcpStream::connect(addr).await.unwrap();
            let (far, _) = listener.accept().await.unwrap();
            (near, far)
        };
        let (mut client, relay_client) = pair().await;
        let (relay_backend, mut backend) = pair().await;
        let relayed = tokio::spawn(async move {
            relay(relay_client, relay_backend, &(), Some(idle)).await.map_err(|(e, _)| e.to_string())
        });
        let busy = Instant::now();
        let mut byte = [0u8; 1];
        let mut last = Instant::now();
        while busy.elapsed() < 3 * idle {
            client.write_all(b"x").await.unwrap();
            backend.read_exact(&mut byte).await.unwrap();
            last = Instant::now();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!relayed.is_finished(), "closed while bytes moved");
        let result = relayed.await.unwrap();
        let quiet = last.elapsed();
        let error = result.expect_err("the relay ends on its idle timeout");
        assert!(error.contains("idle for 600ms, closed"), "{error}");
        // The coarse clock ticks every 1-10 ms; a millisecond more for rounding.
        assert!(quiet >= idle - Duration::from_millis(11), "closed after {quiet:?} of quiet");
        // The client and the backend see the end of the connection.
        assert_eq!(client.read(&mut byte).await.unwrap_or(0), 0);
        assert_eq!(backend.read(&mut byte).await.unwrap_or(0), 0);
    });
}

/// A wake-up that moved bytes skips the watchdog only when the move was read well before its
/// deadline: the coarse clock may trail the timer's by a tick, so a move read just before the
/// deadline may follow the timer's firing, and a fired timer left unpolled never wakes the task.
#[test]
fn the_watchdog_is_polled_when_its_timer_may_have_fired() {
    use super::{watchdog_may_have_fired, COARSE_LAG_MS};
    let deadline = 1_000_000;
    assert!(!watchdog_may_have_fired(deadline - 1_000, deadline), "a move a second early");
    assert!(!watchdog_may_have_fired(deadline - COARSE_LAG_MS - 1, deadline));
    for early in [COARSE_LAG_MS, 10, 1, 0] {
        assert!(watchdog_may_have_fired(deadline - early, deadline), "a move read {early} ms early");
    }
    assert!(watchdog_may_have_fired(deadline + 5, deadline), "after the deadline");
    assert!(watchdog_may_have_fired(u64::MAX, deadline), "nothing moved: maybe the timer's wake-up");
    assert!(watchdog_may_have_fired(u64::MAX, 0), "no deadline yet: the first poll");
}

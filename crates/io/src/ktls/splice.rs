//! The relay of a kernel-TLS connection: `splice` through a pipe each way, so the plaintext
//! never enters user space (the kernel decrypts into the pipe and encrypts out of it). The same
//! relay serves two plain TCP sockets (a downgraded connect tunnel): see [`SpliceClient`].
//!
//! The same behaviour as [`crate::relay`]: each direction runs to end of stream and passes the
//! half-close on; the backend's last bytes are spliced with SPLICE_F_MORE once its end is
//! known, so the reply, close_notify and the FIN leave together; an error either way ends both,
//! naming the side. A record the kernel will not splice (an alert or a handshake message: the
//! kernel answers EINVAL and keeps it) is read through [`KtlsStream`], whose session says what
//! it means (close_notify is end of stream).

use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tlsgate_core::side::Side;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::{sys, KtlsStream};
use crate::relay::{LastWrites, Tally, Transferred};
use crate::ProxyError;

/// The client side of the spliced relay: a kernel-TLS stream (its control records are read
/// through it, its early plaintext and queued records go first), or a plain TCP socket.
pub trait SpliceClient: AsyncRead + AsyncWrite + LastWrites + Unpin {
    /// `splice` answers EINVAL for a record that is not data, to be read through the stream.
    const KERNEL_TLS: bool;
    fn socket(&self) -> &TcpStream;
    /// Plaintext that reached user space before the relay: written to the backend first.
    fn take_early(&mut self) -> Vec<u8>;
    /// Sends what the stream queued before the relay starts.
    fn flush_control(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// A receive error from `splice`, as the stream would report (and answer) it.
    fn kernel_failure(&mut self, e: io::Error) -> io::Error;
    /// Called with the bytes spliced to this side so far: kernel TLS watches its transmit
    /// key's record limit here.
    fn tx_check(&mut self, _sent: u64) -> io::Result<()> {
        Ok(())
    }
}

impl SpliceClient for KtlsStream {
    const KERNEL_TLS: bool = true;
    fn socket(&self) -> &TcpStream {
        self.tcp()
    }
    fn take_early(&mut self) -> Vec<u8> {
        self.take_plain()
    }
    fn flush_control(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        KtlsStream::flush_control(self)
    }
    fn kernel_failure(&mut self, e: io::Error) -> io::Error {
        KtlsStream::kernel_failure(self, e)
    }
    fn tx_check(&mut self, sent: u64) -> io::Result<()> {
        KtlsStream::tx_check(self, sent)
    }
}

/// A plain TCP client (the caller writes any bytes it read ahead before relaying).
impl SpliceClient for TcpStream {
    const KERNEL_TLS: bool = false;
    fn socket(&self) -> &TcpStream {
        self
    }
    fn take_early(&mut self) -> Vec<u8> {
        Vec::new()
    }
    fn flush_control(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
    fn kernel_failure(&mut self, e: io::Error) -> io::Error {
        e
    }
}

/// Bytes moved per splice: the default pipe capacity.
const CHUNK: usize = 64 * 1024;

/// A record's largest plaintext (2^14) and TLS 1.3's content type byte.
const CONTROL_BUF: usize = (1 << 14) + 1;

/// One direction: source socket, pipe, destination socket.
struct Dir {
    from: Side,
    to: Side,
    pipe: (OwnedFd, OwnedFd),
    /// Bytes in the pipe not yet spliced out.
    in_pipe: usize,
    eof: bool,
    finished: bool,
    count: u64,
    /// Bytes spliced out to the destination.
    out: u64,
}

impl Dir {
    fn new(from: Side, to: Side) -> io::Result<Dir> {
        Ok(Dir { from, to, pipe: sys::pipe()?, in_pipe: 0, eof: false, finished: false, count: 0, out: 0 })
    }

    fn read_error(&self, e: io::Error) -> ProxyError {
        ProxyError { side: self.from, context: format!("read failed after {} bytes: {e}", self.count) }
    }

    fn write_error(&self, what: &str, e: io::Error) -> ProxyError {
        ProxyError { side: self.to, context: format!("{what} failed after {} bytes: {e}", self.count) }
    }
}

/// What a splice from the source gave.
enum Got {
    Bytes(usize),
    Eof,
    /// Not a data record (client side only): read it through the stream.
    Control,
}

fn splice_in(tcp: &TcpStream, pipe_w: RawFd, client: bool) -> io::Result<Got> {
    let fd = tcp.as_raw_fd();
    match tcp.try_io(Interest::READABLE, || sys::splice(fd, pipe_w, CHUNK, false)) {
        Ok(0) => Ok(Got::Eof),
        Ok(n) => Ok(Got::Bytes(n)),
        Err(e) if client && e.raw_os_error() == Some(libc::EINVAL) => Ok(Got::Control),
        Err(e) => Err(e),
    }
}

/// Relays until both directions ended, or nothing moved for `idle`.
pub async fn relay<C: SpliceClient, T: Tally>(
    client: C,
    backend: TcpStream,
    tally: &T,
    idle: Option<Duration>,
) -> Result<Transferred, (ProxyError, Transferred)> {
    relay_sides(client, backend, tally, idle, (Side::Client, Side::Backend)).await
}

/// [`relay`] with the sides errors name: `sides.0` for the client socket, `sides.1` for the
/// backend one (originate: the upstream server and the plaintext client). `up` counts the
/// client side's bytes to the backend side.
pub async fn relay_sides<C: SpliceClient, T: Tally>(
    mut client: C,
    mut backend: TcpStream,
    tally: &T,
    idle: Option<Duration>,
    sides: (Side, Side),
) -> Result<Transferred, (ProxyError, Transferred)> {
    let (mut up, mut down) = match (Dir::new(sides.0, sides.1), Dir::new(sides.1, sides.0)) {
        (Ok(u), Ok(d)) => (u, d),
        (Err(e), _) | (_, Err(e)) => {
            return Err((ProxyError::internal(format!("pipe for splice: {e}")), Transferred::default()))
        }
    };
    // What reached user space before the offload goes on the ordinary way first.
    let early = client.take_early();
    let flushed = async {
        client.flush_control().await.map_err(|e| down.write_error("write", e))?;
        backend.write_all(&early).await.map_err(|e| up.write_error("write", e))
    };
    if let Err(e) = flushed.await {
        return Err((e, Transferred::default()));
    }
    up.count = early.len() as u64;
    if !early.is_empty() {
        tally.up(early.len() as u64);
    }
    let start = Instant::now();
    // Milliseconds since `start` of the last byte moved, either way.
    let last = AtomicU64::new(0);
    let mut counts = (up.count, 0u64);
    let both = poll_fn(|cx| {
        let mut result = Poll::Pending;
        if !up.finished {
            if let Poll::Ready(Err(e)) = poll_up(cx, &mut up, &mut client, &mut backend) {
                result = Poll::Ready(Err(e));
            }
        }
        if result.is_pending() && !down.finished {
            if let Poll::Ready(Err(e)) = poll_down(cx, &mut down, &mut backend, &mut client) {
                result = Poll::Ready(Err(e));
            }
        }
        if (up.count, down.count) != counts {
            tally.up(up.count - counts.0);
            tally.down(down.count - counts.1);
            counts = (up.count, down.count);
            last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        if result.is_pending() && up.finished && down.finished {
            result = Poll::Ready(Ok(()));
        }
        result
    });
    let watchdog = async {
        let Some(idle) = idle else { return std::future::pending().await };
        loop {
            let deadline = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
            tokio::time::sleep_until(deadline.into()).await;
            let quiet = start.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
            if quiet >= idle {
                return ProxyError { side: sides.0, context: format!("idle for {idle:?}, closed") };
            }
        }
    };
    let result = tokio::select! {
        r = both => r,
        e = watchdog => Err(e),
    };
    let t = Transferred { up: counts.0, down: counts.1 };
    result.map(|()| t).map_err(|e| (e, t))
}

/// Client to backend: splice in, splice out; a control record goes through the stream.
fn poll_up<C: SpliceClient>(
    cx: &mut Context<'_>,
    d: &mut Dir,
    client: &mut C,
    backend: &mut TcpStream,
) -> Poll<Result<(), ProxyError>> {
    loop {
        ready!(drain(cx, d, backend, false))?;
        if d.eof {
            ready!(Pin::new(&mut *backend).poll_shutdown(cx)).map_err(|e| d.write_error("shutdown", e))?;
            d.finished = true;
            return Poll::Ready(Ok(()));
        }
        ready!(client.socket().poll_read_ready(cx)).map_err(|e| d.read_error(e))?;
        match splice_in(client.socket(), d.pipe.1.as_raw_fd(), C::KERNEL_TLS) {
            Ok(Got::Bytes(n)) => {
                d.in_pipe = n;
                d.count += n as u64;
            }
            Ok(Got::Eof) => d.eof = true,
            Ok(Got::Control) => {
                // The stream reads the record and acts on it; data after it (none is joined to
                // a control record) comes on the next splice.
                // Room for a whole record: the kernel hands a control record over in one read.
                let mut small = vec![0u8; CONTROL_BUF];
                let mut rb = ReadBuf::new(&mut small);
                match ready!(Pin::new(&mut *client).poll_read(cx, &mut rb)) {
                    Ok(()) if rb.filled().is_empty() => d.eof = true,
                    Ok(()) => {
                        // Data read by the stream: written on the ordinary way.
                        let data = rb.filled().to_vec();
                        d.count += data.len() as u64;
                        write_all_now(backend, &data).map_err(|e| d.write_error("write", e))?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => d.eof = true,
                    Err(e) => return Poll::Ready(Err(d.read_error(e))),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                // EBADMSG, EMSGSIZE: the stream names the fault and sends the alert.
                return Poll::Ready(Err(d.read_error(client.kernel_failure(e))));
            }
        }
    }
}

/// Backend to client; the backend's end read ahead so the last bytes leave with close_notify.
fn poll_down<C: SpliceClient>(
    cx: &mut Context<'_>,
    d: &mut Dir,
    backend: &mut TcpStream,
    client: &mut C,
) -> Poll<Result<(), ProxyError>> {
    loop {
        ready!(drain(cx, d, client.socket(), d.eof))?;
        // The transmit key's record limit, checked every so many bytes into the kernel.
        client.tx_check(d.out).map_err(|e| ProxyError::internal(e.to_string()))?;
        if d.eof {
            ready!(Pin::new(&mut *client).poll_shutdown(cx)).map_err(|e| d.write_error("shutdown", e))?;
            d.finished = true;
            return Poll::Ready(Ok(()));
        }
        ready!(backend.poll_read_ready(cx)).map_err(|e| d.read_error(e))?;
        match splice_in(backend, d.pipe.1.as_raw_fd(), false) {
            Ok(Got::Bytes(n)) => {
                d.in_pipe = n;
                d.count += n as u64;
                // Read ahead once: is the end already here too? Not through `try_io`: a full
                // pipe answers EAGAIN too (a socket's buffers can take all its slots with less
                // than a chunk), and the socket's readiness must not be cleared for that.
                if n < CHUNK {
                    let (fd, pipe_w) = (backend.as_raw_fd(), d.pipe.1.as_raw_fd());
                    match sys::splice(fd, pipe_w, CHUNK - n, false) {
                        Ok(0) => {
                            d.eof = true;
                            client.last_writes();
                        }
                        Ok(m) => {
                            d.in_pipe += m;
                            d.count += m as u64;
                        }
                        Err(_) => {}
                    }
                }
            }
            Ok(Got::Eof) => d.eof = true,
            Ok(Got::Control) => return Poll::Ready(Err(d.read_error(io::Error::other("splice refused")))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Poll::Ready(Err(d.read_error(e))),
        }
    }
}

/// Splices the pipe's bytes out to `to`; `last`: they are the last before the shutdown.
fn drain(cx: &mut Context<'_>, d: &mut Dir, to: &TcpStream, last: bool) -> Poll<Result<(), ProxyError>> {
    while d.in_pipe > 0 {
        ready!(to.poll_write_ready(cx)).map_err(|e| d.write_error("write", e))?;
        let (pipe_r, fd) = (d.pipe.0.as_raw_fd(), to.as_raw_fd());
        match to.try_io(Interest::WRITABLE, || sys::splice(pipe_r, fd, d.in_pipe, last)) {
            Ok(0) => return Poll::Ready(Err(d.write_error("write", io::ErrorKind::WriteZero.into()))),
            Ok(n) => {
                d.in_pipe -= n;
                d.out += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Poll::Ready(Err(d.write_error("write", e))),
        }
    }
    Poll::Ready(Ok(()))
}

/// A few bytes read by the stream alongside a control record, written at once (a blocked
/// backend socket this small is an error worth naming).
fn write_all_now(tcp: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match tcp.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

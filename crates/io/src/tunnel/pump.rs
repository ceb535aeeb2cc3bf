//! A TCP session's local socket: a reader task feeding the driver and a writer task fed by it.
//!
//! Memory per session stays bounded on both paths. Socket → tunnel: the reader holds one of
//! [`READ_CREDIT`] permits per chunk it hands over, and the driver releases a permit only when the
//! endpoint took the chunk, so a session whose peer window is closed stops reading its socket.
//! Tunnel → socket: the driver reads from the endpoint only while fewer than [`WRITE_LIMIT`] bytes
//! wait in the writer; the endpoint keeps the rest unacknowledged, which closes the window toward
//! the sender (Ack flow control), and the writer says when it drained.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tlsgate_telemetry::conns::Listed;
use tlsgate_tunnel::SessionId;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::driver::Cmd;
use super::pool::Pool;

/// Bytes read from a socket per chunk: a tunnel frame's worth (the default frame limit); the
/// driver seals up to two chunks' worth as eight full records in one system call. Smaller chunks
/// cost a wakeup of the driver, a command and a framing pass each for no more bytes moved.
pub(crate) const CHUNK: usize = 64 * 1024;
/// Chunks a reader may have handed over and not yet seen taken by the endpoint.
const READ_CREDIT: usize = 2;
/// Bytes queued toward a socket before the driver stops reading that session's data: two
/// chunks, which the writer hands to the socket in one system call (one wakeup of the reader at
/// the other end per 128 KiB rather than per 64 KiB).
pub(crate) const WRITE_LIMIT: usize = 2 * CHUNK;
/// Buffers the writer gathers into one vectored write.
const WRITE_GATHER: usize = 4;

/// Which way the local socket faces: it decides which byte counter a read increments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LocalEnd {
    /// The local socket is the client (portal side): its bytes go "up".
    Client,
    /// The local socket is the destination (gate side): its bytes go "down".
    Destination,
}

pub(crate) enum WriterMsg {
    Data(Vec<u8>),
    /// The peer finished: shut down our write half after what is queued.
    Finish,
}

/// A chunk read from the socket, with the credit it holds until the endpoint takes it.
pub(crate) struct Chunk {
    /// What the endpoint has not taken yet.
    pub data: Vec<u8>,
    pub _permit: OwnedSemaphorePermit,
}

/// The driver's side of one TCP session's socket.
pub(crate) struct TcpLocal {
    pub writer: mpsc::UnboundedSender<WriterMsg>,
    /// Bytes handed to the writer and not yet written to the socket.
    pub pending: Arc<AtomicUsize>,
    pub queued: std::collections::VecDeque<Chunk>,
    /// The socket reached EOF: finish the session once `queued` is in the endpoint.
    pub finish_pending: bool,
    pub finish_sent_to_writer: bool,
    pub listed: Option<Listed>,
    pub end: LocalEnd,
    reader: JoinHandle<()>,
    writer_task: JoinHandle<()>,
}

impl TcpLocal {
    /// Starts the socket's two tasks. `leftover` (bytes a SOCKS client sent early) goes first.
    pub fn start(
        id: SessionId,
        stream: TcpStream,
        leftover: Vec<u8>,
        cmds: mpsc::UnboundedSender<Cmd>,
        listed: Option<Listed>,
        end: LocalEnd,
        pool: Arc<Pool>,
    ) -> Self {
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let pending = Arc::new(AtomicUsize::new(0));
        let (writer, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(id, rd, leftover, cmds.clone(), pool.clone()));
        let writer_task = tokio::spawn(write_loop(id, wr, rx, pending.clone(), cmds, pool));
        TcpLocal {
            writer,
            pending,
            queued: Default::default(),
            finish_pending: false,
            finish_sent_to_writer: false,
            listed,
            end,
            reader,
            writer_task,
        }
    }

    /// Stops reading the socket (the peer will not take more data).
    pub fn stop_reading(&mut self) {
        self.reader.abort();
        self.queued.clear();
        self.finish_pending = false;
    }

    /// Abortive end: both tasks stop now and the socket closes.
    pub fn abort(&mut self) {
        self.reader.abort();
        self.writer_task.abort();
    }

    pub fn count_read(&self, n: usize) {
        if let Some(l) = &self.listed {
            let info = &l.info;
            let c = if self.end == LocalEnd::Client { &info.up } else { &info.down };
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    pub fn count_written(&self, n: usize) {
        if let Some(l) = &self.listed {
            let info = &l.info;
            let c = if self.end == LocalEnd::Client { &info.down } else { &info.up };
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

impl Drop for TcpLocal {
    /// The reader may sit in a read on an idle socket forever; the writer is left to drain
    /// what was queued (a graceful end) and exits when its channel closes.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_loop(
    id: SessionId,
    rd: OwnedReadHalf,
    leftover: Vec<u8>,
    cmds: mpsc::UnboundedSender<Cmd>,
    pool: Arc<Pool>,
) {
    let credit = Arc::new(Semaphore::new(READ_CREDIT));
    let mut first = (!leftover.is_empty()).then_some(leftover);
    loop {
        let Ok(permit) = credit.clone().acquire_owned().await else { return };
        let data = match first.take() {
            Some(d) => d,
            None => {
                // The buffer is taken only once there is something to read (an idle session
                // holds none), from the connection's pool, and not zeroed: try_read_buf fills
                // spare capacity.
                let mut buf = Vec::new();
                let read = loop {
                    if let Err(e) = rd.readable().await {
                        break Err(e);
                    }
                    if buf.capacity() == 0 {
                        buf = pool.take();
                    }
                    match rd.try_read_buf(&mut buf) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        r => break r,
                    }
                };
                match read {
                    Ok(0) => {
                        pool.give(buf);
                        let _ = cmds.send(Cmd::LocalEof { id });
                        return;
                    }
                    Ok(_) => buf,
                    Err(e) => {
                        let _ = cmds.send(Cmd::LocalError { id, error: e.to_string() });
                        return;
                    }
                }
            }
        };
        if cmds.send(Cmd::Data { id, chunk: Chunk { data, _permit: permit } }).is_err() {
            return;
        }
    }
}

async fn write_loop(
    id: SessionId,
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<WriterMsg>,
    pending: Arc<AtomicUsize>,
    cmds: mpsc::UnboundedSender<Cmd>,
    pool: Arc<Pool>,
) {
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(WRITE_GATHER);
    while let Some(msg) = rx.recv().await {
        // What the driver queued behind this message goes in the same write.
        let mut finish = false;
        let mut next = Some(msg);
        while let Some(msg) = next.take() {
            match msg {
                WriterMsg::Data(data) if !data.is_empty() => batch.push(data),
                WriterMsg::Data(data) => pool.give(data),
                WriterMsg::Finish => {
                    finish = true;
                    break;
                }
            }
            if batch.len() < WRITE_GATHER {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if let Err(e) = write_all_vectored(&mut wr, &batch).await {
                let _ = cmds.send(Cmd::LocalError { id, error: e.to_string() });
                return;
            }
            let n: usize = batch.iter().map(Vec::len).sum();
            let before = pending.fetch_sub(n, Ordering::AcqRel);
            if before >= WRITE_LIMIT && before - n < WRITE_LIMIT {
                let _ = cmds.send(Cmd::Drained { id });
            }
            for data in batch.drain(..) {
                pool.give(data);
            }
        }
        if finish {
            let _ = wr.shutdown().await;
        }
    }
}

/// Writes every byte of `bufs` (none empty), in order, with as few system calls as the socket
/// allows.
async fn write_all_vectored(wr: &mut OwnedWriteHalf, bufs: &[Vec<u8>]) -> std::io::Result<()> {
    let (mut i, mut at) = (0, 0);
    while i < bufs.len() {
        let mut slices = [std::io::IoSlice::new(&[]); WRITE_GATHER];
        let mut k = 0;
        for (j, b) in bufs[i..].iter().take(WRITE_GATHER).enumerate() {
            slices[j] = std::io::IoSlice::new(if j == 0 { &b[at..] } else { b });
            k = j + 1;
        }
        let mut n = wr.write_vectored(&slices[..k]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 && i < bufs.len() {
            let left = bufs[i].len() - at;
            if n >= left {
                n -= left;
                i += 1;
                at = 0;
            } else {
                at += n;
                n = 0;
            }
        }
    }
    Ok(())
}

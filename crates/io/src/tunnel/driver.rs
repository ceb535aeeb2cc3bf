//! One tunnel connection: the sans-IO `Endpoint`, the TLS stream under it, and the local end of
//! every session (a socket's pump tasks, or a UDP queue).
//!
//! The driver is a single task so the endpoint needs no lock: it reads TLS, feeds the endpoint,
//! acts on its events, writes what it transmits, and serves [`Cmd`]s from everyone else (local
//! listeners opening sessions, pump tasks handing over data, the gate's connect tasks answering
//! an Open). A stalled session only stops its own pumps; the loop itself never waits on a socket
//! other than the tunnel's.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tlsgate_telemetry::conns::Listed;
use tlsgate_telemetry::metrics::{metrics, TunnelLabels, TunnelSessionLabels};
use tlsgate_tunnel::wire::{ErrorCode, OpenRc, Protocol, ResetCode};
use tlsgate_tunnel::{ConnectionError, Datagram, Endpoint, Event, SessionError, SessionId, Target};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::pool::Pool;
use super::pump::{Chunk, LocalEnd, TcpLocal, WriterMsg, CHUNK, WRITE_LIMIT};

/// Bytes gathered from `poll_transmit` before they are written into TLS: up to eight full
/// records, which the record layer seals and writes in one system call (its write batch), with
/// no short record behind them. Eight rather than four: half the writes, and half the wakeups of
/// the peer's process, per byte.
const TRANSMIT_BATCH: usize = 8 * tlsgate_record::frame::MAX_PLAINTEXT;
/// Bytes read from TLS at once: eight full TLS 1.3 records (16 KiB of plaintext plus 22 bytes of
/// header, content type and tag each), opened in place by the record layer after one read.
/// (Sixteen, tried, saved only the read that finds the socket empty after a full one.)
const TLS_READ: usize = 128 * 1024 + 8 * 22;

/// Commands served per wakeup of the driver beyond the first, before it transmits: enough for
/// a chunk from every stream of a busy connection, few enough to keep reading TLS in between.
const CMD_BATCH: usize = 64;

/// Why an Open did not give a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenFailure {
    pub rc: OpenRc,
    pub reason: String,
}

impl fmt::Display for OpenFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.reason, self.rc.0)
    }
}

impl OpenFailure {
    fn local(reason: impl Into<String>) -> Self {
        OpenFailure { rc: OpenRc::GENERAL_FAILURE, reason: reason.into() }
    }
}

/// How a tunnel connection ended.
#[derive(Debug, Clone)]
pub enum Ended {
    /// The tunnel protocol ended it (GoAway either way, idle timeout, version mismatch).
    Protocol(ConnectionError),
    /// The TLS stream under it failed or was closed without GoAway.
    Transport(String),
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Protocol(e) => write!(f, "{e}"),
            Ended::Transport(e) => write!(f, "connection lost: {e}"),
        }
    }
}

/// What the side running the driver does when the peer opens a session. It must answer
/// through the handle: `accept_tcp`, `accept_udp` or `refuse`.
pub trait Acceptor: Send + Sync + 'static {
    fn open_request(&self, handle: Handle, id: SessionId, protocol: Protocol, target: Target);
}

pub(crate) enum Cmd {
    Open { protocol: Protocol, target: Target, reply: oneshot::Sender<Result<SessionId, OpenFailure>> },
    AttachTcp { id: SessionId, stream: TcpStream, leftover: Vec<u8>, listed: Option<Listed> },
    AcceptTcp { id: SessionId, stream: TcpStream, listed: Option<Listed> },
    AttachUdp { id: SessionId, sink: mpsc::Sender<Datagram>, accept: bool },
    Refuse { id: SessionId, rc: OpenRc, reason: String },
    Data { id: SessionId, chunk: Chunk },
    LocalEof { id: SessionId },
    LocalError { id: SessionId, error: String },
    Drained { id: SessionId },
    SendDatagram { id: SessionId, datagram: Datagram },
    EndSession { id: SessionId },
    Shutdown,
}

/// The way into a running driver; cheap to clone.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl Handle {
    fn send(&self, cmd: Cmd) {
        // A driver that is gone drops the command, and with it any socket it carried.
        let _ = self.tx.send(cmd);
    }

    /// Opens a session; resolves when the peer answers.
    pub async fn open(&self, protocol: Protocol, target: Target) -> Result<SessionId, OpenFailure> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Open { protocol, target, reply });
        rx.await.unwrap_or_else(|_| Err(OpenFailure::local("tunnel connection closed")))
    }

    /// Joins an opened TCP session to its local socket.
    pub fn attach_tcp(&self, id: SessionId, stream: TcpStream, leftover: Vec<u8>, listed: Option<Listed>) {
        self.send(Cmd::AttachTcp { id, stream, leftover, listed });
    }

    /// Accepts a session the peer opened, with the socket connected for it.
    pub fn accept_tcp(&self, id: SessionId, stream: TcpStream, listed: Option<Listed>) {
        self.send(Cmd::AcceptTcp { id, stream, listed });
    }

    /// Joins a UDP session to the queue its datagrams go to; `accept` answers the peer's Open.
    pub fn attach_udp(&self, id: SessionId, sink: mpsc::Sender<Datagram>, accept: bool) {
        self.send(Cmd::AttachUdp { id, sink, accept });
    }

    pub fn refuse(&self, id: SessionId, rc: OpenRc, reason: String) {
        self.send(Cmd::Refuse { id, rc, reason });
    }

    pub fn send_datagram(&self, id: SessionId, datagram: Datagram) {
        self.send(Cmd::SendDatagram { id, datagram });
    }

    /// Ends a session from our side (End, no reason to report).
    pub fn end_session(&self, id: SessionId) {
        self.send(Cmd::EndSession { id });
    }

    /// Closes the whole tunnel connection with GoAway.
    pub fn shutdown(&self) {
        self.send(Cmd::Shutdown);
    }

    /// Both handles lead to the same driver.
    pub fn same(&self, other: &Handle) -> bool {
        self.tx.same_channel(&other.tx)
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when the driver has ended.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

enum Local {
    Tcp(TcpLocal),
    Udp(mpsc::Sender<Datagram>),
}

pub struct Driver {
    endpoint: Endpoint,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    tx: mpsc::UnboundedSender<Cmd>,
    acceptor: Arc<dyn Acceptor>,
    /// Whether local sockets here are clients (portal) or destinations (gate).
    end: LocalEnd,
    sessions: HashMap<SessionId, Local>,
    opening: HashMap<SessionId, oneshot::Sender<Result<SessionId, OpenFailure>>>,
    label: Arc<str>,
    connected: Option<oneshot::Sender<()>>,
    /// Socket buffers shared with this connection's pump tasks.
    pool: Arc<Pool>,
}

impl Driver {
    pub fn new(endpoint: Endpoint, acceptor: Arc<dyn Acceptor>, portal_side: bool, label: Arc<str>) -> Self {
        let (tx, cmds) = mpsc::unbounded_channel();
        Driver {
            endpoint,
            cmds,
            tx,
            acceptor,
            end: if portal_side { LocalEnd::Client } else { LocalEnd::Destination },
            sessions: HashMap::new(),
            opening: HashMap::new(),
            label,
            connected: None,
            pool: Arc::default(),
        }
    }

    pub fn handle(&self) -> Handle {
        Handle { tx: self.tx.clone() }
    }

    /// Runs the connection until it ends; every local socket is closed when this returns.
    /// `connected` fires when the peer's Hello arrived: only then did the peer accept us (a
    /// TLS 1.3 client finishes its handshake before the server has checked its certificate).
    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        mut self,
        stream: S,
        connected: Option<oneshot::Sender<()>>,
    ) -> Ended {
        self.connected = connected;
        let role = TunnelLabels { role: self.role().into() };
        let mut open_sessions =
            GaugeShare::new(metrics().tunnel_sessions_open.get_or_create(&role).clone(), 0);
        let _up = GaugeShare::new(metrics().tunnel_connections.get_or_create(&role).clone(), 1);
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut rbuf = vec![0u8; TLS_READ];
        let mut out: Vec<u8> = Vec::with_capacity(TRANSMIT_BATCH);
        let mut written = 0;
        let mut need_flush = false;
        // One timer for the connection's deadlines, moved rather than made anew each pass: a
        // fresh `Sleep` per pass registered and removed a timer entry (a lock and a wheel update
        // each) on every chunk. Moving it later, as activity does, only updates its deadline.
        let timer = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<tokio::time::Instant> = None;
        loop {
            let now = Instant::now();
            self.process_events(now);
            let sessions = self.endpoint.session_count();
            open_sessions.set(sessions as i64);
            if sessions == 0 {
                self.pool.clear();
            }
            if written == out.len() {
                out.clear();
                written = 0;
                while out.len() < TRANSMIT_BATCH
                    && self.endpoint.poll_transmit_within(now, &mut out, TRANSMIT_BATCH)
                {}
                while let Some(spent) = self.endpoint.take_spent_buffer() {
                    self.pool.give(spent);
                }
                // Transmitting can release sessions.
                self.process_events(now);
            }
            if let Some(e) = self.endpoint.error() {
                if written == out.len() && !need_flush {
                    let e = e.clone();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), wr.shutdown()).await;
                    return Ended::Protocol(e);
                }
            }
            let deadline = self.endpoint.poll_timeout().map(tokio::time::Instant::from_std);
            if let Some(d) = deadline {
                if armed != Some(d) {
                    timer.as_mut().reset(d);
                    armed = Some(d);
                }
            }
            tokio::select! {
                r = rd.read(&mut rbuf), if self.endpoint.error().is_none() => match r {
                    Ok(0) => return Ended::Transport("peer closed the TLS stream".into()),
                    Ok(n) => {
                        // A protocol error queues GoAway and an event; the loop sends it.
                        let _ = self.endpoint.handle_input(Instant::now(), &rbuf[..n]);
                    }
                    Err(e) => return Ended::Transport(e.to_string()),
                },
                r = write_or_flush(&mut wr, &out[written..]), if written < out.len() || need_flush => match r {
                    Ok(0) => need_flush = false,
                    Ok(n) => {
                        written += n;
                        need_flush = true;
                    }
                    Err(e) => return Ended::Transport(e.to_string()),
                },
                Some(cmd) = self.cmds.recv() => {
                    let now = Instant::now();
                    self.command(now, cmd);
                    // What else is queued (other pumps' chunks, drained writers) goes in before
                    // the next transmit, so that one batch and one TLS write carry it all.
                    for _ in 0..CMD_BATCH {
                        let Ok(cmd) = self.cmds.try_recv() else { break };
                        self.command(now, cmd);
                    }
                }
                () = &mut timer, if deadline.is_some() => {
                    // Set again on the next pass, from the deadlines as they are then.
                    armed = None;
                    self.endpoint.handle_timeout(Instant::now());
                }
            }
        }
    }

    fn role(&self) -> &'static str {
        if self.end == LocalEnd::Client {
            "portal"
        } else {
            "gate"
        }
    }

    fn count_session(&self, result: &str) {
        let labels = TunnelSessionLabels { role: self.role().into(), result: result.into() };
        metrics().tunnel_sessions.get_or_create(&labels).inc();
    }

    fn process_events(&mut self, now: Instant) {
        while let Some(ev) = self.endpoint.poll_event() {
            match ev {
                Event::Connected { version } => {
                    tracing::debug!(tunnel = %self.label, version, "tunnel protocol negotiated");
                    if let Some(tx) = self.connected.take() {
                        let _ = tx.send(());
                    }
                }
                Event::OpenRequest { id, protocol, target } => {
                    self.acceptor.open_request(self.handle(), id, protocol, target);
                }
                Event::Opened { id } => {
                    self.count_session("opened");
                    if let Some(reply) = self.opening.remove(&id) {
                        if reply.send(Ok(id)).is_err() {
                            // The local client left while the Open was in flight.
                            let _ = self.endpoint.end(now, id, ResetCode::CANCELLED, "local client gone");
                        }
                    }
                }
                Event::OpenFailed { id, rc, reason } => {
                    self.count_session("refused");
                    if let Some(reply) = self.opening.remove(&id) {
                        let _ = reply.send(Err(OpenFailure { rc, reason }));
                    }
                }
                Event::Readable { id } | Event::PeerFinished { id } => self.drain(now, id),
                Event::Writable { id } => self.flush_queued(now, id),
                Event::WriteStopped { id } => {
                    if let Some(Local::Tcp(t)) = self.sessions.get_mut(&id) {
                        t.stop_reading();
                    }
                }
                Event::Reset { id, code, reason, remote } => {
                    if code == ResetCode::IDLE_TIMEOUT && !remote {
                        tracing::info!(tunnel = %self.label, session = id, "session idle too long; reset");
                    } else {
                        tracing::debug!(tunnel = %self.label, session = id, code = code.0, %reason, remote, "session reset");
                    }
                    if let Some(Local::Tcp(mut t)) = self.sessions.remove(&id) {
                        t.abort();
                    }
                    if let Some(reply) = self.opening.remove(&id) {
                        let _ = reply.send(Err(OpenFailure::local(reason)));
                    }
                }
                Event::DatagramReadable { id } => self.drain_datagrams(now, id),
                Event::Released { id } => {
                    self.sessions.remove(&id);
                    if let Some(reply) = self.opening.remove(&id) {
                        let _ = reply.send(Err(OpenFailure::local("session closed")));
                    }
                }
                Event::ConnectionClosed { error } => {
                    tracing::debug!(tunnel = %self.label, %error, "tunnel connection closed by the protocol");
                    for (_, l) in self.sessions.drain() {
                        if let Local::Tcp(mut t) = l {
                            t.abort();
                        }
                    }
                    for (_, reply) in self.opening.drain() {
                        let _ = reply.send(Err(OpenFailure::local(format!("tunnel closed: {error}"))));
                    }
                }
            }
        }
    }

    fn command(&mut self, now: Instant, cmd: Cmd) {
        match cmd {
            Cmd::Open { protocol, target, reply } => match self.endpoint.open(now, protocol, target) {
                Ok(id) => {
                    self.opening.insert(id, reply);
                }
                Err(e) => {
                    let rc = if e == SessionError::TooManySessions {
                        OpenRc::TOO_MANY_SESSIONS
                    } else {
                        OpenRc::GENERAL_FAILURE
                    };
                    let _ = reply.send(Err(OpenFailure { rc, reason: e.to_string() }));
                }
            },
            Cmd::AttachTcp { id, stream, leftover, listed } => {
                if self.endpoint.state(id).is_some() {
                    let t = TcpLocal::start(
                        id,
                        stream,
                        leftover,
                        self.tx.clone(),
                        listed,
                        self.end,
                        self.pool.clone(),
                    );
                    self.sessions.insert(id, Local::Tcp(t));
                    self.drain(now, id);
                }
            }
            Cmd::AcceptTcp { id, stream, listed } => {
                if self.endpoint.accept(now, id).is_ok() {
                    self.count_session("opened");
                    let t = TcpLocal::start(
                        id,
                        stream,
                        Vec::new(),
                        self.tx.clone(),
                        listed,
                        self.end,
                        self.pool.clone(),
                    );
                    self.sessions.insert(id, Local::Tcp(t));
                    self.drain(now, id);
                }
            }
            Cmd::AttachUdp { id, sink, accept } => {
                if accept {
                    if self.endpoint.accept(now, id).is_err() {
                        return;
                    }
                    self.count_session("opened");
                }
                if self.endpoint.state(id).is_some() {
                    self.sessions.insert(id, Local::Udp(sink));
                    self.drain_datagrams(now, id);
                }
            }
            Cmd::Refuse { id, rc, reason } => {
                self.count_session("refused");
                let _ = self.endpoint.refuse(now, id, rc, &reason);
            }
            Cmd::Data { id, chunk } => {
                if let Some(Local::Tcp(t)) = self.sessions.get_mut(&id) {
                    t.count_read(chunk.data.len());
                    t.queued.push_back(chunk);
                    self.flush_queued(now, id);
                }
            }
            Cmd::LocalEof { id } => {
                if let Some(Local::Tcp(t)) = self.sessions.get_mut(&id) {
                    t.finish_pending = true;
                    self.flush_queued(now, id);
                }
            }
            Cmd::LocalError { id, error } => {
                tracing::debug!(tunnel = %self.label, session = id, %error, "local socket failed; resetting session");
                if let Some(Local::Tcp(mut t)) = self.sessions.remove(&id) {
                    t.abort();
                }
                let _ = self.endpoint.reset(now, id, ResetCode::IO_ERROR, &error);
            }
            Cmd::Drained { id } => self.drain(now, id),
            Cmd::SendDatagram { id, datagram } => {
                // A full queue drops the datagram, as a congested UDP path would.
                let _ = self.endpoint.send_datagram(now, id, datagram.src, datagram.dst, &datagram.data);
            }
            Cmd::EndSession { id } => {
                self.sessions.remove(&id);
                let _ = self.endpoint.end(now, id, ResetCode::NONE, "closed");
            }
            Cmd::Shutdown => self.endpoint.close(ErrorCode::NO_ERROR),
        }
    }

    /// Moves a session's received bytes to its socket writer, up to the writer's limit.
    fn drain(&mut self, now: Instant, id: SessionId) {
        let Some(Local::Tcp(t)) = self.sessions.get_mut(&id) else { return };
        while t.pending.load(Ordering::Acquire) < WRITE_LIMIT {
            let mut data = self.pool.take();
            match self.endpoint.read_vec(now, id, CHUNK, &mut data) {
                Ok(0) => {
                    self.pool.give(data);
                    if !t.finish_sent_to_writer {
                        t.finish_sent_to_writer = true;
                        let _ = t.writer.send(WriterMsg::Finish);
                    }
                    return;
                }
                Ok(n) => {
                    t.pending.fetch_add(n, Ordering::AcqRel);
                    t.count_written(n);
                    let _ = t.writer.send(WriterMsg::Data(data));
                }
                Err(_) => {
                    self.pool.give(data);
                    return;
                }
            }
        }
    }

    /// Hands a session's queued socket bytes to the endpoint while its send buffer has room.
    fn flush_queued(&mut self, now: Instant, id: SessionId) {
        let Some(Local::Tcp(t)) = self.sessions.get_mut(&id) else { return };
        while let Some(chunk) = t.queued.front_mut() {
            // The endpoint keeps the chunk's buffer when all of it fits (no copy).
            match self.endpoint.write_vec(now, id, &mut chunk.data) {
                Ok(_) => {
                    if chunk.data.is_empty() {
                        // Dropping the chunk returns its credit to the reader: its bytes now count
                        // against the session's send buffer. A buffer the endpoint copied from
                        // goes back to the pool.
                        if let Some(done) = t.queued.pop_front() {
                            self.pool.give(done.data);
                        }
                    }
                }
                Err(SessionError::WouldBlock) => return,
                Err(_) => {
                    // This direction is closed (peer stopped reading, or reset): nothing to send.
                    t.stop_reading();
                    return;
                }
            }
        }
        if t.finish_pending {
            t.finish_pending = false;
            let _ = self.endpoint.finish(now, id);
        }
    }

    fn drain_datagrams(&mut self, now: Instant, id: SessionId) {
        let Some(Local::Udp(sink)) = self.sessions.get(&id) else { return };
        while let Ok(Some(d)) = self.endpoint.recv_datagram(now, id) {
            if let Err(mpsc::error::TrySendError::Closed(_)) = sink.try_send(d) {
                self.sessions.remove(&id);
                let _ = self.endpoint.end(now, id, ResetCode::NONE, "closed");
                return;
            }
        }
    }
}

/// Writes what is pending into TLS, or with nothing pending flushes it; `Ok(0)` means flushed.
async fn write_or_flush<W: AsyncWrite + Unpin>(wr: &mut W, pending: &[u8]) -> std::io::Result<usize> {
    if pending.is_empty() {
        wr.flush().await.map(|()| 0)
    } else {
        wr.write(pending).await
    }
}

/// This connection's share of a process-wide gauge, taken back when dropped (also when the
/// future running the connection is dropped).
struct GaugeShare {
    gauge: prometheus_client::metrics::gauge::Gauge,
    mine: i64,
}

impl GaugeShare {
    fn new(gauge: prometheus_client::metrics::gauge::Gauge, mine: i64) -> Self {
        gauge.inc_by(mine);
        GaugeShare { gauge, mine }
    }

    fn set(&mut self, mine: i64) {
        self.gauge.inc_by(mine - self.mine);
        self.mine = mine;
    }
}

impl Drop for GaugeShare {
    fn drop(&mut self) {
        self.gauge.dec_by(self.mine);
    }
}

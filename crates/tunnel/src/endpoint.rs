//! The multiplexer over one TLS byte stream, shared by portal and gate.
//!
//! Driving order (as quinn-proto documents it): feed received bytes to [`Endpoint::handle_input`];
//! then drain [`Endpoint::poll_event`] and act on the events (accept/refuse, read, write); then
//! call [`Endpoint::poll_transmit`] until it returns false, writing its bytes into TLS while TLS
//! has room; then sleep until input or [`Endpoint::poll_timeout`] and call
//! [`Endpoint::handle_timeout`]. Time is always passed in.
//!
//! Transmission is round-robin over sessions, one record per session per turn, each data record
//! at most `max_data_chunk` bytes and only within the peer's credit: a session whose destination
//! stalls runs out of credit and stops, the others keep their turns.

mod config;
mod error;
mod event;

pub use config::{Config, Role};
pub use error::ConnectionError;
pub use event::Event;

use crate::session::{Datagram, Limits, Session, SessionError, SessionId, State, Violation};
use crate::wire::{
    self, decode, reason_text, DecodeError, ErrorCode, Frame, Hello, OpenRc, Protocol, ResetCode,
};
use crate::Target;
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

/// Counters for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub frames_in: u64,
    pub frames_out: u64,
    /// Records skipped: unknown types, and Close/End/Reset for ids already gone.
    pub ignored: u64,
    pub opens_refused: u64,
}

#[derive(Debug, Clone, Copy)]
struct Peer {
    max_frame_len: u32,
}

pub struct Endpoint {
    config: Config,
    sessions: BTreeMap<SessionId, Session>,
    next_id: u16,
    /// Round-robin position: the first id to offer a turn to.
    cursor: SessionId,
    /// Refusals of Opens that never got a session (limits, unknown protocol).
    refusals: VecDeque<(SessionId, OpenRc, &'static str)>,
    events: VecDeque<Event>,
    rx: Vec<u8>,
    hello_sent: bool,
    peer: Option<Peer>,
    version: u16,
    last_rx: Instant,
    ping_outstanding: bool,
    ping_to_send: bool,
    ping_counter: u64,
    pong_to_send: Option<u64>,
    closed: Option<ConnectionError>,
    goaway_to_send: Option<ErrorCode>,
    stats: Stats,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("role", &self.config.role)
            .field("sessions", &self.sessions.len())
            .field("closed", &self.closed)
            .finish()
    }
}

impl Endpoint {
    pub fn new(mut config: Config, now: Instant) -> Self {
        // A peer refuses a Hello announcing less than the minimum; never send one.
        config.max_frame_len = config.max_frame_len.max(wire::MIN_MAX_FRAME_LEN);
        config.max_data_chunk = config.max_data_chunk.max(1);
        let first = if config.role.id_parity() == 1 { 1 } else { 2 };
        Endpoint {
            config,
            sessions: BTreeMap::new(),
            next_id: first,
            cursor: 0,
            refusals: VecDeque::new(),
            events: VecDeque::new(),
            rx: Vec::new(),
            hello_sent: false,
            peer: None,
            version: 0,
            last_rx: now,
            ping_outstanding: false,
            ping_to_send: false,
            ping_counter: 0,
            pong_to_send: None,
            closed: None,
            goaway_to_send: None,
            stats: Stats::default(),
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            send_buffer: self.config.send_buffer,
            recv_window: self.config.recv_window,
            datagram_count: self.config.datagram_queue_len,
            datagram_bytes: self.config.datagram_queue_bytes,
        }
    }

    // ---- input ---------------------------------------------------------------------------

    /// Feeds bytes received from the peer. On a protocol breach the connection is closed (a
    /// GoAway is queued for `poll_transmit`) and the error returned; later calls return it again.
    pub fn handle_input(&mut self, now: Instant, mut data: &[u8]) -> Result<(), ConnectionError> {
        if let Some(e) = &self.closed {
            return Err(e.clone());
        }
        if !data.is_empty() {
            self.last_rx = now;
            self.ping_outstanding = false;
        }
        // Buffer at most one maximal frame at a time, so input size never drives memory.
        let limit = wire::HEADER_LEN + self.config.max_frame_len as usize;
        let mut rx = std::mem::take(&mut self.rx);
        let result = loop {
            let take = data.len().min(limit - rx.len());
            rx.extend_from_slice(&data[..take]);
            data = &data[take..];
            let mut used = 0;
            let step = loop {
                match decode(&rx[used..], self.config.max_frame_len) {
                    Ok((frame, n)) => {
                        used += n;
                        self.stats.frames_in += 1;
                        if let Err(e) = self.handle_frame(now, frame) {
                            break Err(e);
                        }
                    }
                    Err(DecodeError::Incomplete { .. }) => break Ok(()),
                    Err(DecodeError::TooLong { len, max }) => {
                        break Err(ConnectionError::protocol(
                            ErrorCode::FRAME_TOO_LARGE,
                            format!("record of {len} bytes, limit {max}"),
                        ))
                    }
                    Err(e @ DecodeError::Malformed(_)) => {
                        break Err(ConnectionError::protocol(
                            ErrorCode::PROTOCOL_ERROR,
                            e.to_string(),
                        ))
                    }
                }
                if self.closed.is_some() {
                    break Ok(());
                }
            };
            rx.drain(..used);
            if step.is_err() || data.is_empty() || self.closed.is_some() {
                break step;
            }
        };
        self.rx = rx;
        if let Err(e) = result {
            self.fail(e.clone());
            return Err(e);
        }
        match &self.closed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn handle_frame(&mut self, now: Instant, frame: Frame<'_>) -> Result<(), ConnectionError> {
        let Some(_) = self.peer else {
            return match frame {
                Frame::Hello(h) => self.on_hello(h),
                other => Err(ConnectionError::protocol(
                    ErrorCode::PROTOCOL_ERROR,
                    format!("first record must be Hello, got {:?}", other.frame_type()),
                )),
            };
        };
        let id = frame.session();
        let mut ev = std::mem::take(&mut self.events);
        let result = match frame {
            Frame::Hello(_) => Err(violation("second Hello")),
            Frame::Ping { payload } => {
                self.pong_to_send = Some(payload);
                Ok(())
            }
            Frame::Pong { .. } => Ok(()),
            Frame::GoAway { code, reason } => {
                self.fail(ConnectionError::PeerGoAway {
                    code,
                    reason: reason_text(reason),
                });
                Ok(())
            }
            Frame::Open {
                session,
                protocol,
                window,
                target,
            } => self.on_open(now, session, protocol, window, target, &mut ev),
            Frame::Unknown { .. } => {
                self.stats.ignored += 1;
                Ok(())
            }
            frame => self.on_session_frame(now, frame, &mut ev),
        };
        ev.append(&mut self.events);
        self.events = ev;
        if result.is_ok() {
            self.release_if_done(id);
        }
        result
    }

    fn on_hello(&mut self, h: Hello) -> Result<(), ConnectionError> {
        if h.role > 1 {
            return Err(violation("unknown role in Hello"));
        }
        if h.role == self.config.role.wire() {
            return Err(violation("both ends claim the same role"));
        }
        if h.min_version > wire::VERSION || h.max_version < wire::VERSION {
            return Err(ConnectionError::VersionMismatch {
                peer_min: h.min_version,
                peer_max: h.max_version,
            });
        }
        if h.max_frame_len < wire::MIN_MAX_FRAME_LEN {
            return Err(violation("peer's max frame length is below the minimum"));
        }
        self.peer = Some(Peer {
            max_frame_len: h.max_frame_len,
        });
        self.version = wire::VERSION;
        self.events.push_back(Event::Connected {
            version: self.version,
        });
        Ok(())
    }

    fn on_open(
        &mut self,
        now: Instant,
        id: SessionId,
        protocol: Protocol,
        window: u32,
        target: Target,
        ev: &mut VecDeque<Event>,
    ) -> Result<(), ConnectionError> {
        if id % 2 == self.config.role.id_parity() {
            return Err(violation("Open with an id from our half of the id space"));
        }
        if self.sessions.contains_key(&id) {
            return Err(violation("Open for a session id still in use"));
        }
        let refusal = if protocol != Protocol::TCP && protocol != Protocol::UDP {
            Some((OpenRc::UNSUPPORTED, "unsupported protocol"))
        } else if self.sessions.len() >= self.config.max_sessions {
            Some((OpenRc::TOO_MANY_SESSIONS, "session limit reached"))
        } else {
            None
        };
        if let Some((rc, why)) = refusal {
            if self.refusals.len() >= self.config.max_sessions {
                return Err(violation("Open flood: refusals not being read"));
            }
            self.stats.opens_refused += 1;
            self.refusals.push_back((id, rc, why));
            return Ok(());
        }
        let limits = self.limits();
        self.sessions
            .insert(id, Session::incoming(id, protocol, window, limits, now));
        ev.push_back(Event::OpenRequest {
            id,
            protocol,
            target,
        });
        Ok(())
    }

    fn on_session_frame(
        &mut self,
        now: Instant,
        frame: Frame<'_>,
        ev: &mut VecDeque<Event>,
    ) -> Result<(), ConnectionError> {
        let id = frame.session();
        let Some(s) = self.sessions.get_mut(&id) else {
            // Terminals for a session we refused or already released are harmless leftovers;
            // anything else names a session that never existed.
            return match frame {
                Frame::Close { .. } | Frame::End { .. } | Frame::Reset { .. } => {
                    self.stats.ignored += 1;
                    Ok(())
                }
                other => Err(violation(&format!(
                    "{:?} for unknown session {id}",
                    other.frame_type()
                ))),
            };
        };
        s.last_activity = now;
        let r: Result<(), Violation> = match frame {
            Frame::OpenReply {
                rc, window, reason, ..
            } => s.on_open_reply(rc, window, reason, ev),
            Frame::Send { data, .. } => s.on_send(data, ev),
            Frame::Close { direction, .. } => s.on_close(direction, ev),
            Frame::SendUdp { src, dst, data, .. } => s.on_send_udp(
                Datagram {
                    src,
                    dst,
                    data: data.to_vec(),
                },
                ev,
            ),
            Frame::Ack { size, .. } => s.on_ack(size),
            Frame::End { code, reason, .. } => s.on_end_or_reset(true, code, reason, ev),
            Frame::Reset { code, reason, .. } => s.on_end_or_reset(false, code, reason, ev),
            _ => Ok(()),
        };
        r.map_err(|v| ConnectionError::protocol(v.code, format!("session {id}: {}", v.what)))
    }

    fn release_if_done(&mut self, id: SessionId) {
        if self.sessions.get(&id).is_some_and(Session::is_released) {
            self.sessions.remove(&id);
            self.events.push_back(Event::Released { id });
        }
    }

    fn fail(&mut self, error: ConnectionError) {
        if self.closed.is_some() {
            return;
        }
        self.goaway_to_send = error.goaway_code();
        self.sessions.clear();
        self.refusals.clear();
        self.rx = Vec::new();
        self.events.push_back(Event::ConnectionClosed {
            error: error.clone(),
        });
        self.closed = Some(error);
    }

    // ---- output --------------------------------------------------------------------------

    /// Appends the next record to `out`; false when there is nothing to send right now.
    pub fn poll_transmit(&mut self, _now: Instant, out: &mut Vec<u8>) -> bool {
        let sent = self.next_record(out);
        if sent {
            self.stats.frames_out += 1;
        }
        sent
    }

    fn next_record(&mut self, out: &mut Vec<u8>) -> bool {
        if let Some(e) = &self.closed {
            return match self.goaway_to_send.take() {
                Some(code) => {
                    let reason = e.to_string();
                    Frame::GoAway {
                        code,
                        reason: reason.as_bytes(),
                    }
                    .encode(out);
                    true
                }
                None => false,
            };
        }
        if !self.hello_sent {
            self.hello_sent = true;
            Frame::Hello(Hello {
                min_version: wire::VERSION,
                max_version: wire::VERSION,
                role: self.config.role.wire(),
                max_frame_len: self.config.max_frame_len,
            })
            .encode(out);
            return true;
        }
        if let Some(payload) = self.pong_to_send.take() {
            Frame::Pong { payload }.encode(out);
            return true;
        }
        if self.ping_to_send {
            self.ping_to_send = false;
            self.ping_counter += 1;
            Frame::Ping {
                payload: self.ping_counter,
            }
            .encode(out);
            return true;
        }
        // Session records wait for the peer's Hello: its max frame length bounds them.
        let Some(peer) = self.peer else { return false };
        if let Some((session, rc, why)) = self.refusals.pop_front() {
            Frame::OpenReply {
                session,
                rc,
                window: 0,
                reason: why.as_bytes(),
            }
            .encode(out);
            return true;
        }
        let max_data = self
            .config
            .max_data_chunk
            .min(peer.max_frame_len as usize)
            .max(1);
        let order: Vec<SessionId> = self
            .sessions
            .range(self.cursor..)
            .chain(self.sessions.range(..self.cursor))
            .map(|(id, _)| *id)
            .collect();
        for id in order {
            let s = self.sessions.get_mut(&id).expect("id listed above");
            if s.poll_frame(out, max_data, &mut self.events) {
                self.cursor = id.wrapping_add(1);
                self.release_if_done(id);
                return true;
            }
        }
        false
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- time ----------------------------------------------------------------------------

    /// When `handle_timeout` next has work: keepalive, connection timeout, session reaping.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        let mut t = self.last_rx + self.config.idle_timeout;
        if !self.ping_outstanding {
            t = t.min(self.last_rx + self.config.keepalive_interval);
        }
        for s in self
            .sessions
            .values()
            .filter(|s| !s.awaiting_peer_terminal())
        {
            t = t.min(s.last_activity + self.config.session_idle_timeout);
        }
        Some(t)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        if now >= self.last_rx + self.config.idle_timeout {
            self.fail(ConnectionError::TimedOut);
            return;
        }
        if !self.ping_outstanding && now >= self.last_rx + self.config.keepalive_interval {
            self.ping_outstanding = true;
            self.ping_to_send = true;
        }
        let idle = self.config.session_idle_timeout;
        let reaped: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.awaiting_peer_terminal() && now >= s.last_activity + idle)
            .map(|(id, _)| *id)
            .collect();
        for id in reaped {
            self.events.push_back(Event::Reset {
                id,
                code: ResetCode::IDLE_TIMEOUT,
                reason: "idle".into(),
                remote: false,
            });
            self.abort(id, ResetCode::IDLE_TIMEOUT, "idle", false);
        }
    }

    // ---- application calls ---------------------------------------------------------------

    /// Opens a session to `target`; `Event::Opened` or `Event::OpenFailed` follows.
    pub fn open(
        &mut self,
        now: Instant,
        protocol: Protocol,
        target: Target,
    ) -> Result<SessionId, SessionError> {
        if self.closed.is_some() {
            return Err(SessionError::ConnectionClosed);
        }
        if protocol != Protocol::TCP && protocol != Protocol::UDP {
            return Err(SessionError::WrongProtocol);
        }
        if self.sessions.len() >= self.config.max_sessions {
            return Err(SessionError::TooManySessions);
        }
        let id = self.allocate_id()?;
        let limits = self.limits();
        self.sessions
            .insert(id, Session::outgoing(id, protocol, target, limits, now));
        Ok(id)
    }

    /// Next free id of our parity, never 0; ids return to the pool only when released.
    fn allocate_id(&mut self) -> Result<SessionId, SessionError> {
        for _ in 0..=u16::MAX / 2 {
            let id = self.next_id;
            self.next_id = match id.checked_add(2) {
                Some(n) => n,
                None => 2 - self.config.role.id_parity(),
            };
            if id != 0 && !self.sessions.contains_key(&id) {
                return Ok(id);
            }
        }
        Err(SessionError::IdsExhausted)
    }

    fn session(&mut self, now: Instant, id: SessionId) -> Result<&mut Session, SessionError> {
        if self.closed.is_some() {
            return Err(SessionError::ConnectionClosed);
        }
        let s = self
            .sessions
            .get_mut(&id)
            .ok_or(SessionError::UnknownSession)?;
        s.last_activity = now;
        Ok(s)
    }

    /// Accepts a session announced by `Event::OpenRequest`.
    pub fn accept(&mut self, now: Instant, id: SessionId) -> Result<(), SessionError> {
        self.session(now, id)?.accept()
    }

    /// Refuses a session announced by `Event::OpenRequest` (policy, failed connect, ...).
    pub fn refuse(
        &mut self,
        now: Instant,
        id: SessionId,
        rc: OpenRc,
        reason: &str,
    ) -> Result<(), SessionError> {
        self.session(now, id)?.refuse(rc, reason)
    }

    /// Queues bytes; returns how many fit (`WouldBlock` if none did; `Writable` follows).
    pub fn write(
        &mut self,
        now: Instant,
        id: SessionId,
        data: &[u8],
    ) -> Result<usize, SessionError> {
        self.session(now, id)?.write(data)
    }

    /// Reads buffered bytes; `Ok(0)` for a non-empty `buf` is end of stream.
    pub fn read(
        &mut self,
        now: Instant,
        id: SessionId,
        buf: &mut [u8],
    ) -> Result<usize, SessionError> {
        self.session(now, id)?.read(buf)
    }

    /// Half-close: no more data from us (Close write after what is buffered).
    pub fn finish(&mut self, now: Instant, id: SessionId) -> Result<(), SessionError> {
        self.session(now, id)?.finish()
    }

    /// We will not read this session any more (Close read); the peer stops writing.
    pub fn stop_reading(&mut self, now: Instant, id: SessionId) -> Result<(), SessionError> {
        self.session(now, id)?.stop_reading()
    }

    /// Abortive close with Reset: queued data in both directions is dropped.
    pub fn reset(
        &mut self,
        now: Instant,
        id: SessionId,
        code: ResetCode,
        reason: &str,
    ) -> Result<(), SessionError> {
        self.session(now, id)?;
        self.abort(id, code, reason, false);
        Ok(())
    }

    /// Abortive close with End (the seed's "complete shutdown" with a reason).
    pub fn end(
        &mut self,
        now: Instant,
        id: SessionId,
        code: ResetCode,
        reason: &str,
    ) -> Result<(), SessionError> {
        self.session(now, id)?;
        self.abort(id, code, reason, true);
        Ok(())
    }

    fn abort(&mut self, id: SessionId, code: ResetCode, reason: &str, end: bool) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.never_announced() {
            self.sessions.remove(&id);
            self.events.push_back(Event::Released { id });
            return;
        }
        s.reset(code, reason, end);
    }

    pub fn send_datagram(
        &mut self,
        now: Instant,
        id: SessionId,
        src: Target,
        dst: Target,
        data: &[u8],
    ) -> Result<(), SessionError> {
        let max = self
            .peer
            .map_or(wire::MIN_MAX_FRAME_LEN, |p| p.max_frame_len) as usize;
        self.session(now, id)?.send_datagram(
            Datagram {
                src,
                dst,
                data: data.to_vec(),
            },
            max,
        )
    }

    pub fn recv_datagram(
        &mut self,
        now: Instant,
        id: SessionId,
    ) -> Result<Option<Datagram>, SessionError> {
        Ok(self.session(now, id)?.recv_datagram())
    }

    /// Closes the whole connection with GoAway.
    pub fn close(&mut self, code: ErrorCode) {
        self.fail(ConnectionError::Local { code });
    }

    // ---- inspection ----------------------------------------------------------------------

    pub fn state(&self, id: SessionId) -> Option<State> {
        self.sessions.get(&id).map(Session::state)
    }

    /// Bytes held for a session (send and receive buffers, datagram queues).
    pub fn buffered(&self, id: SessionId) -> Option<usize> {
        self.sessions.get(&id).map(Session::buffered)
    }

    /// Bytes the session sent that the peer has not acknowledged yet.
    pub fn in_flight(&self, id: SessionId) -> Option<u64> {
        self.sessions.get(&id).map(Session::in_flight)
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_connected(&self) -> bool {
        self.peer.is_some() && self.closed.is_none()
    }

    pub fn error(&self) -> Option<&ConnectionError> {
        self.closed.as_ref()
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
}

fn violation(what: &str) -> ConnectionError {
    ConnectionError::protocol(ErrorCode::PROTOCOL_ERROR, what)
}

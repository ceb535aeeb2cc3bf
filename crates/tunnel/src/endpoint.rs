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

mod api;
mod config;
mod error;
mod event;
mod input;
mod timers;
mod transmit;

pub use config::{Config, Role};
pub use error::ConnectionError;
pub use event::Event;

use crate::session::{Limits, Session, SessionId, State};
use crate::wire::{self, ErrorCode, OpenRc, ResetCode};
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

/// Emptied buffers an endpoint keeps (sent ones, and those `read_vec` got in exchange for a
/// receive buffer) until the driver or received bytes take them; the rest are freed.
pub const SPENT_KEEP: usize = 4;
/// Of those, kept for received bytes while the connection has sessions
/// ([`Endpoint::take_spent_buffer`] leaves them).
pub const SPENT_RESERVE: usize = 2;

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
    /// Emptied buffers kept for the driver ([`Endpoint::take_spent_buffer`]) and for received
    /// bytes, at most [`SPENT_KEEP`].
    spent: Vec<Vec<u8>>,
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
            spent: Vec::new(),
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
        self.events.push_back(Event::ConnectionClosed { error: error.clone() });
        self.closed = Some(error);
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

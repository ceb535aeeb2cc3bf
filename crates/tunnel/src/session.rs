//! One session: its states, its half-closes, and its Ack-based windows.
//!
//! Each side sends exactly one *terminal* record per session — Close(both), End, Reset, or a
//! refusing OpenReply — and sends nothing more for that id afterwards. A session is released when
//! its terminal was both sent and received, so on the ordered byte stream nothing for the old
//! session can arrive after its opener reuses the id.

mod app;
mod datagram;
mod flow;
mod receive;
mod transmit;

use crate::wire::{ErrorCode, OpenRc, Protocol, ResetCode};
use crate::Target;
pub use datagram::Datagram;
use datagram::DatagramQueue;
use flow::{RecvBuf, SendBuf};
use std::time::Instant;

/// A session id, shared by both ends; the opener picks it from its half of the id space.
pub type SessionId = u16;

/// Where a session is in its life (docs/tunnel-protocol.md, "Half-close and session states").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Opener: Open sent, no OpenReply yet.
    Pending,
    /// Acceptor: Open received, the application has not accepted or refused it.
    Accepting,
    /// Both directions carry data.
    Active,
    /// We sent Close(write) (local EOF); the peer's data still flows to us.
    LocalFinished,
    /// The peer sent Close(write); our data still flows to it.
    PeerFinished,
    /// Our terminal record is queued or sent; waiting for the peer's.
    Closing,
}

/// Why a session operation did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("no such session")]
    UnknownSession,
    #[error("would block")]
    WouldBlock,
    #[error("session is not open yet")]
    NotOpen,
    #[error("this direction of the session is closed")]
    Closed,
    #[error("operation does not fit the session's protocol")]
    WrongProtocol,
    #[error("datagram queue full; datagram dropped")]
    QueueFull,
    #[error("datagram larger than the peer accepts")]
    TooLarge,
    #[error("session limit reached")]
    TooManySessions,
    #[error("session ids exhausted")]
    IdsExhausted,
    #[error("connection is closed")]
    ConnectionClosed,
}

/// A session-level breach of the protocol; the endpoint turns it into a GoAway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Violation {
    pub code: ErrorCode,
    pub what: &'static str,
}

fn violation(what: &'static str) -> Violation {
    Violation { code: ErrorCode::PROTOCOL_ERROR, what }
}

/// Sizes that bound one session's memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub send_buffer: usize,
    pub recv_window: u32,
    pub datagram_count: usize,
    pub datagram_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteSide {
    Open,
    /// `finish` was called; Close(write) follows the buffered data.
    Finishing,
    /// Close(write) sent.
    Finished,
    /// The peer stopped reading, or the session was reset.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadSide {
    Open,
    /// Close(write) received.
    Finished,
    /// We stopped reading, or the session was reset.
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Terminal {
    CloseBoth,
    Reset(ResetCode, String),
    End(ResetCode, String),
    Refuse(OpenRc, String),
}

#[derive(Debug)]
pub(crate) struct Session {
    id: SessionId,
    protocol: Protocol,
    target: Option<Target>,
    /// Opener: the Open record is still to be sent.
    open_to_send: bool,
    /// Acceptor: the application has not decided yet.
    awaiting_decision: bool,
    /// Acceptor: the positive OpenReply is still to be sent.
    reply_to_send: bool,
    /// Data may flow (positive OpenReply received, or accepted).
    established: bool,
    close_read_to_send: bool,
    write: WriteSide,
    read: ReadSide,
    send: SendBuf,
    recv: RecvBuf,
    dgrams_out: DatagramQueue,
    dgrams_in: DatagramQueue,
    terminal_to_send: Option<Terminal>,
    terminal_sent: bool,
    terminal_received: bool,
    /// We refused the Open: the opener owes no terminal in return.
    refused: bool,
    want_writable: bool,
    /// Send-buffer room that `Writable` waits for (the size of a buffer refused whole).
    want_room: usize,
    pub last_activity: Instant,
}

impl Session {
    /// A session we open; the Open record goes out on the next poll.
    pub fn outgoing(id: SessionId, protocol: Protocol, target: Target, l: Limits, now: Instant) -> Self {
        let mut s = Session::new(id, protocol, l, now);
        s.target = Some(target);
        s.open_to_send = true;
        s
    }

    /// A session the peer asked for; the application decides with `accept` or `refuse`.
    pub fn incoming(id: SessionId, protocol: Protocol, peer_window: u32, l: Limits, now: Instant) -> Self {
        let mut s = Session::new(id, protocol, l, now);
        s.awaiting_decision = true;
        s.send.set_peer_window(peer_window);
        s
    }

    fn new(id: SessionId, protocol: Protocol, l: Limits, now: Instant) -> Self {
        Session {
            id,
            protocol,
            target: None,
            open_to_send: false,
            awaiting_decision: false,
            reply_to_send: false,
            established: false,
            close_read_to_send: false,
            write: WriteSide::Open,
            read: ReadSide::Open,
            send: SendBuf::new(l.send_buffer),
            recv: RecvBuf::new(l.recv_window),
            dgrams_out: DatagramQueue::new(l.datagram_count, l.datagram_bytes),
            dgrams_in: DatagramQueue::new(l.datagram_count, l.datagram_bytes),
            terminal_to_send: None,
            terminal_sent: false,
            terminal_received: false,
            refused: false,
            want_writable: false,
            want_room: 1,
            last_activity: now,
        }
    }

    pub fn state(&self) -> State {
        let write_done = matches!(self.write, WriteSide::Finished | WriteSide::Stopped);
        let read_done = self.read != ReadSide::Open;
        if self.terminal_sent || self.terminal_to_send.is_some() || self.terminal_received {
            State::Closing
        } else if self.awaiting_decision {
            State::Accepting
        } else if !self.established {
            State::Pending
        } else if write_done && read_done {
            State::Closing
        } else if write_done {
            State::LocalFinished
        } else if read_done {
            State::PeerFinished
        } else {
            State::Active
        }
    }

    /// Both terminals crossed (a refusal needs none back): the id can be forgotten.
    pub fn is_released(&self) -> bool {
        self.terminal_sent && (self.terminal_received || self.refused)
    }

    /// Opener, before the Open went out: nothing was said, so the session can vanish silently.
    pub fn never_announced(&self) -> bool {
        self.open_to_send
    }

    /// Our terminal is queued or sent; only the peer's is missing (not subject to reaping).
    pub fn awaiting_peer_terminal(&self) -> bool {
        self.closing_locally()
    }

    /// Bytes this session holds in memory (buffers and datagram queues).
    pub fn buffered(&self) -> usize {
        self.send.buffered() + self.recv.buffered() + self.dgrams_out.bytes() + self.dgrams_in.bytes()
    }

    /// Our terminal is queued or sent: the peer's records still in flight are dropped.
    fn closing_locally(&self) -> bool {
        self.terminal_sent || self.terminal_to_send.is_some()
    }

    fn check_stream(&self) -> Result<(), SessionError> {
        if self.protocol != Protocol::TCP {
            return Err(SessionError::WrongProtocol);
        }
        if !self.established {
            return Err(SessionError::NotOpen);
        }
        Ok(())
    }

    fn discard(&mut self) {
        self.send.clear();
        self.recv.clear();
        self.dgrams_out.clear();
        self.dgrams_in.clear();
        self.write = WriteSide::Stopped;
        self.read = ReadSide::Stopped;
        self.close_read_to_send = false;
    }
}

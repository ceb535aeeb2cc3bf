//! One session: the seed's Fig. 7 states, its half-closes, and its Ack-based windows.
//!
//! Each side sends exactly one *terminal* record per session — Close(both), End, Reset, or a
//! refusing OpenReply — and sends nothing more for that id afterwards. A session is released when
//! its terminal was both sent and received, so on the ordered byte stream nothing for the old
//! session can arrive after its opener reuses the id.

mod datagram;
mod flow;

use crate::endpoint::Event;
use crate::wire::{reason_text, Direction, ErrorCode, Frame, OpenRc, Protocol, ResetCode};
use crate::Target;
pub use datagram::Datagram;
use datagram::DatagramQueue;
use flow::{RecvBuf, SendBuf};
use std::collections::VecDeque;
use std::time::Instant;

/// A session id, shared by both ends; the opener picks it from its half of the id space.
pub type SessionId = u16;

/// Where a session is in its life (the seed's Fig. 7, plus Accepting and Closing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Opener: Open sent, no OpenReply yet (the seed's initial "inactive").
    Pending,
    /// Acceptor: Open received, the application has not accepted or refused it.
    Accepting,
    /// Both directions carry data (the seed's "active").
    Active,
    /// We sent Close(write) (local EOF); the peer's data still flows to us — the seed's
    /// "WriteThread active".
    LocalFinished,
    /// The peer sent Close(write); our data still flows to it — the seed's "Session active".
    PeerFinished,
    /// Our terminal record is queued or sent; waiting for the peer's (the seed's "inactive").
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
    Violation {
        code: ErrorCode::PROTOCOL_ERROR,
        what,
    }
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
    pub last_activity: Instant,
}

impl Session {
    /// A session we open; the Open record goes out on the next poll.
    pub fn outgoing(
        id: SessionId,
        protocol: Protocol,
        target: Target,
        l: Limits,
        now: Instant,
    ) -> Self {
        let mut s = Session::new(id, protocol, l, now);
        s.target = Some(target);
        s.open_to_send = true;
        s
    }

    /// A session the peer asked for; the application decides with `accept` or `refuse`.
    pub fn incoming(
        id: SessionId,
        protocol: Protocol,
        peer_window: u32,
        l: Limits,
        now: Instant,
    ) -> Self {
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
        self.send.buffered()
            + self.recv.buffered()
            + self.dgrams_out.bytes()
            + self.dgrams_in.bytes()
    }

    // ---- application calls -------------------------------------------------------------

    pub fn accept(&mut self) -> Result<(), SessionError> {
        if !self.awaiting_decision {
            return Err(SessionError::NotOpen);
        }
        self.awaiting_decision = false;
        self.established = true;
        self.reply_to_send = true;
        Ok(())
    }

    pub fn refuse(&mut self, rc: OpenRc, reason: &str) -> Result<(), SessionError> {
        if !self.awaiting_decision {
            return Err(SessionError::NotOpen);
        }
        self.awaiting_decision = false;
        // A refusal ends the session for both ends: the opener sends no terminal in return.
        self.refused = true;
        self.terminal_to_send = Some(Terminal::Refuse(rc, reason.to_string()));
        Ok(())
    }

    pub fn write(&mut self, data: &[u8]) -> Result<usize, SessionError> {
        self.check_stream()?;
        if self.write != WriteSide::Open || self.terminal_sent || self.terminal_to_send.is_some() {
            return Err(SessionError::Closed);
        }
        let n = self.send.write(data);
        if n < data.len() {
            self.want_writable = true;
        }
        if n == 0 && !data.is_empty() {
            return Err(SessionError::WouldBlock);
        }
        Ok(n)
    }

    /// Ok(0) for a non-empty `buf` means end of stream.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, SessionError> {
        self.check_stream()?;
        if self.recv.is_empty() {
            return match self.read {
                ReadSide::Open if !self.terminal_received => Err(SessionError::WouldBlock),
                ReadSide::Open | ReadSide::Finished => Ok(0),
                ReadSide::Stopped => Err(SessionError::Closed),
            };
        }
        Ok(self.recv.read(buf))
    }

    /// Local end of stream: Close(write) follows the data already written.
    pub fn finish(&mut self) -> Result<(), SessionError> {
        match self.write {
            WriteSide::Open => {
                self.write = WriteSide::Finishing;
                Ok(())
            }
            WriteSide::Finishing | WriteSide::Finished => Ok(()),
            WriteSide::Stopped => Err(SessionError::Closed),
        }
    }

    /// We will read no more: buffered input is dropped and the peer is told to stop writing.
    pub fn stop_reading(&mut self) -> Result<(), SessionError> {
        self.check_stream()?;
        if self.read == ReadSide::Open {
            self.read = ReadSide::Stopped;
            self.close_read_to_send = true;
        }
        self.recv.clear();
        Ok(())
    }

    /// Abortive close (Reset, or End when `end`); a session not yet accepted is refused instead.
    pub fn reset(&mut self, code: ResetCode, reason: &str, end: bool) {
        if self.terminal_sent || self.terminal_to_send.is_some() {
            return;
        }
        self.discard();
        self.terminal_to_send = Some(if self.awaiting_decision {
            self.awaiting_decision = false;
            self.refused = true;
            Terminal::Refuse(OpenRc::CANCELLED, reason.to_string())
        } else if end {
            Terminal::End(code, reason.to_string())
        } else {
            Terminal::Reset(code, reason.to_string())
        });
    }

    pub fn send_datagram(&mut self, d: Datagram, max_payload: usize) -> Result<(), SessionError> {
        if self.protocol != Protocol::UDP {
            return Err(SessionError::WrongProtocol);
        }
        if !self.established {
            return Err(SessionError::NotOpen);
        }
        if self.write != WriteSide::Open || self.terminal_sent || self.terminal_to_send.is_some() {
            return Err(SessionError::Closed);
        }
        if d.encoded_len() > max_payload {
            return Err(SessionError::TooLarge);
        }
        self.dgrams_out.push(d).map_err(|_| SessionError::QueueFull)
    }

    pub fn recv_datagram(&mut self) -> Option<Datagram> {
        self.dgrams_in.pop()
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

    // ---- records from the peer ----------------------------------------------------------

    /// Records for a session whose terminal we already sent are the peer's last words before it
    /// saw ours: dropped. Records after the peer's own terminal break the protocol.
    fn accepting_records(&self) -> Result<bool, Violation> {
        if self.terminal_received {
            return Err(violation("record after the session's terminal record"));
        }
        Ok(!self.closing_locally())
    }

    pub fn on_open_reply(
        &mut self,
        rc: OpenRc,
        window: u32,
        reason: &[u8],
        ev: &mut VecDeque<Event>,
    ) -> Result<(), Violation> {
        if self.target.is_none() || self.established || self.open_to_send {
            return Err(violation("unexpected OpenReply"));
        }
        if self.terminal_received {
            return Err(violation("record after the session's terminal record"));
        }
        let live = !self.closing_locally();
        if rc == OpenRc::OK {
            if live {
                self.established = true;
                self.send.set_peer_window(window);
                ev.push_back(Event::Opened { id: self.id });
            }
            // If we already reset it, the peer answers our Reset with its terminal.
        } else {
            self.terminal_received = true;
            if live {
                // Nothing is owed in return: the refusing side kept no state.
                self.terminal_sent = true;
                ev.push_back(Event::OpenFailed {
                    id: self.id,
                    rc,
                    reason: reason_text(reason),
                });
            }
        }
        Ok(())
    }

    pub fn on_send(&mut self, data: &[u8], ev: &mut VecDeque<Event>) -> Result<(), Violation> {
        if self.protocol != Protocol::TCP {
            return Err(violation("Send on a UDP session"));
        }
        if !self.established && !self.closing_locally() {
            return Err(violation("Send before the session was open"));
        }
        if !self.accepting_records()? {
            return Ok(());
        }
        match self.read {
            ReadSide::Finished => return Err(violation("Send after Close(write)")),
            ReadSide::Stopped => return Ok(()),
            ReadSide::Open => {}
        }
        let was_empty = self.recv.is_empty();
        self.recv.push(data).map_err(|_| Violation {
            code: ErrorCode::FLOW_CONTROL,
            what: "Send beyond the announced window",
        })?;
        if was_empty && !data.is_empty() {
            ev.push_back(Event::Readable { id: self.id });
        }
        Ok(())
    }

    pub fn on_send_udp(&mut self, d: Datagram, ev: &mut VecDeque<Event>) -> Result<(), Violation> {
        if self.protocol != Protocol::UDP {
            return Err(violation("SendUdp on a TCP session"));
        }
        if !self.established && !self.closing_locally() {
            return Err(violation("SendUdp before the session was open"));
        }
        if !self.accepting_records()? || self.read != ReadSide::Open {
            return Ok(());
        }
        let was_empty = self.dgrams_in.is_empty();
        // Datagrams are not flow controlled: when the application is slow, they are dropped.
        if self.dgrams_in.push(d).is_ok() && was_empty {
            ev.push_back(Event::DatagramReadable { id: self.id });
        }
        Ok(())
    }

    pub fn on_ack(&mut self, size: u32) -> Result<(), Violation> {
        if !self.established && !self.closing_locally() {
            return Err(violation("Ack before the session was open"));
        }
        if !self.accepting_records()? {
            return Ok(());
        }
        self.send.on_ack(size).map_err(|_| Violation {
            code: ErrorCode::FLOW_CONTROL,
            what: "Ack for more bytes than were sent",
        })
    }

    pub fn on_close(&mut self, dir: Direction, ev: &mut VecDeque<Event>) -> Result<(), Violation> {
        if dir == Direction::BOTH {
            return self.on_terminal(Terminal::CloseBoth, ev);
        }
        if !self.established && !self.closing_locally() {
            return Err(violation("Close before the session was open"));
        }
        if !self.accepting_records()? {
            return Ok(());
        }
        match dir {
            Direction::WRITE => {
                if self.read == ReadSide::Finished {
                    return Err(violation("second Close(write)"));
                }
                if self.read == ReadSide::Open {
                    self.read = ReadSide::Finished;
                    ev.push_back(Event::PeerFinished { id: self.id });
                }
            }
            Direction::READ => {
                if matches!(self.write, WriteSide::Open | WriteSide::Finishing) {
                    self.write = WriteSide::Stopped;
                    self.send.clear();
                    self.dgrams_out.clear();
                    ev.push_back(Event::WriteStopped { id: self.id });
                }
            }
            _ => return Err(violation("unknown Close direction")),
        }
        Ok(())
    }

    pub fn on_end_or_reset(
        &mut self,
        end: bool,
        code: ResetCode,
        reason: &[u8],
        ev: &mut VecDeque<Event>,
    ) -> Result<(), Violation> {
        let reason = reason_text(reason);
        self.on_terminal(
            if end {
                Terminal::End(code, reason)
            } else {
                Terminal::Reset(code, reason)
            },
            ev,
        )
    }

    fn on_terminal(&mut self, t: Terminal, ev: &mut VecDeque<Event>) -> Result<(), Violation> {
        if self.terminal_received {
            return Err(violation("second terminal record"));
        }
        self.terminal_received = true;
        if self.closing_locally() {
            return Ok(()); // our terminals crossed
        }
        let graceful = t == Terminal::CloseBoth
            && self.read != ReadSide::Open
            && matches!(self.write, WriteSide::Finished | WriteSide::Stopped);
        if graceful {
            // Our own Close(both) follows once the application has drained its input.
            return Ok(());
        }
        let (code, reason) = match t {
            Terminal::Reset(c, r) | Terminal::End(c, r) => (c, r),
            _ => (ResetCode::NONE, "peer closed both directions".to_string()),
        };
        self.discard();
        self.terminal_to_send = Some(if self.awaiting_decision {
            self.awaiting_decision = false;
            Terminal::Refuse(OpenRc::CANCELLED, String::new())
        } else {
            Terminal::CloseBoth
        });
        ev.push_back(Event::Reset {
            id: self.id,
            code,
            reason,
            remote: true,
        });
        Ok(())
    }

    // ---- records to the peer ------------------------------------------------------------

    /// Encodes this session's next record into `out`, if it has one. Order within a session:
    /// terminal, Open / OpenReply, Close(read), Ack, datagram, data, Close(write), Close(both).
    pub fn poll_frame(
        &mut self,
        out: &mut Vec<u8>,
        max_data: usize,
        ev: &mut VecDeque<Event>,
    ) -> bool {
        let session = self.id;
        if let Some(t) = self.terminal_to_send.take() {
            self.terminal_sent = true;
            let frame = match &t {
                Terminal::CloseBoth => Frame::Close {
                    session,
                    direction: Direction::BOTH,
                },
                Terminal::Reset(code, r) => Frame::Reset {
                    session,
                    code: *code,
                    reason: r.as_bytes(),
                },
                Terminal::End(code, r) => Frame::End {
                    session,
                    code: *code,
                    reason: r.as_bytes(),
                },
                Terminal::Refuse(rc, r) => Frame::OpenReply {
                    session,
                    rc: *rc,
                    window: 0,
                    reason: r.as_bytes(),
                },
            };
            frame.encode(out);
            return true;
        }
        if self.terminal_sent {
            return false;
        }
        if self.open_to_send {
            self.open_to_send = false;
            let target = self
                .target
                .clone()
                .expect("outgoing sessions have a target");
            Frame::Open {
                session,
                protocol: self.protocol,
                window: self.recv.window(),
                target,
            }
            .encode(out);
            return true;
        }
        if !self.established {
            return false;
        }
        if self.reply_to_send {
            self.reply_to_send = false;
            Frame::OpenReply {
                session,
                rc: OpenRc::OK,
                window: self.recv.window(),
                reason: b"",
            }
            .encode(out);
            return true;
        }
        if self.close_read_to_send {
            self.close_read_to_send = false;
            Frame::Close {
                session,
                direction: Direction::READ,
            }
            .encode(out);
            return true;
        }
        if self.read == ReadSide::Open {
            if let Some(n) = self.recv.ack_due() {
                self.recv.acked(n);
                Frame::Ack { session, size: n }.encode(out);
                return true;
            }
        }
        if let Some(d) = self.dgrams_out.pop() {
            Frame::SendUdp {
                session,
                src: d.src,
                dst: d.dst,
                data: &d.data,
            }
            .encode(out);
            return true;
        }
        if matches!(self.write, WriteSide::Open | WriteSide::Finishing)
            && self.send.buffered() > 0
            && self.send.credit() > 0
        {
            encode_send(out, session, &mut self.send, max_data);
            if self.want_writable && self.write == WriteSide::Open {
                self.want_writable = false;
                ev.push_back(Event::Writable { id: session });
            }
            return true;
        }
        if self.write == WriteSide::Finishing && self.send.buffered() == 0 {
            self.write = WriteSide::Finished;
            Frame::Close {
                session,
                direction: Direction::WRITE,
            }
            .encode(out);
            return true;
        }
        let write_done = matches!(self.write, WriteSide::Finished | WriteSide::Stopped);
        if write_done
            && self.read != ReadSide::Open
            && self.recv.is_empty()
            && self.dgrams_in.is_empty()
        {
            self.terminal_sent = true;
            Frame::Close {
                session,
                direction: Direction::BOTH,
            }
            .encode(out);
            return true;
        }
        false
    }

    pub fn in_flight(&self) -> u64 {
        self.send.in_flight()
    }
}

/// A Send record with up to `max` bytes, framed in place (no intermediate copy).
fn encode_send(out: &mut Vec<u8>, session: SessionId, send: &mut SendBuf, max: usize) {
    let start = out.len();
    Frame::Send { session, data: &[] }.encode(out);
    let n = send.take_chunk(max, out);
    let mut h = crate::wire::Header::new_checked(&mut out[start..]).expect("header just written");
    h.set_length(n as u32);
}

//! Records from the peer, applied to one session.

use super::{violation, Datagram, ReadSide, Session, Terminal, Violation, WriteSide};
use crate::endpoint::Event;
use crate::wire::{reason_text, Direction, ErrorCode, OpenRc, Protocol, ResetCode};
use std::collections::VecDeque;

impl Session {
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
                ev.push_back(Event::OpenFailed { id: self.id, rc, reason: reason_text(reason) });
            }
        }
        Ok(())
    }

    /// `spare`: emptied buffers of the connection, for the receive buffer to fill.
    pub fn on_send(
        &mut self,
        data: &[u8],
        ev: &mut VecDeque<Event>,
        spare: &mut Vec<Vec<u8>>,
    ) -> Result<(), Violation> {
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
        self.recv.push(data, spare).map_err(|_| Violation {
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
        self.on_terminal(if end { Terminal::End(code, reason) } else { Terminal::Reset(code, reason) }, ev)
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
        ev.push_back(Event::Reset { id: self.id, code, reason, remote: true });
        Ok(())
    }
}

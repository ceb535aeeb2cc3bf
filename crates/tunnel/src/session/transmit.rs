//! Records to the peer: one per call, in the order a session needs them.

use super::flow::SendBuf;
use super::{ReadSide, Session, SessionId, Terminal, WriteSide};
use crate::endpoint::Event;
use crate::wire::{Direction, Frame, OpenRc};
use std::collections::VecDeque;

impl Session {
    /// Encodes this session's next record into `out`, if it has one. Order within a session:
    /// terminal, Open / OpenReply, Close(read), Ack, datagram, data, Close(write), Close(both).
    /// `max_data` 0: no data record fits now. Buffers whose bytes all went out are emptied into
    /// `spent` (see [`SendBuf::take_chunk_keeping`]).
    pub fn poll_frame(
        &mut self,
        out: &mut Vec<u8>,
        max_data: usize,
        ev: &mut VecDeque<Event>,
        spent: &mut Vec<Vec<u8>>,
    ) -> bool {
        let session = self.id;
        if let Some(t) = self.terminal_to_send.take() {
            self.terminal_sent = true;
            let frame = match &t {
                Terminal::CloseBoth => Frame::Close { session, direction: Direction::BOTH },
                Terminal::Reset(code, r) => Frame::Reset { session, code: *code, reason: r.as_bytes() },
                Terminal::End(code, r) => Frame::End { session, code: *code, reason: r.as_bytes() },
                Terminal::Refuse(rc, r) => {
                    Frame::OpenReply { session, rc: *rc, window: 0, reason: r.as_bytes() }
                }
            };
            frame.encode(out);
            return true;
        }
        if self.terminal_sent {
            return false;
        }
        if self.open_to_send {
            self.open_to_send = false;
            let target = self.target.clone().expect("outgoing sessions have a target");
            Frame::Open { session, protocol: self.protocol, window: self.recv.window(), target }.encode(out);
            return true;
        }
        if !self.established {
            return false;
        }
        if self.reply_to_send {
            self.reply_to_send = false;
            Frame::OpenReply { session, rc: OpenRc::OK, window: self.recv.window(), reason: b"" }.encode(out);
            return true;
        }
        if self.close_read_to_send {
            self.close_read_to_send = false;
            Frame::Close { session, direction: Direction::READ }.encode(out);
            return true;
        }
        let data_now = matches!(self.write, WriteSide::Open | WriteSide::Finishing)
            && self.send.buffered() > 0
            && self.send.credit() > 0
            && max_data > 0;
        if self.read == ReadSide::Open {
            if let Some(n) = self.recv.ack_due(data_now) {
                self.recv.acked(n);
                Frame::Ack { session, size: n }.encode(out);
                return true;
            }
        }
        if let Some(d) = self.dgrams_out.pop() {
            Frame::SendUdp { session, src: d.src, dst: d.dst, data: &d.data }.encode(out);
            return true;
        }
        if data_now {
            encode_send(out, session, &mut self.send, max_data, spent);
            if self.want_writable && self.write == WriteSide::Open && self.send.room() >= self.want_room {
                self.want_writable = false;
                ev.push_back(Event::Writable { id: session });
            }
            return true;
        }
        if self.write == WriteSide::Finishing && self.send.buffered() == 0 {
            self.write = WriteSide::Finished;
            Frame::Close { session, direction: Direction::WRITE }.encode(out);
            return true;
        }
        let write_done = matches!(self.write, WriteSide::Finished | WriteSide::Stopped);
        if write_done && self.read != ReadSide::Open && self.recv.is_empty() && self.dgrams_in.is_empty() {
            self.terminal_sent = true;
            Frame::Close { session, direction: Direction::BOTH }.encode(out);
            return true;
        }
        false
    }

    pub fn in_flight(&self) -> u64 {
        self.send.in_flight()
    }
}

/// A Send record with up to `max` bytes, framed in place (no intermediate copy).
fn encode_send(
    out: &mut Vec<u8>,
    session: SessionId,
    send: &mut SendBuf,
    max: usize,
    spent: &mut Vec<Vec<u8>>,
) {
    let start = out.len();
    Frame::Send { session, data: &[] }.encode(out);
    let n = send.take_chunk_keeping(max, out, spent);
    let mut h = crate::wire::Header::new_checked(&mut out[start..]).expect("header just written");
    h.set_length(n as u32);
}

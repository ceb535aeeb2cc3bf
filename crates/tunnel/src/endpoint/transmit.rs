//! Bytes to the peer: connection records first, then sessions in round-robin turns.

use super::{Endpoint, Event};
use crate::wire::{self, Frame, Hello};
use std::time::Instant;

impl Endpoint {
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
                    Frame::GoAway { code, reason: reason.as_bytes() }.encode(out);
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
            Frame::Ping { payload: self.ping_counter }.encode(out);
            return true;
        }
        // Session records wait for the peer's Hello: its max frame length bounds them.
        let Some(peer) = self.peer else { return false };
        if let Some((session, rc, why)) = self.refusals.pop_front() {
            Frame::OpenReply { session, rc, window: 0, reason: why.as_bytes() }.encode(out);
            return true;
        }
        let max_data = self.config.max_data_chunk.min(peer.max_frame_len as usize).max(1);
        // Visit each session once, starting at the cursor and wrapping, without allocating.
        let mut at = self.cursor;
        for _ in 0..self.sessions.len() {
            let next = self.sessions.range(at..).next().or_else(|| self.sessions.iter().next());
            let Some((&id, _)) = next else { break };
            let s = self.sessions.get_mut(&id).expect("id just found");
            if s.poll_frame(out, max_data, &mut self.events) {
                self.cursor = id.wrapping_add(1);
                self.release_if_done(id);
                return true;
            }
            at = id.wrapping_add(1);
        }
        false
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

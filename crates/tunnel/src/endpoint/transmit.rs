//! Bytes to the peer: connection records first, then sessions in round-robin turns.

use super::{Endpoint, Event};
use crate::session::{Session, SessionId};
use crate::wire::{self, Frame, Hello};
use std::time::Instant;

impl Endpoint {
    /// Appends the next record to `out`; false when there is nothing to send right now.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        self.poll_transmit_within(now, out, usize::MAX)
    }

    /// As [`Endpoint::poll_transmit`], with data records cut so that `out` stays within `limit`
    /// bytes (control records, a few bytes each, are not cut): a driver that seals `limit`
    /// bytes at a time fills its TLS records without a short one behind them.
    pub fn poll_transmit_within(&mut self, _now: Instant, out: &mut Vec<u8>, limit: usize) -> bool {
        let room = limit.saturating_sub(out.len() + wire::HEADER_LEN);
        let sent = self.next_record(out, room);
        if sent {
            self.stats.frames_out += 1;
        }
        sent
    }

    /// A buffer the application handed over whole ([`Endpoint::write_vec`]) whose bytes are all
    /// sent, or one `read_vec` got in exchange, emptied, for the driver to read into again
    /// instead of allocating a fresh one. While there are sessions, [`super::SPENT_RESERVE`]
    /// stay for received bytes to fill; with none, every one is given up.
    pub fn take_spent_buffer(&mut self) -> Option<Vec<u8>> {
        if self.spent.len() <= super::SPENT_RESERVE && !self.sessions.is_empty() {
            return None;
        }
        self.spent.pop()
    }

    fn next_record(&mut self, out: &mut Vec<u8>, room: usize) -> bool {
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
        // 0 when no data fits: sessions then offer only control records.
        let max_data = self.config.max_data_chunk.min(peer.max_frame_len as usize).max(1).min(room);
        // Visit each session once, starting at the cursor and wrapping: one walk of the map (a
        // lookup per visit made this pass cost a B-tree search per session, and the driver
        // ends every batch with a pass that finds nothing).
        let at = self.cursor;
        let events = &mut self.events;
        let spent = &mut self.spent;
        let mut turn =
            |(&id, s): (&SessionId, &mut Session)| s.poll_frame(out, max_data, events, spent).then_some(id);
        let sent = match self.sessions.range_mut(at..).find_map(&mut turn) {
            Some(id) => Some(id),
            None => self.sessions.range_mut(..at).find_map(&mut turn),
        };
        match sent {
            Some(id) => {
                self.cursor = id.wrapping_add(1);
                self.release_if_done(id);
                true
            }
            None => false,
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

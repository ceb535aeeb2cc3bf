//! The server → client data path of one established flow: server plaintext (at inner offsets)
//! in, records for the client (at outer offsets) out, and the client's ACKs translated back.
//!
//! Each new server segment is sealed into one record (or several when it exceeds the maximum
//! plaintext). The nonce-reuse hazard decides the rest: a server retransmission — cut at other
//! boundaries than the first time, as Linux does — is answered by resending the *stored* records
//! covering it, byte for byte, never by sealing new records over bytes already sent. A sealed
//! record is kept until the client acknowledges it. Server bytes beyond a gap, or that would not
//! fit the client's window, wait in a bounded hold queue (a window smaller than a record); the
//! engine never sends beyond the client's window. Server bytes held beyond a gap are reported to
//! the server in SACK blocks when it accepted SACK (see [`Downstream::sack_blocks`]).

use crate::hold::{HeldSegment, HoldQueue, HoldReason};
use crate::sacked::Sacked;
use crate::seq_map::{CompactMap, Entry, Mapped, SeqMap, SeqMapError};
use std::collections::VecDeque;
use std::rc::Rc;
use thiserror::Error;
use tlsgate_record::frame::MAX_PLAINTEXT;
use tlsgate_record::session::{Fatal, Session};

#[derive(Clone, Copy, Debug)]
pub struct DownLimits {
    pub hold_bytes: usize,
    pub hold_segments: usize,
    /// Sealed bytes kept for retransmission; at the bound new server data waits in the hold
    /// queue (and is dropped when that is full: the server retransmits).
    pub unacked_bytes: usize,
}

/// Bytes to send to the client at an outer offset: one or more whole records. Shared with the
/// copy kept for retransmission: a record is sealed once and never copied. An `Rc`, not an
/// `Arc`: a flow lives on one thread, and three atomic counts per record cost the seal path
/// about a tenth of its speed at 1460-byte records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Send {
    pub outer: u64,
    pub data: Rc<Vec<u8>>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DownError {
    #[error(transparent)]
    Session(#[from] Fatal),
    #[error(transparent)]
    Pairs(#[from] SeqMapError),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DownStats {
    pub records: u64,
    /// Stored records sent again for a server retransmission.
    pub resent_records: u64,
    /// Server segments (or parts) seen again.
    pub retransmitted: u64,
    /// Server segments dropped at a bound.
    pub dropped: u64,
}

/// A record sent and not yet acknowledged by the client. Its inner range is its pair-table
/// entry's ([`Downstream::stored_entries`]). Two words, so that storing one is two plain
/// writes: with the inner range beside them the compiler built each on the stack and copied it
/// in 16-byte loads that could not be forwarded from the narrower stores, each waiting for the
/// AEAD's ciphertext stores to drain first (about 3 % of the seal path at 1460-byte records).
#[derive(Clone, Debug)]
struct Sent {
    outer: u64,
    bytes: Rc<Vec<u8>>,
}

#[derive(Debug)]
pub struct Downstream {
    pairs: SeqMap,
    sent: VecDeque<Sent>,
    sent_bytes: usize,
    hold: HoldQueue,
    /// Next server plaintext offset to seal.
    next_inner: u64,
    /// The client's ACK (outer) and the window end it allows (outer).
    outer_acked: u64,
    window_end: u64,
    limits: DownLimits,
    stats: DownStats,
    /// The server's FIN: (outer offset, inner offset).
    fin: Option<(u64, u64)>,
    /// Duplicate ACKs from the client at `outer_acked` since it last moved.
    dup_acks: u32,
    /// While the engine repairs a loss toward the client itself: the outer end of what had been
    /// sent when the repair began (each ACK below it resends the next record, as NewReno does).
    recover: Option<u64>,
    /// Inner ranges reported to the server in SACK blocks and not yet passed by the ACK it was
    /// sent, ascending, merged: see [`Downstream::sack_blocks`].
    sacked: Sacked,
    /// Record buffers the client acknowledged and nothing else still shares, for the next
    /// records: a record sealed into one costs no allocation (the buffer and its `Rc`), which
    /// at 1460-byte records was a tenth of the seal path. At most as many as whole records fit
    /// in the store's bound ([`Downstream::spare_limit`]); emptied when the flow parks.
    spare: Vec<Rc<Vec<u8>>>,
}

/// Duplicate client ACKs that make the engine resend the record the client is missing
/// (RFC 5681's fast retransmit threshold).
const DUP_ACK_THRESHOLD: u32 = 3;

/// The server → client path of a parked flow ([`Downstream::compact`]): no record unacknowledged,
/// nothing held, so its offsets, counters and pair table are all there is.
#[derive(Debug)]
pub struct CompactDown {
    pairs: CompactMap,
    next_inner: u64,
    outer_acked: u64,
    window_end: u64,
    recover: Option<u64>,
    dup_acks: u32,
    stats: DownStats,
}

impl CompactDown {
    pub fn stats(&self) -> DownStats {
        self.stats
    }

    pub fn pairs(&self) -> &CompactMap {
        &self.pairs
    }

    /// See [`Downstream::outer_end`].
    pub fn outer_end(&self) -> u64 {
        self.pairs.end().0
    }

    /// The path again, as it was when compacted with these `limits` (its spare record buffers
    /// gone, as parking drops them).
    pub fn resume(self, limits: DownLimits) -> Downstream {
        let CompactDown { pairs, next_inner, outer_acked, window_end, recover, dup_acks, stats } = self;
        Downstream {
            pairs: pairs.resume(),
            sent: VecDeque::new(),
            sent_bytes: 0,
            hold: HoldQueue::new(limits.hold_bytes, limits.hold_segments),
            next_inner,
            outer_acked,
            window_end,
            limits,
            stats,
            fin: None,
            dup_acks,
            recover,
            sacked: Sacked::default(),
            spare: Vec::new(),
        }
    }
}

impl Downstream {
    /// No record unacknowledged, nothing held, no FIN: [`Downstream::compact`] keeps all of it.
    pub fn is_quiet(&self) -> bool {
        self.sent.is_empty() && self.hold.is_empty() && self.fin.is_none() && self.sacked.is_empty()
    }

    /// The compact form of a quiet path ([`Downstream::is_quiet`]); the path itself back
    /// otherwise.
    pub fn compact(self) -> Result<CompactDown, Box<Downstream>> {
        if !self.is_quiet() {
            return Err(Box::new(self));
        }
        let Downstream {
            pairs,
            sent: _,
            sent_bytes: _,
            hold: _,
            next_inner,
            outer_acked,
            window_end,
            limits: _,
            stats,
            fin: _,
            dup_acks,
            recover,
            sacked: _,
            spare: _,
        } = self;
        Ok(CompactDown {
            pairs: pairs.compact(),
            next_inner,
            outer_acked,
            window_end,
            recover,
            dup_acks,
            stats,
        })
    }

    /// Starts where `pairs` ends; nothing may be sent until [`Downstream::client_ack`] opens a
    /// window.
    pub fn new(pairs: SeqMap, limits: DownLimits) -> Downstream {
        let (outer, inner) = pairs.end();
        Downstream {
            hold: HoldQueue::new(limits.hold_bytes, limits.hold_segments),
            sent: VecDeque::new(),
            sent_bytes: 0,
            next_inner: inner,
            outer_acked: pairs.start().0,
            window_end: outer,
            pairs,
            limits,
            stats: DownStats::default(),
            fin: None,
            dup_acks: 0,
            recover: None,
            sacked: Sacked::default(),
            spare: Vec::new(),
        }
    }

    pub fn stats(&self) -> DownStats {
        self.stats
    }

    pub fn pairs(&self) -> &SeqMap {
        &self.pairs
    }

    /// A record the engine itself sends (handshake flight, key update, alert): it occupies the
    /// outer stream and nothing of the inner one. Sent regardless of the window, as rustls's own
    /// output would be: these are small and the client expects them.
    pub fn inject(&mut self, record: Vec<u8>, out: &mut Vec<Send>) -> Result<(), DownError> {
        let e = self.pairs.push(record.len() as u32, 0, 0)?;
        let record = Rc::new(record);
        self.keep(e.outer, record.clone());
        out.push(Send { outer: e.outer, data: record });
        Ok(())
    }

    /// A server segment's payload at inner offset `offset`.
    pub fn server_segment(
        &mut self,
        mut session: Option<&mut Session>,
        offset: u64,
        data: &[u8],
        out: &mut Vec<Send>,
    ) -> Result<(), DownError> {
        let end = offset + data.len() as u64;
        if offset < self.next_inner {
            self.stats.retransmitted += 1;
            self.resend(offset, end.min(self.next_inner), out);
        }
        if end <= self.next_inner {
            return Ok(());
        }
        let mut data = &data[(self.next_inner.saturating_sub(offset) as usize).min(data.len())..];
        let mut offset = offset.max(self.next_inner);
        // An in-order segment (the common case, or the one filling a gap) is sealed straight
        // from the packet as far as the window allows, up to the first byte held beyond a gap
        // (a byte's first copy wins), without a stop in the hold queue. Whatever the window
        // leaves is held below. So a queue full of bytes beyond a gap (many small segments
        // after a loss) never refuses the segment filling it while the window is open, and no
        // held byte is ever dropped: the server may have been told it is held (SACK).
        if offset == self.next_inner && !self.hold.has_ready(offset) {
            if let Some(s) = session.as_deref_mut() {
                let upto = self.hold.first().map_or(data.len(), |h| ((h - offset) as usize).min(data.len()));
                let n = self.seal_from(s, &data[..upto], out)?;
                data = &data[n..];
                offset += n as u64;
            }
        }
        // A full queue refuses the segment (the server sends it again): never held bytes,
        // which the server may have been told are held.
        if !data.is_empty() && self.hold.insert(offset, data, self.next_inner).is_err() {
            self.stats.dropped += 1;
        }
        self.flush(session, out)
    }

    /// Seals held in-order server bytes while the window and the store allow. Before the
    /// handshake completes (`session` is `None`) server data only waits: a server that speaks
    /// first (SMTP, FTP) is held until the keys exist.
    #[inline]
    pub fn flush(&mut self, session: Option<&mut Session>, out: &mut Vec<Send>) -> Result<(), DownError> {
        // Nothing held (each segment and ACK of a flowing download): not even a call.
        if self.hold.is_empty() {
            return Ok(());
        }
        self.flush_held(session, out)
    }

    fn flush_held(&mut self, session: Option<&mut Session>, out: &mut Vec<Send>) -> Result<(), DownError> {
        let Some(session) = session else { return Ok(()) };
        while self.room(session) > 0 {
            let Some(run) = self.hold.pop_ready(self.next_inner) else { return Ok(()) };
            let n = self.seal_from(session, &run, out)?;
            if n < run.len() {
                self.hold.insert(self.next_inner, &run[n..], self.next_inner).ok();
            }
        }
        Ok(())
    }

    /// Plaintext bytes the next record may carry: the client's window less the record
    /// overhead, and nothing while the store of unacknowledged records is at its bound.
    fn room(&self, session: &Session) -> usize {
        let overhead = session.overhead() as u64;
        let room = self.window_end.saturating_sub(self.pairs.end().0);
        if room <= overhead || self.sent_bytes >= self.limits.unacked_bytes {
            return 0;
        }
        (room - overhead).min(MAX_PLAINTEXT as u64) as usize
    }

    /// Seals in-order server bytes `data` (at `next_inner`) while the window and the store
    /// allow: one record per server segment as it arrived; a run merged from held segments or
    /// larger than a record, or than the window allows, is cut. Returns the bytes sealed.
    fn seal_from(
        &mut self,
        session: &mut Session,
        data: &[u8],
        out: &mut Vec<Send>,
    ) -> Result<usize, DownError> {
        let (head, overhead) = (session.head() as u32, session.overhead());
        let mut done = 0;
        while done < data.len() {
            let take = (data.len() - done).min(self.room(session));
            if take == 0 {
                break;
            }
            let mut record = self.spare.pop().unwrap_or_default();
            let buf = Rc::get_mut(&mut record).expect("a spare record buffer is not shared");
            // Over the spare buffer's old record: the AEAD writes each byte once, no zeroing first.
            session.seal_over(&data[done..done + take], buf)?;
            // A used-up transmit key: the session put a KeyUpdate before the record, which is
            // a record of its own in the pair table.
            let extra = buf.len().saturating_sub(take + overhead);
            if extra > 0 {
                let update = buf.drain(..extra).collect();
                self.inject(update, out)?;
            }
            let e = self.pairs.push(record.len() as u32, head, take as u32)?;
            self.next_inner += take as u64;
            done += take;
            self.stats.records += 1;
            self.keep(e.outer, record.clone());
            out.push(Send { outer: e.outer, data: record });
        }
        Ok(done)
    }

    /// How many acknowledged record buffers a flow keeps for its next records: as many whole
    /// records as its store holds. The bridge works through a ring block of the server's
    /// segments (sealing) and then one of the client's ACKs (freeing), so a bulk flow frees and
    /// seals up to a store's worth at a time; with 8 kept, most records went into fresh
    /// buffers, which safe Rust zeroes before the AEAD writes them (4.5 % of a bulk download's
    /// CPU in `memset`). Records in flight and spare ones together stay within about twice the
    /// store's bound.
    fn spare_limit(&self) -> usize {
        self.limits.unacked_bytes / (MAX_PLAINTEXT + 256)
    }

    /// Stores a record until the client acknowledges it; its pair-table entry is the table's
    /// last.
    fn keep(&mut self, outer: u64, bytes: Rc<Vec<u8>>) {
        self.sent_bytes += bytes.len();
        self.sent.push_back(Sent { outer, bytes });
    }

    /// The stored records' pair-table entries, oldest first: the table's last entries, since
    /// each record enters both at once, and the table drops an entry only once the client's ACK
    /// has passed its end (as the store does).
    fn stored_entries(&self) -> impl DoubleEndedIterator<Item = &Entry> + ExactSizeIterator {
        debug_assert!(self.pairs.len() >= self.sent.len(), "every stored record has its pair-table entry");
        self.pairs.entries().skip(self.pairs.len().saturating_sub(self.sent.len()))
    }

    /// Answers a server retransmission of inner `[start, end)`: resends the records the client
    /// has not acknowledged that overlap the range and, when the range starts where the client's
    /// ACK left the server, every unacknowledged record before it too.
    ///
    /// The latter because a client ACK that ends inside a record's trailer (its tag) translates
    /// to the end of that record's plaintext, so the server retransmits from the next record on
    /// and never again covers the one whose tail the client is missing (found in simulation: 1
    /// flow in 200 stalled); the engine's own records (a lost KeyUpdate or alert) in between go
    /// again too. Only then: a server resending a whole window after its timeout (Linux marks
    /// everything lost without SACK) would otherwise make every segment resend all the records
    /// before it, a burst quadratic in the window toward the client.
    fn resend(&mut self, start: u64, end: u64, out: &mut Vec<Send>) {
        let Some(last) = self.stored_entries().rposition(|e| e.inner_len > 0 && e.inner < end) else {
            return;
        };
        let acked_inner = match self.pairs.to_inner(self.outer_acked) {
            Mapped::At(i) => i,
            _ => 0,
        };
        let first = if start <= acked_inner {
            0
        } else {
            self.stored_entries()
                .position(|e| e.inner_end() > start || (e.inner_len == 0 && e.inner >= start))
                .unwrap_or(last)
        };
        for s in self.sent.iter().take(last + 1).skip(first) {
            self.stats.resent_records += 1;
            out.push(Send { outer: s.outer, data: s.bytes.clone() });
        }
    }

    /// The client acknowledged `outer_acked` again, with no data and the same window, while
    /// records are outstanding: a record toward it was lost (or overtaken). At the threshold the
    /// engine resends the oldest unacknowledged record itself, without waiting for the server:
    /// the server sees the same duplicates, but after a timeout of its own Linux ignores them
    /// (without SACK a lost retransmission is found only by the next timeout, and without
    /// timestamps no RTT sample resets its backoff), so downloads crawled for minutes.
    pub fn client_dup_ack(&mut self, out: &mut Vec<Send>) {
        if self.sent.is_empty() {
            return;
        }
        self.dup_acks += 1;
        if self.dup_acks == DUP_ACK_THRESHOLD && self.recover.is_none() {
            self.resend_oldest(out);
        }
    }

    /// Resends the oldest record the client has not acknowledged and repairs on from there: each
    /// ACK that moves but stays below what had been sent resends the next one (the engine's
    /// timer, and fast retransmit). Returns whether there was one.
    pub fn resend_oldest(&mut self, out: &mut Vec<Send>) -> bool {
        let Some(s) = self.sent.front() else { return false };
        self.stats.resent_records += 1;
        out.push(Send { outer: s.outer, data: s.bytes.clone() });
        self.recover = Some(self.outer_end());
        true
    }

    /// The client acknowledged outer offset `ack` and advertises `window` bytes beyond it.
    /// Returns the ACK for the server (inner offset), or `None` for an old or impossible ACK;
    /// releases held server data the new window allows.
    pub fn client_ack(
        &mut self,
        session: Option<&mut Session>,
        ack: u64,
        window: u64,
        out: &mut Vec<Send>,
    ) -> Result<Option<u64>, DownError> {
        // The client acknowledging the engine's FIN acknowledges the server's.
        if let Some((fo, fi)) = self.fin {
            if ack == fo + 1 {
                self.client_ack(session, fo, window, out)?;
                return Ok(Some(fi + 1));
            }
        }
        let Mapped::At(inner) = self.pairs.to_inner(ack) else { return Ok(None) };
        if ack < self.outer_acked {
            return Ok(None);
        }
        let moved = ack > self.outer_acked;
        self.outer_acked = ack;
        self.window_end = self.window_end.max(ack + window);
        while let Some(s) = self.sent.front() {
            if s.outer + s.bytes.len() as u64 > ack {
                break;
            }
            self.sent_bytes -= s.bytes.len();
            if let Some(mut s) = self.sent.pop_front() {
                if self.spare.len() < self.spare_limit() && Rc::get_mut(&mut s.bytes).is_some() {
                    self.spare.push(s.bytes);
                }
            }
        }
        if moved {
            self.dup_acks = 0;
            // A partial ACK during a repair: the next record was lost too.
            match self.recover {
                Some(r) if ack < r => {
                    self.resend_oldest_in_recovery(out);
                }
                _ => self.recover = None,
            }
        }
        self.pairs.prune(ack, inner);
        self.flush(session, out)?;
        Ok(Some(inner))
    }

    fn resend_oldest_in_recovery(&mut self, out: &mut Vec<Send>) {
        if let Some(s) = self.sent.front() {
            self.stats.resent_records += 1;
            out.push(Send { outer: s.outer, data: s.bytes.clone() });
        }
    }

    /// Sends again every record the client has not acknowledged (the engine's retransmission
    /// timer, for its own injected bytes; server data is resent when the server retransmits).
    pub fn resend_unacked(&mut self, out: &mut Vec<Send>) -> usize {
        for s in &self.sent {
            out.push(Send { outer: s.outer, data: s.bytes.clone() });
        }
        self.sent.len()
    }

    /// True when the server's FIN at inner offset `inner` can go out now: every server byte
    /// before it has been sealed (not the case while data waits for a gap or the window).
    pub fn fin_ready(&self, inner: u64) -> bool {
        self.fin.is_none() && inner == self.next_inner && self.hold.is_empty()
    }

    /// The server's FIN at inner offset `inner`: returns the outer offset where the FIN goes to
    /// the client (after any record injected before it, such as close_notify), the same one for
    /// a retransmitted FIN; `None` when it cannot go yet (the server will retransmit it).
    pub fn fin(&mut self, inner: u64) -> Option<u64> {
        if let Some((fo, fi)) = self.fin {
            return (fi == inner).then_some(fo);
        }
        if !self.fin_ready(inner) {
            return None;
        }
        let outer = self.outer_end();
        self.fin = Some((outer, inner));
        Some(outer)
    }

    /// The most server bytes in flight the engine takes without dropping: the store bound, less
    /// a sixteenth for the records' overhead. Advertised to the server as a window ceiling: a
    /// client window beyond it let the server send more than the store and the hold queue
    /// take, and every byte dropped came back as a retransmission.
    pub fn max_in_flight(&self) -> u64 {
        (self.limits.unacked_bytes as u64) * 15 / 16
    }

    /// True when in-order server data waits only for the client's window (or the store bound)
    /// to open: the client must be asked for its window, since its update may have been lost.
    pub fn waiting_for_window(&self) -> bool {
        self.hold.has_ready(self.next_inner)
    }

    /// True while sent records wait for the client's acknowledgement.
    pub fn has_unacked(&self) -> bool {
        !self.sent.is_empty()
    }

    /// The next outer offset (where the next record or the FIN goes).
    #[inline]
    pub fn outer_end(&self) -> u64 {
        self.pairs.end().0
    }

    /// The outer offset of the next sequence number the client is sent: past the FIN once the
    /// FIN went (it takes one). Where every later segment to the client stands: an ACK at the
    /// FIN's own number lies left of the client's window, and Linux drops it unread (RFC 9293
    /// §3.10.7.4), so the client never saw its own close_notify or FIN acknowledged.
    pub fn outer_next(&self) -> u64 {
        self.outer_end() + u64::from(self.fin.is_some())
    }

    /// Whether the FIN to the client went.
    pub fn fin_sent(&self) -> bool {
        self.fin.is_some()
    }

    /// The next server plaintext offset expected.
    pub fn next_inner(&self) -> u64 {
        self.next_inner
    }

    /// The client's latest acknowledgement (outer).
    pub fn outer_acked(&self) -> u64 {
        self.outer_acked
    }

    /// SACK blocks for an ACK to the server at inner offset `ack` (RFC 2018): the server bytes
    /// held beyond a gap, the range stored last first, at most `max`. The engine seals server
    /// bytes in order only, so those wait until the gap fills and the client acknowledges
    /// their records, and without these blocks the server learns of them only then: from its
    /// duplicate ACKs Linux (without SACK) repairs one hole per round trip, takes RTT samples
    /// from segments it sent long before and never resent, and its retransmission timeout
    /// grows past the next repair (the client side of the same effect stalled uploads). SACKed
    /// segments give no such sample, and SACK recovery resends every hole in one round trip.
    /// In-order bytes waiting for the client's window are not reported: the records before
    /// them are still on their way to the client. Reported ranges are remembered until the ACK
    /// passes them (see [`Downstream::clear_of_sacked`]).
    ///
    /// Only with an ACK that covers every server byte taken in order
    /// ([`Downstream::acks_all_taken`]), as toward the client (see
    /// [`crate::upstream::Upstream::sack_blocks`]): the engine acknowledges those bytes once the
    /// client has their records, a round trip to the client after it could report the bytes
    /// beyond a gap, and blocks ahead of that ACK show the server a hole over segments that
    /// arrived. Linux marks them lost and resends them (each resend reaches the client as its
    /// records again), then, once the client's ACKs cover them, takes the loss for reordering:
    /// its estimate rises, and later losses wait for its retransmission timeout.
    pub fn sack_blocks(&mut self, ack: u64, max: usize) -> Vec<(u64, u64)> {
        let blocks: Vec<(u64, u64)> = match self.acks_all_taken(ack) {
            true => self.beyond_gap(ack).take(max).collect(),
            false => Vec::new(),
        };
        self.sacked.report(ack, &blocks);
        blocks
    }

    /// How many SACK blocks an ACK at `ack` would carry now (segment sizes leave room for them).
    pub fn sack_count(&self, ack: u64, max: usize) -> usize {
        match self.acks_all_taken(ack) {
            true => self.beyond_gap(ack).take(max).count(),
            false => 0,
        }
    }

    /// Whether an ACK to the server at inner offset `ack` covers every server byte taken in
    /// order: all sealed, none waiting for the client's window. The only ACK that may carry SACK
    /// blocks (see [`Downstream::sack_blocks`]).
    pub fn acks_all_taken(&self, ack: u64) -> bool {
        ack >= self.next_inner && !self.waiting_for_window()
    }

    fn beyond_gap(&self, ack: u64) -> impl Iterator<Item = (u64, u64)> {
        let next = self.next_inner;
        self.hold.ranges().into_iter().filter(move |&(s, _)| s > next && s > ack)
    }

    /// How far beyond `ack` (the ACK the server is sent, inner) the server may send: up to the
    /// hold queue's bound past the next byte to seal. Everything the server sends then fits in
    /// the queue whatever is lost before it, so nothing the engine has acknowledged or reported
    /// is dropped. The client's window alone allowed more: a server with a megabyte in flight
    /// beyond a gap had most of it dropped at the queue's bound while every segment was answered
    /// (with the same SACK blocks); Linux counted it all in flight, had no room in its window to
    /// repair the gap, and waited for its timeout. The edge never moves back (`next_inner` only
    /// grows); in order the server is held back only by the client's window.
    pub fn server_room(&self, ack: u64) -> u64 {
        (self.next_inner + self.limits.hold_bytes as u64).saturating_sub(ack)
    }

    /// An ACK to the server never ends inside, or right before, a range it was told (SACK) the
    /// engine holds: Linux takes a cumulative ACK followed by SACKed data as the receiver
    /// reneging on its SACKs (RFC 2018, section 8), times out within 10 ms and resends
    /// everything from the ACK. Once the gap before such a range fills, its bytes go to the
    /// client as records and the client's ACKs of them come record by record; the ACK to the
    /// server stays one byte short of the range until the client has taken all of it (the
    /// engine repairs losses toward the client itself meanwhile).
    pub fn clear_of_sacked(&self, ack: u64) -> u64 {
        match self.sacked.containing(ack) {
            Some((s, _)) => s - 1,
            None => ack,
        }
    }

    /// Bytes of state held: stored records (each with its `Rc` and `Vec` header), the store's
    /// own allocation, hold queue, pair table.
    pub fn state_bytes(&self) -> usize {
        let record_headers =
            self.sent.len() * (2 * std::mem::size_of::<usize>() + std::mem::size_of::<Vec<u8>>());
        self.sent_bytes
            + record_headers
            + self.sent.capacity() * std::mem::size_of::<Sent>()
            + self.hold.state_bytes()
            + self.pairs.state_bytes()
            + self.sacked.state_bytes()
            + self
                .spare
                .iter()
                .map(|b| b.capacity() + 2 * std::mem::size_of::<usize>() + std::mem::size_of::<Vec<u8>>())
                .sum::<usize>()
            + self.spare.capacity() * std::mem::size_of::<Rc<Vec<u8>>>()
    }

    /// An idle flow gives back the room its store and pair table grew to, and its spare record
    /// buffers.
    pub fn park(&mut self) {
        self.spare = Vec::new();
        self.hold.shrink();
        self.sent.shrink_to_fit();
        self.pairs.shrink();
        self.sacked.shrink();
    }

    /// Queue-state rows: server data waiting for a gap to fill or for the window.
    pub fn queue_rows(&self) -> Vec<HeldSegment> {
        self.hold.rows(self.next_inner, HoldReason::Window)
    }
}

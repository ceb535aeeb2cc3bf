//! The table of sequence pairs at record boundaries (TCP sequence numbers paired with stream offsets).
//!
//! Each direction of a flow has two byte streams: the *outer* one the client sees (ciphertext:
//! record headers, encrypted bodies, tags, and the engine's own handshake bytes) and the *inner*
//! one the server sees (plaintext only). The table holds one entry per record, in stream order,
//! pairing the record's outer range with the inner range of its plaintext; between entries the
//! map is exact, inside an entry inner byte `inner + k` is outer byte `outer + head + k`. The same
//! type serves both directions:
//!
//! - client to server: outer = the client's ciphertext, inner = the plaintext forwarded; the
//!   client's data offsets map outer → inner, the server's ACKs inner → outer;
//! - server to client: inner = the server's plaintext, outer = the records sent to the client; the
//!   server's data offsets map inner → outer (a retransmission finds the records it already went
//!   out in), the client's ACKs outer → inner.
//!
//! Records the engine consumes or adds itself (handshake, alerts, key updates, tickets,
//! close_notify) are entries with an empty inner range: they map to a point, so the other end
//! never sees them acknowledged as data of its own.
//!
//! Offsets are 64-bit stream offsets ([`crate::seq::Stream`]): the 2^32 wrap is handled at the
//! packet edge. Entries fully acknowledged on both sides are pruned; the table has a hard bound.

use std::collections::VecDeque;
use thiserror::Error;

/// One record's pair of ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Outer offset of the record's first byte (its header).
    pub outer: u64,
    /// Inner offset of the record's first plaintext byte.
    pub inner: u64,
    /// Outer length: header, body and trailer (TLS 1.3 content type byte, tag).
    pub outer_len: u32,
    /// Plaintext bytes the record carries to the inner side (0 for the engine's own records).
    pub inner_len: u32,
    /// Outer bytes before the first plaintext byte: header plus TLS 1.2 explicit nonce.
    pub head: u32,
}

impl Entry {
    pub fn outer_end(&self) -> u64 {
        self.outer + self.outer_len as u64
    }

    pub fn inner_end(&self) -> u64 {
        self.inner + self.inner_len as u64
    }
}

/// Where an offset falls relative to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapped {
    /// The translated offset.
    At(u64),
    /// Before the table's start: already acknowledged on both sides and pruned (a duplicate or an
    /// old retransmission; answer it with an ACK, forward nothing).
    Pruned,
    /// After the last entry: not yet framed or sealed.
    Beyond,
}

#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum SeqMapError {
    #[error("sequence-pair table full ({0} entries)")]
    Full(usize),
    #[error("entry does not continue the table: expected outer {outer} inner {inner}")]
    NotContiguous { outer: u64, inner: u64 },
    #[error(
        "entry head {head} + inner length {inner_len} exceeds its outer length {outer_len}, or it is empty"
    )]
    Malformed { head: u32, inner_len: u32, outer_len: u32 },
}

/// Entries [`SeqMap::to_inner`] looks at one by one from the front before searching by halves.
const FRONT_SCAN: usize = 4;

/// The sequence-pair table of one direction. See the module docs.
#[derive(Clone, Debug)]
pub struct SeqMap {
    entries: VecDeque<Entry>,
    /// Outer and inner offsets where the table starts (the ends of the last pruned entry).
    base_outer: u64,
    base_inner: u64,
    cap: usize,
}

/// A table of a parked flow ([`SeqMap::compact`]): its entries without spare room.
#[derive(Debug)]
pub struct CompactMap {
    entries: Box<[Entry]>,
    base_outer: u64,
    base_inner: u64,
    cap: u32,
}

impl CompactMap {
    pub fn entries(&self) -> impl ExactSizeIterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Heap bytes (the entries).
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.entries)
    }

    /// See [`SeqMap::end`].
    pub fn end(&self) -> (u64, u64) {
        self.entries.last().map_or((self.base_outer, self.base_inner), |e| (e.outer_end(), e.inner_end()))
    }

    /// The table again, as it was.
    pub fn resume(self) -> SeqMap {
        SeqMap {
            entries: self.entries.into_vec().into(),
            base_outer: self.base_outer,
            base_inner: self.base_inner,
            cap: self.cap as usize,
        }
    }
}

impl SeqMap {
    /// The table of a flow being parked: the same entries and bases, no spare room. The
    /// entries are copied into a new allocation (made where the caller allocates parked state,
    /// [`crate::parked_memory`]), not kept in the working table's.
    pub fn compact(self) -> CompactMap {
        CompactMap {
            entries: self.entries.iter().copied().collect(),
            base_outer: self.base_outer,
            base_inner: self.base_inner,
            cap: u32::try_from(self.cap).unwrap_or(u32::MAX),
        }
    }

    /// A table whose streams start at the given offsets, holding at most `cap` entries.
    pub fn new(base_outer: u64, base_inner: u64, cap: usize) -> SeqMap {
        SeqMap { entries: VecDeque::new(), base_outer, base_inner, cap }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries held, oldest first (for the connection table).
    pub fn entries(&self) -> impl DoubleEndedIterator<Item = &Entry> + ExactSizeIterator {
        self.entries.iter()
    }

    /// Bytes of state the table holds, for the per-flow bound and the report: its allocation,
    /// which outlives the entries it held until [`SeqMap::shrink`].
    pub fn state_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
    }

    /// Gives back the room of pruned entries (an idle flow's table holds none or one).
    pub fn shrink(&mut self) {
        self.entries.shrink_to_fit();
    }

    /// Where the next record starts: (outer, inner).
    pub fn end(&self) -> (u64, u64) {
        self.entries.back().map_or((self.base_outer, self.base_inner), |e| (e.outer_end(), e.inner_end()))
    }

    /// Where the table starts: (outer, inner); everything before is pruned.
    pub fn start(&self) -> (u64, u64) {
        (self.base_outer, self.base_inner)
    }

    /// Appends the next record: `outer_len` bytes outside, `inner_len` of them plaintext starting
    /// `head` bytes in. Refused when full (the caller holds data back until ACKs prune entries)
    /// or when the lengths do not fit.
    pub fn push(&mut self, outer_len: u32, head: u32, inner_len: u32) -> Result<Entry, SeqMapError> {
        // An empty outer range would make two entries start at one outer offset; a record is
        // never empty (its header alone is 5 bytes).
        if outer_len == 0 || head as u64 + inner_len as u64 > outer_len as u64 {
            return Err(SeqMapError::Malformed { head, inner_len, outer_len });
        }
        if self.entries.len() >= self.cap {
            return Err(SeqMapError::Full(self.cap));
        }
        let (outer, inner) = self.end();
        let e = Entry { outer, inner, outer_len, inner_len, head };
        self.entries.push_back(e);
        Ok(e)
    }

    /// Appends an entry built elsewhere, checking it continues the table (used when restoring
    /// or when the caller computed offsets itself).
    pub fn push_entry(&mut self, e: Entry) -> Result<(), SeqMapError> {
        let (outer, inner) = self.end();
        if e.outer != outer || e.inner != inner {
            return Err(SeqMapError::NotContiguous { outer, inner });
        }
        self.push(e.outer_len, e.head, e.inner_len).map(|_| ())
    }

    /// Translates an outer offset (a data offset or an ACK on the outer side) to the inner side.
    /// Inside a record's header or trailer it maps to the nearest plaintext boundary: header
    /// bytes to the record's first plaintext byte, trailer bytes to just past its last.
    pub fn to_inner(&self, outer: u64) -> Mapped {
        if outer < self.base_outer {
            return Mapped::Pruned;
        }
        let (end_outer, end_inner) = self.end();
        if outer == end_outer {
            return Mapped::At(end_inner);
        }
        if outer > end_outer {
            return Mapped::Beyond;
        }
        // The entry containing `outer`: the first one ending after it. An ACK mostly ends one
        // of the oldest entries (the table is pruned at each ACK, so what it still holds before
        // the ACK is a record or two): those are looked at first, the rest searched by halves.
        let i = match self.entries.iter().take(FRONT_SCAN).position(|e| e.outer_end() > outer) {
            Some(i) => i,
            None => self.entries.partition_point(|e| e.outer <= outer) - 1,
        };
        let e = &self.entries[i];
        let k = (outer - e.outer).saturating_sub(e.head as u64).min(e.inner_len as u64);
        Mapped::At(e.inner + k)
    }

    /// Translates an inner offset to the outer side. Used for ACKs: the result is the largest
    /// outer offset whose bytes are all accounted for by inner bytes before `inner`. A record
    /// whose plaintext is all covered maps to its end (trailer included), one whose plaintext is
    /// not covered at all to its start (header not included), and partly covered to the
    /// corresponding byte. Records with no plaintext (the engine's own) at `inner` count as
    /// covered.
    pub fn ack_to_outer(&self, inner: u64) -> Mapped {
        if inner < self.base_inner {
            return Mapped::Pruned;
        }
        if inner > self.end().1 {
            return Mapped::Beyond;
        }
        // The last entry starting at or before `inner`: after any empty ones at the same point.
        let i = self.entries.partition_point(|e| e.inner <= inner);
        let Some(e) = i.checked_sub(1).map(|i| &self.entries[i]) else {
            return Mapped::At(self.base_outer);
        };
        if inner >= e.inner_end() {
            return Mapped::At(e.outer_end());
        }
        if inner == e.inner {
            return Mapped::At(e.outer);
        }
        Mapped::At(e.outer + e.head as u64 + (inner - e.inner))
    }

    /// The entries whose inner ranges overlap `[start, end)`: the records a retransmitted inner
    /// range already went out in. Empty when the range lies wholly before or after the table.
    pub fn overlapping_inner(&self, start: u64, end: u64) -> impl Iterator<Item = &Entry> {
        let from = self.entries.partition_point(|e| e.inner_end() <= start);
        self.entries.range(from..).take_while(move |e| e.inner < end).filter(|e| e.inner_len > 0)
    }

    /// The entries whose outer ranges overlap `[start, end)`: the records a retransmitted outer
    /// range belongs to.
    pub fn overlapping_outer(&self, start: u64, end: u64) -> impl Iterator<Item = &Entry> {
        let from = self.entries.partition_point(|e| e.outer_end() <= start);
        self.entries.range(from..).take_while(move |e| e.outer < end)
    }

    /// Drops leading entries acknowledged on both sides: by the outer peer up to `outer_acked`
    /// and by the inner peer up to `inner_acked`. Returns how many were dropped.
    pub fn prune(&mut self, outer_acked: u64, inner_acked: u64) -> usize {
        let mut n = 0;
        while let Some(e) = self.entries.front() {
            if e.outer_end() > outer_acked || e.inner_end() > inner_acked {
                break;
            }
            self.base_outer = e.outer_end();
            self.base_inner = e.inner_end();
            self.entries.pop_front();
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq::{Seq, Stream};

    /// TLS 1.3 AES-GCM: 5-byte header, then plaintext, then content type byte and 16-byte tag.
    const HEAD: u32 = 5;
    const TRAIL: u32 = 17;

    fn data(m: &mut SeqMap, plain: u32) -> Entry {
        m.push(HEAD + plain + TRAIL, HEAD, plain).unwrap()
    }

    /// A client→server table: a 300-byte handshake flight the engine consumed, then records.
    fn sample() -> SeqMap {
        let mut m = SeqMap::new(1, 1, 64);
        m.push(300, 0, 0).unwrap(); // outer [1, 301), no plaintext
        data(&mut m, 100); // outer [301, 423), inner [1, 101)
        data(&mut m, 0); // zero-length application data: outer [423, 445), inner [101, 101)
        data(&mut m, 50); // outer [445, 517), inner [101, 151)
        m
    }

    #[test]
    fn outer_to_inner_past_the_entries_looked_at_first() {
        // More entries than the front scan: every offset maps as the entry containing it says.
        let mut m = SeqMap::new(1, 1, 64);
        m.push(300, 0, 0).unwrap();
        let entries: Vec<Entry> = (0..3 * FRONT_SCAN as u32).map(|i| data(&mut m, 10 + i)).collect();
        for e in &entries {
            for outer in e.outer..e.outer_end() {
                let k = (outer - e.outer).saturating_sub(HEAD as u64).min(e.inner_len as u64);
                assert_eq!(m.to_inner(outer), Mapped::At(e.inner + k), "outer {outer} in {e:?}");
            }
        }
        assert_eq!(m.to_inner(entries.last().unwrap().outer_end()), Mapped::At(m.end().1));
    }

    #[test]
    fn outer_to_inner() {
        let m = sample();
        assert_eq!(m.to_inner(0), Mapped::Pruned);
        assert_eq!(m.to_inner(1), Mapped::At(1));
        assert_eq!(m.to_inner(200), Mapped::At(1), "inside the consumed handshake");
        assert_eq!(m.to_inner(301), Mapped::At(1), "header of the first record");
        assert_eq!(m.to_inner(306), Mapped::At(1), "first plaintext byte");
        assert_eq!(m.to_inner(307), Mapped::At(2));
        assert_eq!(m.to_inner(405), Mapped::At(100));
        assert_eq!(m.to_inner(406), Mapped::At(101), "trailer maps past the plaintext");
        assert_eq!(m.to_inner(423), Mapped::At(101));
        assert_eq!(m.to_inner(440), Mapped::At(101), "inside the empty record");
        assert_eq!(m.to_inner(450), Mapped::At(101));
        assert_eq!(m.to_inner(460), Mapped::At(111));
        assert_eq!(m.to_inner(517), Mapped::At(151));
        assert_eq!(m.to_inner(518), Mapped::Beyond);
    }

    #[test]
    fn inner_ack_to_outer() {
        let m = sample();
        assert_eq!(m.ack_to_outer(0), Mapped::Pruned);
        // Nothing of the first record acknowledged: the engine's own handshake bytes are.
        assert_eq!(m.ack_to_outer(1), Mapped::At(301));
        assert_eq!(m.ack_to_outer(2), Mapped::At(307));
        assert_eq!(m.ack_to_outer(100), Mapped::At(405));
        // All of the first record, the empty one after it, and none of the third.
        assert_eq!(m.ack_to_outer(101), Mapped::At(445));
        assert_eq!(m.ack_to_outer(150), Mapped::At(499));
        assert_eq!(m.ack_to_outer(151), Mapped::At(517));
        assert_eq!(m.ack_to_outer(152), Mapped::Beyond);
    }

    #[test]
    fn ack_translation_is_monotonic_and_round_trips_at_boundaries() {
        let m = sample();
        let mut last = 0;
        for inner in 1..=151 {
            let Mapped::At(o) = m.ack_to_outer(inner) else { panic!("{inner}") };
            assert!(o >= last, "ack went backwards at {inner}");
            last = o;
            assert_eq!(m.to_inner(o), Mapped::At(inner), "round trip at {inner}");
        }
    }

    #[test]
    fn empty_table_maps_its_base() {
        let m = SeqMap::new(10, 20, 4);
        assert_eq!(m.to_inner(10), Mapped::At(20));
        assert_eq!(m.ack_to_outer(20), Mapped::At(10));
        assert_eq!(m.to_inner(11), Mapped::Beyond);
        assert_eq!(m.ack_to_outer(9), Mapped::Pruned);
        assert!(m.is_empty());
    }

    #[test]
    fn retransmission_of_old_ranges_finds_the_same_records() {
        // Server→client: the server's plaintext went out as three records.
        let mut m = SeqMap::new(1, 1, 64);
        m.push(4000, 0, 0).unwrap(); // the engine's handshake flight to the client
        let a = data(&mut m, 1000);
        let b = data(&mut m, 1000);
        let c = data(&mut m, 500);
        // The server retransmits [500, 1700) cut differently: the first two records, same as sent.
        let hit: Vec<Entry> = m.overlapping_inner(500, 1700).copied().collect();
        assert_eq!(hit, vec![a, b]);
        let hit: Vec<Entry> = m.overlapping_inner(2001, 2002).copied().collect();
        assert_eq!(hit, vec![c]);
        assert_eq!(m.overlapping_inner(2501, 3000).count(), 0, "new data");
        assert_eq!(m.overlapping_outer(1, 2).count(), 1, "the handshake flight");
        let hit: Vec<Entry> = m.overlapping_outer(b.outer + 3, c.outer + 1).copied().collect();
        assert_eq!(hit, vec![b, c]);
        // Once the client and server acknowledged the first record, it is gone: an old range
        // maps to Pruned and finds no record to resend.
        assert_eq!(m.prune(a.outer_end(), a.inner_end()), 2);
        assert_eq!(m.to_inner(a.outer + 10), Mapped::Pruned);
        assert_eq!(m.overlapping_inner(500, 1001).count(), 0);
        assert_eq!(m.start(), (a.outer_end(), a.inner_end()));
    }

    #[test]
    fn prune_needs_both_sides() {
        let mut m = sample();
        assert_eq!(m.prune(517, 0), 0, "inner side has acknowledged nothing");
        assert_eq!(m.prune(301, 1), 1, "the handshake flight");
        assert_eq!(m.prune(400, 101), 0, "outer side mid-record");
        assert_eq!(m.prune(445, 101), 2, "the record and the empty one");
        assert_eq!(m.len(), 1);
        assert_eq!(m.prune(u64::MAX, u64::MAX), 1);
        assert_eq!(m.end(), (517, 151));
        assert_eq!(m.start(), m.end());
        assert_eq!(m.ack_to_outer(151), Mapped::At(517));
    }

    #[test]
    fn bounded() {
        let mut m = SeqMap::new(0, 0, 2);
        data(&mut m, 1);
        data(&mut m, 1);
        assert_eq!(m.push(30, 5, 1), Err(SeqMapError::Full(2)));
        m.prune(u64::MAX, u64::MAX);
        assert!(m.push(30, 5, 1).is_ok());
        m.shrink();
        assert_eq!(m.state_bytes(), std::mem::size_of::<Entry>());
        assert_eq!(m.push(10, 5, 6), Err(SeqMapError::Malformed { head: 5, inner_len: 6, outer_len: 10 }));
    }

    #[test]
    fn push_entry_checks_continuity() {
        let mut m = SeqMap::new(0, 0, 8);
        let e = Entry { outer: 0, inner: 0, outer_len: 27, inner_len: 5, head: 5 };
        m.push_entry(e).unwrap();
        assert_eq!(m.push_entry(e), Err(SeqMapError::NotContiguous { outer: 27, inner: 5 }));
    }

    #[test]
    fn across_the_sequence_wrap() {
        // The client's ISN just below 2^32: records straddle the wrap in sequence space, while
        // the table's offsets do not wrap at all.
        let client = Stream::new(Seq(u32::MAX - 200));
        let mut m = SeqMap::new(1, 1, 64);
        m.push(150, 0, 0).unwrap();
        let r = data(&mut m, 1000); // outer [151, 1173): crosses the wrap at offset 201
        assert_eq!(client.seq(r.outer), Seq(u32::MAX - 49));
        assert_eq!(client.seq(r.outer_end()), Seq(972));
        // A data segment at sequence 10 (after the wrap) is plaintext offset ...
        let off = client.offset(Seq(10), r.outer).unwrap();
        assert_eq!(off, 211);
        assert_eq!(m.to_inner(off), Mapped::At(211 - 151 - 5 + 1));
        // ... and the server's ACK for all of it is the record's end, past the wrap.
        let Mapped::At(ack) = m.ack_to_outer(r.inner_end()) else { panic!() };
        assert_eq!(client.seq(ack), Seq(972));
        // Far along the stream (several times round the circle) the same holds.
        let mut m = SeqMap::new(5 << 32, 3 << 32, 4);
        let r = data(&mut m, 10);
        let s = Stream::new(Seq(7));
        assert_eq!(s.offset(s.seq(r.outer_end()), r.outer), Some(r.outer_end()));
        assert_eq!(m.to_inner(r.outer_end()), Mapped::At((3 << 32) + 10));
    }
}

//! The hold queue of one direction (the queue-state table): out-of-order segments wait
//! here until the gap before them fills, bounded in bytes and segments.
//!
//! The record framer and the AEAD need bytes in order, exactly once. TCP delivers them out of
//! order, duplicated and overlapping (a retransmission may be cut differently from the original),
//! so the queue keeps for each stream offset the first copy it saw and drops the rest: once
//! stored, a byte never changes, which is what the tag check after it relies on.

use std::collections::BTreeMap;
use thiserror::Error;

/// Why a segment is held; reported in the queue-state table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldReason {
    /// Earlier bytes of the stream are missing.
    Gap,
    /// Buffered mode: the record's tag has not arrived yet, so none of it may be released.
    AwaitingTag,
    /// Server data waiting for the client's window (a client window smaller than a record).
    Window,
}

#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum HoldError {
    #[error("hold queue full: {held} bytes held, {incoming} more refused (cap {cap})")]
    Full { held: usize, incoming: usize, cap: usize },
}

/// One row of the queue-state table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldSegment {
    pub offset: u64,
    pub len: usize,
    pub reason: HoldReason,
}

#[derive(Clone, Debug)]
pub struct HoldQueue {
    /// What is held; nothing allocated after [`HoldQueue::shrink`] of an empty queue (an idle
    /// flow's two queues then cost 16 bytes each instead of 72).
    held: Option<Box<Held>>,
    cap_bytes: usize,
    cap_segs: usize,
}

#[derive(Clone, Debug, Default)]
struct Held {
    segs: BTreeMap<u64, Vec<u8>>,
    bytes: usize,
    /// Where the bytes of the last insert that stored any start (for SACK's block order).
    last_insert: Option<u64>,
    /// The map has allocated its root node (kept when emptied, see [`HoldQueue::shrink`]).
    node: bool,
}

/// An empty map, for the reads of a queue that holds nothing.
static NONE: BTreeMap<u64, Vec<u8>> = BTreeMap::new();

impl HoldQueue {
    pub fn new(cap_bytes: usize, cap_segs: usize) -> HoldQueue {
        HoldQueue { held: None, cap_bytes, cap_segs }
    }

    fn segs(&self) -> &BTreeMap<u64, Vec<u8>> {
        self.held.as_ref().map_or(&NONE, |h| &h.segs)
    }

    pub fn bytes(&self) -> usize {
        self.held.as_ref().map_or(0, |h| h.bytes)
    }

    /// Bytes the queue holds, its map's nodes included: an emptied `BTreeMap` keeps its root
    /// node (368 bytes here) until [`HoldQueue::shrink`].
    pub fn state_bytes(&self) -> usize {
        const NODE: usize = 368;
        const PER_NODE: usize = 11;
        let Some(h) = &self.held else { return 0 };
        let nodes = if h.segs.is_empty() { usize::from(h.node) } else { h.segs.len().div_ceil(PER_NODE) };
        std::mem::size_of::<Held>() + h.bytes + NODE * nodes
    }

    /// Frees an emptied queue's allocations (an idle flow's queues hold nothing).
    pub fn shrink(&mut self) {
        if self.is_empty() {
            self.held = None;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.segs().is_empty()
    }

    /// Stores the parts of `data` (at stream offset `offset`) that lie at or after `next` (the
    /// first byte not yet taken out) and that no held segment already covers. Returns how many
    /// new bytes were stored. All or nothing: when the new bytes do not fit, none are stored.
    pub fn insert(&mut self, offset: u64, data: &[u8], next: u64) -> Result<usize, HoldError> {
        let end = offset + data.len() as u64;
        let mut pieces = Vec::new();
        let mut at = offset.max(next);
        let segs = self.segs();
        // Segments overlapping [at, end), in order: start from the last one starting before `at`.
        let first = segs.range(..at).next_back().map_or(at, |(&o, _)| o);
        for (&o, seg) in segs.range(first..end) {
            let seg_end = o + seg.len() as u64;
            if seg_end <= at {
                continue;
            }
            if o > at {
                pieces.push((at, o));
            }
            at = at.max(seg_end);
        }
        if at < end {
            pieces.push((at, end));
        }
        let new: usize = pieces.iter().map(|(a, b)| (b - a) as usize).sum();
        if new == 0 {
            return Ok(0);
        }
        if self.bytes() + new > self.cap_bytes || segs.len() + pieces.len() > self.cap_segs {
            return Err(HoldError::Full { held: self.bytes(), incoming: new, cap: self.cap_bytes });
        }
        let h = self.held.get_or_insert_with(Box::default);
        for (a, b) in pieces {
            let s = (a - offset) as usize;
            let e = (b - offset) as usize;
            h.segs.insert(a, data[s..e].to_vec());
        }
        h.bytes += new;
        h.node = true;
        h.last_insert = Some(offset.max(next));
        Ok(new)
    }

    /// The held bytes as contiguous `[start, end)` ranges, the one holding the bytes stored last
    /// first, then the others from the lowest: the order of SACK blocks (RFC 2018, section 4).
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let Some(h) = &self.held else { return out };
        for (&o, seg) in &h.segs {
            let end = o + seg.len() as u64;
            match out.last_mut() {
                Some(r) if r.1 == o => r.1 = end,
                _ => out.push((o, end)),
            }
        }
        if let Some(at) = h.last_insert {
            if let Some(i) = out.iter().position(|r| r.0 <= at && at < r.1) {
                let r = out.remove(i);
                out.insert(0, r);
            }
        }
        out
    }

    /// Where the lowest held bytes start, if any.
    pub fn first(&self) -> Option<u64> {
        self.segs().first_key_value().map(|(&k, _)| k)
    }

    /// True when held bytes start exactly at `next` (ready to go once something lets them).
    pub fn has_ready(&self, next: u64) -> bool {
        self.segs().first_key_value().is_some_and(|(&k, _)| k == next)
    }

    /// Takes out the held bytes that start exactly at `next`, if any, merged into one run.
    pub fn pop_ready(&mut self, next: u64) -> Option<Vec<u8>> {
        let h = self.held.as_deref_mut()?;
        let mut run: Option<Vec<u8>> = None;
        let mut at = next;
        while let Some(entry) = h.segs.first_entry() {
            if *entry.key() != at {
                break;
            }
            let seg = entry.remove();
            h.bytes -= seg.len();
            at += seg.len() as u64;
            match run.as_mut() {
                Some(r) => r.extend_from_slice(&seg),
                None => run = Some(seg),
            }
        }
        run
    }

    /// Drops everything before `next` (bytes delivered by another path, or a reset).
    pub fn discard_before(&mut self, next: u64) {
        let Some(h) = self.held.as_deref_mut() else { return };
        while let Some(entry) = h.segs.first_entry() {
            let o = *entry.key();
            let len = entry.get().len() as u64;
            if o >= next {
                break;
            }
            let mut seg = entry.remove();
            h.bytes -= seg.len();
            if o + len > next {
                let tail = seg.split_off((next - o) as usize);
                h.bytes += tail.len();
                h.segs.insert(next, tail);
            }
        }
    }

    /// The queue-state rows: every held segment and why.
    pub fn rows(&self, next: u64, reason_when_ready: HoldReason) -> Vec<HeldSegment> {
        self.segs()
            .iter()
            .map(|(&offset, s)| HeldSegment {
                offset,
                len: s.len(),
                reason: if offset == next { reason_when_ready } else { HoldReason::Gap },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(range: std::ops::Range<u8>) -> Vec<u8> {
        range.collect()
    }

    #[test]
    fn out_of_order_segments_are_released_in_order() {
        let mut q = HoldQueue::new(1000, 10);
        assert_eq!(q.insert(20, &bytes(20..30), 10), Ok(10));
        assert_eq!(q.insert(30, &bytes(30..40), 10), Ok(10));
        assert_eq!(q.pop_ready(10), None, "gap at 10..20");
        assert_eq!(q.rows(10, HoldReason::AwaitingTag)[0].reason, HoldReason::Gap);
        assert_eq!(q.insert(10, &bytes(10..20), 10), Ok(10));
        assert_eq!(q.pop_ready(10), Some(bytes(10..40)));
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn duplicates_and_overlaps_keep_the_first_copy() {
        let mut q = HoldQueue::new(1000, 10);
        q.insert(10, &bytes(10..20), 0).unwrap();
        q.insert(30, &bytes(30..40), 0).unwrap();
        assert_eq!(q.insert(10, &bytes(10..20), 0), Ok(0), "exact duplicate");
        // A retransmission cut differently, covering both and the gap, with other content.
        let mut other = bytes(5..45);
        for b in &mut other {
            *b = b.wrapping_add(100);
        }
        assert_eq!(q.insert(5, &other, 0), Ok(5 + 10 + 5));
        q.insert(0, &bytes(0..5), 0).unwrap();
        let got = q.pop_ready(0).unwrap();
        assert_eq!(got.len(), 45);
        assert_eq!(&got[10..20], &bytes(10..20)[..], "first copy kept");
        assert_eq!(&got[30..40], &bytes(30..40)[..]);
        assert_eq!(got[5], 105);
        assert_eq!(got[25], 125);
    }

    #[test]
    fn bytes_before_next_are_ignored() {
        let mut q = HoldQueue::new(1000, 10);
        assert_eq!(q.insert(0, &bytes(0..10), 10), Ok(0));
        assert_eq!(q.insert(5, &bytes(5..15), 10), Ok(5));
        assert_eq!(q.pop_ready(10), Some(bytes(10..15)));
    }

    #[test]
    fn bounded_all_or_nothing() {
        let mut q = HoldQueue::new(20, 2);
        q.insert(100, &[0; 15], 0).unwrap();
        assert_eq!(q.insert(200, &[0; 6], 0), Err(HoldError::Full { held: 15, incoming: 6, cap: 20 }));
        assert_eq!(q.bytes(), 15);
        q.insert(200, &[0; 5], 0).unwrap();
        assert!(q.insert(300, &[0; 0], 0).is_ok(), "nothing new is never refused");
        assert!(matches!(q.insert(300, &[0; 1], 0), Err(HoldError::Full { .. })), "segment cap");
    }

    #[test]
    fn ranges_merge_touching_segments_and_put_the_last_stored_first() {
        let mut q = HoldQueue::new(100, 10);
        assert_eq!(q.ranges(), vec![]);
        q.insert(10, &bytes(10..20), 0).unwrap();
        q.insert(20, &bytes(20..25), 0).unwrap();
        q.insert(40, &bytes(40..45), 0).unwrap();
        q.insert(60, &bytes(60..70), 0).unwrap();
        assert_eq!(q.ranges(), vec![(60, 70), (10, 25), (40, 45)]);
        // A duplicate stores nothing: the order stays.
        q.insert(40, &bytes(40..45), 0).unwrap();
        assert_eq!(q.ranges()[0], (60, 70));
        q.insert(8, &bytes(8..12), 0).unwrap();
        assert_eq!(q.ranges(), vec![(8, 25), (40, 45), (60, 70)]);
    }

    #[test]
    fn discard_before_trims_a_straddling_segment() {
        let mut q = HoldQueue::new(100, 10);
        q.insert(10, &bytes(10..20), 0).unwrap();
        q.insert(30, &bytes(30..35), 0).unwrap();
        q.discard_before(15);
        assert_eq!(q.bytes(), 10);
        assert_eq!(q.pop_ready(15), Some(bytes(15..20)));
        q.discard_before(100);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }
}

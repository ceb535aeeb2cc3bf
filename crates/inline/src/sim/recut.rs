//! Counts the server's retransmissions whose boundaries differ from its first transmission of
//! the same bytes (the nonce-reuse hazard: Linux collapses and splits retransmissions, and the
//! engine must still answer them with the records it sealed the first time).
//!
//! Watched at the server's egress, per flow: each first transmission's range is remembered
//! until the server has received an ACK past it; a segment overlapping bytes already sent is a
//! retransmission, and it is *re-cut* unless its range equals one first transmission's exactly.
//! It is *merged* when it covers bytes of more than one first transmission, *split* when it
//! starts or ends inside one (both can hold).

use crate::packet;
use std::collections::{BTreeMap, HashMap};

/// Server retransmissions seen at the server's egress, all flows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecutCounts {
    /// Data segments carrying bytes the server had sent before.
    pub retransmissions: u64,
    /// Of those, the ones whose range is not exactly a first transmission's.
    pub recut: u64,
    pub merged: u64,
    pub split: u64,
}

impl std::ops::AddAssign for RecutCounts {
    fn add_assign(&mut self, o: RecutCounts) {
        self.retransmissions += o.retransmissions;
        self.recut += o.recut;
        self.merged += o.merged;
        self.split += o.split;
    }
}

/// One flow's first transmissions, as offsets from the server's ISN.
#[derive(Default)]
struct Firsts {
    isn: Option<u32>,
    /// start → end of each first transmission not yet acknowledged to the server.
    ranges: BTreeMap<u64, u64>,
    /// End of everything sent so far.
    sent_end: u64,
}

impl Firsts {
    /// Offsets are taken modulo 2^32 from the ISN: no flow in the simulator sends 4 GiB.
    fn offset(&self, seq: u32) -> Option<u64> {
        self.isn.map(|isn| seq.wrapping_sub(isn) as u64)
    }

    fn segment(&mut self, start: u64, end: u64, n: &mut RecutCounts) {
        if start < self.sent_end {
            n.retransmissions += 1;
            let old_end = end.min(self.sent_end);
            // First transmissions overlapping [start, old_end).
            let from = self.ranges.range(..=start).next_back().map_or(start, |(&s, _)| s);
            let overlapped: Vec<(u64, u64)> = self
                .ranges
                .range(from..old_end)
                .filter(|&(_, &e)| e > start)
                .map(|(&s, &e)| (s, e))
                .collect();
            // All of them pruned (the server had an ACK past them): nothing to compare with.
            if let (Some(&(first_s, _)), Some(&(_, last_e))) = (overlapped.first(), overlapped.last()) {
                let split = start > first_s || old_end < last_e;
                let merged = overlapped.len() > 1 || end > self.sent_end;
                if split || merged {
                    n.recut += 1;
                    n.merged += u64::from(merged);
                    n.split += u64::from(split);
                }
            }
        }
        if end > self.sent_end {
            self.ranges.insert(start.max(self.sent_end), end);
            self.sent_end = end;
        }
    }

    fn ack(&mut self, ack: u64) {
        while let Some((_, &e)) = self.ranges.first_key_value() {
            if e > ack {
                break;
            }
            self.ranges.pop_first();
        }
    }
}

/// The server's first transmissions of every flow, keyed by the client's port.
#[derive(Default)]
pub(super) struct Recut {
    flows: HashMap<u16, Firsts>,
    pub counts: RecutCounts,
}

impl Recut {
    /// A packet the server host sends.
    pub fn server_sent(&mut self, p: &[u8]) {
        let Some(seg) = packet::parse(p) else { return };
        let f = self.flows.entry(seg.dst.port()).or_default();
        if seg.syn {
            f.isn = Some(seg.seq.0);
            return;
        }
        let len = seg.payload.len() as u64;
        if let (Some(start), true) = (f.offset(seg.seq.0), len > 0) {
            f.segment(start, start + len, &mut self.counts);
        }
    }

    /// A packet the server host receives: its ACK ends the server's retransmissions below it.
    pub fn server_received(&mut self, p: &[u8]) {
        let Some(seg) = packet::parse(p) else { return };
        let Some(f) = self.flows.get_mut(&seg.src.port()) else { return };
        if let (Some(ack), Some(_)) = (seg.ack, f.isn) {
            let a = f.offset(ack.0).expect("isn known");
            f.ack(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(segs: &[(u64, u64)]) -> RecutCounts {
        let mut f = Firsts::default();
        let mut n = RecutCounts::default();
        for &(s, e) in segs {
            f.segment(s, e, &mut n);
        }
        n
    }

    #[test]
    fn same_boundaries_are_not_recut() {
        let n = run(&[(1, 101), (101, 201), (1, 101), (101, 201)]);
        assert_eq!(n, RecutCounts { retransmissions: 2, ..Default::default() });
    }

    #[test]
    fn merged_split_and_extended_retransmissions_are_counted() {
        let n = run(&[(1, 101), (101, 201), (201, 301), (1, 201)]);
        assert_eq!((n.recut, n.merged, n.split), (1, 1, 0), "two firsts in one");
        let n = run(&[(1, 101), (1, 51), (51, 101)]);
        assert_eq!((n.recut, n.merged, n.split), (2, 0, 2), "one first in two");
        let n = run(&[(1, 101), (101, 201), (51, 151)]);
        assert_eq!((n.recut, n.merged, n.split), (1, 1, 1), "across a boundary");
        let n = run(&[(1, 101), (1, 151), (101, 151)]);
        assert_eq!((n.retransmissions, n.recut, n.merged), (2, 1, 1), "old and new bytes together");
    }

    #[test]
    fn acknowledged_firsts_are_forgotten() {
        let mut f = Firsts::default();
        let mut n = RecutCounts::default();
        f.segment(1, 101, &mut n);
        f.segment(101, 201, &mut n);
        f.ack(101);
        assert_eq!(f.ranges.len(), 1);
        f.segment(1, 201, &mut n);
        assert_eq!((n.retransmissions, n.recut), (1, 0), "only (101, 201) is left to compare with");
    }
}

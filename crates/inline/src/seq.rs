//! TCP sequence numbers: 32-bit values compared modulo 2^32 (RFC 9293 §3.4), and their mapping to
//! 64-bit stream offsets.
//!
//! Everything past the packet edge (the sequence-pair table, the record framer, the hold queue)
//! works in 64-bit offsets that never wrap; only the packet parser and emitter see [`Seq`]. That
//! keeps the wrap in one place, tested here, instead of in every comparison of the engine.

use std::cmp::Ordering;
use std::fmt;
use std::ops::{Add, Sub};

/// A TCP sequence or acknowledgement number. Ordered only relative to a nearby number: `a < b` when
/// `b - a`, taken modulo 2^32, is in (0, 2^31). It deliberately has no `Ord`: a total order does not
/// exist on a circle.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Seq(pub u32);

impl Seq {
    /// The signed distance `self - other`: positive when `self` is after `other`. Meaningful while
    /// the two are less than 2^31 apart, which TCP's window guarantees for numbers in flight.
    pub fn diff(self, other: Seq) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }

    /// Orders two numbers on the circle; `Equal` only when identical.
    pub fn cmp_near(self, other: Seq) -> Ordering {
        self.diff(other).cmp(&0)
    }

    pub fn lt(self, other: Seq) -> bool {
        self.diff(other) < 0
    }

    pub fn le(self, other: Seq) -> bool {
        self.diff(other) <= 0
    }

    pub fn gt(self, other: Seq) -> bool {
        self.diff(other) > 0
    }

    pub fn ge(self, other: Seq) -> bool {
        self.diff(other) >= 0
    }

    /// The later of two numbers.
    #[must_use]
    pub fn max_near(self, other: Seq) -> Seq {
        if self.ge(other) {
            self
        } else {
            other
        }
    }

    /// True when `self` lies in `[start, start + len)`, across the wrap if need be.
    pub fn in_range(self, start: Seq, len: u32) -> bool {
        self.0.wrapping_sub(start.0) < len
    }
}

/// `seq + n` modulo 2^32.
impl Add<u32> for Seq {
    type Output = Seq;

    fn add(self, n: u32) -> Seq {
        Seq(self.0.wrapping_add(n))
    }
}

/// `seq - n` modulo 2^32.
impl Sub<u32> for Seq {
    type Output = Seq;

    fn sub(self, n: u32) -> Seq {
        Seq(self.0.wrapping_sub(n))
    }
}

impl fmt::Debug for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seq({})", self.0)
    }
}

/// Maps one direction's sequence numbers to 64-bit stream offsets counted from its initial
/// sequence number: the SYN is offset 0, the first data byte offset 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream {
    isn: Seq,
}

impl Stream {
    pub fn new(isn: Seq) -> Stream {
        Stream { isn }
    }

    pub fn isn(&self) -> Seq {
        self.isn
    }

    /// The sequence number of an offset (the offset's low 32 bits, shifted by the ISN).
    pub fn seq(&self, offset: u64) -> Seq {
        self.isn + offset as u32
    }

    /// The offset of `seq` nearest to `near` (an offset already known, such as the highest seen),
    /// or `None` when that offset would lie before the SYN — a number from no place in this stream.
    pub fn offset(&self, seq: Seq, near: u64) -> Option<u64> {
        let d = seq.diff(self.seq(near));
        let off = near as i128 + d as i128;
        u64::try_from(off).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOP: u32 = u32::MAX;

    #[test]
    fn add_and_sub_wrap() {
        assert_eq!(Seq(TOP) + 1, Seq(0));
        assert_eq!(Seq(TOP - 5) + 10, Seq(4));
        assert_eq!(Seq(3) - 5, Seq(TOP - 1));
        assert_eq!(Seq(0) - 1, Seq(TOP));
    }

    #[test]
    fn comparisons_across_the_wrap() {
        let before = Seq(TOP - 10);
        let after = Seq(20);
        assert!(before.lt(after));
        assert!(before.le(after));
        assert!(after.gt(before));
        assert!(after.ge(before));
        assert!(!after.lt(before));
        assert_eq!(after.diff(before), 31);
        assert_eq!(before.diff(after), -31);
        assert_eq!(before.max_near(after), after);
        assert_eq!(after.max_near(before), after);
        assert_eq!(before.cmp_near(after), Ordering::Less);
        assert_eq!(after.cmp_near(after), Ordering::Equal);
        // Exactly at the wrap.
        assert!(Seq(TOP).lt(Seq(0)));
        assert_eq!(Seq(0).diff(Seq(TOP)), 1);
    }

    #[test]
    fn comparisons_at_half_the_circle() {
        // Within 2^31 - 1 the order holds; at 2^31 the distance is ambiguous and reads negative.
        let a = Seq(5);
        assert!(a.lt(a + ((1 << 31) - 1)));
        assert!((a + (1 << 31)).lt(a));
    }

    #[test]
    fn in_range_across_the_wrap() {
        let start = Seq(TOP - 2);
        assert!(Seq(TOP - 2).in_range(start, 6));
        assert!(Seq(TOP).in_range(start, 6));
        assert!(Seq(0).in_range(start, 6));
        assert!(Seq(2).in_range(start, 6));
        assert!(!Seq(3).in_range(start, 6));
        assert!(!Seq(TOP - 3).in_range(start, 6));
        assert!(!Seq(0).in_range(start, 0));
    }

    #[test]
    fn stream_offsets_across_the_wrap() {
        let s = Stream::new(Seq(TOP - 1));
        assert_eq!(s.seq(0), Seq(TOP - 1));
        assert_eq!(s.seq(1), Seq(TOP));
        assert_eq!(s.seq(2), Seq(0));
        assert_eq!(s.offset(Seq(0), 1), Some(2));
        assert_eq!(s.offset(Seq(TOP), 1000), Some(1));
        assert_eq!(s.offset(Seq(TOP - 2), 0), None, "one before the SYN");
        // Several times round the circle: the offset nearest to `near` wins.
        let near = 3 * (1u64 << 32) + 7;
        let seq = s.seq(near + 100);
        assert_eq!(s.offset(seq, near), Some(near + 100));
        assert_eq!(s.offset(s.seq(near - 100), near), Some(near - 100));
    }

    #[test]
    fn stream_offsets_round_trip_for_every_isn_near_the_wrap() {
        for isn in (TOP - 40..=TOP).chain(0..40) {
            let s = Stream::new(Seq(isn));
            for off in [0u64, 1, 2, 39, 40, 41, (1 << 32) - 1, 1 << 32, (1 << 32) + 1] {
                assert_eq!(s.offset(s.seq(off), off.saturating_sub(17)), Some(off), "isn {isn} off {off}");
            }
        }
    }
}

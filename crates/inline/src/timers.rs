//! When the engine next has work without a packet, found without visiting every flow.
//!
//! A flow has two kinds of deadline. Its expiry (half-open, idle, closing: `Flow::deadline`)
//! moves later with each of its packets and lies seconds to minutes ahead; its own timers
//! (retransmission toward the client, parking: `TlsFlow::deadline`) are what a flow in motion
//! needs to the millisecond. A scan of every flow for either, once per driver round, cost more
//! than the packets once thousands of idle flows were open beside a busy one.
//!
//! - **Flow timers:** a min-heap of (instant, flow) with lazy deletion. A flow records the
//!   earliest instant it has in the heap (`Flow::timer`); after each of its packets it pushes
//!   its deadline only when that is earlier. A deadline that moved later leaves the old entry,
//!   which comes up early, finds nothing due and arms the flow again; entries of flows gone or
//!   superseded are dropped when they come up. A parked flow has no timer, so idle flows hold no
//!   entry.
//! - **Expiry:** one instant no flow expires before, lowered whenever a flow's expiry is
//!   earlier. When it passes, one sweep over the flows removes the expired ones and finds the
//!   next. Sweeps are at least [`SWEEP_EVERY`] apart, so flows expiring at many distinct
//!   instants (a SYN flood's) cost a few sweeps a second, each expiry at most that late.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use crate::tables::FlowKey;

/// The least time between two sweeps for expired flows.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// Entries beyond this many per flow (plus [`SLACK`]) are mostly stale: the heap is rebuilt.
const STALE_FACTOR: usize = 2;
const SLACK: usize = 1024;

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Duration, FlowKey)>>,
    /// No flow expires before this; `None`: no flow to expire.
    sweep_at: Option<Duration>,
    sweeps: u64,
}

impl Timers {
    /// A flow's expiry, after a packet or a timeout of it.
    pub fn expires(&mut self, at: Duration) {
        self.sweep_at = Some(self.sweep_at.map_or(at, |s| s.min(at)));
    }

    /// A flow's own next timer `at`, given the earliest it already has in the heap (`armed`).
    /// Returns what the flow has armed now.
    pub fn arm(&mut self, key: FlowKey, at: Option<Duration>, armed: Option<Duration>) -> Option<Duration> {
        match at {
            Some(at) if armed.is_none_or(|a| at < a) => {
                self.heap.push(Reverse((at, key)));
                Some(at)
            }
            _ => armed,
        }
    }

    /// The earliest instant anything may be due: no later than the first real deadline, possibly
    /// earlier (a stale entry, an expiry bound).
    pub fn next(&self) -> Option<Duration> {
        let timer = self.heap.peek().map(|Reverse((at, _))| *at);
        timer.into_iter().chain(self.sweep_at).min()
    }

    /// Every entry due at `now`, each (instant, flow): the flow's timer if it still has that
    /// instant armed, else stale.
    pub fn take_due(&mut self, now: Duration) -> Vec<(Duration, FlowKey)> {
        let mut due = Vec::new();
        while self.heap.peek().is_some_and(|Reverse((at, _))| *at <= now) {
            let Some(Reverse(entry)) = self.heap.pop() else { break };
            due.push(entry);
        }
        if self.heap.capacity() > 4 * self.heap.len() + SLACK {
            self.heap.shrink_to(2 * self.heap.len());
        }
        due
    }

    /// Whether the flows are due a sweep for expired ones at `now`.
    pub fn sweep_due(&self, now: Duration) -> bool {
        self.sweep_at.is_some_and(|s| s <= now)
    }

    /// A sweep at `now` removed the expired flows; `next` is the earliest expiry left.
    pub fn swept(&mut self, now: Duration, next: Option<Duration>) {
        self.sweeps += 1;
        self.sweep_at = next.map(|n| n.max(now + SWEEP_EVERY));
    }

    /// Whether stale entries outnumber what `flows` flows can have armed: time to [`Timers::clear`]
    /// and arm every flow again.
    pub fn mostly_stale(&self, flows: usize) -> bool {
        self.heap.len() > STALE_FACTOR * flows + SLACK
    }

    /// Drops every timer entry (the expiry bound stays): each flow must be armed again.
    pub fn clear(&mut self) {
        self.heap.clear();
        self.heap.shrink_to(SLACK);
    }

    /// Sweeps for expired flows so far: with few flows expiring, a handful, however many
    /// packets and timers the flows had.
    pub fn sweeps(&self) -> u64 {
        self.sweeps
    }

    /// Bytes the heap holds allocated.
    pub fn heap_bytes(&self) -> usize {
        self.heap.capacity() * std::mem::size_of::<Reverse<(Duration, FlowKey)>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> FlowKey {
        FlowKey { client: ([10, 0, 0, 1], port).into(), server: ([10, 0, 0, 2], 443).into() }
    }

    #[test]
    fn only_an_earlier_deadline_is_pushed() {
        let mut t = Timers::default();
        let ms = Duration::from_millis;
        let armed = t.arm(key(1), Some(ms(200)), None);
        assert_eq!(armed, Some(ms(200)));
        // Later: the earlier entry stays armed and will come up first.
        assert_eq!(t.arm(key(1), Some(ms(300)), armed), armed);
        assert_eq!(t.arm(key(1), None, armed), armed);
        assert_eq!(t.arm(key(1), Some(ms(100)), armed), Some(ms(100)));
        assert_eq!(t.next(), Some(ms(100)));
        assert_eq!(t.take_due(ms(150)), vec![(ms(100), key(1))]);
        assert_eq!(t.take_due(ms(250)), vec![(ms(200), key(1))], "the superseded entry, stale");
        assert_eq!(t.next(), None);
    }

    #[test]
    fn sweeps_are_spaced_and_the_bound_only_falls_between_them() {
        let mut t = Timers::default();
        let ms = Duration::from_millis;
        t.expires(ms(5000));
        t.expires(ms(9000));
        assert_eq!(t.next(), Some(ms(5000)));
        assert!(!t.sweep_due(ms(4999)) && t.sweep_due(ms(5000)));
        t.swept(ms(5000), Some(ms(5001)));
        assert_eq!(t.next(), Some(ms(5000) + SWEEP_EVERY), "no second sweep within SWEEP_EVERY");
        t.swept(ms(6000), None);
        assert_eq!((t.next(), t.sweeps()), (None, 2));
    }
}

//! One direction of one hop: packets are dropped, duplicated, delayed and reordered as the
//! impairments say, with randomness from the simulation's seed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use rand::Rng;

/// Probabilities per packet, and the delays that make reordering.
#[derive(Debug, Clone, Copy)]
pub struct Impairments {
    pub loss: f64,
    pub reorder: f64,
    pub duplicate: f64,
    /// Every packet's one-way delay.
    pub delay: Duration,
    /// Added to a packet chosen for reordering, so later packets overtake it.
    pub reorder_delay: Duration,
}

impl Default for Impairments {
    fn default() -> Self {
        Impairments {
            loss: 0.0,
            reorder: 0.0,
            duplicate: 0.0,
            delay: Duration::from_micros(500),
            reorder_delay: Duration::from_millis(3),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

#[derive(Debug, Default)]
pub struct Link {
    /// (due, tie-break, packet): the tie-break keeps equal due times in sending order.
    queue: BinaryHeap<Reverse<(Duration, u64, Vec<u8>)>>,
    next: u64,
    pub stats: LinkStats,
}

impl Link {
    pub fn send(&mut self, now: Duration, packet: Vec<u8>, imp: &Impairments, rng: &mut impl Rng) {
        self.stats.sent += 1;
        if rng.random_bool(imp.loss) {
            self.stats.dropped += 1;
            return;
        }
        if rng.random_bool(imp.duplicate) {
            self.stats.duplicated += 1;
            self.push(now + imp.delay + imp.reorder_delay / 2, packet.clone());
        }
        let mut due = now + imp.delay;
        if rng.random_bool(imp.reorder) {
            self.stats.reordered += 1;
            due += imp.reorder_delay;
        }
        self.push(due, packet);
    }

    fn push(&mut self, due: Duration, packet: Vec<u8>) {
        self.next += 1;
        self.queue.push(Reverse((due, self.next, packet)));
    }

    pub fn next_due(&self) -> Option<Duration> {
        self.queue.peek().map(|Reverse((due, _, _))| *due)
    }

    /// The next packet due at or before `now`.
    pub fn pop_due(&mut self, now: Duration) -> Option<Vec<u8>> {
        if self.next_due()? > now {
            return None;
        }
        self.queue.pop().map(|Reverse((_, _, p))| p)
    }
}

//! One side's learned IP → MAC table: bounded, the entry seen longest ago evicted first, so a
//! flood of spoofed source addresses replaces entries but never grows the table.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use crate::table_hash::TableHash;

#[derive(Debug)]
pub(super) struct MacTable {
    cap: usize,
    /// IP → (MAC, when last seen: the bridge's learning counter).
    map: HashMap<IpAddr, ([u8; 6], u64), TableHash>,
    /// Sightings in order; an entry is current while the map holds its stamp. Stale ones are
    /// skipped at eviction and swept when the queue reaches twice the bound. A sighting of the
    /// address seen last moves its stamp forward in place: a stream of frames from one host
    /// (a client's connections, a server's answers) then holds one entry, not one per frame,
    /// which filled the queue to twice the bound (512 KiB of capacity per side) under traffic
    /// from a single address.
    order: VecDeque<(IpAddr, u64)>,
}

impl MacTable {
    pub(super) fn new(cap: usize) -> MacTable {
        MacTable { cap: cap.max(1), map: HashMap::default(), order: VecDeque::new() }
    }

    pub(super) fn learn(&mut self, ip: IpAddr, mac: [u8; 6], stamp: u64) {
        let previous = self.map.insert(ip, (mac, stamp));
        match self.order.back_mut() {
            // Still the newest sighting of all: it stays last, only later.
            Some(last) if last.0 == ip && previous.is_some_and(|p| p.1 == last.1) => last.1 = stamp,
            _ => self.order.push_back((ip, stamp)),
        }
        while self.map.len() > self.cap {
            let Some((old, s)) = self.order.pop_front() else { break };
            if self.map.get(&old).is_some_and(|e| e.1 == s) {
                self.map.remove(&old);
            }
        }
        if self.order.len() > 2 * self.cap {
            let map = &self.map;
            self.order.retain(|(ip, s)| map.get(ip).is_some_and(|e| e.1 == *s));
        }
    }

    /// The MAC and when it was last seen.
    pub(super) fn get(&self, ip: &IpAddr) -> Option<([u8; 6], u64)> {
        self.map.get(ip).copied()
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Memory held, in entries (the map and the order queue).
    #[cfg(test)]
    fn footprint(&self) -> usize {
        self.map.len() + self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn bounded_and_the_longest_unseen_goes_first() {
        let mut t = MacTable::new(3);
        let mut stamp = 0;
        let mut learn = |t: &mut MacTable, n: u32| {
            stamp += 1;
            t.learn(ip(n), [n as u8; 6], stamp);
        };
        for n in 1..=3 {
            learn(&mut t, n);
        }
        learn(&mut t, 1); // seen again: now the most recent
        learn(&mut t, 4);
        assert!(t.get(&ip(2)).is_none(), "2 was seen longest ago");
        assert!(t.get(&ip(1)).is_some() && t.get(&ip(3)).is_some() && t.get(&ip(4)).is_some());
        for _ in 0..10_000 {
            learn(&mut t, 1);
        }
        assert_eq!(t.len(), 3);
        assert!(t.footprint() <= 3 + 2 * 3 + 1, "stale sightings are swept");
        for n in 100..10_000 {
            learn(&mut t, n);
        }
        assert_eq!(t.len(), 3);
        assert!(t.footprint() <= 3 + 2 * 3 + 1);
        assert_eq!(t.get(&ip(9_999)).map(|e| e.0), Some([(9_999u32 as u8); 6]));
    }

    #[test]
    fn a_stream_from_one_address_holds_one_sighting_and_keeps_the_order() {
        let mut t = MacTable::new(3);
        t.learn(ip(1), [1; 6], 1);
        t.learn(ip(2), [2; 6], 2);
        for stamp in 3..10_000 {
            t.learn(ip(2), [2; 6], stamp);
        }
        assert_eq!(t.footprint(), 2 + 2, "one sighting per address, however many frames");
        assert_eq!(t.get(&ip(2)), Some(([2; 6], 9_999)), "the stamp moved forward");
        // 1 was seen longest ago and goes first; 2, seen last, stays.
        t.learn(ip(3), [3; 6], 10_000);
        t.learn(ip(4), [4; 6], 10_001);
        assert!(t.get(&ip(1)).is_none());
        assert!(t.get(&ip(2)).is_some() && t.get(&ip(3)).is_some() && t.get(&ip(4)).is_some());
        // A sighting of the newest address again, after others: a new entry at the back, and
        // its older one is stale (skipped at eviction).
        t.learn(ip(3), [3; 6], 10_002);
        t.learn(ip(5), [5; 6], 10_003);
        assert!(t.get(&ip(2)).is_none(), "2 was now seen longest ago");
        assert!(t.get(&ip(3)).is_some() && t.get(&ip(4)).is_some() && t.get(&ip(5)).is_some());
        // A new MAC for the address seen last: the entry says so, still one sighting.
        let before = t.footprint();
        t.learn(ip(5), [9; 6], 10_004);
        assert_eq!(t.get(&ip(5)), Some(([9; 6], 10_004)));
        assert_eq!(t.footprint(), before);
    }
}

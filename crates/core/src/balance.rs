//! Choosing backends from a pool for one new connection.
//!
//! The balancer hands out an ordered list of attempts: the policy's first pick, then the other
//! healthy members, so that a connect that fails before any byte was forwarded retries on the
//! next member instead of failing the client. Unhealthy members are never tried; a pool with no
//! healthy member yields no attempt at all, and the caller fails fast.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How the first member is picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    #[default]
    RoundRobin,
    /// The healthy member with the fewest open connections (ties rotate).
    LeastConnections,
    /// Rendezvous hashing on the client's address: a client keeps its member while that member
    /// is healthy, and only the clients of a member that leaves move.
    SourceHash,
}

/// What the balancer needs to know of a member right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberView {
    pub healthy: bool,
    pub active: u32,
}

/// Per-pool balancing state, shared by the connections of a route.
#[derive(Debug, Default)]
pub struct Balancer {
    policy: Policy,
    next: AtomicUsize,
}

impl Balancer {
    pub fn new(policy: Policy) -> Self {
        Balancer { policy, next: AtomicUsize::new(0) }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Indices into `members` to try, in order, at most `max_attempts` long.
    pub fn attempts(&self, members: &[MemberView], client: IpAddr, max_attempts: usize) -> Vec<usize> {
        let healthy: Vec<usize> = (0..members.len()).filter(|&i| members[i].healthy).collect();
        if healthy.is_empty() {
            return Vec::new();
        }
        let rotation = self.next.fetch_add(1, Ordering::Relaxed) % healthy.len();
        let mut order: Vec<usize> =
            healthy.iter().cycle().skip(rotation).take(healthy.len()).copied().collect();
        match self.policy {
            Policy::RoundRobin => {}
            // Stable sort: equal loads keep the rotated order, so ties are spread.
            Policy::LeastConnections => order.sort_by_key(|&i| members[i].active),
            Policy::SourceHash => order.sort_by_key(|&i| std::cmp::Reverse(rendezvous(client, i))),
        }
        order.truncate(max_attempts);
        order
    }
}

/// Highest-random-weight score of (client, member); deterministic across processes.
fn rendezvous(client: IpAddr, member: usize) -> u64 {
    // FNV-1a: stable across Rust versions and runs, unlike the std hasher's keys.
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    client.hash(&mut h);
    member.hash(&mut h);
    // Finalise (splitmix64) so nearby inputs spread over the whole range.
    let mut z = h.finish().wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: MemberView = MemberView { healthy: true, active: 0 };
    const DOWN: MemberView = MemberView { healthy: false, active: 0 };
    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn round_robin_rotates_and_covers_the_healthy() {
        let b = Balancer::new(Policy::RoundRobin);
        let pool = [UP, UP, UP];
        assert_eq!(b.attempts(&pool, ip(1), 3), vec![0, 1, 2]);
        assert_eq!(b.attempts(&pool, ip(1), 3), vec![1, 2, 0]);
        assert_eq!(b.attempts(&pool, ip(1), 2), vec![2, 0]);
        let fresh = Balancer::new(Policy::RoundRobin);
        assert_eq!(fresh.attempts(&[UP, DOWN, UP], ip(1), 9), vec![0, 2]);
        assert_eq!(fresh.attempts(&[UP, DOWN, UP], ip(1), 9), vec![2, 0]);
    }

    #[test]
    fn no_healthy_member_means_no_attempt() {
        let b = Balancer::new(Policy::LeastConnections);
        assert!(b.attempts(&[DOWN, DOWN], ip(1), 2).is_empty());
        assert!(b.attempts(&[], ip(1), 2).is_empty());
    }

    #[test]
    fn least_connections_prefers_the_idle() {
        let b = Balancer::new(Policy::LeastConnections);
        let pool = [
            MemberView { healthy: true, active: 5 },
            MemberView { healthy: true, active: 1 },
            MemberView { healthy: false, active: 0 },
            MemberView { healthy: true, active: 3 },
        ];
        for _ in 0..4 {
            assert_eq!(b.attempts(&pool, ip(1), 3), vec![1, 3, 0]);
        }
        // Ties rotate.
        let tied = [UP, UP];
        let firsts: Vec<usize> = (0..4).map(|_| b.attempts(&tied, ip(1), 1)[0]).collect();
        assert!(firsts.contains(&0) && firsts.contains(&1), "{firsts:?}");
    }

    #[test]
    fn source_hash_is_sticky_and_moves_only_the_lost_members_clients() {
        let b = Balancer::new(Policy::SourceHash);
        let all = [UP, UP, UP, UP];
        let before: Vec<usize> = (0..200).map(|c| b.attempts(&all, ip(c), 1)[0]).collect();
        for c in 0..200u8 {
            assert_eq!(b.attempts(&all, ip(c), 1)[0], before[c as usize], "not sticky");
        }
        let spread = (0..4).filter(|m| before.contains(m)).count();
        assert_eq!(spread, 4, "clients spread over every member");
        let without_2 = [UP, UP, DOWN, UP];
        for c in 0..200u8 {
            let now = b.attempts(&without_2, ip(c), 1)[0];
            if before[c as usize] != 2 {
                assert_eq!(now, before[c as usize], "client {c} moved though its member stayed");
            } else {
                assert_ne!(now, 2);
            }
        }
    }
}

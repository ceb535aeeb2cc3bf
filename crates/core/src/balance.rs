//! Choosing a backend from a pool.
//!
//! The pool hands out an ordered list of attempts for one connection: the first pick of the
//! balancing policy, then the rest of the pool in order, so that a connect that fails before any
//! byte was forwarded retries on the next member instead of failing the client.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Round-robin over `len` members, shared by all connections of a route.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn new() -> Self {
        Self::default()
    }

    /// The order in which to try the members of a pool of `len` for one new connection, at most
    /// `max_attempts` long. Each call starts one member further on.
    pub fn attempts(&self, len: usize, max_attempts: usize) -> Attempts {
        let start = if len == 0 { 0 } else { self.next.fetch_add(1, Ordering::Relaxed) % len };
        Attempts { start, len, taken: 0, max: max_attempts.min(len) }
    }
}

/// Indices into a pool, in the order to try them.
#[derive(Debug, Clone)]
pub struct Attempts {
    start: usize,
    len: usize,
    taken: usize,
    max: usize,
}

impl Iterator for Attempts {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.taken >= self.max {
            return None;
        }
        let i = (self.start + self.taken) % self.len;
        self.taken += 1;
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_start_and_covers_pool() {
        let rr = RoundRobin::new();
        assert_eq!(rr.attempts(3, 3).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(rr.attempts(3, 3).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert_eq!(rr.attempts(3, 2).collect::<Vec<_>>(), vec![2, 0]);
        assert_eq!(rr.attempts(3, 9).collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[test]
    fn empty_pool_yields_nothing() {
        assert_eq!(RoundRobin::new().attempts(0, 3).count(), 0);
    }
}

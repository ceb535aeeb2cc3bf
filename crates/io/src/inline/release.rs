//! Memory back to the system once flows are parked. Allocators keep pages freed for reuse:
//! mimalloc purges them only after a delay, and only from a later allocator call, which an
//! idle bridge thread never makes; glibc's malloc (aws-lc's contexts) returns only its top.
//! Without this the pages an idle flow's handshake and request used stay resident.

use std::time::{Duration, Instant};

/// At most this often: a release walks the allocators' pages (about a millisecond with ten
/// thousand idle flows), which the bridge thread must not pay per timer round.
pub const EVERY: Duration = Duration::from_secs(1);

/// When to release: after the engine parked flows, once the last release is [`EVERY`] old.
#[derive(Debug)]
pub struct Release {
    release: Option<fn()>,
    /// Parkings counted at the last release.
    seen: u64,
    last: Option<Instant>,
}

impl Release {
    pub fn new(release: Option<fn()>) -> Release {
        Release { release, seen: 0, last: None }
    }

    /// Called every round with the engine's count of parkings (`Engine::parked_total`);
    /// returns whether memory was released.
    pub fn tick(&mut self, at: Instant, parked_total: u64) -> bool {
        let Some(release) = self.release else { return false };
        if parked_total == self.seen || self.last.is_some_and(|l| at < l + EVERY) {
            return false;
        }
        self.seen = parked_total;
        self.last = Some(at);
        release();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn count() {
        CALLS.fetch_add(1, Ordering::Relaxed);
    }

    #[test]
    fn releases_after_new_parkings_at_most_every_period() {
        let t0 = Instant::now();
        let mut r = Release::new(Some(count));
        assert!(!r.tick(t0, 0), "nothing parked yet");
        assert!(r.tick(t0, 3), "flows parked");
        assert!(!r.tick(t0 + EVERY / 2, 5), "too soon after the last");
        assert!(r.tick(t0 + EVERY, 5), "the parkings left waiting");
        assert!(!r.tick(t0 + 3 * EVERY, 5), "nothing new parked");
        assert_eq!(CALLS.load(Ordering::Relaxed), 2);
        assert!(!Release::new(None).tick(t0, 9), "no release function");
    }
}

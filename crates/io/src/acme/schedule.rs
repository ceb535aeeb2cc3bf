//! When to order: renewal at two-thirds of a certificate's lifetime, and the wait after a failed
//! order (doubling from `retry_min` up to `retry_max`, each wait between half and all of that, so
//! a fleet restarted together does not retry in lockstep).

use std::time::{Duration, SystemTime};

/// Two-thirds of the way from `not_before` to `not_after`.
pub fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    not_before + lifetime * 2 / 3
}

/// The wait after the `failures`-th failure in a row (1 for the first); `jitter` in [0, 1).
pub fn backoff(min: Duration, max: Duration, failures: u32, jitter: f64) -> Duration {
    let doubled = min.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let ceiling = doubled.min(max);
    ceiling.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_two_thirds() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(renew_at(t0, t0 + Duration::from_secs(90)), t0 + Duration::from_secs(60));
        // A certificate whose notAfter precedes notBefore is due at once.
        assert_eq!(renew_at(t0, t0 - Duration::from_secs(5)), t0);
    }

    #[test]
    fn backoff_doubles_within_jitter_up_to_the_ceiling() {
        let (min, max) = (Duration::from_secs(10), Duration::from_secs(3600));
        assert_eq!(backoff(min, max, 1, 0.0), Duration::from_secs(5));
        assert_eq!(backoff(min, max, 1, 1.0), Duration::from_secs(10));
        assert_eq!(backoff(min, max, 3, 1.0), Duration::from_secs(40));
        assert_eq!(backoff(min, max, 30, 1.0), max);
        assert_eq!(backoff(min, max, 30, 0.0), max / 2);
    }
}

//! A backend's health, from active checks and from what real connections saw.
//!
//! HAProxy's model: `fall` consecutive failures take a member down, `rise` consecutive successes
//! bring it back. Failed connects of real traffic count as failures too (passive ejection). When
//! no active check runs, nothing would ever bring an ejected member back, so it is re-admitted on
//! probation after `eject_time`: one more failure ejects it again. Time is passed in, on the
//! caller's clock: an `Instant` for the socket shells, a `Duration` since start for the sans-IO
//! inline engine.

use std::time::{Duration, Instant};

/// A point on the caller's clock.
pub trait Clock: Copy {
    /// Time from `earlier` to `self`, zero if `earlier` is later.
    fn since(self, earlier: Self) -> Duration;
}

impl Clock for Instant {
    fn since(self, earlier: Self) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl Clock for Duration {
    fn since(self, earlier: Self) -> Duration {
        self.saturating_sub(earlier)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthParams {
    pub rise: u32,
    pub fall: u32,
    /// Without active checks: how long a passively ejected member stays out.
    pub eject_time: Duration,
    pub active_checks: bool,
}

/// A change of state worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Down,
    Up,
}

#[derive(Debug, Clone)]
pub struct Health<T: Clock = Instant> {
    params: HealthParams,
    healthy: bool,
    successes: u32,
    failures: u32,
    ejected_at: Option<T>,
}

impl<T: Clock> Health<T> {
    /// Members start healthy, so a fresh pool serves at once.
    pub fn new(params: HealthParams) -> Self {
        Health { params, healthy: true, successes: 0, failures: 0, ejected_at: None }
    }

    /// Healthy now? Re-admits a passively ejected member whose time is up.
    pub fn is_healthy(&mut self, now: T) -> bool {
        if !self.healthy && !self.params.active_checks {
            if let Some(at) = self.ejected_at {
                if now.since(at) >= self.params.eject_time {
                    self.healthy = true;
                    // Probation: the next failure takes it out again.
                    self.failures = self.params.fall.saturating_sub(1);
                    self.ejected_at = None;
                }
            }
        }
        self.healthy
    }

    /// The result of an active check or of a real connect attempt.
    pub fn record(&mut self, ok: bool, now: T) -> Option<Transition> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.healthy && (self.successes >= self.params.rise || !self.params.active_checks) {
                self.healthy = true;
                self.ejected_at = None;
                return Some(Transition::Up);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.healthy && self.failures >= self.params.fall {
                self.healthy = false;
                self.ejected_at = Some(now);
                return Some(Transition::Down);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(active: bool) -> HealthParams {
        HealthParams { rise: 2, fall: 3, eject_time: Duration::from_secs(10), active_checks: active }
    }

    #[test]
    fn fall_then_rise_with_active_checks() {
        let t = Instant::now();
        let mut h = Health::new(params(true));
        assert_eq!(h.record(false, t), None);
        assert_eq!(h.record(false, t), None);
        assert_eq!(h.record(true, t), None, "a success resets the failure count");
        assert_eq!(h.record(false, t), None);
        assert_eq!(h.record(false, t), None);
        assert_eq!(h.record(false, t), Some(Transition::Down));
        assert!(!h.is_healthy(t + Duration::from_secs(3600)), "only checks bring it back");
        assert_eq!(h.record(true, t), None);
        assert_eq!(h.record(true, t), Some(Transition::Up));
        assert!(h.is_healthy(t));
    }

    #[test]
    fn passive_ejection_expires_into_probation() {
        let t = Instant::now();
        let mut h = Health::new(params(false));
        for _ in 0..2 {
            h.record(false, t);
        }
        assert_eq!(h.record(false, t), Some(Transition::Down));
        assert!(!h.is_healthy(t + Duration::from_secs(9)));
        assert!(h.is_healthy(t + Duration::from_secs(10)));
        // On probation one failure is enough.
        assert_eq!(h.record(false, t + Duration::from_secs(11)), Some(Transition::Down));
        assert!(!h.is_healthy(t + Duration::from_secs(12)));
        assert!(h.is_healthy(t + Duration::from_secs(21)));
        assert_eq!(h.record(true, t + Duration::from_secs(21)), None);
        assert_eq!(h.record(false, t + Duration::from_secs(22)), None, "a success ends probation");
    }
}

//! Time passed in: keepalive, connection idle timeout, idle session reaping.

use super::{ConnectionError, Endpoint, Event};
use crate::session::SessionId;
use crate::wire::ResetCode;
use std::time::Instant;

impl Endpoint {
    /// When `handle_timeout` next has work: keepalive, connection timeout, session reaping.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        let mut t = self.last_rx + self.config.idle_timeout;
        if !self.ping_outstanding {
            t = t.min(self.last_rx + self.config.keepalive_interval);
        }
        for s in self.sessions.values().filter(|s| !s.awaiting_peer_terminal()) {
            t = t.min(s.last_activity + self.config.session_idle_timeout);
        }
        Some(t)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        if now >= self.last_rx + self.config.idle_timeout {
            self.fail(ConnectionError::TimedOut);
            return;
        }
        if !self.ping_outstanding && now >= self.last_rx + self.config.keepalive_interval {
            self.ping_outstanding = true;
            self.ping_to_send = true;
        }
        let idle = self.config.session_idle_timeout;
        let reaped: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.awaiting_peer_terminal() && now >= s.last_activity + idle)
            .map(|(id, _)| *id)
            .collect();
        for id in reaped {
            self.events.push_back(Event::Reset {
                id,
                code: ResetCode::IDLE_TIMEOUT,
                reason: "idle".into(),
                remote: false,
            });
            self.abort(id, ResetCode::IDLE_TIMEOUT, "idle", false);
        }
    }
}

//! Passive health of balanced pools' members, judged from the flows themselves: a member that
//! refuses a connection (RST to the SYN) or leaves a SYN unanswered until the flow's SYN timeout
//! has failed it; a SYN-ACK is a success. The rule (fall, ejection, probation) is
//! `tlsgate_core::health`'s, shared with terminate's pools; the choice among the members up is
//! `tlsgate_core::balance`'s rendezvous hashing on the client's address. No probe traffic.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tlsgate_core::balance::{Balancer, MemberView, Policy};
use tlsgate_core::health::{Health, HealthParams, Transition};

/// Failures in a row that take a member out (one refusal may be a restart's moment), and how
/// long it stays out before new flows try it again on probation.
pub const PARAMS: HealthParams =
    HealthParams { rise: 1, fall: 2, eject_time: Duration::from_secs(10), active_checks: false };

/// Keyed by member address; only pool members are ever entered, so it is bounded by the config.
#[derive(Debug)]
pub struct Pools {
    members: HashMap<SocketAddr, Health<Duration>>,
    balancer: Balancer,
}

impl Default for Pools {
    fn default() -> Pools {
        Pools { members: HashMap::new(), balancer: Balancer::new(Policy::SourceHash) }
    }
}

impl Pools {
    /// The member of `pool` a new flow from `client` goes to at `now`: the client's rendezvous
    /// choice among the members up; with none up, among all (refusing is no better).
    pub fn choose(&mut self, pool: &[SocketAddr], client: IpAddr, now: Duration) -> Option<SocketAddr> {
        let mut views: Vec<MemberView> =
            pool.iter().map(|m| MemberView { healthy: self.is_up(*m, now), active: 0 }).collect();
        if views.iter().all(|v| !v.healthy) {
            views.iter_mut().for_each(|v| v.healthy = true);
        }
        self.balancer.attempts(&views, client, 1).first().map(|&i| pool[i])
    }

    fn is_up(&mut self, member: SocketAddr, now: Duration) -> bool {
        self.members.get_mut(&member).is_none_or(|h| h.is_healthy(now))
    }

    /// The result of a connection to `member`; true when a failure took it out.
    pub fn record(&mut self, member: SocketAddr, ok: bool, now: Duration) -> bool {
        let h = self.members.entry(member).or_insert_with(|| Health::new(PARAMS));
        h.record(ok, now) == Some(Transition::Down)
    }

    /// Members skipped by new flows at `now`.
    pub fn down(&mut self, now: Duration) -> Vec<SocketAddr> {
        let mut down: Vec<SocketAddr> = self.members.keys().copied().collect();
        down.retain(|m| !self.members.get_mut(m).is_some_and(|h| h.is_healthy(now)));
        down.sort();
        down
    }
}

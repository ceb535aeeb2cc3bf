//! Gate-side policy: which destinations each portal identity may open.
//!
//! A [`Policy`] is an ordered list of rules, first match wins, no match denies. A rule names an
//! action, an optional protocol, a destination (CIDR, host-name suffix, or any) and port ranges:
//! `allow tcp 10.0.0.0/8 22,443,8000-8999`, `deny any 127.0.0.0/8`, `allow udp corp.example 53`.
//!
//! Host names arrive unresolved (the gate resolves them), so a CIDR rule cannot match a name.
//! After resolving, [`Policy::check_resolved`] re-checks the address: a name allowed by suffix
//! that resolves into a denied range is refused (DNS rebinding toward internal addresses).

mod cidr;
mod rule;

pub use cidr::Cidr;
pub use rule::{Action, Dest, PortRange, Rule};

use crate::addr::Host;
use crate::wire::{OpenRc, Protocol};
use crate::Target;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A policy text that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy rule {input:?}: {why}")]
pub struct PolicyError {
    pub input: String,
    pub why: &'static str,
}

/// What the gate does with an Open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny { reason: String },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        *self == Decision::Allow
    }

    /// The refusal to send in OpenReply, if denied.
    pub fn refusal(&self) -> Option<(OpenRc, &str)> {
        match self {
            Decision::Allow => None,
            Decision::Deny { reason } => Some((OpenRc::REFUSED_BY_POLICY, reason)),
        }
    }
}

/// Ordered rules; the first rule that matches decides, no match denies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<Rule>,
}

impl Policy {
    /// Parses one rule per line; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let rules = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        Ok(Policy { rules })
    }

    fn first_match(&self, protocol: Protocol, target: &Target) -> Option<(usize, &Rule)> {
        self.rules.iter().enumerate().find(|(_, r)| r.matches(protocol, target))
    }

    /// Decides an Open as requested (before any name resolution).
    pub fn check(&self, protocol: Protocol, target: &Target) -> Decision {
        let target = normalize(target);
        match self.first_match(protocol, &target) {
            Some((_, r)) if r.action == Action::Allow => Decision::Allow,
            Some((i, _)) => Decision::Deny { reason: format!("{target} denied by rule {}", i + 1) },
            None => Decision::Deny { reason: format!("{target} not allowed") },
        }
    }

    /// Re-checks a name once resolved to `ip`: the name must be allowed, and no rule may deny
    /// the address (rules that do not match the address do not count against it).
    pub fn check_resolved(&self, protocol: Protocol, target: &Target, ip: IpAddr) -> Decision {
        let by_name = self.check(protocol, target);
        if !by_name.is_allowed() {
            return by_name;
        }
        let resolved = normalize(&Target::ip(ip, target.port));
        match self.first_match(protocol, &resolved) {
            Some((i, r)) if r.action == Action::Deny => Decision::Deny {
                reason: format!("{target} resolves to {} denied by rule {}", resolved.host, i + 1),
            },
            _ => Decision::Allow,
        }
    }
}

/// Policies by portal identity (as the gate's TLS layer names the client certificate).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySet {
    pub identities: BTreeMap<String, Policy>,
    /// For identities without their own policy; `None` denies them everything.
    pub default: Option<Policy>,
}

impl PolicySet {
    pub fn policy_for(&self, identity: &str) -> Option<&Policy> {
        self.identities.get(identity).or(self.default.as_ref())
    }

    pub fn check(&self, identity: &str, protocol: Protocol, target: &Target) -> Decision {
        match self.policy_for(identity) {
            Some(p) => p.check(protocol, target),
            None => Decision::Deny { reason: format!("no policy for identity {identity:?}") },
        }
    }

    pub fn check_resolved(
        &self,
        identity: &str,
        protocol: Protocol,
        target: &Target,
        ip: IpAddr,
    ) -> Decision {
        match self.policy_for(identity) {
            Some(p) => p.check_resolved(protocol, target, ip),
            None => Decision::Deny { reason: format!("no policy for identity {identity:?}") },
        }
    }
}

/// IPv4-mapped IPv6 addresses are checked as the IPv4 address they carry.
fn normalize(t: &Target) -> Target {
    match &t.host {
        Host::Ip(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => Target::ip(v4, t.port),
            None => t.clone(),
        },
        _ => t.clone(),
    }
}

#[cfg(test)]
mod tests;

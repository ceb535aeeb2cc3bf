//! Gate-side policy: which destinations each portal identity may open.
//!
//! A [`Policy`] is an ordered list of rules, first match wins, no match denies. A rule names an
//! action, an optional protocol, a destination (CIDR, host-name suffix, or any) and port ranges:
//! `allow tcp 10.0.0.0/8 22,443,8000-8999`, `deny any 127.0.0.0/8`, `allow udp corp.example 53`.
//!
//! Host names arrive unresolved (the gate resolves them), so a CIDR rule cannot match a name.
//! After resolving, [`Policy::check_resolved`] re-checks the address: a name allowed by suffix
//! that resolves into a denied range is refused (DNS rebinding toward internal addresses).
//!
//! Unspecified, loopback and link-local addresses and the gate's own ([`special`]) are reached
//! only through a rule that names them (`allow tcp 127.0.0.1 8080`); `*` and `0.0.0.0/0` do not.
//! A name rule says where its names may resolve (`allow tcp db.corp.example 5432 to
//! 10.1.0.0/16`); without `to`, a name may resolve to public addresses, and to others only where
//! an address rule names them.

mod cidr;
mod rule;
pub mod special;

pub use cidr::Cidr;
pub use rule::{Action, Dest, PortRange, Rule};
use special::Special;

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
    /// A gate configured with no rules at all (it warns at start): everything is allowed, the
    /// gate's own and loopback addresses included.
    pub unrestricted: bool,
}

impl Policy {
    /// What a gate without any rules applies.
    pub fn unrestricted() -> Self {
        Policy { rules: Vec::new(), unrestricted: true }
    }

    /// What an operator may not expect of these rules: a deny of IPv4 loopback says nothing of
    /// `::1` (refused anyway unless a rule names it, but the rules read as if they covered it).
    pub fn warnings(&self) -> Vec<String> {
        let denies = |ip: IpAddr| {
            self.rules
                .iter()
                .any(|r| r.action == Action::Deny && matches!(&r.dest, Dest::Cidr(c) if c.contains(ip)))
        };
        let v4_loopback = IpAddr::from([127, 0, 0, 1]);
        let v6_loopback = IpAddr::from(std::net::Ipv6Addr::LOCALHOST);
        let mut out = Vec::new();
        if denies(v4_loopback) && !denies(v6_loopback) {
            out.push(
                "a rule denies IPv4 loopback (127.0.0.0/8) but none denies IPv6 loopback (::1); ::1 is refused \
                 only because no rule names it: add \"deny any ::1\" to say so"
                    .to_string(),
            );
        }
        out
    }

    /// Parses one rule per line; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let rules = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        Ok(Policy { rules, unrestricted: false })
    }

    fn first_match(&self, protocol: Protocol, target: &Target) -> Option<(usize, &Rule)> {
        self.rules.iter().enumerate().find(|(_, r)| r.matches(protocol, target))
    }

    /// The rules about an address. For a special one, rules that match it without naming it
    /// (`*`, `0.0.0.0/0`) are passed over.
    fn by_address(&self, protocol: Protocol, ip: IpAddr, port: u16, kind: Option<Special>) -> ByAddress {
        let target = Target::ip(ip, port);
        for (i, r) in self.rules.iter().enumerate() {
            if !r.matches(protocol, &target) {
                continue;
            }
            let named = matches!(&r.dest, Dest::Cidr(c) if special::names(c, ip, kind));
            match r.action {
                Action::Deny => return ByAddress::Denied(i),
                Action::Allow if named => return ByAddress::Named,
                Action::Allow if kind.is_none() => return ByAddress::Generic,
                Action::Allow => {}
            }
        }
        ByAddress::Unmatched
    }

    /// Decides an Open as requested (before any name resolution). An address is checked as
    /// [`Policy::check_resolved`] does, without knowing the gate's own addresses.
    pub fn check(&self, protocol: Protocol, target: &Target) -> Decision {
        if self.unrestricted {
            return Decision::Allow;
        }
        let target = normalize(target);
        if let Host::Ip(ip) = target.host {
            return self.check_address(protocol, &target, ip, false);
        }
        match self.first_match(protocol, &target) {
            Some((_, r)) if r.action == Action::Allow => Decision::Allow,
            Some((i, _)) => Decision::Deny { reason: format!("{target} denied by rule {}", i + 1) },
            None => Decision::Deny { reason: format!("{target} not allowed") },
        }
    }

    fn check_address(&self, protocol: Protocol, target: &Target, ip: IpAddr, own: bool) -> Decision {
        let kind = special::special(ip, own);
        match self.by_address(protocol, ip, target.port, kind) {
            ByAddress::Named | ByAddress::Generic => Decision::Allow,
            ByAddress::Denied(i) => Decision::Deny { reason: format!("{target} denied by rule {}", i + 1) },
            ByAddress::Unmatched => match kind {
                Some(k) => Decision::Deny {
                    reason: format!("{target} is {}: only a rule naming it allows it", k.describe()),
                },
                None => Decision::Deny { reason: format!("{target} not allowed") },
            },
        }
    }

    /// Checks an address the Open will connect to: `target` as requested and `ip`, the address
    /// it is (an IP target) or resolved to (a name); `own` says whether `ip` is one of the gate's
    /// own addresses. An address must pass the address rules; a name's address must also be one
    /// its rule lets it resolve to.
    pub fn check_resolved(&self, protocol: Protocol, target: &Target, ip: IpAddr, own: bool) -> Decision {
        if self.unrestricted {
            return Decision::Allow;
        }
        let requested = normalize(target);
        let ip = unmap(ip);
        if let Host::Ip(_) = requested.host {
            return self.check_address(protocol, &requested, ip, own);
        }
        let name_rule = match self.first_match(protocol, &requested) {
            Some((_, r)) if r.action == Action::Allow => r,
            Some((i, _)) => {
                return Decision::Deny { reason: format!("{requested} denied by rule {}", i + 1) }
            }
            None => return Decision::Deny { reason: format!("{requested} not allowed") },
        };
        let kind = special::special(ip, own);
        let resolved = Target::ip(ip, target.port);
        let refuse = |why: String| Decision::Deny {
            reason: format!("{requested} resolves to {}{why}", resolved.host),
        };
        let by_address = self.by_address(protocol, ip, target.port, kind);
        if let ByAddress::Denied(i) = by_address {
            return refuse(format!(" denied by rule {}", i + 1));
        }
        match &name_rule.resolves_to {
            Some(list) if list.iter().any(|c| special::names(c, ip, kind)) => Decision::Allow,
            Some(_) => refuse(", outside the addresses its rule allows (`to`)".into()),
            None => match (kind, by_address) {
                (_, ByAddress::Named) => Decision::Allow,
                (Some(k), _) => refuse(format!(
                    ", {}: a name reaches it only with `to` in its rule or a rule naming the address",
                    k.describe()
                )),
                (None, _) if special::is_private(ip) => refuse(
                    ", a private address: a name reaches it only with `to` in its rule or a rule naming the address"
                        .into(),
                ),
                (None, _) => Decision::Allow,
            },
        }
    }
}

/// What the address rules say about an address.
enum ByAddress {
    /// A deny rule matched first.
    Denied(usize),
    /// An allow rule that names it (a CIDR narrow enough for its kind).
    Named,
    /// An allow rule that matches it without naming it (`*`, `0.0.0.0/0`); never for special ones.
    Generic,
    Unmatched,
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
        own: bool,
    ) -> Decision {
        match self.policy_for(identity) {
            Some(p) => p.check_resolved(protocol, target, ip, own),
            None => Decision::Deny { reason: format!("no policy for identity {identity:?}") },
        }
    }
}

/// IPv4-mapped IPv6 addresses are checked as the IPv4 address they carry.
fn normalize(t: &Target) -> Target {
    match &t.host {
        Host::Ip(ip) => Target::ip(unmap(*ip), t.port),
        _ => t.clone(),
    }
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests;

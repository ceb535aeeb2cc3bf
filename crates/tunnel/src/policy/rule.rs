//! One policy rule and its text form: `ACTION [tcp|udp|any] DEST [PORTS] [to CIDR,…]`.

use super::{Cidr, PolicyError};
use crate::addr::Host;
use crate::wire::Protocol;
use crate::Target;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

/// What a rule's destination matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Any,
    Cidr(Cidr),
    /// `corp.example` matches that name and every name under it, on label boundaries
    /// (`xcorp.example` does not match); `*.corp.example` matches only names under it.
    Suffix {
        suffix: String,
        subdomains_only: bool,
    },
}

impl Dest {
    fn matches(&self, host: &Host) -> bool {
        match (self, host) {
            (Dest::Any, _) => true,
            (Dest::Cidr(c), Host::Ip(ip)) => c.contains(*ip),
            (Dest::Suffix { suffix, subdomains_only }, Host::Name(name)) => {
                let name = name.trim_end_matches('.');
                (!subdomains_only && name == suffix)
                    || name.strip_suffix(suffix.as_str()).is_some_and(|head| head.ends_with('.'))
            }
            _ => false,
        }
    }
}

impl FromStr for Dest {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, PolicyError> {
        if s == "*" {
            return Ok(Dest::Any);
        }
        if s.contains('/') || s.parse::<std::net::IpAddr>().is_ok() {
            return Ok(Dest::Cidr(s.parse()?));
        }
        let (rest, subdomains_only) = match s.strip_prefix("*.").or_else(|| s.strip_prefix('.')) {
            Some(r) => (r, true),
            None => (s, false),
        };
        let suffix = rest.trim_end_matches('.').to_ascii_lowercase();
        let ok = !suffix.is_empty()
            && suffix.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !ok {
            return Err(PolicyError { input: s.to_string(), why: "bad host suffix" });
        }
        Ok(Dest::Suffix { suffix, subdomains_only })
    }
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl FromStr for PortRange {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let err = |why| PolicyError { input: s.to_string(), why };
        let num = |p: &str| p.trim().parse::<u16>().map_err(|_| err("bad port"));
        let (lo, hi) = match s.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(s)?, num(s)?),
        };
        if lo > hi {
            return Err(err("port range runs backwards"));
        }
        Ok(PortRange { lo, hi })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    /// `None` matches both protocols.
    pub protocol: Option<Protocol>,
    pub dest: Dest,
    /// Empty matches every port.
    pub ports: Vec<PortRange>,
    /// For a name rule, `to CIDR,…`: the addresses its names may resolve to. `None`: public
    /// addresses, and others only where an address rule allows them by name.
    pub resolves_to: Option<Vec<Cidr>>,
}

impl Rule {
    pub fn matches(&self, protocol: Protocol, target: &Target) -> bool {
        self.protocol.is_none_or(|p| p == protocol)
            && (self.ports.is_empty() || self.ports.iter().any(|r| (r.lo..=r.hi).contains(&target.port)))
            && self.dest.matches(&target.host)
    }
}

impl FromStr for Rule {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let err = |why| PolicyError { input: s.to_string(), why };
        let mut words = s.split_whitespace().peekable();
        let action = match words.next() {
            Some("allow") => Action::Allow,
            Some("deny") => Action::Deny,
            _ => return Err(err("rule must start with allow or deny")),
        };
        let protocol = match words.peek().copied() {
            Some("tcp") => Some(Protocol::TCP),
            Some("udp") => Some(Protocol::UDP),
            Some("any") => None,
            _ => return Err(err("protocol must be tcp, udp or any")),
        };
        words.next();
        let dest: Dest = words.next().ok_or(err("missing destination"))?.parse()?;
        let ports = match words.peek().copied() {
            None | Some("to") => Vec::new(),
            Some("*") => {
                words.next();
                Vec::new()
            }
            Some(list) => {
                words.next();
                list.split(',').map(str::parse).collect::<Result<_, _>>()?
            }
        };
        let resolves_to = match words.next() {
            None => None,
            Some("to") => {
                if matches!(dest, Dest::Cidr(_)) {
                    return Err(err("`to` limits what a name resolves to: not for an address rule"));
                }
                let list = words.next().ok_or(err("`to` needs addresses"))?;
                Some(list.split(',').map(str::parse).collect::<Result<_, _>>()?)
            }
            Some(_) => return Err(err("trailing words")),
        };
        if words.next().is_some() {
            return Err(err("trailing words"));
        }
        Ok(Rule { action, protocol, dest, ports, resolves_to })
    }
}

//! Destination policy for transparent interception: ordered rules over destination address,
//! port and (for TLS) server name, each choosing what happens to the connection.

use std::net::{IpAddr, SocketAddr};

use crate::names::NamePattern;

/// An address block, `10.0.0.0/8` or `2001:db8::/32`; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("{s:?}: not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix),
            // An IPv4-mapped IPv6 destination (dual-stack socket) matches IPv4 blocks.
            (IpAddr::V4(_), IpAddr::V6(ip)) => ip.to_ipv4_mapped().is_some_and(|v4| self.contains(v4.into())),
            (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    let rest = bits % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

/// `443` or `8000-8099`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl std::str::FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: not a port or port range");
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?),
            None => {
                let p = s.trim().parse().map_err(|_| bad())?;
                (p, p)
            }
        };
        if first > last {
            return Err(bad());
        }
        Ok(PortRange { first, last })
    }
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Wrap the connection in TLS toward the destination.
    Originate,
    /// Forward it untouched.
    Passthrough,
    /// Close it.
    Deny,
}

/// One rule; an empty list matches anything. A rule with `sni` entries only matches a connection
/// that opened with a TLS ClientHello naming one of them.
#[derive(Debug, Clone)]
pub struct Rule {
    pub cidrs: Vec<Cidr>,
    pub ports: Vec<PortRange>,
    pub sni: Vec<NamePattern>,
    pub action: Action,
}

/// Which rule decided, and what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Index of the matching rule; `None`: no rule matched and the default (deny) applies.
    pub rule: Option<usize>,
    pub action: Action,
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub rules: Vec<Rule>,
}

impl Policy {
    /// Whether any rule looks at the server name (then the first bytes must be read first).
    pub fn needs_sni(&self) -> bool {
        self.rules.iter().any(|r| !r.sni.is_empty())
    }

    /// The first matching rule's action; none matching: deny (fail closed).
    pub fn decide(&self, dst: SocketAddr, sni: Option<&str>) -> Decision {
        for (i, r) in self.rules.iter().enumerate() {
            let addr_ok = r.cidrs.is_empty() || r.cidrs.iter().any(|c| c.contains(dst.ip()));
            let port_ok = r.ports.is_empty() || r.ports.iter().any(|p| p.contains(dst.port()));
            let sni_ok = r.sni.is_empty() || sni.is_some_and(|n| r.sni.iter().any(|p| p.matches(n)));
            if addr_ok && port_ok && sni_ok {
                return Decision { rule: Some(i), action: r.action };
            }
        }
        Decision { rule: None, action: Action::Deny }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(cidrs: &[&str], ports: &[&str], sni: &[&str], action: Action) -> Rule {
        Rule {
            cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            ports: ports.iter().map(|p| p.parse().unwrap()).collect(),
            sni: sni.iter().map(|s| NamePattern::parse(s).unwrap()).collect(),
            action,
        }
    }

    #[test]
    fn cidr_matching() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.255.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        let odd: Cidr = "192.168.0.128/25".parse().unwrap();
        assert!(
            odd.contains("192.168.0.200".parse().unwrap()) && !odd.contains("192.168.0.127".parse().unwrap())
        );
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(
            v6.contains("2001:db8:1::1".parse().unwrap()) && !v6.contains("2001:db9::1".parse().unwrap())
        );
        let any: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "10.0.0/8", "x/1", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn port_ranges() {
        let r: PortRange = "8000-8099".parse().unwrap();
        assert!(r.contains(8000) && r.contains(8099) && !r.contains(8100));
        assert!("90-80".parse::<PortRange>().is_err() && "70000".parse::<PortRange>().is_err());
    }

    #[test]
    fn first_match_wins_and_default_is_deny() {
        let p = Policy {
            rules: vec![
                rule(&[], &["443"], &["*.public.test"], Action::Passthrough),
                rule(&["10.0.0.0/8"], &["80", "8000-8099"], &[], Action::Originate),
                rule(&["10.0.0.0/8"], &[], &[], Action::Passthrough),
            ],
        };
        let d = |dst: &str, sni| p.decide(dst.parse().unwrap(), sni);
        assert_eq!(d("10.0.0.5:80", None), Decision { rule: Some(1), action: Action::Originate });
        assert_eq!(d("10.0.0.5:8050", None).action, Action::Originate);
        assert_eq!(d("10.0.0.5:22", None), Decision { rule: Some(2), action: Action::Passthrough });
        assert_eq!(d("10.0.0.5:443", Some("a.public.test")).rule, Some(0));
        assert_eq!(d("10.0.0.5:443", None).rule, Some(2), "no SNI: the SNI rule does not match");
        assert_eq!(d("192.0.2.1:80", None), Decision { rule: None, action: Action::Deny });
        assert!(p.needs_sni());
    }
}

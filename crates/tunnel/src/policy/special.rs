//! Addresses a rule must name to allow: a generic rule (`*`, `0.0.0.0/0`) never reaches them.
//!
//! Unspecified (`0.0.0.0` connects to the local host), loopback and link-local addresses, and
//! the gate's own addresses, lead into the gate itself (its admin port, services bound to
//! loopback, cloud metadata at 169.254.169.254). Private addresses are ordinary rule targets,
//! but a name reaches them only when the name's rule says so (DNS rebinding).

use super::Cidr;
use std::net::IpAddr;

/// Why an address needs a rule that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    Unspecified,
    Loopback,
    LinkLocal,
    /// One of the gate's own interface addresses.
    Own,
}

impl Special {
    pub fn describe(self) -> &'static str {
        match self {
            Special::Unspecified => "an unspecified address (the local host)",
            Special::Loopback => "a loopback address",
            Special::LinkLocal => "a link-local address",
            Special::Own => "one of the gate's own addresses",
        }
    }

    /// The shortest prefix a CIDR may have and still name an address of this kind: a block
    /// inside 127.0.0.0/8 names loopback, `0.0.0.0/0` does not; an own address only by itself.
    fn min_prefix(self, ip: IpAddr) -> u8 {
        match (self, ip) {
            (Special::Unspecified | Special::Loopback, IpAddr::V4(_)) => 8,
            (Special::LinkLocal, IpAddr::V4(_)) => 16,
            (Special::LinkLocal, IpAddr::V6(_)) => 10,
            (Special::Own, IpAddr::V4(_)) => 32,
            (_, IpAddr::V6(_)) => 128,
        }
    }
}

/// The kind of `ip` (already unmapped from `::ffff:a.b.c.d`), if it is special; `own` says
/// whether it is one of the gate's addresses (the I/O side knows its interfaces).
pub fn special(ip: IpAddr, own: bool) -> Option<Special> {
    let kind = match ip {
        // 0.0.0.0/8 is "this network": Linux connects 0.x.y.z to the local host only for
        // 0.0.0.0, but none of it is a destination anywhere.
        IpAddr::V4(v4) if v4.octets()[0] == 0 => Special::Unspecified,
        IpAddr::V4(v4) if v4.is_loopback() => Special::Loopback,
        IpAddr::V4(v4) if v4.is_link_local() => Special::LinkLocal,
        IpAddr::V6(v6) if v6.is_unspecified() => Special::Unspecified,
        IpAddr::V6(v6) if v6.is_loopback() => Special::Loopback,
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => Special::LinkLocal,
        _ if own => Special::Own,
        _ => return None,
    };
    Some(kind)
}

/// Private ranges (RFC 1918, shared address space RFC 6598, unique local RFC 4193).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            a == 10
                || (a == 172 && (16..32).contains(&b))
                || (a == 192 && b == 168)
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => v6.segments()[0] & 0xfe00 == 0xfc00,
    }
}

/// Whether `cidr` names `ip` explicitly: it holds it, and is narrow enough for its kind (a
/// non-special address: anything but a `/0`).
pub fn names(cidr: &Cidr, ip: IpAddr, kind: Option<Special>) -> bool {
    let min = kind.map_or(1, |k| k.min_prefix(ip));
    cidr.contains(ip) && cidr.prefix() >= min
}

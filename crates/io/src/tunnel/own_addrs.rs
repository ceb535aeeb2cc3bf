//! The gate's own addresses, for the policy's rule that only a rule naming one reaches it: a
//! portal must not get at services the gate binds on its interfaces (its admin port on
//! `0.0.0.0`, say) through a rule meant for the network around it.

use std::net::IpAddr;

/// Whether `ip` is assigned to one of this host's interfaces now (interfaces come and go, so
/// this asks each time). Unreadable interfaces count as not own: loopback and unspecified
/// addresses are refused by the policy regardless.
pub fn is_own(ip: IpAddr) -> bool {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return false };
    addrs.filter_map(|a| a.address).any(|sa| match ip {
        IpAddr::V4(v4) => sa.as_sockaddr_in().is_some_and(|s| s.ip() == v4),
        IpAddr::V6(v6) => sa.as_sockaddr_in6().is_some_and(|s| s.ip() == v6),
    })
}

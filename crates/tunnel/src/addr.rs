//! Destination addresses as the tunnel and SOCKS carry them: an IP or an unresolved host name.

use std::fmt;
use std::net::IpAddr;

/// Longest host name any of our encodings carries (one length byte).
pub const MAX_HOST_NAME_LEN: usize = 255;

/// A host: an address, or a name left for the far side (the gate) to resolve.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

/// Where a session goes: host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

impl Target {
    pub fn ip(ip: impl Into<IpAddr>, port: u16) -> Self {
        Target { host: Host::Ip(ip.into()), port }
    }

    /// A named target; names that are IP literals become [`Host::Ip`] so a policy cannot be
    /// side-stepped by spelling an address as a name.
    pub fn name(name: &str, port: u16) -> Result<Self, BadHostName> {
        Ok(Target { host: Host::parse_name(name.as_bytes())?, port })
    }
}

impl Host {
    /// Validates a host name from the wire: 1..=255 visible ASCII bytes, no NUL, no spaces.
    pub fn parse_name(bytes: &[u8]) -> Result<Host, BadHostName> {
        if bytes.is_empty() || bytes.len() > MAX_HOST_NAME_LEN {
            return Err(BadHostName);
        }
        if !bytes.iter().all(|b| b.is_ascii_graphic()) {
            return Err(BadHostName);
        }
        // All bytes are ASCII, so this cannot fail.
        let s = std::str::from_utf8(bytes).map_err(|_| BadHostName)?;
        let bare = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
        Ok(match bare.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(s.to_ascii_lowercase()),
        })
    }
}

/// A host name that is empty, too long, or holds bytes other than visible ASCII.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid host name")]
pub struct BadHostName;

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_validated_and_ip_literals_become_ips() {
        assert_eq!(Host::parse_name(b"Example.COM"), Ok(Host::Name("example.com".into())));
        assert_eq!(Host::parse_name(b"10.1.2.3"), Ok(Host::Ip([10, 1, 2, 3].into())));
        assert_eq!(Host::parse_name(b"[::1]"), Ok(Host::Ip("::1".parse().unwrap())));
        assert_eq!(Host::parse_name(b""), Err(BadHostName));
        assert_eq!(Host::parse_name(b"a\0b"), Err(BadHostName));
        assert_eq!(Host::parse_name(b"a b"), Err(BadHostName));
        assert_eq!(Host::parse_name(&[b'a'; 256]), Err(BadHostName));
    }
}

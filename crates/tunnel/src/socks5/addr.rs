//! SOCKS5 address encoding: ATYP (1 IPv4, 3 domain, 4 IPv6), address, port.

use crate::addr::Host;
use crate::Target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub(crate) const ATYP_IPV4: u8 = 1;
pub(crate) const ATYP_DOMAIN: u8 = 3;
pub(crate) const ATYP_IPV6: u8 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddrError {
    UnknownType(u8),
    BadName,
}

/// Reads ATYP/ADDR/PORT from the front of `buf`: `Ok(None)` when incomplete, else the target and
/// the bytes used.
pub(crate) fn read_addr(buf: &[u8]) -> Result<Option<(Target, usize)>, AddrError> {
    let Some(&atyp) = buf.first() else {
        return Ok(None);
    };
    let (addr_len, skip) = match atyp {
        ATYP_IPV4 => (4, 1),
        ATYP_IPV6 => (16, 1),
        ATYP_DOMAIN => match buf.get(1) {
            Some(&n) => (n as usize, 2),
            None => return Ok(None),
        },
        other => return Err(AddrError::UnknownType(other)),
    };
    let end = skip + addr_len + 2;
    if buf.len() < end {
        return Ok(None);
    }
    let raw = &buf[skip..skip + addr_len];
    let host = match atyp {
        ATYP_IPV4 => {
            Host::Ip(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(raw).map_err(|_| AddrError::BadName)?)))
        }
        ATYP_IPV6 => {
            Host::Ip(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(raw).map_err(|_| AddrError::BadName)?)))
        }
        _ => Host::parse_name(raw).map_err(|_| AddrError::BadName)?,
    };
    let port = u16::from_be_bytes([buf[end - 2], buf[end - 1]]);
    Ok(Some((Target { host, port }, end)))
}

pub(crate) fn put_addr(out: &mut Vec<u8>, t: &Target) {
    match &t.host {
        Host::Ip(IpAddr::V4(ip)) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&ip.octets());
        }
        Host::Ip(IpAddr::V6(ip)) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&ip.octets());
        }
        Host::Name(n) => {
            let n = &n.as_bytes()[..n.len().min(crate::addr::MAX_HOST_NAME_LEN)];
            out.push(ATYP_DOMAIN);
            out.push(n.len() as u8);
            out.extend_from_slice(n);
        }
    }
    out.extend_from_slice(&t.port.to_be_bytes());
}

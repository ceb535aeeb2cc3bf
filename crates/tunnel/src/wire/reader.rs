//! A bounds-checked cursor over a payload: every read returns `None` past the end.

use crate::addr::Host;
use crate::Target;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Address types of the tunnel's target encoding (1 IPv4, 2 a name, as in the Open record).
pub(crate) const ATYPE_IPV4: u8 = 1;
pub(crate) const ATYPE_NAME: u8 = 2;
pub(crate) const ATYPE_IPV6: u8 = 3;

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }

    pub fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.array()?))
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// ATYPE u8, address (4 bytes, 16 bytes, or u8 length + name), PORT u16.
    pub fn target(&mut self) -> Option<Target> {
        let host = match self.u8()? {
            ATYPE_IPV4 => Host::Ip(Ipv4Addr::from(self.array::<4>()?).into()),
            ATYPE_IPV6 => Host::Ip(Ipv6Addr::from(self.array::<16>()?).into()),
            ATYPE_NAME => {
                let len = self.u8()? as usize;
                Host::parse_name(self.bytes(len)?).ok()?
            }
            _ => return None,
        };
        Some(Target { host, port: self.u16()? })
    }
}

/// Appends the target encoding read by [`Reader::target`].
pub(crate) fn put_target(out: &mut Vec<u8>, t: &Target) {
    match &t.host {
        Host::Ip(std::net::IpAddr::V4(ip)) => {
            out.push(ATYPE_IPV4);
            out.extend_from_slice(&ip.octets());
        }
        Host::Ip(std::net::IpAddr::V6(ip)) => {
            out.push(ATYPE_IPV6);
            out.extend_from_slice(&ip.octets());
        }
        Host::Name(n) => {
            // Names are validated to 1..=255 bytes when built; clamp defensively anyway.
            let n = &n.as_bytes()[..n.len().min(crate::addr::MAX_HOST_NAME_LEN)];
            out.push(ATYPE_NAME);
            out.push(n.len() as u8);
            out.extend_from_slice(n);
        }
    }
    out.extend_from_slice(&t.port.to_be_bytes());
}

//! The UDP request header of RFC 1928 section 7: RSV(2) FRAG(1) ATYP DST.ADDR DST.PORT DATA.

use super::{put_addr, read_addr, AddrError};
use crate::Target;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UdpError {
    #[error("datagram shorter than its header")]
    Truncated,
    #[error("reserved field not zero")]
    BadReserved,
    /// Fragmentation is optional in RFC 1928 and not implemented: such datagrams are dropped.
    #[error("fragmented datagram (FRAG {0}) dropped")]
    Fragmented(u8),
    #[error("address type {0} not supported")]
    AddressType(u8),
    #[error("invalid host name")]
    BadHostName,
}

/// Splits a client datagram into its destination and payload.
pub fn decode(packet: &[u8]) -> Result<(Target, &[u8]), UdpError> {
    let [r0, r1, frag, rest @ ..] = packet else {
        return Err(UdpError::Truncated);
    };
    if (*r0, *r1) != (0, 0) {
        return Err(UdpError::BadReserved);
    }
    if *frag != 0 {
        return Err(UdpError::Fragmented(*frag));
    }
    match read_addr(rest) {
        Ok(Some((target, used))) => Ok((target, &rest[used..])),
        Ok(None) => Err(UdpError::Truncated),
        Err(AddrError::UnknownType(t)) => Err(UdpError::AddressType(t)),
        Err(AddrError::BadName) => Err(UdpError::BadHostName),
    }
}

/// Wraps a reply datagram from `source` for the client.
pub fn encode(source: &Target, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, 0]);
    put_addr(out, source);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_names_and_ipv6() {
        for t in [
            Target::name("resolver.example", 53).unwrap(),
            Target::ip("2001:db8::53".parse::<std::net::IpAddr>().unwrap(), 53),
            Target::ip([192, 0, 2, 1], 5353),
        ] {
            let mut b = Vec::new();
            encode(&t, b"payload", &mut b);
            assert_eq!(decode(&b), Ok((t, &b"payload"[..])));
        }
    }

    #[test]
    fn rejects_fragments_truncation_and_bad_types() {
        assert_eq!(decode(&[0, 0, 1, 1, 1, 2, 3, 4, 0, 53]), Err(UdpError::Fragmented(1)));
        assert_eq!(decode(&[0, 0, 0, 1, 1, 2, 3, 4, 0]), Err(UdpError::Truncated));
        assert_eq!(decode(&[0, 0]), Err(UdpError::Truncated));
        assert_eq!(decode(&[0, 1, 0, 1, 1, 2, 3, 4, 0, 53]), Err(UdpError::BadReserved));
        assert_eq!(decode(&[0, 0, 0, 9, 1]), Err(UdpError::AddressType(9)));
        assert_eq!(decode(&[0, 0, 0, 3, 0, 0, 53]), Err(UdpError::BadHostName));
    }
}

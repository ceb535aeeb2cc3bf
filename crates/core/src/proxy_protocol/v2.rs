//! Version 2: a 16-byte binary prefix (signature, version/command, family/protocol, length),
//! the addresses, then TLVs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Addresses, Command, EncodeError, Header, ParseError, Tlv, TlvType, Version, MAX_V2_LEN};

pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

const FIXED: usize = 16;
const AF_INET_STREAM: u8 = 0x11;
const AF_INET6_STREAM: u8 = 0x21;

pub fn encode(h: &Header) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&SIGNATURE);
    out.push(0x20 | if h.command == Command::Proxy { 1 } else { 0 });
    let mut body = Vec::new();
    match h.addresses {
        Addresses::Tcp { source, destination } if source.is_ipv4() == destination.is_ipv4() => {
            match (source.ip(), destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(AF_INET_STREAM);
                    body.extend_from_slice(&s.octets());
                    body.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    out.push(AF_INET6_STREAM);
                    body.extend_from_slice(&v6(s).octets());
                    body.extend_from_slice(&v6(d).octets());
                }
            }
            body.extend_from_slice(&source.port().to_be_bytes());
            body.extend_from_slice(&destination.port().to_be_bytes());
        }
        _ => out.push(0x00),
    }
    for t in &h.tlvs {
        push_tlv(&mut body, t.kind, &t.value)?;
    }
    let len = u16::try_from(body.len()).map_err(|_| EncodeError::TooLong(FIXED + body.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Appends one TLV; shared with the SSL TLV's sub-TLVs.
pub(super) fn push_tlv(out: &mut Vec<u8>, kind: TlvType, value: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(value.len()).map_err(|_| EncodeError::TooLong(value.len()))?;
    out.push(kind.0);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

/// Splits a run of TLVs; any overrun is an error.
pub(super) fn parse_tlvs(mut rest: &[u8]) -> Result<Vec<Tlv>, ParseError> {
    let mut tlvs = Vec::new();
    while !rest.is_empty() {
        let [kind, hi, lo, tail @ ..] = rest else {
            return Err(ParseError::Invalid("v2: truncated TLV header".into()));
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        if tail.len() < len {
            return Err(ParseError::Invalid(format!(
                "v2: TLV 0x{kind:02x} of {len} bytes overruns the header"
            )));
        }
        tlvs.push(Tlv { kind: TlvType(*kind), value: tail[..len].to_vec() });
        rest = &tail[len..];
    }
    Ok(tlvs)
}

pub fn parse(input: &[u8]) -> Result<(Header, usize), ParseError> {
    let bad = |why: String| ParseError::Invalid(format!("v2: {why}"));
    if input.len() < FIXED {
        return Err(ParseError::Incomplete);
    }
    let (ver_cmd, fam) = (input[12], input[13]);
    if ver_cmd >> 4 != 2 {
        return Err(bad(format!("version {} is not 2", ver_cmd >> 4)));
    }
    let command = match ver_cmd & 0x0f {
        0 => Command::Local,
        1 => Command::Proxy,
        c => return Err(bad(format!("unknown command {c}"))),
    };
    let len = usize::from(u16::from_be_bytes([input[14], input[15]]));
    let total = FIXED + len;
    if total > MAX_V2_LEN {
        return Err(bad(format!("header of {total} bytes is over the {MAX_V2_LEN}-byte limit")));
    }
    if input.len() < total {
        return Err(ParseError::Incomplete);
    }
    let body = &input[FIXED..total];
    let (addresses, addr_len) = match fam {
        AF_INET_STREAM => {
            let b = body.get(..12).ok_or_else(|| bad("IPv4 addresses truncated".into()))?;
            let ip = |o: usize| Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3]);
            let port = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
            let a = Addresses::Tcp {
                source: SocketAddr::new(ip(0).into(), port(8)),
                destination: SocketAddr::new(ip(4).into(), port(10)),
            };
            (a, 12)
        }
        AF_INET6_STREAM => {
            let b = body.get(..36).ok_or_else(|| bad("IPv6 addresses truncated".into()))?;
            let ip = |o: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&b[o..o + 16]);
                Ipv6Addr::from(a)
            };
            let port = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
            let a = Addresses::Tcp {
                source: SocketAddr::new(ip(0).into(), port(32)),
                destination: SocketAddr::new(ip(16).into(), port(34)),
            };
            (a, 36)
        }
        // UNSPEC, UDP and UNIX: no TCP/IP endpoints to take. Their address block is skipped by
        // its size so the TLVs after it still parse.
        0x00 => (Addresses::Unspecified, 0),
        0x12 => (Addresses::Unspecified, 12),
        0x22 => (Addresses::Unspecified, 36),
        0x31 | 0x32 => (Addresses::Unspecified, 216),
        f => return Err(bad(format!("unknown family/protocol 0x{f:02x}"))),
    };
    if body.len() < addr_len {
        return Err(bad("address block truncated".into()));
    }
    let tlvs = parse_tlvs(&body[addr_len..])?;
    Ok((Header { version: Version::V2, command, addresses, tlvs }, total))
}

//! Version 1: one text line, `PROXY TCP4 src dst sport dport\r\n`, at most 107 bytes.

use std::net::{IpAddr, SocketAddr};

use super::{Addresses, Command, Header, ParseError, Version};

pub const PREFIX: &[u8] = b"PROXY ";
const MAX_LEN: usize = 107;

pub fn encode(h: &Header) -> Vec<u8> {
    let line = match (h.command, h.addresses) {
        (Command::Proxy, Addresses::Tcp { source, destination })
            if source.is_ipv4() == destination.is_ipv4() =>
        {
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            )
        }
        _ => "PROXY UNKNOWN\r\n".to_string(),
    };
    line.into_bytes()
}

pub fn parse(input: &[u8]) -> Result<(Header, usize), ParseError> {
    let bad = |why: &str| ParseError::Invalid(format!("v1: {why}"));
    let window = &input[..input.len().min(MAX_LEN)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if input.len() >= MAX_LEN {
            Err(bad("no CRLF within 107 bytes"))
        } else {
            Err(ParseError::Incomplete)
        };
    };
    let line = std::str::from_utf8(&input[..end]).map_err(|_| bad("not ASCII"))?;
    let mut fields = line.split(' ');
    fields.next(); // "PROXY", matched by the caller
    let header =
        |addresses| Header { version: Version::V1, command: Command::Proxy, addresses, tlvs: Vec::new() };
    match fields.next() {
        Some("UNKNOWN") => Ok((header(Addresses::Unspecified), end + 2)),
        Some(family @ ("TCP4" | "TCP6")) => {
            let parts: Vec<&str> = fields.collect();
            let [src, dst, sport, dport] = parts[..] else {
                return Err(bad("expected 4 fields after the family"));
            };
            let ip = |s: &str| s.parse::<IpAddr>().map_err(|_| bad("bad address"));
            let port = |s: &str| {
                // No sign, no leading zeros beyond "0" itself, as the spec's decimal form.
                if s.is_empty()
                    || (s.len() > 1 && s.starts_with('0'))
                    || !s.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(bad("bad port"));
                }
                s.parse::<u16>().map_err(|_| bad("bad port"))
            };
            let (src, dst) = (ip(src)?, ip(dst)?);
            let v4 = family == "TCP4";
            if src.is_ipv4() != v4 || dst.is_ipv4() != v4 {
                return Err(bad("address family does not match"));
            }
            let addresses = Addresses::Tcp {
                source: SocketAddr::new(src, port(sport)?),
                destination: SocketAddr::new(dst, port(dport)?),
            };
            Ok((header(addresses), end + 2))
        }
        _ => Err(bad("unknown protocol family")),
    }
}

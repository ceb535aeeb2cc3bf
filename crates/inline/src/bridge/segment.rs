//! Cutting a TCP GSO packet into the segments it stands for, as the kernel's software GSO does:
//! for a GSO frame the engine does not consume whole, so what passes on unchanged is wire-sized.
//!
//! Each segment carries `mss` bytes (the last the rest), the headers of the whole with the IP
//! length, the sequence number and the checksums made its own; IPv4 identifications count up
//! from the first (the kernel's rule for DF packets, RFC 6864), FIN and PSH stay on the last
//! segment and CWR on the first (RFC 3168 6.1.2), as TSO does.

use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket};

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// The segments of `pkt` (an IPv4 or IPv6 TCP packet, no IPv6 extension headers), each a
/// complete IP packet with finished checksums; `None` when `pkt` is not such a packet or `mss`
/// is 0.
pub fn cut(pkt: &[u8], mss: usize) -> Option<Vec<Vec<u8>>> {
    if mss == 0 {
        return None;
    }
    let (v6, ip_len) = match pkt.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(pkt).ok()?;
            if ip.more_frags() || ip.frag_offset() != 0 || ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            if usize::from(ip.total_len()) != pkt.len() {
                return None;
            }
            (false, usize::from(ip.header_len()))
        }
        6 => {
            let ip = Ipv6Packet::new_checked(pkt).ok()?;
            if ip.next_header() != IpProtocol::Tcp || ip.total_len() != pkt.len() {
                return None;
            }
            (true, 40)
        }
        _ => return None,
    };
    let tcp = TcpPacket::new_checked(&pkt[ip_len..]).ok()?;
    let headers = ip_len + usize::from(tcp.header_len());
    let seq = tcp.seq_number().0 as u32;
    let flags = pkt[ip_len + 13];
    let payload = &pkt[headers..];
    let count = payload.len().div_ceil(mss).max(1);
    let mut out = Vec::with_capacity(count);
    for (i, chunk) in payload.chunks(mss).enumerate() {
        let mut s = Vec::with_capacity(headers + chunk.len() + crate::packet::LINK_HEADROOM);
        s.extend_from_slice(&pkt[..headers]);
        s.extend_from_slice(chunk);
        let len = s.len();
        if v6 {
            s[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        } else {
            s[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            let id = u16::from_be_bytes([s[4], s[5]]).wrapping_add(i as u16);
            s[4..6].copy_from_slice(&id.to_be_bytes());
            Ipv4Packet::new_unchecked(&mut s[..]).fill_checksum();
        }
        let t = ip_len;
        s[t + 4..t + 8].copy_from_slice(&seq.wrapping_add((i * mss) as u32).to_be_bytes());
        let mut f = flags;
        if i + 1 < count {
            f &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            f &= !TCP_CWR;
        }
        s[t + 13] = f;
        crate::packet::complete_checksum(&mut s);
        out.push(s);
    }
    if out.is_empty() {
        // No payload: the packet as it is, checksums finished.
        let mut s = pkt.to_vec();
        crate::packet::complete_checksum(&mut s);
        out.push(s);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::IpAddress;

    fn v4(payload: usize, flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40 + payload];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0xfffeu16.to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 0, 0, 2]);
        p[16..20].copy_from_slice(&[10, 0, 0, 1]);
        p[20..22].copy_from_slice(&80u16.to_be_bytes());
        p[22..24].copy_from_slice(&40000u16.to_be_bytes());
        p[24..28].copy_from_slice(&0xffff_ff00u32.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = flags;
        for (i, b) in p[40..].iter_mut().enumerate() {
            *b = i as u8;
        }
        p
    }

    #[test]
    fn a_gso_packet_becomes_its_segments_with_their_own_headers() {
        let whole = v4(1000, 0x10 | TCP_PSH | TCP_FIN | TCP_CWR);
        let segs = cut(&whole, 400).unwrap();
        assert_eq!(segs.iter().map(Vec::len).collect::<Vec<_>>(), [440, 440, 240]);
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let ip = Ipv4Packet::new_checked(&s[..]).unwrap();
            assert!(ip.verify_checksum(), "segment {i}: IP checksum");
            assert_eq!(ip.ident(), 0xfffeu16.wrapping_add(i as u16));
            let t = TcpPacket::new_checked(ip.payload()).unwrap();
            let (src, dst) = (IpAddress::from(ip.src_addr()), IpAddress::from(ip.dst_addr()));
            assert!(t.verify_checksum(&src, &dst), "segment {i}: TCP checksum");
            assert_eq!(t.seq_number().0 as u32, 0xffff_ff00u32.wrapping_add(400 * i as u32));
            assert_eq!((t.fin(), t.psh()), (i == 2, i == 2), "segment {i}");
            assert_eq!(s[33] & TCP_CWR != 0, i == 0, "segment {i}: CWR");
            joined.extend_from_slice(t.payload());
        }
        assert_eq!(joined, whole[40..]);
    }

    #[test]
    fn not_a_whole_tcp_packet_is_refused() {
        let mut short = v4(100, 0x10);
        short.truncate(120);
        assert!(cut(&short, 50).is_none(), "IP length beyond the bytes");
        let mut udp = v4(100, 0x10);
        udp[9] = 17;
        assert!(cut(&udp, 50).is_none());
        assert!(cut(&v4(100, 0x10), 0).is_none());
        assert_eq!(cut(&v4(0, 0x10), 50).unwrap().len(), 1, "a bare ACK stays one");
    }
}

//! Reading what tcpdump wrote: Ethernet/IPv4/TCP packets from a pcap file, each direction of a TCP
//! connection put back in order, and TLS records walked over a byte stream. Enough to check what
//! crossed a wire, not a general dissector.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::wire::{Ipv4Packet, TcpPacket};

/// One captured IPv4 packet.
#[derive(Clone, Debug)]
pub struct Packet {
    /// The IP packet's total length (header included).
    pub ip_len: usize,
    /// More-fragments set or a non-zero fragment offset.
    pub fragment: bool,
    pub tcp: Option<Segment>,
}

/// The TCP part of a packet.
#[derive(Clone, Debug)]
pub struct Segment {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub seq: u32,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub payload: Vec<u8>,
    /// The TCP checksum verifies (a frame captured on the wire carries a complete one).
    pub checksum_ok: bool,
}

/// One direction of a TCP connection, from its SYN on.
#[derive(Clone, Debug)]
pub struct Stream {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// The sequence number of the SYN (of the SYN-ACK for the server's direction).
    pub isn: u32,
    /// The bytes in order from ISN + 1, up to the first hole.
    pub bytes: Vec<u8>,
    /// Bytes seen beyond a hole (the capture missed a segment).
    pub after_hole: usize,
    /// Bytes sent again at an offset with a different value than the first time.
    pub rewritten: usize,
}

/// The IPv4 packets of an Ethernet pcap file (other frames are skipped).
pub fn read(file: &[u8]) -> Result<Vec<Packet>, String> {
    if file.len() < 24 {
        return Err("shorter than a pcap header".into());
    }
    let magic = u32::from_le_bytes(file[..4].try_into().unwrap());
    let little = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        _ => return Err(format!("not a pcap file (magic {magic:#x})")),
    };
    let u32_at = |at: usize| {
        let b: [u8; 4] = file[at..at + 4].try_into().unwrap();
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    if u32_at(20) != 1 {
        return Err(format!("link type {} is not Ethernet", u32_at(20)));
    }
    let mut packets = Vec::new();
    let mut at = 24;
    while at + 16 <= file.len() {
        let caplen = u32_at(at + 8) as usize;
        let frame = file.get(at + 16..at + 16 + caplen).ok_or("the last record is cut short")?;
        at += 16 + caplen;
        // Ethernet II, IPv4 only: ARP and IPv6 neighbour discovery are not what is checked here.
        if frame.len() < 14 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        packets.push(ipv4(&frame[14..])?);
    }
    Ok(packets)
}

fn ipv4(data: &[u8]) -> Result<Packet, String> {
    let ip = Ipv4Packet::new_checked(data).map_err(|e| format!("IPv4 header: {e}"))?;
    let fragment = ip.more_frags() || ip.frag_offset() != 0;
    let ip_len = ip.total_len() as usize;
    let tcp = if ip.next_header() == smoltcp::wire::IpProtocol::Tcp && !fragment {
        let t = TcpPacket::new_checked(ip.payload()).map_err(|e| format!("TCP header: {e}"))?;
        Some(Segment {
            src: SocketAddrV4::new(Ipv4Addr::from(ip.src_addr().octets()), t.src_port()),
            dst: SocketAddrV4::new(Ipv4Addr::from(ip.dst_addr().octets()), t.dst_port()),
            seq: t.seq_number().0 as u32,
            syn: t.syn(),
            fin: t.fin(),
            rst: t.rst(),
            payload: t.payload().to_vec(),
            checksum_ok: t.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()),
        })
    } else {
        None
    };
    Ok(Packet { ip_len, fragment, tcp })
}

/// Each direction of every TCP connection whose SYN (or SYN-ACK) was captured, in capture order of
/// the SYNs. A sequence number a segment sends again keeps its first byte; a different byte there is
/// counted in `rewritten`.
pub fn streams(packets: &[Packet]) -> Vec<Stream> {
    let mut order = Vec::new();
    // Per direction: the ISN and the segments (sequence number, payload) in capture order.
    type Direction = (u32, Vec<(u32, Vec<u8>)>);
    let mut data: BTreeMap<(SocketAddrV4, SocketAddrV4), Direction> = BTreeMap::new();
    for seg in packets.iter().filter_map(|p| p.tcp.as_ref()) {
        let key = (seg.src, seg.dst);
        if seg.syn {
            if !data.contains_key(&key) {
                order.push(key);
            }
            // A new connection on the same four-tuple starts afresh.
            data.insert(key, (seg.seq, Vec::new()));
        } else if let Some((_, segs)) = data.get_mut(&key) {
            if !seg.payload.is_empty() {
                segs.push((seg.seq, seg.payload.clone()));
            }
        }
    }
    order
        .into_iter()
        .map(|key| {
            let (isn, segs) = &data[&key];
            let mut bytes: Vec<Option<u8>> = Vec::new();
            let mut rewritten = 0;
            for (seq, payload) in segs {
                let start = seq.wrapping_sub(isn.wrapping_add(1)) as usize;
                if bytes.len() < start + payload.len() {
                    bytes.resize(start + payload.len(), None);
                }
                for (slot, &b) in bytes[start..].iter_mut().zip(payload) {
                    match slot {
                        None => *slot = Some(b),
                        Some(first) if *first != b => rewritten += 1,
                        Some(_) => {}
                    }
                }
            }
            let in_order: Vec<u8> = bytes.iter().map_while(|b| *b).collect();
            let after_hole = bytes[in_order.len()..].iter().filter(|b| b.is_some()).count();
            Stream { src: key.0, dst: key.1, isn: *isn, bytes: in_order, after_hole, rewritten }
        })
        .collect()
}

/// The content types of the TLS records that make up `bytes` exactly: every record starts with a
/// known type (change_cipher_spec 20, alert 21, handshake 22, application_data 23), version 3.x and
/// a length within RFC 8446/5246 bounds, and the last record ends where `bytes` ends.
pub fn tls_record_types(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut types = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let header =
            bytes.get(at..at + 5).ok_or_else(|| format!("a record header cut short at byte {at}"))?;
        let len = u16::from_be_bytes([header[3], header[4]]) as usize;
        if !(20..=23).contains(&header[0]) || header[1] != 3 || len > (1 << 14) + 2048 {
            return Err(format!("no TLS record at byte {at}: {:02x?}", header));
        }
        if at + 5 + len > bytes.len() {
            return Err(format!("the record at byte {at} ({len} bytes) is cut short"));
        }
        types.push(header[0]);
        at += 5 + len;
    }
    Ok(types)
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

//! The packet edge: IPv4/IPv6 + TCP read with smoltcp's `wire` views, and the few in-place
//! rewrites the engine makes to packets it forwards (ports, MSS, SACK-permitted), each followed by
//! a fresh TCP checksum.
//!
//! Anything this module does not understand — not IP, not TCP, IPv4 fragments, IPv6 extension
//! headers, a truncated or inconsistent header — yields `None`, and the engine passes the packet
//! on unchanged: the engine must never be the reason a packet it does not handle is lost.

use crate::seq::Seq;
use smoltcp::phy::{Checksum, ChecksumCapabilities};
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr,
    TcpSeqNumber, UdpPacket,
};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

/// What the engine needs to know about a TCP segment, read once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: Seq,
    pub ack: Option<Seq>,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub window: u16,
    /// Where the TCP header and payload lie in the packet.
    pub tcp: Range<usize>,
    pub payload: Range<usize>,
}

/// Reads an IPv4 or IPv6 packet carrying a whole TCP segment.
pub fn parse(packet: &[u8]) -> Option<Segment> {
    let (src_ip, dst_ip, tcp): (IpAddr, IpAddr, Range<usize>) = match packet.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            if ip.more_frags() || ip.frag_offset() != 0 || ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            let start = ip.header_len() as usize;
            (ip.src_addr().into(), ip.dst_addr().into(), start..ip.total_len() as usize)
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            (ip.src_addr().into(), ip.dst_addr().into(), 40..ip.total_len())
        }
        _ => return None,
    };
    let t = TcpPacket::new_checked(&packet[tcp.clone()]).ok()?;
    let header_len = t.header_len() as usize;
    Some(Segment {
        src: SocketAddr::new(src_ip, t.src_port()),
        dst: SocketAddr::new(dst_ip, t.dst_port()),
        seq: Seq(t.seq_number().0 as u32),
        ack: t.ack().then(|| Seq(t.ack_number().0 as u32)),
        syn: t.syn(),
        fin: t.fin(),
        rst: t.rst(),
        window: t.window_len(),
        payload: tcp.start + header_len..tcp.end,
        tcp,
    })
}

/// The addresses and length of an IPv4 or IPv6 packet of any protocol, from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpHeader {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The packet's length by its header (a frame may carry padding after it).
    pub len: usize,
}

/// Reads the IP header of `packet`; `None` when it is not a consistent IPv4/IPv6 header.
pub fn ip_header(packet: &[u8]) -> Option<IpHeader> {
    match packet.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            Some(IpHeader {
                src: ip.src_addr().into(),
                dst: ip.dst_addr().into(),
                len: ip.total_len() as usize,
            })
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            Some(IpHeader { src: ip.src_addr().into(), dst: ip.dst_addr().into(), len: ip.total_len() })
        }
        _ => None,
    }
}

/// Whether `packet` is IPv4 (not a fragment) or IPv6 (no extension header) carrying TCP.
pub fn is_tcp(packet: &[u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            packet.len() >= 20 && packet[9] == 6 && u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff == 0
        }
        Some(6) => packet.len() >= 40 && packet[6] == 6,
        _ => false,
    }
}

/// Completes the TCP or UDP checksum of a packet whose sender left it to the hardware
/// (checksum offload: the field holds only the pseudo-header sum). Computed afresh over the
/// pseudo-header and the whole segment, so the field's content does not matter. False (packet
/// untouched) for anything else: not TCP/UDP, IPv4 fragments, IPv6 extension headers.
pub fn complete_checksum(packet: &mut [u8]) -> bool {
    let (src, dst, proto, l4) = match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let Ok(ip) = Ipv4Packet::new_checked(&*packet) else { return false };
            if ip.more_frags() || ip.frag_offset() != 0 {
                return false;
            }
            let l4 = ip.header_len() as usize..ip.total_len() as usize;
            (IpAddr::from(ip.src_addr()), IpAddr::from(ip.dst_addr()), ip.next_header(), l4)
        }
        Some(6) => {
            let Ok(ip) = Ipv6Packet::new_checked(&*packet) else { return false };
            (IpAddr::from(ip.src_addr()), IpAddr::from(ip.dst_addr()), ip.next_header(), 40..ip.total_len())
        }
        _ => return false,
    };
    let (src, dst, seg) = (ip(src), ip(dst), &mut packet[l4]);
    match proto {
        IpProtocol::Tcp => match TcpPacket::new_checked(seg) {
            Ok(mut t) => t.fill_checksum(&src, &dst),
            Err(_) => return false,
        },
        IpProtocol::Udp => match UdpPacket::new_checked(seg) {
            Ok(mut u) => u.fill_checksum(&src, &dst),
            Err(_) => return false,
        },
        _ => return false,
    }
    true
}

fn ip(a: IpAddr) -> IpAddress {
    match a {
        IpAddr::V4(v4) => IpAddress::Ipv4(v4),
        IpAddr::V6(v6) => IpAddress::Ipv6(v6),
    }
}

/// Edits the TCP header of `packet` in place, then recomputes the TCP checksum (the IP header
/// is untouched: addresses do not change here).
pub fn edit_tcp<R>(packet: &mut [u8], seg: &Segment, f: impl FnOnce(&mut TcpPacket<&mut [u8]>) -> R) -> R {
    let mut t = TcpPacket::new_unchecked(&mut packet[seg.tcp.clone()]);
    let r = f(&mut t);
    t.fill_checksum(&ip(seg.src.ip()), &ip(seg.dst.ip()));
    r
}

/// Rewrites the packet's source and destination (addresses and ports, same family as before),
/// refilling the IPv4 header checksum and the TCP checksum over the new pseudo-header. Used for
/// the port rewrite of direct mode and the address rewrite of balanced mode. Returns false
/// (packet untouched) for a family change.
pub fn readdress(packet: &mut [u8], seg: &Segment, src: SocketAddr, dst: SocketAddr) -> bool {
    match (src.ip(), dst.ip(), packet[0] >> 4) {
        (IpAddr::V4(s), IpAddr::V4(d), 4) => {
            let mut p = Ipv4Packet::new_unchecked(&mut *packet);
            p.set_src_addr(s);
            p.set_dst_addr(d);
            p.fill_checksum();
        }
        (IpAddr::V6(s), IpAddr::V6(d), 6) => {
            let mut p = Ipv6Packet::new_unchecked(&mut *packet);
            p.set_src_addr(s);
            p.set_dst_addr(d);
        }
        _ => return false,
    }
    let mut t = TcpPacket::new_unchecked(&mut packet[seg.tcp.clone()]);
    t.set_src_port(src.port());
    t.set_dst_port(dst.port());
    t.fill_checksum(&ip(src.ip()), &ip(dst.ip()));
    true
}

/// True when the packet's TCP checksum is right (tests and the simulator's link check it).
pub fn checksum_ok(packet: &[u8]) -> bool {
    parse(packet).is_some_and(|seg| {
        TcpPacket::new_unchecked(&packet[seg.tcp.clone()])
            .verify_checksum(&ip(seg.src.ip()), &ip(seg.dst.ip()))
    })
}

/// Who sums the payload into the TCP checksum of the segments the engine builds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TcpChecksum {
    /// The engine: the packet is complete as it leaves the engine.
    #[default]
    Full,
    /// The link: the field holds only [`tcp_pseudo_sum`], as a stack leaves it for checksum
    /// offload. For a driver that sends such packets with checksum offload (the kernel or the
    /// NIC sums the segment; a veth's peer trusts it unsummed), which spares a pass over every
    /// byte sent.
    Partial,
}

/// Whether `packet` is an IPv4/IPv6 TCP packet whose checksum field holds its pseudo-header sum
/// (a partial checksum the link is to finish; see [`TcpChecksum::Partial`]).
pub fn tcp_checksum_is_partial(packet: &[u8]) -> bool {
    parse(packet).is_some_and(|seg| {
        let t = TcpPacket::new_unchecked(&packet[seg.tcp.clone()]);
        t.checksum() == tcp_pseudo_sum(seg.src.ip(), seg.dst.ip(), seg.tcp.len())
    })
}

/// The control flag of a segment the engine builds itself (ACK is set whenever `ack` is given).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    None,
    Psh,
    Fin,
    Rst,
}

/// A segment the engine emits on its own: its handshake bytes and ACKs to the client, translated
/// data for either side, RSTs. `src` and `dst` must be of one family.
pub struct Build<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: Seq,
    pub ack: Option<Seq>,
    pub control: Control,
    pub window: u16,
    pub payload: &'a [u8],
}

/// `pieces`, read as one stream of bytes, cut into payloads of `step` bytes (the last one
/// shorter), each a list of slices of the pieces for [`Build::emit_parts`]: packets that span
/// the pieces where they meet, without joining them first.
pub fn chunks<'a>(pieces: impl IntoIterator<Item = &'a [u8]>, step: usize) -> Vec<Vec<&'a [u8]>> {
    let step = step.max(1);
    let mut out: Vec<Vec<&[u8]>> = Vec::new();
    let mut len = step;
    for mut piece in pieces {
        while !piece.is_empty() {
            if len == step {
                out.push(Vec::new());
                len = 0;
            }
            let take = (step - len).min(piece.len());
            out.last_mut().expect("pushed above").push(&piece[..take]);
            len += take;
            piece = &piece[take..];
        }
    }
    out
}

/// Most SACK blocks one segment carries: smoltcp's `TcpRepr` writes up to three (RFC 2018 allows
/// four without timestamps; the first three say what matters).
pub const MAX_SACK_BLOCKS: usize = 3;

/// Bytes of TCP options that `blocks` SACK blocks take, padded to a multiple of four.
pub fn sack_option_len(blocks: usize) -> usize {
    match blocks.min(MAX_SACK_BLOCKS) {
        0 => 0,
        n => (2 + 8 * n).div_ceil(4) * 4,
    }
}

impl Build<'_> {
    /// The packet, with IP and TCP checksums filled; `None` for mixed address families.
    pub fn emit(&self) -> Option<Vec<u8>> {
        self.emit_with_sack(&[])
    }

    /// The packet carrying SACK blocks (RFC 2018: `[left, right)` ranges of the receiver's
    /// out-of-order data, at most [`MAX_SACK_BLOCKS`], the first the most recently received).
    /// Only with an ACK, and only on flows where the peer offered SACK.
    pub fn emit_with_sack(&self, sack: &[(Seq, Seq)]) -> Option<Vec<u8>> {
        self.emit_inner(sack, None, TcpChecksum::Full, &[])
    }

    /// [`Build::emit_with_sack`] with the TCP checksum left as `checksum` says.
    pub fn emit_checksummed(&self, sack: &[(Seq, Seq)], checksum: TcpChecksum) -> Option<Vec<u8>> {
        self.emit_inner(sack, None, checksum, &[])
    }

    /// A SYN (with `ack`: a SYN-ACK) offering `mss` and, when given, a window-scale shift; the
    /// control field is ignored. Only fed to the full proxy's own stack, never sent.
    pub fn emit_syn(&self, mss: u16, wscale: Option<u8>) -> Option<Vec<u8>> {
        self.emit_inner(&[], Some((mss, wscale)), TcpChecksum::Full, &[])
    }

    /// [`Build::emit_checksummed`] with `parts` following the payload, as if appended to it:
    /// one packet from bytes that lie in several buffers, copied once.
    pub fn emit_parts(&self, parts: &[&[u8]], sack: &[(Seq, Seq)], checksum: TcpChecksum) -> Option<Vec<u8>> {
        self.emit_inner(sack, None, checksum, parts)
    }

    fn emit_inner(
        &self,
        sack: &[(Seq, Seq)],
        syn: Option<(u16, Option<u8>)>,
        checksum: TcpChecksum,
        parts: &[&[u8]],
    ) -> Option<Vec<u8>> {
        let mut sack_ranges = [None; MAX_SACK_BLOCKS];
        for (slot, (l, r)) in sack_ranges.iter_mut().zip(sack) {
            *slot = Some((l.0, r.0));
        }
        let tcp = TcpRepr {
            src_port: self.src.port(),
            dst_port: self.dst.port(),
            control: match self.control {
                _ if syn.is_some() => TcpControl::Syn,
                Control::None => TcpControl::None,
                Control::Psh => TcpControl::Psh,
                Control::Fin => TcpControl::Fin,
                Control::Rst => TcpControl::Rst,
            },
            seq_number: TcpSeqNumber(self.seq.0 as i32),
            ack_number: self.ack.map(|a| TcpSeqNumber(a.0 as i32)),
            window_len: self.window,
            window_scale: syn.and_then(|s| s.1),
            max_seg_size: syn.map(|s| s.0),
            sack_permitted: false,
            sack_ranges,
            timestamp: None,
            // Appended after the headers: not zeroed first and then copied over.
            payload: &[],
        };
        // The TCP checksum is summed here, eight bytes at a time (smoltcp sums two at a time):
        // every record toward the client is a fresh packet, so this runs over every byte sent.
        let mut caps = ChecksumCapabilities::default();
        caps.tcp = Checksum::None;
        // The IPv4 header's too (smoltcp's two bytes at a time showed per packet in profiles).
        caps.ipv4 = Checksum::None;
        let payload_len: usize = self.payload.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        let tlen = tcp.buffer_len() + payload_len;
        let headers = tcp.buffer_len();
        let (mut buf, at) = match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let r = Ipv4Repr {
                    src_addr: a,
                    dst_addr: b,
                    next_header: IpProtocol::Tcp,
                    payload_len: tlen,
                    hop_limit: 64,
                };
                let mut buf = packet_buf(r.buffer_len() + headers, payload_len);
                r.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]), &caps);
                let header = r.buffer_len();
                let sum = !fold(ones_sum(&buf[..header]));
                buf[10..12].copy_from_slice(&sum.to_ne_bytes());
                (buf, header)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let r = Ipv6Repr {
                    src_addr: a,
                    dst_addr: b,
                    next_header: IpProtocol::Tcp,
                    payload_len: tlen,
                    hop_limit: 64,
                };
                let mut buf = packet_buf(r.buffer_len() + headers, payload_len);
                r.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]));
                (buf, r.buffer_len())
            }
            _ => return None,
        };
        let mut t = TcpPacket::new_unchecked(&mut buf[at..]);
        tcp.emit(&mut t, &ip(self.src.ip()), &ip(self.dst.ip()), &caps);
        t.set_checksum(0);
        buf.extend_from_slice(self.payload);
        for p in parts {
            buf.extend_from_slice(p);
        }
        let segment = &buf[at..];
        let sum = match checksum {
            TcpChecksum::Full => tcp_checksum(self.src.ip(), self.dst.ip(), segment),
            TcpChecksum::Partial => tcp_pseudo_sum(self.src.ip(), self.dst.ip(), segment.len()),
        };
        TcpPacket::new_unchecked(&mut buf[at..]).set_checksum(sum);
        Some(buf)
    }
}

/// Spare capacity in each packet buffer the engine allocates: the bridge puts the link-layer
/// header (Ethernet, an 802.1Q tag at most) in front of the packet in the same allocation.
pub const LINK_HEADROOM: usize = 18;

/// A zeroed packet buffer of `len` bytes with capacity for `more` and [`LINK_HEADROOM`] more.
fn packet_buf(len: usize, more: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(len + more + LINK_HEADROOM);
    buf.resize(len, 0);
    buf
}

/// The TCP checksum (RFC 9293 section 3.1, RFC 8200 section 8.1 for IPv6) of `segment`, whose
/// checksum field must be zero, between `src` and `dst`.
pub fn tcp_checksum(src: IpAddr, dst: IpAddr, segment: &[u8]) -> u16 {
    let acc = ones_add(pseudo_header_acc(src, dst, segment.len()), ones_sum(segment));
    // The sum of native-endian words, folded: its bytes in memory order are the field's.
    u16::from_be_bytes((!fold(acc)).to_ne_bytes())
}

/// What a TCP checksum field holds for checksum offload (a stack's CHECKSUM_PARTIAL): the
/// pseudo-header's one's-complement sum for a segment of `tcp_len` bytes, folded, not
/// complemented. Whoever finishes it adds the segment's bytes (the field included) and
/// complements.
pub fn tcp_pseudo_sum(src: IpAddr, dst: IpAddr, tcp_len: usize) -> u16 {
    u16::from_be_bytes(fold(pseudo_header_acc(src, dst, tcp_len)).to_ne_bytes())
}

fn pseudo_header_acc(src: IpAddr, dst: IpAddr, tcp_len: usize) -> u64 {
    let mut acc = 0u64;
    match (src, dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            acc = ones_add(acc, ones_sum(&a.octets()));
            acc = ones_add(acc, ones_sum(&b.octets()));
            acc = ones_add(acc, ones_sum(&[0, 6]));
            acc = ones_add(acc, ones_sum(&(tcp_len as u16).to_be_bytes()));
        }
        (a, b) => {
            let octets = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            acc = ones_add(acc, ones_sum(&octets(a)));
            acc = ones_add(acc, ones_sum(&octets(b)));
            acc = ones_add(acc, ones_sum(&(tcp_len as u32).to_be_bytes()));
            acc = ones_add(acc, ones_sum(&[0, 0, 0, 6]));
        }
    }
    acc
}

/// The one's-complement sum of `data` as native-endian words (RFC 1071: byte order does not
/// change the sum's bytes), eight bytes at a time, not yet folded. `data` starts at an even
/// offset of what is summed; an odd last byte is padded with zero.
fn ones_sum(data: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        acc = ones_add(acc, u64::from_ne_bytes(w.try_into().expect("eight bytes")));
    }
    let rest = words.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    ones_add(acc, u64::from_ne_bytes(last))
}

fn ones_add(a: u64, b: u64) -> u64 {
    let (sum, carry) = a.overflowing_add(b);
    sum + carry as u64
}

fn fold(acc: u64) -> u16 {
    let mut a = (acc & 0xffff_ffff) + (acc >> 32);
    a = (a & 0xffff) + (a >> 16);
    a = (a & 0xffff) + (a >> 16);
    a = (a & 0xffff) + (a >> 16);
    a as u16
}

const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const OPT_SACK_PERMITTED: u8 = 4;

/// Walks TCP options as (kind, value range within `opts`), stopping at the end option or at a
/// malformed length.
fn options(opts: &[u8]) -> Vec<(u8, Range<usize>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            OPT_END => break,
            OPT_NOP => i += 1,
            kind => {
                let Some(&len) = opts.get(i + 1) else { break };
                let len = len as usize;
                if len < 2 || i + len > opts.len() {
                    break;
                }
                out.push((kind, i + 2..i + len));
                i += len;
            }
        }
    }
    out
}

/// The smallest MSS the clamp leaves (RFC 9293's floor for IPv4 minus headers is larger; this
/// only keeps a tiny advertised MSS from reaching zero).
const MIN_MSS: u16 = 64;

/// Lowers the MSS option by `by` bytes (one server segment plus the record overhead
/// must fit the client's MSS); returns (old, new) when an MSS option was present. A SYN without
/// one keeps the default (536 / 1220): see docs/inline-engine.md.
pub fn lower_mss(opts: &mut [u8], by: u16) -> Option<(u16, u16)> {
    let (_, r) = options(opts).into_iter().find(|(k, r)| *k == OPT_MSS && r.len() == 2)?;
    let old = u16::from_be_bytes([opts[r.start], opts[r.start + 1]]);
    let new = old.saturating_sub(by).max(MIN_MSS).min(old);
    opts[r].copy_from_slice(&new.to_be_bytes());
    Some((old, new))
}

/// The MSS option of a SYN, if any.
pub fn mss(opts: &[u8]) -> Option<u16> {
    let (_, r) = options(opts).into_iter().find(|(k, r)| *k == OPT_MSS && r.len() == 2)?;
    Some(u16::from_be_bytes([opts[r.start], opts[r.start + 1]]))
}

/// The window-scale shift a SYN offers (RFC 7323), capped at 14.
pub fn window_scale(opts: &[u8]) -> Option<u8> {
    const OPT_WSCALE: u8 = 3;
    let (_, r) = options(opts).into_iter().find(|(k, r)| *k == OPT_WSCALE && r.len() == 1)?;
    Some(opts[r.start].min(14))
}

/// Whether a SYN's options offer SACK (RFC 2018's SACK-permitted).
pub fn sack_permitted(opts: &[u8]) -> bool {
    options(opts).iter().any(|(k, r)| *k == OPT_SACK_PERMITTED && r.is_empty())
}

/// Replaces a SACK-permitted option with NOPs, so the peer never uses SACK on the flow (the
/// simulator's hosts with SACK off; the engine itself passes the option on).
pub fn strip_sack_permitted(opts: &mut [u8]) -> bool {
    strip(opts, OPT_SACK_PERMITTED, 0)
}

/// Adds a SACK-permitted option (two NOPs and the option) at the front of a SYN-ACK's options,
/// growing the header by 4 bytes, with the IP length and checksums refilled: the client may then
/// use SACK toward the engine whether or not the server accepted it. False
/// (packet untouched) when the packet does not parse, already has the option, or its options
/// are full.
pub fn add_sack_permitted(packet: &mut Vec<u8>) -> bool {
    let Some(seg) = parse(packet) else { return false };
    let opts = seg.tcp.start + 20..seg.payload.start;
    if opts.len() + 4 > 40 || options(&packet[opts.clone()]).iter().any(|(k, _)| *k == OPT_SACK_PERMITTED) {
        return false;
    }
    packet.truncate(seg.tcp.end);
    packet.splice(opts.start..opts.start, [OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2]);
    match packet[0] >> 4 {
        4 => {
            let mut p = Ipv4Packet::new_unchecked(&mut packet[..]);
            p.set_total_len(p.total_len() + 4);
            p.fill_checksum();
        }
        _ => {
            let mut p = Ipv6Packet::new_unchecked(&mut packet[..]);
            p.set_payload_len(p.payload_len() + 4);
        }
    }
    let mut t = TcpPacket::new_unchecked(&mut packet[seg.tcp.start..]);
    t.set_header_len(t.header_len() + 4);
    t.fill_checksum(&ip(seg.src.ip()), &ip(seg.dst.ip()));
    true
}

/// Replaces a timestamps option with NOPs, so timestamps are never negotiated: the engine
/// builds most of a TLS flow's segments itself, and RFC 7323 lets a receiver drop segments
/// without the option once it was negotiated. (Carrying the peers' values through instead is
/// possible, see docs/inline-engine.md.)
pub fn strip_timestamps(opts: &mut [u8]) -> bool {
    const OPT_TIMESTAMPS: u8 = 8;
    strip(opts, OPT_TIMESTAMPS, 8)
}

/// Replaces the option `kind` whose value is `value_len` bytes with NOPs.
fn strip(opts: &mut [u8], kind: u8, value_len: usize) -> bool {
    let found = options(opts).into_iter().find(|(k, r)| *k == kind && r.len() == value_len);
    if let Some((_, r)) = found {
        opts[r.start - 2..r.end].fill(OPT_NOP);
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_checksum_is_the_pseudo_header_sum_that_completing_finishes() {
        let v4: (SocketAddr, SocketAddr) =
            ("10.0.0.2:443".parse().unwrap(), "10.0.0.1:40000".parse().unwrap());
        let v6: (SocketAddr, SocketAddr) =
            ("[fd00::2]:443".parse().unwrap(), "[fd00::1]:40000".parse().unwrap());
        for (src, dst) in [v4, v6] {
            for payload in [&b""[..], b"odd", b"an even payload."] {
                let b = Build {
                    src,
                    dst,
                    seq: Seq(7),
                    ack: Some(Seq(9)),
                    control: Control::Psh,
                    window: 500,
                    payload,
                };
                let full = b.emit_checksummed(&[], TcpChecksum::Full).unwrap();
                let mut partial = b.emit_checksummed(&[], TcpChecksum::Partial).unwrap();
                assert!(checksum_ok(&full) && !tcp_checksum_is_partial(&full));
                if src.is_ipv4() {
                    assert!(Ipv4Packet::new_checked(&full[..]).unwrap().verify_checksum(), "IPv4 header");
                }
                assert!(tcp_checksum_is_partial(&partial) && !checksum_ok(&partial));
                // What the kernel does with CHECKSUM_PARTIAL: sum from the TCP header on, the
                // field included, and store the complement.
                let seg = parse(&partial).unwrap();
                let sum = !fold(ones_sum(&partial[seg.tcp.clone()]));
                let at = seg.tcp.start + 16;
                partial[at..at + 2].copy_from_slice(&sum.to_ne_bytes());
                assert_eq!(partial, full, "{src} -> {dst}, {} bytes", payload.len());
            }
        }
    }

    #[test]
    fn options_walk_stops_at_garbage() {
        assert_eq!(options(&[1, 1, 2, 4, 5, 0xb4, 4, 2, 0, 9]).len(), 2);
        assert_eq!(options(&[2, 1, 5]).len(), 0, "length below 2");
        assert_eq!(options(&[2, 9, 5]).len(), 0, "length past the end");
        assert_eq!(options(&[2]).len(), 0);
    }

    #[test]
    fn clamp_and_strip() {
        let mut o = [1, 1, 2, 4, 0x05, 0xb4, 4, 2, 1, 3, 3, 7];
        assert_eq!(lower_mss(&mut o, 29), Some((1460, 1431)));
        assert_eq!(&o[4..6], &1431u16.to_be_bytes());
        let mut tiny = [2, 4, 0, 70];
        assert_eq!(lower_mss(&mut tiny, 29), Some((70, 64)), "floor");
        let mut tinier = [2, 4, 0, 10];
        assert_eq!(lower_mss(&mut tinier, 29), Some((10, 10)), "never raised");
        assert!(strip_sack_permitted(&mut o));
        assert_eq!(&o[6..8], &[1, 1]);
        assert!(!strip_sack_permitted(&mut o));
        assert_eq!(&o[9..], &[3, 3, 7], "window scale untouched");
        assert_eq!(window_scale(&o), Some(7));
        assert_eq!(mss(&o), Some(1431));
        let mut ts = [1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8, 3, 3, 7];
        assert!(strip_timestamps(&mut ts));
        assert_eq!(&ts[..12], &[1; 12]);
        assert_eq!(window_scale(&ts), Some(7));
        assert_eq!(window_scale(&[3, 3, 20]), Some(14));
        assert_eq!(window_scale(&[1, 1]), None);
        let mut none = [1u8, 1, 1, 0];
        assert_eq!(lower_mss(&mut none, 29), None);
    }

    #[test]
    fn built_packets_parse_back_with_good_checksums() {
        for (src, dst) in [("10.0.0.2:443", "10.0.0.1:40000"), ("[fd00::2]:443", "[fd00::1]:5")] {
            let b = Build {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                seq: Seq(u32::MAX),
                ack: Some(Seq(7)),
                control: Control::Psh,
                window: 1000,
                payload: b"record bytes",
            };
            let p = b.emit().unwrap();
            assert!(checksum_ok(&p));
            let seg = parse(&p).unwrap();
            assert_eq!((seg.src, seg.dst, seg.seq, seg.ack, seg.window), (b.src, b.dst, b.seq, b.ack, 1000));
            assert_eq!(&p[seg.payload], b"record bytes");
            assert!(!seg.syn && !seg.fin && !seg.rst);
        }
        let rst = Build {
            src: "10.0.0.1:1".parse().unwrap(),
            dst: "10.0.0.2:2".parse().unwrap(),
            seq: Seq(1),
            ack: None,
            control: Control::Rst,
            window: 0,
            payload: &[],
        };
        let seg = parse(&rst.emit().unwrap()).unwrap();
        assert!(seg.rst && seg.ack.is_none());
        let mixed = Build { dst: "[::1]:2".parse().unwrap(), ..rst };
        assert!(mixed.emit().is_none());
    }

    #[test]
    fn sack_permitted_is_added_to_a_syn_ack_and_blocks_are_emitted() {
        for (src, dst) in [("10.0.0.2:443", "10.0.0.1:40000"), ("[fd00::2]:443", "[fd00::1]:5")] {
            let b = Build {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                seq: Seq(5),
                ack: Some(Seq(u32::MAX - 3)),
                control: Control::None,
                window: 1000,
                payload: &[],
            };
            let mut p = b.emit_with_sack(&[(Seq(u32::MAX - 1), Seq(9)), (Seq(20), Seq(30))]).unwrap();
            assert!(checksum_ok(&p));
            let seg = parse(&p).unwrap();
            let opts = &p[seg.tcp.start + 20..seg.payload.start];
            assert_eq!(opts.len(), sack_option_len(2));
            assert_eq!(&opts[..2], &[5, 18], "one SACK option with two blocks");
            assert_eq!(&opts[2..6], &(u32::MAX - 1).to_be_bytes());
            assert!(!sack_permitted(opts));
            // A SYN-ACK with MSS and window scale, as Linux sends when SACK was stripped.
            let syn_ack: Vec<u8> = {
                let tcp = TcpRepr {
                    src_port: 443,
                    dst_port: 40000,
                    control: TcpControl::Syn,
                    seq_number: TcpSeqNumber(1),
                    ack_number: Some(TcpSeqNumber(2)),
                    window_len: 64000,
                    window_scale: Some(7),
                    max_seg_size: Some(1460),
                    sack_permitted: false,
                    sack_ranges: [None; 3],
                    timestamp: None,
                    payload: &[],
                };
                let mut q = Build { payload: &[], ..b }.emit().unwrap();
                let at = parse(&q).unwrap().tcp.start;
                q.truncate(at);
                let mut t = vec![0; tcp.buffer_len()];
                let (s, d) = (ip(b.src.ip()), ip(b.dst.ip()));
                tcp.emit(&mut TcpPacket::new_unchecked(&mut t[..]), &s, &d, &ChecksumCapabilities::default());
                q.extend_from_slice(&t);
                if q[0] >> 4 == 4 {
                    let mut v4 = Ipv4Packet::new_unchecked(&mut q[..]);
                    v4.set_total_len(20 + t.len() as u16);
                    v4.fill_checksum();
                } else {
                    Ipv6Packet::new_unchecked(&mut q[..]).set_payload_len(t.len() as u16);
                }
                q
            };
            p = syn_ack.clone();
            p.extend_from_slice(&[0; 6]); // Ethernet padding after the packet
            assert!(add_sack_permitted(&mut p));
            assert_eq!(p.len(), syn_ack.len() + 4);
            assert!(checksum_ok(&p));
            let seg = parse(&p).unwrap();
            assert!(seg.syn && seg.ack == Some(Seq(2)));
            let opts = &p[seg.tcp.start + 20..seg.payload.start];
            assert!(sack_permitted(opts));
            assert_eq!((mss(opts), window_scale(opts)), (Some(1460), Some(7)), "the rest kept");
            assert!(!add_sack_permitted(&mut p), "once");
        }
    }

    #[test]
    fn non_tcp_and_garbage_do_not_parse() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0x45, 0, 0]), None);
        assert_eq!(parse(b"hello, world, this is not an IP packet at all"), None);
    }

    #[test]
    fn built_segments_carry_the_checksum_smoltcp_verifies() {
        let payload: Vec<u8> = (0..1500u32).map(|i| (i * 7 + 3) as u8).collect();
        let pairs = [("10.0.0.1:443", "10.0.0.2:5555"), ("[fd00::1]:443", "[fd00::2]:5555")];
        for (src, dst) in pairs {
            for len in [0, 1, 2, 3, 7, 8, 9, 1447, 1448, 1500] {
                let b = Build {
                    src: src.parse().unwrap(),
                    dst: dst.parse().unwrap(),
                    seq: Seq(0xfffe_0001),
                    ack: Some(Seq(12345)),
                    control: Control::Psh,
                    window: 0xffff,
                    payload: &payload[..len],
                };
                let pkt = b.emit().unwrap();
                assert!(checksum_ok(&pkt), "{src} -> {dst}, {len} bytes");
                assert!(pkt.capacity() >= pkt.len() + LINK_HEADROOM);
            }
        }
    }

    #[test]
    fn chunks_span_pieces_where_they_meet_and_keep_every_byte_in_order() {
        let pieces: Vec<Vec<u8>> =
            [5usize, 0, 3, 9, 1].iter().enumerate().map(|(i, &n)| vec![i as u8; n]).collect();
        let all: Vec<u8> = pieces.concat();
        for step in 1..=20 {
            let cut = chunks(pieces.iter().map(|p| &p[..]), step);
            let lens: Vec<usize> = cut.iter().map(|c| c.iter().map(|s| s.len()).sum()).collect();
            assert!(lens[..lens.len() - 1].iter().all(|&l| l == step), "step {step}: {lens:?}");
            assert!((1..=step).contains(lens.last().unwrap()), "step {step}: {lens:?}");
            assert_eq!(cut.concat().concat(), all, "step {step}");
            assert!(cut.iter().flatten().all(|s| !s.is_empty()), "no empty slice");
        }
        assert!(chunks(std::iter::empty(), 4).is_empty());
    }
}

//! Runs of queued frames that can leave as one GSO frame (no `unsafe` here).
//!
//! Consecutive frames of one TCP flow toward one interface (a burst of records the engine sealed
//! from a burst of server segments) differ only in their sequence numbers and checksums. The
//! packet ring hands such a run to the kernel as one large frame with a `virtio_net_hdr` asking
//! for segmentation at `gso_size` = the run's first payload length; with TSO off on the
//! interface the kernel cuts it in software into exactly the frames of the run before they reach
//! the wire (each one no larger than it was, so never above the MTU), with TSO on the device does
//! (a veth hands it to its peer whole). One frame then crosses the packet socket, the qdisc and
//! the device checks instead of dozens.
//!
//! What the kernel's segmentation changes, and why each is allowed: PSH is kept on the last
//! segment only (RFC 9293 3.9.1: a sender may collapse pushes; every frame of a run carries the
//! same flags, so only PSH can move); IPv4 identifications count up from the first frame's (the
//! run must have DF set, where the field identifies nothing, RFC 6864); checksums are computed
//! afresh for each segment.

/// `struct virtio_net_hdr` (linux/virtio_net.h), written in front of every frame the socket
/// sends once PACKET_VNET_HDR is on. Little-endian fields (x86 and every legacy virtio host).
pub const VNET_HDR_LEN: usize = 10;
const VNET_F_NEEDS_CSUM: u8 = 1;
const VNET_GSO_TCPV4: u8 = 1;
const VNET_GSO_TCPV6: u8 = 4;

const ETH_HLEN: usize = 14;
/// A GSO frame's IP packet stays within what an IPv4 total length (and the kernel's default
/// GSO limit) allows.
const MAX_GSO_BYTES: usize = 65_535;
/// Frames merged into one at most (the kernel's default limit is far higher).
const MAX_SEGMENTS: usize = 64;

const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;

/// One message of a send batch: frames `start..end` of the queue, sent with `vnet` in front.
/// With more than one frame, the first frame's headers were rewritten to describe the whole run
/// and only the payloads of the others follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    pub start: usize,
    pub end: usize,
    /// Bytes of headers (Ethernet, IP, TCP) in each frame of a run; the others' payloads start
    /// there.
    pub header_len: usize,
    pub vnet: [u8; VNET_HDR_LEN],
    /// The frames it stands for on the wire: the run's, or the segments one packet is cut into.
    pub segments: usize,
}

impl Message {
    /// Frames on the wire.
    pub fn frames(&self) -> usize {
        self.segments
    }
}

/// One queued frame: an engine packet with its Ethernet header kept apart (putting the header in
/// front of the packet would move every byte of it; the kernel gathers the two from an iovec
/// each), or a whole frame.
#[derive(Debug)]
pub struct TxFrame {
    eth: [u8; ETH_HLEN],
    /// `data` is the IP packet behind `eth`; otherwise `data` is the whole frame.
    split: bool,
    data: Vec<u8>,
}

impl TxFrame {
    /// A whole frame.
    pub fn whole(frame: Vec<u8>) -> TxFrame {
        TxFrame { eth: [0; ETH_HLEN], split: false, data: frame }
    }

    /// The IP packet `ip` behind the Ethernet header `eth`.
    pub fn split(eth: [u8; ETH_HLEN], ip: Vec<u8>) -> TxFrame {
        TxFrame { eth, split: true, data: ip }
    }

    pub fn len(&self) -> usize {
        self.data.len() + if self.split { ETH_HLEN } else { 0 }
    }

    /// The Ethernet header (shorter only for a whole frame shorter than one).
    pub fn eth(&self) -> &[u8] {
        if self.split {
            &self.eth
        } else {
            &self.data[..ETH_HLEN.min(self.data.len())]
        }
    }

    /// What follows the Ethernet header.
    pub fn ip(&self) -> &[u8] {
        if self.split {
            &self.data
        } else {
            self.data.get(ETH_HLEN..).unwrap_or_default()
        }
    }

    fn ip_mut(&mut self) -> &mut [u8] {
        if self.split {
            &mut self.data
        } else {
            self.data.get_mut(ETH_HLEN..).unwrap_or_default()
        }
    }

    /// The frame as one buffer.
    #[cfg(test)]
    fn into_bytes(self) -> Vec<u8> {
        if self.split {
            [&self.eth[..], &self.data].concat()
        } else {
            self.data
        }
    }
}

/// Where one frame's headers lie, when it is a TCP segment a run may hold.
#[derive(Clone, Copy, Debug)]
struct Tcp {
    v6: bool,
    ip_len: usize,
    /// Ethernet + IP + TCP headers.
    header_len: usize,
    seq: u32,
    payload: usize,
}

fn parse(frame: &TxFrame) -> Option<Tcp> {
    let eth = frame.eth();
    let ethertype = u16::from_be_bytes([*eth.get(12)?, *eth.get(13)?]);
    let ip = frame.ip();
    let (v6, ip_len, total) = match ethertype {
        0x0800 => {
            let ihl = usize::from(*ip.first()? & 0x0f) * 4;
            let frag = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
            // Version 4, no options, TCP, DF set, not a fragment.
            if ip[0] >> 4 != 4 || ihl != 20 || *ip.get(9)? != 6 || frag != 0x4000 {
                return None;
            }
            (false, ihl, usize::from(u16::from_be_bytes([ip[2], ip[3]])))
        }
        0x86dd => {
            // Version 6, no extension headers, TCP.
            if *ip.first()? >> 4 != 6 || *ip.get(6)? != 6 || ip.len() < 40 {
                return None;
            }
            (true, 40, 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]])))
        }
        _ => return None,
    };
    // Ethernet padding (short frames) would be taken for payload: exact lengths only.
    if total != ip.len() {
        return None;
    }
    let tcp = ip.get(ip_len..)?;
    let tcp_len = usize::from(*tcp.get(12)? >> 4) * 4;
    if tcp_len < 20 || tcp.len() < tcp_len {
        return None;
    }
    let flags = tcp[13];
    if flags & !(TCP_ACK | TCP_PSH) != 0 || flags & TCP_ACK == 0 {
        return None;
    }
    let seq = u32::from_be_bytes(tcp[4..8].try_into().expect("four bytes"));
    Some(Tcp { v6, ip_len, header_len: ETH_HLEN + ip_len + tcp_len, seq, payload: tcp.len() - tcp_len })
}

/// `b` may follow `a` in a run whose segments carry `mss` bytes (all but the last exactly).
fn follows(a: &TxFrame, pa: &Tcp, b: &TxFrame, pb: &Tcp, mss: usize) -> bool {
    if pa.v6 != pb.v6
        || pa.header_len != pb.header_len
        || pa.payload != mss
        || pb.payload == 0
        || pb.payload > mss
    {
        return false;
    }
    if pb.seq != pa.seq.wrapping_add(pa.payload as u32) {
        return false;
    }
    let tcp = pa.ip_len;
    // Every header byte alike but lengths, IPv4 identification and checksums, and the sequence
    // number: MAC addresses, addresses, ports, TTL, TOS, ACK, flags, window, options.
    let (ai, bi) = (a.ip(), b.ip());
    let same = |r: std::ops::Range<usize>| ai[r.clone()] == bi[r];
    let ip_same = if pa.v6 { same(0..4) && same(6..tcp) } else { same(0..2) && same(6..10) && same(12..tcp) };
    a.eth() == b.eth()
        && ip_same
        && same(tcp..tcp + 4)
        && same(tcp + 8..tcp + 16)
        && same(tcp + 18..pa.header_len - ETH_HLEN)
}

/// Splits `frames` into messages, merging runs of two or more segments of one flow, and rewrites
/// the first frame of each run to describe the run (IP length, IPv4 header checksum, and the TCP
/// checksum field holding the pseudo-header sum, as checksum offload expects).
///
/// A frame with a segment size in `gso_sizes` (a TCP packet larger than the MTU, see
/// `Bridge::set_segmentation_offload`) leaves alone as one GSO frame cut at that size.
pub fn plan(frames: &mut [TxFrame], gso_sizes: &[u16]) -> Vec<Message> {
    debug_assert_eq!(frames.len(), gso_sizes.len());
    let mut messages = Vec::new();
    let mut i = 0;
    while i < frames.len() {
        let gso = usize::from(gso_sizes.get(i).copied().unwrap_or(0));
        if let Some(p) = parse(&frames[i]).filter(|p| gso > 0 && p.payload > gso) {
            rewrite_head(&mut frames[i], &p, p.header_len - ETH_HLEN + p.payload);
            let vnet = gso_vnet(&p, gso);
            let segments = p.payload.div_ceil(gso);
            messages.push(Message { start: i, end: i + 1, header_len: p.header_len, vnet, segments });
            i += 1;
            continue;
        }
        let vnet = partial_checksum(&frames[i]).unwrap_or([0; VNET_HDR_LEN]);
        let single = Message { start: i, end: i + 1, header_len: 0, vnet, segments: 1 };
        let Some(first) = parse(&frames[i]) else {
            messages.push(single);
            i += 1;
            continue;
        };
        let mss = first.payload;
        let mut end = i + 1;
        let mut last = first;
        let mut bytes = first.header_len - ETH_HLEN + first.payload;
        while end < frames.len() && end - i < MAX_SEGMENTS && last.payload == mss {
            let Some(next) = parse(&frames[end]) else { break };
            if bytes + next.payload > MAX_GSO_BYTES
                || !follows(&frames[end - 1], &last, &frames[end], &next, mss)
            {
                break;
            }
            bytes += next.payload;
            last = next;
            end += 1;
        }
        if end - i < 2 || mss == 0 {
            messages.push(single);
            i += 1;
            continue;
        }
        rewrite_head(&mut frames[i], &first, bytes);
        let vnet = gso_vnet(&first, mss);
        messages.push(Message { start: i, end, header_len: first.header_len, vnet, segments: end - i });
        i = end;
    }
    messages
}

/// The `virtio_net_hdr` asking for segmentation at `mss` and checksum offload of a frame whose
/// headers are `p`'s and whose TCP checksum field holds the pseudo-header sum.
fn gso_vnet(p: &Tcp, mss: usize) -> [u8; VNET_HDR_LEN] {
    let mut vnet = [0u8; VNET_HDR_LEN];
    vnet[0] = VNET_F_NEEDS_CSUM;
    vnet[1] = if p.v6 { VNET_GSO_TCPV6 } else { VNET_GSO_TCPV4 };
    vnet[2..4].copy_from_slice(&(p.header_len as u16).to_le_bytes());
    vnet[4..6].copy_from_slice(&(mss as u16).to_le_bytes());
    vnet[6..8].copy_from_slice(&((ETH_HLEN + p.ip_len) as u16).to_le_bytes());
    vnet[8..10].copy_from_slice(&16u16.to_le_bytes()); // the TCP checksum's offset
    vnet
}

/// The `virtio_net_hdr` asking for checksum offload for one TCP frame whose checksum field holds
/// its pseudo-header sum (a partial checksum: the engine's segments with
/// `TcpChecksum::Partial`, and those whose sender left them for offload); `None` for any other
/// frame, which leaves exactly as it is. The kernel (or the NIC) then sums the segment, and a
/// veth hands the frame to its peer as CHECKSUM_PARTIAL, which the peer's stack trusts without
/// summing. A complete checksum equals the pseudo-header sum by chance only when its segment
/// sums to zero, and then finishing it again gives the same field.
fn partial_checksum(frame: &TxFrame) -> Option<[u8; VNET_HDR_LEN]> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let eth = frame.eth();
    let ethertype = u16::from_be_bytes([*eth.get(12)?, *eth.get(13)?]);
    let ip = frame.ip();
    let (src, dst, ip_len): (IpAddr, IpAddr, usize) = match ethertype {
        0x0800 => {
            let ihl = usize::from(*ip.first()? & 0x0f) * 4;
            let frag = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
            // Exact lengths only: the kernel would sum Ethernet padding into the checksum.
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if ip[0] >> 4 != 4
                || ihl < 20
                || ip.len() < ihl
                || ip[9] != 6
                || frag & 0x3fff != 0
                || total != ip.len()
            {
                return None;
            }
            let a =
                |at: usize| IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&ip[at..at + 4]).expect("four")));
            (a(12), a(16), ihl)
        }
        0x86dd => {
            if ip.len() < 40 || ip[0] >> 4 != 6 || ip[6] != 6 {
                return None;
            }
            if 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]])) != ip.len() {
                return None;
            }
            let a =
                |at: usize| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&ip[at..at + 16]).expect("16")));
            (a(8), a(24), 40)
        }
        _ => return None,
    };
    let tcp = &ip[ip_len..];
    let tcp_header = usize::from(*tcp.get(12)? >> 4) * 4;
    if tcp_header < 20 || tcp.len() < tcp_header {
        return None;
    }
    let field = u16::from_be_bytes([tcp[16], tcp[17]]);
    if field != tlsgate_inline::packet::tcp_pseudo_sum(src, dst, tcp.len()) {
        return None;
    }
    let mut vnet = [0u8; VNET_HDR_LEN];
    vnet[0] = VNET_F_NEEDS_CSUM;
    vnet[2..4].copy_from_slice(&((ETH_HLEN + ip_len + tcp_header) as u16).to_le_bytes());
    vnet[6..8].copy_from_slice(&((ETH_HLEN + ip_len) as u16).to_le_bytes());
    vnet[8..10].copy_from_slice(&16u16.to_le_bytes()); // the TCP checksum's offset
    Some(vnet)
}

/// The run's first frame describes `ip_bytes` of IP packet (headers and every payload).
fn rewrite_head(frame: &mut TxFrame, p: &Tcp, ip_bytes: usize) {
    let frame = frame.ip_mut();
    let tcp = p.ip_len;
    let tcp_bytes = ip_bytes - p.ip_len;
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
    };
    if p.v6 {
        frame[4..6].copy_from_slice(&(tcp_bytes as u16).to_be_bytes());
        add(&frame[8..40]);
    } else {
        frame[2..4].copy_from_slice(&(ip_bytes as u16).to_be_bytes());
        frame[10..12].fill(0);
        let check = !fold(frame[..tcp].chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum());
        frame[10..12].copy_from_slice(&check.to_be_bytes());
        add(&frame[12..20]);
    }
    // Pseudo header: addresses (added above), protocol, TCP length; not complemented (the
    // kernel adds the segment's bytes and complements).
    let pseudo = fold(sum + 6 + tcp_bytes as u32);
    frame[tcp + 16..tcp + 18].copy_from_slice(&pseudo.to_be_bytes());
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 TCP frame with `payload` bytes at `seq`, flags ACK|PSH.
    fn v4(seq: u32, payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; ETH_HLEN + 40 + payload];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[ETH_HLEN..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 0, 0, 2]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 1]);
        let tcp = &mut ip[20..];
        tcp[0..2].copy_from_slice(&443u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&40000u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = TCP_ACK | TCP_PSH;
        tcp[14..16].copy_from_slice(&500u16.to_be_bytes());
        for (i, b) in tcp[20..].iter_mut().enumerate() {
            *b = i as u8;
        }
        f
    }

    /// `plan` with no frame carrying a segment size.
    fn plan0(frames: &mut [Vec<u8>]) -> Vec<Message> {
        plan_whole(frames, &vec![0; frames.len()])
    }

    /// `plan` over whole frames, each written back as planned.
    fn plan_whole(frames: &mut [Vec<u8>], gso_sizes: &[u16]) -> Vec<Message> {
        let mut tx: Vec<TxFrame> = frames.iter().cloned().map(TxFrame::whole).collect();
        let messages = plan(&mut tx, gso_sizes);
        for (f, t) in frames.iter_mut().zip(tx) {
            *f = t.into_bytes();
        }
        messages
    }

    #[test]
    fn frames_with_the_ethernet_header_apart_plan_as_whole_ones() {
        let frames = vec![v4(1000, 1400), v4(2400, 1400), v4(3800, 700), v4(0, 3000), vec![0; 60]];
        let sizes = [0, 0, 0, 1400, 0];
        let mut whole = frames.clone();
        let expect = plan_whole(&mut whole, &sizes);
        let mut split: Vec<TxFrame> = frames
            .into_iter()
            .map(|f| match f.len() {
                60 => TxFrame::whole(f),
                _ => TxFrame::split(f[..ETH_HLEN].try_into().unwrap(), f[ETH_HLEN..].to_vec()),
            })
            .collect();
        assert_eq!(plan(&mut split, &sizes), expect);
        assert_eq!(split.into_iter().map(TxFrame::into_bytes).collect::<Vec<_>>(), whole);
    }

    #[test]
    fn a_packet_with_a_segment_size_leaves_alone_as_one_gso_frame() {
        let mut big = v4(1000, 4000);
        big[ETH_HLEN + 20 + 16..ETH_HLEN + 20 + 18].copy_from_slice(&[0xde, 0xad]);
        let mut frames = vec![v4(0, 1400), big, v4(5000, 1400), v4(6400, 1400)];
        let messages = plan_whole(&mut frames, &[0, 1400, 0, 0]);
        assert_eq!(
            messages.iter().map(|m| (m.start, m.end, m.frames())).collect::<Vec<_>>(),
            [(0, 1, 1), (1, 2, 3), (2, 4, 2)]
        );
        let m = messages[1];
        assert_eq!(m.vnet[0..2], [VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4]);
        assert_eq!(u16::from_le_bytes([m.vnet[4], m.vnet[5]]), 1400);
        // Its checksum field now holds the pseudo-header sum, as segmentation expects.
        let mut expect = frames[1].clone();
        make_partial(&mut expect);
        assert_eq!(frames[1], expect);
        assert_eq!(plan_whole(&mut [v4(0, 1000)], &[1400])[0].vnet[1], 0, "no larger than its segment size");
    }

    #[test]
    fn a_burst_of_one_flow_becomes_one_message_and_odd_frames_stay_alone() {
        let mut frames = vec![v4(1000, 1400), v4(2400, 1400), v4(3800, 700), v4(4500, 1400), vec![0; 60]];
        let messages = plan0(&mut frames);
        assert_eq!(messages.iter().map(|m| (m.start, m.end)).collect::<Vec<_>>(), [(0, 3), (3, 4), (4, 5)]);
        let m = messages[0];
        assert_eq!(m.header_len, ETH_HLEN + 40);
        assert_eq!(m.vnet[0..2], [VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4]);
        assert_eq!(u16::from_le_bytes([m.vnet[4], m.vnet[5]]), 1400);
        assert_eq!(u16::from_le_bytes([m.vnet[6], m.vnet[7]]), 34);
        // The head's IP length covers the run, and its header checksum verifies.
        let ip = &frames[0][ETH_HLEN..ETH_HLEN + 20];
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 40 + 3500);
        assert_eq!(fold(ip.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum()), 0xffff);
        assert_eq!(messages[1].vnet, [0; VNET_HDR_LEN]);
    }

    /// The frame's TCP checksum field set to its pseudo-header sum (a partial checksum).
    fn make_partial(f: &mut [u8]) {
        let ip = &f[ETH_HLEN..];
        let a = |at: usize| std::net::IpAddr::from(<[u8; 4]>::try_from(&ip[at..at + 4]).unwrap());
        let sum = tlsgate_inline::packet::tcp_pseudo_sum(a(12), a(16), ip.len() - 20);
        f[ETH_HLEN + 20 + 16..ETH_HLEN + 20 + 18].copy_from_slice(&sum.to_be_bytes());
    }

    #[test]
    fn a_lone_frame_with_a_partial_checksum_asks_for_checksum_offload_and_others_leave_as_they_are() {
        let mut partial = v4(1000, 100);
        partial[ETH_HLEN + 20 + 13] = 0x02; // a SYN: never part of a run, still offloaded
        make_partial(&mut partial);
        let mut frames = vec![partial.clone(), v4(5000, 100)];
        let messages = plan0(&mut frames);
        assert_eq!(messages.len(), 2);
        let vnet = messages[0].vnet;
        assert_eq!(vnet[0..2], [VNET_F_NEEDS_CSUM, 0], "checksum offload, no segmentation");
        assert_eq!(u16::from_le_bytes([vnet[2], vnet[3]]), 54);
        assert_eq!(u16::from_le_bytes([vnet[6], vnet[7]]), 34, "sums from the TCP header");
        assert_eq!(u16::from_le_bytes([vnet[8], vnet[9]]), 16, "into the checksum field");
        assert_eq!(frames[0], partial, "the frame itself unchanged");
        assert_eq!(messages[1].vnet, [0; VNET_HDR_LEN], "a field that is not the pseudo-header sum");
        let mut padded = partial.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(plan0(&mut [padded])[0].vnet, [0; VNET_HDR_LEN], "padding would be summed");
    }

    #[test]
    fn a_gap_another_flow_or_other_flags_end_a_run() {
        let mut gap = vec![v4(1000, 1400), v4(2500, 1400)];
        assert_eq!(plan0(&mut gap).len(), 2);
        let mut other = vec![v4(1000, 1400), v4(2400, 1400)];
        other[1][ETH_HLEN + 20 + 3] ^= 1; // another client port
        assert_eq!(plan0(&mut other).len(), 2);
        let mut fin = vec![v4(1000, 1400), v4(2400, 1400)];
        fin[1][ETH_HLEN + 20 + 13] |= 0x01;
        assert_eq!(plan0(&mut fin).len(), 2);
        let mut short_first = vec![v4(1000, 700), v4(1700, 700), v4(2400, 1400)];
        assert_eq!(plan0(&mut short_first).iter().map(|m| m.frames()).collect::<Vec<_>>(), [2, 1]);
        let mut bare_acks = vec![v4(1000, 0), v4(1000, 0)];
        assert_eq!(plan0(&mut bare_acks).len(), 2);
    }
}

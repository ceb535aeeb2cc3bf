//! The L2 bridge around the engine (sans-IO): Ethernet frames in from either side, frames out to
//! either side. IPv4/IPv6 frames go through the [`Engine`]; everything else (ARP, LLDP, other
//! ethertypes, 802.1Q/802.1ad-tagged frames of any payload) crosses unchanged, so the box is
//! invisible at L3. IPv6 neighbour discovery is ICMPv6, which the engine passes unchanged.
//!
//! The engine's packets are framed again with the MAC addresses learned from the frames seen on
//! each side (IP source of every IP frame, sender of every ARP message; bounded per side). Each
//! packet's side comes from its destination: a service's server (direct mode's address, a
//! balanced pool's members) is on the server side, always, so plaintext never goes toward the
//! client side; a packet for the handled frame's destination continues across, one for its
//! source goes back (the engine's own ACKs and RSTs); anything else goes where its destination
//! was learned. A packet with no side or no MAC for its destination is dropped and counted.
//!
//! Balanced services' virtual addresses are answered on the client side with the bridge's own
//! MAC, in ARP (IPv4) and neighbour advertisements (IPv6), and frames from a virtual address
//! carry it. A balanced member whose MAC is
//! not known yet is probed, at most once a second: in ARP (RFC 5227 probe) or a neighbour
//! solicitation from the unspecified address (IPv6).
//!
//! A frame carrying an IP packet larger than the MTU is a GSO frame when the driver says so
//! ([`InFrame::gso_size`]: a veth hands on what its sender's TSO/GSO left whole): server data of
//! a flow whose records the engine seals goes to the engine whole (records are cut to the
//! client's MSS on the way out), anything else is first cut into the segments it stands for. Any
//! other oversized frame (GRO on the interface, or a driver that does not say) is dropped and
//! counted.
//!
//! The AF_PACKET driver (`tlsgate-io`) and the simulator both drive this type.

mod arp;
mod macs;
mod nd;
mod segment;

use crate::engine::Engine;
use crate::packet::{self, TcpChecksum};
use crate::tables::Mode;
use macs::MacTable;
use smoltcp::wire::{EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, ETHERNET_HEADER_LEN};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// Which interface a frame came from or goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One frame as read from an interface.
#[derive(Clone, Copy, Debug)]
pub struct InFrame<'a> {
    pub from: Side,
    pub data: &'a [u8],
    /// The sender's stack left the TCP/UDP checksum unfinished (checksum offload on veth and
    /// most NICs: the field holds only the pseudo-header sum). The bridge completes it.
    pub csum_partial: bool,
    /// A TCP GSO frame (one frame for several segments, as TSO left it): the segment size; 0 for
    /// a frame as a wire carries it.
    pub gso_size: u16,
}

/// Counters of the bridge itself (the engine has its own [`crate::engine::Stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// Non-IP frames (ARP, …) crossed unchanged.
    pub non_ip_frames: u64,
    /// ARP requests for a virtual address answered by the bridge.
    pub arp_answered: u64,
    /// IPv6 neighbour solicitations for a virtual address answered by the bridge.
    pub nd_answered: u64,
    /// Engine packets with no learned MAC for their destination: dropped.
    pub unroutable: u64,
    /// Frames larger than the far side's MTU allows: dropped (segmentation offload left on).
    pub oversize: u64,
    /// GSO frames handed to the engine whole.
    pub gso_whole: u64,
    /// GSO frames cut into their segments before the engine.
    pub gso_cut: u64,
    /// Partial checksums completed.
    pub csum_completed: u64,
    /// Frames shorter than an Ethernet header: dropped.
    pub malformed: u64,
    /// ARP probes sent for servers whose MAC was not known.
    pub arp_probes: u64,
    /// IPv6 neighbour solicitations sent for servers whose MAC was not known.
    pub nd_probes: u64,
    /// IP frames from the server side to a server: local to that side, not sent back onto it.
    pub local: u64,
}

/// Where the bridge writes the frames to send.
pub trait FrameSink {
    /// One frame for `side`. With `gso_size` above 0 (only with
    /// [`Bridge::set_segmentation_offload`]) it carries a TCP packet larger than the MTU that
    /// the link is to cut into segments of `gso_size` payload bytes, as the kernel's GSO does.
    fn frame(&mut self, side: Side, frame: Vec<u8>, gso_size: u16);

    /// One of the engine's IP packets behind the Ethernet header `eth`, as [`FrameSink::frame`]
    /// says. By default put together into one frame; a sink that can send the two apart saves
    /// moving every byte of the packet.
    fn packet(&mut self, side: Side, eth: [u8; ETHERNET_HEADER_LEN], packet: Vec<u8>, gso_size: u16) {
        let mut f = packet;
        f.splice(0..0, eth);
        self.frame(side, f, gso_size);
    }
}

/// Frames as a wire carries them: a packet with a segment size is cut here, each segment a
/// frame with finished checksums (for the simulator and tests).
impl FrameSink for Vec<(Side, Vec<u8>)> {
    fn frame(&mut self, side: Side, frame: Vec<u8>, gso_size: u16) {
        if gso_size == 0 || frame.len() < ETHERNET_HEADER_LEN {
            self.push((side, frame));
            return;
        }
        let (eth, ip) = frame.split_at(ETHERNET_HEADER_LEN);
        for s in segment::cut(ip, usize::from(gso_size)).into_iter().flatten() {
            let mut f = Vec::with_capacity(eth.len() + s.len());
            f.extend_from_slice(eth);
            f.extend_from_slice(&s);
            self.push((side, f));
        }
    }
}

/// Learned entries per side.
pub const MAC_TABLE_SIZE: usize = 4096;
/// The shortest interval between two ARP probes for one server.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The frame being handled, for the packets the engine emits in answer to it.
struct Incoming {
    side: Side,
    src: IpAddr,
    dst: IpAddr,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
}

impl Incoming {
    /// The MAC this frame gave `ip` as a host on side `on`: its sender's for its source on the
    /// side it came from, its addressee's for its destination on the other.
    fn mac_of(&self, ip: IpAddr, on: Side) -> Option<[u8; 6]> {
        if on == self.side && ip == self.src {
            Some(self.src_mac)
        } else if on != self.side && ip == self.dst {
            Some(self.dst_mac)
        } else {
            None
        }
    }
}

#[derive(Debug)]
pub struct Bridge {
    engine: Engine,
    mac: [u8; 6],
    mtu: usize,
    /// Per side ([`Side::index`]): IP → MAC.
    learned: [MacTable; 2],
    /// The learning counter: stamps tell which side saw an address last.
    stamp: u64,
    /// Balanced services' virtual addresses.
    vips: Vec<IpAddr>,
    /// Where service flows go: on the server side by configuration.
    servers: Vec<IpAddr>,
    /// When each server was last probed in ARP (bounded by the configured servers).
    probed: HashMap<IpAddr, Duration>,
    stats: BridgeStats,
    /// The engine's packets for one frame, reused from frame to frame.
    emitted: Vec<Vec<u8>>,
    /// Packets larger than the MTU go to the sink whole with their segment size.
    gso: bool,
}

impl Bridge {
    /// `mac`: the address the bridge answers ARP for virtual addresses with; `mtu`: the largest
    /// IP packet either side accepts.
    pub fn new(mut engine: Engine, mac: [u8; 6], mtu: usize) -> Bridge {
        engine.set_mtu(mtu);
        let mut vips = Vec::new();
        let mut servers = Vec::new();
        for s in engine.services() {
            match s.mode {
                Mode::Balanced => {
                    vips.push(s.addr.ip());
                    servers.extend(s.pool.iter().map(|m| m.ip()));
                }
                Mode::Direct => servers.push(s.addr.ip()),
            }
        }
        Bridge {
            engine,
            mac,
            mtu,
            learned: [MacTable::new(MAC_TABLE_SIZE), MacTable::new(MAC_TABLE_SIZE)],
            stamp: 0,
            vips,
            servers,
            probed: HashMap::new(),
            stats: BridgeStats::default(),
            emitted: Vec::new(),
            gso: false,
        }
    }

    /// Handles one frame seen at `now`; appends the frames to write, each with its side.
    pub fn handle_frame(&mut self, now: Duration, frame: InFrame<'_>, out: &mut impl FrameSink) {
        let Ok(eth) = EthernetFrame::new_checked(frame.data) else {
            // Shorter than an Ethernet header: no interface would send it on.
            self.stats.malformed += 1;
            return;
        };
        match eth.ethertype() {
            EthernetProtocol::Ipv4 | EthernetProtocol::Ipv6 => self.ip_frame(now, frame, &eth, out),
            EthernetProtocol::Arp => self.arp_frame(frame, &eth, out),
            _ => self.cross(frame, out),
        }
    }

    /// A frame the bridge does not look into: to the other side as it is.
    fn cross(&mut self, frame: InFrame<'_>, out: &mut impl FrameSink) {
        self.stats.non_ip_frames += 1;
        out.frame(frame.from.other(), frame.data.to_vec(), 0);
    }

    fn arp_frame(&mut self, frame: InFrame<'_>, eth: &EthernetFrame<&[u8]>, out: &mut impl FrameSink) {
        let Some(a) = arp::parse(eth.payload()) else { return self.cross(frame, out) };
        self.learn(frame.from, a.sender_ip.into(), a.sender_mac);
        let gratuitous = a.sender_ip == a.target_ip;
        if a.request && !gratuitous && frame.from == Side::Client && self.vips.contains(&a.target_ip.into()) {
            self.stats.arp_answered += 1;
            out.frame(Side::Client, arp::reply(&a, self.mac), 0);
            return;
        }
        if eth.dst_addr().0 == self.mac {
            return; // the answer to a probe of ours: learned above, nobody else's business
        }
        self.cross(frame, out);
    }

    fn ip_frame(
        &mut self,
        now: Duration,
        frame: InFrame<'_>,
        eth: &EthernetFrame<&[u8]>,
        out: &mut impl FrameSink,
    ) {
        let payload = eth.payload();
        if payload.len() > self.mtu {
            if frame.gso_size == 0 {
                self.stats.oversize += 1;
                return;
            }
            if !self.engine.takes_whole(payload) {
                return self.cut_gso(now, frame, eth, out);
            }
            self.stats.gso_whole += 1;
            return self.whole_frame(now, frame.from, eth, out);
        }
        // With room for the Ethernet header the packet goes out with (see `route`).
        let mut pkt = Vec::with_capacity(payload.len() + packet::LINK_HEADROOM);
        pkt.extend_from_slice(payload);
        let (src_mac, dst_mac) = (eth.src_addr().0, eth.dst_addr().0);
        let incoming = packet::ip_header(&pkt).map(|h| {
            pkt.truncate(h.len); // Ethernet padding of short frames
            Incoming { side: frame.from, src: h.src, dst: h.dst, src_mac, dst_mac }
        });
        if let Some(i) = &incoming {
            self.learn(frame.from, i.src, src_mac);
        }
        // A partial TCP checksum stays partial when the driver has the link finish those (see
        // `packet::TcpChecksum::Partial`): its field is the pseudo-header sum either way.
        let link_finishes = self.engine.tcp_checksum() == TcpChecksum::Partial && packet::is_tcp(&pkt);
        if frame.csum_partial && !link_finishes && packet::complete_checksum(&mut pkt) {
            self.stats.csum_completed += 1;
        }
        // An advertisement names its target's MAC (the answer to a probe may come from another
        // of the member's addresses, to all nodes).
        if frame.from == Side::Server && incoming.as_ref().is_some_and(|i| i.dst.is_ipv6()) {
            if let Some((target, mac)) = nd::advertised(&pkt) {
                self.learn(Side::Server, target.into(), mac);
            }
        }
        if frame.from == Side::Client && incoming.as_ref().is_some_and(|i| i.dst.is_ipv6()) {
            if let Some(ns) = nd::solicit(&pkt).filter(|ns| self.vips.contains(&ns.target.into())) {
                self.stats.nd_answered += 1;
                out.frame(Side::Client, nd::advert(&ns, self.mac, src_mac), 0);
                return;
            }
        }
        let Some(incoming) = incoming else {
            // Not a readable IP header: nothing to route by, so like any unknown frame.
            return self.cross(frame, out);
        };
        let mut emitted = std::mem::take(&mut self.emitted);
        self.engine.handle_packet(now, pkt, &mut emitted);
        for p in emitted.drain(..) {
            self.route(now, p, Some(&incoming), out);
        }
        self.emitted = emitted;
    }

    /// A GSO frame of server data the engine seals: read in place (the engine takes only its
    /// payload, and its checksum is never read), not copied out of the driver's buffer.
    fn whole_frame(
        &mut self,
        now: Duration,
        from: Side,
        eth: &EthernetFrame<&[u8]>,
        out: &mut impl FrameSink,
    ) {
        let payload = eth.payload();
        let Some(h) = packet::ip_header(payload) else { return };
        let pkt = &payload[..h.len.min(payload.len())];
        let (src_mac, dst_mac) = (eth.src_addr().0, eth.dst_addr().0);
        self.learn(from, h.src, src_mac);
        let incoming = Incoming { side: from, src: h.src, dst: h.dst, src_mac, dst_mac };
        let mut emitted = std::mem::take(&mut self.emitted);
        self.engine.handle_whole(now, pkt, &mut emitted);
        for p in emitted.drain(..) {
            self.route(now, p, Some(&incoming), out);
        }
        self.emitted = emitted;
    }

    /// A GSO frame the engine does not take whole: its segments, one by one, as if each had come
    /// from the wire (checksums finished).
    fn cut_gso(
        &mut self,
        now: Duration,
        frame: InFrame<'_>,
        eth: &EthernetFrame<&[u8]>,
        out: &mut impl FrameSink,
    ) {
        let Some(segments) = segment::cut(eth.payload(), usize::from(frame.gso_size)) else {
            self.stats.oversize += 1;
            return;
        };
        self.stats.gso_cut += 1;
        let mut data = Vec::with_capacity(ETHERNET_HEADER_LEN + self.mtu);
        for s in segments {
            data.clear();
            data.extend_from_slice(&frame.data[..ETHERNET_HEADER_LEN]);
            data.extend_from_slice(&s);
            let piece = InFrame { from: frame.from, data: &data, csum_partial: false, gso_size: 0 };
            if let Ok(eth) = EthernetFrame::new_checked(&data[..]) {
                self.ip_frame(now, piece, &eth, out);
            }
        }
    }

    /// Frames one packet of the engine's for the side its destination is on.
    fn route(&mut self, now: Duration, pkt: Vec<u8>, incoming: Option<&Incoming>, out: &mut impl FrameSink) {
        let Some(h) = packet::ip_header(&pkt) else {
            self.stats.unroutable += 1;
            return;
        };
        // Larger than the MTU only with segmentation offload: a record to the client, which the
        // link cuts into the segments the flow sized it for.
        let mut gso_size = 0;
        if pkt.len() > self.mtu {
            match self.engine.segment_size(&pkt) {
                Some(size) if self.gso => gso_size = size,
                _ => {
                    self.stats.oversize += 1;
                    return;
                }
            }
        }
        let Some(side) = self.side_of(&h, incoming) else {
            self.stats.unroutable += 1;
            return;
        };
        if incoming.is_some_and(|i| i.side == side && h.dst == i.dst) {
            // Sent to a server by a host beside it (only a server's side is fixed like this):
            // it already has the frame.
            self.stats.local += 1;
            return;
        }
        let from_frame = |ip: IpAddr, on: Side| incoming.and_then(|i| i.mac_of(ip, on));
        let dst_mac = self.learned[side.index()].get(&h.dst).map(|e| e.0).or_else(|| from_frame(h.dst, side));
        let Some(dst_mac) = dst_mac.filter(|m| *m != self.mac) else {
            self.stats.unroutable += 1;
            self.probe(now, side, h.dst, out);
            return;
        };
        let src_mac = if self.vips.contains(&h.src) {
            self.mac
        } else {
            let origin = side.other();
            self.learned[origin.index()]
                .get(&h.src)
                .map(|e| e.0)
                .or_else(|| from_frame(h.src, origin))
                .filter(|m| m[0] & 1 == 0)
                .unwrap_or(self.mac)
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress(src_mac),
            dst_addr: EthernetAddress(dst_mac),
            ethertype: if h.src.is_ipv4() { EthernetProtocol::Ipv4 } else { EthernetProtocol::Ipv6 },
        };
        let mut header = [0; ETHERNET_HEADER_LEN];
        eth.emit(&mut EthernetFrame::new_unchecked(&mut header[..]));
        out.packet(side, header, pkt, gso_size);
    }

    /// The side a packet goes to, or `None` when nothing says.
    fn side_of(&self, h: &packet::IpHeader, incoming: Option<&Incoming>) -> Option<Side> {
        if self.servers.contains(&h.dst) {
            return Some(Side::Server);
        }
        if let Some(i) = incoming {
            if h.dst == i.dst {
                return Some(i.side.other());
            }
            if h.dst == i.src {
                return Some(i.side);
            }
        }
        let seen = |s: Side| self.learned[s.index()].get(&h.dst).map(|e| e.1);
        match (seen(Side::Client), seen(Side::Server)) {
            (Some(c), Some(s)) => Some(if c >= s { Side::Client } else { Side::Server }),
            (Some(_), None) => Some(Side::Client),
            (None, Some(_)) => Some(Side::Server),
            (None, None) => None,
        }
    }

    /// Asks for the MAC of a server the bridge has not seen yet, at most once a second.
    fn probe(&mut self, now: Duration, side: Side, dst: IpAddr, out: &mut impl FrameSink) {
        if side != Side::Server || !self.servers.contains(&dst) {
            return;
        }
        if self.probed.get(&dst).is_some_and(|&at| now < at + PROBE_INTERVAL) {
            return;
        }
        self.probed.insert(dst, now);
        match dst {
            IpAddr::V4(v4) => {
                self.stats.arp_probes += 1;
                out.frame(Side::Server, arp::probe(v4, self.mac), 0);
            }
            IpAddr::V6(v6) => {
                self.stats.nd_probes += 1;
                out.frame(Side::Server, nd::probe(v6, self.mac), 0);
            }
        }
    }

    /// Remembers that `ip` is at `mac` on `side`. Not learned: unspecified, multicast and
    /// broadcast addresses, group MACs, the bridge's own MAC, the virtual addresses.
    fn learn(&mut self, side: Side, ip: IpAddr, mac: [u8; 6]) {
        let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
        if ip.is_unspecified() || ip.is_multicast() || broadcast || mac[0] & 1 == 1 || mac == self.mac {
            return;
        }
        if self.vips.contains(&ip) {
            return;
        }
        self.stamp += 1;
        self.learned[side.index()].learn(ip, mac, self.stamp);
    }

    /// With `on`, the engine sends each record to the client as one TCP packet larger than the
    /// MTU, handed to the [`FrameSink`] with the segment size the link is to cut it at (see
    /// [`Engine::set_segmentation_offload`]). For a driver whose link segments (GSO).
    pub fn set_segmentation_offload(&mut self, on: bool) {
        self.gso = on;
        self.engine.set_segmentation_offload(on);
    }

    /// Who finishes TCP checksums: with [`TcpChecksum::Partial`] the engine's segments and the
    /// partial ones received stay partial, for a driver that sends every TCP frame whose field
    /// holds the pseudo-header sum with checksum offload.
    pub fn set_tcp_checksum(&mut self, checksum: TcpChecksum) {
        self.engine.set_tcp_checksum(checksum);
    }

    pub fn poll_timeout(&self) -> Option<Duration> {
        self.engine.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Duration, out: &mut impl FrameSink) {
        let mut emitted = std::mem::take(&mut self.emitted);
        self.engine.handle_timeout(now, &mut emitted);
        for p in emitted.drain(..) {
            self.route(now, p, None, out);
        }
        self.emitted = emitted;
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    pub fn stats(&self) -> BridgeStats {
        self.stats
    }

    /// Learned addresses on `side` (at most [`MAC_TABLE_SIZE`]).
    pub fn learned(&self, side: Side) -> usize {
        self.learned[side.index()].len()
    }
}

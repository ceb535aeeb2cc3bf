//! The simulated hosts' Ethernet. The hosts speak IP (smoltcp with `Medium::Ip`), so their
//! packets are framed here on the way into the bridge, with per-host MACs, and unframed on the
//! way out, where each frame's side and MACs are checked. Some frames leave their TCP checksum
//! to the "hardware" (only the pseudo-header sum in the field, as Linux with checksum offload),
//! for the bridge to complete.

use crate::bridge::Side;
use crate::packet;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr,
    IpProtocol, Ipv4Packet, ETHERNET_HEADER_LEN,
};
use std::net::IpAddr;

pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const SERVER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
pub const BRIDGE_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

/// Every this many TCP frames one leaves its checksum unfinished.
const PARTIAL_EVERY: u64 = 3;

/// The framing of both hosts, and how many frames it left with a partial checksum.
#[derive(Default)]
pub struct L2 {
    tcp_frames: u64,
    pub partial: u64,
}

impl L2 {
    /// The frame a host on `side` writes for packet `p` (to the MAC its ARP cache has for the
    /// destination), and whether its checksum is left partial.
    pub fn frame(&mut self, side: Side, p: &[u8], client: IpAddr, server: IpAddr) -> (Vec<u8>, bool) {
        let h = packet::ip_header(p);
        let mac_of = |ip: Option<IpAddr>| match ip {
            Some(ip) if ip == client => CLIENT_MAC,
            Some(ip) if ip == server => SERVER_MAC,
            // The virtual address: the bridge answered for it.
            _ => BRIDGE_MAC,
        };
        let src = if side == Side::Client { CLIENT_MAC } else { SERVER_MAC };
        let mut f = ethernet(mac_of(h.map(|h| h.dst)), src, EthernetProtocol::Ipv4, p.len());
        f[ETHERNET_HEADER_LEN..].copy_from_slice(p);
        let mut partial = false;
        if packet::parse(p).is_some() {
            self.tcp_frames += 1;
            if self.tcp_frames.is_multiple_of(PARTIAL_EVERY) {
                partial = leave_partial(&mut f[ETHERNET_HEADER_LEN..]);
                self.partial += partial as u64;
            }
        }
        (f, partial)
    }
}

/// A frame's header with room for `len` bytes of payload.
fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: EthernetProtocol, len: usize) -> Vec<u8> {
    let mut f = vec![0; ETHERNET_HEADER_LEN + len];
    let repr = EthernetRepr { src_addr: EthernetAddress(src), dst_addr: EthernetAddress(dst), ethertype };
    repr.emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    f
}

/// Puts the pseudo-header sum in an IPv4 TCP checksum field, folded and not complemented, as a
/// stack offloading the checksum does.
fn leave_partial(p: &mut [u8]) -> bool {
    let Ok(ip) = Ipv4Packet::new_checked(&*p) else { return false };
    if ip.next_header() != IpProtocol::Tcp {
        return false;
    }
    let (hl, total) = (ip.header_len() as usize, ip.total_len() as usize);
    let mut sum: u32 = 0;
    for pair in p[12..20].chunks(2) {
        sum += u16::from_be_bytes([pair[0], pair[1]]) as u32;
    }
    sum += u8::from(IpProtocol::Tcp) as u32 + (total - hl) as u32;
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[hl + 16..hl + 18].copy_from_slice(&(sum as u16).to_be_bytes());
    true
}

/// The gratuitous ARP a host sends when its interface comes up (RFC 5227 announcement).
pub fn announcement(mac: [u8; 6], ip: IpAddr) -> Vec<u8> {
    let IpAddr::V4(ip) = ip else { unreachable!("the simulated hosts are IPv4") };
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(mac),
        source_protocol_addr: ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: ip,
    };
    let mut f = ethernet(EthernetAddress::BROADCAST.0, mac, EthernetProtocol::Arp, arp.buffer_len());
    arp.emit(&mut ArpPacket::new_unchecked(&mut f[ETHERNET_HEADER_LEN..]));
    f
}

/// The IP packet of a frame the bridge wrote to `side`: `Ok(None)` for frames that are not IPv4
/// (the announcements crossing), `Err` when the frame is addressed wrong.
pub fn unframe(side: Side, f: &[u8], vip: Option<IpAddr>) -> Result<Option<Vec<u8>>, String> {
    let eth = EthernetFrame::new_checked(f).map_err(|_| "a runt frame from the bridge".to_owned())?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return Ok(None);
    }
    let p = eth.payload();
    let h = packet::ip_header(p).ok_or("a frame without an IP header from the bridge")?;
    let (to, from) = match side {
        Side::Client => (CLIENT_MAC, if Some(h.src) == vip { BRIDGE_MAC } else { SERVER_MAC }),
        Side::Server => (SERVER_MAC, CLIENT_MAC),
    };
    if (eth.dst_addr().0, eth.src_addr().0) != (to, from) {
        return Err(format!(
            "{} -> {} framed {} -> {} toward the {side:?} side",
            h.src,
            h.dst,
            eth.src_addr(),
            eth.dst_addr()
        ));
    }
    Ok(Some(p.to_vec()))
}

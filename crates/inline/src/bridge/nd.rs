//! The IPv6 neighbour discovery the bridge speaks itself (RFC 4861), the counterpart of its ARP:
//! advertisements for balanced services' IPv6 virtual addresses, which no host owns, so that
//! clients can resolve them to the bridge's MAC; and probes for a member whose MAC the bridge has
//! not seen yet: a solicitation from the unspecified address (as duplicate address detection
//! sends it, so no host's neighbour cache is touched), which the member answers to all nodes.

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv6Packet, Icmpv6Repr, IpProtocol,
    Ipv6Packet, Ipv6Repr, NdiscNeighborFlags, NdiscRepr, RawHardwareAddress, ETHERNET_HEADER_LEN,
};
use std::net::Ipv6Addr;

/// A neighbour solicitation read from an IPv6 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Solicit {
    pub src: Ipv6Addr,
    pub target: Ipv6Addr,
}

/// The solicitation `pkt` carries, if it is a valid one (RFC 4861 section 7.1.1: hop limit
/// 255, a good checksum).
pub(super) fn solicit(pkt: &[u8]) -> Option<Solicit> {
    let ip = Ipv6Packet::new_checked(pkt).ok()?;
    if ip.next_header() != IpProtocol::Icmpv6 || ip.hop_limit() != 255 {
        return None;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let icmp = Icmpv6Packet::new_checked(ip.payload()).ok()?;
    match Icmpv6Repr::parse(&src, &dst, &icmp, &ChecksumCapabilities::default()).ok()? {
        Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr, .. }) => {
            Some(Solicit { src, target: target_addr })
        }
        _ => None,
    }
}

/// The advertisement answering `s`: `s.target` is at `mac`, sent from `mac` to `dst_mac` (the
/// soliciting host's). A solicitation from the unspecified address (duplicate address
/// detection) is answered to all nodes and not marked solicited (section 7.2.4).
pub(super) fn advert(s: &Solicit, mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<u8> {
    let dad = s.src.is_unspecified();
    let (dst, dst_mac) = if dad {
        (Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), [0x33, 0x33, 0, 0, 0, 1])
    } else {
        (s.src, dst_mac)
    };
    let flags = if dad {
        NdiscNeighborFlags::OVERRIDE
    } else {
        NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE
    };
    let icmp = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
        flags,
        target_addr: s.target,
        lladdr: Some(RawHardwareAddress::from_bytes(&mac)),
    });
    let ip = Ipv6Repr {
        src_addr: s.target,
        dst_addr: dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 255,
    };
    frame(mac, dst_mac, ip, icmp)
}

/// The target and link-layer address a neighbour advertisement carries, if `pkt` is a valid one
/// with that option.
pub(super) fn advertised(pkt: &[u8]) -> Option<(Ipv6Addr, [u8; 6])> {
    let ip = Ipv6Packet::new_checked(pkt).ok()?;
    if ip.next_header() != IpProtocol::Icmpv6 || ip.hop_limit() != 255 {
        return None;
    }
    let icmp = Icmpv6Packet::new_checked(ip.payload()).ok()?;
    match Icmpv6Repr::parse(&ip.src_addr(), &ip.dst_addr(), &icmp, &ChecksumCapabilities::default()).ok()? {
        Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { target_addr, lladdr: Some(l), .. }) => {
            Some((target_addr, l.as_bytes().try_into().ok()?))
        }
        _ => None,
    }
}

/// A solicitation for `target` from the unspecified address, to its solicited-node multicast
/// group; the answer goes to all nodes.
pub(super) fn probe(target: Ipv6Addr, mac: [u8; 6]) -> Vec<u8> {
    let o = target.octets();
    let group =
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(o[13]), u16::from_be_bytes([o[14], o[15]]));
    let icmp = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr: target, lladdr: None });
    let ip = Ipv6Repr {
        src_addr: Ipv6Addr::UNSPECIFIED,
        dst_addr: group,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 255,
    };
    frame(mac, [0x33, 0x33, 0xff, o[13], o[14], o[15]], ip, icmp)
}

fn frame(src_mac: [u8; 6], dst_mac: [u8; 6], ip: Ipv6Repr, icmp: Icmpv6Repr) -> Vec<u8> {
    let eth = EthernetRepr {
        src_addr: EthernetAddress(src_mac),
        dst_addr: EthernetAddress(dst_mac),
        ethertype: EthernetProtocol::Ipv6,
    };
    let mut buf = vec![0; ETHERNET_HEADER_LEN + ip.buffer_len() + icmp.buffer_len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    let mut p = Ipv6Packet::new_unchecked(f.payload_mut());
    ip.emit(&mut p);
    let caps = ChecksumCapabilities::default();
    icmp.emit(&ip.src_addr, &ip.dst_addr, &mut Icmpv6Packet::new_unchecked(p.payload_mut()), &caps);
    buf
}

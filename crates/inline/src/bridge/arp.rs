//! The ARP the bridge speaks itself (RFC 826): replies for balanced services' virtual addresses,
//! and probes (RFC 5227: sender address 0.0.0.0, so no host's cache is touched) for a server
//! whose MAC the bridge has not seen yet.

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr,
    ETHERNET_HEADER_LEN,
};
use std::net::Ipv4Addr;

/// An Ethernet/IPv4 ARP message, read from a frame's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Arp {
    pub request: bool,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

pub(super) fn parse(payload: &[u8]) -> Option<Arp> {
    let ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr,
        source_protocol_addr,
        target_protocol_addr,
        ..
    } = ArpRepr::parse(&ArpPacket::new_checked(payload).ok()?).ok()?
    else {
        return None;
    };
    Some(Arp {
        request: operation == ArpOperation::Request,
        sender_mac: source_hardware_addr.0,
        sender_ip: source_protocol_addr,
        target_ip: target_protocol_addr,
    })
}

/// The reply to `req` saying `req.target_ip` is at `mac`, addressed to the requester.
pub(super) fn reply(req: &Arp, mac: [u8; 6]) -> Vec<u8> {
    frame(
        req.sender_mac,
        mac,
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: EthernetAddress(mac),
            source_protocol_addr: req.target_ip,
            target_hardware_addr: EthernetAddress(req.sender_mac),
            target_protocol_addr: req.sender_ip,
        },
    )
}

/// A broadcast probe asking who has `target`; the answer comes back to `mac`.
pub(super) fn probe(target: Ipv4Addr, mac: [u8; 6]) -> Vec<u8> {
    frame(
        EthernetAddress::BROADCAST.0,
        mac,
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress(mac),
            source_protocol_addr: Ipv4Addr::UNSPECIFIED,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        },
    )
}

fn frame(dst: [u8; 6], src: [u8; 6], arp: ArpRepr) -> Vec<u8> {
    let eth = EthernetRepr {
        src_addr: EthernetAddress(src),
        dst_addr: EthernetAddress(dst),
        ethertype: EthernetProtocol::Arp,
    };
    let mut buf = vec![0; ETHERNET_HEADER_LEN + arp.buffer_len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    arp.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_and_probe_parse_back() {
        let req = Arp {
            request: true,
            sender_mac: [2, 0, 0, 0, 0, 1],
            sender_ip: Ipv4Addr::new(10, 0, 0, 1),
            target_ip: Ipv4Addr::new(10, 0, 0, 9),
        };
        let r = reply(&req, [2, 0, 0, 0, 0, 0xb]);
        assert_eq!(&r[..6], &req.sender_mac);
        let got = parse(&r[ETHERNET_HEADER_LEN..]).unwrap();
        assert_eq!(
            got,
            Arp {
                request: false,
                sender_mac: [2, 0, 0, 0, 0, 0xb],
                sender_ip: req.target_ip,
                target_ip: req.sender_ip
            }
        );
        let p = probe(Ipv4Addr::new(10, 0, 0, 2), [2, 0, 0, 0, 0, 0xb]);
        assert_eq!(&p[..6], &[0xff; 6]);
        let got = parse(&p[ETHERNET_HEADER_LEN..]).unwrap();
        assert!(got.request && got.sender_ip.is_unspecified());
        assert_eq!(got.target_ip, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(parse(&[0; 10]), None);
    }
}

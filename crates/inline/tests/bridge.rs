//! The L2 bridge on hand-built Ethernet frames: what crosses unchanged (ARP, neighbour discovery,
//! VLAN-tagged frames), the virtual address answered in ARP and IPv6 neighbour discovery, the engine's packets framed with the
//! MACs learned on each side (its own RST included), and what is dropped and counted.

mod common;

use common::{configs, data, syn, TLS13};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr,
    Icmpv6Packet, Icmpv6Repr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Address, Ipv6Packet, Ipv6Repr,
    NdiscNeighborFlags, NdiscRepr, RawHardwareAddress, TcpPacket, UdpPacket, UdpRepr, ETHERNET_HEADER_LEN,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tlsgate_inline::bridge::{Bridge, BridgeStats, InFrame, Side, MAC_TABLE_SIZE};
use tlsgate_inline::engine::{Config, Engine, Limits, Service};
use tlsgate_inline::packet;
use tlsgate_inline::tables::{Mode, Release};

const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const SERVER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const MEMBER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 3];
const BRIDGE_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
const BROADCAST: [u8; 6] = [0xff; 6];

const CLIENT: &str = "10.0.0.1:40000";
/// Direct mode: 443 offloaded toward 80 on the same address.
const SERVICE: &str = "10.0.0.2:443";
const BACKEND: &str = "10.0.0.2:80";
/// Balanced mode: a virtual address in front of one member.
const VIP: &str = "10.0.0.9:443";
const MEMBER: &str = "10.0.0.3:80";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn bridge() -> Bridge {
    let tls = configs(TLS13[0]).0;
    let service = |addr: &str, mode, pool: Vec<SocketAddr>| Service {
        addr: sa(addr),
        server_port: Some(80),
        mode,
        release: Release::Buffered,
        tls: tls.clone(),
        pool,
    };
    let engine = Engine::new(Config {
        services: vec![
            service(SERVICE, Mode::Direct, Vec::new()),
            service(VIP, Mode::Balanced, vec![sa(MEMBER)]),
        ],
        limits: Limits::default(),
    });
    Bridge::new(engine, BRIDGE_MAC, 1500)
}

fn frame(dst: [u8; 6], src: [u8; 6], ethertype: EthernetProtocol, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0; ETHERNET_HEADER_LEN + payload.len()];
    let repr = EthernetRepr { src_addr: EthernetAddress(src), dst_addr: EthernetAddress(dst), ethertype };
    repr.emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    f[ETHERNET_HEADER_LEN..].copy_from_slice(payload);
    f
}

fn ip_frame(dst: [u8; 6], src: [u8; 6], pkt: &[u8]) -> Vec<u8> {
    let ethertype = if pkt[0] >> 4 == 6 { EthernetProtocol::Ipv6 } else { EthernetProtocol::Ipv4 };
    frame(dst, src, ethertype, pkt)
}

fn arp(op: ArpOperation, sender: ([u8; 6], &str), target: ([u8; 6], &str)) -> Vec<u8> {
    let repr = ArpRepr::EthernetIpv4 {
        operation: op,
        source_hardware_addr: EthernetAddress(sender.0),
        source_protocol_addr: v4(sender.1),
        target_hardware_addr: EthernetAddress(target.0),
        target_protocol_addr: v4(target.1),
    };
    let mut p = vec![0; repr.buffer_len()];
    repr.emit(&mut ArpPacket::new_unchecked(&mut p[..]));
    let dst = if op == ArpOperation::Request { BROADCAST } else { target.0 };
    frame(dst, sender.0, EthernetProtocol::Arp, &p)
}

fn handle(b: &mut Bridge, from: Side, f: &[u8]) -> Vec<(Side, Vec<u8>)> {
    handle_partial(b, from, f, false)
}

fn handle_partial(b: &mut Bridge, from: Side, f: &[u8], csum_partial: bool) -> Vec<(Side, Vec<u8>)> {
    let mut out = Vec::new();
    b.handle_frame(Duration::from_millis(1), InFrame { from, data: f, csum_partial, gso_size: 0 }, &mut out);
    out
}

/// (side, dst MAC, src MAC, IP packet) of an emitted IP frame.
fn split(out: &(Side, Vec<u8>)) -> (Side, [u8; 6], [u8; 6], packet::Segment, Vec<u8>) {
    let f = EthernetFrame::new_checked(&out.1[..]).unwrap();
    let p = f.payload().to_vec();
    assert!(packet::checksum_ok(&p), "emitted with a good checksum");
    (out.0, f.dst_addr().0, f.src_addr().0, packet::parse(&p).unwrap(), p)
}

/// A UDP datagram over IPv4, checksums filled.
fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V4(a), IpAddr::V4(b)) = (src.ip(), dst.ip()) else { panic!("IPv4") };
    let u = UdpRepr { src_port: src.port(), dst_port: dst.port() };
    let ip = Ipv4Repr {
        src_addr: a,
        dst_addr: b,
        next_header: IpProtocol::Udp,
        payload_len: u.header_len() + payload.len(),
        hop_limit: 64,
    };
    let caps = ChecksumCapabilities::default();
    let mut buf = vec![0; 20 + ip.payload_len];
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]), &caps);
    u.emit(
        &mut UdpPacket::new_unchecked(&mut buf[20..]),
        &IpAddress::Ipv4(a),
        &IpAddress::Ipv4(b),
        payload.len(),
        |p| p.copy_from_slice(payload),
        &caps,
    );
    buf
}

/// Both hosts announce themselves (gratuitous ARP): the bridge learns where they are.
fn announce(b: &mut Bridge) {
    handle(b, Side::Client, &arp(ArpOperation::Request, (CLIENT_MAC, "10.0.0.1"), ([0; 6], "10.0.0.1")));
    handle(b, Side::Server, &arp(ArpOperation::Request, (SERVER_MAC, "10.0.0.2"), ([0; 6], "10.0.0.2")));
    handle(b, Side::Server, &arp(ArpOperation::Request, (MEMBER_MAC, "10.0.0.3"), ([0; 6], "10.0.0.3")));
}

#[test]
fn arp_crosses_both_ways_unchanged() {
    let mut b = bridge();
    let request = arp(ArpOperation::Request, (CLIENT_MAC, "10.0.0.1"), ([0; 6], "10.0.0.2"));
    assert_eq!(handle(&mut b, Side::Client, &request), vec![(Side::Server, request.clone())]);
    let reply = arp(ArpOperation::Reply, (SERVER_MAC, "10.0.0.2"), (CLIENT_MAC, "10.0.0.1"));
    assert_eq!(handle(&mut b, Side::Server, &reply), vec![(Side::Client, reply.clone())]);
    // LLDP and any other ethertype: across as they are.
    let lldp = frame([0x01, 0x80, 0xc2, 0, 0, 0x0e], SERVER_MAC, EthernetProtocol::Unknown(0x88cc), &[1; 40]);
    assert_eq!(handle(&mut b, Side::Server, &lldp), vec![(Side::Client, lldp.clone())]);
    assert_eq!(b.stats(), BridgeStats { non_ip_frames: 3, ..BridgeStats::default() });
    assert_eq!(b.engine().stats().passed, 0, "the engine saw none of it");
}

#[test]
fn arp_for_a_virtual_address_is_answered_by_the_bridge() {
    let mut b = bridge();
    let request = arp(ArpOperation::Request, (CLIENT_MAC, "10.0.0.1"), ([0; 6], "10.0.0.9"));
    let out = handle(&mut b, Side::Client, &request);
    assert_eq!(out.len(), 1, "answered, not forwarded");
    assert_eq!(out[0].0, Side::Client);
    let f = EthernetFrame::new_checked(&out[0].1[..]).unwrap();
    assert_eq!(
        (f.dst_addr().0, f.src_addr().0, f.ethertype()),
        (CLIENT_MAC, BRIDGE_MAC, EthernetProtocol::Arp)
    );
    let reply = ArpRepr::parse(&ArpPacket::new_checked(f.payload()).unwrap()).unwrap();
    assert_eq!(
        reply,
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: EthernetAddress(BRIDGE_MAC),
            source_protocol_addr: v4("10.0.0.9"),
            target_hardware_addr: EthernetAddress(CLIENT_MAC),
            target_protocol_addr: v4("10.0.0.1"),
        }
    );
    assert_eq!(b.stats().arp_answered, 1);
    // A gratuitous ARP for the address, and a request from the server side, pass.
    let gratuitous = arp(ArpOperation::Request, (CLIENT_MAC, "10.0.0.9"), ([0; 6], "10.0.0.9"));
    assert_eq!(handle(&mut b, Side::Client, &gratuitous), vec![(Side::Server, gratuitous.clone())]);
    let from_server = arp(ArpOperation::Request, (SERVER_MAC, "10.0.0.2"), ([0; 6], "10.0.0.9"));
    assert_eq!(handle(&mut b, Side::Server, &from_server), vec![(Side::Client, from_server.clone())]);
    // The direct service's address is a real host's: its ARP passes.
    let direct = arp(ArpOperation::Request, (CLIENT_MAC, "10.0.0.1"), ([0; 6], "10.0.0.2"));
    assert_eq!(handle(&mut b, Side::Client, &direct), vec![(Side::Server, direct.clone())]);
    assert_eq!(b.stats().arp_answered, 1);
}

/// An IPv6 packet carrying the neighbour discovery message `repr`, hop limit 255.
fn ndisc(src: Ipv6Address, dst: Ipv6Address, repr: NdiscRepr) -> Vec<u8> {
    let icmp = Icmpv6Repr::Ndisc(repr);
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 255,
    };
    let mut p = vec![0; 40 + icmp.buffer_len()];
    ip.emit(&mut Ipv6Packet::new_unchecked(&mut p[..]));
    icmp.emit(&src, &dst, &mut Icmpv6Packet::new_unchecked(&mut p[40..]), &ChecksumCapabilities::default());
    p
}

/// A balanced service's IPv6 virtual address is answered in neighbour discovery from the client
/// side, as its IPv4 one is in ARP: no host owns it, so without the answer no IPv6 client could
/// reach it. A solicited advertisement (solicited and override flags, the bridge's MAC as the
/// target's link-layer address) goes back to the soliciting host; a duplicate address detection
/// probe (from ::) is answered to all nodes, not marked solicited. Solicitations for other
/// addresses, or from the server side, cross as before. A member whose MAC is unknown is
/// probed as in ARP: a solicitation from :: (at most once a second), the advertisement learned.
#[test]
fn ipv6_virtual_address_answered_and_unknown_member_probed_in_neighbour_discovery() {
    let tls = configs(TLS13[0]).0;
    let engine = Engine::new(Config {
        services: vec![Service {
            addr: sa("[fd00::9]:443"),
            server_port: Some(80),
            mode: Mode::Balanced,
            release: Release::Buffered,
            tls,
            pool: vec![sa("[fd00::3]:80")],
        }],
        limits: Limits::default(),
    });
    let mut b = Bridge::new(engine, BRIDGE_MAC, 1500);
    let (client, vip): (Ipv6Address, Ipv6Address) = ("fd00::1".parse().unwrap(), "fd00::9".parse().unwrap());
    let solicited: Ipv6Address = "ff02::1:ff00:9".parse().unwrap();
    let ns = |src| {
        let lladdr = (src != Ipv6Address::UNSPECIFIED).then(|| RawHardwareAddress::from_bytes(&CLIENT_MAC));
        ndisc(src, solicited, NdiscRepr::NeighborSolicit { target_addr: vip, lladdr })
    };
    type Advert<'a> = (Side, [u8; 6], [u8; 6], Ipv6Address, Ipv6Address, u8, Icmpv6Repr<'a>);
    fn advert(out: &(Side, Vec<u8>)) -> Advert<'_> {
        let f = EthernetFrame::new_checked(&out.1[..]).unwrap();
        let ip = Ipv6Packet::new_checked(&out.1[ETHERNET_HEADER_LEN..]).unwrap();
        let icmp = Icmpv6Packet::new_checked(&out.1[ETHERNET_HEADER_LEN + 40..]).unwrap();
        let repr = Icmpv6Repr::parse(&ip.src_addr(), &ip.dst_addr(), &icmp, &ChecksumCapabilities::default())
            .expect("a valid ICMPv6 message, checksum included");
        (out.0, f.dst_addr().0, f.src_addr().0, ip.src_addr(), ip.dst_addr(), ip.hop_limit(), repr)
    }
    let out = handle(&mut b, Side::Client, &ip_frame([0x33, 0x33, 0xff, 0, 0, 9], CLIENT_MAC, &ns(client)));
    assert_eq!(out.len(), 1);
    let bridge_lladdr = Some(RawHardwareAddress::from_bytes(&BRIDGE_MAC));
    assert_eq!(
        advert(&out[0]),
        (
            Side::Client,
            CLIENT_MAC,
            BRIDGE_MAC,
            vip,
            client,
            255,
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                flags: NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE,
                target_addr: vip,
                lladdr: bridge_lladdr,
            })
        )
    );
    // Duplicate address detection: to all nodes, not solicited.
    let out = handle(
        &mut b,
        Side::Client,
        &ip_frame([0x33, 0x33, 0xff, 0, 0, 9], CLIENT_MAC, &ns(Ipv6Address::UNSPECIFIED)),
    );
    let (_, dst_mac, _, _, dst, _, repr) = advert(&out[0]);
    assert_eq!((dst_mac, dst), ([0x33, 0x33, 0, 0, 0, 1], "ff02::1".parse().unwrap()));
    assert_eq!(
        repr,
        Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags: NdiscNeighborFlags::OVERRIDE,
            target_addr: vip,
            lladdr: bridge_lladdr
        })
    );
    assert_eq!(b.stats().nd_answered, 2);

    // The member never spoke: a client's SYN to the virtual address is dropped and the member
    // probed with a solicitation from the unspecified address to its solicited-node group.
    let member: Ipv6Address = "fd00::3".parse().unwrap();
    let syn6 = packet::Build {
        src: sa("[fd00::1]:40000"),
        dst: sa("[fd00::9]:443"),
        seq: tlsgate_inline::seq::Seq(100),
        ack: None,
        control: packet::Control::None,
        window: 64240,
        payload: &[],
    }
    .emit_syn(1460, None)
    .unwrap();
    let first = ip_frame(BRIDGE_MAC, CLIENT_MAC, &syn6);
    let out = handle(&mut b, Side::Client, &first);
    assert_eq!((out.len(), b.stats().unroutable, b.stats().nd_probes), (1, 1, 1));
    let (side, dst_mac, src_mac, src, dst, hop, repr) = advert(&out[0]);
    assert_eq!(
        (side, dst_mac, src_mac, src, dst, hop),
        (
            Side::Server,
            [0x33, 0x33, 0xff, 0, 0, 3],
            BRIDGE_MAC,
            Ipv6Address::UNSPECIFIED,
            "ff02::1:ff00:3".parse().unwrap(),
            255
        )
    );
    assert_eq!(repr, Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr: member, lladdr: None }));
    // Not probed again within the second.
    assert!(handle(&mut b, Side::Client, &first).is_empty());
    assert_eq!(b.stats().nd_probes, 1);
    // The member defends its address to all nodes: its MAC is learned from the advertisement,
    // which crosses as any other, and the next SYN reaches the member.
    let na = ndisc(
        member,
        "ff02::1".parse().unwrap(),
        NdiscRepr::NeighborAdvert {
            flags: NdiscNeighborFlags::OVERRIDE,
            target_addr: member,
            lladdr: Some(RawHardwareAddress::from_bytes(&MEMBER_MAC)),
        },
    );
    let na = ip_frame([0x33, 0x33, 0, 0, 0, 1], MEMBER_MAC, &na);
    assert_eq!(handle(&mut b, Side::Server, &na), vec![(Side::Client, na.clone())]);
    let out = handle(&mut b, Side::Client, &first);
    let (side, dst, _, seg, _) = split(&out[0]);
    assert_eq!((side, dst, seg.dst), (Side::Server, MEMBER_MAC, sa("[fd00::3]:80")));
    // From the server side, the same solicitation crosses.
    let from_server = ip_frame([0x33, 0x33, 0xff, 0, 0, 9], MEMBER_MAC, &ns("fd00::3".parse().unwrap()));
    assert_eq!(handle(&mut b, Side::Server, &from_server), vec![(Side::Client, from_server.clone())]);
    assert_eq!(b.stats().nd_answered, 2);
}

#[test]
fn ipv6_neighbour_discovery_passes_unchanged() {
    let mut b = bridge();
    let (client, server): (Ipv6Address, Ipv6Address) =
        ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
    // Solicitation to the solicited-node multicast address, advertisement back unicast.
    let solicited: Ipv6Address = "ff02::1:ff00:2".parse().unwrap();
    let ns = ndisc(
        client,
        solicited,
        NdiscRepr::NeighborSolicit {
            target_addr: server,
            lladdr: Some(RawHardwareAddress::from_bytes(&CLIENT_MAC)),
        },
    );
    let ns = ip_frame([0x33, 0x33, 0xff, 0, 0, 2], CLIENT_MAC, &ns);
    assert_eq!(handle(&mut b, Side::Client, &ns), vec![(Side::Server, ns.clone())]);
    let na = ndisc(
        server,
        client,
        NdiscRepr::NeighborAdvert {
            flags: smoltcp::wire::NdiscNeighborFlags::SOLICITED,
            target_addr: server,
            lladdr: Some(RawHardwareAddress::from_bytes(&SERVER_MAC)),
        },
    );
    let na = ip_frame(CLIENT_MAC, SERVER_MAC, &na);
    assert_eq!(handle(&mut b, Side::Server, &na), vec![(Side::Client, na.clone())]);
    assert_eq!(b.engine().stats().passed, 2);
    assert_eq!(b.stats(), BridgeStats::default());
}

#[test]
fn engine_packets_carry_the_learned_macs() {
    let mut b = bridge();
    announce(&mut b);
    // Direct mode: the client's SYN, rewritten toward port 80, reaches the server's MAC.
    let out = handle(
        &mut b,
        Side::Client,
        &ip_frame(SERVER_MAC, CLIENT_MAC, &syn(sa(CLIENT), sa(SERVICE), 100, None)),
    );
    let (side, dst, src, seg, _) = split(&out[0]);
    assert_eq!((out.len(), side, dst, src, seg.dst), (1, Side::Server, SERVER_MAC, CLIENT_MAC, sa(BACKEND)));
    let out = handle(
        &mut b,
        Side::Server,
        &ip_frame(CLIENT_MAC, SERVER_MAC, &syn(sa(BACKEND), sa(CLIENT), 500, Some(101))),
    );
    let (side, dst, src, seg, _) = split(&out[0]);
    assert_eq!((out.len(), side, dst, src, seg.src), (1, Side::Client, CLIENT_MAC, SERVER_MAC, sa(SERVICE)));

    // Balanced mode: the client addresses the virtual address's MAC (the bridge's); the member
    // gets the SYN from the client's MAC, and the client the SYN-ACK from the bridge's.
    let client2 = sa("10.0.0.1:40001");
    let out =
        handle(&mut b, Side::Client, &ip_frame(BRIDGE_MAC, CLIENT_MAC, &syn(client2, sa(VIP), 100, None)));
    let (side, dst, src, seg, _) = split(&out[0]);
    assert_eq!((out.len(), side, dst, src, seg.dst), (1, Side::Server, MEMBER_MAC, CLIENT_MAC, sa(MEMBER)));
    let out = handle(
        &mut b,
        Side::Server,
        &ip_frame(CLIENT_MAC, MEMBER_MAC, &syn(sa(MEMBER), client2, 900, Some(101))),
    );
    let (side, dst, src, seg, _) = split(&out[0]);
    assert_eq!((out.len(), side, dst, src, seg.src), (1, Side::Client, CLIENT_MAC, BRIDGE_MAC, sa(VIP)));

    // The engine's own RST: server data on a flow it does not know goes nowhere but back, as a
    // reset to the server from the client's MAC.
    let orphan = data(sa(BACKEND), sa("10.0.0.1:40099"), 7, 555, b"plaintext reply");
    let out = handle(&mut b, Side::Server, &ip_frame(CLIENT_MAC, SERVER_MAC, &orphan));
    assert_eq!(out.len(), 1, "only the RST");
    let (side, dst, src, seg, _) = split(&out[0]);
    assert!(seg.rst && seg.payload.is_empty());
    assert_eq!(
        (side, dst, src, seg.src, seg.dst),
        (Side::Server, SERVER_MAC, CLIENT_MAC, sa("10.0.0.1:40099"), sa(BACKEND))
    );
    // ... for a client address never seen, from the MAC the server addressed it to.
    let stranger = sa("192.0.2.7:5000");
    let orphan = data(sa(BACKEND), stranger, 7, 555, b"plaintext reply");
    let router = [2, 0, 0, 0, 0, 0x7f];
    let out = handle(&mut b, Side::Server, &ip_frame(router, SERVER_MAC, &orphan));
    let (side, dst, src, seg, _) = split(&out[0]);
    assert!(seg.rst);
    assert_eq!((side, dst, src, seg.src), (Side::Server, SERVER_MAC, router, stranger));
    assert_eq!(b.engine().stats().orphan_server_data, 2);

    // A short frame's padding does not reach the engine: a bare ACK passes at its own length.
    let ack = data(sa("10.0.0.1:50000"), sa("10.0.0.2:22"), 1, 1, &[]);
    let mut padded = ip_frame(SERVER_MAC, CLIENT_MAC, &ack);
    padded.resize(60, 0);
    let out = handle(&mut b, Side::Client, &padded);
    assert_eq!(out, vec![(Side::Server, ip_frame(SERVER_MAC, CLIENT_MAC, &ack))]);
    // Between two servers, on their side: not sent back onto it.
    let between = udp(sa(BACKEND), sa("10.0.0.3:53"), b"query");
    assert!(handle(&mut b, Side::Server, &ip_frame(MEMBER_MAC, SERVER_MAC, &between)).is_empty());
    assert_eq!((b.stats().local, b.stats().unroutable), (1, 0));
}

#[test]
fn packets_without_a_known_mac_are_dropped_and_the_member_probed() {
    let mut b = bridge();
    // The member never spoke: the client's SYN to the virtual address has nowhere to go.
    let first = ip_frame(BRIDGE_MAC, CLIENT_MAC, &syn(sa(CLIENT), sa(VIP), 100, None));
    let out = handle(&mut b, Side::Client, &first);
    assert_eq!(b.stats().unroutable, 1);
    assert_eq!(out.len(), 1, "only the probe");
    assert_eq!(out[0].0, Side::Server);
    let f = EthernetFrame::new_checked(&out[0].1[..]).unwrap();
    assert_eq!((f.dst_addr().0, f.ethertype()), (BROADCAST, EthernetProtocol::Arp));
    let ArpRepr::EthernetIpv4 { operation, source_protocol_addr, target_protocol_addr, .. } =
        ArpRepr::parse(&ArpPacket::new_checked(f.payload()).unwrap()).unwrap()
    else {
        panic!("not Ethernet/IPv4 ARP")
    };
    assert_eq!(operation, ArpOperation::Request);
    assert_eq!((source_protocol_addr, target_protocol_addr), (Ipv4Addr::UNSPECIFIED, v4("10.0.0.3")));
    // The SYN again at once: dropped, not probed again within the second.
    assert!(handle(&mut b, Side::Client, &first).is_empty());
    assert_eq!((b.stats().unroutable, b.stats().arp_probes), (2, 1));
    // The member answers the probe (to the bridge's MAC): learned, not passed on.
    let answer = arp(ArpOperation::Reply, (MEMBER_MAC, "10.0.0.3"), (BRIDGE_MAC, "0.0.0.0"));
    assert!(handle(&mut b, Side::Server, &answer).is_empty());
    let out = handle(&mut b, Side::Client, &first);
    let (side, dst, _, seg, _) = split(&out[0]);
    assert_eq!((side, dst, seg.dst), (Side::Server, MEMBER_MAC, sa(MEMBER)));

    // A datagram to the virtual address itself (which no host has) is not sent to ourselves.
    let to_vip = udp(sa(CLIENT), sa("10.0.0.9:53"), b"query");
    assert!(handle(&mut b, Side::Client, &ip_frame(BRIDGE_MAC, CLIENT_MAC, &to_vip)).is_empty());
    assert_eq!(b.stats().unroutable, 3);
}

#[test]
fn frames_larger_than_the_mtu_are_dropped() {
    let mut b = bridge();
    announce(&mut b);
    let big = data(sa(CLIENT), sa("10.0.0.2:22"), 1, 1, &[7; 2960]);
    assert!(handle(&mut b, Side::Client, &ip_frame(SERVER_MAC, CLIENT_MAC, &big)).is_empty());
    let fits = data(sa(CLIENT), sa("10.0.0.2:22"), 1, 1, &[7; 1460]);
    assert_eq!(fits.len(), 1500);
    assert_eq!(handle(&mut b, Side::Client, &ip_frame(SERVER_MAC, CLIENT_MAC, &fits)).len(), 1);
    assert_eq!(b.stats().oversize, 1);
    assert_eq!(b.engine().stats().passed, 1, "the engine never saw the super-frame");
}

#[test]
fn a_gso_frame_the_engine_does_not_take_whole_passes_as_its_segments() {
    let mut b = bridge();
    announce(&mut b);
    // 2960 bytes to a port no service covers, as a sender's TSO leaves them: partial checksum.
    let mut big = data(sa(CLIENT), sa("10.0.0.2:22"), 1, 1, &[7; 2960]);
    leave_partial(&mut big, 16);
    let f = ip_frame(SERVER_MAC, CLIENT_MAC, &big);
    let mut out = Vec::new();
    b.handle_frame(
        Duration::from_millis(1),
        InFrame { from: Side::Client, data: &f, csum_partial: true, gso_size: 1460 },
        &mut out,
    );
    assert_eq!(out.len(), 3, "1460 + 1460 + 40");
    let mut joined = Vec::new();
    for (i, o) in out.iter().enumerate() {
        let (side, _, _, seg, p) = split(o);
        assert_eq!(side, Side::Server);
        assert!(p.len() <= 1500, "segment {i}: {} bytes", p.len());
        assert_eq!(seg.seq.0, 1 + 1460 * i as u32, "segment {i}");
        let t = TcpPacket::new_checked(&p[seg.tcp.clone()]).unwrap();
        assert!(t.verify_checksum(&IpAddress::v4(10, 0, 0, 1), &IpAddress::v4(10, 0, 0, 2)), "segment {i}");
        joined.extend_from_slice(&p[seg.payload.clone()]);
    }
    assert_eq!(joined, [7; 2960]);
    assert_eq!((b.stats().gso_cut, b.stats().gso_whole, b.stats().oversize), (1, 0, 0));
}

/// Puts the pseudo-header sum (folded, not complemented) where the checksum goes, as a stack
/// with checksum offload leaves it.
fn leave_partial(p: &mut [u8], field: usize) {
    let hl = ((p[0] & 0xf) * 4) as usize;
    let len = p.len() - hl;
    let mut sum: u32 = p[12..20].chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]) as u32).sum();
    sum += p[9] as u32 + len as u32;
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[hl + field..hl + field + 2].copy_from_slice(&(sum as u16).to_be_bytes());
}

#[test]
fn partial_checksums_are_completed() {
    let mut b = bridge();
    announce(&mut b);
    // TCP on a service flow and passed through, and UDP: the same frame as with the full sum.
    let tcp = data(sa(CLIENT), sa("10.0.0.2:22"), 1, 1, b"ssh bytes");
    let dgram = udp(sa(CLIENT), sa("10.0.0.2:53"), b"query");
    for (full, field) in [(tcp, 16), (dgram, 6)] {
        let mut partial = full.clone();
        leave_partial(&mut partial, field);
        assert_ne!(partial, full);
        let out = handle_partial(&mut b, Side::Client, &ip_frame(SERVER_MAC, CLIENT_MAC, &partial), true);
        let reference = handle(&mut b, Side::Client, &ip_frame(SERVER_MAC, CLIENT_MAC, &full));
        assert_eq!(out, reference);
        assert_eq!(&out[0].1[ETHERNET_HEADER_LEN..], &full[..]);
    }
    // The client's SYN to a service, partial: the engine gets it whole and clamps it.
    let mut s = syn(sa(CLIENT), sa(SERVICE), 100, None);
    leave_partial(&mut s, 16);
    let out = handle_partial(&mut b, Side::Client, &ip_frame(SERVER_MAC, CLIENT_MAC, &s), true);
    let (_, _, _, seg, p) = split(&out[0]);
    assert_eq!(seg.dst, sa(BACKEND));
    let t = TcpPacket::new_checked(&p[seg.tcp.clone()]).unwrap();
    assert!(t.verify_checksum(&IpAddress::v4(10, 0, 0, 1), &IpAddress::v4(10, 0, 0, 2)));
    assert_eq!(b.stats().csum_completed, 3);
}

#[test]
fn vlan_tagged_frames_cross_unchanged() {
    let mut b = bridge();
    // 802.1Q: TPID, TCI (VLAN 42), then the inner ethertype and an IPv4 SYN to a service.
    let mut tagged = vec![0x00, 42, 0x08, 0x00];
    tagged.extend(syn(sa(CLIENT), sa(SERVICE), 100, None));
    let f = frame(SERVER_MAC, CLIENT_MAC, EthernetProtocol::Unknown(0x8100), &tagged);
    assert_eq!(handle(&mut b, Side::Client, &f), vec![(Side::Server, f.clone())]);
    assert_eq!(b.stats().non_ip_frames, 1);
    assert_eq!(b.engine().flow_count(), 0, "the engine never saw it");
}

#[test]
fn learning_stays_bounded_under_a_flood_of_spoofed_sources() {
    let mut b = bridge();
    announce(&mut b);
    for i in 0..20_000u32 {
        let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i)), 1000);
        let mac = [2, 0xaa, (i >> 16) as u8, (i >> 8) as u8, i as u8, 0];
        let p = udp(src, sa("10.0.0.2:53"), b"q");
        assert_eq!(handle(&mut b, Side::Client, &ip_frame(SERVER_MAC, mac, &p)).len(), 1);
    }
    assert_eq!(b.learned(Side::Client), MAC_TABLE_SIZE);
    assert_eq!(b.learned(Side::Server), 2, "the other side untouched");
    // The servers still get their frames; a client that speaks again is learned again.
    let out = handle(
        &mut b,
        Side::Client,
        &ip_frame(SERVER_MAC, CLIENT_MAC, &syn(sa(CLIENT), sa(SERVICE), 100, None)),
    );
    let (side, dst, src, ..) = split(&out[0]);
    assert_eq!((side, dst, src), (Side::Server, SERVER_MAC, CLIENT_MAC));
    let out = handle(
        &mut b,
        Side::Server,
        &ip_frame(CLIENT_MAC, SERVER_MAC, &syn(sa(BACKEND), sa(CLIENT), 9, Some(101))),
    );
    let (side, dst, ..) = split(&out[0]);
    assert_eq!((side, dst), (Side::Client, CLIENT_MAC));
    assert_eq!(b.stats().unroutable, 0);
}

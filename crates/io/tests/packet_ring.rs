//! The AF_PACKET ring on real veth pairs inside namespaces this test makes (needs root): frames
//! cross intact and in order, the ring never sees its own frames, the interface is promiscuous
//! while the ring is open, sizes are enforced, host traffic shows its checksum state, and a run
//! of TCP segments sent as one GSO message arrives as the same frames (TSO off) or as one GSO
//! frame that says its segment size (TSO on).

use std::fs::File;
use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags};
use nix::sched::{setns, CloneFlags};
use tlsgate_io::inline::ring::{PacketRing, RingConfig};
use tlsgate_testkit::netns::Netns;

/// Small blocks, so a few hundred frames go round the ring more than once.
const SMALL: RingConfig = RingConfig { block_size: 1 << 16, block_count: 4, block_timeout_ms: 10 };
/// IEEE local experimental EtherType: nothing in the kernel answers it.
const EXPERIMENTAL: [u8; 2] = [0x88, 0xb5];
const OTHER_HOST: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x99];

/// Runs `f` on a thread that has entered `ns`: sockets it opens stay in that namespace.
fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let handle = File::open(format!("/run/netns/{}", ns.name)).expect("namespace handle");
            setns(handle.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("namespace thread")
    })
}

#[derive(Debug, PartialEq)]
struct Got {
    data: Vec<u8>,
    wire_len: usize,
    csum_partial: bool,
    gso_size: u16,
}

/// Takes what the ring has, without waiting.
fn drain(ring: &mut PacketRing, into: &mut Vec<Got>) {
    ring.recv(|f| {
        into.push(Got {
            data: f.data.to_vec(),
            wire_len: f.wire_len,
            csum_partial: f.csum_partial,
            gso_size: f.gso_size,
        })
    });
}

/// Waits (poll on the ring's fd, bounded) until `done` holds for what has arrived.
fn await_frames(ring: &mut PacketRing, into: &mut Vec<Got>, done: impl Fn(&[Got]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    drain(ring, into);
    while !done(into) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "frames still missing; got {} so far", into.len());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        poll(&mut [PollFd::new(ring.as_fd(), PollFlags::POLLIN)], ms).expect("poll");
        drain(ring, into);
    }
}

/// An Ethernet frame of `len` bytes (plus four with a tag) carrying `seq` and a pattern.
fn frame(dst: [u8; 6], src: [u8; 6], seq: u32, len: usize, tag: Option<u16>) -> Vec<u8> {
    let mut f = [dst, src].concat();
    if let Some(tci) = tag {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&EXPERIMENTAL);
    f.extend_from_slice(&seq.to_be_bytes());
    let body = len - 18;
    f.extend((0..body).map(|i| (i as u32).wrapping_mul(7).wrapping_add(seq) as u8));
    f
}

/// `ip -o link show dev IFACE` inside `ns`.
fn link_line(ns: &Netns, dev: &str) -> String {
    let out = ns.run("ip", &["-o", "-d", "link", "show", "dev", dev]);
    assert!(out.status.success(), "ip link show {dev}");
    String::from_utf8(out.stdout).unwrap()
}

/// The word after `key` in `ip link` output.
fn after<'a>(line: &'a str, key: &str) -> &'a str {
    let mut words = line.split_whitespace().skip_while(|w| *w != key);
    words.next().and_then(|_| words.next()).unwrap_or_else(|| panic!("{key} in {line}"))
}

#[test]
fn frames_cross_intact_in_order_and_the_sender_never_sees_its_own() {
    let ns = Netns::new("ring");
    let (a, b) = ns.quiet_veth(&ns);
    let (mut ra, mut rb) =
        in_netns(&ns, || (PacketRing::open(&a, &SMALL).unwrap(), PacketRing::open(&b, &SMALL).unwrap()));

    // Light load: one frame, handed over by the block timeout rather than a full block.
    let single = frame(rb.mac(), ra.mac(), 0, 60, None);
    ra.send(&single).unwrap();
    ra.flush().unwrap();
    let mut got = Vec::new();
    await_frames(&mut rb, &mut got, |g| !g.is_empty());
    assert_eq!(got, [Got { data: single.clone(), wire_len: 60, csum_partial: false, gso_size: 0 }]);

    // Many frames of every size, some to another host's MAC, some 802.1Q-tagged (the kernel
    // takes the tag out on receive; the ring puts it back).
    let mut sent = vec![single];
    for seq in 1..=1000u32 {
        let len = 60 + (seq as usize * 97) % 1455;
        let dst = if seq % 3 == 0 { OTHER_HOST } else { rb.mac() };
        let tag = (seq % 5 == 0).then_some(0x2000 | (seq as u16 % 4000));
        let f = frame(dst, ra.mac(), seq, len, tag);
        ra.send(&f).unwrap();
        sent.push(f);
        if seq % 40 == 0 {
            ra.flush().unwrap();
            drain(&mut rb, &mut got);
        }
    }
    ra.flush().unwrap();
    await_frames(&mut rb, &mut got, |g| g.len() >= sent.len());
    assert_eq!(got.len(), sent.len());
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert!(g.data == *s, "frame {i} differs: {} bytes, sent {}", g.data.len(), s.len());
        assert_eq!(g.wire_len, s.len(), "frame {i} wire length");
        assert!(!g.csum_partial, "frame {i}: a raw frame has no checksum offload");
    }
    let bytes: usize = sent.iter().map(Vec::len).sum();
    assert!(bytes > 2 * SMALL.block_size * SMALL.block_count, "the ring went round twice");
    let rx = rb.stats();
    assert_eq!((rx.rx_frames, rx.kernel_drops), (sent.len() as u64, 0));
    let tx = ra.stats();
    assert_eq!((tx.tx_frames, tx.tx_errors), (sent.len() as u64, 0));

    // The far side answers once; when that arrives, anything of ours the ring had taken would
    // have arrived before it (and with a ring this size, it would have overflowed). The kernel
    // never loops a packet socket's own frames back; what the host sends out of the interface
    // (PACKET_IGNORE_OUTGOING) is checked with host traffic below.
    let answer = frame(ra.mac(), rb.mac(), 9999, 100, None);
    rb.send(&answer).unwrap();
    rb.flush().unwrap();
    let mut back = Vec::new();
    await_frames(&mut ra, &mut back, |g| !g.is_empty());
    assert_eq!(back, [Got { data: answer, wire_len: 100, csum_partial: false, gso_size: 0 }]);
    let a_stats = ra.stats();
    assert_eq!((a_stats.rx_frames, a_stats.kernel_drops), (1, 0));
    drain(&mut rb, &mut got);
    assert_eq!(got.len(), sent.len(), "the answer does not come back to its sender");
}

#[test]
fn the_interface_is_promiscuous_while_the_ring_is_open() {
    let ns = Netns::new("ringpromisc");
    let (a, _b) = ns.quiet_veth(&ns);
    assert_eq!(after(&link_line(&ns, &a), "promiscuity"), "0");
    let ring = in_netns(&ns, || PacketRing::open(&a, &SMALL).unwrap());
    assert_eq!(after(&link_line(&ns, &a), "promiscuity"), "1");
    drop(ring);
    assert_eq!(after(&link_line(&ns, &a), "promiscuity"), "0");
}

#[test]
fn mtu_and_mac_match_ip_link_and_oversize_frames_are_refused() {
    let ns = Netns::new("ringmtu");
    let (a, b) = ns.quiet_veth(&ns);
    ns.must("ip", &["link", "set", "dev", &a, "mtu", "1400", "address", "02:54:47:00:00:01"]);
    let (mut ra, mut rb) =
        in_netns(&ns, || (PacketRing::open(&a, &SMALL).unwrap(), PacketRing::open(&b, &SMALL).unwrap()));
    let line = link_line(&ns, &a);
    assert_eq!(ra.mtu().to_string(), after(&line, "mtu"));
    let mac = ra.mac().map(|o| format!("{o:02x}")).join(":");
    assert_eq!(mac, after(&line, "link/ether"));
    assert_eq!(mac, "02:54:47:00:00:01");

    let dst = rb.mac();
    for refused in [
        frame(dst, ra.mac(), 1, 1415, None),
        frame(dst, ra.mac(), 2, 1415, Some(7)),
        frame(dst, ra.mac(), 3, 60, None)[..13].to_vec(),
    ] {
        let err = ra.send(&refused).expect_err("a frame that does not fit");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains(&a), "the error names the interface: {err}");
    }
    let largest = [frame(dst, ra.mac(), 4, 1414, None), frame(dst, ra.mac(), 5, 1414, Some(7))];
    for f in &largest {
        ra.send(f).unwrap();
    }
    ra.flush().unwrap();
    let mut got = Vec::new();
    await_frames(&mut rb, &mut got, |g| g.len() >= 2);
    assert_eq!(got.len(), 2);
    for (g, s) in got.iter().zip(&largest) {
        assert!(g.data == *s, "{} bytes arrived, {} sent", g.data.len(), s.len());
    }
    let stats = ra.stats();
    assert_eq!((stats.tx_frames, stats.tx_errors), (2, 3));
}

#[test]
fn an_unknown_interface_is_named_in_the_error() {
    let ns = Netns::new("ringnone");
    for name in ["tgnosuch0", "a-name-longer-than-ifnamsiz"] {
        let err = in_netns(&ns, || PacketRing::open(name, &SMALL)).expect_err("no such interface");
        assert!(err.to_string().contains(name), "{err}");
    }
    let err = in_netns(&ns, || PacketRing::open("tgnosuch0", &SMALL)).unwrap_err();
    assert!(err.to_string().contains("no such interface"), "{err}");
}

/// Two hosts exchange UDP; a ring on the receiving host's interface sees what arrives there
/// (the ARP request, the datagrams, with their checksum left to offload) and none of what that
/// host sends (its ARP reply, its answers).
#[test]
fn host_traffic_arrives_with_its_checksum_state_and_without_the_replies() {
    let (ns1, ns2) = (Netns::new("ringh1"), Netns::new("ringh2"));
    let (a, b) = ns1.quiet_veth(&ns2);
    ns1.must("ip", &["addr", "add", "10.211.0.1/24", "dev", &a]);
    ns2.must("ip", &["addr", "add", "10.211.0.2/24", "dev", &b]);
    let (mut rb, server) = in_netns(&ns2, || {
        (PacketRing::open(&b, &SMALL).unwrap(), UdpSocket::bind("10.211.0.2:7000").unwrap())
    });
    let client = in_netns(&ns1, || UdpSocket::bind("10.211.0.1:0").unwrap());
    for s in [&server, &client] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    for i in 0..3u8 {
        client.send_to(&[b'q', i], "10.211.0.2:7000").unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], [b'q', i]);
        server.send_to(&[b'a', i], from).unwrap();
        assert_eq!(client.recv(&mut buf).unwrap(), 2);
    }

    let udp_to_server = |g: &Got| {
        g.data.len() >= 42
            && g.data[12..14] == [0x08, 0x00]
            && g.data[23] == 17
            && g.data[36..38] == 7000u16.to_be_bytes()
    };
    let mut got = Vec::new();
    await_frames(&mut rb, &mut got, |g| g.iter().filter(|g| udp_to_server(g)).count() >= 3);
    let datagrams: Vec<&Got> = got.iter().filter(|g| udp_to_server(g)).collect();
    assert_eq!(datagrams.len(), 3);
    for (i, g) in datagrams.iter().enumerate() {
        assert_eq!(g.data[42..], [b'q', i as u8]);
        assert!(g.csum_partial, "the sender left the UDP checksum to offload");
    }
    let arp_request = |g: &&Got| g.data[12..14] == [0x08, 0x06] && g.data[20..22] == [0x00, 0x01];
    assert!(got.iter().any(|g| arp_request(&g)), "a's ARP request for b");
    let own_mac = rb.mac();
    assert!(
        got.iter().all(|g| g.data[6..12] != own_mac),
        "b's own frames (ARP reply, answers) are not received"
    );
}

/// An IPv4 TCP segment (flags ACK, DF, identification `id`) with valid checksums.
fn tcp_frame(dst: [u8; 6], src: [u8; 6], id: u16, seq: u32, payload: usize, dport: u16) -> Vec<u8> {
    let sum = |bytes: &[u8], mut acc: u32| {
        for w in bytes.chunks(2) {
            acc += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc
    };
    let mut f = [dst, src].concat();
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 212, 0, 2, 10, 212, 0, 1];
    ip[2..4].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    let check = !(sum(&ip, 0) as u16);
    ip[10..12].copy_from_slice(&check.to_be_bytes());
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&443u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&77u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x10;
    tcp[14..16].copy_from_slice(&1000u16.to_be_bytes());
    tcp.extend((0..payload).map(|i| (i as u32).wrapping_mul(13).wrapping_add(seq) as u8));
    let pseudo = sum(&ip[12..20], 6 + tcp.len() as u32);
    let check = !(sum(&tcp, pseudo) as u16);
    tcp[16..18].copy_from_slice(&check.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&tcp);
    f
}

/// A run of segments of one flow leaves as one GSO message. With TSO and checksum offload off
/// on the interface the kernel cuts it into exactly the frames queued (none above the MTU); with
/// them on, the veth carries it whole, and the receiving ring reads it as one GSO frame that
/// gives the segment size: the queued frames' payloads behind the first frame's headers.
#[test]
fn a_run_of_segments_leaves_as_one_message_and_arrives_as_the_same_frames() {
    let ns = Netns::new("ringgso");
    let (a, b) = ns.quiet_veth(&ns);
    // The receiver takes frames as they come (GRO would merge a run of segments again).
    ns.must("ethtool", &["-K", &b, "gro", "off"]);
    let mtu: usize = 1500;
    let mss = mtu - 40;
    let build = |dst, src| {
        let mut frames: Vec<Vec<u8>> = (0..20u16)
            .map(|i| tcp_frame(dst, src, i, 5000 + u32::from(i) * mss as u32, mss, 40000))
            .collect();
        frames.push(tcp_frame(dst, src, 20, 5000 + 20 * mss as u32, 300, 40000));
        frames.push(tcp_frame(dst, src, 0, 1, 100, 40001)); // another flow
        frames
    };
    for offloads_off in [true, false] {
        let state = if offloads_off { "off" } else { "on" };
        ns.must("ethtool", &["-K", &a, "tso", state, "tx", state]);
        let (mut ra, mut rb) =
            in_netns(&ns, || (PacketRing::open(&a, &SMALL).unwrap(), PacketRing::open(&b, &SMALL).unwrap()));
        let frames = build(rb.mac(), ra.mac());
        for f in &frames {
            ra.send(f).unwrap();
        }
        ra.flush().unwrap();
        let tx = ra.stats();
        assert_eq!(
            (tx.tx_frames, tx.tx_messages, tx.tx_errors),
            (frames.len() as u64, 2, 0),
            "offloads {state}"
        );
        let mut got = Vec::new();
        if offloads_off {
            await_frames(&mut rb, &mut got, |g| g.len() >= frames.len());
            assert_eq!(got.len(), frames.len());
            for (i, (g, s)) in got.iter().zip(&frames).enumerate() {
                assert!(g.data == *s, "frame {i} differs ({} bytes, sent {})", g.data.len(), s.len());
                assert!(!g.csum_partial, "frame {i} has its checksum finished");
                assert_eq!(g.gso_size, 0, "frame {i} is one segment");
            }
            continue;
        }
        await_frames(&mut rb, &mut got, |g| g.len() >= 2);
        assert_eq!(got.len(), 2, "the run whole, then the other flow's frame");
        let (run, single) = (&got[0], &got[1]);
        let head = 14 + 40;
        let payloads: Vec<u8> = frames[..21].iter().flat_map(|f| f[head..].to_vec()).collect();
        assert_eq!(usize::from(run.gso_size), mss, "the GSO frame gives its segment size");
        assert_eq!(run.data.len(), run.wire_len, "not cut short");
        assert_eq!(run.data[..14], frames[0][..14], "Ethernet header");
        assert_eq!(&run.data[head..], &payloads[..], "every payload, in order");
        let ip_len = u16::from_be_bytes([run.data[16], run.data[17]]);
        assert_eq!(usize::from(ip_len), 40 + payloads.len(), "the IP length covers the run");
        assert_eq!(single.data, frames[21]);
        assert_eq!(single.gso_size, 0);
    }
}

//! The engine skeleton on hand-built packets: pass-through, SYN handling, port rewrite, bounds,
//! timers.

use rustls::pki_types::PrivateKeyDer;
use rustls::ServerConfig;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr,
    TcpSeqNumber,
};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tlsgate_inline::engine::{Config, Engine, Limits, Service};
use tlsgate_inline::packet::{self, checksum_ok};
use tlsgate_inline::proxy::ProxyLimits;
use tlsgate_inline::seq::Seq;
use tlsgate_inline::tables::{FlowKey, FlowState, Mode, Release};
use tlsgate_inline::timers::SWEEP_EVERY;

fn server_config() -> Arc<ServerConfig> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let mut c = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    c.enable_secret_extraction = true;
    Arc::new(c)
}

const V4_SERVICE: &str = "10.0.0.2:443";
const V6_SERVICE: &str = "[fd00::2]:443";

fn engine(max_flows: usize) -> Engine {
    engine_idle_out(max_flows, Duration::from_secs(60))
}

fn engine_idle_out(max_flows: usize, idle_timeout: Duration) -> Engine {
    let tls = server_config();
    let service = |addr: &str, server_port| Service {
        addr: addr.parse().unwrap(),
        server_port,
        mode: Mode::Direct,
        release: Release::Buffered,
        tls: tls.clone(),
        pool: Vec::new(),
    };
    Engine::new(Config {
        services: vec![service(V4_SERVICE, Some(80)), service(V6_SERVICE, None)],
        limits: Limits {
            max_flows,
            syn_timeout: Duration::from_secs(5),
            idle_timeout,
            // These tests are about the end-to-end table alone (tests/proxy_engine.rs: the
            // full-proxy fallback taking flows beyond it).
            proxy: ProxyLimits { max_flows: 0, ..ProxyLimits::default() },
            ..Limits::default()
        },
    })
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn repr(
    src: SocketAddr,
    dst: SocketAddr,
    control: TcpControl,
    seq: u32,
    ack: Option<u32>,
) -> TcpRepr<'static> {
    TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 64240,
        window_scale: Some(7),
        max_seg_size: (control == TcpControl::Syn).then_some(1460),
        sack_permitted: control == TcpControl::Syn,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    }
}

/// An IPv4 or IPv6 packet carrying `tcp`, checksums filled.
fn build(src: SocketAddr, dst: SocketAddr, tcp: &TcpRepr) -> Vec<u8> {
    let caps = ChecksumCapabilities::default();
    let (s, d) = (IpAddress::from(src.ip()), IpAddress::from(dst.ip()));
    let tlen = tcp.buffer_len();
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let ip = Ipv4Repr {
                src_addr: a,
                dst_addr: b,
                next_header: IpProtocol::Tcp,
                payload_len: tlen,
                hop_limit: 64,
            };
            let mut buf = vec![0; ip.buffer_len() + tlen];
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]), &caps);
            tcp.emit(&mut TcpPacket::new_unchecked(&mut buf[20..]), &s, &d, &caps);
            buf
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let ip = Ipv6Repr {
                src_addr: a,
                dst_addr: b,
                next_header: IpProtocol::Tcp,
                payload_len: tlen,
                hop_limit: 64,
            };
            let mut buf = vec![0; ip.buffer_len() + tlen];
            ip.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]));
            tcp.emit(&mut TcpPacket::new_unchecked(&mut buf[40..]), &s, &d, &caps);
            buf
        }
        _ => panic!("mixed families"),
    }
}

fn handle(e: &mut Engine, now: u64, pkt: Vec<u8>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    e.handle_packet(Duration::from_millis(now), pkt, &mut out);
    out
}

/// The TCP options of an emitted packet, parsed back.
fn tcp_of(pkt: &[u8]) -> TcpRepr<'_> {
    let seg = packet::parse(pkt).unwrap();
    let t = TcpPacket::new_checked(&pkt[seg.tcp.clone()]).unwrap();
    TcpRepr::parse(&t, &seg.src.ip().into(), &seg.dst.ip().into(), &ChecksumCapabilities::default()).unwrap()
}

#[test]
fn non_service_and_non_tcp_traffic_passes_byte_identical() {
    let mut e = engine(16);
    let samples = vec![
        // TCP to another port and another host, a SYN included.
        build(
            sa("10.0.0.1:40000"),
            sa("10.0.0.2:22"),
            &repr(sa("10.0.0.1:40000"), sa("10.0.0.2:22"), TcpControl::Syn, 7, None),
        ),
        build(
            sa("10.0.0.1:40000"),
            sa("10.0.0.9:443"),
            &repr(sa("10.0.0.1:40000"), sa("10.0.0.9:443"), TcpControl::Syn, 7, None),
        ),
        build(
            sa("[fd00::1]:5"),
            sa("[fd00::3]:443"),
            &repr(sa("[fd00::1]:5"), sa("[fd00::3]:443"), TcpControl::None, 1, Some(2)),
        ),
        // Not TCP, not IP, truncated.
        vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0, 53, 0, 53, 0, 8, 0, 0],
        b"not a packet".to_vec(),
        vec![],
        vec![0x60, 0, 0],
    ];
    for p in samples {
        assert_eq!(handle(&mut e, 0, p.clone()), vec![p]);
    }
    assert_eq!(e.flow_count(), 0);
    assert_eq!(e.stats().passed, 7);
}

#[test]
fn service_segment_without_a_syn_passes_unchanged() {
    let mut e = engine(16);
    let (c, s) = (sa("10.0.0.1:40000"), sa(V4_SERVICE));
    let p = build(c, s, &repr(c, s, TcpControl::None, 100, Some(200)));
    assert_eq!(handle(&mut e, 0, p.clone()), vec![p]);
    assert_eq!(e.stats().midstream, 1);
    assert_eq!(e.flow_count(), 0);
}

/// Plaintext from a service's server on a flow the engine does not know (reset, expired, begun
/// before it) never goes toward the client: dropped, and the server's connection reset.
#[test]
fn server_data_without_a_flow_is_dropped_and_the_server_reset() {
    let mut e = engine(16);
    for (server, client) in
        [(sa("10.0.0.2:80"), sa("10.0.0.1:40000")), (sa(V6_SERVICE), sa("[fd00::1]:40000"))]
    {
        let mut data = repr(server, client, TcpControl::Psh, 1000, Some(555));
        data.payload = b"GET-reply in the clear";
        let out = handle(&mut e, 0, build(server, client, &data));
        assert_eq!(out.len(), 1, "only the RST");
        let seg = packet::parse(&out[0]).unwrap();
        assert_eq!((seg.src, seg.dst, seg.rst, seg.seq.0), (client, server, true, 555));
        assert!(seg.payload.is_empty());
        // Without data nothing leaks: an empty ACK passes as before.
        let ack = build(server, client, &repr(server, client, TcpControl::None, 1022, Some(555)));
        assert_eq!(handle(&mut e, 0, ack.clone()), vec![ack]);
    }
    assert_eq!(e.stats().orphan_server_data, 2);
    // Data from a port that is no service's server passes.
    let (other, client) = (sa("10.0.0.2:22"), sa("10.0.0.1:40000"));
    let mut data = repr(other, client, TcpControl::Psh, 1, Some(2));
    data.payload = b"ssh";
    let p = build(other, client, &data);
    assert_eq!(handle(&mut e, 0, p.clone()), vec![p]);
    assert_eq!(e.flow_count(), 0);
}

#[test]
fn client_syn_is_clamped_keeps_sack_and_the_port_is_rewritten_both_ways() {
    let mut e = engine(16);
    let (c, s) = (sa("10.0.0.1:40000"), sa(V4_SERVICE));
    let out = handle(&mut e, 1, build(c, s, &repr(c, s, TcpControl::Syn, u32::MAX - 3, None)));
    assert_eq!(out.len(), 1);
    assert!(checksum_ok(&out[0]));
    let t = tcp_of(&out[0]);
    assert_eq!(t.max_seg_size, Some(1460 - 29));
    assert!(t.sack_permitted, "SACK-permitted goes on to the server");
    assert_eq!(t.window_scale, Some(7), "other options untouched");
    assert_eq!(t.dst_port, 80);
    assert_eq!(t.seq_number, TcpSeqNumber((u32::MAX - 3) as i32));

    let report = e.report();
    let key = FlowKey { client: c, server: s };
    let row = report.connection(&key).unwrap();
    assert_eq!(row.state, FlowState::SynSent);
    assert_eq!(row.backend, sa("10.0.0.2:80"));

    // The server answers from port 80; the client sees 443.
    let backend = sa("10.0.0.2:80");
    let out =
        handle(&mut e, 2, build(backend, c, &repr(backend, c, TcpControl::Syn, 5000, Some(u32::MAX - 2))));
    assert_eq!(out.len(), 1);
    assert!(checksum_ok(&out[0]));
    assert_eq!(tcp_of(&out[0]).src_port, 443);
    assert_eq!(e.report().connection(&key).unwrap().state, FlowState::Handshake);

    // The client's RST ends the flow (and is forwarded).
    let out = handle(&mut e, 3, build(c, s, &repr(c, s, TcpControl::Rst, u32::MAX - 2, None)));
    assert_eq!(tcp_of(&out[0]).dst_port, 80);
    assert_eq!(e.flow_count(), 0);
    assert_eq!(e.stats().flows_reset, 1);
}

#[test]
fn ipv6_syn_is_clamped_without_rewrite() {
    let mut e = engine(16);
    let (c, s) = (sa("[fd00::1]:50000"), sa(V6_SERVICE));
    let out = handle(&mut e, 0, build(c, s, &repr(c, s, TcpControl::Syn, 1, None)));
    assert!(checksum_ok(&out[0]));
    let t = tcp_of(&out[0]);
    assert_eq!((t.max_seg_size, t.dst_port, t.sack_permitted), (Some(1431), 443, true));
    let seg = packet::parse(&out[0]).unwrap();
    assert_eq!(seg.seq, Seq(1));
    assert_eq!(e.flow_count(), 1);
}

#[test]
fn syn_flood_stays_within_the_flow_table_bound_and_half_open_flows_expire() {
    let mut e = engine(100);
    let s = sa(V4_SERVICE);
    let mut forwarded = 0;
    for i in 0..5000u32 {
        let c = SocketAddr::new([10, 1, (i >> 8) as u8, i as u8].into(), 1024 + (i % 60000) as u16);
        forwarded += handle(&mut e, i as u64, build(c, s, &repr(c, s, TcpControl::Syn, i, None))).len();
        assert!(e.flow_count() <= 100);
    }
    // Each SYN beyond the bound displaced the oldest half-open flow.
    assert_eq!(forwarded, 5000);
    assert_eq!((e.stats().embryonic_evicted, e.stats().syn_dropped), (4900, 0));
    assert!(e.report().state_bytes() <= 100 * e.report().peak_flow_state());
    // The oldest half-open flow left (SYN at 4900 ms) expires 5 s after its SYN, the timers run
    // as the driver runs them; the others within one sweep interval of theirs.
    assert_eq!(run_timers_while(&mut e, |e| e.flow_count() == 100), Duration::from_millis(9900));
    assert_eq!(e.flow_count(), 99);
    e.handle_timeout(Duration::from_millis(9900) + SWEEP_EVERY, &mut Vec::new());
    assert_eq!(e.flow_count(), 0, "SYNs at 4900..=5000 ms expired");
    assert_eq!(e.poll_timeout(), None);
    assert!(e.expiry_sweeps() <= 3, "{} sweeps of the table", e.expiry_sweeps());
}

/// Runs the engine's timers as the driver does, each at the instant `poll_timeout` names, while
/// `going` holds; returns the instant of the last run.
fn run_timers_while(e: &mut Engine, going: impl Fn(&Engine) -> bool) -> Duration {
    let mut t = Duration::ZERO;
    for _ in 0..1000 {
        if !going(e) {
            return t;
        }
        t = e.poll_timeout().expect("a flow left has a deadline");
        e.handle_timeout(t, &mut Vec::new());
    }
    panic!("still going after 1000 timer runs, at {t:?}");
}

#[test]
fn a_syn_flood_does_not_displace_flows_past_their_syn() {
    let mut e = engine(3);
    let s = sa(V4_SERVICE);
    let backend = sa("10.0.0.2:80");
    // Two flows get their SYN-ACK; one stays half-open.
    for (i, c) in ["10.0.0.1:1000", "10.0.0.1:1001", "10.0.0.1:1002"].map(sa).into_iter().enumerate() {
        handle(&mut e, i as u64, build(c, s, &repr(c, s, TcpControl::Syn, 1, None)));
        if i < 2 {
            handle(&mut e, 10, build(backend, c, &repr(backend, c, TcpControl::Syn, 9, Some(2))));
        }
    }
    let flood = sa("10.6.6.6:6666");
    // The half-open flow makes room once; then the table holds only flows past their SYN,
    // except the flood's own latest, which the next flood SYN displaces.
    for i in 0..10u32 {
        let c = SocketAddr::new(flood.ip(), 6000 + i as u16);
        handle(&mut e, 100 + i as u64, build(c, s, &repr(c, s, TcpControl::Syn, i, None)));
    }
    assert_eq!(e.flow_count(), 3);
    assert_eq!((e.stats().embryonic_evicted, e.stats().syn_dropped), (10, 0));
    let states: Vec<FlowState> = e.report().connections.iter().map(|r| r.state).collect();
    assert_eq!(states.iter().filter(|s| **s != FlowState::SynSent).count(), 2, "{states:?}");
    // With every entry past its SYN, a new SYN is dropped.
    let c = sa("10.0.0.1:1003");
    handle(
        &mut e,
        200,
        build(
            backend,
            sa("10.6.6.6:6009"),
            &repr(backend, sa("10.6.6.6:6009"), TcpControl::Syn, 9, Some(10)),
        ),
    );
    assert_eq!(handle(&mut e, 201, build(c, s, &repr(c, s, TcpControl::Syn, 1, None))).len(), 0);
    assert_eq!(e.stats().syn_dropped, 1);
}

#[test]
fn established_flows_idle_out_later_than_half_open_ones() {
    let mut e = engine(4);
    let (c, s, b) = (sa("10.0.0.1:40000"), sa(V4_SERVICE), sa("10.0.0.2:80"));
    handle(&mut e, 0, build(c, s, &repr(c, s, TcpControl::Syn, 1, None)));
    handle(&mut e, 10, build(b, c, &repr(b, c, TcpControl::Syn, 9, Some(2))));
    e.handle_timeout(Duration::from_secs(30), &mut Vec::new());
    assert_eq!(e.flow_count(), 1);
    assert_eq!(run_timers_while(&mut e, |e| e.flow_count() > 0), Duration::from_millis(60_010));
    assert_eq!(e.stats().flows_expired, 1);
}

fn balanced(pool: &[SocketAddr], vip: SocketAddr) -> Engine {
    Engine::new(Config {
        services: vec![Service {
            addr: vip,
            server_port: None,
            mode: Mode::Balanced,
            release: Release::Buffered,
            tls: server_config(),
            pool: pool.to_vec(),
        }],
        limits: Limits { syn_timeout: Duration::from_secs(5), ..Limits::default() },
    })
}

#[test]
fn a_member_that_refuses_or_ignores_connections_is_skipped_for_a_while() {
    let pool = [sa("10.0.1.1:80"), sa("10.0.1.2:80")];
    let vip = sa("10.0.0.100:443");
    let mut e = balanced(&pool, vip);
    let c = sa("10.2.0.7:40000");
    let syn = |e: &mut Engine, ms: u64, port: u16| {
        let c = SocketAddr::new(c.ip(), port);
        packet::parse(&handle(e, ms, build(c, vip, &repr(c, vip, TcpControl::Syn, 1, None)))[0]).unwrap().dst
    };
    let first = syn(&mut e, 0, 40000);
    let other = pool.into_iter().find(|m| *m != first).unwrap();
    // The member refuses twice (RST to the SYN, as a host with no listener does).
    for (ms, port) in [(1, 40000), (3, 40001)] {
        if port != 40000 {
            assert_eq!(syn(&mut e, ms - 1, port), first, "one refusal is not enough");
        }
        let client = SocketAddr::new(c.ip(), port);
        let rst = repr(first, client, TcpControl::Rst, 0, Some(2));
        handle(&mut e, ms, build(first, client, &rst));
    }
    assert_eq!((e.stats().member_failures, e.stats().members_taken_out), (2, 1));
    assert_eq!(e.members_down(Duration::from_millis(4)), vec![first]);
    // New flows of the same client go to the other member while the first is out.
    let moved = syn(&mut e, 5, 40002);
    assert_eq!(moved, other);
    // The other member answers; it stays in.
    let client = SocketAddr::new(c.ip(), 40002);
    handle(&mut e, 6, build(other, client, &repr(other, client, TcpControl::Syn, 9, Some(2))));
    // After the pause the first member is tried again; unanswered SYNs count as failures too.
    let later = 6 + tlsgate_inline::health::PARAMS.eject_time.as_millis() as u64;
    assert!(e.members_down(Duration::from_millis(later)).is_empty());
    assert_eq!(syn(&mut e, later, 40003), first);
    assert_eq!(syn(&mut e, later, 40004), first);
    e.handle_timeout(Duration::from_millis(later + 5001), &mut Vec::new());
    assert_eq!(e.stats().members_taken_out, 2, "two SYNs left unanswered past the SYN timeout");
    assert_eq!(syn(&mut e, later + 5002, 40005), other);
}

#[test]
fn balanced_mode_rewrites_addresses_per_flow_and_sticks_to_a_member() {
    let pool = vec![sa("10.0.1.1:80"), sa("10.0.1.2:80"), sa("10.0.1.3:8080")];
    let vip = sa("10.0.0.100:443");
    let mut e = balanced(&pool, vip);
    let mut used = std::collections::HashSet::new();
    for i in 0..60u16 {
        let c = SocketAddr::new([10, 2, 0, i as u8].into(), 30000 + i);
        let out = handle(&mut e, i as u64, build(c, vip, &repr(c, vip, TcpControl::Syn, 1, None)));
        assert!(checksum_ok(&out[0]), "IP and TCP checksums after the address rewrite");
        let seg = packet::parse(&out[0]).unwrap();
        assert!(pool.contains(&seg.dst));
        assert_eq!(seg.src, c, "the server sees the client's own address");
        used.insert(seg.dst);
        // The SYN again (retransmitted) goes to the same member; so does a new flow from the
        // same client address.
        let again = handle(&mut e, i as u64, build(c, vip, &repr(c, vip, TcpControl::Syn, 1, None)));
        assert_eq!(packet::parse(&again[0]).unwrap().dst, seg.dst);
        let c2 = SocketAddr::new(c.ip(), c.port() + 1000);
        let other = handle(&mut e, i as u64, build(c2, vip, &repr(c2, vip, TcpControl::Syn, 1, None)));
        assert_eq!(packet::parse(&other[0]).unwrap().dst, seg.dst, "sticky per client address");
        // The member's SYN-ACK reaches the client from the virtual address.
        let m = seg.dst;
        let back = handle(&mut e, i as u64, build(m, c, &repr(m, c, TcpControl::Syn, 9, Some(2))));
        assert!(checksum_ok(&back[0]));
        let b = packet::parse(&back[0]).unwrap();
        assert_eq!((b.src, b.dst), (vip, c));
    }
    assert_eq!(used.len(), 3, "flows spread over the pool");
}

/// A non-TLS flow from `c` to service `s` (server `b`) at times 0-2: the client's ISN 1, the
/// server's 9, then four plain bytes from the client.
fn plain_flow(e: &mut Engine, c: SocketAddr, s: SocketAddr, b: SocketAddr) {
    handle(e, 0, build(c, s, &repr(c, s, TcpControl::Syn, 1, None)));
    handle(e, 1, build(b, c, &repr(b, c, TcpControl::Syn, 9, Some(2))));
    let mut hello = repr(c, s, TcpControl::Psh, 2, Some(10));
    hello.payload = b"PING";
    handle(e, 2, build(c, s, &hello));
}

#[test]
fn closing_flows_expire_sooner_than_idle_ones() {
    let mut e = engine_idle_out(4, Duration::from_secs(300));
    let (c, s, b) = (sa("10.0.0.1:40000"), sa(V4_SERVICE), sa("10.0.0.2:80"));
    // A non-TLS flow (plain bytes first), then the client's FIN.
    plain_flow(&mut e, c, s, b);
    handle(&mut e, 3, build(c, s, &repr(c, s, TcpControl::Fin, 6, Some(10))));
    assert_eq!(e.report().connections[0].state, FlowState::Closing);
    let closing = Duration::from_millis(3) + Limits::default().closing_timeout;
    assert!(Limits::default().closing_timeout < Duration::from_secs(300));
    assert_eq!(run_timers_while(&mut e, |e| e.flow_count() > 0), closing);
}

/// A client that reuses its address and port once a connection ended (its side closed
/// passively, with no TIME-WAIT to keep the port) starts a new flow: the old one, still in the
/// table while closing, is dropped for it (`flows_replaced`), and the new SYN is a new flow's,
/// the server's SYN-ACK its handshake's start. Its own SYN again, or a SYN into a flow still
/// running, replaces nothing.
#[test]
fn a_new_syn_on_an_ended_flows_port_starts_a_new_flow() {
    let mut e = engine(4);
    let (c, s, b) = (sa("10.0.0.1:40000"), sa(V4_SERVICE), sa("10.0.0.2:80"));
    plain_flow(&mut e, c, s, b);
    // A SYN into the running flow (another ISN): passed on, nothing replaced.
    handle(&mut e, 3, build(c, s, &repr(c, s, TcpControl::Syn, 777, None)));
    assert_eq!((e.stats().flows_replaced, e.report().connections[0].state), (0, FlowState::PassThrough));
    // The server closes first; the client's own SYN again replaces nothing either.
    handle(&mut e, 4, build(b, c, &repr(b, c, TcpControl::Fin, 10, Some(6))));
    assert_eq!(e.report().connections[0].state, FlowState::Closing);
    handle(&mut e, 5, build(c, s, &repr(c, s, TcpControl::Syn, 1, None)));
    assert_eq!(e.stats().flows_replaced, 0);
    // A new connection from the same port: a new flow, the server's SYN-ACK its handshake's.
    let out = handle(&mut e, 6, build(c, s, &repr(c, s, TcpControl::Syn, 5000, None)));
    assert_eq!(out.len(), 1, "the SYN goes on to the server");
    assert_eq!((e.stats().flows_replaced, e.stats().flows_created), (1, 2));
    assert_eq!(e.report().connections[0].state, FlowState::SynSent);
    handle(&mut e, 7, build(b, c, &repr(b, c, TcpControl::Syn, 20000, Some(5001))));
    assert_eq!(e.report().connections[0].state, FlowState::Handshake, "the TLS path runs for it");
}

/// New certificates are taken for the same services; any other difference is refused and
/// changes nothing.
#[test]
fn reload_takes_new_certificates_and_refuses_other_changes() {
    let mut e = engine(16);
    let before: Vec<Service> = e.services().to_vec();
    let fresh = server_config();
    let mut next = before.clone();
    for s in &mut next {
        s.tls = fresh.clone();
    }
    next.reverse(); // matched by address, not by position
    let mut refused = Vec::new();
    let mut changed = |f: &dyn Fn(&mut Vec<Service>)| {
        let mut n = next.clone();
        f(&mut n);
        refused.push(e.reload_tls(&n).unwrap_err());
        assert!(
            e.services().iter().zip(&before).all(|(a, b)| Arc::ptr_eq(&a.tls, &b.tls)),
            "nothing changed"
        );
    };
    changed(&|n| n[0].addr = sa("10.0.0.5:443"));
    changed(&|n| {
        n.pop();
    });
    changed(&|n| n[1].server_port = Some(8080));
    changed(&|n| n[1].mode = Mode::Balanced);
    changed(&|n| n[1].pool = vec![sa("10.0.0.3:80")]);
    changed(&|n| n[1].release = Release::CutThrough);
    changed(&|n| n[1] = n[0].clone());
    let mut no_secrets = (*server_config()).clone();
    no_secrets.enable_secret_extraction = false;
    changed(&|n| n[0].tls = Arc::new(no_secrets.clone()));
    for (r, word) in refused.iter().zip([
        "not running",
        "restart",
        "server port",
        "mode",
        "pool",
        "release",
        "twice",
        "secret",
    ]) {
        assert!(r.contains(word), "{r:?} should say {word:?}");
    }
    assert!(refused[..7].iter().all(|r| r.starts_with("config: ")), "{refused:?}");
    e.reload_tls(&next).unwrap();
    assert!(e.services().iter().all(|s| Arc::ptr_eq(&s.tls, &fresh)));
    assert_eq!(
        e.services().iter().map(|s| s.addr).collect::<Vec<_>>(),
        before.iter().map(|s| s.addr).collect::<Vec<_>>()
    );
}

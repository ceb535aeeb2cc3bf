//! The full-proxy fallback inside the engine on hand-built packets: which SYNs switch (a window
//! below the floor, a full end-to-end table) and what each side then gets (the proxy answers the
//! client as the service and connects to the server from the client's own address and port),
//! the proxy's own limit, and failures on either side ending the flow.

use rustls::pki_types::PrivateKeyDer;
use rustls::ServerConfig;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tlsgate_inline::engine::{Config, Engine, Limits, Service};
use tlsgate_inline::packet::{self, checksum_ok};
use tlsgate_inline::proxy::{ProxyEvent, ProxyLimits};
use tlsgate_inline::tables::{FlowPath, FlowState, Mode, Release, SwitchReason};

const SERVICE: &str = "10.0.0.2:443";
const BACKEND: &str = "10.0.0.2:80";

fn engine(max_flows: usize, proxy_flows: usize) -> Engine {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let mut tls = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    tls.enable_secret_extraction = true;
    Engine::new(Config {
        services: vec![Service {
            addr: sa(SERVICE),
            server_port: Some(80),
            mode: Mode::Direct,
            release: Release::Buffered,
            tls: Arc::new(tls),
            pool: Vec::new(),
        }],
        limits: Limits {
            max_flows,
            proxy: ProxyLimits { max_flows: proxy_flows, window_floor: 536, mtu: 1500 },
            ..Limits::default()
        },
    })
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn segment(
    src: SocketAddr,
    dst: SocketAddr,
    control: TcpControl,
    seq: u32,
    ack: Option<u32>,
    window: u16,
    payload: &[u8],
) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: window,
        window_scale: None,
        max_seg_size: (control == TcpControl::Syn).then_some(1460),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload,
    };
    let caps = ChecksumCapabilities::default();
    let (IpAddr::V4(a), IpAddr::V4(b)) = (src.ip(), dst.ip()) else { panic!("IPv4 only here") };
    let ip = Ipv4Repr {
        src_addr: a,
        dst_addr: b,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let mut buf = vec![0; ip.buffer_len() + tcp.buffer_len()];
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]), &caps);
    let (s, d) = (IpAddress::from(src.ip()), IpAddress::from(dst.ip()));
    tcp.emit(&mut TcpPacket::new_unchecked(&mut buf[20..]), &s, &d, &caps);
    buf
}

fn handle(e: &mut Engine, ms: u64, pkt: Vec<u8>) -> Vec<packet::Segment> {
    let mut out = Vec::new();
    e.handle_packet(Duration::from_millis(ms), pkt, &mut out);
    out.iter()
        .map(|p| {
            assert!(checksum_ok(p), "a packet with a bad checksum");
            packet::parse(p).unwrap()
        })
        .collect()
}

/// A client SYN with `window`, answered by the proxy: the client's SYN-ACK and the proxy's own
/// SYN to the server. Returns (the SYN-ACK's seq, the server-side SYN's seq).
fn switched_syn(e: &mut Engine, client: SocketAddr, window: u16) -> (u32, u32) {
    let out = handle(e, 0, segment(client, sa(SERVICE), TcpControl::Syn, 1000, None, window, &[]));
    let synack = out.iter().find(|s| s.dst == client).expect("the proxy answers the client");
    assert!(synack.syn && synack.ack.map(|a| a.0) == Some(1001));
    assert_eq!(synack.src, sa(SERVICE), "answered as the service");
    let syn = out.iter().find(|s| s.dst == sa(BACKEND)).expect("a SYN to the server");
    assert!(syn.syn && syn.ack.is_none());
    assert_eq!(syn.src, client, "from the client's own address and port");
    assert_eq!(out.len(), 2, "the client's SYN itself is not forwarded");
    (synack.seq.0, syn.seq.0)
}

#[test]
fn a_syn_below_the_window_floor_goes_to_the_full_proxy() {
    let mut e = engine(16, 4);
    let client = sa("10.0.0.1:40000");
    switched_syn(&mut e, client, 300);
    let st = e.stats();
    assert_eq!((st.proxy.switched_window, st.proxy.switched_flow_table, st.flows_created), (1, 0, 0));
    assert_eq!(
        e.take_proxy_events(),
        vec![ProxyEvent::Switched {
            key: tlsgate_inline::tables::FlowKey { client, server: sa(SERVICE) },
            reason: SwitchReason::Window
        }]
    );
    let row = &e.report().connections[0];
    assert_eq!(row.path, FlowPath::FullProxy(SwitchReason::Window));
    assert_eq!(row.state, FlowState::Handshake);
    // The same SYN at the floor stays end to end: forwarded to the server, port rewritten.
    let other = sa("10.0.0.1:40001");
    let out = handle(&mut e, 1, segment(other, sa(SERVICE), TcpControl::Syn, 5, None, 536, &[]));
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].src, out[0].dst), (other, sa(BACKEND)));
    assert_eq!(
        e.report()
            .connection(&tlsgate_inline::tables::FlowKey { client: other, server: sa(SERVICE) })
            .unwrap()
            .path,
        FlowPath::EndToEnd
    );
}

#[test]
fn a_full_end_to_end_table_switches_then_the_proxy_limit_drops() {
    let mut e = engine(1, 1);
    let (a, b, c) = (sa("10.0.0.1:40000"), sa("10.0.0.1:40001"), sa("10.0.0.1:40002"));
    // a takes the one end-to-end entry and gets past its SYN.
    handle(&mut e, 0, segment(a, sa(SERVICE), TcpControl::Syn, 1, None, 64240, &[]));
    handle(&mut e, 1, segment(sa(BACKEND), a, TcpControl::Syn, 9, Some(2), 64240, &[]));
    // b: the table is full of flows past their SYN, so b goes to the full proxy.
    switched_syn(&mut e, b, 64240);
    assert_eq!(e.stats().proxy.switched_flow_table, 1);
    // c: the proxy is at its limit too: dropped, the client retries.
    let out = handle(&mut e, 2, segment(c, sa(SERVICE), TcpControl::Syn, 1, None, 64240, &[]));
    assert!(out.is_empty());
    assert_eq!((e.stats().syn_dropped, e.stats().proxy.dropped), (1, 1));
    assert_eq!((e.flow_count(), e.proxy_flow_count()), (1, 1));
}

#[test]
fn a_server_refusing_the_proxys_connection_resets_the_client() {
    let mut e = engine(16, 4);
    let client = sa("10.0.0.1:40000");
    let (_, syn) = switched_syn(&mut e, client, 300);
    let out = handle(
        &mut e,
        5,
        segment(sa(BACKEND), client, TcpControl::Rst, 0, Some(syn.wrapping_add(1)), 0, &[]),
    );
    let rst = out.iter().find(|s| s.dst == client).expect("the client hears of it");
    assert!(rst.rst);
    assert_eq!(e.proxy_flow_count(), 0);
    assert_eq!(e.stats().proxy.failed_backend, 1);
    let events = e.take_proxy_events();
    assert!(
        matches!(&events[1], ProxyEvent::Ended { end: tlsgate_inline::proxy::flow::End::Failed(_, why), .. } if why.starts_with("backend:")),
        "{events:?}"
    );
}

#[test]
fn a_server_never_answering_ends_the_flow_at_the_syn_timeout() {
    let mut e = engine(16, 4);
    let client = sa("10.0.0.1:40000");
    switched_syn(&mut e, client, 300);
    let mut out = Vec::new();
    // smoltcp retransmits its SYN meanwhile; the flow goes at the SYN timeout (5 s) at most.
    let mut t = Duration::ZERO;
    for _ in 0..100 {
        let Some(next) = e.poll_timeout() else { break };
        t = next.max(t);
        e.handle_timeout(t, &mut out);
        if e.proxy_flow_count() == 0 {
            break;
        }
    }
    assert_eq!(e.proxy_flow_count(), 0);
    assert!(t <= Duration::from_secs(6), "{t:?}");
    assert_eq!(e.stats().proxy.failed_backend, 1);
    let rst = out.iter().filter_map(|p| packet::parse(p)).find(|s| s.dst == client && s.rst);
    assert!(rst.is_some(), "the client gets a reset");
}

/// A SYN whose client never completes the handshake (spoofed, or the SYN-ACK lost for good):
/// the entry goes at the SYN timeout, not the idle timeout, both connections reset.
#[test]
fn a_client_silent_after_its_syn_frees_the_proxy_entry_at_the_syn_timeout() {
    let mut e = engine(16, 1);
    let client = sa("10.0.0.1:40000");
    let (_, syn) = switched_syn(&mut e, client, 300);
    handle(
        &mut e,
        1,
        segment(sa(BACKEND), client, TcpControl::Syn, 7000, Some(syn.wrapping_add(1)), 64240, &[]),
    );
    let mut out = Vec::new();
    let mut t = Duration::ZERO;
    for _ in 0..100 {
        let Some(next) = e.poll_timeout() else { break };
        t = next.max(t);
        e.handle_timeout(t, &mut out);
        if e.proxy_flow_count() == 0 {
            break;
        }
    }
    assert_eq!(e.proxy_flow_count(), 0);
    assert!(t <= Duration::from_secs(6), "{t:?}");
    assert_eq!(e.stats().proxy.failed_client, 1);
    let rst = out.iter().filter_map(|p| packet::parse(p)).find(|s| s.dst == sa(BACKEND) && s.rst);
    assert!(rst.is_some(), "the server's connection is reset");
    // The proxy's one entry is free again.
    switched_syn(&mut e, sa("10.0.0.1:40001"), 300);
}

#[test]
fn garbage_instead_of_a_client_hello_closes_the_flow_and_resets_the_server_side() {
    let mut e = engine(16, 4);
    let client = sa("10.0.0.1:40000");
    let (synack, syn) = switched_syn(&mut e, client, 300);
    // The server accepts the proxy's connection.
    handle(
        &mut e,
        1,
        segment(sa(BACKEND), client, TcpControl::Syn, 7000, Some(syn.wrapping_add(1)), 64240, &[]),
    );
    // The client completes its handshake and sends plain text.
    handle(
        &mut e,
        2,
        segment(client, sa(SERVICE), TcpControl::None, 1001, Some(synack.wrapping_add(1)), 300, &[]),
    );
    let out = handle(
        &mut e,
        3,
        segment(
            client,
            sa(SERVICE),
            TcpControl::Psh,
            1001,
            Some(synack.wrapping_add(1)),
            300,
            b"GET / HTTP/1.1\r\n\r\n",
        ),
    );
    assert!(out.iter().any(|s| s.dst == sa(BACKEND) && s.rst), "the server's connection is reset");
    assert!(out.iter().any(|s| s.dst == client && s.fin), "the client's is closed");
    assert!(out.iter().all(|s| s.payload.is_empty()), "nothing relayed");
    assert_eq!(e.stats().proxy.failed_client, 1);
}

#[test]
fn a_client_reset_mid_flow_resets_the_server_side() {
    let mut e = engine(16, 4);
    let client = sa("10.0.0.1:40000");
    let (synack, syn) = switched_syn(&mut e, client, 300);
    handle(
        &mut e,
        1,
        segment(sa(BACKEND), client, TcpControl::Syn, 7000, Some(syn.wrapping_add(1)), 64240, &[]),
    );
    handle(
        &mut e,
        2,
        segment(client, sa(SERVICE), TcpControl::None, 1001, Some(synack.wrapping_add(1)), 300, &[]),
    );
    let out = handle(&mut e, 3, segment(client, sa(SERVICE), TcpControl::Rst, 1001, None, 0, &[]));
    assert!(out.iter().any(|s| s.dst == sa(BACKEND) && s.rst), "{out:?}");
    assert_eq!(e.proxy_flow_count(), 0);
    assert_eq!(e.stats().proxy.failed_client, 1);
}

/// The engine fuzz target's invariants (no panic, bounded tables and bursts, checksums, timers
/// that move on) over seeded inputs built to reach the full proxy: small-window SYNs to the
/// service, then random segments both ways on the same ports.
#[test]
fn the_engine_fuzz_invariants_hold_on_the_proxy_path() {
    use rand::{Rng, SeedableRng};
    for seed in 0..300u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut data = vec![rng.random::<u8>()];
        let port: u16 = 40000 + rng.random_range(0..6);
        let tcp = |rng: &mut rand::rngs::StdRng, syn: bool, toward_server: bool| {
            let mut h = vec![0u8; 20];
            let (src, dst) = if toward_server { (port, 443) } else { (80, port) };
            h[0..2].copy_from_slice(&src.to_be_bytes());
            h[2..4].copy_from_slice(&dst.to_be_bytes());
            rng.fill(&mut h[4..12]);
            h[12] = 5 << 4;
            h[13] = if syn { 0x02 } else { rng.random::<u8>() & 0x1f };
            h[14..16].copy_from_slice(&rng.random_range(0u16..600).to_be_bytes());
            let extra = rng.random_range(0..40);
            h.extend((0..extra).map(|_| rng.random::<u8>()));
            h
        };
        for i in 0..24 {
            let toward_server = i == 0 || rng.random_bool(0.5);
            let syn = i == 0 || rng.random_bool(0.2);
            let body = tcp(&mut rng, syn, toward_server);
            let kind = (rng.random_range(0..32u8) << 3) | if toward_server { 1 } else { 2 };
            data.push(kind);
            data.push(body.len() as u8);
            data.extend_from_slice(&body);
        }
        tlsgate_inline::fuzzing::engine(&data);
    }
}

/// A small-window SYN goes to the proxy without touching the end-to-end table: a half-open flow
/// there is not evicted for it.
#[test]
fn a_small_window_syn_does_not_evict_a_half_open_flow() {
    let mut e = engine(1, 4);
    let a = sa("10.0.0.1:40000");
    handle(&mut e, 0, segment(a, sa(SERVICE), TcpControl::Syn, 1, None, 64240, &[]));
    switched_syn(&mut e, sa("10.0.0.1:40001"), 300);
    assert_eq!((e.flow_count(), e.stats().embryonic_evicted), (1, 0));
    assert_eq!(e.stats().proxy.switched_window, 1);
}

/// Balanced mode: a full-proxy flow's connection to its member is the member's health evidence
/// exactly as an end-to-end flow's SYN is (`tlsgate_core::health` via `health::Pools`): refused
/// or unanswered counts against the member, up counts for it.
#[test]
fn full_proxy_connections_feed_the_pools_member_health() {
    let pool = [sa("10.0.1.1:80"), sa("10.0.1.2:80")];
    let vip = sa("10.0.0.100:443");
    let e = engine(16, 8);
    let tls = e.services()[0].tls.clone();
    let mut e = Engine::new(Config {
        services: vec![Service {
            addr: vip,
            server_port: None,
            mode: Mode::Balanced,
            release: Release::Buffered,
            tls,
            pool: pool.to_vec(),
        }],
        limits: Limits {
            syn_timeout: Duration::from_secs(5),
            proxy: ProxyLimits { max_flows: 8, window_floor: 536, mtu: 1500 },
            ..Limits::default()
        },
    });
    // A SYN below the window floor: the proxy connects to the client's member from its address.
    let proxied = |e: &mut Engine, ms: u64, port: u16| {
        let client = SocketAddr::new(sa("10.2.0.7:0").ip(), port);
        let out = handle(e, ms, segment(client, vip, TcpControl::Syn, 1000, None, 300, &[]));
        let syn = out.iter().find(|s| s.syn && s.ack.is_none()).expect("the proxy's SYN to a member");
        assert_eq!(syn.src, client);
        (client, syn.dst, syn.seq.0)
    };
    let (client, first, syn) = proxied(&mut e, 0, 40000);
    let other = pool.into_iter().find(|m| *m != first).unwrap();
    // The member refuses (RST to the proxy's SYN), twice: taken out, as for end-to-end flows.
    let rst = |e: &mut Engine, ms: u64, client: SocketAddr, syn: u32| {
        handle(e, ms, segment(first, client, TcpControl::Rst, 0, Some(syn.wrapping_add(1)), 0, &[]));
    };
    rst(&mut e, 1, client, syn);
    assert_eq!((e.stats().member_failures, e.stats().members_taken_out), (1, 0));
    let (client, again, syn) = proxied(&mut e, 2, 40001);
    assert_eq!(again, first, "one refusal is not enough");
    rst(&mut e, 3, client, syn);
    assert_eq!((e.stats().member_failures, e.stats().members_taken_out), (2, 1));
    assert_eq!(e.members_down(Duration::from_millis(4)), vec![first]);
    // New flows go to the other member, whose answer counts for it.
    let (client, moved, syn) = proxied(&mut e, 5, 40002);
    assert_eq!(moved, other);
    handle(&mut e, 6, segment(other, client, TcpControl::Syn, 7000, Some(syn.wrapping_add(1)), 64240, &[]));
    assert_eq!(e.stats().member_failures, 2);
    // After the pause the first member is tried again; an unanswered connection counts too.
    let later = 6 + tlsgate_inline::health::PARAMS.eject_time.as_millis() as u64;
    assert!(e.members_down(Duration::from_millis(later)).is_empty());
    let (_, back, _) = proxied(&mut e, later, 40003);
    assert_eq!(back, first);
    let (_, back, _) = proxied(&mut e, later, 40004);
    assert_eq!(back, first);
    let mut t = Duration::from_millis(later);
    for _ in 0..200 {
        let Some(next) = e.poll_timeout() else { break };
        t = next.max(t);
        e.handle_timeout(t, &mut Vec::new());
        if e.stats().member_failures == 4 {
            break;
        }
    }
    assert_eq!((e.stats().member_failures, e.stats().members_taken_out), (4, 2), "at {t:?}");
    assert!(t <= Duration::from_millis(later + 6000), "{t:?}");
    let (_, last, _) = proxied(&mut e, t.as_millis() as u64 + 1, 40005);
    assert_eq!(last, other);
}

/// A client window that shrank below the floor between the SYN (end to end) and the ClientHello:
/// the server's connection is reset at the client's next sequence number and opened again by the
/// proxy from the client's address, and the client's connection is adopted as it stands: the
/// ServerHello comes back at the server's ISN + 1, acknowledging the ClientHello, as the service.
#[test]
fn a_window_below_the_floor_at_the_client_hello_switches_there() {
    let mut e = engine(16, 4);
    let client = sa("10.0.0.1:40000");
    let (cisn, sisn) = (1000u32, 7000u32);
    let out = handle(&mut e, 0, segment(client, sa(SERVICE), TcpControl::Syn, cisn, None, 64240, &[]));
    assert_eq!((out.len(), out[0].dst), (1, sa(BACKEND)), "the SYN goes end to end");
    let out =
        handle(&mut e, 1, segment(sa(BACKEND), client, TcpControl::Syn, sisn, Some(cisn + 1), 64240, &[]));
    assert_eq!(out[0].dst, client);
    handle(&mut e, 2, segment(client, sa(SERVICE), TcpControl::None, cisn + 1, Some(sisn + 1), 64240, &[]));
    // A real ClientHello, with a window of 300 bytes.
    let (hello, _client) = client_hello();
    let out = handle(
        &mut e,
        3,
        segment(client, sa(SERVICE), TcpControl::Psh, cisn + 1, Some(sisn + 1), 300, &hello),
    );
    let rst = out.iter().find(|s| s.dst == sa(BACKEND) && s.rst).expect("the old server connection reset");
    assert_eq!((rst.src, rst.seq.0), (client, cisn + 1));
    let syn =
        out.iter().find(|s| s.dst == sa(BACKEND) && s.syn).expect("a new connection to the server").clone();
    assert_eq!(syn.src, client, "from the client's own address and port");
    assert!(out.iter().all(|s| !(s.dst == client && s.syn)), "the stack's SYN-ACK never leaves");
    let st = e.stats();
    assert_eq!((st.proxy.switched_hello_window, e.flow_count(), e.proxy_flow_count()), (1, 0, 1));
    let key = tlsgate_inline::tables::FlowKey { client, server: sa(SERVICE) };
    assert_eq!(e.take_proxy_events(), vec![ProxyEvent::Switched { key, reason: SwitchReason::HelloWindow }]);
    assert_eq!(e.report().connection(&key).unwrap().path, FlowPath::FullProxy(SwitchReason::HelloWindow));
    // The server accepts; the ServerHello flight leaves for the client in the client's terms,
    // within its 300-byte window.
    let first = out;
    let out = handle(
        &mut e,
        4,
        segment(sa(BACKEND), client, TcpControl::Syn, 9000, Some(syn.seq.0.wrapping_add(1)), 64240, &[]),
    );
    let data: Vec<_> =
        first.iter().chain(&out).filter(|s| s.dst == client && !s.payload.is_empty()).collect();
    assert!(!data.is_empty(), "the handshake answer goes out: {out:?}");
    assert_eq!(data[0].src, sa(SERVICE));
    assert_eq!(data[0].seq.0, sisn + 1, "the client's sequence space");
    assert_eq!(data[0].ack.map(|a| a.0), Some(cisn + 1 + hello.len() as u32), "the ClientHello acknowledged");
    let sent: usize = data.iter().map(|s| s.payload.len()).sum();
    assert!(sent <= 300, "within the client's window: {sent}");
}

/// A rustls client's first flight.
fn client_hello() -> (Vec<u8>, rustls::ClientConnection) {
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut c = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    c.write_tls(&mut hello).unwrap();
    (hello, c)
}

/// The persist timer smoltcp lacks: a proxied client that closes its window while the proxy has
/// bytes for it, and whose window update is lost, is probed (a segment without data one below
/// its acknowledgement, which it must answer with its current window) at doubling intervals;
/// its answer lets the bytes go. Without the probe both ends waited for the idle timeout.
#[test]
fn a_zero_window_client_is_probed_until_its_window_opens() {
    let mut e = engine(16, 4);
    let client = sa("10.0.0.1:40000");
    let (synack, syn) = switched_syn(&mut e, client, 300);
    handle(
        &mut e,
        1,
        segment(sa(BACKEND), client, TcpControl::Syn, 9000, Some(syn.wrapping_add(1)), 64240, &[]),
    );
    // The client's ClientHello arrives with its window closed (its update to come is lost).
    let (hello, _c) = client_hello();
    let out = handle(
        &mut e,
        2,
        segment(client, sa(SERVICE), TcpControl::Psh, 1001, Some(synack.wrapping_add(1)), 0, &hello),
    );
    assert!(out.iter().all(|s| s.dst != client || s.payload.is_empty()), "nothing beyond a zero window");
    let mut probes = Vec::new();
    for ms in (100..=2000).step_by(50) {
        let now = Duration::from_millis(ms);
        if e.poll_timeout().is_some_and(|t| t <= now) {
            let mut out = Vec::new();
            e.handle_timeout(now, &mut out);
            for p in &out {
                let s = packet::parse(p).unwrap();
                if s.dst == client {
                    assert!(s.payload.is_empty() && !s.syn && !s.rst, "nothing beyond a zero window: {s:?}");
                    // A probe lies one below the client's acknowledgement (other segments are
                    // the stack's ACKs of the ClientHello).
                    if s.seq.0 == synack {
                        probes.push(ms);
                    }
                }
            }
        }
    }
    assert!(probes.len() >= 2, "probed, and again: {probes:?}");
    assert!(probes.windows(2).all(|w| w[1] - w[0] > 150), "backing off: {probes:?}");
    // The client's answer carries its window: the ServerHello flight goes, within it.
    let out = handle(
        &mut e,
        2100,
        segment(
            client,
            sa(SERVICE),
            TcpControl::None,
            1001 + hello.len() as u32,
            Some(synack.wrapping_add(1)),
            300,
            &[],
        ),
    );
    let sent: usize = out.iter().filter(|s| s.dst == client).map(|s| s.payload.len()).sum();
    assert!(sent > 0 && sent <= 300, "the flight goes, within the window: {sent}");
}

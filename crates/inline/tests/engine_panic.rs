//! A panic in one flow's processing (a bug the packet triggers) must not stop the engine, which
//! serves every flow from one thread: that flow is reset on both sides, dropped and counted, and
//! the others go on. The panic comes from a test-only hook (feature `test-hooks`).

mod common;

use common::{configs, data, syn};
use std::net::SocketAddr;
use std::time::Duration;
use tlsgate_inline::engine::{Config, Engine, Limits, Service};
use tlsgate_inline::packet;
use tlsgate_inline::proxy::ProxyLimits;
use tlsgate_inline::tables::{FlowKey, Mode, Release};

const SERVICE: &str = "10.0.0.2:443";
const BACKEND: &str = "10.0.0.2:80";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn engine() -> Engine {
    let (tls, _) = configs(rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256);
    let mut e = Engine::new(Config {
        services: vec![Service {
            addr: sa(SERVICE),
            server_port: Some(80),
            mode: Mode::Direct,
            release: Release::Buffered,
            tls,
            pool: Vec::new(),
        }],
        limits: Limits { proxy: ProxyLimits { max_flows: 0, ..ProxyLimits::default() }, ..Limits::default() },
    });
    e.panic_on = Some(|payload| payload.starts_with(b"PANIC"));
    e
}

/// Feeds one packet; what the engine emitted, parsed (with the packets).
fn feed(e: &mut Engine, pkt: Vec<u8>) -> Vec<(packet::Segment, Vec<u8>)> {
    let mut out = Vec::new();
    e.handle_packet(Duration::from_millis(1), pkt, &mut out);
    out.into_iter().map(|p| (packet::parse(&p).expect("TCP"), p)).collect()
}

/// A flow from `client` through its SYN, SYN-ACK and `first` bytes; returns the next client
/// sequence number.
fn open(e: &mut Engine, client: SocketAddr, first: &[u8]) -> u32 {
    let (service, backend) = (sa(SERVICE), sa(BACKEND));
    assert_eq!(feed(e, syn(client, service, 1000, None)).len(), 1);
    assert_eq!(feed(e, syn(backend, client, 5000, Some(1001))).len(), 1);
    let out = feed(e, data(client, service, 1001, 5001, first));
    assert_eq!(out.len(), 1, "the first bytes pass");
    assert_eq!((out[0].0.dst, &out[0].1[out[0].0.payload.clone()]), (backend, first));
    1001 + first.len() as u32
}

#[test]
fn a_panic_in_one_flow_resets_that_flow_and_the_others_go_on() {
    let mut e = engine();
    let (a, b) = (sa("10.0.0.1:40000"), sa("10.0.0.1:40001"));
    let (service, backend) = (sa(SERVICE), sa(BACKEND));
    let next_a = open(&mut e, a, b"hello from a");
    let next_b = open(&mut e, b, b"hello from b");

    // Flow a's next segment panics inside the engine.
    let out = feed(&mut e, data(a, service, next_a, 5001, b"PANIC now"));
    let mut resets: Vec<_> = out.iter().map(|(s, _)| (s.src, s.dst, s.rst, s.seq.0)).collect();
    resets.sort();
    assert_eq!(
        resets,
        vec![(a, backend, true, next_a), (service, a, true, 5001)],
        "an RST to each side at the sequence number it expects, and nothing else"
    );
    assert_eq!(e.stats().flows_panicked, 1);
    assert_eq!(e.take_panicked(), vec![FlowKey { client: a, server: service }]);
    assert!(e.take_panicked().is_empty());
    assert_eq!(e.flow_count(), 1, "flow a is gone");

    // Flow b goes on both ways; a new flow starts.
    let out = feed(&mut e, data(b, service, next_b, 5001, b"more from b"));
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0.dst, &out[0].1[out[0].0.payload.clone()]), (backend, &b"more from b"[..]));
    let out = feed(&mut e, data(backend, b, 5001, next_b + 11, b"reply to b"));
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0.src, out[0].0.dst), (service, b));
    assert_eq!(&out[0].1[out[0].0.payload.clone()], b"reply to b");
    open(&mut e, sa("10.0.0.1:40002"), b"hello from c");
    assert_eq!(e.flow_count(), 2);
    // Flow a's later segments are those of an unknown flow: passed, never processed again.
    assert_eq!(e.stats().flows_panicked, 1);
}

#[test]
fn a_panic_during_a_tls_handshake_resets_that_flow_only() {
    let mut e = engine();
    let (a, b) = (sa("10.0.0.1:40000"), sa("10.0.0.1:40001"));
    let (service, backend) = (sa(SERVICE), sa(BACKEND));
    for c in [a, b] {
        feed(&mut e, syn(c, service, 1000, None));
        feed(&mut e, syn(backend, c, 5000, Some(1001)));
    }
    // The TLS data path holds flow a when it panics: the resets come from its own numbers.
    let out = feed(&mut e, data(a, service, 1001, 5001, b"PANIC in the handshake"));
    let mut resets: Vec<_> = out.iter().map(|(s, _)| (s.src, s.dst, s.rst)).collect();
    resets.sort();
    assert_eq!(resets, vec![(a, backend, true), (service, a, true)]);
    assert_eq!((e.stats().flows_panicked, e.flow_count()), (1, 1));
    let first = b"hello from b";
    let out = feed(&mut e, data(b, service, 1001, 5001, first));
    assert_eq!((out.len(), out[0].0.dst), (1, backend), "flow b is served");
}

/// Not a panic: a handshake rustls refuses ends the flow with rustls's fatal alert to the client
/// (RFC 8446 §6.2) and a FIN, not with an RST alone; the client's next data gets the RST.
#[test]
fn a_refused_handshake_sends_rustls_alert_before_the_reset() {
    let mut e = engine();
    let (a, service, backend) = (sa("10.0.0.1:40000"), sa(SERVICE), sa(BACKEND));
    feed(&mut e, syn(a, service, 1000, None));
    feed(&mut e, syn(backend, a, 5000, Some(1001)));
    // A ClientHello of four zero bytes: rustls cannot decode it.
    let hello = [0x16, 3, 1, 0, 4, 1, 0, 0, 0];
    let out = feed(&mut e, data(a, service, 1001, 5001, &hello));
    let to_client: Vec<_> = out.iter().filter(|(s, _)| s.dst == a).collect();
    assert_eq!(to_client.len(), 1, "the alert");
    assert_eq!(&to_client[0].1[to_client[0].0.payload.clone()], [0x15, 3, 3, 0, 2, 2, 50], "decode_error");
    assert!(to_client[0].0.fin, "with a FIN");
    assert!(out.iter().any(|(s, _)| s.dst == backend && s.rst), "and the server's side reset");
    // The client writes again before reading: RST past the FIN, and the flow is gone.
    let after = to_client[0].0.seq.0 + 7 + 1;
    let out = feed(&mut e, data(a, service, 1001 + hello.len() as u32, after, b"more"));
    assert!(out.len() == 1 && out[0].0.rst && out[0].0.dst == a && out[0].0.seq.0 == after);
    assert_eq!(e.flow_count(), 0);
}

/// Not a panic either: a first flight that breaks a rule rustls leaves to its caller gets the
/// alert terminate sends for it, from the shared handshake (`first_flight`): a handshake message
/// of another type where the ClientHello belongs is unexpected_message (RFC 8446 §6.2), a
/// ClientHello offering only TLS 1.1 protocol_version (in a TLS 1.0 record), a handshake record
/// over 2^14 bytes record_overflow (RFC 8446 §5.1). Each with a FIN; the server's side reset.
#[test]
fn a_first_flight_rustls_leaves_unchecked_gets_terminates_alert() {
    let mut big = vec![0x16, 3, 1, 0x40, 0x01, 1, 0, 0x3f, 0xfd, 3, 3];
    big.resize(5 + (1 << 14) + 1, 0);
    let cases: [(&[u8], [u8; 7]); 3] = [
        (&[0x16, 3, 1, 0, 6, 13, 0, 0, 2, 3, 3], [0x15, 3, 3, 0, 2, 2, 10]),
        (&[0x16, 3, 1, 0, 6, 1, 0, 0, 2, 3, 2], [0x15, 3, 1, 0, 2, 2, 70]),
        (&big, [0x15, 3, 3, 0, 2, 2, 22]),
    ];
    for (i, (first, alert)) in cases.into_iter().enumerate() {
        let mut e = engine();
        let (a, service, backend) = (sa(&format!("10.0.0.{}:40000", i + 1)), sa(SERVICE), sa(BACKEND));
        feed(&mut e, syn(a, service, 1000, None));
        feed(&mut e, syn(backend, a, 5000, Some(1001)));
        let out = feed(&mut e, data(a, service, 1001, 5001, first));
        let to_client: Vec<_> = out.iter().filter(|(s, _)| s.dst == a).collect();
        assert_eq!(to_client.len(), 1, "case {i}");
        assert_eq!(&to_client[0].1[to_client[0].0.payload.clone()], alert, "case {i}");
        assert!(to_client[0].0.fin, "case {i}: with a FIN");
        assert!(out.iter().any(|(s, _)| s.dst == backend && s.rst), "case {i}: the server's side reset");
    }
}

//! Bad peers: garbage, oversized records, broken ordering and flow-control breaches all end in a
//! clear connection-level error and a GoAway, never a panic.

mod common;

use std::time::Instant;
use tlsgate_tunnel::wire::{decode, ErrorCode, Frame, Hello, Protocol, VERSION};
use tlsgate_tunnel::{Config, ConnectionError, Endpoint, Event, Role, Target};

fn hello(role: u8) -> Vec<u8> {
    let mut b = Vec::new();
    Frame::Hello(Hello { min_version: VERSION, max_version: VERSION, role, max_frame_len: 65536 })
        .encode(&mut b);
    b
}

/// A gate endpoint that has already accepted a portal Hello, plus the clock.
fn gate() -> (Endpoint, Instant) {
    let now = Instant::now();
    let mut g = Endpoint::new(Config::new(Role::Gate), now);
    g.handle_input(now, &hello(0)).unwrap();
    (g, now)
}

/// Everything the endpoint transmits, decoded; the GoAway's code if there is one.
fn goaway(e: &mut Endpoint, now: Instant) -> Option<ErrorCode> {
    let mut out = Vec::new();
    while e.poll_transmit(now, &mut out) {}
    let mut rest = &out[..];
    let mut code = None;
    while !rest.is_empty() {
        let (f, n) = decode(rest, 1 << 20).unwrap();
        if let Frame::GoAway { code: c, .. } = f {
            code = Some(c);
        }
        rest = &rest[n..];
    }
    code
}

fn expect_protocol_error(e: &mut Endpoint, now: Instant, input: &[u8], code: ErrorCode) {
    match e.handle_input(now, input) {
        Err(ConnectionError::Protocol { code: c, .. }) => assert_eq!(c, code),
        other => panic!("expected protocol error {code:?}, got {other:?}"),
    }
    assert_eq!(goaway(e, now), Some(code));
    assert!(!e.is_connected());
    assert_eq!(e.session_count(), 0);
    // Later input is refused with the same error, not parsed.
    assert!(e.handle_input(now, b"more").is_err());
    let mut events = Vec::new();
    while let Some(ev) = e.poll_event() {
        events.push(ev);
    }
    assert_eq!(events.iter().filter(|e| matches!(e, Event::ConnectionClosed { .. })).count(), 1);
}

#[test]
fn garbage_before_hello_is_a_protocol_error() {
    let now = Instant::now();
    let mut g = Endpoint::new(Config::new(Role::Gate), now);
    expect_protocol_error(&mut g, now, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ErrorCode::FRAME_TOO_LARGE);
    let mut g = Endpoint::new(Config::new(Role::Gate), now);
    let mut ping = Vec::new();
    Frame::Ping { payload: 1 }.encode(&mut ping);
    expect_protocol_error(&mut g, now, &ping, ErrorCode::PROTOCOL_ERROR);
}

#[test]
fn oversized_record_is_refused_from_its_header() {
    let (mut g, now) = gate();
    let header = [0x00, 0x10, 0x00, 0x01, 0, 3, 0, 1]; // 1 MiB + 1 Send
    expect_protocol_error(&mut g, now, &header, ErrorCode::FRAME_TOO_LARGE);
}

#[test]
fn malformed_and_misplaced_records_are_protocol_errors() {
    let cases: Vec<Vec<u8>> = vec![
        vec![0, 0, 0, 1, 0, 5, 0, 1, 9],    // short Ack
        vec![0, 0, 0, 2, 0, 2, 0, 1, 0, 1], // Close for a session never opened
        hello(0),                           // second Hello
        {
            let mut b = Vec::new(); // Open with a gate-side (even) id
            Frame::Open {
                session: 2,
                protocol: Protocol::TCP,
                window: 10,
                target: Target::ip([1, 1, 1, 1], 1),
            }
            .encode(&mut b);
            b
        },
    ];
    for (i, raw) in cases.iter().enumerate() {
        let (mut g, now) = gate();
        let ok_if_ignored = i == 1;
        if ok_if_ignored {
            // A Close for an unknown id is a harmless leftover and ignored...
            g.handle_input(now, raw).unwrap();
            assert!(g.is_connected());
            // ...but data for it is not.
            let mut b = Vec::new();
            Frame::Send { session: 1, data: b"x" }.encode(&mut b);
            expect_protocol_error(&mut g, now, &b, ErrorCode::PROTOCOL_ERROR);
        } else {
            expect_protocol_error(&mut g, now, raw, ErrorCode::PROTOCOL_ERROR);
        }
    }
}

#[test]
fn sending_beyond_the_window_is_a_flow_control_error() {
    let (mut g, now) = gate();
    let mut b = Vec::new();
    Frame::Open { session: 1, protocol: Protocol::TCP, window: 1000, target: Target::ip([10, 0, 0, 1], 80) }
        .encode(&mut b);
    g.handle_input(now, &b).unwrap();
    g.accept(now, 1).unwrap();
    let window = g.config().recv_window as usize;
    let mut b = Vec::new();
    let chunk = vec![0u8; 16 * 1024];
    let mut sent = 0;
    while sent <= window {
        Frame::Send { session: 1, data: &chunk }.encode(&mut b);
        sent += chunk.len();
    }
    expect_protocol_error(&mut g, now, &b, ErrorCode::FLOW_CONTROL);
}

#[test]
fn ack_for_unsent_bytes_is_a_flow_control_error() {
    let (mut g, now) = gate();
    let mut b = Vec::new();
    Frame::Open { session: 1, protocol: Protocol::TCP, window: 1000, target: Target::ip([10, 0, 0, 1], 80) }
        .encode(&mut b);
    Frame::Ack { session: 1, size: 1 }.encode(&mut b);
    // Ack before the session is accepted is out of order...
    expect_protocol_error(&mut g, now, &b, ErrorCode::PROTOCOL_ERROR);
    let (mut g, now) = gate();
    let mut b = Vec::new();
    Frame::Open { session: 1, protocol: Protocol::TCP, window: 1000, target: Target::ip([10, 0, 0, 1], 80) }
        .encode(&mut b);
    g.handle_input(now, &b).unwrap();
    g.accept(now, 1).unwrap();
    let mut b = Vec::new();
    Frame::Ack { session: 1, size: 1 }.encode(&mut b);
    // ...and after it, an Ack for bytes never sent breaks flow control.
    expect_protocol_error(&mut g, now, &b, ErrorCode::FLOW_CONTROL);
}

#[test]
fn two_portals_or_a_version_gap_are_refused_at_hello() {
    let now = Instant::now();
    let mut p = Endpoint::new(Config::new(Role::Portal), now);
    expect_protocol_error(&mut p, now, &hello(0), ErrorCode::PROTOCOL_ERROR);
    let mut p = Endpoint::new(Config::new(Role::Portal), now);
    let mut b = Vec::new();
    Frame::Hello(Hello { min_version: 7, max_version: 9, role: 1, max_frame_len: 65536 }).encode(&mut b);
    assert_eq!(p.handle_input(now, &b), Err(ConnectionError::VersionMismatch { peer_min: 7, peer_max: 9 }));
    assert_eq!(goaway(&mut p, now), Some(ErrorCode::VERSION_MISMATCH));
}

#[test]
fn unknown_record_types_are_skipped_for_forward_compatibility() {
    let (mut g, now) = gate();
    let mut b = Vec::new();
    Frame::Unknown { ty: tlsgate_tunnel::wire::FrameType(0x0200), session: 0, payload: b"ext" }
        .encode(&mut b);
    g.handle_input(now, &b).unwrap();
    assert!(g.is_connected());
    assert_eq!(g.stats().ignored, 1);
}

#[test]
fn byte_at_a_time_input_decodes_like_one_chunk() {
    let (mut g, now) = gate();
    let mut b = Vec::new();
    Frame::Open {
        session: 1,
        protocol: Protocol::TCP,
        window: 1000,
        target: Target::name("a.example", 443).unwrap(),
    }
    .encode(&mut b);
    for byte in &b {
        g.handle_input(now, std::slice::from_ref(byte)).unwrap();
    }
    let mut evs = Vec::new();
    while let Some(e) = g.poll_event() {
        evs.push(e);
    }
    assert!(evs.contains(&Event::OpenRequest {
        id: 1,
        protocol: Protocol::TCP,
        target: Target::name("a.example", 443).unwrap()
    }));
}

#[test]
fn random_garbage_never_panics() {
    // A small deterministic sweep here; the fuzz target `endpoint_input` covers far more.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..2000 {
        let (mut g, now) = gate();
        let len = (x % 64) as usize;
        let mut input = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            input.push(x as u8);
        }
        let _ = g.handle_input(now, &input);
        let mut out = Vec::new();
        while g.poll_transmit(now, &mut out) {}
        while g.poll_event().is_some() {}
    }
}

//! The pieces together, still without sockets: a SOCKS5 client talks to the portal's SOCKS
//! server, the portal opens a session, the gate applies its policy, the answer goes back as a
//! SOCKS reply; and ids are reused safely across the whole 16-bit space.

mod common;

use common::Pair;
use tlsgate_tunnel::policy::Policy;
use tlsgate_tunnel::socks5::{Command, Progress, Reply, Server, ServerConfig};
use tlsgate_tunnel::wire::{OpenRc, Protocol};
use tlsgate_tunnel::{Event, Target};

/// The gate application: every OpenRequest is checked against `policy` for `identity`.
fn gate_decides(p: &mut Pair, policy: &Policy) {
    for ev in p.take_gate_events() {
        if let Event::OpenRequest { id, protocol, target } = ev {
            match policy.check(protocol, &target).refusal() {
                None => p.gate.accept(p.now, id).unwrap(),
                Some((rc, reason)) => p.gate.refuse(p.now, id, rc, reason).unwrap(),
            }
        }
    }
    p.drive();
}

/// Runs one SOCKS5 CONNECT to `host:port` through the pair; returns the SOCKS reply bytes.
fn socks_connect(p: &mut Pair, policy: &Policy, host: &str, port: u16) -> Vec<u8> {
    let mut socks = Server::new(ServerConfig::default());
    assert_eq!(socks.handle_input(&[5, 1, 0]).unwrap(), Progress::NeedMore);
    assert_eq!(socks.take_output(), [5, 0]);
    let mut req = vec![5, 1, 0, 3, host.len() as u8];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    let Progress::Request(r) = socks.handle_input(&req).unwrap() else { panic!("request expected") };
    assert_eq!(r.command, Command::Connect);
    let id = p.portal.open(p.now, Protocol::TCP, r.target).unwrap();
    p.drive();
    gate_decides(p, policy);
    let bound = Target::ip([127, 0, 0, 1], 1080);
    for ev in p.take_portal_events() {
        match ev {
            Event::Opened { id: i } if i == id => socks.reply(Reply::SUCCEEDED, &bound).unwrap(),
            Event::OpenFailed { id: i, rc, .. } if i == id => socks.reply(Reply::from(rc), &bound).unwrap(),
            _ => {}
        }
    }
    socks.take_output()
}

#[test]
fn socks_connect_goes_through_gate_policy() {
    let policy = Policy::parse("deny any 127.0.0.0/8\nallow tcp corp.example 443").unwrap();
    let mut p = Pair::new();
    p.take_gate_events();
    assert_eq!(socks_connect(&mut p, &policy, "db.corp.example", 443)[..2], [5, 0]);
    assert_eq!(socks_connect(&mut p, &policy, "db.corp.example", 22)[..2], [5, 2], "port not allowed");
    assert_eq!(socks_connect(&mut p, &policy, "127.0.0.1", 443)[..2], [5, 2], "IP literal name");
    assert_eq!(p.portal.session_count(), 1);
    assert_eq!(p.gate.session_count(), 1);
}

#[test]
fn refusal_reason_reaches_the_portal() {
    let policy = Policy::parse("allow tcp 10.0.0.0/8 443").unwrap();
    let mut p = Pair::new();
    p.take_gate_events();
    let id = p.portal.open(p.now, Protocol::TCP, Target::ip([10, 0, 0, 99], 22)).unwrap();
    p.drive();
    gate_decides(&mut p, &policy);
    assert!(p.portal_events.contains(&Event::OpenFailed {
        id,
        rc: OpenRc::REFUSED_BY_POLICY,
        reason: "10.0.0.99:22 not allowed".into()
    }));
}

#[test]
fn ids_are_reused_safely_across_the_whole_id_space() {
    let mut p = Pair::new();
    p.take_gate_events();
    let mut seen_wrap = false;
    let mut last = 0u16;
    // More sessions than the portal's 32767 odd ids: allocation wraps and reuses released ids.
    for _ in 0..33_000 {
        let id = p.portal.open(p.now, Protocol::TCP, Target::ip([10, 0, 0, 1], 80)).unwrap();
        seen_wrap |= id < last;
        last = id;
        p.drive();
        p.gate.refuse(p.now, id, OpenRc::CONNECTION_REFUSED, "").unwrap();
        p.drive();
        p.portal_events.clear();
        p.gate_events.clear();
    }
    assert!(seen_wrap, "ids wrapped around");
    assert!(p.portal_error.is_none() && p.gate_error.is_none());
    assert_eq!((p.portal.session_count(), p.gate.session_count()), (0, 0));
}

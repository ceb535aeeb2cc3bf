//! Two endpoints driven in memory: opening, data, flow control, half-close, reset, reaping.

mod common;

use common::{pattern, target, Pair, SECS};
use std::collections::HashMap;
use tlsgate_tunnel::wire::{decode, Frame, OpenRc, Protocol, ResetCode};
use tlsgate_tunnel::{Event, SessionError, State};

#[test]
fn hello_exchange_connects_both_ends() {
    let mut p = Pair::new();
    assert!(p.portal.is_connected() && p.gate.is_connected());
    assert_eq!(p.take_portal_events(), vec![Event::Connected { version: 1 }]);
    assert_eq!(p.take_gate_events(), vec![Event::Connected { version: 1 }]);
}

#[test]
fn open_carries_unresolved_name_and_data_flows_both_ways() {
    let mut p = Pair::new();
    let id = p.portal.open(p.now, Protocol::TCP, target()).unwrap();
    assert_eq!(id % 2, 1, "portal ids are odd");
    assert_eq!(p.portal.state(id), Some(State::Pending));
    p.drive();
    assert!(p.gate_events.contains(&Event::OpenRequest { id, protocol: Protocol::TCP, target: target() }));
    assert_eq!(p.gate.state(id), Some(State::Accepting));
    p.gate.accept(p.now, id).unwrap();
    p.drive();
    assert_eq!(p.portal.state(id), Some(State::Active));
    p.portal.write(p.now, id, b"ping").unwrap();
    p.drive();
    assert_eq!(Pair::read_all(&mut p.gate, p.now, id), (b"ping".to_vec(), false));
    p.gate.write(p.now, id, b"pong").unwrap();
    p.drive();
    assert_eq!(Pair::read_all(&mut p.portal, p.now, id), (b"pong".to_vec(), false));
}

#[test]
fn many_streams_interleave_round_robin_and_arrive_intact() {
    let mut p = Pair::new();
    let ids: Vec<_> = (0..12).map(|_| p.open_tcp(target())).collect();
    let len = 300 * 1024;
    let mut sent: HashMap<u16, usize> = ids.iter().map(|id| (*id, 0)).collect();
    let mut got: HashMap<u16, Vec<u8>> = HashMap::new();
    // First, show the interleaving on the wire: one chunk per session per turn.
    for id in &ids {
        let data = pattern(*id, len);
        *sent.get_mut(id).unwrap() += p.portal.write(p.now, *id, &data).unwrap();
    }
    let mut wire = Vec::new();
    for _ in 0..ids.len() * 2 {
        assert!(p.portal.poll_transmit(p.now, &mut wire));
    }
    let mut order = Vec::new();
    let mut rest = &wire[..];
    while !rest.is_empty() {
        let (f, n) = decode(rest, 1 << 20).unwrap();
        if let Frame::Send { session, .. } = f {
            order.push(session);
        }
        rest = &rest[n..];
    }
    assert_eq!(&order[..ids.len()], &order[ids.len()..], "same rotation each turn");
    let mut distinct = order[..ids.len()].to_vec();
    distinct.sort();
    assert_eq!(distinct, ids, "every session got one turn per round");
    p.gate.handle_input(p.now, &wire).unwrap();
    // Then move everything, the gate reading as data arrives and the portal refilling.
    for _ in 0..10_000 {
        for id in &ids {
            let s = sent[id];
            if s < len {
                if let Ok(n) = p.portal.write(p.now, *id, &pattern(*id, len)[s..]) {
                    *sent.get_mut(id).unwrap() += n;
                }
            }
            got.entry(*id).or_default().extend(Pair::read_all(&mut p.gate, p.now, *id).0);
        }
        p.drive();
        if ids.iter().all(|id| got[id].len() == len) {
            break;
        }
    }
    for id in &ids {
        assert!(got[id] == pattern(*id, len), "stream {id} arrived intact");
    }
}

#[test]
fn stalled_destination_stalls_only_its_own_session_with_bounded_memory() {
    let mut p = Pair::new();
    let stalled = p.open_tcp(target());
    let flowing = p.open_tcp(target());
    let total = 1024 * 1024;
    let data = pattern(1, total);
    let (mut s_sent, mut f_sent, mut f_got) = (0, 0, Vec::new());
    for _ in 0..10_000 {
        if let Ok(n) = p.portal.write(p.now, stalled, &data[s_sent..]) {
            s_sent += n;
        }
        if f_sent < total {
            f_sent += p.portal.write(p.now, flowing, &data[f_sent..]).unwrap_or(0);
        }
        p.drive();
        f_got.extend(Pair::read_all(&mut p.gate, p.now, flowing).0);
        if f_got.len() == total {
            break;
        }
    }
    assert!(f_got == data, "the reading session got all its data");
    let window = p.gate.config().recv_window as usize;
    let send_buffer = p.portal.config().send_buffer;
    assert_eq!(p.gate.buffered(stalled), Some(window), "receiver holds exactly one window");
    assert_eq!(p.portal.buffered(stalled), Some(send_buffer), "sender holds its send buffer");
    assert_eq!(s_sent, window + send_buffer, "writes beyond that were pushed back");
    assert_eq!(p.portal.write(p.now, stalled, b"x"), Err(SessionError::WouldBlock));
    // The destination drains: a Writable event and the rest of the stream follow.
    let mut s_got = Vec::new();
    for _ in 0..10_000 {
        s_got.extend(Pair::read_all(&mut p.gate, p.now, stalled).0);
        p.drive();
        if p.portal_events.contains(&Event::Writable { id: stalled }) && s_sent < total {
            s_sent += p.portal.write(p.now, stalled, &data[s_sent..]).unwrap_or(0);
        }
        if s_got.len() == total {
            break;
        }
    }
    assert!(s_got == data);
    assert!(p.portal_events.contains(&Event::Writable { id: stalled }));
}

#[test]
fn half_close_from_client_still_delivers_the_reply() {
    let mut p = Pair::new();
    let id = p.open_tcp(target());
    p.portal.write(p.now, id, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    p.portal.finish(p.now, id).unwrap();
    p.drive();
    assert_eq!(p.portal.state(id), Some(State::LocalFinished));
    assert_eq!(p.gate.state(id), Some(State::PeerFinished));
    assert!(p.gate_events.contains(&Event::PeerFinished { id }));
    assert_eq!(Pair::read_all(&mut p.gate, p.now, id), (b"GET / HTTP/1.0\r\n\r\n".to_vec(), true));
    // The gate keeps writing after the client's EOF.
    let reply = pattern(3, 200 * 1024);
    let mut sent = 0;
    let mut got = Vec::new();
    let mut eof = false;
    for _ in 0..1000 {
        if sent < reply.len() {
            sent += p.gate.write(p.now, id, &reply[sent..]).unwrap_or(0);
            if sent == reply.len() {
                p.gate.finish(p.now, id).unwrap();
            }
        }
        p.drive();
        let (d, e) = Pair::read_all(&mut p.portal, p.now, id);
        got.extend(d);
        eof = e;
        if eof {
            break;
        }
    }
    assert!(eof && got == reply);
    p.drive();
    assert!(p.portal_events.contains(&Event::Released { id }));
    assert!(p.gate_events.contains(&Event::Released { id }));
    assert_eq!((p.portal.session_count(), p.gate.session_count()), (0, 0));
}

#[test]
fn half_close_from_server_side_lets_the_client_keep_sending() {
    let mut p = Pair::new();
    let id = p.open_tcp(target());
    p.gate.write(p.now, id, b"banner").unwrap();
    p.gate.finish(p.now, id).unwrap();
    p.drive();
    assert_eq!(p.portal.state(id), Some(State::PeerFinished));
    assert_eq!(Pair::read_all(&mut p.portal, p.now, id), (b"banner".to_vec(), true));
    p.portal.write(p.now, id, b"upload").unwrap();
    p.portal.finish(p.now, id).unwrap();
    p.drive();
    assert_eq!(Pair::read_all(&mut p.gate, p.now, id), (b"upload".to_vec(), true));
    p.drive();
    assert_eq!((p.portal.session_count(), p.gate.session_count()), (0, 0));
}

#[test]
fn stop_reading_tells_the_peer_to_stop_writing() {
    let mut p = Pair::new();
    let id = p.open_tcp(target());
    p.portal.write(p.now, id, &pattern(1, 100_000)).unwrap();
    p.gate.stop_reading(p.now, id).unwrap();
    p.drive();
    assert!(p.portal_events.contains(&Event::WriteStopped { id }));
    assert_eq!(p.portal.write(p.now, id, b"more"), Err(SessionError::Closed));
    assert_eq!(p.portal.buffered(id), Some(0), "unsent data dropped");
    // The other direction still works, then both close.
    p.gate.write(p.now, id, b"still here").unwrap();
    p.gate.finish(p.now, id).unwrap();
    p.drive();
    assert_eq!(Pair::read_all(&mut p.portal, p.now, id), (b"still here".to_vec(), true));
    p.drive();
    assert_eq!((p.portal.session_count(), p.gate.session_count()), (0, 0));
}

#[test]
fn reset_flushes_both_sides_and_frees_the_id() {
    let mut p = Pair::new();
    let id = p.open_tcp(target());
    p.gate.write(p.now, id, &pattern(2, 50_000)).unwrap();
    p.portal.write(p.now, id, &pattern(3, 50_000)).unwrap();
    p.portal.reset(p.now, id, ResetCode::IO_ERROR, "client went away").unwrap();
    assert_eq!(p.portal.state(id), Some(State::Closing));
    assert_eq!(p.portal.buffered(id), Some(0), "queued data flushed at once");
    assert_eq!(p.portal.write(p.now, id, b"late"), Err(SessionError::Closed));
    p.drive();
    assert!(p.gate_events.contains(&Event::Reset {
        id,
        code: ResetCode::IO_ERROR,
        reason: "client went away".into(),
        remote: true
    }));
    assert!(p.gate_events.contains(&Event::Released { id }));
    assert!(p.portal_events.contains(&Event::Released { id }));
    assert_eq!(p.gate.read(p.now, id, &mut [0; 10]), Err(SessionError::UnknownSession));
    assert!(p.portal_error.is_none() && p.gate_error.is_none());
}

#[test]
fn crossing_resets_and_end_leave_no_protocol_error() {
    let mut p = Pair::new();
    let a = p.open_tcp(target());
    let b = p.open_tcp(target());
    p.portal.reset(p.now, a, ResetCode::CANCELLED, "").unwrap();
    p.gate.reset(p.now, a, ResetCode::IO_ERROR, "").unwrap();
    p.gate.end(p.now, b, ResetCode::NONE, "shutting down").unwrap();
    p.drive();
    assert!(p.portal_events.contains(&Event::Reset {
        id: b,
        code: ResetCode::NONE,
        reason: "shutting down".into(),
        remote: true
    }));
    assert_eq!((p.portal.session_count(), p.gate.session_count()), (0, 0));
    assert!(p.portal_error.is_none() && p.gate_error.is_none());
}

#[test]
fn cancelling_a_pending_open_releases_both_ends() {
    let mut p = Pair::new();
    // Cancelled before the Open left: nothing goes on the wire.
    let silent = p.portal.open(p.now, Protocol::TCP, target()).unwrap();
    p.portal.reset(p.now, silent, ResetCode::CANCELLED, "").unwrap();
    // Cancelled after the Open left, before the gate decided.
    let id = p.portal.open(p.now, Protocol::TCP, target()).unwrap();
    p.drive();
    p.portal.reset(p.now, id, ResetCode::CANCELLED, "").unwrap();
    p.drive();
    assert!(!p.gate_events.iter().any(|e| matches!(e, Event::OpenRequest { id: i, .. } if *i == silent)));
    assert!(p.gate_events.contains(&Event::Released { id }));
    assert!(p.portal_events.contains(&Event::Released { id }));
    assert_eq!(p.gate.accept(p.now, id), Err(SessionError::UnknownSession));
    assert_eq!((p.portal.session_count(), p.gate.session_count()), (0, 0));
}

#[test]
fn refused_open_reports_code_and_reason() {
    let mut p = Pair::new();
    let id = p.portal.open(p.now, Protocol::TCP, target()).unwrap();
    p.drive();
    p.gate.refuse(p.now, id, OpenRc::REFUSED_BY_POLICY, "db.corp.example:5432 not allowed").unwrap();
    p.drive();
    assert!(p.portal_events.contains(&Event::OpenFailed {
        id,
        rc: OpenRc::REFUSED_BY_POLICY,
        reason: "db.corp.example:5432 not allowed".into()
    }));
    assert_eq!((p.portal.session_count(), p.gate.session_count()), (0, 0));
}

#[test]
fn gate_can_open_toward_the_portal_without_id_collisions() {
    let mut p = Pair::new();
    let from_portal = p.portal.open(p.now, Protocol::TCP, target()).unwrap();
    let from_gate = p.gate.open(p.now, Protocol::TCP, target()).unwrap();
    assert_eq!((from_portal % 2, from_gate % 2), (1, 0));
    p.drive();
    p.gate.accept(p.now, from_portal).unwrap();
    p.portal.accept(p.now, from_gate).unwrap();
    p.drive();
    assert!(p.gate_events.contains(&Event::Opened { id: from_gate }));
    p.gate.write(p.now, from_gate, b"reverse").unwrap();
    p.drive();
    assert_eq!(Pair::read_all(&mut p.portal, p.now, from_gate).0, b"reverse");
}

#[test]
fn session_limit_refuses_further_opens() {
    let mut pc = common::cfg(tlsgate_tunnel::Role::Portal);
    pc.max_sessions = 100;
    let mut gc = common::cfg(tlsgate_tunnel::Role::Gate);
    gc.max_sessions = 3;
    let mut p = Pair::with(pc, gc);
    let ids: Vec<_> = (0..5).map(|_| p.portal.open(p.now, Protocol::TCP, target()).unwrap()).collect();
    p.drive();
    let requests = p.gate_events.iter().filter(|e| matches!(e, Event::OpenRequest { .. })).count();
    assert_eq!(requests, 3);
    for id in &ids[3..] {
        assert!(p.portal_events.iter().any(|e| matches!(e,
            Event::OpenFailed { id: i, rc: OpenRc::TOO_MANY_SESSIONS, .. } if i == id)));
    }
    assert_eq!(p.gate.session_count(), 3);
    assert_eq!(p.portal.session_count(), 3);
}

#[test]
fn idle_sessions_are_reaped_while_keepalive_holds_the_connection() {
    // The gate's limit is longer, so the portal reaps first and the gate hears its Reset.
    let mut gc = common::cfg(tlsgate_tunnel::Role::Gate);
    gc.session_idle_timeout *= 2;
    let mut p = Pair::with(common::cfg(tlsgate_tunnel::Role::Portal), gc);
    let idle = p.open_tcp(target());
    let busy = p.open_tcp(target());
    let limit = p.portal.config().session_idle_timeout;
    let step = SECS(10);
    let mut t = SECS(0);
    while t < limit + SECS(20) {
        p.portal.write(p.now, busy, b"tick").unwrap();
        p.advance(step);
        Pair::read_all(&mut p.gate, p.now, busy);
        t += step;
    }
    assert!(p.portal_events.contains(&Event::Reset {
        id: idle,
        code: ResetCode::IDLE_TIMEOUT,
        reason: "idle".into(),
        remote: false
    }));
    assert!(p.gate_events.iter().any(|e| matches!(e, Event::Reset { id, remote: true, .. } if *id == idle)));
    assert_eq!(p.portal.state(idle), None);
    assert_eq!(p.portal.state(busy), Some(State::Active));
    assert!(p.portal.is_connected() && p.gate.is_connected());
}

#[test]
fn keepalive_pings_keep_a_quiet_connection_up_and_silence_times_out() {
    let mut p = Pair::new();
    for _ in 0..20 {
        p.advance_to_next_timeout();
    }
    assert!(p.portal.is_connected() && p.gate.is_connected(), "pings answered");
    let quiet_since = p.now;
    p.gate_to_portal_open = false;
    for _ in 0..20 {
        p.advance_to_next_timeout();
        if !p.portal.is_connected() {
            break;
        }
    }
    assert_eq!(p.portal.error(), Some(&tlsgate_tunnel::ConnectionError::TimedOut));
    assert_eq!(p.now - quiet_since, p.portal.config().idle_timeout);
    assert!(p.gate_error.is_some(), "the portal's GoAway reached the gate");
}

#[test]
fn udp_session_carries_datagrams_with_addresses_and_drops_on_overflow() {
    let mut p = Pair::new();
    let dns = tlsgate_tunnel::Target::ip([10, 0, 0, 53], 53);
    let client = tlsgate_tunnel::Target::ip([127, 0, 0, 1], 40000);
    let id = p.portal.open(p.now, Protocol::UDP, dns.clone()).unwrap();
    p.drive();
    p.gate.accept(p.now, id).unwrap();
    p.drive();
    p.portal.send_datagram(p.now, id, client.clone(), dns.clone(), b"query").unwrap();
    p.drive();
    assert!(p.gate_events.contains(&Event::DatagramReadable { id }));
    let d = p.gate.recv_datagram(p.now, id).unwrap().unwrap();
    assert_eq!((d.src, d.dst, &d.data[..]), (client.clone(), dns.clone(), &b"query"[..]));
    p.gate.send_datagram(p.now, id, dns.clone(), client.clone(), b"answer").unwrap();
    p.drive();
    assert_eq!(p.portal.recv_datagram(p.now, id).unwrap().unwrap().data, b"answer");
    // An unread queue is bounded: the extra datagrams are dropped, not buffered.
    let cap = p.gate.config().datagram_queue_len;
    for _ in 0..cap + 10 {
        p.portal.send_datagram(p.now, id, client.clone(), dns.clone(), b"x").unwrap();
        p.drive();
    }
    let mut n = 0;
    while p.gate.recv_datagram(p.now, id).unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, cap);
    assert_eq!(p.portal.write(p.now, id, b"x"), Err(SessionError::WrongProtocol));
    // A UDP session ends like a stream: each side finishes, then both release it.
    p.portal.finish(p.now, id).unwrap();
    p.gate.finish(p.now, id).unwrap();
    p.drive();
    assert!(p.portal_events.contains(&Event::Released { id }));
    assert_eq!((p.portal.session_count(), p.gate.session_count()), (0, 0));
}

#[test]
fn refusal_crossing_the_openers_cancel_is_not_an_error() {
    let mut p = Pair::new();
    let id = p.portal.open(p.now, Protocol::TCP, target()).unwrap();
    p.drive();
    // Both decide before hearing from the other.
    p.portal.reset(p.now, id, ResetCode::CANCELLED, "").unwrap();
    p.gate.refuse(p.now, id, OpenRc::TIMED_OUT, "connect timed out").unwrap();
    p.drive();
    assert!(p.portal_error.is_none() && p.gate_error.is_none());
    assert!(p.portal_events.contains(&Event::Released { id }));
    assert!(p.gate_events.contains(&Event::Released { id }));
    // The id is free again on both ends: reusing it works.
    let again = p.open_tcp(target());
    assert_eq!(p.gate.state(again), Some(State::Active));
}

#[test]
fn finished_session_whose_input_is_never_read_is_reaped_too() {
    let mut gc = common::cfg(tlsgate_tunnel::Role::Gate);
    gc.session_idle_timeout *= 2;
    let mut p = Pair::with(common::cfg(tlsgate_tunnel::Role::Portal), gc);
    let id = p.open_tcp(target());
    p.gate.write(p.now, id, b"unread reply").unwrap();
    p.gate.finish(p.now, id).unwrap();
    p.portal.finish(p.now, id).unwrap();
    p.drive();
    // Both halves are closed, but the portal's application never drains the reply.
    assert_eq!(p.portal.state(id), Some(State::Closing));
    let limit = p.portal.config().session_idle_timeout;
    let start = p.now;
    while p.now - start <= limit {
        p.advance(SECS(10)); // keepalive keeps the connection itself up
    }
    assert!(p.portal.is_connected());
    assert!(p.portal_events.iter().any(|e| matches!(e,
        Event::Reset { id: i, code: ResetCode::IDLE_TIMEOUT, .. } if *i == id)));
    assert_eq!((p.portal.session_count(), p.gate.session_count()), (0, 0));
}

#[test]
fn records_respect_the_max_frame_length_the_peer_announced() {
    let mut gc = common::cfg(tlsgate_tunnel::Role::Gate);
    gc.max_frame_len = 2048;
    let mut p = Pair::with(common::cfg(tlsgate_tunnel::Role::Portal), gc);
    let id = p.portal.open(p.now, Protocol::UDP, target()).unwrap();
    p.drive();
    p.gate.accept(p.now, id).unwrap();
    p.drive();
    let (src, dst) = (target(), target());
    assert_eq!(
        p.portal.send_datagram(p.now, id, src.clone(), dst.clone(), &[0; 2048]),
        Err(SessionError::TooLarge)
    );
    p.portal.send_datagram(p.now, id, src, dst, &[0; 1900]).unwrap();
    let tcp = p.open_tcp(target());
    p.portal.write(p.now, tcp, &pattern(9, 60_000)).unwrap();
    let mut wire = Vec::new();
    while p.portal.poll_transmit(p.now, &mut wire) {}
    let mut rest = &wire[..];
    let mut sends = 0;
    while !rest.is_empty() {
        let (f, n) = decode(rest, 2048).expect("every record within the gate's limit");
        sends += matches!(f, Frame::Send { .. }) as usize;
        rest = &rest[n..];
    }
    assert!(sends >= 60_000 / 2048, "data was cut into many records");
    p.gate.handle_input(p.now, &wire).unwrap();
}

#[test]
fn batches_within_a_limit_arrive_intact_through_any_cut_and_spent_buffers_come_back() {
    let mut p = Pair::new();
    let id = p.open_tcp(target());
    let len = 200 * 1024;
    let data = pattern(id, len);
    let limit = 16 * 1024;
    let (mut written, mut got, mut cut) = (0, Vec::new(), 1usize);
    let mut spent = 0;
    while got.len() < len {
        // Whole buffers handed over, as the driver's socket reads are.
        while written < len {
            let mut buf = Vec::with_capacity(8192);
            buf.extend_from_slice(&data[written..(written + 8192).min(len)]);
            match p.portal.write_vec(p.now, id, &mut buf) {
                Ok(n) => written += n,
                Err(_) => break,
            }
            if !buf.is_empty() {
                break;
            }
        }
        let mut wire = Vec::new();
        while wire.len() < limit && p.portal.poll_transmit_within(p.now, &mut wire, limit) {}
        assert!(wire.len() <= limit, "a batch of data records stays within the limit");
        while let Some(b) = p.portal.take_spent_buffer() {
            assert!(b.is_empty(), "a sent buffer comes back emptied");
            spent += usize::from(b.capacity() == 8192);
        }
        // Fed to the gate in pieces cut anywhere, frame headers included.
        let mut rest = &wire[..];
        while !rest.is_empty() {
            let n = cut.min(rest.len());
            p.gate.handle_input(p.now, &rest[..n]).unwrap();
            rest = &rest[n..];
            cut = cut * 7 % 5003 + 1;
        }
        got.extend(Pair::read_all(&mut p.gate, p.now, id).0);
        // The gate's Acks; the portal's data goes only through the limited batches above.
        p.flush_gate();
    }
    assert!(got == data, "the bytes arrive intact and in order");
    assert!(spent > 0, "buffers handed over whole are given back once sent");
}

//! The client → server record path against a real rustls client: segments cut, reordered,
//! duplicated and retransmitted; plaintext released exactly as written, only after its tag.

mod common;

use common::*;
use std::io::Write;
use tlsgate_inline::seq_map::SeqMap;
use tlsgate_inline::tables::Release;
use tlsgate_inline::upstream::{Up, UpError, UpLimits, Upstream};
use tlsgate_record::session::Reason;

const LIMITS: UpLimits = UpLimits {
    hold_bytes: 256 * 1024,
    hold_segments: 1024,
    unacked_bytes: 1 << 20,
    record_limit: 16384 + 256,
};

fn setup(suite: rustls::SupportedCipherSuite) -> (Flow, Upstream, u64) {
    upstream_after_handshake(suite, LIMITS, Release::Buffered)
}

#[test]
fn in_order_segments_release_the_plaintext_exactly() {
    for &suite in TLS13.iter().chain(TLS12) {
        let (mut f, mut up, start) = setup(suite);
        let (plain, wire) = client_writes(&mut f, &messages());
        let mut out = Vec::new();
        for (i, chunk) in wire.chunks(536).enumerate() {
            up.segment(&mut f.layer, start + (i * 536) as u64, chunk, &mut out).unwrap();
        }
        let mut next = 1;
        let mut got = Vec::new();
        for u in &out {
            let Up::Forward { inner, data } = u else { panic!("{u:?}") };
            assert_eq!(*inner, next, "contiguous inner offsets");
            next += data.len() as u64;
            got.extend_from_slice(data);
        }
        assert_eq!(got, plain);
        assert_eq!(up.next(), start + wire.len() as u64);
        assert!(up.queue_rows().is_empty());
    }
}

#[test]
fn reordered_and_duplicated_segments_give_the_same_plaintext() {
    for seed in 1..40u64 {
        let suite = TLS13[seed as usize % 3];
        let (mut f, mut up, start) = setup(suite);
        let (plain, wire) = client_writes(&mut f, &messages());
        let fed = shuffled_segments(&wire, start, seed);
        let mut out = Vec::new();
        for (off, data) in &fed {
            up.segment(&mut f.layer, *off, data, &mut out).unwrap();
        }
        assert_eq!(check(&out, &plain), 1 + plain.len() as u64, "seed {seed}");
    }
}

#[test]
fn a_tampered_record_releases_none_of_its_bytes() {
    let (mut f, mut up, start) = setup(TLS13[0]);
    let (plain, mut wire) = client_writes(&mut f, &[b"first".to_vec(), vec![7; 3000]]);
    // The second record starts after the first: header 5 + "first" 5 + type 1 + tag 16.
    wire[27 + 5 + 1000] ^= 0x40;
    let mut out = Vec::new();
    let mut err = None;
    for (i, chunk) in wire.chunks(500).enumerate() {
        if let Err(e) = up.segment(&mut f.layer, start + (i * 500) as u64, chunk, &mut out) {
            err = Some(e);
            break;
        }
    }
    assert!(matches!(err, Some(UpError::Session(ref f)) if f.reason == Reason::BadRecordMac), "{err:?}");
    assert_eq!(out, vec![Up::Forward { inner: 1, data: plain[..5].to_vec().into() }]);
}

#[test]
fn client_retransmissions_redeliver_until_the_server_acknowledges() {
    let (mut f, mut up, start) = setup(TLS13[1]);
    let (plain, wire) = client_writes(&mut f, &[vec![9; 1000]]);
    let mut out = Vec::new();
    up.segment(&mut f.layer, start, &wire, &mut out).unwrap();
    assert_eq!(out.len(), 1);
    // Client resends (its ACK got lost): the same plaintext goes to the server again.
    out.clear();
    up.segment(&mut f.layer, start + 100, &wire[100..200], &mut out).unwrap();
    assert_eq!(out, vec![Up::Forward { inner: 1, data: plain.clone().into() }]);
    // The server acknowledged 400 bytes: the client's ACK covers header + 400 ciphertext bytes,
    // and a resend carries only the rest.
    assert_eq!(up.server_ack(401), Some(start + 5 + 400));
    out.clear();
    up.segment(&mut f.layer, start, &wire, &mut out).unwrap();
    assert_eq!(out, vec![Up::Forward { inner: 401, data: plain[400..].to_vec().into() }]);
    // All acknowledged: the ACK covers the whole record (tag included), the tables are empty,
    // and an old retransmission produces nothing.
    assert_eq!(up.server_ack(1001), Some(start + wire.len() as u64));
    assert!(up.pairs().is_empty());
    out.clear();
    up.segment(&mut f.layer, start, &wire, &mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(up.stats().retransmitted, 3);
    assert_eq!(up.stats().redelivered, 1000 + 600);
    assert_eq!(up.server_ack(500), None, "an ACK going backwards");
    up.park();
    assert!(up.state_bytes() < 64, "nothing held: {}", up.state_bytes());
}

#[test]
fn a_client_key_update_mid_stream_is_followed() {
    let (mut f, mut up, start) = setup(TLS13[2]);
    f.client.writer().write_all(b"a").unwrap();
    let mut wire = client_output(&mut f.client);
    f.client.refresh_traffic_keys().unwrap();
    f.client.writer().write_all(b"b").unwrap();
    wire.extend(client_output(&mut f.client));
    let mut out = Vec::new();
    // Byte by byte: the key update's record split like any other.
    for (i, b) in wire.iter().enumerate() {
        up.segment(&mut f.layer, start + i as u64, std::slice::from_ref(b), &mut out).unwrap();
    }
    assert_eq!(out.len(), 3);
    assert_eq!(out[0], Up::Forward { inner: 1, data: b"a".to_vec().into() });
    assert!(matches!(&out[1], Up::Control { reply } if !reply.is_empty()), "the requested update answered");
    assert_eq!(out[2], Up::Forward { inner: 2, data: b"b".to_vec().into() });
    // The server acknowledged "a": the client's ACK also covers the key update record the
    // engine consumed, but not the header of the record carrying "b".
    let ack = up.server_ack(2).unwrap();
    let first = 5 + 1 + 1 + 16;
    let key_update = 5 + 5 + 1 + 16;
    assert_eq!(ack, start + first + key_update);
    assert_eq!(up.client_ack(), ack);
}

#[test]
fn the_hold_queue_bound_drops_and_recovers() {
    let (mut f, _, start) = setup(TLS13[0]);
    let limits = UpLimits { hold_bytes: 4000, ..LIMITS };
    let mut pairs = SeqMap::new(1, 1, 64);
    pairs.push(f.handshake_bytes as u32, 0, 0).unwrap();
    let mut up = Upstream::new(pairs, limits);
    let (plain, wire) = client_writes(&mut f, &[vec![3; 12000]]);
    let mut out = Vec::new();
    // Everything but the first segment arrives first: only 4000 bytes fit.
    for (i, chunk) in wire.chunks(1000).enumerate().skip(1) {
        up.segment(&mut f.layer, start + (i * 1000) as u64, chunk, &mut out).unwrap();
    }
    assert!(up.stats().dropped > 0);
    assert!(up.state_bytes() <= 4000 + 64 * 64);
    // The client retransmits everything in order: the record completes.
    for (i, chunk) in wire.chunks(1000).enumerate() {
        up.segment(&mut f.layer, start + (i * 1000) as u64, chunk, &mut out).unwrap();
    }
    assert_eq!(check(&out, &plain), 1 + plain.len() as u64);
}

#[test]
fn at_the_unacknowledged_bound_a_byte_resent_asks_the_server_for_its_ack() {
    // The server's ACKs for the first records were lost: the engine is at its bound of
    // unacknowledged plaintext and takes nothing more from the client. Each client segment
    // then resends one byte of the oldest unacknowledged plaintext, so the server answers with
    // its current ACK and the flow moves again.
    let (mut f, _, start) = setup(TLS13[0]);
    let limits = UpLimits { unacked_bytes: 3000, ..LIMITS };
    let mut pairs = SeqMap::new(1, 1, 64);
    pairs.push(f.handshake_bytes as u32, 0, 0).unwrap();
    let mut up = Upstream::new(pairs, limits);
    let (plain, wire) = client_writes(&mut f, &[vec![5; 2000], vec![6; 2000], vec![7; 2000]]);
    let mut out = Vec::new();
    let first_two = 2 * (2000 + 22);
    up.segment(&mut f.layer, start, &wire[..first_two], &mut out).unwrap();
    assert_eq!(check(&out, &plain[..4000]), 4001);
    out.clear();
    up.segment(&mut f.layer, start + first_two as u64, &wire[first_two..], &mut out).unwrap();
    assert_eq!(
        out,
        vec![Up::Forward { inner: 1, data: vec![5].into() }],
        "one byte at the server's last ACK"
    );
    assert_eq!(up.stats().dropped, 1);
    // The server's answer acknowledges all it has; the client's retransmission goes through.
    assert!(up.server_ack(4001).is_some());
    out.clear();
    up.segment(&mut f.layer, start + first_two as u64, &wire[first_two..], &mut out).unwrap();
    assert_eq!(out, vec![Up::Forward { inner: 4001, data: plain[4000..].to_vec().into() }]);
}

#[test]
fn the_handshake_runs_through_the_same_path_and_hands_over_mid_segment() {
    use tlsgate_inline::handshake::{Handshake, Progress};
    use tlsgate_record::session::Session;
    for &suite in TLS13.iter().chain(TLS12) {
        let (server_cfg, client_cfg) = configs(suite);
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(client_cfg, name).unwrap();
        let mut hs = Handshake::new(server_cfg).unwrap();
        let mut up = Upstream::new(SeqMap::new(1, 1, 64), LIMITS);
        let mut layer: Option<Session> = None;
        let mut offset = 1u64;
        let mut out = Vec::new();
        for _ in 0..6 {
            if !client.is_handshaking() {
                // The first application data leaves with (TLS 1.3) or right after the Finished.
                client.writer().write_all(b"first request").unwrap();
            }
            let bytes = client_output(&mut client);
            // 7-byte segments: records and the hand-over cut anywhere.
            for chunk in bytes.chunks(7) {
                match layer.as_mut() {
                    None => {
                        let mut to_client = Vec::new();
                        let p = up.handshake_segment(&mut hs, offset, chunk, &mut to_client).unwrap();
                        if !to_client.is_empty() {
                            client.read_tls(&mut &to_client[..]).unwrap();
                            client.process_new_packets().unwrap();
                        }
                        if p == Progress::Complete {
                            let hs = std::mem::replace(&mut hs, Handshake::new(configs(suite).0).unwrap());
                            let (secrets, kernel) = hs.into_keys().unwrap();
                            let mut l = Session::from_keys(secrets, kernel).unwrap();
                            up.drain(&mut l, &mut out).unwrap();
                            layer = Some(l);
                        }
                    }
                    Some(l) => up.segment(l, offset, chunk, &mut out).unwrap(),
                }
                offset += chunk.len() as u64;
            }
            if !out.is_empty() {
                break;
            }
        }
        assert_eq!(out, vec![Up::Forward { inner: 1, data: b"first request".to_vec().into() }], "{suite:?}");
        // Only the application record carries inner bytes; the handshake records map to a point.
        assert!(up.pairs().entries().filter(|e| e.inner_len > 0).count() == 1);
        assert_eq!(
            up.client_ack(),
            up.pairs().entries().last().unwrap().outer,
            "handshake acked by the engine"
        );
    }
}

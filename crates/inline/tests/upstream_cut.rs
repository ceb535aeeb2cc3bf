//! The client → server record path in cut-through release, on real rustls client records:
//! plaintext leaves before its record's end, exactly as written whatever the cuts, reordering and
//! duplication; a bad tag fails the flow after the first part left; retransmissions inside a
//! record re-deliver the very bytes that left; control records are judged whole.

mod common;

use common::*;
use std::io::Write;
use tlsgate_inline::seq_map::SeqMap;
use tlsgate_inline::tables::Release;
use tlsgate_inline::upstream::{Up, UpError, UpLimits, Upstream};
use tlsgate_record::frame::ContentType;
use tlsgate_record::session::Reason;

const LIMITS: UpLimits = UpLimits {
    hold_bytes: 256 * 1024,
    hold_segments: 1024,
    unacked_bytes: 1 << 20,
    record_limit: 16384 + 2048,
};

fn setup(suite: rustls::SupportedCipherSuite) -> (Flow, Upstream, u64) {
    upstream_after_handshake(suite, LIMITS, Release::CutThrough)
}

fn forwarded(out: &[Up]) -> usize {
    out.iter().map(|u| if let Up::Forward { data, .. } = u { data.len() } else { 0 }).sum()
}

#[test]
fn plaintext_leaves_before_the_records_end_every_suite() {
    for suite in all_suites() {
        let (mut f, mut up, start) = setup(suite);
        let (plain, wire) = client_writes(&mut f, &[vec![5; 16384]]);
        let mut out = Vec::new();
        let chunks: Vec<&[u8]> = wire.chunks(1000).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            up.segment(&mut f.layer, start + (i * 1000) as u64, chunk, &mut out).unwrap();
            if i + 1 < chunks.len() {
                // Everything decrypted so far, less at most the held type byte / padding.
                let body_seen = (i + 1) * 1000 - f.layer.head();
                assert!(forwarded(&out) + 1 >= body_seen.min(plain.len()), "{suite:?} segment {i}");
                assert!(up.pairs().entries().all(|e| e.inner_len == 0), "no entry before the end");
                assert_eq!(up.inner_end(), 1 + forwarded(&out) as u64);
            }
        }
        assert_eq!(check(&out, &plain), 1 + plain.len() as u64);
        assert_eq!(forwarded(&out), plain.len(), "each byte once");
        let e = up.pairs().entries().last().unwrap();
        assert_eq!((e.inner, e.inner_len as usize), (1, plain.len()), "{suite:?}");
        // Early: what the first 16 segments decrypted (less TLS 1.3's held last byte); the 17th
        // completes the record and waits for the tag.
        let tls13 = f.layer.version() == tlsgate_record::crypto::Version::Tls13;
        let early = 16 * 1000 - f.layer.head() - usize::from(tls13);
        assert_eq!(up.stats().before_tag as usize, early, "{suite:?}");
    }
}

#[test]
fn in_order_segments_at_random_sizes_give_the_plaintext_exactly() {
    let mut rng = Rng(77);
    for suite in all_suites() {
        for _ in 0..4 {
            let (mut f, mut up, start) = setup(suite);
            let (plain, wire) = client_writes(&mut f, &messages());
            let mut out = Vec::new();
            let mut at = 0;
            while at < wire.len() {
                let n = (1 + rng.below(1500) as usize).min(wire.len() - at);
                up.segment(&mut f.layer, start + at as u64, &wire[at..at + n], &mut out).unwrap();
                at += n;
            }
            assert_eq!(check(&out, &plain), 1 + plain.len() as u64, "{suite:?}");
            assert_eq!(forwarded(&out), plain.len());
            assert!(up.stats().before_tag > 0);
            assert!(up.queue_rows().is_empty());
        }
    }
}

#[test]
fn every_cut_of_a_small_stream() {
    for suite in all_suites() {
        // Two records: one under the TLS 1.3 hold threshold, one over it; a fresh flow per cut.
        let wire_len = {
            let (mut f, _, _) = setup(suite);
            client_writes(&mut f, &[vec![1; 20], (1..=60u8).collect()]).1.len()
        };
        for cut in 0..=wire_len {
            let (mut f, mut up, start) = setup(suite);
            let (plain, wire) = client_writes(&mut f, &[vec![1; 20], (1..=60u8).collect()]);
            let mut out = Vec::new();
            up.segment(&mut f.layer, start, &wire[..cut], &mut out).unwrap();
            up.segment(&mut f.layer, start + cut as u64, &wire[cut..], &mut out).unwrap();
            assert_eq!(check(&out, &plain), 1 + plain.len() as u64, "{suite:?} cut {cut}");
            assert_eq!(forwarded(&out), plain.len(), "{suite:?} cut {cut}");
        }
    }
}

#[test]
fn reordered_and_duplicated_segments_give_the_same_plaintext() {
    let suites = all_suites();
    for seed in 1..40u64 {
        let suite = suites[seed as usize % suites.len()];
        let (mut f, mut up, start) = setup(suite);
        let (plain, wire) = client_writes(&mut f, &messages());
        let fed = shuffled_segments(&wire, start, seed);
        let mut out = Vec::new();
        for (off, data) in &fed {
            up.segment(&mut f.layer, *off, data, &mut out).unwrap();
        }
        assert_eq!(check(&out, &plain), 1 + plain.len() as u64, "seed {seed} {suite:?}");
    }
}

#[test]
fn a_tampered_record_fails_at_its_end_after_its_first_part_left() {
    for suite in [TLS13[0], TLS13[2], TLS12[1]] {
        let (mut f, mut up, start) = setup(suite);
        let (plain, mut wire) = client_writes(&mut f, &[b"first".to_vec(), vec![7; 3000]]);
        let head = f.layer.head();
        let first_len = head + 5 + f.layer.version().trail();
        // A ciphertext byte 1000 bytes into the second record's plaintext.
        wire[first_len + head + 1000] ^= 0x40;
        let mut out = Vec::new();
        let mut err = None;
        for (i, chunk) in wire.chunks(500).enumerate() {
            if let Err(e) = up.segment(&mut f.layer, start + (i * 500) as u64, chunk, &mut out) {
                err = Some(e);
                break;
            }
        }
        assert!(
            matches!(err, Some(UpError::Session(ref f)) if f.reason == Reason::BadRecordMac),
            "{suite:?}"
        );
        // What left: "first", then the second record up to its last segment, the flipped byte
        // flipped (unauthenticated: the weaker guarantee), nothing of the last segment.
        let got: Vec<u8> = out
            .iter()
            .flat_map(|u| if let Up::Forward { data, .. } = u { data.to_vec() } else { Vec::new() })
            .collect();
        let last_segment = (wire.len() - 1) / 500 * 500;
        let tls13 = f.layer.version() == tlsgate_record::crypto::Version::Tls13;
        assert_eq!(got.len(), 5 + last_segment - first_len - head - usize::from(tls13), "{suite:?}");
        let diff: Vec<usize> = (0..got.len()).filter(|&i| got[i] != plain[i]).collect();
        assert_eq!(diff, vec![5 + 1000], "{suite:?}");
        assert_eq!(got[1005], plain[1005] ^ 0x40);
        // An RST to the server goes right after what it received.
        assert_eq!(up.inner_end(), 1 + got.len() as u64);
    }
}

#[test]
fn retransmissions_inside_a_record_redeliver_what_left() {
    for suite in [TLS13[1], TLS12[0]] {
        let (mut f, mut up, start) = setup(suite);
        let (plain, wire) = client_writes(&mut f, &[(0..5000u32).map(|i| (i % 251) as u8).collect()]);
        let head = f.layer.head() as u64;
        let mut out = Vec::new();
        up.segment(&mut f.layer, start, &wire[..2000], &mut out).unwrap();
        let first: Vec<u8> = out
            .iter()
            .flat_map(|u| if let Up::Forward { data, .. } = u { data.to_vec() } else { vec![] })
            .collect();
        assert!(first.len() >= 2000 - head as usize - 1 - 32, "{suite:?} {}", first.len());
        assert_eq!(&first[..], &plain[..first.len()]);
        // The client resends part of it (the server's ACK was lost): the same bytes again.
        out.clear();
        up.segment(&mut f.layer, start + 100, &wire[100..600], &mut out).unwrap();
        assert_eq!(out, vec![Up::Forward { inner: 1, data: first.clone().into() }], "{suite:?}");
        // The server acknowledged 1000 bytes: byte for byte inside the record, and the engine
        // acknowledges the client up to every byte it holds (the record's end is still to come).
        assert_eq!(up.server_ack(1001), Some(start + head + 1000));
        assert_eq!(up.client_ack(), start + 2000);
        out.clear();
        up.segment(&mut f.layer, start, &wire[..1500], &mut out).unwrap();
        assert_eq!(out, vec![Up::Forward { inner: 1001, data: first[1000..].to_vec().into() }]);
        // The rest: the record ends, its tag verifies, the plaintext is complete once.
        out.clear();
        up.segment(&mut f.layer, start + 2000, &wire[2000..], &mut out).unwrap();
        let rest: Vec<u8> = out
            .iter()
            .flat_map(|u| if let Up::Forward { data, .. } = u { data.to_vec() } else { vec![] })
            .collect();
        assert_eq!([&first[..], &rest[..]].concat(), plain);
        // The record's tail resent: everything the server has not acknowledged, as it left.
        out.clear();
        up.segment(&mut f.layer, start + wire.len() as u64 - 1, &wire[wire.len() - 1..], &mut out).unwrap();
        assert!(matches!(out[0], Up::Forward { inner: 1001, .. }));
        let again: Vec<u8> = out
            .iter()
            .flat_map(|u| if let Up::Forward { data, .. } = u { data.to_vec() } else { vec![] })
            .collect();
        assert_eq!(again, plain[1000..]);
        assert_eq!(up.server_ack(5001), Some(start + wire.len() as u64), "the whole record, tag included");
        assert!(up.pairs().is_empty());
    }
}

#[test]
fn a_client_key_update_mid_stream_is_followed() {
    let (mut f, mut up, start) = setup(TLS13[2]);
    f.client.writer().write_all(&[b'a'; 100]).unwrap();
    let mut wire = client_output(&mut f.client);
    f.client.refresh_traffic_keys().unwrap();
    f.client.writer().write_all(&[b'b'; 100]).unwrap();
    wire.extend(client_output(&mut f.client));
    let mut out = Vec::new();
    for (i, b) in wire.iter().enumerate() {
        up.segment(&mut f.layer, start + i as u64, std::slice::from_ref(b), &mut out).unwrap();
    }
    let kinds: Vec<_> = out.iter().map(|u| matches!(u, Up::Control { .. })).collect();
    assert_eq!(kinds.iter().filter(|k| **k).count(), 1);
    let plain = [vec![b'a'; 100], vec![b'b'; 100]].concat();
    assert_eq!(check(&out, &plain), 201);
    assert_eq!(forwarded(&out), 200);
    // Byte by byte: all but the type byte of each data record left before its end.
    assert!(up.stats().before_tag >= 200 - 2);
}

#[test]
fn short_and_whole_control_records_are_judged_whole_padded_ones_after_release_fail() {
    // A KeyUpdate padded with 100 zeros: the type byte (22) is the last non-zero one.
    let mut padded = vec![24, 0, 0, 1, 0, ContentType::HANDSHAKE.0];
    padded.extend([0; 100]);
    // Sent whole in one segment: nothing leaves before the tag, the update is followed.
    let (mut f, mut up, start) = setup(TLS13[0]);
    let mut rec = Vec::new();
    f.client_key.seal(ContentType(0), &padded, &mut rec).unwrap();
    let mut out = Vec::new();
    up.segment(&mut f.layer, start, &rec, &mut out).unwrap();
    assert_eq!(out, vec![Up::Control { reply: vec![] }], "followed, nothing to answer");
    // A short alert split byte by byte: under the hold threshold, nothing leaves.
    let (mut f, mut up, start) = setup(TLS13[1]);
    let mut rec = Vec::new();
    f.client_key.seal(ContentType::ALERT, &[1, 0], &mut rec).unwrap();
    let mut out = Vec::new();
    for (i, b) in rec.iter().enumerate() {
        up.segment(&mut f.layer, start + i as u64, std::slice::from_ref(b), &mut out).unwrap();
    }
    assert_eq!(out, vec![Up::Closed]);
    // The padded KeyUpdate split after 60 bytes: its first 5 bytes looked like data and left,
    // then the record turned out to be a handshake message: fatal.
    let (mut f, mut up, start) = setup(TLS13[2]);
    let mut rec = Vec::new();
    f.client_key.seal(ContentType(0), &padded, &mut rec).unwrap();
    let mut out = Vec::new();
    up.segment(&mut f.layer, start, &rec[..60], &mut out).unwrap();
    assert_eq!(out, vec![Up::Forward { inner: 1, data: vec![24, 0, 0, 1, 0].into() }]);
    let err = up.segment(&mut f.layer, start + 60, &rec[60..], &mut out).unwrap_err();
    assert!(
        matches!(&err, UpError::Session(f) if f.reason == Reason::ControlAfterRelease(ContentType::HANDSHAKE.0)),
        "{err:?}"
    );
}

#[test]
fn trailing_zeros_of_data_wait_until_a_later_non_zero_byte_or_the_end() {
    let (mut f, mut up, start) = setup(TLS13[0]);
    let mut msg = vec![9u8; 50];
    msg.extend([0; 400]);
    msg.extend([8; 10]);
    let (plain, wire) = client_writes(&mut f, &[msg]);
    let mut out = Vec::new();
    // Header + 300 bytes: 50 nines and 250 zeros; the last non-zero byte is held, zeros after it.
    up.segment(&mut f.layer, start, &wire[..5 + 300], &mut out).unwrap();
    assert_eq!(out, vec![Up::Forward { inner: 1, data: vec![9; 49].into() }]);
    up.segment(&mut f.layer, start + 305, &wire[305..], &mut out).unwrap();
    assert_eq!(check(&out, &plain[..]), 1 + plain.len() as u64);
    assert_eq!(forwarded(&out), plain.len());
}

#[test]
fn the_hold_queue_bound_drops_and_recovers() {
    let (mut f, _, start) = setup(TLS13[0]);
    let limits = UpLimits { hold_bytes: 4000, ..LIMITS };
    let mut pairs = SeqMap::new(1, 1, 64);
    pairs.push(f.handshake_bytes as u32, 0, 0).unwrap();
    let mut up = Upstream::new(pairs, limits).with_release(Release::CutThrough);
    let (plain, wire) = client_writes(&mut f, &[vec![3; 12000]]);
    let mut out = Vec::new();
    // Everything but the first segment arrives first: only 4000 bytes fit, nothing leaves.
    for (i, chunk) in wire.chunks(1000).enumerate().skip(1) {
        up.segment(&mut f.layer, start + (i * 1000) as u64, chunk, &mut out).unwrap();
    }
    assert!(up.stats().dropped > 0);
    assert!(out.is_empty());
    assert!(up.state_bytes() <= 4000 + 64 * 64);
    // The client retransmits everything in order: the record completes, every byte delivered.
    for (i, chunk) in wire.chunks(1000).enumerate() {
        up.segment(&mut f.layer, start + (i * 1000) as u64, chunk, &mut out).unwrap();
    }
    assert_eq!(check(&out, &plain), 1 + plain.len() as u64);
    assert_eq!(up.pairs().entries().last().unwrap().inner_len as usize, plain.len());
}

/// Both release modes take what a record means, and the alert a broken rule gets, from the same
/// session: a KeyUpdate with request_update 2 (RFC 8446 §4.6.3: illegal_parameter), a zero-length
/// alert (§5.1: unexpected_message), a 2^14+2-byte inner plaintext (§5.4: record_overflow), a
/// TLS 1.3 ClientHello after the handshake (unexpected_message), whole or byte by byte.
#[test]
fn broken_rules_get_the_same_alert_buffered_and_cut_through() {
    let big = {
        let mut v = vec![b'x'; (1 << 14) + 1];
        v.push(ContentType::APPLICATION_DATA.0);
        v
    };
    let cases: [(&[u8], u8); 4] =
        [(&[24, 0, 0, 1, 2, 22], 47), (&[21, 0, 0], 10), (&big, 22), (&[1, 0, 0, 2, 3, 3, 22], 10)];
    for (inner, alert) in cases {
        for release in [Release::Buffered, Release::CutThrough] {
            for bytewise in [false, true] {
                let (mut f, mut up, start) = upstream_after_handshake(TLS13[0], LIMITS, release);
                // The key appends the last byte as the "type": the inner plaintext exactly.
                let (last, head) = inner.split_last().unwrap();
                let mut rec = Vec::new();
                f.client_key.seal_oversized_for_tests(ContentType(*last), head, &mut rec);
                let mut out = Vec::new();
                let mut err = None;
                let pieces: Vec<&[u8]> = if bytewise { rec.chunks(1).collect() } else { vec![&rec] };
                let mut at = start;
                for p in pieces {
                    if let Err(e) = up.segment(&mut f.layer, at, p, &mut out) {
                        err = Some(e);
                        break;
                    }
                    at += p.len() as u64;
                }
                let Some(UpError::Session(fatal)) = err else {
                    panic!("{release:?} bytewise {bytewise}: {err:?}")
                };
                assert_eq!(fatal.alert, Some(alert), "{release:?} bytewise {bytewise}: {fatal}");
                let mut sent = Vec::new();
                assert_eq!(f.layer.send_alert(&mut sent), Some(alert));
                assert!(!sent.is_empty());
            }
        }
    }
}

//! The engine's handshake and record layer against a real rustls client in memory: the client
//! encrypts and the engine opens, the engine seals and the client reads, for every suite.

mod common;

use common::*;
use rustls::SupportedCipherSuite;
use std::io::Write;
use tlsgate_record::crypto::Version;
use tlsgate_record::frame::MAX_PLAINTEXT;
use tlsgate_record::session::{Reason, Received};

fn both_directions(suite: SupportedCipherSuite) {
    let mut f = Flow::handshake(suite).unwrap();
    let version = if TLS13.contains(&suite) { Version::Tls13 } else { Version::Tls12 };
    assert_eq!(f.layer.version(), version);
    // TLS 1.3: the traffic secrets captured from the handshake; TLS 1.2: nothing to keep.
    assert!(!f.layer.keeps_rustls_schedule(), "{suite:?}");

    // Client → engine: a short record, then maximum-size ones.
    f.client.writer().write_all(b"hello").unwrap();
    assert_eq!(f.engine_reads_data(), b"hello");
    let big: Vec<u8> = (0..MAX_PLAINTEXT * 2 + 100).map(|i| (i % 251) as u8).collect();
    f.client.writer().write_all(&big).unwrap();
    assert_eq!(f.engine_reads_data(), big);

    // Engine → client: one record per server segment, nothing for no data, a maximum-size one,
    // and one byte more cut in two records.
    let mut wire = Vec::new();
    let s0 = f.layer.seqs().1;
    f.layer.seal(b"world", &mut wire).unwrap();
    f.layer.seal(b"", &mut wire).unwrap();
    f.layer.seal(&big[..MAX_PLAINTEXT], &mut wire).unwrap();
    assert_eq!(f.layer.seqs().1, s0 + 2, "each record its own sequence number");
    assert_eq!(f.layer.head(), record_head(suite));
    assert_eq!(wire.len(), 5 + MAX_PLAINTEXT + 2 * f.layer.overhead());
    f.layer.seal(&big[..MAX_PLAINTEXT + 1], &mut wire).unwrap();
    assert_eq!(f.layer.seqs().1, s0 + 4);
    let mut expect = b"world".to_vec();
    expect.extend_from_slice(&big[..MAX_PLAINTEXT]);
    expect.extend_from_slice(&big[..MAX_PLAINTEXT + 1]);
    assert_eq!(f.client_reads(&wire), expect);

    // A tampered ciphertext byte fails the tag.
    f.client.writer().write_all(b"secret").unwrap();
    let bytes = client_output(&mut f.client);
    let (h, mut body) = f.records.push(&bytes).pop().unwrap();
    let n = body.len();
    body[n / 2] ^= 1;
    let mut out = Vec::new();
    let fatal = f.layer.open(h, &mut body, &mut out).unwrap_err();
    assert_eq!(fatal.reason, Reason::BadRecordMac);
    assert_eq!(f.layer.send_alert(&mut out), Some(20), "bad_record_mac");
}

fn close_notify_both_ways(suite: SupportedCipherSuite) {
    let mut f = Flow::handshake(suite).unwrap();
    f.client.send_close_notify();
    let got = f.engine_reads();
    assert_eq!(got.len(), 1);
    let (inb, reply) = got.into_iter().next().unwrap().unwrap();
    assert_eq!((inb, reply), (Received::Closed, vec![]));
    let mut wire = Vec::new();
    f.layer.seal(b"bye", &mut wire).unwrap();
    f.layer.close(&mut wire).unwrap();
    assert_eq!(f.client_reads(&wire), b"bye");
    assert!(f.client.process_new_packets().unwrap().peer_has_closed());
}

#[test]
fn tls13_all_suites_both_directions() {
    for &s in TLS13 {
        both_directions(s);
    }
}

#[test]
fn tls12_all_suites_both_directions() {
    for &s in TLS12 {
        both_directions(s);
    }
}

#[test]
fn close_notify_each_version() {
    close_notify_both_ways(TLS13[0]);
    close_notify_both_ways(TLS12[0]);
}

#[test]
fn tls13_key_updates_are_followed_both_ways() {
    for &s in TLS13 {
        let mut f = Flow::handshake(s).unwrap();
        // The session follows updates with the traffic secrets captured from the handshake.
        assert!(!f.layer.keeps_rustls_schedule(), "{s:?}");
        f.client.writer().write_all(b"before").unwrap();
        assert_eq!(f.engine_reads_data(), b"before");
        // The client moves its keys on (and asks the engine to do the same).
        f.client.refresh_traffic_keys().unwrap();
        f.client.writer().write_all(b"after").unwrap();
        let got = f.engine_reads();
        assert_eq!(got.len(), 2);
        let mut it = got.into_iter();
        // rustls asks for ours in return: the session's answer comes with the update.
        let Ok((Received::Nothing, mut wire)) = it.next().unwrap() else { panic!() };
        assert!(!wire.is_empty(), "the session answered the requested update");
        let (inb, pt) = it.next().unwrap().unwrap();
        assert!(matches!(inb, Received::Data(_)), "{inb:?}");
        assert_eq!(f.layer.seqs(), (1, 0), "new keys both ways");
        assert_eq!(pt, b"after");
        // The engine seals under its new key; the client follows.
        f.layer.seal(b"reply", &mut wire).unwrap();
        assert_eq!(f.layer.seqs().1, 1);
        assert_eq!(f.client_reads(&wire), b"reply");
        // An unrequested update from the engine too.
        let mut wire = Vec::new();
        f.layer.send_key_update(&mut wire).unwrap();
        f.layer.seal(b"again", &mut wire).unwrap();
        assert_eq!(f.layer.seqs().1, 1);
        assert_eq!(f.client_reads(&wire), b"again");
        f.client.writer().write_all(b"still").unwrap();
        assert_eq!(f.engine_reads_data(), b"still");
        // A second generation of the client's secret.
        f.client.refresh_traffic_keys().unwrap();
        f.client.writer().write_all(b"twice").unwrap();
        let got = f.engine_reads();
        let Some(Ok((Received::Data(_), pt))) = got.last() else { panic!("{got:?}") };
        assert_eq!(pt, b"twice");
        assert_eq!(f.layer.seqs().0, 1);
    }
}

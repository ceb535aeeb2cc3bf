//! Every post-handshake rule against a real rustls client: the handshake runs through
//! [`crate::handshake`], the session gets the keys, and records the client would never write
//! (malformed, oversized, padded) are sealed with a copy of its sending key.

use super::*;
use crate::crypto::{KeySchedule, RecordKey, Suite};
use crate::frame::{Event, Framer, HEADER_LEN, MAX_CIPHERTEXT_TLS12, MAX_CIPHERTEXT_TLS13};
use crate::handshake::{Progress, ServerHandshake};
use alert::*;
use rustls::crypto::aws_lc_rs::{cipher_suite as cs, default_provider};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ConnectionTrafficSecrets, RootCertStore, ServerConfig};
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};
use std::io::{Read, Write};
use std::sync::Arc;

pub(super) const TLS13: SupportedCipherSuite = cs::TLS13_AES_128_GCM_SHA256;
const TLS13_CHACHA: SupportedCipherSuite = cs::TLS13_CHACHA20_POLY1305_SHA256;
pub(super) const TLS12: SupportedCipherSuite = cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256;

pub(super) const AD: ContentType = ContentType::APPLICATION_DATA;
pub(super) const HS: ContentType = ContentType::HANDSHAKE;
pub(super) const AL: ContentType = ContentType::ALERT;

fn configs(suite: SupportedCipherSuite) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(CryptoProvider { cipher_suites: vec![suite], ..default_provider() });
    let versions: [&SupportedProtocolVersion; 1] = [suite.version()];
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    server.enable_secret_extraction = true;
    // No tickets: the client's first records after the handshake are what the tests write.
    server.send_tls13_tickets = 0;
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

fn key_copy(version: Version, seq: u64, s: &ConnectionTrafficSecrets) -> RecordKey {
    let (suite, key, iv) = match s {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Suite::Aes128Gcm, key, iv),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Suite::Aes256Gcm, key, iv),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (Suite::Chacha20Poly1305, key, iv),
        _ => panic!("suite"),
    };
    RecordKey::from_parts(version, suite, key.as_ref(), iv.as_ref().try_into().unwrap(), seq).unwrap()
}

/// Whole records in a byte stream.
fn records(wire: &[u8]) -> Vec<(Header, Vec<u8>)> {
    let mut f = Framer::new(0, MAX_CIPHERTEXT_TLS12);
    let mut input = wire;
    let mut out = Vec::new();
    let mut cur = None;
    while let Some(ev) = f.next(&mut input).unwrap() {
        match ev {
            Event::Header { header, .. } => cur = Some((header, Vec::new())),
            Event::Body { data, .. } => cur.as_mut().unwrap().1.extend_from_slice(data),
            Event::End { .. } => out.push(cur.take().unwrap()),
        }
    }
    assert!(f.at_boundary());
    out
}

/// The client and the session of one connection after the handshake.
pub(super) struct Pair {
    client: ClientConnection,
    pub(super) session: Session,
    /// Copies of the client's sending key (to write any record) and receiving key (to read what
    /// the session sent). In step only while the rustls client itself sends or reads nothing.
    c_tx: RecordKey,
    c_rx: RecordKey,
}

fn drain(client: &mut ClientConnection) -> Vec<u8> {
    let mut out = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut out).unwrap();
    }
    out
}

impl Pair {
    pub(super) fn new(suite: SupportedCipherSuite) -> Pair {
        Pair::with_schedule(suite, false)
    }

    /// `tls12_compact`: a TLS 1.2 session keeps no rustls connection (`KeySchedule::Tls12`), as
    /// a server's compact schedule.
    fn with_schedule(suite: SupportedCipherSuite, tls12_compact: bool) -> Pair {
        let (server_cfg, client_cfg) = configs(suite);
        let mut client =
            ClientConnection::new(client_cfg, ServerName::try_from("localhost").unwrap()).unwrap();
        let mut hs = ServerHandshake::new(server_cfg).unwrap();
        for _ in 0..10 {
            let mut to_client = Vec::new();
            for (h, body) in records(&drain(&mut client)) {
                let mut whole = h.encode().to_vec();
                whole.extend_from_slice(&body);
                hs.record(&whole, &mut to_client).unwrap();
            }
            if !to_client.is_empty() {
                client.read_tls(&mut &to_client[..]).unwrap();
                client.process_new_packets().unwrap();
            }
            if hs.is_complete() && !client.is_handshaking() && !client.wants_write() {
                let (secrets, kernel) = hs.into_keys().unwrap();
                let version = Version::from_rustls(suite.version().version).unwrap();
                let c_tx = key_copy(version, secrets.rx.0, &secrets.rx.1);
                let c_rx = key_copy(version, secrets.tx.0, &secrets.tx.1);
                let layer = match version {
                    Version::Tls12 if tls12_compact => RecordLayer::new(secrets, KeySchedule::Tls12),
                    _ => RecordLayer::new(secrets, kernel),
                };
                let session = Session::new(layer.unwrap());
                return Pair { client, session, c_tx, c_rx };
            }
            assert_ne!(hs.record(&[], &mut Vec::new()).ok(), Some(Progress::Complete));
        }
        panic!("handshake did not complete");
    }

    /// A record from the client: TLS 1.3 `inner` is the whole TLSInnerPlaintext (content, type,
    /// padding), TLS 1.2 `inner` is the plaintext of a record of outer type `ct`.
    fn raw(&mut self, ct: ContentType, inner: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        match self.session.version() {
            Version::Tls13 => {
                // The key appends the type byte: write all but the last byte of `inner` as
                // plaintext, the last as the "type".
                let (last, head) = inner.split_last().expect("TLS 1.3 inner plaintext");
                self.c_tx.seal_oversized(ContentType(*last), head, &mut wire);
                assert_eq!(ct, AD, "TLS 1.3 outer type");
            }
            Version::Tls12 => self.c_tx.seal_oversized(ct, inner, &mut wire),
        }
        wire
    }

    /// A record of type `ct` carrying `content`, as a well-behaved client writes it.
    fn rec(&mut self, ct: ContentType, content: &[u8]) -> Vec<u8> {
        match self.session.version() {
            Version::Tls13 => {
                let mut inner = content.to_vec();
                inner.push(ct.0);
                self.raw(AD, &inner)
            }
            Version::Tls12 => self.raw(ct, content),
        }
    }

    /// Feeds the records in `wire` to the session until one fails; returns the outcome of each
    /// (data as bytes) and what the session sent.
    fn feed(&mut self, wire: &[u8]) -> (Vec<Result<Got, Fatal>>, Vec<u8>) {
        let mut got = Vec::new();
        let mut out = Vec::new();
        for (h, mut body) in records(wire) {
            let r = self.session.header(h).and_then(|()| self.session.open(h, &mut body, &mut out));
            let stop = r.is_err();
            got.push(r.map(|r| match r {
                Received::Data(range) => Got::Data(body[range].to_vec()),
                Received::Nothing => Got::Nothing,
                Received::Closed => Got::Closed,
            }));
            if stop {
                self.session.send_alert(&mut out);
                break;
            }
        }
        (got, out)
    }

    /// The one outcome of `wire` (a single record).
    fn one(&mut self, wire: &[u8]) -> (Result<Got, Fatal>, Vec<u8>) {
        let (mut got, out) = self.feed(wire);
        assert_eq!(got.len(), 1);
        (got.remove(0), out)
    }

    /// What the session sent, opened with the client's receive key: (content type, content).
    fn sent(&mut self, wire: &[u8]) -> Vec<(ContentType, Vec<u8>)> {
        records(wire)
            .into_iter()
            .map(|(h, mut body)| {
                let o = self.c_rx.open(h, &mut body).unwrap();
                (o.content_type, body[o.plaintext].to_vec())
            })
            .collect()
    }

    /// Hands the session's records to the rustls client; returns the plaintext it reads.
    fn client_reads(&mut self, wire: &[u8]) -> Vec<u8> {
        let mut input = wire;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !input.is_empty() {
            self.client.read_tls(&mut input).unwrap();
            self.client.process_new_packets().unwrap();
            // Drained as it goes: rustls bounds the plaintext it buffers.
            loop {
                match self.client.reader().read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        out
    }

    /// Asserts that the record failed with `alert`, sent to the client, the client at fault.
    fn fails_with(&mut self, wire: &[u8], alert: u8) -> Fatal {
        let (r, out) = self.one(wire);
        let f = r.expect_err("a fatal error");
        assert_eq!((f.side, f.alert), (Side::Client, Some(alert)), "{f}");
        assert_eq!(self.sent(&out), [(AL, vec![FATAL, alert])], "{f}");
        // Sticky: the session refuses everything after.
        assert_eq!(self.session.seal(b"x", &mut Vec::new()), Err(f.clone()));
        assert_eq!(
            self.session.header(Header { content_type: AD, version: 0x0303, len: 20 }),
            Err(f.clone())
        );
        assert_eq!(self.session.send_alert(&mut Vec::new()), None, "the alert goes once");
        f
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Got {
    Data(Vec<u8>),
    Nothing,
    Closed,
}

pub(super) fn both() -> [SupportedCipherSuite; 2] {
    [TLS13, TLS12]
}

#[test]
fn data_from_a_real_client_and_zero_length_data_records_rfc8446_5_1() {
    for suite in [TLS13, TLS13_CHACHA, TLS12] {
        let mut p = Pair::new(suite);
        p.client.writer().write_all(b"hello").unwrap();
        let wire = drain(&mut p.client);
        assert_eq!(p.feed(&wire).0, [Ok(Got::Data(b"hello".to_vec()))]);
        // The copy of the client key continues where rustls stopped.
        p.c_tx.seal(AD, b"", &mut Vec::new()).unwrap();
        // §5.1: zero-length application data is allowed (and is no end of stream).
        let empty = p.rec(AD, b"");
        let more = p.rec(AD, b"more");
        let wire = [empty, more].concat();
        assert_eq!(p.feed(&wire).0, [Ok(Got::Data(vec![])), Ok(Got::Data(b"more".to_vec()))], "{suite:?}");
        // TLS 1.3 padding after the type byte is stripped (§5.4).
        if suite.version() == &rustls::version::TLS13 {
            let padded = p.raw(AD, b"pad\x17\0\0\0\0");
            assert_eq!(p.feed(&padded).0, [Ok(Got::Data(b"pad".to_vec()))]);
        }
    }
}

#[test]
fn ciphertext_over_the_limit_is_record_overflow_at_the_header_rfc8446_5_2_rfc5246_6_2_3() {
    for (suite, limit) in [(TLS13, MAX_CIPHERTEXT_TLS13), (TLS12, MAX_CIPHERTEXT_TLS12)] {
        let mut p = Pair::new(suite);
        assert_eq!(limit, if suite == TLS13 { (1 << 14) + 256 } else { (1 << 14) + 2048 });
        let at = Header { content_type: AD, version: 0x0303, len: limit as u16 };
        assert_eq!(p.session.header(at), Ok(()));
        let over = Header { len: limit as u16 + 1, ..at };
        let f = p.session.header(over).unwrap_err();
        assert_eq!((f.side, f.alert), (Side::Client, Some(RECORD_OVERFLOW)));
        let mut out = Vec::new();
        assert_eq!(p.session.send_alert(&mut out), Some(RECORD_OVERFLOW));
        assert_eq!(p.sent(&out), [(AL, vec![FATAL, RECORD_OVERFLOW])]);
    }
}

#[test]
fn tls13_inner_plaintext_over_2_14_plus_1_is_record_overflow_rfc8446_5_4() {
    let mut p = Pair::new(TLS13);
    // 2^14 bytes of data and the type byte: the largest allowed.
    let max = p.rec(AD, &vec![7u8; 1 << 14]);
    assert_eq!(p.feed(&max).0, [Ok(Got::Data(vec![7u8; 1 << 14]))]);
    // One byte more, of data or of padding: record_overflow.
    let over = p.rec(AD, &vec![7u8; (1 << 14) + 1]);
    p.fails_with(&over, RECORD_OVERFLOW);
    let mut p = Pair::new(TLS13);
    let mut inner = vec![7u8; 1 << 14];
    inner.extend([23, 0]);
    let padded = p.raw(AD, &inner);
    p.fails_with(&padded, RECORD_OVERFLOW);
}

#[test]
fn tls12_plaintext_over_2_14_is_record_overflow_rfc5246_6_2_1() {
    let mut p = Pair::new(TLS12);
    let max = p.rec(AD, &vec![1u8; 1 << 14]);
    assert_eq!(p.feed(&max).0, [Ok(Got::Data(vec![1u8; 1 << 14]))]);
    let over = p.rec(AD, &vec![1u8; (1 << 14) + 1]);
    p.fails_with(&over, RECORD_OVERFLOW);
}

#[test]
fn a_record_that_does_not_verify_is_bad_record_mac_rfc8446_5_2() {
    for suite in both() {
        let mut p = Pair::new(suite);
        let mut wire = p.rec(AD, b"secret");
        let last = wire.len() - 1;
        wire[last] ^= 1;
        p.fails_with(&wire, BAD_RECORD_MAC);
        // Too short to hold a tag at all.
        let mut p = Pair::new(suite);
        p.fails_with(&[23, 3, 3, 0, 3, 1, 2, 3], BAD_RECORD_MAC);
    }
}

#[test]
fn tls13_records_of_another_outer_type_are_unexpected_message_rfc8446_5() {
    for outer in [20u8, 21, 22, 24, 99] {
        let mut p = Pair::new(TLS13);
        let f = p
            .session
            .header(Header { content_type: ContentType(outer), version: 0x0303, len: 2 })
            .unwrap_err();
        assert_eq!((f.side, f.alert), (Side::Client, Some(UNEXPECTED_MESSAGE)), "outer {outer}");
    }
    // TLS 1.2: alert, handshake and data are the record types after the handshake; a
    // change_cipher_spec (no renegotiation) or heartbeat (never negotiated) is not.
    for (outer, ok) in [(20u8, false), (21, true), (22, true), (23, true), (24, false)] {
        let mut p = Pair::new(TLS12);
        let r = p.session.header(Header { content_type: ContentType(outer), version: 0x0303, len: 30 });
        assert_eq!(r.is_ok(), ok, "outer {outer}");
    }
    let mut p = Pair::new(TLS12);
    let f = p.session.header(Header { content_type: AD, version: 0x0203, len: 30 }).unwrap_err();
    assert_eq!(f.alert, Some(DECODE_ERROR));
}

#[test]
fn tls13_unknown_or_protected_ccs_inner_types_and_all_padding_are_unexpected_message_rfc8446_5_4() {
    for inner in [&b"x\x18"[..], b"x\x63", b"\x01\x14", b"\0\0\0"] {
        let mut p = Pair::new(TLS13);
        let wire = p.raw(AD, inner);
        let f = p.fails_with(&wire, UNEXPECTED_MESSAGE);
        assert!(f.to_string().starts_with("client sent"), "{f}");
    }
}

#[test]
fn zero_length_alert_and_handshake_records_are_unexpected_message_rfc8446_5_1() {
    for suite in both() {
        for ct in [AL, HS] {
            let mut p = Pair::new(suite);
            let wire = p.rec(ct, b"");
            p.fails_with(&wire, UNEXPECTED_MESSAGE);
        }
    }
    // With padding after the type byte: still zero-length content.
    for ct in [AL, HS] {
        let mut p = Pair::new(TLS13);
        let wire = p.raw(AD, &[ct.0, 0, 0, 0]);
        p.fails_with(&wire, UNEXPECTED_MESSAGE);
    }
}

#[test]
fn an_alert_of_the_wrong_length_is_decode_error_rfc8446_5_1() {
    for suite in both() {
        for content in [&[1u8][..], &[1, 0, 0], &[2, 40, 1, 0]] {
            let mut p = Pair::new(suite);
            let wire = p.rec(AL, content);
            p.fails_with(&wire, DECODE_ERROR);
        }
    }
}

#[test]
fn close_notify_ends_the_stream_and_later_records_are_ignored_rfc8446_6_1() {
    for suite in both() {
        let mut p = Pair::new(suite);
        p.client.send_close_notify();
        let wire = drain(&mut p.client);
        assert_eq!(p.feed(&wire).0, [Ok(Got::Closed)]);
        assert!(p.session.peer_closed());
        // Anything after it is ignored, not even opened (this one would not verify).
        let mut body = vec![0u8; 40];
        let h = Header { content_type: AD, version: 0x0303, len: 40 };
        assert_eq!(p.session.open(h, &mut body, &mut Vec::new()), Ok(Received::Closed));
        // Our side still writes until it closes too.
        let mut out = Vec::new();
        p.session.seal(b"reply", &mut out).unwrap();
        p.session.close(&mut out).unwrap();
        p.session.close(&mut out).unwrap();
        assert_eq!(p.sent(&out), [(AD, b"reply".to_vec()), (AL, vec![WARNING, CLOSE_NOTIFY])]);
        let f = p.session.seal(b"late", &mut out).unwrap_err();
        assert_eq!((f.side, f.reason), (Side::Internal, Reason::WriteAfterClose));
    }
    // After our close_notify, a failure seals no alert: nothing follows close_notify.
    let mut p = Pair::new(TLS13);
    p.session.close(&mut Vec::new()).unwrap();
    let bad = p.rec(HS, &[24, 0, 0, 1, 9]);
    let (r, out) = p.one(&bad);
    assert_eq!(r.unwrap_err().alert, Some(ILLEGAL_PARAMETER));
    assert!(out.is_empty(), "no alert after close_notify");
}

#[test]
fn tls13_user_canceled_is_a_closure_alert_and_any_other_alert_is_an_error_rfc8446_6() {
    let mut p = Pair::new(TLS13);
    let cancel = p.rec(AL, &[WARNING, USER_CANCELED]);
    let close = p.rec(AL, &[WARNING, CLOSE_NOTIFY]);
    assert_eq!(p.feed(&[cancel, close].concat()).0, [Ok(Got::Nothing), Ok(Got::Closed)]);
    // Every other alert ends the connection, whatever its level says; nothing is sent back.
    for alert in [[WARNING, NO_RENEGOTIATION], [FATAL, 40], [WARNING, 200]] {
        let mut p = Pair::new(TLS13);
        let wire = p.rec(AL, &alert);
        let (r, out) = p.one(&wire);
        let f = r.unwrap_err();
        assert_eq!((f.side, f.alert, f.reason.clone()), (Side::Client, None, Reason::PeerAlert(alert[1])));
        assert!(out.is_empty());
    }
    let mut p = Pair::new(TLS13);
    let wire = p.rec(AL, &[FATAL, 40]);
    assert_eq!(p.one(&wire).0.unwrap_err().to_string(), "client sent fatal alert handshake_failure");
}

#[test]
fn tls12_warnings_are_ignored_fatal_alerts_end_the_stream_and_bad_levels_are_refused_rfc5246_7_2() {
    let mut p = Pair::new(TLS12);
    let warn = p.rec(AL, &[WARNING, USER_CANCELED]);
    let data = p.rec(AD, b"still here");
    assert_eq!(p.feed(&[warn, data].concat()).0, [Ok(Got::Nothing), Ok(Got::Data(b"still here".to_vec()))]);
    let fatal = p.rec(AL, &[FATAL, 51]);
    let (r, out) = p.one(&fatal);
    let f = r.unwrap_err();
    assert_eq!((f.side, f.alert, f.reason), (Side::Client, None, Reason::PeerAlert(51)));
    assert!(out.is_empty());
    let mut p = Pair::new(TLS12);
    let bad = p.rec(AL, &[3, 0]);
    p.fails_with(&bad, ILLEGAL_PARAMETER);
}

#[test]
fn a_key_update_from_rustls_is_followed_and_answered_rfc8446_4_6_3() {
    let mut p = Pair::new(TLS13);
    p.client.refresh_traffic_keys().unwrap();
    p.client.writer().write_all(b"after").unwrap();
    let wire = drain(&mut p.client);
    let (got, out) = p.feed(&wire);
    assert_eq!(got, [Ok(Got::Nothing), Ok(Got::Data(b"after".to_vec()))]);
    assert_eq!(p.session.seqs().0, 1, "the receive key moved on: the data record was its first");
    // Our answer, then data under our new key: the client reads both.
    let mut more = Vec::new();
    p.session.seal(b"reply", &mut more).unwrap();
    assert_eq!(p.client_reads(&[out, more].concat()), b"reply");
    assert_eq!(p.session.seqs().1, 1, "our key moved on too");
}

#[test]
fn a_requested_key_update_is_answered_once_per_run_of_requests_rfc8446_4_6_3() {
    // Two requests in a row, the second under the key the first moved to: one answer covers
    // both, as nothing was sealed between.
    let mut p = Pair::new(TLS13);
    p.client.refresh_traffic_keys().unwrap();
    let mut wire = drain(&mut p.client);
    p.client.refresh_traffic_keys().unwrap();
    wire.extend(drain(&mut p.client));
    let (got, out) = p.feed(&wire);
    assert_eq!(got, [Ok(Got::Nothing), Ok(Got::Nothing)]);
    assert_eq!(p.sent(&out), [(HS, vec![24, 0, 0, 1, 0])]);
    // Data sealed after it: a new request is answered again.
    let mut more = Vec::new();
    p.session.seal(b"one", &mut more).unwrap();
    assert_eq!(p.client_reads(&[out, more].concat()), b"one");
    p.client.refresh_traffic_keys().unwrap();
    let wire = drain(&mut p.client);
    let (got, out) = p.feed(&wire);
    assert_eq!(got, [Ok(Got::Nothing)]);
    assert_eq!(records(&out).len(), 1, "a second answer");
    let mut more = Vec::new();
    p.session.seal(b"two", &mut more).unwrap();
    assert_eq!(p.client_reads(&[out, more].concat()), b"two");
}

#[test]
fn key_update_with_request_update_not_0_or_1_is_illegal_parameter_rfc8446_4_6_3() {
    for r in [2u8, 3, 255] {
        let mut p = Pair::new(TLS13);
        let wire = p.rec(HS, &[24, 0, 0, 1, r]);
        let f = p.fails_with(&wire, ILLEGAL_PARAMETER);
        assert_eq!(f.reason, Reason::KeyUpdateRequest(r));
    }
}

#[test]
fn empty_truncated_or_overlong_key_update_is_decode_error_rfc8446_4_6_3_and_6() {
    for msg in [&[24u8, 0, 0, 0][..], &[24, 0, 0, 2, 0, 0], &[24, 0, 1, 0, 0]] {
        let mut p = Pair::new(TLS13);
        let wire = p.rec(HS, msg);
        p.fails_with(&wire, DECODE_ERROR);
    }
}

#[test]
fn a_key_update_must_end_its_record_rfc8446_5_1() {
    // Two KeyUpdates in one record, or data after one: the rest would span the key change.
    for content in [&[24u8, 0, 0, 1, 0, 24, 0, 0, 1, 0][..], &[24, 0, 0, 1, 1, 0]] {
        let mut p = Pair::new(TLS13);
        let wire = p.rec(HS, content);
        let f = p.fails_with(&wire, UNEXPECTED_MESSAGE);
        assert_eq!(f.reason, Reason::AfterKeyUpdate);
    }
}

#[test]
fn a_key_update_fragmented_across_records_is_followed_rfc8446_5_1() {
    let msg = [24u8, 0, 0, 1, 1];
    for cut in 1..msg.len() {
        let mut p = Pair::new(TLS13);
        let a = p.rec(HS, &msg[..cut]);
        let b = p.rec(HS, &msg[cut..]);
        let (got, out) = p.feed(&[a, b].concat());
        assert_eq!(got, [Ok(Got::Nothing), Ok(Got::Nothing)], "cut {cut}");
        assert_eq!(p.session.seqs().0, 0, "new receive key, cut {cut}");
        assert_eq!(p.sent(&out), [(HS, vec![24, 0, 0, 1, 0])], "cut {cut}");
        assert_eq!(p.session.held(), 0);
    }
}

#[test]
fn another_record_inside_a_fragmented_handshake_message_is_unexpected_message_rfc8446_5_1() {
    for (ct, content) in [(AD, &b"GET /"[..]), (AL, &[WARNING, CLOSE_NOTIFY][..])] {
        let mut p = Pair::new(TLS13);
        let a = p.rec(HS, &[24, 0]);
        let b = p.rec(ct, content);
        let (got, out) = p.feed(&[a, b].concat());
        assert_eq!(got[0], Ok(Got::Nothing));
        let f = got[1].clone().unwrap_err();
        assert_eq!((f.alert, f.reason), (Some(UNEXPECTED_MESSAGE), Reason::Interleaved(ct.0)));
        assert_eq!(p.sent(&out), [(AL, vec![FATAL, UNEXPECTED_MESSAGE])]);
    }
}

#[test]
fn tls13_handshake_messages_a_server_must_not_receive_are_unexpected_message_rfc8446_4() {
    // ClientHello, NewSessionTicket, Certificate, CertificateVerify, Finished, an unknown type:
    // refused as soon as the type byte arrives.
    for t in [1u8, 4, 11, 15, 20, 99] {
        let mut p = Pair::new(TLS13);
        let wire = p.rec(HS, &[t, 0, 0, 4, 0, 0, 0, 0]);
        let f = p.fails_with(&wire, UNEXPECTED_MESSAGE);
        assert_eq!(f.reason, Reason::UnexpectedHandshake(t));
        let mut p = Pair::new(TLS13);
        let wire = p.rec(HS, &[t]);
        p.fails_with(&wire, UNEXPECTED_MESSAGE);
    }
}

#[test]
fn tls12_renegotiation_gets_a_warning_no_renegotiation_and_the_session_goes_on_rfc5746_4_4() {
    let mut p = Pair::new(TLS12);
    // A ClientHello of 300 bytes cut across three records, application data between.
    let mut hello = vec![1u8, 0, 1, 44];
    hello.extend(vec![3u8; 300]);
    let a = p.rec(HS, &hello[..2]);
    let d = p.rec(AD, b"GET / HTTP/1.0\r\n");
    let b = p.rec(HS, &hello[2..100]);
    let c = p.rec(HS, &hello[100..]);
    let e = p.rec(AD, b"\r\n");
    let (got, out) = p.feed(&[a, d, b, c, e].concat());
    assert_eq!(
        got,
        [
            Ok(Got::Nothing),
            Ok(Got::Data(b"GET / HTTP/1.0\r\n".to_vec())),
            Ok(Got::Nothing),
            Ok(Got::Nothing),
            Ok(Got::Data(b"\r\n".to_vec()))
        ]
    );
    assert_eq!(p.sent(&out), [(AL, vec![WARNING, NO_RENEGOTIATION])]);
    // Two in one record: two warnings.
    let mut two = hello.clone();
    two.extend(&hello);
    let wire = p.rec(HS, &two);
    let (_, out) = p.feed(&wire);
    assert_eq!(p.sent(&out), vec![(AL, vec![WARNING, NO_RENEGOTIATION]); 2]);
}

#[test]
fn tls12_hello_request_or_other_handshake_from_the_client_is_unexpected_message_rfc5246_7_4() {
    for t in [0u8, 2, 4, 20, 24] {
        let mut p = Pair::new(TLS12);
        let wire = p.rec(HS, &[t, 0, 0, 0]);
        p.fails_with(&wire, UNEXPECTED_MESSAGE);
    }
}

#[test]
fn tls13_transmit_key_is_replaced_after_its_record_limit_rfc8446_5_5() {
    let mut p = Pair::new(TLS13);
    p.session.set_tx_key_records(3);
    let start = p.session.seqs().1;
    assert!(start < 3);
    let mut out = Vec::new();
    assert_eq!(start, 0, "no tickets were sent");
    let data = vec![5u8; 8 * (1 << 14)];
    p.session.seal(&data, &mut out).unwrap();
    let sizes: Vec<usize> = records(&out).iter().map(|(h, _)| h.len as usize).collect();
    let (full, ku) = ((1 << 14) + 17, 5 + 17);
    assert_eq!(
        sizes,
        [full, full, full, ku, full, full, full, ku, full, full],
        "a KeyUpdate every 3 records"
    );
    // The client follows both updates and reads everything.
    let got = p.client_reads(&out);
    assert!(got == data, "{} bytes read of {}", got.len(), data.len());
}

#[test]
fn batches_sealed_over_a_reused_buffer_read_back_whole_and_keep_its_tail() {
    for suite in [TLS13, TLS13_CHACHA, TLS12] {
        let mut p = Pair::new(suite);
        let mut scratch = Vec::new();
        // Longer, shorter and as long as the buffer's old contents, one byte and none.
        for (i, len) in
            [8 * (1 << 14), 3 * (1 << 14) + 7, 1, 8 * (1 << 14), 0, 20_000].into_iter().enumerate()
        {
            let data: Vec<u8> = (0..len).map(|b| (b * 13 + i) as u8).collect();
            let held = scratch.clone();
            let n = p.session.seal_batch_over(&data, &mut scratch).unwrap();
            let records = len.div_ceil(1 << 14);
            assert_eq!(n, len + records * p.session.overhead(), "{suite:?} {len}");
            assert_eq!(scratch.len(), n.max(held.len()), "the buffer grew only to the records' end");
            if n < held.len() {
                assert!(scratch[n..] == held[n..], "bytes past the records were left alone");
            }
            let got = p.client_reads(&scratch[..n]);
            assert!(got == data, "{suite:?}: {} bytes read of {len}", got.len());
        }
    }
}

#[test]
fn a_batch_sealed_over_replaces_a_used_up_transmit_key_rfc8446_5_5() {
    let mut p = Pair::new(TLS13);
    p.session.set_tx_key_records(3);
    let mut scratch = vec![0xee; 300_000];
    let data = vec![5u8; 8 * (1 << 14)];
    let n = p.session.seal_batch_over(&data, &mut scratch).unwrap();
    let sizes: Vec<usize> = records(&scratch[..n]).iter().map(|(h, _)| h.len as usize).collect();
    let (full, ku) = ((1 << 14) + 17, 5 + 17);
    assert_eq!(
        sizes,
        [full, full, full, ku, full, full, full, ku, full, full],
        "a KeyUpdate every 3 records"
    );
    let got = p.client_reads(&scratch[..n]);
    assert!(got == data, "{} bytes read of {}", got.len(), data.len());
}

#[test]
fn tls12_transmit_key_used_up_ends_the_session_on_our_side() {
    let mut p = Pair::new(TLS12);
    p.session.set_tx_key_records(2);
    let mut out = Vec::new();
    let f = p.session.seal(&vec![0u8; 3 * (1 << 14)], &mut out).unwrap_err();
    assert_eq!((f.side, f.alert, f.reason), (Side::Internal, None, Reason::TxKeyUsedUp(2)));
}

#[test]
fn a_sequence_number_that_would_wrap_ends_the_session_rfc8446_5_3() {
    let mut p = Pair::new(TLS13);
    p.session.layer.set_seqs(u64::MAX, 0);
    let mut body = vec![0u8; 20];
    let h = Header { content_type: AD, version: 0x0303, len: 20 };
    let f = p.session.open(h, &mut body, &mut Vec::new()).unwrap_err();
    assert_eq!((f.side, f.alert, f.reason), (Side::Client, Some(INTERNAL_ERROR), Reason::SeqExhausted));
    let mut p = Pair::new(TLS12);
    p.session.layer.set_seqs(0, u64::MAX);
    let f = p.session.seal(b"x", &mut Vec::new()).unwrap_err();
    assert_eq!((f.side, f.alert), (Side::Internal, None));
}

#[test]
fn a_refusal_after_the_handshake_sends_its_alert_once() {
    let mut p = Pair::new(TLS13);
    let f = p.session.refuse(120);
    assert_eq!((f.side, f.alert), (Side::Internal, Some(120)));
    let mut out = Vec::new();
    assert_eq!(p.session.send_alert(&mut out), Some(120));
    assert_eq!(p.session.send_alert(&mut out), None);
    assert_eq!(p.sent(&out), [(AL, vec![FATAL, 120])]);
    assert_eq!(HEADER_LEN, 5);
}

/// The handshake driver, not the session: a ChangeCipherSpec between two fragments of the
/// client's ClientKeyExchange (TLS 1.2). rustls fails on it with no alert while holding the first
/// fragment; called again on an emptied buffer to fetch an alert it panicked, so the driver writes
/// the alert itself. RFC 5246 §7.4 / RFC 8446 §5.1: unexpected_message.
#[test]
fn a_ccs_between_handshake_fragments_is_unexpected_message_and_no_panic_rfc5246_7_4() {
    let (server_cfg, client_cfg) = configs(TLS12);
    let mut client = ClientConnection::new(client_cfg, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut hs = ServerHandshake::new(server_cfg).unwrap();
    let mut to_client = Vec::new();
    for (h, body) in records(&drain(&mut client)) {
        let mut whole = h.encode().to_vec();
        whole.extend_from_slice(&body);
        assert_eq!(hs.record(&whole, &mut to_client).unwrap(), Progress::NeedMore);
    }
    client.read_tls(&mut &to_client[..]).unwrap();
    client.process_new_packets().unwrap();
    let flight = records(&drain(&mut client));
    let (cke_header, cke) = &flight[0];
    assert_eq!(cke_header.content_type, HS, "the ClientKeyExchange first");
    assert_eq!(flight[1].0.content_type, ContentType::CHANGE_CIPHER_SPEC);
    let record = |ct: ContentType, body: &[u8]| {
        let mut r = Header { content_type: ct, version: 0x0303, len: body.len() as u16 }.encode().to_vec();
        r.extend_from_slice(body);
        r
    };
    let mut out = Vec::new();
    assert_eq!(hs.record(&record(HS, &cke[..5]), &mut out).unwrap(), Progress::NeedMore);
    assert!(hs.record(&record(ContentType::CHANGE_CIPHER_SPEC, &flight[1].1), &mut out).is_err());
    assert_eq!(out, [21, 3, 3, 0, 2, 2, UNEXPECTED_MESSAGE], "a fatal unexpected_message alert");
    assert_eq!(hs.held(), 0, "nothing held after the failure");
}

#[test]
fn downgraded_once_both_close_notify_alerts_are_through_and_not_after_a_failure() {
    for suite in both() {
        let mut p = Pair::new(suite);
        assert!(!p.session.downgraded());
        p.session.close(&mut Vec::new()).unwrap();
        assert!(!p.session.downgraded(), "the peer's close_notify is still due");
        p.client.send_close_notify();
        let wire = drain(&mut p.client);
        assert_eq!(p.feed(&wire).0, [Ok(Got::Closed)]);
        assert!(p.session.downgraded());
    }
    // A failed session never hands its connection over.
    let mut p = Pair::new(TLS13);
    let bad = p.rec(HS, &[24, 0, 0, 1, 9]);
    let _ = p.one(&bad);
    p.session.close(&mut Vec::new()).unwrap_err();
    assert!(!p.session.downgraded());
}

#[test]
fn a_parked_session_opens_and_seals_on_as_before_and_follows_key_updates() {
    for suite in [TLS13, TLS13_CHACHA, TLS12] {
        let mut p = Pair::new(suite);
        let (rx, tx) = p.session.seqs();
        let built = p.session.state_bytes();
        p.session.park();
        assert!(p.session.parked());
        assert!(p.session.state_bytes() < built, "{suite:?}: the AEAD contexts are dropped");
        // The first record each way rebuilds its key from the raw bytes kept.
        p.client.writer().write_all(b"hello").unwrap();
        let wire = drain(&mut p.client);
        assert_eq!(p.feed(&wire).0, [Ok(Got::Data(b"hello".to_vec()))], "{suite:?}");
        let mut out = Vec::new();
        p.session.seal(b"reply", &mut out).unwrap();
        assert!(!p.session.parked());
        p.session.park();
        p.session.seal(b" again", &mut out).unwrap();
        assert_eq!(p.client_reads(&out), b"reply again", "{suite:?}");
        assert_eq!(p.session.seqs(), (rx + 1, tx + 2), "{suite:?}: sequence numbers survive parking");
    }
    // TLS 1.3: a key update arriving at a parked session replaces the key it would rebuild.
    let mut p = Pair::new(TLS13);
    p.session.park();
    p.client.refresh_traffic_keys().unwrap();
    p.client.writer().write_all(b"after").unwrap();
    let wire = drain(&mut p.client);
    let (got, answer) = p.feed(&wire);
    assert_eq!(got, [Ok(Got::Nothing), Ok(Got::Data(b"after".to_vec()))]);
    p.session.park();
    let mut more = Vec::new();
    p.session.seal(b"reply", &mut more).unwrap();
    assert_eq!(p.client_reads(&[answer, more].concat()), b"reply");
}

#[test]
fn a_compacted_session_resumes_where_it_stood() {
    // rustls's key schedule has no compact form: the session comes back whole.
    let p = Pair::new(TLS13);
    assert!(!p.session.is_compactable());
    assert!(Box::new(p.session).compact().is_err());
    // TLS 1.2: the raw keys, IVs and sequence numbers are all there is.
    let mut p = Pair::with_schedule(TLS12, true);
    p.client.writer().write_all(b"before").unwrap();
    let wire = drain(&mut p.client);
    assert_eq!(p.feed(&wire).0, [Ok(Got::Data(b"before".to_vec()))]);
    let mut out = Vec::new();
    p.session.seal(b"reply", &mut out).unwrap();
    assert_eq!(p.client_reads(&out), b"reply");
    let seqs = p.session.seqs();
    assert!(p.session.is_compactable());
    let placeholder = Pair::with_schedule(TLS12, true).session;
    let session = std::mem::replace(&mut p.session, placeholder);
    let compact = Box::new(session).compact().unwrap();
    assert_eq!(compact.seqs(), seqs);
    assert!(!format!("{compact:?}").contains("key:"), "no key in Debug");
    p.session = compact.resume().unwrap();
    assert!(p.session.parked(), "contexts are built on the next record");
    assert_eq!(p.session.seqs(), seqs);
    p.client.writer().write_all(b"after").unwrap();
    let wire = drain(&mut p.client);
    assert_eq!(p.feed(&wire).0, [Ok(Got::Data(b"after".to_vec()))]);
    let mut out = Vec::new();
    p.session.seal(b"again", &mut out).unwrap();
    assert_eq!(p.client_reads(&out), b"again");
    assert_eq!(p.session.seqs(), (seqs.0 + 1, seqs.1 + 1));
    // A session that failed, or sent its close_notify, is not compacted.
    p.session.close(&mut Vec::new()).unwrap();
    assert!(!p.session.is_compactable());
}

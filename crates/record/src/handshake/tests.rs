//! The handshake driver against a real rustls client whose records are cut small, with a bad
//! record put in at every point of its handshake: the driver must never panic (rustls holds
//! handshake fragments in the caller's buffer) and the client must get a fatal alert.

use super::*;
use rustls::crypto::aws_lc_rs::{cipher_suite as cs, default_provider};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::SupportedProtocolVersion;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::io::Write;

fn configs(suite: SupportedCipherSuite, fragment: Option<usize>) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let groups = default_provider().kx_groups;
    configs_kx(suite, fragment, groups.clone(), groups)
}

fn configs_kx(
    suite: SupportedCipherSuite,
    fragment: Option<usize>,
    server_groups: Vec<&'static dyn SupportedKxGroup>,
    client_groups: Vec<&'static dyn SupportedKxGroup>,
) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider =
        |kx_groups| Arc::new(CryptoProvider { cipher_suites: vec![suite], kx_groups, ..default_provider() });
    let versions: [&SupportedProtocolVersion; 1] = [suite.version()];
    let mut server = ServerConfig::builder_with_provider(provider(server_groups))
        .with_protocol_versions(&versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    server.enable_secret_extraction = true;
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client = ClientConfig::builder_with_provider(provider(client_groups))
        .with_protocol_versions(&versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.max_fragment_size = fragment;
    (Arc::new(server), Arc::new(client))
}

/// Splits a byte stream into whole records.
fn records(mut wire: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while wire.len() >= 5 {
        let end = 5 + usize::from(u16::from_be_bytes([wire[3], wire[4]]));
        out.push(wire[..end].to_vec());
        wire = &wire[end..];
    }
    assert!(wire.is_empty());
    out
}

fn drain(client: &mut ClientConnection) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut out).unwrap();
    }
    records(&out)
}

/// Records no client sends during a handshake.
#[derive(Clone, Copy, Debug)]
enum Bad {
    /// Application data (plaintext before keys, undecryptable after).
    AppData,
    /// A record header with an unassigned content type.
    UnknownType,
    /// A record longer than any TLS version allows.
    Oversized,
    /// The next record of the client's own handshake with one payload byte changed.
    Corrupted,
    /// A ChangeCipherSpec with a wrong value.
    WrongCcs,
}

const BAD: [Bad; 5] = [Bad::AppData, Bad::UnknownType, Bad::Oversized, Bad::Corrupted, Bad::WrongCcs];

fn bad_record(bad: Bad, next: &[u8], at: usize) -> Vec<u8> {
    match bad {
        Bad::AppData => [&[0x17, 3, 3, 0, 24][..], &[0x5a; 24]].concat(),
        Bad::UnknownType => [&[0x30, 3, 3, 0, 4][..], &[1, 2, 3, 4]].concat(),
        Bad::Oversized => [&[0x16, 3, 3, 0x48, 0x01][..], &vec![0; 0x4801]].concat(),
        Bad::Corrupted => {
            let mut r = next.to_vec();
            // Walk the changed byte through the payload so every header field gets its turn.
            let i = 5 + at % (r.len() - 5);
            r[i] ^= 0xa5;
            r
        }
        Bad::WrongCcs => vec![0x14, 3, 3, 0, 1, 2],
    }
}

enum Outcome {
    /// The client has fewer records.
    Done,
    /// A changed byte rustls could not tell from a good one yet (inside a plaintext hello, say).
    Accepted,
    /// What the client made of the server's answer to the bad record.
    Client(rustls::Error),
}

/// A handshake whose client record `at` is preceded by (or, for `Corrupted`, replaced with) a
/// bad record.
fn run(suite: SupportedCipherSuite, fragment: Option<usize>, bad: Bad, at: usize) -> Outcome {
    let (server_cfg, client_cfg) = configs(suite, fragment);
    let mut client = ClientConnection::new(client_cfg, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut hs = ServerHandshake::new(server_cfg).unwrap();
    let mut n = 0;
    loop {
        let flight = drain(&mut client);
        assert!(!flight.is_empty(), "the client stalled");
        let mut out = Vec::new();
        for record in &flight {
            if n == at {
                let bad_one = bad_record(bad, record, at);
                let result = hs.record(&bad_one, &mut out);
                if result.is_ok() {
                    assert!(matches!(bad, Bad::Corrupted), "{bad:?} accepted");
                    return Outcome::Accepted;
                }
                assert_eq!(hs.held(), 0, "nothing held after a failure");
                // The server's answer so far, then the alert: the client must see the alert.
                client.read_tls(&mut &out[..]).unwrap();
                return Outcome::Client(client.process_new_packets().err().unwrap_or(
                    rustls::Error::General(format!(
                        "no alert for {result:?}, {} bytes: {:02x?}",
                        out.len(),
                        &out
                    )),
                ));
            }
            n += 1;
            if hs.record(record, &mut out).unwrap() == Progress::Complete {
                return Outcome::Done;
            }
        }
        client.read_tls(&mut &out[..]).unwrap();
        client.process_new_packets().unwrap();
    }
}

#[test]
fn a_bad_record_at_any_point_of_a_fragmented_handshake_gets_an_alert_and_no_panic() {
    let suites = [cs::TLS13_AES_128_GCM_SHA256, cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256];
    let (mut runs, mut failures) = (0, Vec::new());
    for suite in suites {
        for fragment in [Some(32), Some(77), None] {
            for bad in BAD {
                for at in 0.. {
                    let case = format!("{:?} fragment {fragment:?} {bad:?} at record {at}", suite.suite());
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run(suite, fragment, bad, at)
                    }));
                    match outcome {
                        Ok(Outcome::Done) => break,
                        Ok(Outcome::Accepted | Outcome::Client(rustls::Error::AlertReceived(_))) => {}
                        Ok(Outcome::Client(err)) => failures.push(format!("{case}: the client saw {err:?}")),
                        Err(_) => failures.push(format!("{case}: panicked")),
                    }
                    runs += 1;
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {runs} runs failed:\n{}", failures.len(), failures.join("\n"));
    assert!(runs > 100, "{runs} runs");
}

/// Runs a buffered rustls handshake to completion, so that the client holds a ticket.
fn buffered_handshake(client: &mut ClientConnection, server: &mut rustls::ServerConnection) {
    while client.is_handshaking() || server.is_handshaking() || server.wants_write() {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        server.read_tls(&mut &wire[..]).unwrap();
        server.process_new_packets().unwrap();
        wire.clear();
        while server.wants_write() {
            server.write_tls(&mut wire).unwrap();
        }
        client.read_tls(&mut &wire[..]).unwrap();
        client.process_new_packets().unwrap();
    }
}

/// RFC 8446 §4.2.10: early data the server does not accept is skipped (up to
/// max_early_data_size), the handshake goes on. A real rustls client resumes with 0-RTT data in
/// several records; the server the ticket came from is not the one it reaches, so the data is
/// rejected and must be skipped record by record as it is fed.
#[test]
fn rejected_early_data_fed_record_by_record_is_skipped_rfc8446_4_2_10() {
    let suite = cs::TLS13_AES_128_GCM_SHA256;
    for (fragment, early) in [(Some(1000), 12_000), (None, 16_000), (Some(300), 3_000)] {
        let (server_cfg, client_cfg) = configs(suite, fragment);
        let mut first = (*server_cfg).clone();
        first.max_early_data_size = 16_384;
        let mut client_cfg = (*client_cfg).clone();
        client_cfg.enable_early_data = true;
        let client_cfg = Arc::new(client_cfg);
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = ClientConnection::new(client_cfg.clone(), name.clone()).unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(first)).unwrap();
        buffered_handshake(&mut client, &mut server);

        let mut client = ClientConnection::new(client_cfg, name).unwrap();
        let data = vec![0x42; early];
        let written = client.early_data().expect("0-RTT offered").write(&data).unwrap();
        assert_eq!(written, early);
        let mut hs = ServerHandshake::new(server_cfg).unwrap();
        let mut fed = 0;
        let done = 'handshake: loop {
            let flight = drain(&mut client);
            assert!(!flight.is_empty(), "the client stalled");
            let mut out = Vec::new();
            for record in &flight {
                fed += 1;
                let progress = hs.record(record, &mut out).unwrap_or_else(|e| {
                    panic!("{fragment:?} {early}: record {fed} (type {}) failed: {e}", record[0])
                });
                if progress == Progress::Complete {
                    client.read_tls(&mut &out[..]).unwrap();
                    client.process_new_packets().unwrap();
                    break 'handshake true;
                }
            }
            client.read_tls(&mut &out[..]).unwrap();
            client.process_new_packets().unwrap();
        };
        assert!(done && !client.is_handshaking());
        assert!(!client.is_early_data_accepted(), "the early data was rejected");
        assert!(fed > 3, "{fed} records");
    }
}

/// RFC 8446 §4.1.2: a real rustls client asked to retry (its key share is for X25519, the
/// server takes P-256 only) sends its hello again, accepted; the same second hello with its
/// server name changed gets illegal_parameter before rustls reads it.
#[test]
fn a_second_client_hello_must_be_the_first_unchanged_rfc8446_4_1_2() {
    use rustls::crypto::aws_lc_rs::kx_group;
    let suite = cs::TLS13_AES_128_GCM_SHA256;
    for tamper in [false, true] {
        let (server_cfg, client_cfg) =
            configs_kx(suite, None, vec![kx_group::SECP256R1], vec![kx_group::X25519, kx_group::SECP256R1]);
        let mut client =
            ClientConnection::new(client_cfg, ServerName::try_from("localhost").unwrap()).unwrap();
        let mut hs = ServerHandshake::new(server_cfg).unwrap();
        let mut out = Vec::new();
        for record in drain(&mut client) {
            assert_eq!(hs.record(&record, &mut out).unwrap(), Progress::NeedMore);
        }
        assert_eq!(out[5], 2, "a ServerHello");
        assert_eq!(out[11..43], super::second_hello::HRR_RANDOM, "that is a HelloRetryRequest");
        client.read_tls(&mut &out[..]).unwrap();
        client.process_new_packets().unwrap();
        let mut out = Vec::new();
        let mut result = Ok(Progress::NeedMore);
        for mut record in drain(&mut client) {
            if tamper && record[0] == 0x16 {
                let at = record.windows(9).position(|w| w == b"localhost").expect("the name");
                record[at] = b'L';
            }
            result = hs.record(&record, &mut out);
            if result.is_err() {
                break;
            }
        }
        if tamper {
            assert!(matches!(result, Err(HandshakeError::SecondHelloChanged(_))), "{result:?}");
            assert_eq!(out, [0x15, 3, 3, 0, 2, 2, 47], "illegal_parameter");
            client.read_tls(&mut &out[..]).unwrap();
            let err = client.process_new_packets().unwrap_err();
            assert_eq!(err, rustls::Error::AlertReceived(AlertDescription::IllegalParameter));
        } else {
            assert_eq!(result, Ok(Progress::NeedMore), "the unchanged hello goes on");
            client.read_tls(&mut &out[..]).unwrap();
            client.process_new_packets().unwrap();
            for record in drain(&mut client) {
                result = hs.record(&record, &mut out);
            }
            assert_eq!(result, Ok(Progress::Complete));
        }
    }
}

/// RFC 8446 §5 and Appendix D.4: a TLS 1.3 client sends one ChangeCipherSpec at most; a second
/// gets unexpected_message, encrypted (the server flight is out), from rustls itself.
#[test]
fn a_second_tls13_change_cipher_spec_is_unexpected_message_rfc8446_5() {
    let (server_cfg, client_cfg) = configs(cs::TLS13_AES_128_GCM_SHA256, None);
    let mut client = ClientConnection::new(client_cfg, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut hs = ServerHandshake::new(server_cfg).unwrap();
    let mut out = Vec::new();
    for record in drain(&mut client) {
        assert_eq!(hs.record(&record, &mut out).unwrap(), Progress::NeedMore);
    }
    client.read_tls(&mut &out[..]).unwrap();
    client.process_new_packets().unwrap();
    let flight = drain(&mut client);
    assert_eq!(flight[0], [0x14, 3, 3, 0, 1, 1], "the client's one ChangeCipherSpec first");
    let mut out = Vec::new();
    assert_eq!(hs.record(&flight[0], &mut out).unwrap(), Progress::NeedMore);
    let err = hs.record(&flight[0], &mut out).expect_err("a second one refused");
    assert!(matches!(err, HandshakeError::Tls(rustls::Error::PeerMisbehaved(_))), "{err:?}");
    assert_eq!(out[0], 0x17, "an encrypted alert");
    client.read_tls(&mut &out[..]).unwrap();
    assert_eq!(
        client.process_new_packets().unwrap_err(),
        rustls::Error::AlertReceived(AlertDescription::UnexpectedMessage)
    );
}

/// RFC 5246 §7.1: a TLS 1.2 ChangeCipherSpec is the one byte 1. A real client's, two bytes
/// long, gets unexpected_message (plaintext: the server's ChangeCipherSpec is not out yet).
#[test]
fn a_tls12_change_cipher_spec_other_than_one_byte_1_is_unexpected_message_rfc5246_7_1() {
    for body in [&[1u8, 1][..], &[2], &[1, 0]] {
        let (server_cfg, client_cfg) = configs(cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, None);
        let mut client =
            ClientConnection::new(client_cfg, ServerName::try_from("localhost").unwrap()).unwrap();
        let mut hs = ServerHandshake::new(server_cfg).unwrap();
        let mut out = Vec::new();
        for record in drain(&mut client) {
            assert_eq!(hs.record(&record, &mut out).unwrap(), Progress::NeedMore);
        }
        client.read_tls(&mut &out[..]).unwrap();
        client.process_new_packets().unwrap();
        let flight = drain(&mut client);
        let ccs = flight.iter().position(|r| r[0] == 0x14).expect("the client's ChangeCipherSpec");
        let mut out = Vec::new();
        for record in &flight[..ccs] {
            assert_eq!(hs.record(record, &mut out).unwrap(), Progress::NeedMore);
        }
        let bad = [&[0x14, 3, 3, 0, body.len() as u8][..], body].concat();
        assert!(hs.record(&bad, &mut out).is_err());
        assert_eq!(out, [0x15, 3, 3, 0, 2, 2, 10], "{body:?}: a plaintext unexpected_message");
    }
}

/// The client driver against the server driver, every suite: both complete, the server's
/// TLS 1.3 session tickets (sent after the handshake) reach the client's session, which stores
/// them (a second handshake resumes), and data goes both ways under the extracted keys.
#[test]
fn client_driver_against_server_driver() {
    use crate::session::{Received, Session};
    // The test certificate's key is ECDSA: the TLS 1.2 RSA suites cannot be used.
    let ours = |s: &SupportedCipherSuite| !format!("{:?}", s.suite()).contains("_RSA_");
    for suite in default_provider().cipher_suites.into_iter().filter(ours) {
        let (server_config, client_config) = configs(suite, None);
        let mut client_config = (*client_config).clone();
        client_config.enable_secret_extraction = true;
        let client_config = Arc::new(client_config);
        let mut resumed = None;
        for round in 0..2 {
            let name = ServerName::try_from("localhost").unwrap();
            let mut to_server = Vec::new();
            let mut client = ClientHandshake::new(client_config.clone(), name, &mut to_server).unwrap();
            let mut server = ServerHandshake::new(server_config.clone()).unwrap();
            let mut to_client = Vec::new();
            let mut after = Vec::new();
            while !(client.is_complete() && server.is_complete()) {
                for r in records(&std::mem::take(&mut to_server)) {
                    server.record(&r, &mut to_client).unwrap();
                }
                for r in records(&std::mem::take(&mut to_client)) {
                    if client.is_complete() {
                        after.push(r);
                    } else {
                        client.record(&r, &mut to_server).unwrap();
                    }
                }
            }
            // The server's tickets follow its handshake; they are the session's first records.
            after.extend(records(&std::mem::take(&mut to_client)));
            resumed = client.handshake_kind();
            let (cs, ck) = client.into_keys().unwrap();
            let (ss, sk) = server.into_keys().unwrap();
            let mut cs = Session::from_keys(cs, ck).unwrap();
            let mut ss = Session::from_keys(ss, sk).unwrap();
            assert_eq!(cs.peer(), "server");
            let mut out = Vec::new();
            for mut r in after {
                let header = crate::frame::Header::parse(&r[..5].try_into().unwrap());
                let got = cs.open(header, &mut r[5..], &mut out).unwrap();
                assert!(matches!(got, Received::Nothing | Received::Data(_)), "{suite:?} round {round}");
            }
            let mut wire = Vec::new();
            cs.seal(b"up", &mut wire).unwrap();
            let mut r = records(&wire).remove(0);
            let header = crate::frame::Header::parse(&r[..5].try_into().unwrap());
            let Received::Data(d) = ss.open(header, &mut r[5..], &mut out).unwrap() else { panic!() };
            assert_eq!(&r[5..][d], b"up");
            let mut wire = Vec::new();
            ss.seal(b"down", &mut wire).unwrap();
            let mut r = records(&wire).remove(0);
            let header = crate::frame::Header::parse(&r[..5].try_into().unwrap());
            let Received::Data(d) = cs.open(header, &mut r[5..], &mut out).unwrap() else { panic!() };
            assert_eq!(&r[5..][d], b"down");
        }
        assert_eq!(resumed, Some(rustls::HandshakeKind::Resumed), "{suite:?}: second handshake resumed");
    }
}

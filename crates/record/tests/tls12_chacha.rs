//! TLS 1.2 ChaCha20-Poly1305 (RFC 7905) against real rustls peers: the session as the server of a
//! rustls client (records opened whole and piece by piece, records sealed), and a key of the
//! client's side sealing and opening against a rustls server. The format differs from TLS 1.2
//! AES-GCM (no explicit nonce, nonce = IV XOR sequence number): any slip fails a peer's tag.

use rustls::crypto::aws_lc_rs::{cipher_suite as cs, default_provider};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ConnectionTrafficSecrets, RootCertStore, ServerConfig};
use rustls::{ServerConnection, SupportedCipherSuite};
use std::io::{Read, Write};
use std::sync::Arc;
use tlsgate_record::crypto::{RecordKey, RecordLayer, Suite, Version};
use tlsgate_record::frame::{ContentType, Event, Framer, Header, HEADER_LEN, MAX_CIPHERTEXT_TLS12};
use tlsgate_record::handshake::ServerHandshake;
use tlsgate_record::session::{Received, Session};

const SUITES: [SupportedCipherSuite; 2] =
    [cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256];
const TAG: usize = 16;

fn configs(suite: SupportedCipherSuite) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(CryptoProvider { cipher_suites: vec![suite], ..default_provider() });
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    server.enable_secret_extraction = true;
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.enable_secret_extraction = true;
    (Arc::new(server), Arc::new(client))
}

fn records(wire: &[u8]) -> Vec<(Header, Vec<u8>)> {
    let mut f = Framer::new(0, MAX_CIPHERTEXT_TLS12);
    let (mut input, mut out) = (wire, Vec::new());
    let mut cur: Option<(Header, Vec<u8>)> = None;
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

fn drain<D>(conn: &mut rustls::ConnectionCommon<D>) -> Vec<u8> {
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// Gives `wire` to a rustls connection (it reads a bounded amount per call) and returns the
/// plaintext it yields and whether the peer closed.
fn feed<D>(conn: &mut rustls::ConnectionCommon<D>, mut wire: &[u8]) -> (Vec<u8>, bool) {
    let (mut plain, mut closed) = (Vec::new(), false);
    while !wire.is_empty() {
        conn.read_tls(&mut wire).unwrap();
        closed |= conn.process_new_packets().unwrap().peer_has_closed();
        match conn.reader().read_to_end(&mut plain) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
        }
    }
    (plain, closed)
}

/// A rustls client and the session that served its handshake.
fn session_pair(suite: SupportedCipherSuite) -> (ClientConnection, Session) {
    let (server_cfg, client_cfg) = configs(suite);
    let mut client = ClientConnection::new(client_cfg, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut hs = ServerHandshake::new(server_cfg).unwrap();
    for _ in 0..10 {
        let mut to_client = Vec::new();
        for (h, body) in records(&drain(&mut client)) {
            let whole = [&h.encode()[..], &body].concat();
            hs.record(&whole, &mut to_client).unwrap();
        }
        client.read_tls(&mut &to_client[..]).unwrap();
        client.process_new_packets().unwrap();
        if hs.is_complete() && !client.is_handshaking() && !client.wants_write() {
            let (secrets, kernel) = hs.into_keys().unwrap();
            return (client, Session::new(RecordLayer::new(secrets, kernel).unwrap()));
        }
    }
    panic!("handshake did not complete");
}

fn key(seq: u64, s: &ConnectionTrafficSecrets) -> RecordKey {
    let (suite, key, iv) = match s {
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (Suite::Chacha20Poly1305, key, iv),
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Suite::Aes128Gcm, key, iv),
        _ => panic!("suite"),
    };
    RecordKey::from_parts(Version::Tls12, suite, key.as_ref(), iv.as_ref().try_into().unwrap(), seq).unwrap()
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn the_session_serves_a_rustls_tls12_chacha20_client_both_ways() {
    let (mut client, mut session) = session_pair(SUITES[0]);
    assert_eq!(session.version(), Version::Tls12);
    assert_eq!(
        (session.head(), session.overhead()),
        (HEADER_LEN, HEADER_LEN + TAG),
        "RFC 7905: no explicit nonce"
    );

    // Client → session, whole records: a short one and maximum-size ones.
    let big = data(40_000);
    client.writer().write_all(b"hello").unwrap();
    client.writer().write_all(&big).unwrap();
    let mut got = Vec::new();
    for (h, mut body) in records(&drain(&mut client)) {
        let mut out = Vec::new();
        match session.open(h, &mut body, &mut out).unwrap() {
            Received::Data(r) => got.extend_from_slice(&body[r]),
            other => panic!("{other:?}"),
        }
        assert!(out.is_empty());
    }
    assert_eq!(got, [&b"hello"[..], &big].concat());

    // Client → session piece by piece (cut-through release), cut at odd offsets.
    let piece = data(5000);
    client.writer().write_all(&piece).unwrap();
    let mut got = Vec::new();
    for (h, body) in records(&drain(&mut client)) {
        let mut opener = session.open_stream(h).unwrap();
        let mut plain = Vec::new();
        for chunk in body.chunks(777) {
            opener.update(chunk, &mut plain);
        }
        let mut out = Vec::new();
        match session.stream_end(h, opener.finish(), &plain, 0, &mut out).unwrap() {
            Received::Data(r) => got.extend_from_slice(&plain[r]),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, piece);

    // Session → client: records 21 bytes longer than their plaintext, read by rustls.
    let mut wire = Vec::new();
    session.seal(b"world", &mut wire).unwrap();
    assert_eq!(wire.len(), HEADER_LEN + 5 + TAG);
    session.seal(&big, &mut wire).unwrap();
    session.close(&mut wire).unwrap();
    let (read, closed) = feed(&mut client, &wire);
    assert_eq!(read, [&b"world"[..], &big].concat());
    assert!(closed, "close_notify");

    // A flipped ciphertext byte fails the tag: bad_record_mac.
    client.writer().write_all(b"secret").unwrap();
    let (h, mut body) = records(&drain(&mut client)).pop().unwrap();
    body[3] ^= 1;
    let fatal = session.open(h, &mut body, &mut Vec::new()).unwrap_err();
    assert_eq!(fatal.alert, Some(20));
}

/// Keys of the client's side against a rustls server, for both TLS 1.2 formats: what one seals,
/// rustls opens, and the other way round, with sequence numbers well past the handshake's.
#[test]
fn a_client_side_key_talks_to_a_rustls_tls12_server() {
    for suite in SUITES {
        let (server_cfg, client_cfg) = configs(suite);
        let mut client =
            ClientConnection::new(client_cfg, ServerName::try_from("localhost").unwrap()).unwrap();
        let mut server = ServerConnection::new(server_cfg).unwrap();
        while client.is_handshaking() || server.is_handshaking() {
            feed(&mut server, &drain(&mut client));
            feed(&mut client, &drain(&mut server));
        }
        // A few records through rustls first, so the keys take over at sequence numbers past 1.
        for _ in 0..3 {
            client.writer().write_all(b"warm").unwrap();
            server.writer().write_all(b"warm").unwrap();
            assert_eq!(feed(&mut server, &drain(&mut client)).0, b"warm");
            assert_eq!(feed(&mut client, &drain(&mut server)).0, b"warm");
        }
        let secrets = client.dangerous_extract_secrets().unwrap();
        let (mut tx, mut rx) = (key(secrets.tx.0, &secrets.tx.1), key(secrets.rx.0, &secrets.rx.1));

        let big = data(20_000);
        let mut wire = Vec::new();
        tx.seal(ContentType::APPLICATION_DATA, &big[..16384], &mut wire).unwrap();
        tx.seal(ContentType::APPLICATION_DATA, &big[16384..], &mut wire).unwrap();
        assert_eq!(feed(&mut server, &wire).0, big, "{suite:?}");

        server.writer().write_all(&big).unwrap();
        let mut got = Vec::new();
        for (h, mut body) in records(&drain(&mut server)) {
            let o = rx.open(h, &mut body).unwrap();
            assert_eq!(o.content_type, ContentType::APPLICATION_DATA);
            got.extend_from_slice(&body[o.plaintext]);
        }
        assert_eq!(got, big, "{suite:?}");
    }
}

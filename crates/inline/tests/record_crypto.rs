//! The engine's handshake and record layer against a real rustls client in memory: the client
//! encrypts and the engine opens, the engine seals and the client reads, for every suite.

use rustls::crypto::aws_lc_rs::{cipher_suite as cs, default_provider};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, SupportedCipherSuite};
use std::io::{Read, Write};
use std::sync::Arc;
use tlsgate_inline::handshake::{Handshake, Progress};
use tlsgate_inline::record::{Event, Framer, Header, MAX_CIPHERTEXT_TLS12, MAX_PLAINTEXT};
use tlsgate_inline::record_crypto::{CryptoError, Inbound, RecordLayer, Version};

const TLS13: &[SupportedCipherSuite] =
    &[cs::TLS13_AES_128_GCM_SHA256, cs::TLS13_AES_256_GCM_SHA384, cs::TLS13_CHACHA20_POLY1305_SHA256];
const TLS12: &[SupportedCipherSuite] =
    &[cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384];

fn configs(suite: SupportedCipherSuite) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(CryptoProvider { cipher_suites: vec![suite], ..default_provider() });
    let versions = [suite.version()];
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    server.enable_secret_extraction = true;
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// Splits a byte stream into whole records (header, body), keeping partial ones in the framer.
struct Records {
    framer: Framer,
    cur: Option<(Header, Vec<u8>)>,
}

impl Records {
    fn new() -> Records {
        Records { framer: Framer::new(0, MAX_CIPHERTEXT_TLS12), cur: None }
    }

    fn push(&mut self, mut input: &[u8]) -> Vec<(Header, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(ev) = self.framer.next(&mut input).unwrap() {
            match ev {
                Event::Header { header, .. } => self.cur = Some((header, Vec::new())),
                Event::Body { data, .. } => self.cur.as_mut().unwrap().1.extend_from_slice(data),
                Event::End { .. } => out.push(self.cur.take().unwrap()),
            }
        }
        out
    }
}

fn whole(h: &Header, body: &[u8]) -> Vec<u8> {
    let mut v = h.encode().to_vec();
    v.extend_from_slice(body);
    v
}

fn client_output(client: &mut ClientConnection) -> Vec<u8> {
    let mut out = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut out).unwrap();
    }
    out
}

/// The client and the engine's side of one flow after the handshake.
struct Flow {
    client: ClientConnection,
    layer: RecordLayer,
    records: Records,
}

impl Flow {
    fn handshake(suite: SupportedCipherSuite) -> Result<Flow, CryptoError> {
        let (server_cfg, client_cfg) = configs(suite);
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = ClientConnection::new(client_cfg, name).unwrap();
        let mut hs = Handshake::new(server_cfg).unwrap();
        let mut records = Records::new();
        for _ in 0..10 {
            let mut to_client = Vec::new();
            for (h, body) in records.push(&client_output(&mut client)) {
                assert!(!hs.is_complete(), "records after the handshake's end");
                let p = hs.record(&whole(&h, &body), &mut to_client).unwrap();
                assert_eq!(p == Progress::Complete, hs.is_complete());
            }
            if !to_client.is_empty() {
                client.read_tls(&mut &to_client[..]).unwrap();
                client.process_new_packets().unwrap();
            }
            if hs.is_complete() && !client.is_handshaking() && !client.wants_write() {
                assert_eq!(hs.held(), 0);
                assert_eq!(hs.cipher_suite(), Some(suite));
                let (secrets, kernel) = hs.into_keys().unwrap();
                let layer = RecordLayer::new(secrets, kernel)?;
                return Ok(Flow { client, layer, records });
            }
        }
        panic!("handshake did not complete");
    }

    /// What the client wrote, opened by the engine.
    fn engine_reads(&mut self) -> Vec<Result<(Inbound, Vec<u8>), CryptoError>> {
        let bytes = client_output(&mut self.client);
        let mut got = Vec::new();
        for (h, mut body) in self.records.push(&bytes) {
            got.push(self.layer.open(h, &mut body).map(|inb| {
                let pt = match &inb {
                    Inbound::Data(o) | Inbound::Alert(o) => body[o.plaintext.clone()].to_vec(),
                    Inbound::KeyUpdate { .. } => Vec::new(),
                };
                (inb, pt)
            }));
        }
        got
    }

    /// Application data the engine receives from the client, concatenated.
    fn engine_reads_data(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        for r in self.engine_reads() {
            match r.unwrap() {
                (Inbound::Data(_), pt) => all.extend(pt),
                other => panic!("expected data, got {other:?}"),
            }
        }
        all
    }

    /// Hands the engine's records to the client and returns the plaintext it can read.
    fn client_reads(&mut self, wire: &[u8]) -> Vec<u8> {
        let mut input = wire;
        while !input.is_empty() {
            self.client.read_tls(&mut input).unwrap();
            self.client.process_new_packets().unwrap();
        }
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.client.reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        out
    }
}

fn both_directions(suite: SupportedCipherSuite) {
    let mut f = Flow::handshake(suite).unwrap();
    let version = if TLS13.contains(&suite) { Version::Tls13 } else { Version::Tls12 };
    assert_eq!(f.layer.version(), version);

    // Client → engine: a short record, then maximum-size ones.
    f.client.writer().write_all(b"hello").unwrap();
    assert_eq!(f.engine_reads_data(), b"hello");
    let big: Vec<u8> = (0..MAX_PLAINTEXT * 2 + 100).map(|i| (i % 251) as u8).collect();
    f.client.writer().write_all(&big).unwrap();
    assert_eq!(f.engine_reads_data(), big);

    // Engine → client: one record per server segment, an empty one, a maximum-size one.
    let mut wire = Vec::new();
    let s0 = f.layer.seal(b"world", &mut wire).unwrap();
    let s1 = f.layer.seal(b"", &mut wire).unwrap();
    let s2 = f.layer.seal(&big[..MAX_PLAINTEXT], &mut wire).unwrap();
    assert_eq!((s1, s2), (s0 + 1, s0 + 2), "each record its own sequence number");
    assert_eq!(wire.len(), 5 + MAX_PLAINTEXT + 3 * version.overhead());
    let mut expect = b"world".to_vec();
    expect.extend_from_slice(&big[..MAX_PLAINTEXT]);
    assert_eq!(f.client_reads(&wire), expect);
    assert_eq!(
        f.layer.seal(&big[..MAX_PLAINTEXT + 1], &mut wire),
        Err(CryptoError::TooLarge(MAX_PLAINTEXT + 1))
    );

    // A tampered ciphertext byte fails the tag.
    f.client.writer().write_all(b"secret").unwrap();
    let bytes = client_output(&mut f.client);
    let (h, mut body) = f.records.push(&bytes).pop().unwrap();
    let n = body.len();
    body[n / 2] ^= 1;
    assert_eq!(f.layer.open(h, &mut body), Err(CryptoError::BadRecordMac));
}

fn close_notify_both_ways(suite: SupportedCipherSuite) {
    let mut f = Flow::handshake(suite).unwrap();
    f.client.send_close_notify();
    let got = f.engine_reads();
    assert_eq!(got.len(), 1);
    let (inb, pt) = got.into_iter().next().unwrap().unwrap();
    assert!(matches!(inb, Inbound::Alert(_)));
    assert_eq!(pt, [1, 0]);
    let mut wire = Vec::new();
    f.layer.seal(b"bye", &mut wire).unwrap();
    f.layer.seal_alert([1, 0], &mut wire).unwrap();
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
fn tls12_gcm_suites_both_directions() {
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
fn tls12_chacha_is_refused_by_the_record_layer() {
    let r = Flow::handshake(cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256);
    assert!(matches!(r, Err(CryptoError::Unsupported)));
}

#[test]
fn tls13_key_updates_are_followed_both_ways() {
    for &s in TLS13 {
        let mut f = Flow::handshake(s).unwrap();
        f.client.writer().write_all(b"before").unwrap();
        assert_eq!(f.engine_reads_data(), b"before");
        // The client moves its keys on (and asks the engine to do the same).
        f.client.refresh_traffic_keys().unwrap();
        f.client.writer().write_all(b"after").unwrap();
        let got = f.engine_reads();
        assert_eq!(got.len(), 2);
        let mut it = got.into_iter();
        let Ok((Inbound::KeyUpdate { requested, .. }, _)) = it.next().unwrap() else { panic!() };
        let (inb, pt) = it.next().unwrap().unwrap();
        assert!(matches!(inb, Inbound::Data(ref o) if o.seq == 0), "new key starts at 0: {inb:?}");
        assert_eq!(pt, b"after");
        // The engine answers (when asked) and seals under its new key; the client follows.
        let mut wire = Vec::new();
        if requested {
            f.layer.send_key_update(&mut wire).unwrap();
        }
        let seq = f.layer.seal(b"reply", &mut wire).unwrap();
        assert_eq!(seq == 0, requested);
        assert_eq!(f.client_reads(&wire), b"reply");
        // An unrequested update from the engine too.
        let mut wire = Vec::new();
        f.layer.send_key_update(&mut wire).unwrap();
        assert_eq!(f.layer.seal(b"again", &mut wire).unwrap(), 0);
        assert_eq!(f.client_reads(&wire), b"again");
        f.client.writer().write_all(b"still").unwrap();
        assert_eq!(f.engine_reads_data(), b"still");
    }
}

//! The in-memory harness shared by the integration tests: a real rustls client and the engine's
//! handshake and record layer, joined by byte buffers.
#![allow(dead_code)] // each test binary uses part of it

use rustls::crypto::aws_lc_rs::{cipher_suite as cs, default_provider};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::ConnectionTrafficSecrets;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, SupportedCipherSuite};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use tlsgate_inline::handshake::{Handshake, Progress};
use tlsgate_inline::packet::{Build, Control};
use tlsgate_inline::seq::Seq;
use tlsgate_inline::seq_map::SeqMap;
use tlsgate_inline::sim::{self, SimConfig, Summary};
use tlsgate_inline::tables::Release;
use tlsgate_inline::upstream::{Up, UpLimits, Upstream};
use tlsgate_record::crypto::{CryptoError, RecordKey, RecordLayer, Suite, Version};
use tlsgate_record::frame::{Event, Framer, Header, MAX_CIPHERTEXT_TLS12};
use tlsgate_record::session::{Fatal, Received, Session};

pub const TLS13: &[SupportedCipherSuite] =
    &[cs::TLS13_AES_128_GCM_SHA256, cs::TLS13_AES_256_GCM_SHA384, cs::TLS13_CHACHA20_POLY1305_SHA256];
pub const TLS12: &[SupportedCipherSuite] = &[
    cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// Outer bytes before a record's plaintext: the header, and TLS 1.2 AES-GCM's explicit nonce
/// (TLS 1.2 ChaCha20-Poly1305 has none, RFC 7905).
pub fn record_head(suite: SupportedCipherSuite) -> usize {
    let chacha = suite.suite() == rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256;
    if TLS12.contains(&suite) && !chacha {
        13
    } else {
        5
    }
}

pub fn configs(suite: SupportedCipherSuite) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
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
pub struct Records {
    pub framer: Framer,
    pub cur: Option<(Header, Vec<u8>)>,
}

impl Records {
    pub fn new() -> Records {
        Records { framer: Framer::new(0, MAX_CIPHERTEXT_TLS12), cur: None }
    }

    pub fn push(&mut self, mut input: &[u8]) -> Vec<(Header, Vec<u8>)> {
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

pub fn whole(h: &Header, body: &[u8]) -> Vec<u8> {
    let mut v = h.encode().to_vec();
    v.extend_from_slice(body);
    v
}

pub fn client_output(client: &mut ClientConnection) -> Vec<u8> {
    let mut out = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut out).unwrap();
    }
    out
}

/// The client and the engine's side of one flow after the handshake.
pub struct Flow {
    pub client: ClientConnection,
    /// The engine's session (named for the record layer beneath it).
    pub layer: Session,
    pub records: Records,
    /// Client bytes the engine consumed in the handshake (the outer offset where records begin,
    /// less the SYN's 1).
    pub handshake_bytes: u64,
    /// A copy of the client's sending key, to write records rustls never writes (padded ones).
    /// Only in step with the engine while the rustls client itself sends nothing more.
    pub client_key: RecordKey,
}

/// A sealing key from the secrets rustls extracted (the engine's receive key is the client's
/// sending key).
fn key_copy(version: Version, seq: u64, s: &ConnectionTrafficSecrets) -> Result<RecordKey, CryptoError> {
    let (suite, key, iv) = match s {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Suite::Aes128Gcm, key, iv),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Suite::Aes256Gcm, key, iv),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (Suite::Chacha20Poly1305, key, iv),
        _ => panic!("suite"),
    };
    RecordKey::from_parts(version, suite, key.as_ref(), iv.as_ref().try_into().unwrap(), seq)
}

impl Flow {
    pub fn handshake(suite: SupportedCipherSuite) -> Result<Flow, CryptoError> {
        let (server_cfg, client_cfg) = configs(suite);
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = ClientConnection::new(client_cfg, name).unwrap();
        let mut hs = Handshake::new(server_cfg).unwrap();
        let mut records = Records::new();
        let mut handshake_bytes = 0u64;
        for _ in 0..10 {
            let mut to_client = Vec::new();
            let sent = client_output(&mut client);
            handshake_bytes += sent.len() as u64;
            for (h, body) in records.push(&sent) {
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
                let version = Version::from_rustls(suite.version().version).unwrap();
                let client_key = key_copy(version, secrets.rx.0, &secrets.rx.1);
                let layer = Session::new(RecordLayer::new(secrets, kernel)?);
                let client_key = client_key?;
                return Ok(Flow { client, layer, records, handshake_bytes, client_key });
            }
        }
        panic!("handshake did not complete");
    }

    /// What the client wrote, opened by the engine's session: what each record meant, with
    /// its plaintext (data) or what the session sent in answer (anything else).
    pub fn engine_reads(&mut self) -> Vec<Result<(Received, Vec<u8>), Fatal>> {
        let bytes = client_output(&mut self.client);
        let mut got = Vec::new();
        for (h, mut body) in self.records.push(&bytes) {
            let mut reply = Vec::new();
            got.push(self.layer.open(h, &mut body, &mut reply).map(|r| match r {
                Received::Data(range) => (Received::Data(range.clone()), body[range].to_vec()),
                other => (other, reply),
            }));
        }
        got
    }

    /// Application data the engine receives from the client, concatenated.
    pub fn engine_reads_data(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        for r in self.engine_reads() {
            match r.unwrap() {
                (Received::Data(_), pt) => all.extend(pt),
                other => panic!("expected data, got {other:?}"),
            }
        }
        all
    }

    /// Hands the engine's records to the client and returns the plaintext it can read.
    pub fn client_reads(&mut self, wire: &[u8]) -> Vec<u8> {
        let mut input = wire;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if !input.is_empty() {
                self.client.read_tls(&mut input).unwrap();
                self.client.process_new_packets().unwrap();
            }
            // Drain as we go: rustls bounds the plaintext it buffers.
            loop {
                match self.client.reader().read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
            if input.is_empty() {
                return out;
            }
        }
    }
}

/// Deterministic xorshift, so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `wire` (starting at stream offset `start`) cut at seeded random sizes up to 1500 bytes, with
/// neighbours swapped and some segments duplicated, as an impaired link delivers it.
pub fn shuffled_segments(wire: &[u8], start: u64, seed: u64) -> Vec<(u64, Vec<u8>)> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut segs = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let n = (1 + rng.below(1500) as usize).min(wire.len() - at);
        segs.push((start + at as u64, wire[at..at + n].to_vec()));
        at += n;
    }
    for i in 1..segs.len() {
        if rng.below(4) == 0 {
            segs.swap(i - 1, i);
        }
    }
    let mut fed = Vec::new();
    for s in segs {
        if rng.below(10) == 0 {
            fed.push(s.clone());
        }
        fed.push(s);
    }
    fed
}

pub fn all_suites() -> Vec<SupportedCipherSuite> {
    TLS13.iter().chain(TLS12).copied().collect()
}

/// A flow after the handshake, its upstream path starting after the consumed handshake bytes.
pub fn upstream_after_handshake(
    suite: SupportedCipherSuite,
    limits: UpLimits,
    release: Release,
) -> (Flow, Upstream, u64) {
    let f = Flow::handshake(suite).unwrap();
    let mut pairs = SeqMap::new(1, 1, 4096);
    pairs.push(f.handshake_bytes as u32, 0, 0).unwrap();
    let start = 1 + f.handshake_bytes;
    (f, Upstream::new(pairs, limits).with_release(release), start)
}

/// The client's plaintext and the ciphertext it sent for it.
pub fn client_writes(f: &mut Flow, msgs: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
    let mut plain = Vec::new();
    let mut wire = Vec::new();
    for m in msgs {
        f.client.writer().write_all(m).unwrap();
        plain.extend_from_slice(m);
        wire.extend(client_output(&mut f.client));
    }
    (plain, wire)
}

/// Messages of mixed sizes: one byte, small, a full record, several records.
pub fn messages() -> Vec<Vec<u8>> {
    [1usize, 100, 16384, 5000, 3, 40000].iter().enumerate().map(|(i, &n)| vec![i as u8 + 1; n]).collect()
}

/// Checks every forwarded piece against the plaintext (re-deliveries included) and returns how
/// far it is covered.
pub fn check(out: &[Up], plain: &[u8]) -> u64 {
    let mut covered = 1u64;
    for u in out {
        if let Up::Forward { inner, data } = u {
            let at = (*inner - 1) as usize;
            assert_eq!(&plain[at..at + data.len()], &data[..], "wrong bytes at inner {inner}");
            assert!(*inner <= covered, "gap before inner {inner}");
            covered = covered.max(inner + data.len() as u64);
        }
    }
    covered
}

/// A SYN (or SYN-ACK) with MSS 1460 and window scale 7, built by hand (`packet::Build` makes no
/// such options). IPv4.
pub fn syn(src: SocketAddr, dst: SocketAddr, seq: u32, ack: Option<u32>) -> Vec<u8> {
    syn_with_sack(src, dst, seq, ack, false)
}

/// [`syn`], offering SACK when `sack` (as Linux does by default).
pub fn syn_with_sack(src: SocketAddr, dst: SocketAddr, seq: u32, ack: Option<u32>, sack: bool) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
    };
    let tcp = TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 64240,
        window_scale: Some(7),
        max_seg_size: Some(1460),
        sack_permitted: sack,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) = (src.ip(), dst.ip()) else {
        panic!("IPv4 only")
    };
    let ip = Ipv4Repr {
        src_addr: a,
        dst_addr: b,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let mut buf = vec![0; 20 + tcp.buffer_len()];
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]), &caps);
    tcp.emit(&mut TcpPacket::new_unchecked(&mut buf[20..]), &IpAddress::Ipv4(a), &IpAddress::Ipv4(b), &caps);
    buf
}

/// A data segment (or a bare ACK when `payload` is empty) with window 502.
pub fn data(src: SocketAddr, dst: SocketAddr, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let control = if payload.is_empty() { Control::None } else { Control::Psh };
    Build { src, dst, seq: Seq(seq), ack: Some(Seq(ack)), control, window: 502, payload }.emit().unwrap()
}

/// The simulations' usual mix: one flow of 100 KB each way over 3 % loss, 5 % reordering and
/// 1 % duplication, buffered release; tests change what they are about.
pub const SIM_MIX: SimConfig = SimConfig {
    flows: 1,
    seed: 1,
    loss: 0.03,
    reorder: 0.05,
    duplicate: 0.01,
    bytes: 100_000,
    release: Release::Buffered,
    balanced: false,
    client_rx_buffer: 65535,
    key_update_at: None,
    server_write: None,
    reset_at: None,
    time_limit: std::time::Duration::from_secs(120),
    plain: false,
    client_sack: true,
    server_sack: true,
    max_flows: 65536,
    client_window_after_syn: None,
    park_after: Some(tlsgate_inline::tls_flow::PARK_AFTER),
};

/// Runs a simulation and asserts that it passed (`SIM_PRINT=1` prints each summary line).
pub fn run(suite: SupportedCipherSuite, cfg: &SimConfig) -> Summary {
    let (server, client) = configs(suite);
    let started = std::time::Instant::now();
    let s = sim::run(cfg, server, client);
    if std::env::var("SIM_PRINT").is_ok() {
        eprintln!("{s} wall={:?}", started.elapsed());
    }
    assert!(s.ok(), "seed {} {suite:?}: {s} {:?} {:?}", cfg.seed, s.violations, s.stalled);
    s
}

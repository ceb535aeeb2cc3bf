//! Entry points for the fuzz targets in `fuzz/`; each checks invariants beyond "no panic".

use crate::bridge::{Bridge, InFrame, Side, MAC_TABLE_SIZE};
use crate::engine::{Config, Engine, Limits, Service};
use crate::packet;
use crate::proxy::ProxyLimits;
use crate::seq_map::{Mapped, SeqMap};
use crate::tables::{Mode, Release};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tlsgate_record::crypto::{CryptoError, RecordKey, Suite, Version};
use tlsgate_record::frame::{
    ContentType, Event, Framer, Header, HEADER_LEN, MAX_CIPHERTEXT_TLS13, MAX_PLAINTEXT,
};

/// Frames `data` cut into chunks whose sizes come from the input itself, and checks that every
/// byte is accounted for once: header events point at the right offset, body pieces continue
/// where the last ended, and the framer's offset equals the bytes consumed until it fails.
pub fn framer(data: &[u8]) {
    let Some((&seed, mut rest)) = data.split_first() else { return };
    let mut f = Framer::new(0, MAX_CIPHERTEXT_TLS13);
    let mut consumed = 0u64;
    // (next body position, record length) while inside a record.
    let mut body_at = None::<(usize, usize)>;
    let mut step = seed as usize % 17 + 1;
    while !rest.is_empty() {
        let (mut chunk, tail) = rest.split_at(step.min(rest.len()));
        rest = tail;
        step = (step * 5 + 3) % 1500 + 1;
        loop {
            let before = chunk.len();
            let ev = f.next(&mut chunk);
            consumed += (before - chunk.len()) as u64;
            match ev {
                Ok(Some(Event::Header { header, offset })) => {
                    assert!(body_at.is_none());
                    assert!(header.len as usize <= MAX_CIPHERTEXT_TLS13);
                    assert_eq!(offset + HEADER_LEN as u64, consumed);
                    body_at = Some((0, header.len as usize));
                }
                Ok(Some(Event::Body { data, at })) => {
                    let (next, len) = body_at.unwrap();
                    assert_eq!(at, next);
                    assert!(!data.is_empty() && at + data.len() <= len);
                    body_at = Some((at + data.len(), len));
                }
                Ok(Some(Event::End { header })) => {
                    let (next, len) = body_at.take().unwrap();
                    assert_eq!((next, len), (header.len as usize, header.len as usize));
                    assert!(f.at_boundary());
                }
                Ok(None) => {
                    assert!(chunk.is_empty());
                    assert!(f.held() < HEADER_LEN);
                    break;
                }
                Err(_) => return,
            }
            assert_eq!(f.offset(), consumed);
        }
    }
}

/// Random record pushes, prunes and translations on a sequence-pair table: translations stay
/// monotonic, every plaintext boundary round-trips, the bound holds, and nothing panics.
pub fn seq_map(data: &[u8]) {
    let mut m = SeqMap::new(1, 1, 32);
    let mut acked = (1u64, 1u64);
    for op in data.chunks(4) {
        let [kind, a, b, c] = match op {
            [k, a, b, c] => [*k, *a, *b, *c],
            _ => return,
        };
        match kind % 3 {
            0 => {
                let inner_len = u16::from_be_bytes([a, b]) as u32 % 2000;
                let head = (c % 14) as u32;
                let trail = (c / 14 % 18) as u32;
                let _ = m.push(head + inner_len + trail, head, inner_len);
            }
            1 => {
                let (end_o, end_i) = m.end();
                let o = acked.0 + (u16::from_be_bytes([a, b]) as u64) % (end_o - acked.0 + 1);
                if let Mapped::At(i) = m.to_inner(o) {
                    acked = (o, i.min(end_i));
                    m.prune(acked.0, acked.1);
                }
            }
            _ => {}
        }
        assert!(m.len() <= 32);
        let (start_o, start_i) = m.start();
        let (end_o, end_i) = m.end();
        assert!(start_o <= end_o && start_i <= end_i);
        let mut last = 0;
        for inner in start_i..=end_i.min(start_i + 300) {
            let Mapped::At(o) = m.ack_to_outer(inner) else { panic!("{inner} inside the table") };
            assert!(o >= last && (start_o..=end_o).contains(&o));
            last = o;
            assert_eq!(m.to_inner(o), Mapped::At(inner), "round trip at {inner}");
        }
    }
}

/// A certificate resolver with no certificate: the engine fuzz target needs a `ServerConfig` but
/// no handshake ever completes in it.
#[derive(Debug)]
struct NoCert;

impl ResolvesServerCert for NoCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

const FUZZ_MAX_FLOWS: usize = 8;
/// Full-proxy flows (a SYN window below the floor, or a full table, sends fuzz SYNs there).
const FUZZ_MAX_PROXY_FLOWS: usize = 4;

fn fuzz_config(release: Release) -> Config {
    static TLS: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    let tls = TLS
        .get_or_init(|| {
            let mut c = ServerConfig::builder().with_no_client_auth().with_cert_resolver(Arc::new(NoCert));
            c.enable_secret_extraction = true;
            Arc::new(c)
        })
        .clone();
    let service = |addr: &str, server_port| Service {
        addr: addr.parse().expect("literal"),
        server_port,
        mode: Mode::Direct,
        release,
        tls: tls.clone(),
        pool: Vec::new(),
    };
    Config {
        services: vec![service("10.0.0.2:443", Some(80)), service("[fd00::2]:443", None)],
        limits: Limits {
            max_flows: FUZZ_MAX_FLOWS,
            syn_timeout: Duration::from_millis(50),
            idle_timeout: Duration::from_millis(500),
            proxy: ProxyLimits { max_flows: FUZZ_MAX_PROXY_FLOWS, ..ProxyLimits::default() },
            ..Limits::default()
        },
    }
}

/// A TCP/IPv4 header to the v4 service or from its backend, so that fuzz bytes reach the flow
/// logic instead of failing the IP parse: the fuzzer supplies flags, ports, sequence numbers,
/// options and payload after it.
fn v4_to_service(toward_server: bool, tcp: &[u8]) -> Vec<u8> {
    let total = 20 + tcp.len();
    let (src, dst) =
        if toward_server { ([10, 0, 0, 1], [10, 0, 0, 2]) } else { ([10, 0, 0, 2], [10, 0, 0, 1]) };
    let mut p = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 6, 0, 0];
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(tcp);
    p
}

/// Arbitrary packets into the engine, with time moving on: it never panics, the flow table and
/// the full proxy's stay within their bounds, and every packet it emits is either one it was given, unchanged, or
/// a TCP packet with a correct checksum. Without a certificate no handshake completes, so this
/// reaches the handshake and failure paths, not the record layer (`stream_open` fuzzes the
/// cut-through decryption). The first byte's top bit picks the release mode.
pub fn engine(data: &[u8]) {
    let cut = data.first().is_some_and(|b| b & 0x80 != 0);
    let mut e = Engine::new(fuzz_config(if cut { Release::CutThrough } else { Release::Buffered }));
    let mut now = Duration::ZERO;
    for (kind, body) in items(data) {
        now += Duration::from_millis((kind >> 3) as u64);
        let pkt = match kind & 3 {
            0 => body.to_vec(),
            1 => v4_to_service(true, body),
            _ => v4_to_service(false, body),
        };
        let mut out = Vec::new();
        e.handle_packet(now, pkt.clone(), &mut out);
        // One packet in gives a bounded burst out (a record cut to the MSS, ACKs, RSTs).
        assert!(out.len() <= 64, "{} packets out", out.len());
        for o in &out {
            assert!(o == &pkt || packet::checksum_ok(o), "a changed packet with a bad checksum");
        }
        assert!(e.flow_count() <= FUZZ_MAX_FLOWS);
        assert!(e.proxy_flow_count() <= FUZZ_MAX_PROXY_FLOWS);
        if let Some(t) = e.poll_timeout() {
            if t <= now {
                let mut again = Vec::new();
                e.handle_timeout(now, &mut again);
                assert!(again.iter().all(|p| packet::checksum_ok(p)));
                assert!(e.poll_timeout().is_none_or(|t| t > now));
            }
        }
        let r = e.report();
        assert_eq!(r.connections.len(), e.flow_count() + e.proxy_flow_count());
    }
}

/// The fuzz input as items: a kind byte, a length byte, then up to that many bytes.
fn items(mut rest: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let [kind, len, tail @ ..] = rest else { return None };
        let (body, tail) = tail.split_at((*len as usize).min(tail.len()));
        rest = tail;
        Some((*kind, body))
    })
}

/// Ethernet frames from either side into the L2 bridge: arbitrary frames (ARP, VLAN, IPv6,
/// truncated headers) and IPv4 TCP toward and from a service behind Ethernet headers. Each
/// frame out is a whole Ethernet frame within the MTU, the learned tables stay bounded.
pub fn bridge(data: &[u8]) {
    const MTU: usize = 1500;
    let mut b = Bridge::new(Engine::new(fuzz_config(Release::Buffered)), [2, 0, 0, 0, 0, 1], MTU);
    let mut now = Duration::ZERO;
    for (kind, body) in items(data) {
        now += Duration::from_millis((kind >> 4) as u64);
        let from = if kind & 1 == 0 { Side::Client } else { Side::Server };
        let frame = match (kind >> 1) & 3 {
            0 => body.to_vec(),
            k => {
                let ip = v4_to_service(k == 1, body);
                let mut f = vec![0u8; 14];
                f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2 + (kind & 1)]);
                f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 3 - (kind & 1)]);
                f[12..14].copy_from_slice(&[0x08, 0x00]);
                f.extend_from_slice(&ip);
                f
            }
        };
        let mut out = Vec::new();
        b.handle_frame(
            now,
            InFrame { from, data: &frame, csum_partial: kind & 8 != 0, gso_size: 0 },
            &mut out,
        );
        assert!(out.len() <= 64, "{} frames out", out.len());
        for (_, f) in &out {
            assert!(f.len() >= 14 && f.len() <= MTU + 18, "a frame of {} bytes", f.len());
        }
        if b.poll_timeout().is_some_and(|t| t <= now) {
            b.handle_timeout(now, &mut out);
        }
        assert!(b.learned(Side::Client) <= MAC_TABLE_SIZE && b.learned(Side::Server) <= MAC_TABLE_SIZE);
    }
}

const SUITES: [(Version, Suite); 6] = [
    (Version::Tls13, Suite::Aes128Gcm),
    (Version::Tls13, Suite::Aes256Gcm),
    (Version::Tls13, Suite::Chacha20Poly1305),
    (Version::Tls12, Suite::Aes128Gcm),
    (Version::Tls12, Suite::Aes256Gcm),
    (Version::Tls12, Suite::Chacha20Poly1305),
];

/// The streaming opener against the whole-record open, differentially: a record of any suite,
/// inner type (TLS 1.3 type 0 gives padding) and plaintext from the input, sealed, optionally
/// with a bit flipped anywhere in its body, opened whole and opened as a stream cut at sizes from
/// the input. Both must agree: the same plaintext, or both a bad MAC.
pub fn stream_open(data: &[u8]) {
    let [sel, seed, at_hi, at_lo, flip, plain @ ..] = data else { return };
    let (version, suite) = SUITES[*sel as usize % SUITES.len()];
    let ct = [ContentType::APPLICATION_DATA, ContentType::ALERT, ContentType::HANDSHAKE, ContentType(0)]
        [(*sel as usize / SUITES.len()) % 4];
    let plain = &plain[..plain.len().min(MAX_PLAINTEXT)];
    let key_len = if suite == Suite::Aes128Gcm { 16 } else { 32 };
    let key: Vec<u8> = (0..key_len).map(|i| seed.wrapping_mul(i as u8 + 1)).collect();
    let iv = [*seed; 12];
    let seq = u64::from(*seed) << 40 | u64::from(*sel);
    let new_key = || RecordKey::from_parts(version, suite, &key, iv, seq).expect("valid parts");
    let mut rec = Vec::new();
    new_key().seal(ct, plain, &mut rec).expect("within the limit");
    let body_len = rec.len() - HEADER_LEN;
    if *flip != 0 {
        rec[HEADER_LEN + (usize::from(*at_hi) << 8 | usize::from(*at_lo)) % body_len] ^= flip;
    }
    let header = Header::parse(rec[..HEADER_LEN].try_into().expect("5 bytes"));
    let mut body = rec[HEADER_LEN..].to_vec();
    let whole = new_key().open(header, &mut body);
    let mut s = new_key().open_stream(header).expect("the header fits the suite");
    let mut out = Vec::new();
    let (mut from, mut step) = (0, usize::from(*at_lo) % 97 + 1);
    while from < body_len {
        let to = (from + step).min(body_len);
        s.update(&rec[HEADER_LEN + from..HEADER_LEN + to], &mut out);
        from = to;
        step = (step * 7 + usize::from(*seed)) % 1500 + 1;
    }
    let streamed = s.finish();
    match (whole, streamed) {
        (Err(CryptoError::BadRecordMac), Err(CryptoError::BadRecordMac)) => {}
        (Ok(o), Ok(())) => {
            let end = o.plaintext.end;
            let text = &body[o.plaintext.clone()];
            match version {
                Version::Tls12 => assert_eq!(&out[..], text),
                Version::Tls13 => {
                    assert_eq!(&out[..end], text);
                    assert_eq!(out[end], o.content_type.0);
                    assert!(out[end + 1..].iter().all(|&b| b == 0), "padding");
                }
            }
        }
        // All zeros in TLS 1.3: no content type; the stream decrypted the same zeros.
        (Err(CryptoError::NoContentType), Ok(())) => assert!(out.iter().all(|&b| b == 0)),
        (w, st) => panic!("whole {w:?} but stream {st:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framer_entry_point_accepts_records_and_garbage() {
        let mut s = vec![3u8];
        for len in [0u16, 1, 300, 2000] {
            s.extend_from_slice(&[23, 3, 3]);
            s.extend_from_slice(&len.to_be_bytes());
            s.extend(std::iter::repeat_n(0xab, len as usize));
        }
        framer(&s);
        s.extend_from_slice(b"garbage after the records");
        framer(&s);
        framer(&[]);
        framer(&[0, 23, 3, 3, 0xff, 0xff]);
    }

    #[test]
    fn seq_map_entry_point() {
        let mut ops = Vec::new();
        for i in 0..200u8 {
            ops.extend_from_slice(&[i % 3, i, i.wrapping_mul(7), i.wrapping_mul(13)]);
        }
        seq_map(&ops);
        seq_map(&[]);
    }

    #[test]
    fn engine_entry_point_takes_syns_and_garbage() {
        // A SYN to the service with an MSS option: data offset 6 words, flags SYN.
        let mut syn = vec![0x9c, 0x40, 1, 187, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0, 0, 0, 0];
        syn.extend_from_slice(&[2, 4, 5, 0xb4]);
        let mut input = Vec::new();
        for i in 0..20u8 {
            syn[1] = i;
            input.extend_from_slice(&[1 | (i << 3), syn.len() as u8]);
            input.extend_from_slice(&syn);
        }
        input.extend_from_slice(&[0, 5, 1, 2, 3, 4, 5, 2, 3, 9, 9, 9]);
        engine(&input);
        input[0] |= 0x80;
        engine(&input);
        engine(&[]);
        engine(&[1, 0]);
    }

    #[test]
    fn bridge_entry_point_takes_frames_from_both_sides_and_garbage() {
        let mut syn = vec![0x9c, 0x40, 1, 187, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0, 0, 0, 0];
        syn.extend_from_slice(&[2, 4, 5, 0xb4]);
        let arp = [[0xff; 6].as_slice(), &[2, 0, 0, 0, 0, 9], &[8, 6], &[0, 1, 8, 0, 6, 4, 0, 1]].concat();
        let mut input = Vec::new();
        for i in 0..20u8 {
            syn[1] = i;
            // Toward the service, from the client side; every other one with a partial checksum.
            input.extend_from_slice(&[2 | ((i & 1) << 3) | (i << 4), syn.len() as u8]);
            input.extend_from_slice(&syn);
            input.extend_from_slice(&[i & 1, arp.len() as u8]);
            input.extend_from_slice(&arp);
        }
        input.extend_from_slice(&[0, 5, 1, 2, 3, 4, 5, 5, 3, 9, 9, 9]);
        bridge(&input);
        bridge(&[]);
        bridge(&[4, 0]);
    }

    #[test]
    fn stream_open_entry_point_every_suite_type_and_tamper() {
        for sel in 0..20u8 {
            for flip in [0u8, 1, 0x80] {
                for len in [0usize, 1, 40, 3000] {
                    let mut input = vec![sel, 7, 0, 30, flip];
                    input.extend((0..len).map(|i| (i % 5) as u8));
                    stream_open(&input);
                }
            }
        }
        stream_open(&[]);
    }
}

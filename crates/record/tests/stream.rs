//! The streaming opener against the whole-record open of the same crate: every suite, every split
//! of a small record, random splits of large ones, empty and maximum-size records, tampering.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tlsgate_record::crypto::{CryptoError, RecordKey, Suite, Version};
use tlsgate_record::frame::{ContentType, Header, HEADER_LEN, MAX_PLAINTEXT};
use tlsgate_record::stream::StreamOpener;

const CASES: [(Version, Suite); 6] = [
    (Version::Tls13, Suite::Aes128Gcm),
    (Version::Tls13, Suite::Aes256Gcm),
    (Version::Tls13, Suite::Chacha20Poly1305),
    (Version::Tls12, Suite::Aes128Gcm),
    (Version::Tls12, Suite::Aes256Gcm),
    (Version::Tls12, Suite::Chacha20Poly1305),
];

fn key(version: Version, suite: Suite, seq: u64) -> RecordKey {
    let len = if suite == Suite::Aes128Gcm { 16 } else { 32 };
    let k: Vec<u8> = (0..len).map(|i| (i * 13 + 7) as u8).collect();
    let iv: [u8; 12] = std::array::from_fn(|i| (i * 31 + 3) as u8);
    RecordKey::from_parts(version, suite, &k, iv, seq).unwrap()
}

/// Three keys over the same secret: one seals, one opens whole records, one opens streams.
struct Trio {
    seal: RecordKey,
    whole: RecordKey,
    stream: RecordKey,
}

fn trio(version: Version, suite: Suite) -> Trio {
    // A sequence number high enough that its bytes matter in the nonce and the TLS 1.2 AAD.
    let seq = 0x0102_0304_0506;
    Trio { seal: key(version, suite, seq), whole: key(version, suite, seq), stream: key(version, suite, seq) }
}

fn plaintext(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(29).wrapping_add(salt) | 1).collect()
}

fn split(rec: &[u8]) -> (Header, &[u8]) {
    let h: [u8; HEADER_LEN] = rec[..HEADER_LEN].try_into().unwrap();
    (Header::parse(&h), &rec[HEADER_LEN..])
}

/// What the whole-record open gives: the content and (TLS 1.3) its inner type, laid out as the
/// stream gives its plaintext (TLS 1.3: content then type byte).
fn open_whole(k: &mut RecordKey, rec: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let (header, body) = split(rec);
    let mut body = body.to_vec();
    let o = k.open(header, &mut body)?;
    let mut v = body[o.plaintext.clone()].to_vec();
    if k.version() == Version::Tls13 {
        v.push(o.content_type.0);
    }
    Ok(v)
}

/// Opens `rec` through the stream, its body cut at `cuts` (ascending offsets into the body).
fn open_stream(k: &mut RecordKey, rec: &[u8], cuts: &[usize]) -> Result<Vec<u8>, CryptoError> {
    let (header, body) = split(rec);
    let mut s: StreamOpener = k.open_stream(header)?;
    let mut out = Vec::new();
    let mut from = 0;
    for &c in cuts.iter().chain(std::iter::once(&body.len())) {
        s.update(&body[from..c], &mut out);
        from = c;
    }
    assert_eq!(s.remaining(), 0);
    s.finish()?;
    Ok(out)
}

#[test]
fn every_split_of_a_small_record_every_suite() {
    for (version, suite) in CASES {
        for ct in [ContentType::APPLICATION_DATA, ContentType::ALERT] {
            let t = &mut trio(version, suite);
            let mut rec = Vec::new();
            t.seal.seal(ct, &plaintext(40, 5), &mut rec).unwrap();
            let expect = open_whole(&mut t.whole, &rec).unwrap();
            let body_len = rec.len() - HEADER_LEN;
            for a in 0..=body_len {
                for b in a..=body_len {
                    let mut k = key(version, suite, 0x0102_0304_0506);
                    let got = open_stream(&mut k, &rec, &[a, b]).unwrap();
                    assert_eq!(got, expect, "{version:?} {suite:?} cuts {a} {b}");
                }
            }
        }
    }
}

#[test]
fn random_splits_of_records_of_every_size_every_suite() {
    let mut rng = StdRng::seed_from_u64(11);
    for (version, suite) in CASES {
        let t = &mut trio(version, suite);
        for (i, len) in
            [0, 1, 15, 16, 17, 255, 1000, 4096, MAX_PLAINTEXT - 1, MAX_PLAINTEXT].into_iter().enumerate()
        {
            let mut rec = Vec::new();
            t.seal.seal(ContentType::APPLICATION_DATA, &plaintext(len, i as u8), &mut rec).unwrap();
            let expect = open_whole(&mut t.whole, &rec).unwrap();
            assert_eq!(expect.len(), len + usize::from(version == Version::Tls13));
            let body_len = rec.len() - HEADER_LEN;
            // Each cut pattern opens the record under its own sequence number with a fresh key.
            for round in 0..20 {
                let mut cuts: Vec<usize> =
                    (0..rng.random_range(0..12)).map(|_| rng.random_range(0..=body_len)).collect();
                if round == 0 {
                    cuts.clear(); // whole body in one piece
                }
                cuts.sort_unstable();
                let mut k = key(version, suite, 0x0102_0304_0506 + i as u64);
                assert_eq!(
                    open_stream(&mut k, &rec, &cuts).unwrap(),
                    expect,
                    "{version:?} {suite:?} {len} {cuts:?}"
                );
            }
            // Byte at a time.
            let every: Vec<usize> = (1..body_len).collect();
            let mut k = key(version, suite, 0x0102_0304_0506 + i as u64);
            assert_eq!(open_stream(&mut k, &rec, &every).unwrap(), expect);
        }
    }
}

#[test]
fn records_in_sequence_use_successive_nonces() {
    for (version, suite) in CASES {
        let t = &mut trio(version, suite);
        for n in 0..5 {
            let mut rec = Vec::new();
            t.seal.seal(ContentType::APPLICATION_DATA, &plaintext(100 + n, n as u8), &mut rec).unwrap();
            let expect = open_whole(&mut t.whole, &rec).unwrap();
            let mid = rec.len() / 2;
            assert_eq!(open_stream(&mut t.stream, &rec, &[mid]).unwrap(), expect);
        }
        assert_eq!(t.stream.seq(), t.whole.seq());
        // A record opened under the wrong sequence number fails in both.
        let mut rec = Vec::new();
        t.seal.seal(ContentType::APPLICATION_DATA, b"x", &mut rec).unwrap();
        let mut skipped = key(version, suite, t.stream.seq() + 1);
        assert_eq!(open_stream(&mut skipped, &rec, &[3]), Err(CryptoError::BadRecordMac));
    }
}

#[test]
fn a_tampered_byte_anywhere_fails_the_tag_in_both_opens() {
    for (version, suite) in CASES {
        let t = &mut trio(version, suite);
        let mut rec = Vec::new();
        t.seal.seal(ContentType::APPLICATION_DATA, &plaintext(33, 9), &mut rec).unwrap();
        let seq = t.seal.seq() - 1;
        // Every body byte (explicit nonce, ciphertext, tag) and the header's version and length
        // bytes (the AAD; TLS 1.2 authenticates the plaintext length instead of the header).
        for at in 1..rec.len() {
            if (3..5).contains(&at) {
                continue; // a changed length is a different framing, not a tamper
            }
            for flip in [0x01, 0x80] {
                let mut bad = rec.clone();
                bad[at] ^= flip;
                let whole = open_whole(&mut key(version, suite, seq), &bad);
                let stream =
                    open_stream(&mut key(version, suite, seq), &bad, &[at.saturating_sub(HEADER_LEN)]);
                assert_eq!(whole, Err(CryptoError::BadRecordMac), "{version:?} {suite:?} at {at}");
                assert_eq!(stream, Err(CryptoError::BadRecordMac), "{version:?} {suite:?} at {at}");
            }
        }
    }
}

#[test]
fn an_unfinished_record_never_verifies() {
    for (version, suite) in CASES {
        let t = &mut trio(version, suite);
        let mut rec = Vec::new();
        t.seal.seal(ContentType::APPLICATION_DATA, b"hello", &mut rec).unwrap();
        let (header, body) = split(&rec);
        let mut s = t.stream.open_stream(header).unwrap();
        s.update(&body[..body.len() - 1], &mut Vec::new());
        assert_eq!(s.remaining(), 1);
        assert_eq!(s.finish(), Err(CryptoError::BadRecordMac));
    }
}

#[test]
fn headers_too_short_for_the_overhead_are_refused_before_decrypting() {
    for (version, suite) in CASES {
        let mut k = key(version, suite, 0);
        // TLS 1.3: tag and type byte; TLS 1.2: tag, and AES-GCM's explicit nonce (RFC 7905: none).
        let min = match (version, suite) {
            (Version::Tls13, _) => 17,
            (Version::Tls12, Suite::Chacha20Poly1305) => 16,
            (Version::Tls12, _) => 24,
        };
        let h = Header { content_type: ContentType::APPLICATION_DATA, version: 0x0303, len: min - 1 };
        assert_eq!(k.open_stream(h).map(|_| ()), Err(CryptoError::Short(min as usize)));
        let h = Header { len: min, ..h };
        assert!(k.open_stream(h).is_ok());
        if version == Version::Tls13 {
            let h = Header { content_type: ContentType::HANDSHAKE, ..h };
            assert_eq!(k.open_stream(h).map(|_| ()), Err(CryptoError::OuterType(22)));
        }
    }
}

/// As the engine runs it: one key opens record after record, each through `finish_stream`,
/// which hands the decryption context back for the next record. Random sizes and splits; every
/// result equals the whole-record open; a record with a flipped tag bit still fails, and a
/// dropped unfinished record leaves the next one opening.
#[test]
fn one_key_reuses_its_context_across_records_at_random_splits() {
    let mut rng = StdRng::seed_from_u64(27);
    for (version, suite) in CASES {
        let t = &mut trio(version, suite);
        for n in 0..60 {
            let len =
                if n % 3 == 0 { rng.random_range(0..=MAX_PLAINTEXT) } else { rng.random_range(0..3000) };
            let mut rec = Vec::new();
            t.seal.seal(ContentType::APPLICATION_DATA, &plaintext(len, n as u8), &mut rec).unwrap();
            let expect = open_whole(&mut t.whole, &rec).unwrap();
            let (header, body) = split(&rec);
            let mut body = body.to_vec();
            let mid = body.len() / 2;
            match n % 10 {
                4 => body[mid] ^= 0x02,                 // ciphertext, or the tag of an empty record
                7 => *body.last_mut().unwrap() ^= 0x40, // a bit of the tag
                _ => {}
            }
            let mut cuts: Vec<usize> =
                (0..rng.random_range(0..20)).map(|_| rng.random_range(0..=body.len())).collect();
            cuts.sort_unstable();
            let mut s = t.stream.open_stream(header).unwrap();
            let mut out = Vec::new();
            let mut from = 0;
            for &c in cuts.iter().chain(std::iter::once(&body.len())) {
                s.update(&body[from..c], &mut out);
                from = c;
            }
            match n % 10 {
                // A bad tag is refused; the key's next record still opens.
                4 | 7 => assert_eq!(t.stream.finish_stream(s), Err(CryptoError::BadRecordMac)),
                // Dropped unfinished: the context goes with it, the next record builds one.
                9 => drop(s),
                _ => {
                    assert_eq!(t.stream.finish_stream(s), Ok(()), "{version:?} {suite:?} {len} {cuts:?}");
                    assert_eq!(out, expect, "{version:?} {suite:?} {len} {cuts:?}");
                }
            }
        }
        assert_eq!(t.stream.seq(), t.whole.seq());
    }
}

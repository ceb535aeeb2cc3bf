//! Entry points for the fuzz targets in `fuzz/`; each checks invariants beyond "no panic".

use crate::crypto::Version;
use crate::frame::{ContentType, Header, MAX_CIPHERTEXT_TLS12, MAX_PLAINTEXT};
use crate::session::{Outcome, Rules, Side};

/// Decrypted client records through the session's rules, as a TLS 1.3 or 1.2 session would see
/// them after the tag verified: the first byte picks the version, then each item is an outer
/// content type, a length byte pair and that many plaintext bytes (TLS 1.3: the inner
/// plaintext, type and padding included). Checks: data ranges lie in the record and only data
/// records yield data; the held partial message stays within its 4-byte header; KeyUpdates only
/// in TLS 1.3, renegotiations only in 1.2; nothing but "closed" after close_notify; every
/// failure caused by the client names an alert; a record over the plaintext limit never passes.
pub fn session_rules(data: &[u8]) {
    let Some((&first, mut rest)) = data.split_first() else { return };
    let version = if first & 1 == 0 { Version::Tls13 } else { Version::Tls12 };
    let mut rules = Rules::new(version);
    while let [ct, hi, lo, tail @ ..] = rest {
        // Lengths up to a little past the largest plaintext, most of them short.
        let len = (u16::from_be_bytes([*hi, *lo]) as usize) % (MAX_PLAINTEXT + 300);
        let len = if hi & 0x80 == 0 { len % 64 } else { len };
        let take = len.min(tail.len());
        let (plain, next) = tail.split_at(take);
        rest = next;
        let outer = match version {
            Version::Tls13 => ContentType::APPLICATION_DATA,
            Version::Tls12 => ContentType(*ct),
        };
        let header = Header {
            content_type: outer,
            version: 0x0303,
            len: (take + 24).min(MAX_CIPHERTEXT_TLS12) as u16,
        };
        if let Err(reason) = rules.header(header) {
            assert!(reason.alert().is_some(), "{reason}");
            return;
        }
        let was_closed = rules.peer_closed();
        match rules.record(outer, plain, 0) {
            Ok(o) => check(version, outer, plain, was_closed, &o),
            Err(reason) => {
                if reason.side() == Side::Client && !matches!(reason, crate::session::Reason::PeerAlert(_)) {
                    assert!(reason.alert().is_some(), "{reason}");
                }
                return;
            }
        }
        assert!(rules.held() < 4);
    }
}

fn check(version: Version, outer: ContentType, plain: &[u8], was_closed: bool, o: &Outcome) {
    let limit = match version {
        Version::Tls13 => MAX_PLAINTEXT + 1,
        Version::Tls12 => MAX_PLAINTEXT,
    };
    if was_closed {
        assert_eq!(o, &Outcome { closed: true, ..Outcome::default() });
        return;
    }
    assert!(plain.len() <= limit);
    if let Some(r) = &o.data {
        assert!(r.end <= plain.len());
        match version {
            Version::Tls13 => assert_eq!(plain[r.end], ContentType::APPLICATION_DATA.0),
            Version::Tls12 => assert_eq!((outer, r.end), (ContentType::APPLICATION_DATA, plain.len())),
        }
        assert!(o.key_update.is_none() && o.renegotiations == 0 && !o.closed);
    }
    match version {
        Version::Tls13 => assert_eq!(o.renegotiations, 0),
        Version::Tls12 => assert!(o.key_update.is_none()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The target over hand-made inputs (each a path the fuzzer should find) and random ones,
    /// so that a broken invariant shows in `cargo test` too.
    #[test]
    fn the_rules_target_holds_on_sample_and_random_inputs() {
        let ku = [23u8, 0, 6, 24, 0, 0, 1, 1, 22];
        let split = [23u8, 0, 3, 24, 0, 22, 23, 0, 4, 0, 1, 0, 22];
        let close = [23u8, 0, 3, 1, 0, 21, 23, 0, 3, b'x', 23, 0];
        let reneg = [22u8, 0, 6, 1, 0, 0, 2, 9, 9, 23, 0, 1, b'y'];
        for (v, items) in [(0u8, &ku[..]), (0, &split), (0, &close), (1, &reneg)] {
            let mut input = vec![v];
            input.extend_from_slice(items);
            session_rules(&input);
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let n = (x % 200) as usize;
            let input: Vec<u8> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Biased toward the bytes that matter: types, KeyUpdate, small lengths.
                    [0, 1, 2, 20, 21, 22, 23, 24, (x >> 8) as u8][(x % 9) as usize]
                })
                .collect();
            session_rules(&input);
        }
    }
}

//! RFC 8446 §4.1.2: after a HelloRetryRequest the client must send the same ClientHello again,
//! changed only in its key_share, a removed early_data, a cookie the server asked for, a
//! pre_shared_key recomputed, and its padding; a server that sees other changes aborts with
//! illegal_parameter. rustls checks only early_data and a withdrawn pre_shared_key, so the
//! driver compares the two hellos in the plaintext handshake records before rustls reads the
//! second one.

/// Follows the client's plaintext handshake records up to the second ClientHello.
#[derive(Debug, Default)]
pub(super) struct SecondHello {
    /// Handshake bytes of plaintext records not yet cut into messages.
    buf: Vec<u8>,
    /// The first ClientHello's body.
    first: Option<Vec<u8>>,
    /// The server answered the first hello with a HelloRetryRequest.
    retry: bool,
    /// Nothing more to check (the second hello compared, or no retry).
    done: bool,
}

/// The extensions the second hello may change (RFC 8446 §4.1.2): pre_shared_key (41), key_share
/// (51), padding (21). early_data (42) may only be removed, which the comparison allows by
/// leaving it out of the first hello's list alone. A cookie (44) is allowed only when the
/// HelloRetryRequest carried one, which rustls's never does.
const MAY_CHANGE: [u16; 3] = [41, 51, 21];
const EARLY_DATA: u16 = 42;

/// The random of a ServerHello that is a HelloRetryRequest (RFC 8446 §4.1.3).
pub(super) const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91, 0xc2,
    0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

impl SecondHello {
    /// Takes a client record before rustls does: `Err` with what changed when it completes a
    /// second ClientHello that differs from the first in what must not change.
    pub(super) fn client_record(&mut self, record: &[u8]) -> Result<(), String> {
        if self.done || record.len() < 5 || record[0] != 0x16 {
            return Ok(());
        }
        if self.first.is_some() && !self.retry {
            // The server's answer to the first hello was not a retry: nothing to compare.
            self.done = true;
            return Ok(());
        }
        self.buf.extend_from_slice(&record[5..]);
        while self.buf.len() >= 4 {
            let len = u32::from_be_bytes([0, self.buf[1], self.buf[2], self.buf[3]]) as usize;
            if self.buf.len() < 4 + len {
                return Ok(());
            }
            let msg: Vec<u8> = self.buf.drain(..4 + len).collect();
            if msg[0] != 1 {
                self.done = true;
                return Ok(());
            }
            match self.first.take() {
                None => self.first = Some(msg[4..].to_vec()),
                Some(first) => {
                    self.done = true;
                    return compare(&first, &msg[4..]);
                }
            }
        }
        Ok(())
    }

    /// Sees what the server sent after the first hello: whether it was a HelloRetryRequest.
    pub(super) fn server_output(&mut self, out: &[u8]) {
        if self.done || self.retry || self.first.is_none() || out.len() < 5 + 4 + 2 + 32 {
            return;
        }
        // A plaintext handshake record holding a ServerHello: type, length, version, random.
        if out[0] == 0x16 && out[5] == 2 {
            self.retry = out[5 + 4 + 2..5 + 4 + 2 + 32] == HRR_RANDOM;
        }
        if !self.retry {
            self.done = true;
        }
    }
}

/// The parts of a ClientHello body the comparison looks at.
struct Hello<'a> {
    /// legacy_version, random, legacy_session_id, cipher_suites, legacy_compression_methods.
    head: &'a [u8],
    extensions: Vec<(u16, &'a [u8])>,
}

fn parse(body: &[u8]) -> Option<Hello<'_>> {
    let mut at = 2 + 32;
    let vec = |at: &mut usize, width: usize| -> Option<()> {
        let len = body.get(*at..*at + width)?.iter().fold(0usize, |n, &b| n << 8 | b as usize);
        *at += width + len;
        (*at <= body.len()).then_some(())
    };
    vec(&mut at, 1)?; // legacy_session_id
    vec(&mut at, 2)?; // cipher_suites
    vec(&mut at, 1)?; // legacy_compression_methods
    let head = &body[..at];
    let mut extensions = Vec::new();
    if at < body.len() {
        let total = usize::from(u16::from_be_bytes(body.get(at..at + 2)?.try_into().ok()?));
        let mut rest = body.get(at + 2..at + 2 + total)?;
        while !rest.is_empty() {
            let typ = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?);
            let len = usize::from(u16::from_be_bytes(rest.get(2..4)?.try_into().ok()?));
            extensions.push((typ, rest.get(4..4 + len)?));
            rest = &rest[4 + len..];
        }
    }
    Some(Hello { head, extensions })
}

/// `Err` naming the change when `second` is not `first` as RFC 8446 §4.1.2 allows. A hello that
/// does not parse is left to rustls, which refuses it with decode_error.
fn compare(first: &[u8], second: &[u8]) -> Result<(), String> {
    let (Some(a), Some(b)) = (parse(first), parse(second)) else { return Ok(()) };
    if a.head != b.head {
        return Err("its version, random, session id, cipher suites or compression methods".into());
    }
    let kept = |h: &Hello<'_>, drop_early: bool| -> Vec<(u16, Vec<u8>)> {
        h.extensions
            .iter()
            .filter(|(t, _)| !(drop_early && *t == EARLY_DATA))
            .map(|&(t, d)| (t, if MAY_CHANGE.contains(&t) { Vec::new() } else { d.to_vec() }))
            .filter(|(t, _)| *t != 21)
            .collect()
    };
    let (types_a, types_b) = (kept(&a, true), kept(&b, false));
    if types_a.iter().map(|e| e.0).ne(types_b.iter().map(|e| e.0)) {
        return Err("its extensions (added, removed or reordered)".into());
    }
    if let Some((t, _)) = types_a.iter().zip(&types_b).find(|(x, y)| x != y).map(|(x, _)| x) {
        return Err(format!("the contents of extension {t}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(random: u8, exts: &[(u16, &[u8])]) -> Vec<u8> {
        let mut b = vec![3, 3];
        b.extend_from_slice(&[random; 32]);
        b.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        let mut e = Vec::new();
        for (t, d) in exts {
            e.extend_from_slice(&t.to_be_bytes());
            e.extend_from_slice(&(d.len() as u16).to_be_bytes());
            e.extend_from_slice(d);
        }
        b.extend_from_slice(&(e.len() as u16).to_be_bytes());
        b.extend_from_slice(&e);
        b
    }

    #[test]
    fn what_may_change_and_what_may_not_rfc8446_4_1_2() {
        let first =
            hello(1, &[(0, b"sni"), (42, b""), (51, b"share a"), (21, b"\0\0"), (43, b"v"), (41, b"psk 1")]);
        let ok = hello(1, &[(0, b"sni"), (51, b"share b"), (43, b"v"), (41, b"psk 2")]);
        assert_eq!(compare(&first, &ok), Ok(()));
        let padded = hello(1, &[(0, b"sni"), (51, b"b"), (21, b"\0\0\0\0"), (43, b"v"), (41, b"p")]);
        assert_eq!(compare(&first, &padded), Ok(()));
        // early_data must go (RFC 8446 §4.2.10).
        let kept = hello(1, &[(0, b"sni"), (42, b""), (51, b"b"), (43, b"v"), (41, b"p")]);
        assert!(compare(&first, &kept).is_err());
        for changed in [
            hello(2, &[(0, b"sni"), (51, b"b"), (43, b"v"), (41, b"p")]),
            hello(1, &[(0, b"other"), (51, b"b"), (43, b"v"), (41, b"p")]),
            hello(1, &[(43, b"v"), (51, b"b"), (0, b"sni"), (41, b"p")]),
            hello(1, &[(0, b"sni"), (51, b"b"), (41, b"p")]),
            hello(1, &[(0, b"sni"), (51, b"b"), (43, b"v"), (44, b"cookie"), (41, b"p")]),
            hello(1, &[(0, b"sni"), (51, b"b"), (43, b"v"), (1234, b""), (41, b"p")]),
        ] {
            assert!(compare(&first, &changed).is_err());
        }
        // early_data may go, not come.
        let without = hello(1, &[(0, b"sni"), (51, b"a")]);
        let with = hello(1, &[(0, b"sni"), (42, b""), (51, b"a")]);
        assert!(compare(&without, &with).is_err());
    }
}

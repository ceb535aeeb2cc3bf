//! TLS 1.3 application traffic secrets kept by the record layer itself, so that a server
//! connection can follow key updates without rustls's `KernelConnection` (about 830 bytes with
//! its heap, most of it the handshake's key schedule, which nothing after the handshake needs).
//!
//! rustls 0.23 does not export the traffic secrets, but it passes them to a configuration's
//! `KeyLog` as the handshake derives them (`CLIENT_TRAFFIC_SECRET_0`, `SERVER_TRAFFIC_SECRET_0`).
//! [`Capture`] is a `KeyLog` made for one handshake (so no lookup by client random is needed, and
//! no other connection's secrets can be taken): it keeps those two labels and ignores the rest.
//! Nothing here prints or logs a secret; `Debug` shows none.
//!
//! At the handover, [`TrafficSecrets::verified`] derives the key and IV of each captured secret
//! (RFC 8446 §7.3) and compares them with the keys rustls extracted: a secret is used only when
//! it provably belongs to this connection's keys. A key update is HKDF-Expand-Label(secret,
//! "traffic upd", "", Hash.length) (RFC 8446 §7.2).

use crate::crypto::{Suite, Version};
use aws_lc_rs::hkdf;
use rustls::ConnectionTrafficSecrets;
use std::sync::Mutex;

/// The largest hash output of a TLS 1.3 suite (SHA-384).
const MAX_SECRET: usize = 48;

/// One traffic secret, sized to its suite's hash; wiped on drop.
#[derive(Clone)]
pub struct Secret {
    bytes: [u8; MAX_SECRET],
    len: u8,
}

impl Secret {
    fn new(s: &[u8]) -> Option<Secret> {
        if s.len() > MAX_SECRET || s.is_empty() {
            return None;
        }
        let mut bytes = [0u8; MAX_SECRET];
        bytes[..s.len()].copy_from_slice(s);
        Some(Secret { bytes, len: s.len() as u8 })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The next generation of this secret (RFC 8446 §7.2).
    fn next(&self) -> Option<Secret> {
        let mut out = [0u8; MAX_SECRET];
        let out = &mut out[..usize::from(self.len)];
        expand_label(self.as_bytes(), b"traffic upd", out)?;
        Secret::new(out)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.bytes = [0; MAX_SECRET];
        // Keeps the wipe of memory about to be freed from being optimised away.
        std::hint::black_box(&mut self.bytes);
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.len)
    }
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label(secret, label, "", out.len()) (RFC 8446 §7.1). The hash is the suite's,
/// told by the secret's length (32: SHA-256, 48: SHA-384).
fn expand_label(secret: &[u8], label: &[u8], out: &mut [u8]) -> Option<()> {
    let alg = match secret.len() {
        32 => hkdf::HKDF_SHA256,
        48 => hkdf::HKDF_SHA384,
        _ => return None,
    };
    let prk = hkdf::Prk::new_less_safe(alg, secret);
    let length = u16::try_from(out.len()).ok()?.to_be_bytes();
    let label_len = [u8::try_from(6 + label.len()).ok()?];
    let info: [&[u8]; 5] = [&length, &label_len, b"tls13 ", label, &[0u8]];
    prk.expand(&info, Len(out.len())).ok()?.fill(out).ok()
}

/// The AEAD key and IV of a traffic secret (RFC 8446 §7.3), for `suite`.
pub fn traffic_keys(suite: Suite, secret: &Secret) -> Option<([u8; 32], usize, [u8; 12])> {
    let key_len = match suite {
        Suite::Aes128Gcm => 16,
        Suite::Aes256Gcm | Suite::Chacha20Poly1305 => 32,
    };
    let mut key = [0u8; 32];
    let mut iv = [0u8; 12];
    expand_label(secret.as_bytes(), b"key", &mut key[..key_len])?;
    expand_label(secret.as_bytes(), b"iv", &mut iv)?;
    Some((key, key_len, iv))
}

/// A `KeyLog` for one server handshake: keeps its two application traffic secrets.
#[derive(Default)]
pub struct Capture {
    /// (client's, server's) as rustls derived them.
    secrets: Mutex<(Option<Secret>, Option<Secret>)>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Capture")
    }
}

const CLIENT_LABEL: &str = "CLIENT_TRAFFIC_SECRET_0";
const SERVER_LABEL: &str = "SERVER_TRAFFIC_SECRET_0";

impl rustls::KeyLog for Capture {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        let Ok(mut s) = self.secrets.lock() else { return };
        match label {
            CLIENT_LABEL => s.0 = Secret::new(secret),
            SERVER_LABEL => s.1 = Secret::new(secret),
            _ => {}
        }
    }

    fn will_log(&self, label: &str) -> bool {
        label == CLIENT_LABEL || label == SERVER_LABEL
    }
}

impl Capture {
    /// The captured secrets: (client's, server's), once both were derived.
    fn take(&self) -> Option<(Secret, Secret)> {
        let mut s = self.secrets.lock().ok()?;
        Some((s.0.take()?, s.1.take()?))
    }
}

/// A server's TLS 1.3 receive (client's) and transmit (server's) traffic secrets.
#[derive(Debug)]
pub struct TrafficSecrets {
    suite: Suite,
    rx: Secret,
    tx: Secret,
}

impl TrafficSecrets {
    /// The same secrets in a new allocation (the caller drops the old, which wipes them): a
    /// caller that keeps them long (a parked flow) makes them where its long-lived state goes.
    pub fn reallocated(&self) -> Box<TrafficSecrets> {
        Box::new(TrafficSecrets { suite: self.suite, rx: self.rx.clone(), tx: self.tx.clone() })
    }

    /// The secrets `capture` took from a server handshake, when they are those of the keys
    /// rustls extracted from it (`rx`: the client's, `tx`: the server's); `None` otherwise
    /// (not TLS 1.3, nothing captured, a mismatch), and the caller keeps rustls's key schedule.
    pub fn verified(
        capture: &Capture,
        version: Version,
        rx: &ConnectionTrafficSecrets,
        tx: &ConnectionTrafficSecrets,
    ) -> Option<TrafficSecrets> {
        if version != Version::Tls13 {
            return None;
        }
        let (client, server) = capture.take()?;
        let suite = suite_of(rx)?;
        (suite_of(tx)? == suite).then_some(())?;
        (matches(suite, &client, rx) && matches(suite, &server, tx)).then_some(TrafficSecrets {
            suite,
            rx: client,
            tx: server,
        })
    }

    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The current receive key and IV (of the client's secret as it stands).
    pub fn rx_keys(&self) -> Option<([u8; 32], usize, [u8; 12])> {
        traffic_keys(self.suite, &self.rx)
    }

    /// The current transmit key and IV.
    pub fn tx_keys(&self) -> Option<([u8; 32], usize, [u8; 12])> {
        traffic_keys(self.suite, &self.tx)
    }

    /// The next receive key and IV: the client's key update (RFC 8446 §4.6.3, §7.2).
    pub fn update_rx(&mut self) -> Option<([u8; 32], usize, [u8; 12])> {
        self.rx = self.rx.next()?;
        traffic_keys(self.suite, &self.rx)
    }

    /// The next transmit key and IV: our key update.
    pub fn update_tx(&mut self) -> Option<([u8; 32], usize, [u8; 12])> {
        self.tx = self.tx.next()?;
        traffic_keys(self.suite, &self.tx)
    }
}

fn suite_of(s: &ConnectionTrafficSecrets) -> Option<Suite> {
    match s {
        ConnectionTrafficSecrets::Aes128Gcm { .. } => Some(Suite::Aes128Gcm),
        ConnectionTrafficSecrets::Aes256Gcm { .. } => Some(Suite::Aes256Gcm),
        ConnectionTrafficSecrets::Chacha20Poly1305 { .. } => Some(Suite::Chacha20Poly1305),
        _ => None,
    }
}

/// Whether `secret` yields the key and IV rustls extracted.
fn matches(suite: Suite, secret: &Secret, extracted: &ConnectionTrafficSecrets) -> bool {
    let (key, iv) = match extracted {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (key.as_ref(), iv.as_ref()),
        _ => return false,
    };
    traffic_keys(suite, secret).is_some_and(|(k, len, v)| &k[..len] == key && &v[..] == iv)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8448 §3 (simple 1-RTT handshake), the server's application traffic secret and the
    /// key and IV derived from it.
    #[test]
    fn rfc8448_server_application_keys() {
        let secret = hex("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643");
        let s = Secret::new(&secret).unwrap();
        let (key, len, iv) = traffic_keys(Suite::Aes128Gcm, &s).unwrap();
        assert_eq!(&key[..len], &hex("9f02283b6c9c07efc26bb9f2ac92e356")[..]);
        assert_eq!(&iv[..], &hex("cf782b88dd83549aadf1e984")[..]);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }
}

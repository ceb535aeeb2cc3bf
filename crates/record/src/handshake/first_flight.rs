//! What a server checks in a client's first bytes before rustls reads them: rules rustls leaves
//! to its callers (its Acceptor and its unbuffered connection enforce none of them), applied by
//! terminate's ClientHello reader and by the shared server handshake alike, so the inline engine
//! answers a broken first flight as terminate does.
//!
//! Fed the client's bytes in any pieces, from the connection's first byte:
//! - a plaintext handshake, alert or change_cipher_spec record longer than 2^14 bytes is
//!   record_overflow (RFC 8446 §5.1, RFC 5246 §6.2.1); application data is left alone (0-RTT
//!   ciphertext has its own limit, which rustls checks);
//! - a first handshake message other than a ClientHello is unexpected_message (RFC 8446 §6.2,
//!   "the wrong handshake message"), whatever its body: rustls decodes the body by the type
//!   first, so a ClientHello's bytes under another known type got decode_error, or no alert;
//! - a ClientHello whose `legacy_version` is below TLS 1.2 is protocol_version (RFC 8446 §4.1.2
//!   and Appendix D: a TLS 1.3 client sends 0x0303 there; anything lower offers only older
//!   versions), when the first record holds it.

use rustls::AlertDescription;

/// Largest TLSPlaintext.length (RFC 8446 §5.1).
const MAX_PLAINTEXT: usize = 1 << 14;
/// Record header (5), handshake header (4), then the ClientHello's `legacy_version` (2).
const HELLO_VERSION_END: usize = 11;
/// The handshake type of a ClientHello (RFC 8446 §4).
const CLIENT_HELLO: u8 = 1;
/// The lowest `legacy_version` a server of TLS 1.2 and 1.3 takes.
const TLS12: u16 = 0x0303;

/// Why the first flight was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A plaintext record of this length, over 2^14.
    RecordOverflow(usize),
    /// A first handshake message of this type, not a ClientHello.
    NotClientHello(u8),
    /// A ClientHello with this `legacy_version`, older than TLS 1.2.
    TooOld(u16),
}

impl Refusal {
    pub fn alert(self) -> AlertDescription {
        match self {
            Refusal::RecordOverflow(_) => AlertDescription::RecordOverflow,
            Refusal::NotClientHello(_) => AlertDescription::UnexpectedMessage,
            Refusal::TooOld(_) => AlertDescription::ProtocolVersion,
        }
    }

    /// The fatal alert as a plaintext record, as a server sends it before its ServerHello (in
    /// a TLS 1.0 record for a client too old for 1.2, which may not parse a newer one).
    pub fn alert_record(self) -> [u8; 7] {
        let minor = if matches!(self, Refusal::TooOld(_)) { 0x01 } else { 0x03 };
        [0x15, 0x03, minor, 0x00, 0x02, 0x02, u8::from(self.alert())]
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::RecordOverflow(len) => {
                write!(f, "client sent a record of {len} bytes (TLS allows {MAX_PLAINTEXT})")
            }
            Refusal::NotClientHello(kind) => {
                write!(f, "client sent handshake message type {kind} where a ClientHello belongs")
            }
            Refusal::TooOld(v) => write!(f, "client's ClientHello offers only versions up to {v:#06x}"),
        }
    }
}

/// The first-flight rules over a client's bytes (see the module documentation).
#[derive(Clone, Debug, Default)]
pub struct FirstFlight {
    /// The connection's first bytes, up to the ClientHello's `legacy_version` (an array: no
    /// allocation per handshake, which both terminate's reader and the shared handshake make).
    head: [u8; HELLO_VERSION_END],
    head_len: usize,
    /// The record header being read, how much of it, and the body bytes left to skip.
    header: [u8; 5],
    header_len: usize,
    body_left: usize,
}

impl FirstFlight {
    /// Feeds the client's next bytes. `Err` at the first rule broken; once refused, the
    /// connection ends.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        let wanted = (HELLO_VERSION_END - self.head_len).min(bytes.len());
        self.head[self.head_len..self.head_len + wanted].copy_from_slice(&bytes[..wanted]);
        self.head_len += wanted;
        self.record_lengths(bytes)?;
        if let Some(kind) = self.first_message_type().filter(|&t| t != CLIENT_HELLO) {
            return Err(Refusal::NotClientHello(kind));
        }
        match self.legacy_version() {
            Some(v) if v < TLS12 => Err(Refusal::TooOld(v)),
            _ => Ok(()),
        }
    }

    /// The ClientHello's `legacy_version`, when the connection's first record holds that much
    /// of it (a hello cut into smaller records is left to rustls).
    pub fn legacy_version(&self) -> Option<u16> {
        let h = self.head.get(..self.head_len).filter(|h| h.len() == HELLO_VERSION_END)?;
        let record_len = u16::from_be_bytes([h[3], h[4]]);
        (h[0] == 0x16 && h[5] == CLIENT_HELLO && record_len >= 6).then(|| u16::from_be_bytes([h[9], h[10]]))
    }

    /// The type of the connection's first handshake message, when its first record is a
    /// non-empty handshake record (a zero-length one rustls refuses itself).
    fn first_message_type(&self) -> Option<u8> {
        let h = self.head.get(..self.head_len)?.get(..6)?;
        (h[0] == 0x16 && u16::from_be_bytes([h[3], h[4]]) > 0).then_some(h[5])
    }

    /// Follows record boundaries across feeds; `Err` for a plaintext record over 2^14.
    fn record_lengths(&mut self, mut bytes: &[u8]) -> Result<(), Refusal> {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let skip = self.body_left.min(bytes.len());
                self.body_left -= skip;
                bytes = &bytes[skip..];
                continue;
            }
            let take = (5 - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&bytes[..take]);
            self.header_len += take;
            bytes = &bytes[take..];
            if self.header_len == 5 {
                self.header_len = 0;
                let len = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                if matches!(self.header[0], 20..=22) && len > MAX_PLAINTEXT {
                    return Err(Refusal::RecordOverflow(len));
                }
                self.body_left = len;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(version: u16, body: usize) -> Vec<u8> {
        let len = 4 + 2 + body;
        let mut r = vec![0x16, 0x03, 0x01];
        r.extend_from_slice(&(len as u16).to_be_bytes());
        let hs_len = 2 + body;
        r.extend_from_slice(&[CLIENT_HELLO, 0, (hs_len >> 8) as u8, hs_len as u8]);
        r.extend_from_slice(&version.to_be_bytes());
        r.resize(5 + len, 0);
        r
    }

    #[test]
    fn a_tls12_hello_passes_in_any_pieces() {
        let h = hello(0x0303, 40);
        for piece in [h.len(), 1, 3, 7] {
            let mut f = FirstFlight::default();
            assert!(h.chunks(piece).all(|p| f.feed(p).is_ok()), "{piece}");
            assert_eq!(f.legacy_version(), Some(0x0303));
        }
    }

    #[test]
    fn each_rule_refuses_with_its_alert() {
        let mut f = FirstFlight::default();
        assert_eq!(f.feed(&hello(0x0302, 40)), Err(Refusal::TooOld(0x0302)));
        let mut h = hello(0x0303, 40);
        h[5] = 13;
        assert_eq!(FirstFlight::default().feed(&h), Err(Refusal::NotClientHello(13)));
        assert_eq!(
            Refusal::NotClientHello(13).alert_record()[6],
            u8::from(AlertDescription::UnexpectedMessage)
        );
        let mut f = FirstFlight::default();
        assert_eq!(f.feed(&[0x16, 0x03, 0x01, 0x40, 0x01]), Err(Refusal::RecordOverflow((1 << 14) + 1)));
        // Exactly 2^14 is allowed; 0-RTT application data is ciphertext with its own limit.
        let mut f = FirstFlight::default();
        assert_eq!(
            f.feed(&[0x16, 0x03, 0x01, 0x40, 0x00, CLIENT_HELLO, 0x00, 0x3f, 0xfc, 0x03, 0x03]),
            Ok(())
        );
        assert_eq!(f.feed(&vec![0; (1 << 14) - 6]), Ok(()));
        assert_eq!(f.feed(&[0x17, 0x03, 0x03, 0x40, 0x11]), Ok(()));
        // A protocol_version alert goes in a TLS 1.0 record.
        assert_eq!(Refusal::TooOld(0x0300).alert_record()[..3], [0x15, 0x03, 0x01]);
    }
}

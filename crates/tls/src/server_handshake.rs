//! A terminate listener's server handshake on rustls's *unbuffered* API, sans-IO.
//!
//! The connection itself is driven by `tlsgate_record::handshake` (shared with the inline engine;
//! the rustls 0.24 upgrade replaces the unbuffered API, so its calls stay there); this module adds
//! terminate's parts: the ClientHello read before any answer, and the session's facts. The
//! unbuffered connection is used because only it converts into a [`KernelConnection`] once the
//! handshake is over: the keys and record sequence numbers go to tlsgate's own record layer
//! (`tlsgate-record`), and rustls keeps only the key schedule for TLS 1.3 key updates. No rustls
//! buffer outlives the handshake.
//!
//! The caller feeds whole records, one at a time, and stops at completion: the client's first
//! application records never reach rustls, so the extracted receive sequence number is exactly
//! that of the next record on the wire. Everything rustls wants sent (the server flight, the TLS
//! 1.3 session ticket after the client's Finished, a fatal alert) is appended to `out`.

use std::io::Read;
use std::sync::Arc;

use rustls::kernel::KernelConnection;
use rustls::server::{Acceptor, ServerConfig, ServerConnectionData};
use rustls::{AlertDescription, ExtractedSecrets, ProtocolVersion, SupportedCipherSuite};
use tlsgate_core::identity::PeerIdentity;
use tlsgate_record::handshake::first_flight::{FirstFlight, Refusal};
use tlsgate_record::handshake::{self, HandshakeError};

use crate::describe::{self, Peer};
use crate::identity::peer_identity;

/// Why a ClientHello was not accepted: what to log, and rustls's alert to send (may be empty).
#[derive(Debug)]
pub struct HelloError {
    pub message: String,
    pub alert: Vec<u8>,
}

/// Reads a ClientHello without answering it, so that a name with no certificate or no route is
/// refused before any key exchange is spent on it. The same bytes are then fed to
/// [`ServerHandshake`] (the hello is parsed twice; a few microseconds against a key exchange).
#[derive(Default)]
pub struct HelloReader {
    acceptor: Acceptor,
    /// The rules rustls's Acceptor leaves to its caller (record length, first message type,
    /// legacy_version), the same the shared server handshake applies.
    first_flight: FirstFlight,
    /// The hello offered ALPN `acme-tls/1`: an ACME server validating TLS-ALPN-01.
    acme_tls: bool,
}

impl std::fmt::Debug for HelloReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelloReader").finish_non_exhaustive()
    }
}

impl HelloReader {
    /// Feeds the next bytes of the connection. `Ok(Some(sni))` once a whole ClientHello arrived.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<Option<Option<String>>, HelloError> {
        let fail = |message: String| HelloError { message, alert: Vec::new() };
        if let Err(refusal) = self.first_flight.feed(bytes) {
            let message = match refusal {
                // Said so that the operator sees the client is simply too old.
                Refusal::TooOld(v) => describe::too_old(v).unwrap_or_else(|| refusal.to_string()),
                _ => refusal.to_string(),
            };
            return Err(HelloError { message, alert: refusal.alert_record().to_vec() });
        }
        // rustls's Acceptor parses only in `accept`, and until then buffers at most one record's
        // worth: a ClientHello in several records (RFC 8446 §5.1) that arrives in one read is
        // given to it a read's worth at a time, each parsed before the next.
        loop {
            if !bytes.is_empty() {
                let taken = self
                    .acceptor
                    .read_tls(&mut bytes as &mut dyn Read)
                    .map_err(|e| fail(format!("ClientHello too large or unreadable: {e}")))?;
                if taken == 0 {
                    return Err(fail("ClientHello larger than rustls accepts".into()));
                }
            }
            match self.acceptor.accept() {
                Ok(Some(accepted)) => {
                    let hello = accepted.client_hello();
                    self.acme_tls =
                        hello.alpn().is_some_and(|mut p| p.any(|p| p == crate::acme::ACME_TLS_ALPN));
                    return Ok(Some(hello.server_name().map(str::to_owned)));
                }
                Ok(None) if bytes.is_empty() => return Ok(None),
                Ok(None) => {}
                Err((err, mut alert)) => {
                    let mut out = Vec::new();
                    let _ = alert.write_all(&mut out);
                    if out.is_empty() {
                        out = handshake::alert_rustls_leaves_out(&err).map(plain_alert).unwrap_or_default();
                    }
                    let message =
                        format!("not a valid TLS ClientHello: {}", describe::tls_error(&err, Peer::Client));
                    return Err(HelloError { message, alert: out });
                }
            }
        }
    }

    /// Whether the ClientHello (once read) offered ALPN `acme-tls/1` (RFC 8737).
    pub fn offered_acme_tls(&self) -> bool {
        self.acme_tls
    }
}

/// A fatal alert in a plaintext record, as sent before ServerHello.
fn plain_alert(description: AlertDescription) -> Vec<u8> {
    vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, u8::from(description)]
}

pub use tlsgate_record::handshake::Progress;

/// What the handshake settled, for logs, PROXY TLVs and headers.
#[derive(Clone, Debug)]
pub struct SessionFacts {
    pub version: ProtocolVersion,
    pub suite: SupportedCipherSuite,
    pub alpn: Option<Vec<u8>>,
    /// The client certificate's identity, when one was presented and verified (mutual TLS).
    pub peer: Option<PeerIdentity>,
    /// That certificate (the leaf), for an application that asks for it (a `peer` directive).
    pub peer_cert: Option<rustls::pki_types::CertificateDer<'static>>,
    /// How a CRL would list that certificate, so a reload can close the connection once it does.
    pub revocation: Option<crate::revocation::RevocationKey>,
}

/// A finished handshake: the traffic keys with their sequence numbers, rustls's key schedule
/// for updates, and the session's facts.
pub struct Finished {
    pub secrets: ExtractedSecrets,
    pub kernel: KernelConnection<ServerConnectionData>,
    pub facts: SessionFacts,
}

impl std::fmt::Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_struct("Finished").field("facts", &self.facts).finish_non_exhaustive()
    }
}

/// A rustls server handshake fed the client's records: `tlsgate_record::handshake`'s driver
/// (shared with the inline engine), its errors as rustls's, and the session's facts at the end.
#[derive(Debug)]
pub struct ServerHandshake {
    inner: handshake::ServerHandshake,
}

impl ServerHandshake {
    /// The config must have `enable_secret_extraction` set (see [`crate::server::listener_tls`]).
    pub fn new(config: Arc<ServerConfig>) -> Result<ServerHandshake, rustls::Error> {
        Ok(ServerHandshake { inner: handshake::ServerHandshake::new(config).map_err(as_rustls)? })
    }

    /// Feeds one complete record from the client (header included) and appends to `out` what
    /// must be sent to it. On `Err`, `out` holds the fatal alert rustls chose, if any.
    pub fn record(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<Progress, rustls::Error> {
        self.inner.record(record, out).map_err(as_rustls)
    }

    /// After completion: the keys, the key schedule and the session's facts. rustls's
    /// connection (and every buffer of it) is gone afterwards.
    pub fn finish(self) -> Result<Finished, rustls::Error> {
        let hs = &self.inner;
        let facts = SessionFacts {
            version: hs.protocol_version().ok_or(rustls::Error::HandshakeNotComplete)?,
            suite: hs.cipher_suite().ok_or(rustls::Error::HandshakeNotComplete)?,
            alpn: hs.alpn_protocol().map(<[u8]>::to_vec),
            peer: hs.peer_certificates().and_then(|c| c.first()).and_then(peer_identity),
            peer_cert: hs.peer_certificates().and_then(|c| c.first()).cloned(),
            revocation: hs
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(crate::revocation::revocation_key),
        };
        let (secrets, kernel) = self.inner.into_keys().map_err(as_rustls)?;
        Ok(Finished { secrets, kernel, facts })
    }
}

/// The shared driver's error as rustls's, which the terminate shell logs.
pub(crate) fn as_rustls(e: HandshakeError) -> rustls::Error {
    match e {
        HandshakeError::Tls(e) => e,
        other => rustls::Error::General(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rustls client's first flight, made large with long ALPN names (RFC 8446 §4.1.2 lets a
    /// ClientHello span several records; RFC 5246 §6.2.1 fragments handshake messages freely).
    fn large_client_hello(alpn_bytes: usize, fragment: usize) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = vec![vec![b'a'; 250]; alpn_bytes / 251];
        let name = "example.org".try_into().unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut flight = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut flight).unwrap();
        }
        // The handshake bytes again, in records of `fragment` bytes.
        let mut body = Vec::new();
        let mut rest = &flight[..];
        while rest.len() >= 5 {
            let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
            body.extend_from_slice(&rest[5..5 + len]);
            rest = &rest[5 + len..];
        }
        let mut out = Vec::new();
        for chunk in body.chunks(fragment) {
            out.extend_from_slice(&[0x16, 0x03, 0x01]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    #[test]
    fn a_large_fragmented_hello_read_at_once_is_accepted() {
        // 40 KB of hello in 1000-byte records, all in one read: more than one record's worth
        // of buffer, within rustls's 64 KiB handshake-message limit.
        let hello = large_client_hello(40_000, 1000);
        assert!(hello.len() > 40_000);
        let mut reader = HelloReader::default();
        let sni = reader.feed(&hello).expect("hello accepted");
        assert_eq!(sni, Some(Some("example.org".to_string())));
    }

    #[test]
    fn a_record_between_hello_fragments_gets_unexpected_message() {
        // RFC 8446 §5.1: handshake messages must not be interleaved with other record types.
        let hello = large_client_hello(0, 2);
        let mut bytes = hello[..7].to_vec(); // the first record: two bytes of the hello
        bytes.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x00]); // empty application data
        bytes.extend_from_slice(&hello[7..]);
        let err = HelloReader::default().feed(&bytes).expect_err("interleaved record refused");
        assert_eq!(err.alert, plain_alert(AlertDescription::UnexpectedMessage), "{}", err.message);
        assert!(err.message.contains("interleaved"), "{}", err.message);
    }

    #[test]
    fn a_hello_record_over_2_14_bytes_gets_record_overflow() {
        // RFC 8446 §5.1: TLSPlaintext.length must not exceed 2^14; record_overflow above.
        let hello = large_client_hello(17_000, 17_000);
        assert!(u16::from_be_bytes([hello[3], hello[4]]) > 1 << 14);
        for piece in [hello.len(), 3, 1000] {
            let mut reader = HelloReader::default();
            let err = hello.chunks(piece).find_map(|p| reader.feed(p).err()).expect("refused");
            assert_eq!(err.alert, plain_alert(AlertDescription::RecordOverflow), "{}", err.message);
        }
        // The limit itself: `tlsgate_record::handshake::first_flight`'s tests.
    }

    #[test]
    fn a_first_handshake_message_other_than_a_client_hello_gets_unexpected_message() {
        // RFC 8446 §6.2: the wrong handshake message is unexpected_message, whatever its body:
        // a ClientHello's bytes under every other type, whole or a byte at a time.
        let hello = large_client_hello(0, 16_384);
        for kind in (0..=255u8).filter(|&t| t != 1) {
            let mut bytes = hello.clone();
            bytes[5] = kind;
            for piece in [bytes.len(), 1] {
                let mut reader = HelloReader::default();
                let err = bytes.chunks(piece).find_map(|p| reader.feed(p).err()).expect("refused");
                assert_eq!(
                    err.alert,
                    plain_alert(AlertDescription::UnexpectedMessage),
                    "{kind}: {}",
                    err.message
                );
                assert!(err.message.contains(&format!("type {kind} ")), "{}", err.message);
            }
        }
    }

    #[test]
    fn a_large_hello_in_pieces_is_accepted() {
        let hello = large_client_hello(40_000, 16_384);
        let mut reader = HelloReader::default();
        let mut got = None;
        for piece in hello.chunks(7_000) {
            got = reader.feed(piece).expect("hello accepted");
        }
        assert_eq!(got, Some(Some("example.org".to_string())));
    }
}

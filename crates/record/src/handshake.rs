//! The rustls server handshake fed whole client records, sans-IO, up to the handover of its keys.
//!
//! This is the one place a rustls server connection is driven for terminate and the inline
//! engine alike (the rustls 0.24 upgrade replaces the unbuffered API, so its calls stay here).
//! The *unbuffered* connection is used because only it converts into a [`KernelConnection`]: the
//! piece of rustls that keeps the key schedule after the handshake, so TLS 1.3 key updates can be
//! followed while [`crate::crypto`] does the record crypto (`dangerous_extract_secrets` gives the
//! keys once and cannot follow an update).
//!
//! The caller feeds whole records, one at a time, and stops at completion: the client's first
//! application records never reach rustls, so the extracted receive sequence number is exactly
//! that of the next record on the wire. Everything rustls wants sent (the server flight, a TLS
//! 1.3 session ticket after the client's Finished, a fatal alert) is appended to `out`; the
//! caller transmits it.

use rustls::kernel::KernelConnection;
use rustls::pki_types::CertificateDer;
use rustls::server::{ServerConfig, ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{AlertDescription, ExtractedSecrets, ProtocolVersion, SupportedCipherSuite};
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum HandshakeError {
    #[error("TLS handshake failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("application data arrived before the handshake completed")]
    Unexpected,
    #[error("peer sent close_notify during the handshake")]
    PeerClosed,
    #[error("the handshake is already complete")]
    Complete,
    #[error("client's second ClientHello differs from its first in {0} (RFC 8446 §4.1.2)")]
    SecondHelloChanged(String),
    #[error("{0}")]
    FirstFlight(first_flight::Refusal),
}

/// Whether the handshake needs more client records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    NeedMore,
    Complete,
}

/// A rustls server handshake fed the client's records.
pub struct ServerHandshake {
    conn: UnbufferedServerConnection,
    /// Client bytes rustls has not released yet: a handshake message spanning records stays in
    /// the caller's buffer in the unbuffered API.
    pending: Vec<u8>,
    /// Bytes rustls released from the front of `pending` during the current record.
    discarded: usize,
    complete: bool,
    second_hello: second_hello::SecondHello,
    /// ChangeCipherSpec records the client sent during a TLS 1.3 handshake.
    ccs_seen: u32,
    /// The server's TLS 1.2 ChangeCipherSpec is out: its records are encrypted from then on.
    server_ccs_sent: bool,
    /// The first-flight rules, until the server first answers.
    first_flight: Option<first_flight::FirstFlight>,
}

impl std::fmt::Debug for ServerHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandshake")
            .field("pending", &self.pending.len())
            .field("complete", &self.complete)
            .finish()
    }
}

impl ServerHandshake {
    /// The config must have `enable_secret_extraction` set, or [`ServerHandshake::into_keys`]
    /// fails.
    pub fn new(config: Arc<ServerConfig>) -> Result<ServerHandshake, HandshakeError> {
        Ok(ServerHandshake {
            conn: UnbufferedServerConnection::new(config)?,
            pending: Vec::new(),
            discarded: 0,
            complete: false,
            second_hello: Default::default(),
            ccs_seen: 0,
            server_ccs_sent: false,
            first_flight: Some(Default::default()),
        })
    }

    /// Feeds one complete record from the client (header included) and appends to `out` what
    /// must be sent to it. On `Err`, `out` holds the fatal alert rustls chose, if any.
    pub fn record(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<Progress, HandshakeError> {
        if self.complete {
            return Err(HandshakeError::Complete);
        }
        if let Some(Err(refusal)) = self.first_flight.as_mut().map(|f| f.feed(record)) {
            self.pending.clear();
            out.extend_from_slice(&refusal.alert_record());
            return Err(HandshakeError::FirstFlight(refusal));
        }
        if let Err(what) = self.second_hello.client_record(record) {
            // Before rustls reads it: the server has sent only its plaintext HelloRetryRequest.
            self.pending.clear();
            out.extend_from_slice(&[
                0x15,
                0x03,
                0x03,
                0x00,
                0x02,
                0x02,
                u8::from(AlertDescription::IllegalParameter),
            ]);
            return Err(HandshakeError::SecondHelloChanged(what));
        }
        if self.bad_tls12_ccs(record) {
            // RFC 5246 §7.1: the message is one byte of value 1; anything else is not a
            // ChangeCipherSpec the handshake can take (rustls's decode_error names the parse
            // instead). Our records are still plaintext: the server's ChangeCipherSpec is not out.
            self.pending.clear();
            out.extend_from_slice(&[
                0x15,
                0x03,
                0x03,
                0x00,
                0x02,
                0x02,
                u8::from(AlertDescription::UnexpectedMessage),
            ]);
            return Err(HandshakeError::Tls(rustls::Error::InvalidMessage(
                rustls::InvalidMessage::InvalidCcs,
            )));
        }
        let replaced;
        let record = match self.second_ccs(record) {
            Some(r) => {
                replaced = r;
                &replaced[..]
            }
            None => record,
        };
        let mark = out.len();
        // Everything before this record rustls has parsed already (it holds handshake fragments).
        let parsed = self.pending.len();
        self.pending.extend_from_slice(record);
        self.discarded = 0;
        let result = self.drive(out);
        if result.is_ok() {
            self.second_hello.server_output(&out[mark..]);
            self.server_ccs_sent |= has_ccs(&out[mark..]);
            if out.len() > mark {
                self.first_flight = None;
            }
        }
        if result == Ok(Progress::NeedMore) && self.skipped(parsed, record) {
            self.pending.truncate(parsed);
        }
        if let Err(e) = &result {
            let sent = out.len();
            self.fetch_alert(parsed, out);
            if out.len() == sent {
                if let Some(alert) = self.missing_alert(e) {
                    out.extend_from_slice(&alert);
                }
            }
            self.pending.clear();
        }
        result
    }

    /// A TLS 1.2 ChangeCipherSpec from the client other than the one byte 1, while the
    /// server's own ChangeCipherSpec is not out (so an alert can go in plaintext).
    fn bad_tls12_ccs(&self, record: &[u8]) -> bool {
        record.first() == Some(&0x14)
            && record.get(5..) != Some(&[1][..])
            && !self.server_ccs_sent
            && self.conn.protocol_version() == Some(ProtocolVersion::TLSv1_2)
    }

    /// A TLS 1.3 client sends at most one ChangeCipherSpec, for middlebox compatibility (RFC
    /// 8446 Appendix D.4); rustls drops two (common_state.rs, allowed_middlebox_ccs) and fails
    /// on a third without an alert. The second is a violation that gets unexpected_message (RFC
    /// 8446 §5), which after the server flight must be encrypted under keys only rustls holds:
    /// so rustls is given a ChangeCipherSpec of a value other than 1 instead, which it answers
    /// with exactly that alert (conn.rs `process_msg`).
    fn second_ccs(&mut self, record: &[u8]) -> Option<Vec<u8>> {
        if record.first() != Some(&0x14) || self.conn.protocol_version() != Some(ProtocolVersion::TLSv1_3) {
            return None;
        }
        self.ccs_seen += 1;
        if self.ccs_seen < 2 || record.len() < 3 {
            return None;
        }
        Some(vec![0x14, record[1], record[2], 0x00, 0x01, 0x02])
    }

    /// Whether rustls dropped the application-data record just fed without consuming it: 0-RTT
    /// data it rejected (RFC 8446 §4.2.10), skipped by trial decryption under the handshake key
    /// up to its budget (server/tls13.rs, max_early_data_size). The unbuffered API leaves such a
    /// record in the buffer uncounted (conn.rs `process_more_input` returns when the records run
    /// out, its progress before the dropped one), so the next call would decrypt it again and
    /// spend the budget again, failing a client that stayed within it. rustls decrypts in place:
    /// a failed open leaves the ciphertext zeroed (or untouched when shorter than a tag), while a
    /// record rustls kept (a handshake fragment it holds) now holds plaintext, never all zero (its
    /// content type follows the data).
    fn skipped(&self, parsed: usize, record: &[u8]) -> bool {
        if record.first() != Some(&0x17) || self.discarded != 0 || self.pending.len() != parsed + record.len()
        {
            return false;
        }
        let now = &self.pending[parsed + HEADER_LEN..];
        let sealed = now.len().saturating_sub(AEAD_TAG_LEN);
        now == &record[HEADER_LEN..] || now[..sealed].iter().all(|&b| b == 0)
    }

    /// After a failure, takes out what rustls queued with it (the fatal alert, and anything it
    /// queued before in the same step, like a ServerHello under the alert) by calling it until it
    /// has nothing more to send. Those calls must not make rustls parse the failed record again
    /// (a second fatal alert is a rustls assertion) nor see a shorter buffer than the one it
    /// parsed: it keeps the handshake fragments it holds in that buffer, by offset, and indexes
    /// past them otherwise (conn.rs `process_more_input`). So the buffer stays as rustls left it,
    /// except that the failed record's header, if rustls did not consume that record, becomes one
    /// announcing more bytes than follow: rustls then waits for them. If rustls did consume it,
    /// those bytes are inside a message it will never process (its state is the error).
    fn fetch_alert(&mut self, parsed: usize, out: &mut Vec<u8>) {
        // `drive` dropped what rustls released: the record's start moved back by as much.
        let Some(at) = parsed.checked_sub(self.discarded) else {
            // rustls released part of this record: it consumed it.
            let _ = self.drive(out);
            return;
        };
        let body = self.pending.len() - at;
        if body >= HEADER_LEN {
            let Some(len) = u16::try_from(body - HEADER_LEN + 1).ok().filter(|&l| l < MAX_RECORD) else {
                // No header can announce more (rustls refuses longer ones at the header, and
                // would queue a second alert). One call then, with the buffer as it is: it gives
                // the first chunk rustls queued before it parses anything.
                if let Ok(ConnectionState::EncodeTlsData(mut enc)) =
                    self.conn.process_tls_records(&mut self.pending).state
                {
                    let _ = encode(&mut enc, out);
                }
                return;
            };
            self.pending[at..at + HEADER_LEN].copy_from_slice(&[
                0x16,
                0x03,
                0x03,
                (len >> 8) as u8,
                len as u8,
            ]);
        }
        let _ = self.drive(out);
    }

    /// The alert due for an error on which rustls queues none, where our records are plaintext:
    /// before ServerHello, and in TLS 1.2 before our ChangeCipherSpec (TLS 1.3 has handshake keys
    /// by then, which stay inside rustls).
    fn missing_alert(&self, e: &HandshakeError) -> Option<[u8; 7]> {
        let HandshakeError::Tls(e) = e else { return None };
        let alert = alert_rustls_leaves_out(e)?;
        matches!(self.conn.protocol_version(), None | Some(ProtocolVersion::TLSv1_2))
            .then(|| [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, u8::from(alert)])
    }

    fn drive(&mut self, out: &mut Vec<u8>) -> Result<Progress, HandshakeError> {
        loop {
            let UnbufferedStatus { discard, state } = self.conn.process_tls_records(&mut self.pending);
            // `state` borrows the connection; take what it says first, drain the input after.
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    // rustls releases input on errors too; what it keeps, it still refers to.
                    self.pending.drain(..discard);
                    self.discarded += discard;
                    return Err(e.into());
                }
            };
            let step = match state {
                ConnectionState::EncodeTlsData(mut enc) => {
                    encode(&mut enc, out)?;
                    Step::Again
                }
                // The bytes are in `out`; the caller transmits (and maybe retransmits) them.
                ConnectionState::TransmitTlsData(t) => {
                    t.done();
                    Step::Again
                }
                ConnectionState::BlockedHandshake => Step::NeedMore,
                // A TLS 1.3 server may write after its own Finished, before the client's:
                // complete only when rustls says the handshake is over.
                ConnectionState::WriteTraffic(_) => Step::WriteTraffic,
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    return Err(HandshakeError::PeerClosed)
                }
                _ => return Err(HandshakeError::Unexpected),
            };
            self.pending.drain(..discard);
            self.discarded += discard;
            match step {
                Step::Again => continue,
                Step::NeedMore => return Ok(Progress::NeedMore),
                Step::WriteTraffic if self.conn.is_handshaking() => return Ok(Progress::NeedMore),
                Step::WriteTraffic => {
                    self.complete = true;
                    return Ok(Progress::Complete);
                }
            }
        }
    }

    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Bytes of client input held (part of a handshake message spanning records).
    pub fn held(&self) -> usize {
        self.pending.len()
    }

    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.conn.protocol_version()
    }

    pub fn cipher_suite(&self) -> Option<SupportedCipherSuite> {
        self.conn.negotiated_cipher_suite()
    }

    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// The client's certificate chain, when it presented one and it verified.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// After completion: the traffic keys with their record sequence numbers, and the key
    /// schedule for TLS 1.3 key updates. rustls's connection (every buffer of it) is gone after.
    pub fn into_keys(
        self,
    ) -> Result<(ExtractedSecrets, KernelConnection<ServerConnectionData>), HandshakeError> {
        if !self.complete {
            return Err(HandshakeError::Tls(rustls::Error::HandshakeNotComplete));
        }
        Ok(self.conn.dangerous_into_kernel_connection()?)
    }
}

/// Whether server output holds a ChangeCipherSpec record (whole records, from the start).
fn has_ccs(mut out: &[u8]) -> bool {
    while out.len() >= HEADER_LEN {
        if out[0] == 0x14 {
            return true;
        }
        let len = usize::from(u16::from_be_bytes([out[3], out[4]]));
        out = out.get(HEADER_LEN + len..).unwrap_or_default();
    }
    false
}

/// Appends what rustls has to send to `out`.
fn encode<Data>(
    enc: &mut rustls::unbuffered::EncodeTlsData<'_, Data>,
    out: &mut Vec<u8>,
) -> Result<(), HandshakeError> {
    let needed = match enc.encode(&mut []) {
        Ok(_) => return Ok(()),
        Err(EncodeError::InsufficientSize(e)) => e.required_size,
        Err(EncodeError::AlreadyEncoded) => return Err(HandshakeError::Unexpected),
    };
    let at = out.len();
    out.resize(at + needed, 0);
    let n = enc.encode(&mut out[at..]).map_err(|_| HandshakeError::Unexpected)?;
    out.truncate(at + n);
    Ok(())
}

const HEADER_LEN: usize = 5;

/// The tag of every TLS 1.3 AEAD (RFC 8446 §5.2: AES-GCM and ChaCha20-Poly1305).
const AEAD_TAG_LEN: usize = 16;

/// The record length rustls refuses at the header (2^14 + 2048, RFC 5246 §6.2.3), its `MAX_PAYLOAD`.
const MAX_RECORD: u16 = (1 << 14) + 2048;

enum Step {
    Again,
    NeedMore,
    WriteTraffic,
}

/// The alert a server owes for a rustls error on which rustls queues none (its Acceptor for
/// the ClientHello, its unbuffered connection in its own steps): one rule for terminate's
/// ClientHello reader and the shared server handshake alike.
pub fn alert_rustls_leaves_out(e: &rustls::Error) -> Option<AlertDescription> {
    use rustls::PeerMisbehaved::{MessageInterleavedWithHandshakeMessage, TooManyEmptyFragments};
    Some(match e {
        // A record of another type between the fragments of a handshake message (RFC 8446
        // §5.1, RFC 5246 §6.2.1), or empty handshake records without end.
        rustls::Error::PeerMisbehaved(MessageInterleavedWithHandshakeMessage | TooManyEmptyFragments) => {
            AlertDescription::UnexpectedMessage
        }
        // A record or message of another type where the ClientHello belongs: the Acceptor refuses
        // it without the alert its connection would send (RFC 8446 §6.2).
        rustls::Error::InappropriateMessage { .. } | rustls::Error::InappropriateHandshakeMessage { .. } => {
            AlertDescription::UnexpectedMessage
        }
        // A message that does not decode, or announces more than rustls takes (its 64 KiB
        // handshake message limit): the alert rustls's connection names for it.
        rustls::Error::InvalidMessage(m) => AlertDescription::from(*m),
        // rustls failing in its own step (no usable signing scheme for what a mangled hello
        // asked, say) without telling the client.
        rustls::Error::General(_) => AlertDescription::InternalError,
        _ => return None,
    })
}

mod client;
pub mod first_flight;
mod second_hello;

pub use client::ClientHandshake;
#[cfg(test)]
mod tests;

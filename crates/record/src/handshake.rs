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
use rustls::{ExtractedSecrets, ProtocolVersion, SupportedCipherSuite};
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum HandshakeError {
    #[error("TLS handshake failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("application data arrived before the handshake completed")]
    Unexpected,
    #[error("client sent close_notify during the handshake")]
    PeerClosed,
    #[error("the handshake is already complete")]
    Complete,
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
    complete: bool,
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
            complete: false,
        })
    }

    /// Feeds one complete record from the client (header included) and appends to `out` what
    /// must be sent to it. On `Err`, `out` holds the fatal alert rustls chose, if any.
    pub fn record(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<Progress, HandshakeError> {
        if self.complete {
            return Err(HandshakeError::Complete);
        }
        self.pending.extend_from_slice(record);
        let result = self.drive(out);
        if let Err(HandshakeError::Tls(rustls::Error::PeerMisbehaved(
            rustls::PeerMisbehaved::MessageInterleavedWithHandshakeMessage,
        ))) = result
        {
            // A record of another type between the fragments of a handshake message (RFC 8446
            // §5.1, RFC 5246 §6.2.1). rustls's deframer fails on it queueing no alert, and it
            // still holds the first fragment: calling it again on an emptied buffer makes it
            // index past those bytes and panic. So no second call: the unexpected_message alert
            // is written here where our records are plaintext (TLS 1.2 before the server's
            // ChangeCipherSpec; TLS 1.3 has handshake keys by then, inside rustls).
            self.pending.clear();
            if self.conn.protocol_version() == Some(ProtocolVersion::TLSv1_2) {
                out.extend_from_slice(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, UNEXPECTED_MESSAGE]);
            }
        } else if result.is_err() {
            // The alert rustls queued on the error comes out of the next calls.
            self.pending.clear();
            let _ = self.drive(out);
        }
        result
    }

    fn drive(&mut self, out: &mut Vec<u8>) -> Result<Progress, HandshakeError> {
        loop {
            let UnbufferedStatus { discard, state } = self.conn.process_tls_records(&mut self.pending);
            // `state` borrows the connection; take what it says first, drain the input after.
            let step = match state? {
                ConnectionState::EncodeTlsData(mut enc) => {
                    let needed = match enc.encode(&mut []) {
                        Ok(_) => None,
                        Err(EncodeError::InsufficientSize(e)) => Some(e.required_size),
                        Err(EncodeError::AlreadyEncoded) => return Err(HandshakeError::Unexpected),
                    };
                    if let Some(needed) = needed {
                        let at = out.len();
                        out.resize(at + needed, 0);
                        let n = enc.encode(&mut out[at..]).map_err(|_| HandshakeError::Unexpected)?;
                        out.truncate(at + n);
                    }
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

/// unexpected_message (RFC 8446 §6).
const UNEXPECTED_MESSAGE: u8 = 10;

enum Step {
    Again,
    NeedMore,
    WriteTraffic,
}

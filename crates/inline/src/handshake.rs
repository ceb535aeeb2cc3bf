//! The TLS handshake of one flow, run by rustls on bytes the engine consumed from the client.
//!
//! This is the only module that drives a rustls connection (the rustls 0.24 upgrade replaces the
//! unbuffered API, so its calls stay here). It uses rustls's *unbuffered* server connection
//! because only that one converts into a [`KernelConnection`]: the piece of rustls that keeps the
//! key schedule after the handshake, so the engine can follow TLS 1.3 key updates while doing the
//! record crypto itself (`ServerConnection::dangerous_extract_secrets` gives the keys once and
//! cannot follow an update).
//!
//! The engine feeds whole records, one at a time, and stops at the end of the handshake: the
//! client's first application records never reach rustls, whose record counters then match the
//! extracted sequence numbers exactly.

use rustls::kernel::KernelConnection;
use rustls::server::{ServerConfig, ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{ExtractedSecrets, ProtocolVersion, SupportedCipherSuite};
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum HandshakeError {
    #[error("TLS handshake failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("application data or a close arrived before the handshake completed")]
    Unexpected,
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
pub struct Handshake {
    conn: UnbufferedServerConnection,
    /// Client bytes rustls has not yet released: a handshake message spanning records stays in
    /// the caller's buffer in the unbuffered API.
    pending: Vec<u8>,
    complete: bool,
    /// The SNI of the ClientHello (read from the first record), for the session table.
    sni: Option<String>,
    records: u64,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("pending", &self.pending.len())
            .field("complete", &self.complete)
            .finish()
    }
}

impl Handshake {
    /// The config must have `enable_secret_extraction` set, or [`Handshake::into_keys`] fails.
    pub fn new(config: Arc<ServerConfig>) -> Result<Handshake, HandshakeError> {
        Ok(Handshake {
            conn: UnbufferedServerConnection::new(config)?,
            pending: Vec::new(),
            complete: false,
            sni: None,
            records: 0,
        })
    }

    /// Feeds one complete record from the client (header included) and appends to `out` the
    /// bytes rustls wants sent to the client.
    pub fn record(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<Progress, HandshakeError> {
        if self.complete {
            return Err(HandshakeError::Complete);
        }
        if self.records == 0 && record.len() > 5 {
            self.sni = crate::sni::client_hello_sni(&record[5..]);
        }
        self.records += 1;
        self.pending.extend_from_slice(record);
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
                // The bytes are in `out`; the engine transmits (and retransmits) them itself.
                ConnectionState::TransmitTlsData(t) => {
                    t.done();
                    Step::Again
                }
                ConnectionState::BlockedHandshake => Step::NeedMore,
                // A TLS 1.3 server may write after its own Finished, before the client's:
                // complete only when rustls says the handshake is over.
                ConnectionState::WriteTraffic(_) => Step::WriteTraffic,
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

    /// The server name the client asked for, if it sent one.
    pub fn sni(&self) -> Option<&str> {
        self.sni.as_deref()
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

    /// After completion: the traffic keys with their record sequence numbers, and the key
    /// schedule for TLS 1.3 key updates.
    pub fn into_keys(
        self,
    ) -> Result<(ExtractedSecrets, KernelConnection<ServerConnectionData>), HandshakeError> {
        if !self.complete {
            return Err(HandshakeError::Tls(rustls::Error::HandshakeNotComplete));
        }
        Ok(self.conn.dangerous_into_kernel_connection()?)
    }
}

enum Step {
    Again,
    NeedMore,
    WriteTraffic,
}

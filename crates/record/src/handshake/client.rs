//! The rustls client handshake fed whole server records, sans-IO, up to the handover of its keys:
//! the client side of [`super::ServerHandshake`], for originate's kernel TLS offload.
//!
//! As on the server side, records are fed one at a time and feeding stops at completion, so
//! nothing the server sent after its last handshake record (a TLS 1.3 NewSessionTicket, its
//! first application data) reaches rustls: those records stay with the caller, for the session
//! ([`crate::session`]) that continues under the extracted keys and sequence numbers. The
//! session hands tickets back to rustls's key schedule, which stores them in the config's
//! session cache, so later connections resume as with rustls's own connection.

use rustls::client::{ClientConfig, ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::unbuffered::{ConnectionState, UnbufferedStatus};
use rustls::{ExtractedSecrets, HandshakeKind, ProtocolVersion, SupportedCipherSuite};
use std::sync::Arc;

use super::{encode, HandshakeError, Progress};

/// A rustls client handshake fed the server's records.
pub struct ClientHandshake {
    conn: UnbufferedClientConnection,
    /// Server bytes rustls has not released yet (a handshake message spanning records).
    pending: Vec<u8>,
    complete: bool,
}

impl std::fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandshake")
            .field("pending", &self.pending.len())
            .field("complete", &self.complete)
            .finish()
    }
}

impl ClientHandshake {
    /// Starts a handshake with `name`; the ClientHello is appended to `out`. The config must
    /// have `enable_secret_extraction` set, or [`ClientHandshake::into_keys`] fails.
    pub fn new(
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        out: &mut Vec<u8>,
    ) -> Result<ClientHandshake, HandshakeError> {
        let mut hs = ClientHandshake {
            conn: UnbufferedClientConnection::new(config, name)?,
            pending: Vec::new(),
            complete: false,
        };
        hs.drive(out)?;
        Ok(hs)
    }

    /// Feeds one complete record from the server (header included) and appends to `out` what
    /// must be sent to it. On `Err`, `out` holds the alert rustls queued, if any.
    pub fn record(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<Progress, HandshakeError> {
        if self.complete {
            return Err(HandshakeError::Complete);
        }
        self.pending.extend_from_slice(record);
        let result = self.drive(out);
        if result.is_err() {
            // rustls queues its alert with the error and hands it out before it reads again
            // (its state is the error from now on, so nothing is parsed twice).
            for _ in 0..4 {
                match self.conn.process_tls_records(&mut self.pending).state {
                    Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                        if encode(&mut enc, out).is_err() {
                            break;
                        }
                    }
                    Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
                    _ => break,
                }
            }
            self.pending.clear();
        }
        result
    }

    fn drive(&mut self, out: &mut Vec<u8>) -> Result<Progress, HandshakeError> {
        loop {
            let UnbufferedStatus { discard, state } = self.conn.process_tls_records(&mut self.pending);
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    self.pending.drain(..discard);
                    return Err(e.into());
                }
            };
            let step = match state {
                ConnectionState::EncodeTlsData(mut enc) => {
                    encode(&mut enc, out)?;
                    None
                }
                ConnectionState::TransmitTlsData(t) => {
                    t.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some(Progress::NeedMore),
                // Complete only when rustls says the handshake is over (checked once `state`,
                // which borrows the connection, is gone).
                ConnectionState::WriteTraffic(_) => Some(Progress::Complete),
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    return Err(HandshakeError::PeerClosed)
                }
                _ => return Err(HandshakeError::Unexpected),
            };
            self.pending.drain(..discard);
            match step {
                Some(Progress::Complete) if self.conn.is_handshaking() => return Ok(Progress::NeedMore),
                Some(Progress::Complete) => {
                    self.complete = true;
                    return Ok(Progress::Complete);
                }
                Some(p) => return Ok(p),
                None => {}
            }
        }
    }

    pub fn is_complete(&self) -> bool {
        self.complete
    }

    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.conn.protocol_version()
    }

    pub fn cipher_suite(&self) -> Option<SupportedCipherSuite> {
        self.conn.negotiated_cipher_suite()
    }

    pub fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.conn.handshake_kind()
    }

    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// After completion: the traffic keys with their record sequence numbers, and the key
    /// schedule (TLS 1.3 key updates and session tickets).
    pub fn into_keys(
        self,
    ) -> Result<(ExtractedSecrets, KernelConnection<ClientConnectionData>), HandshakeError> {
        if !self.complete {
            return Err(HandshakeError::Tls(rustls::Error::HandshakeNotComplete));
        }
        Ok(self.conn.dangerous_into_kernel_connection()?)
    }
}

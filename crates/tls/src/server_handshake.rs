//! A terminate listener's server handshake on rustls's *unbuffered* API, sans-IO.
//!
//! This is the module that drives rustls for terminate (the rustls 0.24 upgrade replaces this
//! API, so its calls stay here). The unbuffered connection is used because only it converts into
//! a [`KernelConnection`] once the handshake is over: the keys and record sequence numbers go to
//! tlsgate's own record layer (`tlsgate-record`), and rustls keeps only the key schedule for TLS
//! 1.3 key updates. No rustls buffer outlives the handshake.
//!
//! The caller feeds whole records, one at a time, and stops at completion: the client's first
//! application records never reach rustls, so the extracted receive sequence number is exactly
//! that of the next record on the wire. Everything rustls wants sent (the server flight, the TLS
//! 1.3 session ticket after the client's Finished, a fatal alert) is appended to `out`.

use std::io::Read;
use std::sync::Arc;

use rustls::kernel::KernelConnection;
use rustls::server::{Acceptor, ServerConfig, ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{ExtractedSecrets, ProtocolVersion, SupportedCipherSuite};
use tlsgate_core::identity::PeerIdentity;

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
        while !bytes.is_empty() {
            let taken = self
                .acceptor
                .read_tls(&mut bytes as &mut dyn Read)
                .map_err(|e| fail(format!("ClientHello too large or unreadable: {e}")))?;
            if taken == 0 {
                return Err(fail("ClientHello larger than rustls accepts".into()));
            }
        }
        match self.acceptor.accept() {
            Ok(Some(accepted)) => Ok(Some(accepted.client_hello().server_name().map(str::to_owned))),
            Ok(None) => Ok(None),
            Err((err, mut alert)) => {
                let mut out = Vec::new();
                let _ = alert.write_all(&mut out);
                Err(HelloError { message: format!("not a valid TLS ClientHello: {err}"), alert: out })
            }
        }
    }
}

/// Whether the handshake needs more client records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    NeedMore,
    Complete,
}

/// What the handshake settled, for logs, PROXY TLVs and headers.
#[derive(Clone, Debug)]
pub struct SessionFacts {
    pub version: ProtocolVersion,
    pub suite: SupportedCipherSuite,
    pub alpn: Option<Vec<u8>>,
    /// The client certificate's identity, when one was presented and verified (mutual TLS).
    pub peer: Option<PeerIdentity>,
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
    /// The config must have `enable_secret_extraction` set (see [`crate::server::listener_tls`]).
    pub fn new(config: Arc<ServerConfig>) -> Result<ServerHandshake, rustls::Error> {
        Ok(ServerHandshake {
            conn: UnbufferedServerConnection::new(config)?,
            pending: Vec::new(),
            complete: false,
        })
    }

    /// Feeds one complete record from the client (header included) and appends to `out` what
    /// must be sent to it. On `Err`, `out` holds the fatal alert rustls chose, if any.
    pub fn record(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<Progress, rustls::Error> {
        if self.complete {
            return Err(rustls::Error::General("record after the handshake completed".into()));
        }
        self.pending.extend_from_slice(record);
        let result = self.drive(out);
        if result.is_err() {
            // The alert rustls queued on the error comes out of the next calls.
            self.pending.clear();
            let _ = self.drive(out);
        }
        result
    }

    fn drive(&mut self, out: &mut Vec<u8>) -> Result<Progress, rustls::Error> {
        loop {
            let UnbufferedStatus { discard, state } = self.conn.process_tls_records(&mut self.pending);
            // `state` borrows the connection; take what it says first, drain the input after.
            let step = match state? {
                ConnectionState::EncodeTlsData(mut enc) => {
                    let needed = match enc.encode(&mut []) {
                        Ok(_) => None,
                        Err(EncodeError::InsufficientSize(e)) => Some(e.required_size),
                        Err(EncodeError::AlreadyEncoded) => return Err(unexpected("encoded twice")),
                    };
                    if let Some(needed) = needed {
                        let at = out.len();
                        out.resize(at + needed, 0);
                        let n = enc.encode(&mut out[at..]).map_err(|_| unexpected("encode failed"))?;
                        out.truncate(at + n);
                    }
                    Step::Again
                }
                // The bytes are in `out`; the caller writes them.
                ConnectionState::TransmitTlsData(t) => {
                    t.done();
                    Step::Again
                }
                ConnectionState::BlockedHandshake => Step::NeedMore,
                // A TLS 1.3 server may write after its own Finished, before the client's:
                // complete only when rustls says the handshake is over.
                ConnectionState::WriteTraffic(_) => Step::WriteTraffic,
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    return Err(rustls::Error::General(
                        "client sent close_notify during the handshake".into(),
                    ))
                }
                _ => return Err(unexpected("application data before the handshake completed")),
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

    /// After completion: the keys, the key schedule and the session's facts. rustls's
    /// connection (and every buffer of it) is gone afterwards.
    pub fn finish(self) -> Result<Finished, rustls::Error> {
        if !self.complete {
            return Err(rustls::Error::HandshakeNotComplete);
        }
        let facts = SessionFacts {
            version: self.conn.protocol_version().ok_or(rustls::Error::HandshakeNotComplete)?,
            suite: self.conn.negotiated_cipher_suite().ok_or(rustls::Error::HandshakeNotComplete)?,
            alpn: self.conn.alpn_protocol().map(<[u8]>::to_vec),
            peer: self.conn.peer_certificates().and_then(|c| c.first()).and_then(peer_identity),
        };
        let (secrets, kernel) = self.conn.dangerous_into_kernel_connection()?;
        Ok(Finished { secrets, kernel, facts })
    }
}

fn unexpected(what: &str) -> rustls::Error {
    rustls::Error::General(what.into())
}

enum Step {
    Again,
    NeedMore,
    WriteTraffic,
}

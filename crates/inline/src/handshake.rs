//! The TLS handshake of one flow, run by rustls on bytes the engine consumed from the client.
//!
//! The driver itself is `tlsgate_record::handshake` (shared with terminate): rustls's unbuffered
//! server connection fed whole records, converted into a `KernelConnection` at the end so the
//! engine follows TLS 1.3 key updates while doing the record crypto itself. The engine feeds
//! whole records, one at a time, and stops at the end of the handshake; this wrapper adds what
//! the engine's tables want: the SNI read from the ClientHello record, and the TLS 1.3 traffic
//! secrets taken through the configuration's key log hook, so that an established flow follows
//! key updates with its own 100-byte schedule instead of rustls's (`tlsgate_record::traffic`).

use rustls::server::ServerConfig;
use rustls::{ExtractedSecrets, ProtocolVersion, SupportedCipherSuite};
use std::sync::Arc;
use tlsgate_record::crypto::KeySchedule;
use tlsgate_record::handshake::ServerHandshake;
pub use tlsgate_record::handshake::{HandshakeError, Progress};
use tlsgate_record::traffic::Capture;

/// Heap bytes a handshake in progress holds (rustls's connection, its buffers, the
/// certificate chain it sends): a flat figure for the per-flow accounting, measured for a TLS
/// 1.3 handshake with the benchmark certificate by `crates/inline/benches/idle_flows.rs`.
pub const HANDSHAKE_STATE_BYTES: usize = 8192;

/// A rustls server handshake fed the client's records.
#[derive(Debug)]
pub struct Handshake {
    inner: ServerHandshake,
    /// The SNI of the ClientHello (read from the first record), for the session table.
    sni: Option<String>,
    records: u64,
    /// This handshake's own key log: its two application traffic secrets, nothing else.
    capture: Arc<Capture>,
}

impl Handshake {
    /// The config must have `enable_secret_extraction` set, or [`Handshake::into_keys`] fails.
    pub fn new(config: Arc<ServerConfig>) -> Result<Handshake, HandshakeError> {
        // A configuration of its own (a shallow copy: certificates, resolver, ticketer and
        // session cache stay shared) whose key log is this handshake's alone, so the secrets
        // captured are this flow's with no lookup by client random.
        let capture = Arc::new(Capture::default());
        let mut own = (*config).clone();
        own.key_log = capture.clone();
        Ok(Handshake { inner: ServerHandshake::new(Arc::new(own))?, sni: None, records: 0, capture })
    }

    /// Feeds one complete record from the client (header included) and appends to `out` the
    /// bytes rustls wants sent to the client.
    pub fn record(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<Progress, HandshakeError> {
        if self.records == 0 && record.len() > 5 {
            self.sni = crate::sni::client_hello_sni(&record[5..]);
        }
        self.records += 1;
        self.inner.record(record, out)
    }

    /// The server name the client asked for, if it sent one.
    pub fn sni(&self) -> Option<&str> {
        self.sni.as_deref()
    }

    pub fn is_complete(&self) -> bool {
        self.inner.is_complete()
    }

    /// Bytes of client input held (part of a handshake message spanning records).
    pub fn held(&self) -> usize {
        self.inner.held()
    }

    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.inner.protocol_version()
    }

    pub fn cipher_suite(&self) -> Option<SupportedCipherSuite> {
        self.inner.cipher_suite()
    }

    /// After completion: the traffic keys with their record sequence numbers, and the key
    /// schedule for TLS 1.3 key updates: the captured traffic secrets when they verify against
    /// the keys (`KeySchedule::compact`), rustls's otherwise.
    pub fn into_keys(self) -> Result<(ExtractedSecrets, KeySchedule), HandshakeError> {
        let (secrets, kernel) = self.inner.into_keys()?;
        let schedule = KeySchedule::compact(kernel, &secrets, &self.capture);
        Ok((secrets, schedule))
    }
}

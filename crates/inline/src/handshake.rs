//! The TLS handshake of one flow, run by rustls on bytes the engine consumed from the client.
//!
//! The driver itself is `tlsgate_record::handshake` (shared with terminate): rustls's unbuffered
//! server connection fed whole records, converted into a `KernelConnection` at the end so the
//! engine follows TLS 1.3 key updates while doing the record crypto itself. The engine feeds
//! whole records, one at a time, and stops at the end of the handshake; this wrapper adds what
//! the engine's tables want: the SNI read from the ClientHello record.

use rustls::kernel::KernelConnection;
use rustls::server::{ServerConfig, ServerConnectionData};
use rustls::{ExtractedSecrets, ProtocolVersion, SupportedCipherSuite};
use std::sync::Arc;
use tlsgate_record::handshake::ServerHandshake;
pub use tlsgate_record::handshake::{HandshakeError, Progress};

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
}

impl Handshake {
    /// The config must have `enable_secret_extraction` set, or [`Handshake::into_keys`] fails.
    pub fn new(config: Arc<ServerConfig>) -> Result<Handshake, HandshakeError> {
        Ok(Handshake { inner: ServerHandshake::new(config)?, sni: None, records: 0 })
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
    /// schedule for TLS 1.3 key updates.
    pub fn into_keys(
        self,
    ) -> Result<(ExtractedSecrets, KernelConnection<ServerConnectionData>), HandshakeError> {
        self.inner.into_keys()
    }
}

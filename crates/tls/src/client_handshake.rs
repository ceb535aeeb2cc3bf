//! Originate's client handshake on rustls's *unbuffered* API, sans-IO: the driver is
//! `tlsgate_record::handshake::ClientHandshake` (beside the server one); this module gives its
//! errors as rustls's and the session's facts at the end. Used when the record layer may go to
//! the kernel: only the unbuffered connection converts into a [`KernelConnection`], and feeding
//! it whole records up to completion leaves every record after the handshake (a TLS 1.3 session
//! ticket, the server's first data) to tlsgate's session, so none is lost.

use std::sync::Arc;

use rustls::client::{ClientConfig, ClientConnectionData};
use rustls::kernel::KernelConnection;
use rustls::pki_types::ServerName;
use rustls::{ExtractedSecrets, ProtocolVersion, SupportedCipherSuite};
use tlsgate_record::handshake;

pub use tlsgate_record::handshake::Progress;

use crate::server_handshake::as_rustls;

/// A finished client handshake: traffic keys with their sequence numbers, rustls's key schedule
/// (updates, session tickets) and what the log line says.
pub struct ClientFinished {
    pub secrets: ExtractedSecrets,
    pub kernel: KernelConnection<ClientConnectionData>,
    pub version: ProtocolVersion,
    pub suite: SupportedCipherSuite,
    pub resumed: bool,
}

impl std::fmt::Debug for ClientFinished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_struct("ClientFinished")
            .field("version", &self.version)
            .field("suite", &self.suite)
            .field("resumed", &self.resumed)
            .finish_non_exhaustive()
    }
}

/// A rustls client handshake fed the server's records.
#[derive(Debug)]
pub struct ClientHandshake {
    inner: handshake::ClientHandshake,
}

impl ClientHandshake {
    /// Starts the handshake; the ClientHello is appended to `out`. The config must have
    /// `enable_secret_extraction` set ([`crate::client::client_config`] does).
    pub fn new(
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        out: &mut Vec<u8>,
    ) -> Result<ClientHandshake, rustls::Error> {
        Ok(ClientHandshake { inner: handshake::ClientHandshake::new(config, name, out).map_err(as_rustls)? })
    }

    /// Feeds one complete record from the server and appends to `out` what must be sent to it.
    pub fn record(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<Progress, rustls::Error> {
        self.inner.record(record, out).map_err(as_rustls)
    }

    /// After completion: keys, key schedule and facts; rustls's connection is gone afterwards.
    pub fn finish(self) -> Result<ClientFinished, rustls::Error> {
        let hs = &self.inner;
        let version = hs.protocol_version().ok_or(rustls::Error::HandshakeNotComplete)?;
        let suite = hs.cipher_suite().ok_or(rustls::Error::HandshakeNotComplete)?;
        let resumed = hs.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let (secrets, kernel) = self.inner.into_keys().map_err(as_rustls)?;
        Ok(ClientFinished { secrets, kernel, version, suite, resumed })
    }
}

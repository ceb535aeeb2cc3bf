//! Client-side TLS configuration, for connections tlsgate originates.

use std::path::Path;
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};
use tlsgate_config::{OriginateListener, TlsVersion, TransparentListener};

use crate::keys::{load_cert_and_key, load_roots};
use crate::TlsError;

/// What a TLS client of tlsgate's is configured with.
#[derive(Debug, Clone, Copy)]
pub struct ClientSettings<'a> {
    pub ca: Option<&'a Path>,
    pub cert: Option<&'a Path>,
    pub key: Option<&'a Path>,
    pub alpn: &'a [String],
    pub tls_versions: &'a [TlsVersion],
}

impl<'a> From<&'a OriginateListener> for ClientSettings<'a> {
    fn from(l: &'a OriginateListener) -> Self {
        ClientSettings {
            ca: l.ca.as_deref(),
            cert: l.cert.as_deref(),
            key: l.key.as_deref(),
            alpn: &l.alpn,
            tls_versions: &l.tls_versions,
        }
    }
}

impl<'a> From<&'a TransparentListener> for ClientSettings<'a> {
    fn from(l: &'a TransparentListener) -> Self {
        ClientSettings {
            ca: l.ca.as_deref(),
            cert: l.cert.as_deref(),
            key: l.key.as_deref(),
            alpn: &l.alpn,
            tls_versions: &l.tls_versions,
        }
    }
}

/// The config for one listener's outbound TLS. Shared by all its connections, so its session
/// cache lets the second connection to an upstream resume (TLS 1.3 tickets, TLS 1.2 tickets).
pub fn client_config(
    l: ClientSettings<'_>,
    allow_insecure_key_permissions: bool,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match l.ca {
        Some(path) => load_roots(path)?,
        None => system_roots()?,
    };
    let versions = crate::protocol_versions(l.tls_versions);
    let builder = ClientConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (l.cert, l.key) {
        (Some(cert), Some(key)) => {
            let loaded = load_cert_and_key(cert, key, allow_insecure_key_permissions)?;
            builder.with_client_cert_resolver(Arc::new(FixedClientCert(loaded.key)))
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = l.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    // A kernel TLS offload takes the traffic keys after the handshake (docs/ktls.md).
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(TlsError::Config(format!(
            "no system root certificates found ({} errors); set `ca`",
            found.errors.len()
        )));
    }
    Ok(roots)
}

/// Presents the configured certificate whenever the upstream asks for one.
#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

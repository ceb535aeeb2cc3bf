//! TLS for the tunnel: TLS 1.3 only, certificates required on both ends.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};
use tlsgate_config::{ClientAuthConfig, ClientAuthMode, GateConfig, PortalConfig, TlsVersion};
use tlsgate_core::identity::PeerIdentity;

use crate::client::{client_config, ClientSettings};
use crate::client_auth::client_verifier;
use crate::keys::load_cert_and_key;
use crate::TlsError;

/// The gate's server config: its certificate, and portals verified against the CA bundle and
/// CRLs. Re-built on reload, so a newly revoked portal is refused from the next handshake on.
pub fn gate_server_config(
    gate: &GateConfig,
    allow_insecure_key_permissions: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let loaded = load_cert_and_key(&gate.cert, &gate.key, allow_insecure_key_permissions)?;
    let auth = ClientAuthConfig {
        mode: ClientAuthMode::Required,
        ca: Some(gate.client_ca.clone()),
        crl: gate.crl.clone(),
        crl_strict: gate.crl_strict,
        ..Default::default()
    };
    let verifier = client_verifier(&auth)?.unwrap_or_else(WebPkiClientVerifier::no_client_auth);
    // The gate picks, in the same order as terminate listeners (AES-128-GCM first).
    let mut config = ServerConfig::builder_with_provider(crate::server::server_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(FixedServerCert(loaded.key)));
    config.ignore_client_order = true;
    // A kernel TLS offload takes the traffic keys after the handshake (docs/ktls.md).
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

/// The portal's client config: the gate verified against `ca`, our certificate presented.
pub fn portal_client_config(
    portal: &PortalConfig,
    allow_insecure_key_permissions: bool,
) -> Result<Arc<ClientConfig>, TlsError> {
    client_config(
        ClientSettings {
            ca: Some(&portal.ca),
            cert: Some(&portal.cert),
            key: Some(&portal.key),
            alpn: &[],
            tls_versions: &[TlsVersion::Tls13],
        },
        allow_insecure_key_permissions,
    )
}

/// The name a gate's policy is keyed by: the first URI SAN (SPIFFE ID), else the first DNS SAN,
/// else the subject CN, else the whole subject.
pub fn portal_name(id: &PeerIdentity) -> String {
    id.uri
        .first()
        .or(id.dns.first())
        .or(id.common_name.as_ref())
        .cloned()
        .unwrap_or_else(|| id.subject.clone())
}

/// The gate has one certificate whatever the SNI.
#[derive(Debug)]
pub(crate) struct FixedServerCert(pub(crate) Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for FixedServerCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

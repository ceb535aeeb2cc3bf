//! TLS for `connect`: the gate's server config (client certificates required, keys handed to
//! tlsgate's record layer so the gate can stop it exactly at close_notify) and the portal's.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};
use tlsgate_config::{ClientAuthConfig, ClientAuthMode, ConnectGateConfig, ConnectPortalConfig, TlsVersion};

use crate::client::{client_config, ClientSettings};
use crate::client_auth::client_verifier;
use crate::keys::load_cert_and_key;
use crate::tunnel::FixedServerCert;
use crate::TlsError;

/// The gate's server config: the configured TLS versions (1.2 and 1.3 by default), portals verified against the CA bundle and CRLs
/// (re-built on reload). No session tickets: each portal connection carries one CONNECT.
pub fn gate_server_config(
    gate: &ConnectGateConfig,
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
    let mut config = ServerConfig::builder_with_provider(crate::server::server_provider())
        .with_protocol_versions(&crate::protocol_versions(&gate.tls_versions))
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(FixedServerCert(loaded.key)));
    config.ignore_client_order = true;
    config.send_tls13_tickets = 0;
    // The handshake hands its keys to tlsgate's record layer (see `server_handshake`).
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

/// The portal's client config: the gate verified against `ca`, our certificate presented.
pub fn portal_client_config(
    portal: &ConnectPortalConfig,
    allow_insecure_key_permissions: bool,
) -> Result<Arc<ClientConfig>, TlsError> {
    client_config(
        ClientSettings {
            ca: Some(&portal.ca),
            cert: Some(&portal.cert),
            key: Some(&portal.key),
            alpn: &[],
            tls_versions: &[TlsVersion::Tls13, TlsVersion::Tls12],
        },
        allow_insecure_key_permissions,
    )
}

//! Server-side TLS configuration for one terminate listener.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::time::SystemTime;

use tlsgate_config::{CertificateConfig, ListenerConfig};
use tlsgate_core::names::{NamePattern, NameTable};

use crate::acme::AcmeShared;
use crate::client_auth::client_verifier;
use crate::keys::load_cert_and_key;
use crate::slot::CertSlot;
use crate::TlsError;

/// Certificates of a listener by server name.
#[derive(Debug)]
pub struct CertTable {
    table: NameTable<Arc<CertSlot>>,
    /// Every slot once, in config order, with the certificate's config (for staple fetching).
    slots: Vec<(Arc<CertSlot>, CertificateConfig)>,
}

impl CertTable {
    /// The certificate for an SNI value, or the default; `None` means refuse.
    pub fn lookup(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        self.table.lookup(sni).map(|slot| slot.current(SystemTime::now()))
    }

    /// Every certificate's slot with its config.
    pub fn slots(&self) -> &[(Arc<CertSlot>, CertificateConfig)] {
        &self.slots
    }
}

impl ResolvesServerCert for CertTable {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.lookup(hello.server_name())
    }
}

/// What a listener needs from rustls: the config to hand to the handshake, and the certificate
/// table to check SNI against before it starts.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub config: Arc<ServerConfig>,
    pub certs: Arc<CertTable>,
    /// With `acme`: its certificate and TLS-ALPN-01 answers.
    pub acme: Option<Arc<AcmeShared>>,
}

/// Loads every certificate of a listener and builds its rustls config.
pub fn listener_tls(
    listener: &ListenerConfig,
    allow_insecure_key_permissions: bool,
) -> Result<ListenerTls, TlsError> {
    listener_tls_with(listener, allow_insecure_key_permissions, None)
}

/// [`listener_tls`], with the ACME certificate (served for its names, and as the default when no
/// file certificate is) when the listener has `acme`.
pub fn listener_tls_with(
    listener: &ListenerConfig,
    allow_insecure_key_permissions: bool,
    acme: Option<Arc<AcmeShared>>,
) -> Result<ListenerTls, TlsError> {
    let mut table = NameTable::new();
    let mut slots = Vec::new();
    for c in &listener.certificate {
        let loaded = load_cert_and_key(&c.cert, &c.key, allow_insecure_key_permissions)?;
        let slot = Arc::new(CertSlot::new(loaded.key.clone()));
        if let Some(path) = &c.ocsp_file {
            crate::staple::from_file(&slot, path, &c.cert, c.ocsp_margin)?;
        }
        slots.push((slot.clone(), c.clone()));
        let names = match &c.names {
            Some(names) => names.clone(),
            None => loaded.dns_names.clone(),
        };
        if names.is_empty() && !c.default {
            return Err(TlsError::Material {
                what: "certificate",
                path: c.cert.clone(),
                problem: "certificate has no DNS names and neither `names` nor `default` is set, \
                          so no handshake could ever use it"
                    .into(),
            });
        }
        for n in names {
            let pattern = NamePattern::parse(&n).map_err(|e| TlsError::Material {
                what: "certificate",
                path: c.cert.clone(),
                problem: e.to_string(),
            })?;
            table.insert(pattern, slot.clone());
        }
        if c.default {
            table.set_default(slot.clone());
        }
    }
    if let Some(acme) = &acme {
        for n in &acme.names {
            let pattern = NamePattern::parse(n).map_err(|e| TlsError::Config(format!("acme.names: {e}")))?;
            table.insert(pattern, acme.slot.clone());
        }
        if !listener.certificate.iter().any(|c| c.default) {
            table.set_default(acme.slot.clone());
        }
    }
    let certs = Arc::new(CertTable { table, slots });

    let versions = crate::protocol_versions(&listener.tls_versions);
    let mut config = ServerConfig::builder_with_provider(server_provider())
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(
            client_verifier(&listener.client_auth)?.unwrap_or_else(WebPkiClientVerifier::no_client_auth),
        )
        .with_cert_resolver(certs.clone());
    // Our order, not the client's: most clients list AES-256-GCM-SHA384 first, whose SHA-384 key
    // schedule and transcript hash cost more per handshake than SHA-256 (no SHA-NI for SHA-512).
    config.ignore_client_order = true;
    config.alpn_protocols = listener.offered_alpn().iter().map(|p| p.as_bytes().to_vec()).collect();
    // One ticket per handshake instead of rustls's two: a client resumes with one ticket and
    // gets a fresh one each time it does (TLS 1.3 tickets are single-use by convention), and
    // each ticket is an encryption and a record on the wire.
    config.send_tls13_tickets = 1;
    // Stateless tickets: resumption without per-session memory on the gateway.
    config.ticketer =
        rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| TlsError::Config(e.to_string()))?;
    // The handshake hands its keys to tlsgate's own record layer (see `server_handshake`).
    config.enable_secret_extraction = true;
    Ok(ListenerTls { config: Arc::new(config), certs, acme })
}

/// [`crate::provider`] with the cipher suites in the server's order of preference: the SHA-256
/// suites first (AES-128-GCM, then ChaCha20-Poly1305), AES-256-GCM-SHA384 last, TLS 1.3 before
/// TLS 1.2. The same set as the provider's defaults: AEAD suites with ECDHE only, the TLS 1.3
/// ones with [`crate::hkdf`]'s key schedule.
pub(crate) fn server_provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::aws_lc_rs::cipher_suite::*;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = vec![
        TLS13_AES_128_GCM_SHA256,
        TLS13_CHACHA20_POLY1305_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ]
    .into_iter()
    .map(crate::hkdf::with_prepared_hkdf)
    .collect();
    Arc::new(provider)
}

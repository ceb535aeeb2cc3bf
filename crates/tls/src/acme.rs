//! The rustls side of ACME (RFC 8555) on a terminate listener: the slot the issued certificate is
//! served from, the throwaway certificate served until the first issuance, and TLS-ALPN-01
//! (RFC 8737) — a ClientHello offering ALPN `acme-tls/1` is answered, from its own config, with
//! the challenge certificate of the name being validated. The ordering itself is tlsgate-io's.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::keys::LoadedCert;
use crate::slot::CertSlot;
use crate::TlsError;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// What an ACME listener shares with the task that orders its certificates; it outlives reloads.
#[derive(Debug)]
pub struct AcmeShared {
    pub names: Vec<String>,
    /// The certificate served for `names`: the throwaway one until the first issuance.
    pub slot: Arc<CertSlot>,
    pub challenges: Arc<Challenges>,
    /// The config a TLS-ALPN-01 validation handshake runs on.
    pub challenge_config: Arc<ServerConfig>,
}

impl AcmeShared {
    /// Serves `initial` (a certificate kept from an earlier run, or a throwaway one).
    pub fn new(names: Vec<String>, initial: Arc<CertifiedKey>) -> Result<Self, TlsError> {
        let challenges = Arc::new(Challenges::default());
        let mut config = ServerConfig::builder_with_provider(crate::server::server_provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(challenges.clone());
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        config.enable_secret_extraction = true;
        Ok(AcmeShared {
            names,
            slot: Arc::new(CertSlot::new(initial)),
            challenges,
            challenge_config: Arc::new(config),
        })
    }
}

/// The challenge certificates of the TLS-ALPN-01 validations under way, by name, and the key
/// authorizations of the HTTP-01 ones (RFC 8555 §8.3), by token.
#[derive(Debug, Default)]
pub struct Challenges {
    by_name: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    http: Mutex<HashMap<String, String>>,
}

impl Challenges {
    /// Answers HTTP-01 for `token` with `key_authorization` (on the plain port).
    pub fn insert_http(&self, token: &str, key_authorization: &str) {
        self.http_lock().insert(token.to_string(), key_authorization.to_string());
    }

    pub fn remove_http(&self, token: &str) {
        self.http_lock().remove(token);
    }

    /// The key authorization for an HTTP-01 request's token, while it is being validated.
    pub fn http_key_authorization(&self, token: &str) -> Option<String> {
        self.http_lock().get(token).cloned()
    }

    fn http_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.http.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers TLS-ALPN-01 for `name` with the SHA-256 digest of its key authorization.
    pub fn insert(&self, name: &str, key_authorization_digest: &[u8]) -> Result<(), TlsError> {
        let mut params = CertificateParams::new(vec![name.to_string()]).map_err(rcgen_error)?;
        params.custom_extensions = vec![CustomExtension::new_acme_identifier(key_authorization_digest)];
        let key = certified(params)?;
        self.lock().insert(name.to_ascii_lowercase(), key);
        Ok(())
    }

    pub fn remove(&self, name: &str) {
        self.lock().remove(&name.to_ascii_lowercase());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<CertifiedKey>>> {
        self.by_name.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ResolvesServerCert for Challenges {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.to_ascii_lowercase();
        self.lock().get(&name).cloned()
    }
}

/// A self-signed certificate for `names`, served until the first issuance: clients see a
/// certificate error instead of a refused handshake, and the listener can answer TLS-ALPN-01.
pub fn throwaway(names: &[String]) -> Result<Arc<CertifiedKey>, TlsError> {
    certified(CertificateParams::new(names.to_vec()).map_err(rcgen_error)?)
}

fn certified(params: CertificateParams) -> Result<Arc<CertifiedKey>, TlsError> {
    let key = KeyPair::generate().map_err(rcgen_error)?;
    let cert = params.self_signed(&key).map_err(rcgen_error)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing =
        crate::provider().key_provider.load_private_key(der).map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(vec![CertificateDer::from(cert.der().to_vec())], signing)))
}

fn rcgen_error(e: rcgen::Error) -> TlsError {
    TlsError::Config(format!("generating a certificate: {e}"))
}

/// A certificate kept in the state directory: chain and key as written after an issuance.
pub fn load_issued(cert: &Path, key: &Path) -> Result<LoadedCert, TlsError> {
    crate::keys::load_cert_and_key(cert, key, false)
}

/// When a certificate was issued and when it expires (`notBefore`, `notAfter`).
pub fn validity(cert: &CertificateDer<'_>) -> Option<(std::time::SystemTime, std::time::SystemTime)> {
    use x509_parser::prelude::*;
    let (_, parsed) = X509Certificate::from_der(cert).ok()?;
    let at =
        |t: ASN1Time| std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.timestamp().max(0) as u64);
    Some((at(parsed.validity().not_before), at(parsed.validity().not_after)))
}

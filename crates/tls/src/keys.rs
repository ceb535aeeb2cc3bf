//! Loading certificate chains and private keys.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore};

use crate::describe::{self, Peer};
use crate::TlsError;

/// A certificate chain with its signing key, and the DNS names its leaf carries.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    pub dns_names: Vec<String>,
}

/// Reads a PEM chain (leaf first) and its private key (PKCS#8, SEC1 or PKCS#1), and checks that
/// they belong together.
pub fn load_cert_and_key(
    cert_path: &Path,
    key_path: &Path,
    allow_insecure_key_permissions: bool,
) -> Result<LoadedCert, TlsError> {
    let chain = load_chain(cert_path)?;
    let signing_key = match external_key(key_path, &chain[0]) {
        Some(key) => key?,
        None => {
            if !allow_insecure_key_permissions {
                check_key_permissions(key_path)?;
            }
            let key = load_key(key_path)?;
            crate::provider().key_provider.load_private_key(key).map_err(|e| TlsError::Material {
                what: "key",
                path: key_path.to_path_buf(),
                problem: format!("unusable: {}", describe::tls_error(&e, Peer::Client)),
            })?
        }
    };
    let material =
        |problem: String| TlsError::Material { what: "certificate", path: cert_path.to_path_buf(), problem };
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| match e {
        rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch { key: key_path.to_path_buf(), cert: cert_path.to_path_buf() }
        }
        other => material(describe::tls_error(&other, Peer::Client)),
    })?;
    let dns_names =
        dns_names(certified.end_entity_cert().map_err(|e| material(e.to_string()))?).map_err(material)?;
    Ok(LoadedCert { key: Arc::new(certified), dns_names })
}

/// A key named by a `keyd:SOCKET#NAME` or `pkcs11:` source instead of a file; `None` for a file.
fn external_key(
    key: &Path,
    leaf: &CertificateDer<'_>,
) -> Option<Result<Arc<dyn rustls::sign::SigningKey>, TlsError>> {
    let source = key.to_str()?;
    if let Some(uri) = crate::pkcs11::parse(source) {
        let key = source.split('?').next().unwrap_or(source).to_string();
        return Some(
            uri.map_err(|problem| TlsError::Remote { key, problem })
                .and_then(|uri| crate::pkcs11::open(source, &uri, leaf)),
        );
    }
    let parsed = crate::keyd::remote::parse(source)?;
    Some(
        parsed
            .map_err(|problem| TlsError::Remote { key: source.to_string(), problem })
            .and_then(|(socket, name)| crate::keyd::remote::connect(&socket, &name)),
    )
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read("certificate", path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(|e| {
        TlsError::Material { what: "certificate", path: path.to_path_buf(), problem: e.to_string() }
    })?;
    if chain.is_empty() {
        return Err(TlsError::Material {
            what: "certificate",
            path: path.to_path_buf(),
            problem: "no CERTIFICATE block found".into(),
        });
    }
    Ok(chain)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read("key", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Material {
        what: "key",
        path: path.to_path_buf(),
        problem: format!("no usable private key (PKCS#8, SEC1 or PKCS#1 PEM): {e}"),
    })
}

/// A PEM CA bundle as a trust store; an empty or unusable bundle is an error.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let material =
        |problem: String| TlsError::Material { what: "CA bundle", path: path.to_path_buf(), problem };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&read("CA bundle", path)?) {
        let cert = cert.map_err(|e| material(e.to_string()))?;
        roots.add(cert).map_err(|e| material(format!("unusable CA: {e}")))?;
    }
    if roots.is_empty() {
        return Err(material("no CA certificate in bundle".into()));
    }
    Ok(roots)
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_path_buf(), source })
}

/// Refuses a key file that group or others may access, as OpenSSH does for identity files.
pub fn check_key_permissions(path: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| TlsError::Read {
        what: "key",
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyPermissions { path: path.to_path_buf(), mode });
    }
    Ok(())
}

/// The DNS names in a certificate's subjectAltName.
fn dns_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    use x509_parser::prelude::*;
    let (_, parsed) = X509Certificate::from_der(cert).map_err(|e| format!("bad certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(n) = name {
                names.push(n.to_string());
            }
        }
    }
    Ok(names)
}

//! CRLs beyond the handshake: reading them (with a loud warning for one past its next update),
//! and telling whether a connected peer's certificate is revoked now, so a reload can close the
//! connections of certificates revoked since they connected.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};

use crate::TlsError;

/// What a CRL lists a certificate by: its issuer's name (DER) and its serial number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RevocationKey {
    issuer: Vec<u8>,
    serial: Vec<u8>,
}

/// The key of a peer's end-entity certificate; `None` if it does not parse.
pub fn revocation_key(cert: &CertificateDer<'_>) -> Option<RevocationKey> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(RevocationKey { issuer: cert.issuer().as_raw().to_vec(), serial: cert.raw_serial().to_vec() })
}

/// Every certificate the configured CRLs revoke.
#[derive(Debug, Clone, Default)]
pub struct Revocations {
    revoked: HashSet<RevocationKey>,
}

impl Revocations {
    /// Reads the CRL files (quietly: the verifier built from the same files has warned about
    /// any out-of-date one).
    pub fn load(paths: &[PathBuf]) -> Result<Self, TlsError> {
        let mut revoked = HashSet::new();
        for (path, crl) in read(paths, false)? {
            let (_, parsed) =
                x509_parser::parse_x509_crl(crl.as_ref()).map_err(|e| bad(&path, e.to_string()))?;
            let issuer = parsed.issuer().as_raw().to_vec();
            for r in parsed.iter_revoked_certificates() {
                revoked.insert(RevocationKey { issuer: issuer.clone(), serial: r.raw_serial().to_vec() });
            }
        }
        Ok(Revocations { revoked })
    }

    pub fn revokes(&self, key: &RevocationKey) -> bool {
        self.revoked.contains(key)
    }
}

fn bad(path: &Path, problem: String) -> TlsError {
    TlsError::Material { what: "CRL", path: path.to_path_buf(), problem }
}

/// Reads PEM CRL files. One whose next update has passed still loads (its revocations still
/// hold) but is logged as a warning each time it is read: the issuer has stopped publishing, or
/// the file is no longer being refreshed. `crl_strict` makes such a CRL refuse every client.
pub fn read_crls(paths: &[PathBuf]) -> Result<Crls, TlsError> {
    read(paths, true)
}

type Crls = Vec<(PathBuf, CertificateRevocationListDer<'static>)>;

fn read(paths: &[PathBuf], warn: bool) -> Result<Crls, TlsError> {
    let mut crls = Vec::new();
    for path in paths {
        let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
            what: "CRL",
            path: path.clone(),
            source,
        })?;
        for crl in CertificateRevocationListDer::pem_slice_iter(&bytes) {
            let crl = crl.map_err(|e| bad(path, e.to_string()))?;
            let (_, parsed) =
                x509_parser::parse_x509_crl(crl.as_ref()).map_err(|e| bad(path, e.to_string()))?;
            if let Some(next) = parsed.next_update().filter(|_| warn) {
                if next.timestamp() < x509_parser::time::ASN1Time::now().timestamp() {
                    tracing::warn!(
                        side = "config",
                        crl = %path.display(),
                        next_update = %next,
                        "CRL is out of date: its next update has passed, so revocations since then are \
                         unknown; refresh it (with crl_strict = true, clients are refused until then)"
                    );
                }
            }
            crls.push((path.clone(), crl));
        }
    }
    Ok(crls)
}

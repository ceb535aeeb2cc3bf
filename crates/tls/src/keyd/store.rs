//! keyd's side: the private keys it holds, and its answer to each request. Sans-IO; the daemon
//! (`tlsgate keyd`) reads and writes the frames.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rustls::sign::SigningKey;
use rustls::SignatureScheme;

use super::wire::{Reason, Request, Response, WireError, MAX_NAME};
use crate::TlsError;

/// Schemes keyd offers, in the order a terminator prefers them: RSA-PSS before PKCS#1 v1.5
/// (TLS 1.3 allows only PSS; PKCS#1 is for TLS 1.2 clients without PSS), SHA-256 first.
const SCHEMES: [SignatureScheme; 8] = [
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PKCS1_SHA256,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA512,
];

/// Named private keys.
#[derive(Debug, Default)]
pub struct KeyStore {
    keys: BTreeMap<String, Arc<dyn SigningKey>>,
}

impl KeyStore {
    /// Loads `NAME=FILE` pairs; the files pass the same permission check as terminate's keys.
    pub fn load(specs: &[(String, std::path::PathBuf)], allow_insecure: bool) -> Result<KeyStore, TlsError> {
        let mut store = KeyStore::default();
        for (name, path) in specs {
            if name.is_empty() || name.len() > MAX_NAME {
                return Err(TlsError::Config(format!("key name {name:?}: 1 to {MAX_NAME} bytes")));
            }
            if store.keys.contains_key(name) {
                return Err(TlsError::Config(format!("key name {name:?} given twice")));
            }
            store.keys.insert(name.clone(), load_signing_key(path, allow_insecure)?);
        }
        Ok(store)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The response body to a request body.
    pub fn answer(&self, body: &[u8]) -> Vec<u8> {
        self.respond(Request::decode(body)).encode()
    }

    fn respond(&self, request: Result<Request, WireError>) -> Response {
        let refused = |reason, text: String| Response::Refused { reason, text };
        let request = match request {
            Ok(r) => r,
            Err(e) => return refused(Reason::Malformed, e.to_string()),
        };
        let name = match &request {
            Request::Info { name } | Request::Sign { name, .. } => name.clone(),
        };
        let Some(key) = self.keys.get(&name) else {
            return refused(Reason::UnknownKey, format!("no key named {name:?}"));
        };
        match request {
            Request::Info { .. } => {
                let schemes =
                    SCHEMES.iter().filter(|s| key.choose_scheme(&[**s]).is_some()).map(|s| u16::from(*s));
                let spki = key.public_key().map(|k| k.as_ref().to_vec()).unwrap_or_default();
                Response::Info { schemes: schemes.collect(), spki }
            }
            Request::Sign { scheme, message, .. } => {
                let Some(signer) = key.choose_scheme(&[SignatureScheme::from(scheme)]) else {
                    return refused(
                        Reason::UnsupportedScheme,
                        format!("key {name:?} cannot sign with {scheme:#06x}"),
                    );
                };
                match signer.sign(&message) {
                    Ok(sig) => Response::Signature(sig),
                    Err(e) => refused(Reason::SigningFailed, e.to_string()),
                }
            }
        }
    }
}

/// A PEM private key file as a rustls signing key, after the permission check.
pub(crate) fn load_signing_key(path: &Path, allow_insecure: bool) -> Result<Arc<dyn SigningKey>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    if !allow_insecure {
        crate::keys::check_key_permissions(path)?;
    }
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what: "key",
        path: path.to_path_buf(),
        source,
    })?;
    let der = rustls::pki_types::PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Material {
        what: "key",
        path: path.to_path_buf(),
        problem: format!("no usable private key (PKCS#8, SEC1 or PKCS#1 PEM): {e}"),
    })?;
    crate::provider().key_provider.load_private_key(der).map_err(|e| TlsError::Material {
        what: "key",
        path: path.to_path_buf(),
        problem: format!("unusable: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_info_sign_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::pki::TestCa::new("keyd test").unwrap();
        let (_, key) = ca.issue_server(&["localhost"]).unwrap().write(dir.path(), "k").unwrap();
        let store = KeyStore::load(&[("web".into(), key)], false).unwrap();
        let info = Response::decode(&store.answer(&Request::Info { name: "web".into() }.encode())).unwrap();
        let Response::Info { schemes, spki } = info else { panic!("{info:?}") };
        assert_eq!(schemes, vec![0x0403]);
        assert!(!spki.is_empty());
        let sign = Request::Sign { name: "web".into(), scheme: 0x0403, message: b"hello".to_vec() };
        assert!(
            matches!(Response::decode(&store.answer(&sign.encode())).unwrap(), Response::Signature(s) if !s.is_empty())
        );
        let rsa = Request::Sign { name: "web".into(), scheme: 0x0804, message: b"x".to_vec() };
        assert!(matches!(
            Response::decode(&store.answer(&rsa.encode())).unwrap(),
            Response::Refused { reason: Reason::UnsupportedScheme, .. }
        ));
        let other = Request::Info { name: "mail".into() };
        assert!(matches!(
            Response::decode(&store.answer(&other.encode())).unwrap(),
            Response::Refused { reason: Reason::UnknownKey, .. }
        ));
        assert!(matches!(
            Response::decode(&store.answer(&[0xee])).unwrap(),
            Response::Refused { reason: Reason::Malformed, .. }
        ));
    }
}

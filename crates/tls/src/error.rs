use std::path::PathBuf;

use tlsgate_core::os_error::os_error;

/// Failures loading TLS material or building a config. All are the configuration's (side
/// `config`): they happen at start or reload, before any client is involved. Each names the
/// file and what it was meant to hold.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `what`: certificate, key, CA bundle, CRL.
    #[error("cannot read {what} {path}: {}", os_error(source))]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {}", os_error(source))]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{what} {path}: {problem}")]
    Material { what: &'static str, path: PathBuf, problem: String },
    #[error("key {key} does not match certificate {cert}")]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error(
        "key {path} is accessible to group or others (mode {mode:o}); \
         chmod 600 it, or set security.allow_insecure_key_permissions"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("{0}")]
    Config(String),
    /// A key held outside the process (keyd, PKCS#11): `key` is its `keyd:`/`pkcs11:` source.
    #[error("key {key}: {problem}")]
    Remote { key: String, problem: String },
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
}

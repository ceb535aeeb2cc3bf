use std::path::PathBuf;

/// Failures loading TLS material or building a config. All are tlsgate's own (internal) side:
/// they happen at start or reload, before any client is involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {problem}")]
    Material { path: PathBuf, problem: String },
    #[error(
        "{path}: private key is accessible to group or others (mode {mode:o}); \
         chmod 600 it, or set security.allow_insecure_key_permissions"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("{0}")]
    Config(String),
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
}

//! What a kernel TLS offload needs from a finished handshake: each direction's raw AEAD key, IV
//! and next record sequence number, read from the secrets rustls extracted.
//!
//! The record crypto then happens in the kernel; the rules after the handshake stay in
//! [`crate::session`] (see [`crate::session::Session::offload`]).

use crate::crypto::{CryptoError, Suite, Version};
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};

/// One direction's key material.
pub struct DirectionKey {
    /// 16 or 32 bytes.
    pub key: Vec<u8>,
    /// The 12-byte IV rustls derived (TLS 1.2 AES-GCM: 4-byte salt and 8 bytes of key block).
    pub iv: [u8; 12],
    /// The next record sequence number.
    pub seq: u64,
}

impl std::fmt::Debug for DirectionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key or IV.
        f.debug_struct("DirectionKey").field("seq", &self.seq).finish_non_exhaustive()
    }
}

impl Drop for DirectionKey {
    fn drop(&mut self) {
        self.key.fill(0);
        self.iv.fill(0);
    }
}

/// Both directions of one connection.
#[derive(Debug)]
pub struct KernelKeys {
    pub version: Version,
    pub suite: Suite,
    /// What the client sends (the kernel's receive key).
    pub rx: DirectionKey,
    /// What tlsgate sends.
    pub tx: DirectionKey,
}

/// Copies the key material out of `secrets` (which [`crate::crypto::RecordLayer::new`] then
/// takes). `Unsupported` for a suite that is not AES-GCM or ChaCha20-Poly1305.
pub fn kernel_keys(version: Version, secrets: &ExtractedSecrets) -> Result<KernelKeys, CryptoError> {
    let dir = |(seq, s): &(u64, ConnectionTrafficSecrets)| -> Result<(Suite, DirectionKey), CryptoError> {
        let (suite, key, iv) = match s {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Suite::Aes128Gcm, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Suite::Aes256Gcm, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (Suite::Chacha20Poly1305, key, iv),
            _ => return Err(CryptoError::Unsupported),
        };
        let iv: [u8; 12] = iv.as_ref().try_into().map_err(|_| CryptoError::Unsupported)?;
        Ok((suite, DirectionKey { key: key.as_ref().to_vec(), iv, seq: *seq }))
    };
    let (suite, rx) = dir(&secrets.rx)?;
    let (_, tx) = dir(&secrets.tx)?;
    Ok(KernelKeys { version, suite, rx, tx })
}

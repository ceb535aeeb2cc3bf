//! Random payloads and digests.

use std::io::{Read, Write};
use std::path::Path;

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Writes `len` random bytes to `path` and returns their SHA-256 in hex.
pub fn random_file(path: &Path, len: usize) -> String {
    let mut f = std::fs::File::create(path).unwrap();
    let mut hasher = Sha256::new();
    let mut rng = rand::rng();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        rng.fill_bytes(&mut buf[..n]);
        hasher.update(&buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
    hex(&hasher.finalize())
}

pub fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex(&hasher.finalize())
}

pub fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

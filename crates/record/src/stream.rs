//! Streaming AEAD open: a record's body decrypted piece by piece as it arrives, its tag checked at
//! the end (cut-through release).
//!
//! AES-GCM and ChaCha20-Poly1305 are a keystream XOR plus a universal hash over the ciphertext, so
//! both halves run incrementally: AES-CTR from counter block J0+1 with GHASH (NIST SP 800-38D;
//! tag = GHASH ⊕ E(K, J0)), or ChaCha20 from block 1 with Poly1305 keyed by block 0 (RFC 8439).
//! The primitives are RustCrypto's (`aes`, `ctr`, `ghash`, `chacha20`, `poly1305`); aws-lc-rs's
//! `aead` opens whole records only and exposes neither GHASH nor Poly1305. What is assembled here
//! is only the construction, checked against the whole-record open of [`crate::crypto`] at every
//! split (tests below).
//!
//! Plaintext handed out before [`StreamOpener::finish`] is *unauthenticated*: the caller decides
//! what may leave before the tag verified. The tag is compared in constant time.

use crate::crypto::CryptoError;
use aes::cipher::consts::U16;
use aes::cipher::{BlockEncrypt, BlockSizeUser, InnerIvInit, KeyInit, KeyIvInit, StreamCipher};
use ghash::universal_hash::UniversalHash;
use subtle::ConstantTimeEq;

pub(crate) const TAG_LEN: usize = 16;
const BLOCK: usize = 16;

type Aes128Ctr = ctr::Ctr32BE<aes::Aes128>;
type Aes256Ctr = ctr::Ctr32BE<aes::Aes256>;

/// The key of one direction in the form the streaming opener needs: the expanded AES key, or the
/// ChaCha20 key.
#[derive(Clone)]
pub(crate) enum StreamKey {
    Aes128(Box<aes::Aes128>),
    Aes256(Box<aes::Aes256>),
    Chacha([u8; 32]),
}

impl StreamKey {
    pub(crate) fn aes(key: &[u8]) -> Option<StreamKey> {
        match key.len() {
            16 => Some(StreamKey::Aes128(Box::new(aes::Aes128::new_from_slice(key).ok()?))),
            32 => Some(StreamKey::Aes256(Box::new(aes::Aes256::new_from_slice(key).ok()?))),
            _ => None,
        }
    }

    pub(crate) fn chacha(key: &[u8]) -> Option<StreamKey> {
        Some(StreamKey::Chacha(key.try_into().ok()?))
    }
}

// Boxed as a whole in `Running`, one per record in progress: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Cipher {
    Aes128(Aes128Ctr),
    Aes256(Aes256Ctr),
    Chacha(chacha20::ChaCha20),
}

impl Cipher {
    fn apply(&mut self, buf: &mut [u8]) {
        match self {
            Cipher::Aes128(c) => c.apply_keystream(buf),
            Cipher::Aes256(c) => c.apply_keystream(buf),
            Cipher::Chacha(c) => c.apply_keystream(buf),
        }
    }
}

/// GHASH or Poly1305 fed a byte stream cut anywhere: whole blocks go straight in, a partial block
/// waits (at most 15 bytes).
struct Mac {
    hash: Hash,
    partial: [u8; BLOCK],
    have: usize,
}

#[allow(clippy::large_enum_variant)]
enum Hash {
    Ghash(ghash::GHash),
    Poly(poly1305::Poly1305),
}

impl Hash {
    fn block(&mut self, b: &[u8; BLOCK]) {
        match self {
            Hash::Ghash(h) => h.update(&[(*b).into()]),
            Hash::Poly(h) => h.update(&[(*b).into()]),
        }
    }

    /// `data` is a whole number of blocks.
    fn blocks(&mut self, data: &[u8]) {
        match self {
            Hash::Ghash(h) => h.update_padded(data),
            Hash::Poly(h) => h.update_padded(data),
        }
    }
}

impl Mac {
    fn update(&mut self, mut data: &[u8]) {
        if self.have > 0 {
            let take = (BLOCK - self.have).min(data.len());
            self.partial[self.have..self.have + take].copy_from_slice(&data[..take]);
            self.have += take;
            data = &data[take..];
            if self.have < BLOCK {
                return;
            }
            let b = self.partial;
            self.hash.block(&b);
            self.have = 0;
        }
        // Whole blocks in one call: `update_padded` pads nothing on a multiple of 16, and lets the
        // hash take many blocks at once (several times faster than one call per block).
        let whole = data.len() - data.len() % BLOCK;
        self.hash.blocks(&data[..whole]);
        let rest = &data[whole..];
        self.partial[..rest.len()].copy_from_slice(rest);
        self.have = rest.len();
    }

    /// Zero-pads the current partial block (both constructions pad AAD and ciphertext to 16).
    fn pad(&mut self) {
        if self.have > 0 {
            self.partial[self.have..].fill(0);
            let b = self.partial;
            self.hash.block(&b);
            self.have = 0;
        }
    }

    /// Pads, appends the length block and returns the raw hash.
    fn finish(mut self, aad_len: usize, ct_len: usize) -> [u8; TAG_LEN] {
        self.pad();
        let mut lens = [0u8; BLOCK];
        match &self.hash {
            Hash::Ghash(_) => {
                lens[..8].copy_from_slice(&(aad_len as u64 * 8).to_be_bytes());
                lens[8..].copy_from_slice(&(ct_len as u64 * 8).to_be_bytes());
            }
            Hash::Poly(_) => {
                lens[..8].copy_from_slice(&(aad_len as u64).to_le_bytes());
                lens[8..].copy_from_slice(&(ct_len as u64).to_le_bytes());
            }
        }
        self.hash.block(&lens);
        match self.hash {
            Hash::Ghash(h) => h.finalize().into(),
            Hash::Poly(h) => h.finalize().into(),
        }
    }
}

/// Cipher and hash once the nonce is known.
struct Running {
    cipher: Cipher,
    mac: Mac,
    /// What the hash is XORed with to give the tag: E(K, J0) for GCM, zero for Poly1305.
    mask: [u8; TAG_LEN],
}

impl Running {
    fn new(key: &StreamKey, nonce: &[u8; 12], aad: &[u8]) -> Running {
        let (cipher, hash, mask) = match key {
            StreamKey::Aes128(k) => {
                let (h, mask, ctr) = gcm_start(&**k, nonce);
                (
                    Cipher::Aes128(Aes128Ctr::from_core(ctr::CtrCore::inner_iv_init(
                        (**k).clone(),
                        &ctr.into(),
                    ))),
                    h,
                    mask,
                )
            }
            StreamKey::Aes256(k) => {
                let (h, mask, ctr) = gcm_start(&**k, nonce);
                (
                    Cipher::Aes256(Aes256Ctr::from_core(ctr::CtrCore::inner_iv_init(
                        (**k).clone(),
                        &ctr.into(),
                    ))),
                    h,
                    mask,
                )
            }
            StreamKey::Chacha(k) => {
                let mut c = chacha20::ChaCha20::new(k.into(), nonce.into());
                // Block 0 keys Poly1305; the keystream for the text starts at block 1.
                let mut block0 = [0u8; 64];
                c.apply_keystream(&mut block0);
                let poly_key: [u8; 32] = block0[..32].try_into().expect("32 bytes");
                (Cipher::Chacha(c), Hash::Poly(poly1305::Poly1305::new(&poly_key.into())), [0; TAG_LEN])
            }
        };
        let mut mac = Mac { hash, partial: [0; BLOCK], have: 0 };
        mac.update(aad);
        mac.pad();
        Running { cipher, mac, mask }
    }
}

/// GCM's pieces for a 96-bit nonce: GHASH keyed with H = E(K, 0^128), the tag mask E(K, J0) with
/// J0 = nonce || 1, and the first text counter block J0 + 1.
fn gcm_start<C: BlockEncrypt + BlockSizeUser<BlockSize = U16>>(
    k: &C,
    nonce: &[u8; 12],
) -> (Hash, [u8; TAG_LEN], [u8; BLOCK]) {
    let mut h = [0u8; BLOCK].into();
    k.encrypt_block(&mut h);
    let mut j0 = [0u8; BLOCK];
    j0[..12].copy_from_slice(nonce);
    j0[15] = 1;
    let mut mask = j0.into();
    k.encrypt_block(&mut mask);
    let mut ctr = j0;
    ctr[15] = 2;
    (Hash::Ghash(ghash::GHash::new(&h)), mask.into(), ctr)
}

/// One record being opened. Feed it the record's body bytes in order (the header was given at
/// the start), each byte exactly once; plaintext comes out as it is decrypted. The body's layout
/// is known from its length: TLS 1.2's 8-byte explicit nonce first, the 16-byte tag last.
pub struct StreamOpener {
    key: StreamKey,
    /// TLS 1.3: the record nonce. TLS 1.2: the 4-byte salt, the explicit nonce filled in later.
    nonce: [u8; 12],
    aad: [u8; 13],
    aad_len: usize,
    /// Explicit nonce bytes expected at the start of the body (8 for TLS 1.2, else 0).
    explicit: usize,
    body_len: usize,
    /// Body bytes fed so far.
    at: usize,
    running: Option<Box<Running>>,
    tag: [u8; TAG_LEN],
}

impl std::fmt::Debug for StreamOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("StreamOpener").field("body_len", &self.body_len).field("at", &self.at).finish()
    }
}

impl StreamOpener {
    /// `nonce` is the full nonce (TLS 1.3) or the IV whose last 8 bytes the explicit nonce will
    /// replace (TLS 1.2, `explicit` = 8). The caller checked `body_len >= explicit + TAG_LEN`.
    pub(crate) fn new(
        key: StreamKey,
        nonce: [u8; 12],
        aad: &[u8],
        explicit: usize,
        body_len: usize,
    ) -> StreamOpener {
        let mut a = [0u8; 13];
        a[..aad.len()].copy_from_slice(aad);
        let mut s = StreamOpener {
            key,
            nonce,
            aad: a,
            aad_len: aad.len(),
            explicit,
            body_len,
            at: 0,
            running: None,
            tag: [0; TAG_LEN],
        };
        if explicit == 0 {
            s.start();
        }
        s
    }

    fn start(&mut self) {
        self.running = Some(Box::new(Running::new(&self.key, &self.nonce, &self.aad[..self.aad_len])));
    }

    /// Plaintext bytes the record carries (before TLS 1.3 content type and padding are told apart).
    pub fn plaintext_len(&self) -> usize {
        self.body_len - self.explicit - TAG_LEN
    }

    /// Bytes of state held for the record (the per-flow bound counts them).
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<StreamOpener>()
            + self.running.as_ref().map_or(0, |_| std::mem::size_of::<Running>())
    }

    /// Body bytes still due.
    pub fn remaining(&self) -> usize {
        self.body_len - self.at
    }

    /// Feeds the next body bytes; appends the plaintext they carry to `out`. Bytes past the body
    /// are ignored (the framer never gives any).
    pub fn update(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        data = &data[..data.len().min(self.remaining())];
        while !data.is_empty() {
            let ct_end = self.body_len - TAG_LEN;
            if self.at < self.explicit {
                let take = (self.explicit - self.at).min(data.len());
                let from = 12 - self.explicit + self.at;
                self.nonce[from..from + take].copy_from_slice(&data[..take]);
                self.at += take;
                data = &data[take..];
                if self.at == self.explicit {
                    self.start();
                }
            } else if self.at < ct_end {
                let take = (ct_end - self.at).min(data.len());
                let r = self.running.as_mut().expect("started once the nonce is complete");
                r.mac.update(&data[..take]);
                let from = out.len();
                out.extend_from_slice(&data[..take]);
                r.cipher.apply(&mut out[from..]);
                self.at += take;
                data = &data[take..];
            } else {
                let from = self.at - ct_end;
                let take = (TAG_LEN - from).min(data.len());
                self.tag[from..from + take].copy_from_slice(&data[..take]);
                self.at += take;
                data = &data[take..];
            }
        }
    }

    /// Checks the tag once the whole body was fed. Anything missing is a failure.
    pub fn finish(self) -> Result<(), CryptoError> {
        if self.at != self.body_len {
            return Err(CryptoError::BadRecordMac);
        }
        let ct_len = self.plaintext_len();
        let r = self.running.ok_or(CryptoError::BadRecordMac)?;
        let mut expect = r.mac.finish(self.aad_len, ct_len);
        for (e, m) in expect.iter_mut().zip(r.mask) {
            *e ^= m;
        }
        if bool::from(expect.ct_eq(&self.tag)) {
            Ok(())
        } else {
            Err(CryptoError::BadRecordMac)
        }
    }
}

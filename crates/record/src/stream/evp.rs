//! aws-lc's streaming AEAD decryption (its OpenSSL-style `EVP_CIPHER` interface) behind a safe
//! type: the one place in this crate that calls C directly.
//!
//! aws-lc-rs's `aead` opens whole records only. aws-lc's `EVP_aes_*_gcm` and
//! `EVP_chacha20_poly1305` ciphers take the AAD, then the ciphertext in pieces of any length, then
//! the tag, and run the same bulk code as the whole-record open (AES-NI/VAES counter mode stitched
//! with the carry-less-multiply GHASH over many blocks; ChaCha20 and Poly1305 in SIMD), keeping a
//! partial block across pieces themselves.
#![allow(unsafe_code)]

use aws_lc_sys as sys;
use std::os::raw::c_int;
use std::ptr::{null, null_mut, NonNull};

/// The three AEADs, by key length for AES-GCM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alg {
    AesGcm,
    Chacha20Poly1305,
}

/// Heap bytes of one context (aws-lc's `EVP_CIPHER_CTX` and its cipher data: the expanded AES
/// key and GHASH table, or the ChaCha20 key and Poly1305 state): glibc's `mallinfo2` counted
/// 818 to 880 bytes per context over 100 built contexts of each suite; the largest.
pub(crate) const CONTEXT_BYTES: usize = 880;

/// One decryption context: built with the key once, restarted with each record's nonce.
pub(crate) struct Ctx {
    ptr: NonNull<sys::EVP_CIPHER_CTX>,
}

// SAFETY: the context is owned by this value alone (no aliasing pointer is kept anywhere) and
// aws-lc's EVP contexts have no thread affinity; every call that mutates it takes `&mut self`.
unsafe impl Send for Ctx {}
// SAFETY: no method takes `&self`, so a shared reference gives no access to the context.
unsafe impl Sync for Ctx {}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `EVP_CIPHER_CTX_new` and is freed once, here (aws-lc
        // cleanses the key material).
        unsafe { sys::EVP_CIPHER_CTX_free(self.ptr.as_ptr()) }
    }
}

impl Ctx {
    /// A context keyed for decryption; `None` when the key length does not fit the algorithm or
    /// aws-lc fails (allocation).
    pub(crate) fn new(alg: Alg, key: &[u8]) -> Option<Ctx> {
        // SAFETY: these return pointers to static cipher descriptions.
        let cipher = unsafe {
            match (alg, key.len()) {
                (Alg::AesGcm, 16) => sys::EVP_aes_128_gcm(),
                (Alg::AesGcm, 32) => sys::EVP_aes_256_gcm(),
                (Alg::Chacha20Poly1305, 32) => sys::EVP_chacha20_poly1305(),
                _ => return None,
            }
        };
        // SAFETY: allocates a fresh context or returns null.
        let ctx = Ctx { ptr: NonNull::new(unsafe { sys::EVP_CIPHER_CTX_new() })? };
        // SAFETY: a live context, a static cipher, a key of the cipher's length (checked above);
        // no IV yet (each record sets its own). The default IV length of all three is 12.
        let ok =
            unsafe { sys::EVP_DecryptInit_ex(ctx.ptr.as_ptr(), cipher, null_mut(), key.as_ptr(), null()) };
        (ok == 1).then_some(ctx)
    }

    /// Starts a record: its 12-byte nonce and its AAD. The key stays expanded.
    pub(crate) fn start(&mut self, nonce: &[u8; 12], aad: &[u8]) -> bool {
        let ctx = self.ptr.as_ptr();
        // SAFETY: a live context keyed in `new`; no cipher or key (kept), a 12-byte nonce.
        if unsafe { sys::EVP_DecryptInit_ex(ctx, null(), null_mut(), null(), nonce.as_ptr()) } != 1 {
            return self.failed();
        }
        let mut n: c_int = 0;
        // SAFETY: a null output marks AAD; `aad` is at most 13 bytes and readable.
        let ok = unsafe { sys::EVP_DecryptUpdate(ctx, null_mut(), &mut n, aad.as_ptr(), aad.len() as c_int) };
        ok == 1 || self.failed()
    }

    /// Decrypts the next ciphertext bytes of the record and appends their plaintext to `out`.
    pub(crate) fn decrypt_append(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        if input.is_empty() {
            return true;
        }
        let Ok(len) = c_int::try_from(input.len()) else { return false };
        out.reserve(input.len());
        let at = out.len();
        let mut n: c_int = 0;
        // SAFETY: `out` has room for `input.len()` more bytes after its length (reserved above);
        // the three ciphers are stream modes (`EVP_CIPH_FLAG_CUSTOM_CIPHER`, block size 1) that
        // write exactly as many bytes as they read, which `n` reports; `input` and the spare
        // capacity do not overlap.
        let ok = unsafe {
            sys::EVP_DecryptUpdate(self.ptr.as_ptr(), out.as_mut_ptr().add(at), &mut n, input.as_ptr(), len)
        };
        if ok != 1 || n != len {
            return self.failed();
        }
        // SAFETY: the `len` bytes after `at` were written by the call above.
        unsafe { out.set_len(at + input.len()) };
        true
    }

    /// Checks the record's tag (in constant time, by aws-lc) after all its ciphertext.
    pub(crate) fn finish(&mut self, tag: &[u8; 16]) -> bool {
        let ctx = self.ptr.as_ptr();
        // SAFETY: SET_TAG reads 16 bytes from the pointer (it is declared mutable only).
        let set = unsafe {
            sys::EVP_CIPHER_CTX_ctrl(ctx, sys::EVP_CTRL_AEAD_SET_TAG, 16, tag.as_ptr().cast_mut().cast())
        };
        if set != 1 {
            return self.failed();
        }
        let mut scratch = [0u8; 32];
        let mut n: c_int = 0;
        // SAFETY: stream ciphers write nothing at the end; the scratch buffer covers a block anyway.
        let ok = unsafe { sys::EVP_DecryptFinal_ex(ctx, scratch.as_mut_ptr(), &mut n) };
        ok == 1 || self.failed()
    }

    /// aws-lc may queue an error on its thread-local error stack: cleared, the caller reports.
    fn failed(&mut self) -> bool {
        // SAFETY: only touches this thread's error queue.
        unsafe { sys::ERR_clear_error() };
        false
    }
}

//! Streaming AEAD open: a record's body decrypted piece by piece as it arrives, its tag checked at
//! the end (cut-through release).
//!
//! AES-GCM and ChaCha20-Poly1305 are a keystream XOR plus a universal hash over the ciphertext, so
//! both halves run incrementally. aws-lc does both through its `EVP_CIPHER` interface ([`evp`]),
//! with the same bulk code as its whole-record open: each piece is decrypted and hashed as whole
//! runs of blocks, a partial block is kept only at a piece's edges. What is assembled here is only
//! the record layout (TLS 1.2's explicit nonce, the tag at the end), checked against the
//! whole-record open of [`crate::crypto`] at every split (tests/stream.rs and the fuzz targets).
//!
//! Plaintext handed out before [`StreamOpener::finish`] is *unauthenticated*: the caller decides
//! what may leave before the tag verified. The tag is compared in constant time (by aws-lc).

mod evp;

use crate::crypto::CryptoError;
pub(crate) use evp::{Alg, Ctx, CONTEXT_BYTES};

pub(crate) const TAG_LEN: usize = 16;

/// One record being opened. Feed it the record's body bytes in order (the header was given at
/// the start), each byte exactly once; plaintext comes out as it is decrypted. The body's layout
/// is known from its length: TLS 1.2's 8-byte explicit nonce first, the 16-byte tag last.
pub struct StreamOpener {
    /// The key's decryption context, restarted for this record; handed back to the key by
    /// [`crate::crypto::RecordKey::finish_stream`] for the next record.
    ctx: Ctx,
    /// TLS 1.3: the record nonce. TLS 1.2: the 4-byte salt, the explicit nonce filled in later.
    nonce: [u8; 12],
    aad: [u8; 13],
    aad_len: usize,
    /// Explicit nonce bytes expected at the start of the body (8 for TLS 1.2, else 0).
    explicit: usize,
    body_len: usize,
    /// Body bytes fed so far.
    at: usize,
    /// The context took the nonce and AAD.
    started: bool,
    /// aws-lc refused a call: the record fails at [`StreamOpener::finish`].
    failed: bool,
    tag: [u8; TAG_LEN],
    /// The record's sequence number.
    seq: u64,
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
        ctx: Ctx,
        nonce: [u8; 12],
        aad: &[u8],
        explicit: usize,
        body_len: usize,
        seq: u64,
    ) -> StreamOpener {
        let mut a = [0u8; 13];
        a[..aad.len()].copy_from_slice(aad);
        let mut s = StreamOpener {
            ctx,
            nonce,
            aad: a,
            aad_len: aad.len(),
            explicit,
            body_len,
            at: 0,
            started: false,
            failed: false,
            tag: [0; TAG_LEN],
            seq,
        };
        if explicit == 0 {
            s.start();
        }
        s
    }

    fn start(&mut self) {
        self.started = self.ctx.start(&self.nonce, &self.aad[..self.aad_len]);
        self.failed |= !self.started;
    }

    /// The record's sequence number.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// Plaintext bytes the record carries (before TLS 1.3 content type and padding are told apart).
    pub fn plaintext_len(&self) -> usize {
        self.body_len - self.explicit - TAG_LEN
    }

    /// Bytes of state held for the record (the per-flow bound counts them).
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<StreamOpener>() + CONTEXT_BYTES
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
                if !self.started || !self.ctx.decrypt_append(&data[..take], out) {
                    // Fails closed at `finish`; the zeros keep the plaintext's length.
                    self.failed = true;
                    out.resize(out.len() + take, 0);
                }
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
        self.finish_keep().0
    }

    /// [`StreamOpener::finish`], giving the context back for the key's next record.
    pub(crate) fn finish_keep(mut self) -> (Result<(), CryptoError>, Ctx) {
        let ok = self.at == self.body_len && self.started && !self.failed && self.ctx.finish(&self.tag);
        (if ok { Ok(()) } else { Err(CryptoError::BadRecordMac) }, self.ctx)
    }
}

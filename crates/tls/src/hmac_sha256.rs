//! HMAC-SHA256 (RFC 2104) on aws-lc's plain SHA-256 contexts: the one place in this crate that
//! calls C directly.
//!
//! aws-lc-rs's `hmac::Key` keeps a whole `HMAC_CTX` (sized for SHA-512's state, three times over)
//! and every tag copies it, initialises another and finishes through aws-lc's generic HMAC code:
//! for the 30-odd HMACs of a TLS 1.3 key schedule that overhead was about as much CPU as the
//! SHA-256 blocks themselves (a resumed handshake: HMAC 10 % of the gateway's CPU inclusive, the
//! compression function 4.4 %). Here a key is its inner and outer SHA-256 states after the padded
//! key block (112 bytes each), and a tag copies them, hashes the message and the inner digest
//! with aws-lc's SHA-256 (SHA-NI where the CPU has it), and wipes the copies.

#![allow(unsafe_code)]

use aws_lc_sys as sys;
use std::mem::MaybeUninit;

/// SHA-256's block, and HMAC's padded key.
const BLOCK: usize = 64;
/// SHA-256's digest, and the tag.
pub(crate) const TAG_LEN: usize = 32;

/// An HMAC-SHA256 key: the hash states after the key block XOR ipad (inner) and XOR opad
/// (outer). Wiped when dropped.
pub(crate) struct Key {
    inner: sys::SHA256_CTX,
    outer: sys::SHA256_CTX,
}

impl Key {
    pub(crate) fn new(key: &[u8]) -> Key {
        // A key longer than a block is replaced by its digest (RFC 2104, section 2).
        let mut block = [0u8; BLOCK];
        if key.len() > BLOCK {
            let mut ctx = started();
            update(&mut ctx, key);
            block[..TAG_LEN].copy_from_slice(&finish(&mut ctx));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let mut pad = block.map(|b| b ^ 0x36);
        let mut inner = started();
        update(&mut inner, &pad);
        pad = block.map(|b| b ^ 0x5c);
        let mut outer = started();
        update(&mut outer, &pad);
        wipe(&mut block);
        wipe(&mut pad);
        Key { inner, outer }
    }

    /// The tag of `first`, each of `middle` and `last`, in that order.
    pub(crate) fn sign(&self, first: &[u8], middle: &[&[u8]], last: &[u8]) -> [u8; TAG_LEN] {
        let mut ctx = self.inner;
        update(&mut ctx, first);
        for m in middle {
            update(&mut ctx, m);
        }
        update(&mut ctx, last);
        let mut digest = finish(&mut ctx);
        ctx = self.outer;
        update(&mut ctx, &digest);
        let tag = finish(&mut ctx);
        wipe(&mut digest);
        tag
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        wipe(&mut self.inner);
        wipe(&mut self.outer);
    }
}

/// A fresh SHA-256 context.
fn started() -> sys::SHA256_CTX {
    let mut ctx = MaybeUninit::<sys::SHA256_CTX>::uninit();
    // SAFETY: `SHA256_Init` writes every field of the context it is given (and always returns 1).
    unsafe {
        sys::SHA256_Init(ctx.as_mut_ptr());
        ctx.assume_init()
    }
}

fn update(ctx: &mut sys::SHA256_CTX, data: &[u8]) {
    // SAFETY: `ctx` is an initialised context and `data` is valid for `data.len()` bytes; aws-lc's
    // `SHA256_Update` always returns 1.
    unsafe { sys::SHA256_Update(ctx, data.as_ptr().cast(), data.len()) };
}

/// The digest; `ctx` is wiped (its state would hash on from this message).
fn finish(ctx: &mut sys::SHA256_CTX) -> [u8; TAG_LEN] {
    let mut out = [0u8; TAG_LEN];
    // SAFETY: `out` has room for SHA-256's digest and `ctx` is an initialised context; aws-lc's
    // `SHA256_Final` always returns 1.
    unsafe { sys::SHA256_Final(out.as_mut_ptr(), ctx) };
    wipe(ctx);
    out
}

/// Overwrites `value`'s bytes with zeros in a way the compiler keeps.
fn wipe<T: Copy>(value: &mut T) {
    // SAFETY: `value` is a live, exclusively borrowed `Copy` value (no destructor, no pointers
    // owned) and exactly `size_of::<T>()` bytes are written.
    unsafe { sys::OPENSSL_cleanse((value as *mut T).cast(), std::mem::size_of::<T>()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231's HMAC-SHA256 test cases 1, 2, 6 (a key longer than a block) and 7.
    #[test]
    fn rfc_4231() {
        let long_key = [0xaau8; 131];
        let cases: [(&[u8], &[u8], &str); 4] = [
            (&[0x0b; 20], b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                &long_key,
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                &long_key,
                b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (key, data, tag) in cases {
            assert_eq!(hex(&Key::new(key).sign(data, &[], &[])), tag);
        }
    }

    /// Against aws-lc-rs's HMAC for keys and messages of every length around the block size,
    /// the message split three ways.
    #[test]
    fn matches_aws_lc_rs() {
        let bytes: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for key_len in [0, 1, 31, 32, 33, 63, 64, 65, 128, 200] {
            let key = Key::new(&bytes[..key_len]);
            let theirs = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &bytes[..key_len]);
            for len in [0, 1, 32, 55, 56, 63, 64, 65, 119, 120, 128, 250] {
                let data = &bytes[key_len % 7..key_len % 7 + len];
                let (a, rest) = data.split_at(len / 3);
                let (b, c) = rest.split_at(rest.len() / 2);
                let want = aws_lc_rs::hmac::sign(&theirs, data);
                assert_eq!(&key.sign(a, &[b], c)[..], want.as_ref(), "key {key_len}, data {len}");
                assert_eq!(&key.sign(data, &[], &[])[..], want.as_ref());
            }
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}

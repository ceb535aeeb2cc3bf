//! TLS 1.3 suites whose key schedule runs on HMAC keys prepared once.
//!
//! rustls's aws-lc-rs suites do HKDF with `aws_lc_rs::hkdf`, whose extracted key is kept as
//! (salt, secret): every expand from it runs HKDF-Extract again and sets the HMAC key up again.
//! A TLS 1.3 handshake expands each of its three extracted secrets two to four times, so about a
//! third of the key schedule's SHA-256 blocks were repeats (profile of a full handshake: HKDF
//! 6.5 % of the gateway's CPU, 8.5 % of a resumed one). Here the extract runs once and each
//! expander holds an HMAC key that keeps the inner and outer padded states, so an expand costs
//! the message and the two final blocks. rustls's own `HkdfUsingHmac` does the HKDF arithmetic;
//! this module only supplies its HMAC: SHA-256's on aws-lc's bare SHA-256 contexts
//! ([`crate::hmac_sha256`], without aws-lc-rs's per-tag `HMAC_CTX` copy), SHA-384's from
//! aws-lc-rs.
//!
//! The suites are otherwise the provider's own (AEAD, QUIC, hash); suite identity on the wire and
//! for resumption is unchanged.

use std::sync::LazyLock;

use aws_lc_rs::hmac as lc;
use rustls::crypto::hmac::{Hmac, Key, Tag};
use rustls::crypto::tls13::HkdfUsingHmac;
use rustls::{SupportedCipherSuite, Tls13CipherSuite};

/// HMAC-SHA256 on prepared SHA-256 states.
struct Sha256Hmac;

impl Hmac for Sha256Hmac {
    fn with_key(&self, key: &[u8]) -> Box<dyn Key> {
        Box::new(crate::hmac_sha256::Key::new(key))
    }

    fn hash_output_len(&self) -> usize {
        crate::hmac_sha256::TAG_LEN
    }
}

impl Key for crate::hmac_sha256::Key {
    fn sign_concat(&self, first: &[u8], middle: &[&[u8]], last: &[u8]) -> Tag {
        Tag::new(&self.sign(first, middle, last))
    }

    fn tag_len(&self) -> usize {
        crate::hmac_sha256::TAG_LEN
    }
}

/// HMAC from aws-lc-rs for one hash.
struct LcHmac(lc::Algorithm);

struct LcHmacKey(lc::Key);

impl Hmac for LcHmac {
    fn with_key(&self, key: &[u8]) -> Box<dyn Key> {
        Box::new(LcHmacKey(lc::Key::new(self.0, key)))
    }

    fn hash_output_len(&self) -> usize {
        self.0.digest_algorithm().output_len()
    }
}

impl Key for LcHmacKey {
    fn sign_concat(&self, first: &[u8], middle: &[&[u8]], last: &[u8]) -> Tag {
        let mut ctx = lc::Context::with_key(&self.0);
        ctx.update(first);
        for m in middle {
            ctx.update(m);
        }
        ctx.update(last);
        Tag::new(ctx.sign().as_ref())
    }

    fn tag_len(&self) -> usize {
        self.0.algorithm().digest_algorithm().output_len()
    }
}

static HMAC_SHA256: Sha256Hmac = Sha256Hmac;
static HMAC_SHA384: LcHmac = LcHmac(lc::HMAC_SHA384);
static HKDF_SHA256: HkdfUsingHmac<'static> = HkdfUsingHmac(&HMAC_SHA256);
static HKDF_SHA384: HkdfUsingHmac<'static> = HkdfUsingHmac(&HMAC_SHA384);

/// `suite` (one of the provider's TLS 1.3 suites) with the HKDF above; TLS 1.2 suites unchanged.
pub(crate) fn with_prepared_hkdf(suite: SupportedCipherSuite) -> SupportedCipherSuite {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    static AES128: LazyLock<Tls13CipherSuite> = LazyLock::new(|| rebuild(cs::TLS13_AES_128_GCM_SHA256));
    static AES256: LazyLock<Tls13CipherSuite> = LazyLock::new(|| rebuild(cs::TLS13_AES_256_GCM_SHA384));
    static CHACHA: LazyLock<Tls13CipherSuite> = LazyLock::new(|| rebuild(cs::TLS13_CHACHA20_POLY1305_SHA256));
    match suite.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => SupportedCipherSuite::Tls13(&AES128),
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => SupportedCipherSuite::Tls13(&AES256),
        rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => SupportedCipherSuite::Tls13(&CHACHA),
        _ => suite,
    }
}

fn rebuild(suite: SupportedCipherSuite) -> Tls13CipherSuite {
    let SupportedCipherSuite::Tls13(s) = suite else { unreachable!("a TLS 1.3 suite constant") };
    let hkdf_provider: &'static HkdfUsingHmac<'static> = match s.common.hash_provider.algorithm() {
        rustls::crypto::hash::HashAlgorithm::SHA384 => &HKDF_SHA384,
        _ => &HKDF_SHA256,
    };
    let common = rustls::CipherSuiteCommon {
        suite: s.common.suite,
        hash_provider: s.common.hash_provider,
        confidentiality_limit: s.common.confidentiality_limit,
    };
    Tls13CipherSuite { common, hkdf_provider, aead_alg: s.aead_alg, quic: s.quic }
}

#[cfg(test)]
mod tests {
    use rustls::crypto::tls13::Hkdf;

    use super::*;

    /// RFC 5869 test case 1 (SHA-256), extract and expand, and both hashes against the
    /// provider's HKDF.
    #[test]
    fn matches_rfc_5869_and_the_provider() {
        let ikm = [0x0bu8; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let okm_hex = "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865";
        let mut okm = [0u8; 42];
        HKDF_SHA256.extract_from_secret(Some(&salt), &ikm).expand_slice(&[&info], &mut okm).unwrap();
        assert_eq!(hex(&okm), okm_hex);

        use rustls::crypto::aws_lc_rs::cipher_suite as cs;
        for (ours_hkdf, suite) in
            [(&HKDF_SHA384, cs::TLS13_AES_256_GCM_SHA384), (&HKDF_SHA256, cs::TLS13_AES_128_GCM_SHA256)]
        {
            let SupportedCipherSuite::Tls13(s) = suite else { unreachable!() };
            let provider = s.hkdf_provider;
            for secret in [&[][..], &[7u8; 48][..], &[9u8; 100][..]] {
                let ours = ours_hkdf.extract_from_secret(Some(&salt), secret).expand_block(&[b"x", b"yz"]);
                let theirs = provider.extract_from_secret(Some(&salt), secret).expand_block(&[b"x", b"yz"]);
                assert_eq!(ours.as_ref(), theirs.as_ref());
                let ours = ours_hkdf.hmac_sign(&ours, b"finished");
                let theirs = provider.hmac_sign(&theirs, b"finished");
                assert_eq!(ours.as_ref(), theirs.as_ref());
            }
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}

//! Whether an OCSP response is signed by the certificate's issuer, or by a responder the issuer
//! delegated to (RFC 6960 §4.2.2.2: a certificate in the response, issued by the issuer, with the
//! id-kp-OCSPSigning extended key usage). A response anyone could have made is never stapled.

use aws_lc_rs::signature::{self, VerificationAlgorithm};
use der::asn1::ObjectIdentifier as Oid;
use der::Encode;
use x509_cert::Certificate;
use x509_ocsp::BasicOcspResponse;

const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
const P256: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
const P384: Oid = Oid::new_unwrap("1.3.132.0.34");
const P521: Oid = Oid::new_unwrap("1.3.132.0.35");
const ECDSA_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_SHA512: Oid = Oid::new_unwrap("1.2.840.10045.4.3.4");
const RSA_SHA1: Oid = Oid::new_unwrap("1.2.840.113549.1.1.5");
const RSA_SHA256: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
const RSA_SHA384: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
const RSA_SHA512: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
const ED25519: Oid = Oid::new_unwrap("1.3.101.112");
const EXTENDED_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37");
const OCSP_SIGNING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.9");

/// Checks the response's signature against `issuer`'s key, or a delegated responder's.
pub fn verify(basic: &BasicOcspResponse, issuer: &Certificate) -> Result<(), String> {
    let tbs = basic.tbs_response_data.to_der().map_err(|e| format!("re-encoding the response: {e}"))?;
    let alg = &basic.signature_algorithm.oid;
    let sig = basic.signature.raw_bytes();
    if signed_by(issuer, alg, &tbs, sig).is_ok() {
        return Ok(());
    }
    for responder in basic.certs.iter().flatten() {
        if delegated(responder, issuer).is_ok() && signed_by(responder, alg, &tbs, sig).is_ok() {
            return Ok(());
        }
    }
    Err("response is signed neither by the certificate's issuer nor by a responder it delegated to".into())
}

/// `cert` was issued by `issuer` and may sign OCSP responses for it.
fn delegated(cert: &Certificate, issuer: &Certificate) -> Result<(), String> {
    if cert.tbs_certificate.issuer != issuer.tbs_certificate.subject {
        return Err("responder certificate has another issuer".into());
    }
    let tbs = cert.tbs_certificate.to_der().map_err(|e| e.to_string())?;
    signed_by(issuer, &cert.signature_algorithm.oid, &tbs, cert.signature.raw_bytes())?;
    let ocsp_signing = cert.tbs_certificate.extensions.iter().flatten().any(|ext| {
        ext.extn_id == EXTENDED_KEY_USAGE && {
            use der::Decode;
            x509_cert::ext::pkix::ExtendedKeyUsage::from_der(ext.extn_value.as_bytes())
                .is_ok_and(|eku| eku.0.contains(&OCSP_SIGNING))
        }
    });
    if !ocsp_signing {
        return Err("responder certificate lacks id-kp-OCSPSigning".into());
    }
    Ok(())
}

/// `sig` over `message` verifies with `signer`'s public key under algorithm `alg`.
fn signed_by(signer: &Certificate, alg: &Oid, message: &[u8], sig: &[u8]) -> Result<(), String> {
    let spki = &signer.tbs_certificate.subject_public_key_info;
    let key = spki.subject_public_key.raw_bytes();
    let curve = (spki.algorithm.oid == EC_PUBLIC_KEY)
        .then(|| spki.algorithm.parameters.as_ref().and_then(|p| p.decode_as::<Oid>().ok()))
        .flatten();
    let algorithm: &dyn VerificationAlgorithm = match (*alg, curve) {
        (ECDSA_SHA256, Some(P256)) => &signature::ECDSA_P256_SHA256_ASN1,
        (ECDSA_SHA256, Some(P384)) => &signature::ECDSA_P384_SHA256_ASN1,
        (ECDSA_SHA384, Some(P256)) => &signature::ECDSA_P256_SHA384_ASN1,
        (ECDSA_SHA384, Some(P384)) => &signature::ECDSA_P384_SHA384_ASN1,
        (ECDSA_SHA512, Some(P521)) => &signature::ECDSA_P521_SHA512_ASN1,
        (RSA_SHA1, None) => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        (RSA_SHA256, None) => &signature::RSA_PKCS1_2048_8192_SHA256,
        (RSA_SHA384, None) => &signature::RSA_PKCS1_2048_8192_SHA384,
        (RSA_SHA512, None) => &signature::RSA_PKCS1_2048_8192_SHA512,
        (ED25519, None) => &signature::ED25519,
        _ => return Err(format!("signature algorithm {alg} with this key is not supported")),
    };
    signature::UnparsedPublicKey::new(algorithm, key)
        .verify(message, sig)
        .map_err(|_| "signature does not verify".to_string())
}

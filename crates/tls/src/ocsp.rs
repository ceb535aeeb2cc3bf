//! OCSP (RFC 6960) staples: which response belongs to a certificate, whether it may still be
//! stapled, and the request that asks a responder for one. Responses are parsed with RustCrypto's
//! `x509-ocsp`; only one signed by the certificate's issuer (or its delegated responder, see
//! [`crate::ocsp_signature`]) and naming the certificate is accepted, so a response forged on
//! the way from a plain-HTTP responder is never stapled.

use std::time::SystemTime;

use der::{Decode, Encode};
use rustls::pki_types::CertificateDer;
use x509_cert::Certificate;
use x509_ocsp::{BasicOcspResponse, CertId, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus};

/// id-pkix-ocsp-basic (RFC 6960 §4.2.1).
const BASIC: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");

/// What a response says about the certificate it was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Good,
    Revoked,
    Unknown,
}

/// A response that names the certificate: its status and validity window.
#[derive(Debug, Clone)]
pub struct Checked {
    pub status: Status,
    pub this_update: SystemTime,
    /// After this it must not be stapled; `None` (the responder gives no `nextUpdate`) is treated
    /// as valid for one hour after `thisUpdate`.
    pub next_update: SystemTime,
}

impl Checked {
    /// Whether it may still be stapled at `now`.
    pub fn fresh(&self, now: SystemTime) -> bool {
        now < self.next_update
    }
}

fn parse_cert(der: &CertificateDer<'_>, what: &str) -> Result<Certificate, String> {
    Certificate::from_der(der).map_err(|e| format!("{what} certificate does not parse: {e}"))
}

/// The issuer of the leaf in a served chain (leaf first); OCSP identifies a certificate by its
/// issuer's name and key, so a chain without it cannot be matched.
fn leaf_and_issuer(chain: &[CertificateDer<'_>]) -> Result<(Certificate, Certificate), String> {
    let leaf = chain.first().ok_or("empty certificate chain")?;
    let issuer = chain.get(1).ok_or(
        "the chain holds no issuer certificate after the leaf, and OCSP names a certificate by its issuer",
    )?;
    Ok((parse_cert(leaf, "leaf")?, parse_cert(issuer, "issuer")?))
}

/// The CertID of the leaf with `hash` (SHA-1 as most responders expect, or SHA-256).
fn cert_id(
    leaf: &Certificate,
    issuer: &Certificate,
    hash: &der::asn1::ObjectIdentifier,
) -> Result<CertId, String> {
    use const_oid::AssociatedOid;
    let id = if *hash == sha2::Sha256::OID {
        CertId::from_cert::<sha2::Sha256>(issuer, leaf)
    } else if *hash == sha1::Sha1::OID {
        CertId::from_cert::<sha1::Sha1>(issuer, leaf)
    } else {
        return Err(format!("response hashes its CertID with {hash}, neither SHA-1 nor SHA-256"));
    };
    id.map_err(|e| format!("cannot compute the certificate's OCSP CertID: {e}"))
}

/// Parses a DER OCSP response, checks its signature and finds the entry for the chain's leaf. An
/// unsuccessful response, one signed by another key, one naming only other certificates, or one
/// not yet valid is an error.
pub fn check(response: &[u8], chain: &[CertificateDer<'_>], now: SystemTime) -> Result<Checked, String> {
    let (leaf, issuer) = leaf_and_issuer(chain)?;
    let outer = OcspResponse::from_der(response).map_err(|e| format!("not a DER OCSP response: {e}"))?;
    if outer.response_status != OcspResponseStatus::Successful {
        return Err(format!("responder answered {:?}, not successful", outer.response_status));
    }
    let bytes = outer.response_bytes.ok_or("successful response without a body")?;
    if bytes.response_type != BASIC {
        return Err(format!("response type {} is not id-pkix-ocsp-basic", bytes.response_type));
    }
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(|e| format!("basic OCSP response does not parse: {e}"))?;
    crate::ocsp_signature::verify(&basic, &issuer)?;
    for single in &basic.tbs_response_data.responses {
        let wanted = cert_id(&leaf, &issuer, &single.cert_id.hash_algorithm.oid)?;
        if wanted.serial_number != single.cert_id.serial_number
            || wanted.issuer_name_hash != single.cert_id.issuer_name_hash
            || wanted.issuer_key_hash != single.cert_id.issuer_key_hash
        {
            continue;
        }
        let this_update = single.this_update.0.to_system_time();
        let next_update = match &single.next_update {
            Some(t) => t.0.to_system_time(),
            None => this_update + std::time::Duration::from_secs(3600),
        };
        // A little clock skew between responder and gateway is normal.
        if this_update > now + std::time::Duration::from_secs(300) {
            return Err("response's thisUpdate is in the future".into());
        }
        let status = match single.cert_status {
            CertStatus::Good(_) => Status::Good,
            CertStatus::Revoked(_) => Status::Revoked,
            CertStatus::Unknown(_) => Status::Unknown,
        };
        return Ok(Checked { status, this_update, next_update });
    }
    Err("response is for another certificate (no entry with this certificate's serial and issuer)".into())
}

/// A DER OCSP request for the chain's leaf (SHA-1 CertID, no nonce: cacheable, as RFC 5019 wants).
pub fn request(chain: &[CertificateDer<'_>]) -> Result<Vec<u8>, String> {
    let (leaf, issuer) = leaf_and_issuer(chain)?;
    let id = cert_id(&leaf, &issuer, &{
        use const_oid::AssociatedOid;
        sha1::Sha1::OID
    })?;
    let req = OcspRequest {
        tbs_request: x509_ocsp::TbsRequest {
            version: x509_ocsp::Version::V1,
            requestor_name: None,
            request_list: vec![x509_ocsp::Request { req_cert: id, single_request_extensions: None }],
            request_extensions: None,
        },
        optional_signature: None,
    };
    req.to_der().map_err(|e| format!("cannot encode OCSP request: {e}"))
}

/// The leaf's OCSP responder URL (authorityInfoAccess, id-ad-ocsp), if it names an http:// or
/// https:// one.
pub fn responder_url(chain: &[CertificateDer<'_>]) -> Option<String> {
    use x509_parser::prelude::*;
    let (_, parsed) = X509Certificate::from_der(chain.first()?).ok()?;
    for ext in parsed.extensions() {
        if let ParsedExtension::AuthorityInfoAccess(aia) = ext.parsed_extension() {
            for d in &aia.accessdescs {
                if d.access_method == x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_OCSP {
                    if let GeneralName::URI(u) = d.access_location {
                        if u.starts_with("http://") || u.starts_with("https://") {
                            return Some(u.to_string());
                        }
                    }
                }
            }
        }
    }
    None
}

/// Fuzzing: any bytes as a response for a fixed chain never panic.
pub fn fuzz_check(data: &[u8]) {
    use std::sync::OnceLock;
    static CHAIN: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    let chain = CHAIN.get_or_init(|| {
        let ca = crate::pki::TestCa::new("fuzz-ca").expect("test CA");
        let leaf = ca.issue_server(&["fuzz.example"]).expect("leaf");
        use rustls::pki_types::pem::PemObject;
        let mut chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes()).map(|c| c.expect("pem")).collect();
        chain.extend(CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes()).map(|c| c.expect("pem")));
        chain
    });
    let _ = check(data, chain, SystemTime::now());
}

#[cfg(test)]
mod tests {
    #[test]
    fn garbage_and_bodiless_responses_are_errors_not_panics() {
        super::fuzz_check(b"");
        super::fuzz_check(&[0x30, 0x03, 0x0a, 0x01, 0x00]);
        super::fuzz_check(&[0x30, 0x80, 0xff]);
    }
}

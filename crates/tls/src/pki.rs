//! A throwaway certificate authority, for `tlsgate demo` and for tests.
//!
//! ECDSA P-256 throughout; validity from yesterday to a year ahead, so clock skew between the
//! generating and the verifying process never matters.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber,
};

use crate::TlsError;

/// A CA able to issue server and client certificates.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A PEM certificate, its PEM private key (PKCS#8) and its serial number.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub serial: u64,
}

/// What a client certificate should say, and for how long it is valid.
#[derive(Debug, Clone, Default)]
pub struct ClientSpec<'a> {
    pub common_name: &'a str,
    pub dns: &'a [&'a str],
    pub uri: &'a [&'a str],
    pub ip: &'a [std::net::IpAddr],
    /// Already expired (validity ended yesterday) instead of valid for a year.
    pub expired: bool,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

impl TestCa {
    pub fn new(common_name: &str) -> Result<Self, TlsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(TestCa { issuer: Issuer::new(params, key), cert_pem: cert.pem() })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for DNS names and IP addresses (given as strings).
    pub fn issue_server(&self, names: &[&str]) -> Result<Issued, TlsError> {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate with the given subject CN and SANs.
    pub fn issue_client(&self, spec: &ClientSpec<'_>) -> Result<Issued, TlsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(spec.common_name);
        for d in spec.dns {
            params.subject_alt_names.push(SanType::DnsName((*d).try_into()?));
        }
        for u in spec.uri {
            params.subject_alt_names.push(SanType::URI((*u).try_into()?));
        }
        for ip in spec.ip {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, spec.expired)
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Result<Issued, TlsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(names.first().copied().unwrap_or("tlsgate"));
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName((*n).try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.extended_key_usages = vec![usage];
        self.sign(params, false)
    }

    fn sign(&self, mut params: CertificateParams, expired: bool) -> Result<Issued, TlsError> {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params);
        if expired {
            let now = std::time::SystemTime::now();
            params.not_before = (now - std::time::Duration::from_secs(30 * 86_400)).into();
            params.not_after = (now - std::time::Duration::from_secs(86_400)).into();
        }
        let serial = rand_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial.to_be_bytes()));
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), serial })
    }

    /// A PEM CRL listing `revoked` serial numbers, numbered `crl_number` (raise it on each issue).
    pub fn crl(&self, revoked: &[u64], crl_number: u64) -> Result<String, TlsError> {
        let next_update = std::time::SystemTime::now() + std::time::Duration::from_secs(30 * 86_400);
        self.crl_until(revoked, crl_number, next_update)
    }

    /// [`TestCa::crl`] with its next update at `next_update` (in the past: an out-of-date CRL).
    pub fn crl_until(
        &self,
        revoked: &[u64],
        crl_number: u64,
        next_update: std::time::SystemTime,
    ) -> Result<String, TlsError> {
        let now = std::time::SystemTime::now();
        let this_update = (now - std::time::Duration::from_secs(3600))
            .min(next_update - std::time::Duration::from_secs(3600));
        let params = CertificateRevocationListParams {
            this_update: this_update.into(),
            next_update: next_update.into(),
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&s.to_be_bytes()),
                    revocation_time: (now - std::time::Duration::from_secs(60)).into(),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

impl Issued {
    /// Writes `<stem>.pem` and `<stem>.key` (mode 0600) into `dir`; returns both paths.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), TlsError> {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        write_file(&cert, &self.cert_pem, 0o644)?;
        write_file(&key, &self.key_pem, 0o600)?;
        Ok((cert, key))
    }
}

/// Writes a file with the given mode, set at creation so a key is never briefly world-readable.
pub fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| TlsError::Write { path: path.to_path_buf(), source };
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "tlsgate throwaway PKI");
    dn
}

fn validity(params: &mut CertificateParams) {
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(86_400)).into();
    params.not_after = (now + std::time::Duration::from_secs(365 * 86_400)).into();
}

fn rand_serial() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // Unique per certificate within a test run; not a secret. (0x40.. keeps the top bit clear
    // and the encoding a fixed 8 bytes.)
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    (h.finish() >> 2) | 0x4000_0000_0000_0000
}

/// A client config and a server config sharing a throwaway CA, in memory: the server's
/// certificate names `name`, the client trusts the CA and offers TLS 1.2 and 1.3 with every suite
/// of the provider. For simulations, which have no files.
pub fn throwaway_pair(
    name: &str,
) -> Result<(std::sync::Arc<rustls::ClientConfig>, rustls::ServerConfig), TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |e: rustls::pki_types::pem::Error| TlsError::Config(format!("throwaway PKI: {e}"));
    let ca = TestCa::new("tlsgate throwaway CA")?;
    let issued = ca.issue_server(&[name])?;
    let chain = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).map_err(bad)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes()) {
        roots.add(c.map_err(bad)?).map_err(|e| TlsError::Config(e.to_string()))?;
    }
    let client = rustls::ClientConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server = rustls::ServerConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok((std::sync::Arc::new(client), server))
}

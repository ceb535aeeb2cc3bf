//! Reading a peer's identity out of its certificate.

use rustls::pki_types::CertificateDer;
use tlsgate_core::identity::PeerIdentity;

/// Subject, CN and SANs of a DER certificate; `None` when it does not parse (rustls has verified
/// the chain before this is asked, so that means a certificate webpki accepts and x509-parser
/// does not — refused rather than guessed at).
pub fn peer_identity(cert: &CertificateDer<'_>) -> Option<PeerIdentity> {
    use x509_parser::prelude::*;
    let (_, parsed) = X509Certificate::from_der(cert).ok()?;
    let subject = parsed.subject();
    let common_name = subject.iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned);
    let mut id = PeerIdentity { subject: subject.to_string(), common_name, ..Default::default() };
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => id.dns.push(n.to_string()),
                GeneralName::URI(u) => id.uri.push(u.to_string()),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*bytes) {
                        id.ip.push(a.into());
                    } else if let Ok(a) = <[u8; 16]>::try_from(*bytes) {
                        id.ip.push(a.into());
                    }
                }
                _ => {}
            }
        }
    }
    Some(id)
}

//! Client certificate verification for mutual TLS: webpki's chain and CRL checks, then the
//! listener's allow-list.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use tlsgate_config::{ClientAuthConfig, ClientAuthMode};
use tlsgate_core::identity::AllowList;
use tlsgate_core::names::NamePattern;
use tlsgate_core::side::Side;

use crate::identity::peer_identity;
use crate::keys::load_roots;
use crate::TlsError;

/// The verifier for a listener's `client_auth`, or `None` when client certificates are not asked.
pub fn client_verifier(config: &ClientAuthConfig) -> Result<Option<Arc<dyn ClientCertVerifier>>, TlsError> {
    if config.mode == ClientAuthMode::None {
        return Ok(None);
    }
    let ca_path =
        config.ca.as_ref().ok_or_else(|| TlsError::Config("client_auth needs a CA bundle".into()))?;
    let roots = load_roots(ca_path)?;
    let crls = crate::revocation::read_crls(&config.crl)?.into_iter().map(|(_, crl)| crl).collect::<Vec<_>>();
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crate::provider()).with_crls(crls);
    if config.crl_strict {
        // A CRL past its next update fails every client's verification.
        builder = builder.enforce_revocation_expiration();
    }
    if config.mode == ClientAuthMode::Optional {
        builder = builder.allow_unauthenticated();
    }
    let inner = builder.build().map_err(|e| TlsError::Config(format!("client_auth: {e}")))?;
    let allow = AllowList {
        common_names: config.allow_cn.clone(),
        dns: config
            .allow_dns
            .iter()
            .map(|n| NamePattern::parse(n).map_err(|e| TlsError::Config(e.to_string())))
            .collect::<Result<_, _>>()?,
        uri: config.allow_uri.clone(),
        ip: config.allow_ip.clone(),
    };
    if allow.is_empty() {
        return Ok(Some(inner));
    }
    Ok(Some(Arc::new(AllowListVerifier { inner, allow })))
}

/// Delegates every check to webpki, then applies the allow-list to the verified leaf.
#[derive(Debug)]
struct AllowListVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allow: AllowList,
}

impl ClientCertVerifier for AllowListVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let refuse = |why: String| {
            // Runs inside the connection's span, so this line carries the client's address.
            tracing::warn!(side = %Side::Client, reason = %why, "client certificate refused by allow-list");
            Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
        };
        let id = peer_identity(end_entity).ok_or_else(|| refuse("certificate does not parse".into()))?;
        self.allow.permits(&id).map_err(refuse)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

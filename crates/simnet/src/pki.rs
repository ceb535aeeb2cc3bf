//! A throwaway CA and server certificate for simulated flows, kept in memory.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tlsgate_tls::pki::TestCa;

/// The name the simulated server's certificate carries and the clients ask for.
pub const SERVER_NAME: &str = "server.sim";

pub struct SimPki {
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<rustls::RootCertStore>,
}

impl SimPki {
    pub fn new() -> SimPki {
        let ca = TestCa::new("simnet CA").expect("CA");
        let issued = ca.issue_server(&[SERVER_NAME]).expect("server certificate");
        let chain = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("own PEM");
        let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("own key");
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes()) {
            roots.add(c.expect("own CA")).expect("CA parses");
        }
        SimPki { chain, key, roots: Arc::new(roots) }
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    /// A client trusting the CA, limited to `versions` and, when given, one cipher suite.
    pub fn client(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        suite: Option<rustls::SupportedCipherSuite>,
    ) -> Arc<rustls::ClientConfig> {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        if let Some(s) = suite {
            provider.cipher_suites = vec![s];
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .expect("versions fit the suites")
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        Arc::new(config)
    }

    /// A client offering TLS 1.2 and 1.3 with every suite of the provider.
    pub fn default_client(&self) -> Arc<rustls::ClientConfig> {
        self.client(rustls::DEFAULT_VERSIONS, None)
    }

    /// The server side's config: TLS 1.2 and 1.3, the simulated certificate.
    pub fn server(&self) -> rustls::ServerConfig {
        rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()
            .expect("defaults")
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .expect("own certificate")
    }
}

impl Default for SimPki {
    fn default() -> Self {
        Self::new()
    }
}

//! The inline engine's server configs: one per `[[inline.service]]`, TLS 1.2 and 1.3.

use std::sync::Arc;

use rustls::ServerConfig;
use tlsgate_config::InlineService;

use crate::keys::load_cert_and_key;
use crate::tunnel::FixedServerCert;
use crate::TlsError;

/// The service's certificate (one, whatever the SNI), no client certificates, HTTP/1.1 by ALPN.
/// The engine runs the handshake on the client's packets and takes the keys over from rustls,
/// so secret extraction is on; the suites are terminate's (the same record layer seals and opens
/// for both).
pub fn inline_server_config(
    service: &InlineService,
    allow_insecure_key_permissions: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let loaded = load_cert_and_key(&service.cert, &service.key, allow_insecure_key_permissions)?;
    let mut config = ServerConfig::builder_with_provider(crate::server::server_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(FixedServerCert(loaded.key)));
    config.ignore_client_order = true;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_config_hands_its_keys_over_and_names_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::pki::TestCa::new("inline test CA").unwrap();
        ca.issue_server(&["localhost"]).unwrap().write(dir.path(), "svc").unwrap();
        let service = InlineService {
            listen: Some("10.0.0.2:443".parse().unwrap()),
            plain_port: Some(80),
            vip: None,
            pool: Vec::new(),
            cert: dir.path().join("svc.pem"),
            key: dir.path().join("svc.key"),
            mode: None,
        };
        let config = inline_server_config(&service, false).unwrap();
        assert!(config.enable_secret_extraction);
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let missing = InlineService { key: dir.path().join("nope.key"), ..service };
        assert!(inline_server_config(&missing, false).unwrap_err().to_string().contains("nope.key"));
    }
}

//! A real ClientHello's bytes, for tests that send a handshake in unusual ways.

use std::sync::Arc;

/// The first flight of a rustls client (TLS 1.3 and 1.2 offered) for `server_name`.
pub fn client_hello(server_name: &str) -> Vec<u8> {
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
    let name = server_name.to_string().try_into().unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

//! A blocking rustls client, for tests that hold TLS connections open or time their handshakes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects and runs the handshake, trusting the CA in `ca_pem`; `Err` when it does not finish
/// within `timeout` (for example while the server does not accept).
pub fn handshake(
    addr: SocketAddr,
    ca_pem: &Path,
    server_name: &str,
    timeout: Duration,
) -> std::io::Result<TlsStream> {
    handshake_as(addr, ca_pem, server_name, None, timeout)
}

/// As [`handshake`], presenting the client certificate `(chain, key)` when given.
pub fn handshake_as(
    addr: SocketAddr,
    ca_pem: &Path,
    server_name: &str,
    client: Option<(&Path, &Path)>,
    timeout: Duration,
) -> std::io::Result<TlsStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let config = match client {
        Some((chain, key)) => {
            let chain = CertificateDer::pem_file_iter(chain).unwrap().map(|c| c.unwrap()).collect();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
            config.with_client_auth_cert(chain, key).unwrap()
        }
        None => config.with_no_client_auth(),
    };
    let conn =
        rustls::ClientConnection::new(Arc::new(config), server_name.to_string().try_into().unwrap()).unwrap();
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(timeout))?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// Sends an HTTP/1.1 GET / on a held connection and reads the answer's first bytes.
pub fn get(stream: &mut TlsStream) -> std::io::Result<String> {
    stream.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

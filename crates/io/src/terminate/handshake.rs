//! The TLS handshake of one client connection.
//!
//! The ClientHello is read first (rustls's `Acceptor`), so that a name with no certificate or no
//! route is refused with an `unrecognized_name` alert before any key exchange is spent on it.

use std::sync::Arc;

use rustls::server::Acceptor;
use rustls::AlertDescription;
use tlsgate_core::identity::PeerIdentity;
use tlsgate_core::proxy_protocol::tls::TlsInfo;
use tlsgate_tls::identity::peer_identity;
use tlsgate_tls::server::ListenerTls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::StartHandshake;

use super::routes::{Route, Routes};
use crate::ProxyError;

/// Why a handshake did not finish.
#[derive(Debug)]
pub enum HandshakeFailure {
    /// The SNI has no certificate or no route: refused by the configuration.
    Refused(ProxyError),
    /// Anything else: garbage, a TLS error, a connection closed early.
    Failed(ProxyError),
}

impl HandshakeFailure {
    pub fn error(&self) -> &ProxyError {
        match self {
            HandshakeFailure::Refused(e) | HandshakeFailure::Failed(e) => e,
        }
    }
}

/// A finished handshake and the route its SNI chose.
#[derive(Debug)]
pub struct Established {
    /// Boxed: rustls's connection state is large, and moved by value it would be laid out more
    /// than once in the connection task's future, which lives as long as the connection.
    pub stream: Box<TlsStream<TcpStream>>,
    pub sni: Option<String>,
    pub route: Arc<Route>,
    /// The client certificate's identity, when the client presented one (mutual TLS).
    pub peer: Option<PeerIdentity>,
}

impl Established {
    /// What a PROXY v2 header tells the backend about this session.
    pub fn tls_info(&self) -> TlsInfo {
        let conn = self.stream.get_ref().1;
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            other => other.map(|v| format!("{v:?}")).unwrap_or_default(),
        };
        // IANA names: rustls spells the TLS 1.3 ones `TLS13_…`.
        let cipher = conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()).replacen("TLS13_", "TLS_", 1))
            .unwrap_or_default();
        TlsInfo {
            sni: self.sni.clone(),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            version,
            cipher,
            client_cert: self.peer.clone(),
        }
    }

    /// `TLSv1_3`, `TLS13_AES_128_GCM_SHA256`, ALPN as text: for the connection's log line.
    pub fn describe(&self) -> (String, String, String) {
        let conn = self.stream.get_ref().1;
        let version = conn.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
        let suite = conn.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default();
        let alpn = conn.alpn_protocol().map(|a| String::from_utf8_lossy(a).into_owned()).unwrap_or_default();
        (version, suite, alpn)
    }
}

/// Runs the handshake on `tcp`; `initial` holds bytes already read from it (after a PROXY
/// header), which come first.
pub async fn accept(
    mut tcp: TcpStream,
    initial: Vec<u8>,
    tls: &ListenerTls,
    routes: &Routes,
) -> Result<Established, HandshakeFailure> {
    let accepted = read_client_hello(&mut tcp, initial).await.map_err(HandshakeFailure::Failed)?;
    let hello = accepted.client_hello();
    let sni = hello.server_name().map(str::to_owned);
    if tls.certs.lookup(sni.as_deref()).is_none() {
        send_alert(&mut tcp, AlertDescription::UnrecognisedName).await;
        return Err(HandshakeFailure::Refused(ProxyError::client(format!(
            "refused: no certificate for SNI {sni:?} and no default certificate"
        ))));
    }
    let Some(route) = routes.lookup(sni.as_deref()).cloned() else {
        send_alert(&mut tcp, AlertDescription::UnrecognisedName).await;
        return Err(HandshakeFailure::Refused(ProxyError::client(format!(
            "refused: SNI {sni:?} matches no route and there is no default route"
        ))));
    };
    let stream =
        StartHandshake::from_parts(accepted, tcp).into_stream(tls.config.clone()).await.map_err(|e| {
            HandshakeFailure::Failed(ProxyError::client(format!("TLS handshake failed (sni {sni:?}): {e}")))
        })?;
    let stream = Box::new(stream);
    let peer = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(peer_identity);
    Ok(Established { stream, sni, route, peer })
}

/// Feeds socket bytes to rustls until a whole ClientHello has arrived. Anything that is not one
/// is answered with the alert rustls chose and an error naming the client.
async fn read_client_hello(
    tcp: &mut TcpStream,
    initial: Vec<u8>,
) -> Result<rustls::server::Accepted, ProxyError> {
    let mut acceptor = Acceptor::default();
    let mut chunk = [0u8; 4096];
    // Bytes read but not yet given to rustls: first those read past a PROXY header.
    let mut pending = initial;
    loop {
        if pending.is_empty() {
            let n = tcp
                .read(&mut chunk)
                .await
                .map_err(|e| ProxyError::client(format!("read before ClientHello: {e}")))?;
            if n == 0 {
                return Err(ProxyError::client("closed the connection before a complete ClientHello"));
            }
            pending.extend_from_slice(&chunk[..n]);
        }
        let mut input = pending.as_slice();
        while !input.is_empty() {
            let taken = acceptor
                .read_tls(&mut input)
                .map_err(|e| ProxyError::client(format!("ClientHello too large or unreadable: {e}")))?;
            if taken == 0 {
                return Err(ProxyError::client("ClientHello larger than rustls accepts"));
            }
        }
        pending.clear();
        match acceptor.accept() {
            Ok(Some(accepted)) => return Ok(accepted),
            Ok(None) => continue,
            Err((err, mut alert)) => {
                let mut out = Vec::new();
                let _ = alert.write_all(&mut out);
                let _ = tcp.write_all(&out).await;
                return Err(ProxyError::client(format!("not a valid TLS ClientHello: {err}")));
            }
        }
    }
}

/// A fatal alert in a plaintext record: what a server sends before ServerHello.
async fn send_alert(tcp: &mut TcpStream, description: AlertDescription) {
    let record = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, u8::from(description)];
    let _ = tcp.write_all(&record).await;
    let _ = tcp.shutdown().await;
}

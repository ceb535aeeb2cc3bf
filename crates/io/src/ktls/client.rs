//! A TLS client connection whose record layer may go to the kernel (originate's upstreams, the
//! tunnel portal's link to its gate): tlsgate's client handshake driver over the socket, then
//! the same offload decision as a terminated connection ([`super::establish`]).

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tlsgate_config::KtlsMode;
use tlsgate_tls::client_handshake::ClientHandshake;
use tlsgate_tls::describe::{self, Peer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{establish, ClientStream};
use crate::terminate::handshake::drive;

/// What the handshake settled, for log lines and the status page.
#[derive(Debug)]
pub struct Facts {
    pub resumed: bool,
    pub version: String,
    pub suite: String,
}

/// The handshake (rustls's unbuffered client connection, fed whole records, so nothing the
/// server sends after it is lost), then the record layer: the kernel's when `mode` and the
/// kernel allow, else tlsgate's. Errors say what failed, for the caller to prefix (`TLS
/// handshake failed: …`) and name the server.
pub async fn connect(
    mode: KtlsMode,
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    mut tcp: TcpStream,
) -> Result<(ClientStream, Facts), String> {
    let failed = |e: rustls::Error| describe::tls_error(&e, Peer::Server);
    let mut out = Vec::new();
    let mut hs = ClientHandshake::new(config, server_name, &mut out).map_err(failed)?;
    tcp.write_all(&out).await.map_err(|e| format!("write: {e}"))?;
    let mut input = Vec::new();
    drive(&mut tcp, &mut hs, &mut input).await.map_err(|stop| stop.message(Peer::Server))?;
    let f = hs.finish().map_err(failed)?;
    let facts = Facts {
        resumed: f.resumed,
        version: format!("{:?}", f.version),
        suite: format!("{:?}", f.suite.suite()),
    };
    let stream = establish(mode, tcp, f.secrets, f.kernel, input).await.map_err(|e| e.context)?;
    Ok((stream, facts))
}

//! The portal's SOCKS5 listener: CONNECT and UDP ASSOCIATE through the tunnel, host names left
//! for the gate to resolve.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tlsgate_config::SocksAuth;
use tlsgate_tunnel::socks5::{self, constant_time_eq, Command, Progress, Reply, Server, ServerConfig};
use tlsgate_tunnel::wire::Protocol;
use tlsgate_tunnel::{Datagram, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::{Handle, TunnelWait};

/// The whole SOCKS prologue (greeting, credentials, request) must arrive within this.
const PROLOGUE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn serve(listener: TcpListener, auth: Option<Arc<SocksAuth>>, tunnel: TunnelWait) {
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                let auth = auth.clone();
                let tunnel = tunnel.clone();
                tokio::spawn(async move {
                    if let Err(e) = client_conn(stream, client, auth, tunnel).await {
                        tracing::info!(%client, error = %e, "tunnel portal: SOCKS client refused");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "tunnel portal: SOCKS accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn client_conn(
    mut stream: TcpStream,
    client: SocketAddr,
    auth: Option<Arc<SocksAuth>>,
    tunnel: TunnelWait,
) -> Result<(), String> {
    let mut server = Server::new(ServerConfig { require_auth: auth.is_some() });
    let request = tokio::time::timeout(PROLOGUE_TIMEOUT, prologue(&mut stream, &mut server, auth.as_deref()))
        .await
        .map_err(|_| "SOCKS handshake timed out (client side)".to_string())??;
    let Some(handle) = tunnel.handle().await else {
        reply(&mut stream, &mut server, Reply::NETWORK_UNREACHABLE, &unspecified()).await?;
        return Err(format!(
            "{} {}: tunnel to the gate is down (waited session_wait)",
            verb(request.command),
            request.target
        ));
    };
    match request.command {
        Command::Connect => {
            let target = request.target;
            match handle.open(Protocol::TCP, target.clone()).await {
                Ok(id) => {
                    reply(&mut stream, &mut server, Reply::SUCCEEDED, &unspecified()).await?;
                    let leftover = server.take_leftover();
                    let listed = super::list_session(
                        "tunnel portal socks",
                        client,
                        &target,
                        target.to_string(),
                        String::new(),
                    );
                    handle.attach_tcp(id, stream, leftover, Some(listed));
                    Ok(())
                }
                Err(f) => {
                    reply(&mut stream, &mut server, Reply::from(f.rc), &unspecified()).await?;
                    Err(format!("CONNECT {target}: gate refused: {}", f.reason))
                }
            }
        }
        Command::UdpAssociate => udp_associate(stream, client, server, handle, request.target).await,
    }
}

async fn prologue(
    stream: &mut TcpStream,
    server: &mut Server,
    auth: Option<&SocksAuth>,
) -> Result<socks5::Request, String> {
    let mut buf = [0u8; 1024];
    let mut progress = Progress::NeedMore;
    loop {
        match progress {
            Progress::Request(r) => return Ok(r),
            Progress::Authenticate { username, password } => {
                let ok = auth.is_some_and(|a| {
                    // Both compared in full, so timing does not tell which one was wrong.
                    let u = constant_time_eq(&username, a.username.as_bytes());
                    let p = constant_time_eq(&password, a.password.as_bytes());
                    u & p
                });
                let next = server.authenticated(ok);
                flush(stream, server).await?;
                progress = next.map_err(|e| format!("SOCKS: {e} (client side)"))?;
                continue;
            }
            Progress::NeedMore => {}
        }
        let n = stream.read(&mut buf).await.map_err(|e| format!("SOCKS read: {e} (client side)"))?;
        if n == 0 {
            return Err("client closed during the SOCKS handshake".into());
        }
        let next = server.handle_input(&buf[..n]);
        flush(stream, server).await?;
        progress = next.map_err(|e| format!("SOCKS: {e} (client side)"))?;
    }
}

async fn flush(stream: &mut TcpStream, server: &mut Server) -> Result<(), String> {
    let out = server.take_output();
    if !out.is_empty() {
        stream.write_all(&out).await.map_err(|e| format!("SOCKS write: {e} (client side)"))?;
    }
    Ok(())
}

async fn reply(
    stream: &mut TcpStream,
    server: &mut Server,
    reply: Reply,
    bound: &Target,
) -> Result<(), String> {
    server.reply(reply, bound).map_err(|e| format!("SOCKS: {e}"))?;
    flush(stream, server).await
}

fn unspecified() -> Target {
    Target::ip([0, 0, 0, 0], 0)
}

fn verb(c: Command) -> &'static str {
    match c {
        Command::Connect => "CONNECT",
        Command::UdpAssociate => "UDP ASSOCIATE",
    }
}

/// UDP ASSOCIATE: a relay socket next to the SOCKS listener, one UDP session in the tunnel,
/// alive as long as the client keeps its TCP control connection (RFC 1928 section 7).
async fn udp_associate(
    mut stream: TcpStream,
    client: SocketAddr,
    mut server: Server,
    handle: Handle,
    hint: Target,
) -> Result<(), String> {
    let local_ip = stream.local_addr().map_err(|e| e.to_string())?.ip();
    let relay = UdpSocket::bind((local_ip, 0)).await.map_err(|e| format!("UDP relay bind: {e}"))?;
    let bound = relay.local_addr().map_err(|e| e.to_string())?;
    let id = match handle.open(Protocol::UDP, hint.clone()).await {
        Ok(id) => id,
        Err(f) => {
            reply(&mut stream, &mut server, Reply::from(f.rc), &unspecified()).await?;
            return Err(format!("UDP ASSOCIATE: gate refused: {}", f.reason));
        }
    };
    let (sink, mut replies) = mpsc::channel(64);
    handle.attach_udp(id, sink, false);
    reply(&mut stream, &mut server, Reply::SUCCEEDED, &Target::ip(bound.ip(), bound.port())).await?;
    // Datagrams are taken only from the client's own IP; its port is learnt from the first one.
    let mut peer: Option<SocketAddr> = None;
    let mut buf = vec![0u8; 65536];
    let mut ctl = [0u8; 64];
    let mut out = Vec::new();
    loop {
        tokio::select! {
            r = stream.read(&mut ctl) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            },
            r = relay.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                if from.ip() != client.ip() || peer.is_some_and(|p| p != from) {
                    continue;
                }
                peer = Some(from);
                match socks5::udp::decode(&buf[..n]) {
                    Ok((dst, payload)) => handle.send_datagram(
                        id,
                        Datagram { src: Target::ip(from.ip(), from.port()), dst, data: payload.to_vec() },
                    ),
                    Err(e) => tracing::debug!(%client, error = %e, "tunnel portal: SOCKS datagram dropped"),
                }
            }
            d = replies.recv() => {
                let Some(d) = d else { break };
                let Some(to) = peer else { continue };
                out.clear();
                socks5::udp::encode(&d.src, &d.data, &mut out);
                let _ = relay.send_to(&out, to).await;
            }
        }
    }
    handle.end_session(id);
    Ok(())
}

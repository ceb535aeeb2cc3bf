//! `tlsgate connect portal`: a plain HTTP CONNECT proxy for the browsers and programs of one
//! machine. A CONNECT to a routed host goes through the gate: its own TLS connection with the
//! portal's certificate, a CONNECT asking for the downgrade, and from the gate's `200` on the
//! raw TCP connection carries the browser's own TLS end to end. Other hosts are refused, or
//! connected directly with `direct`. `GET /proxy.pac` serves the PAC file built from the
//! routes.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tlsgate_config::ConnectPortalConfig;
use tlsgate_connect::downgrade;
use tlsgate_connect::head::{head_end, parse_request, parse_response, response, MAX_HEAD};
use tlsgate_connect::routes::Routes;
use tlsgate_tunnel::Target;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::outer_client::OuterClient;
use super::{read_head, HeadFailure};
use crate::ProxyError;

struct Shared {
    config: ArcSwap<ConnectPortalConfig>,
    tls: ArcSwap<ClientConfig>,
    routes: ArcSwap<Routes>,
    listen: SocketAddr,
}

pub struct ConnectPortal {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl ConnectPortal {
    pub async fn start(config: &ConnectPortalConfig, insecure: bool) -> Result<ConnectPortal, ProxyError> {
        let (tls, routes) = load(config, insecure)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| ProxyError::bind(&format!("connect portal {}", config.listen), &e))?;
        let listen = listener.local_addr().map_err(|e| ProxyError::internal(e.to_string()))?;
        let shared = Arc::new(Shared {
            config: ArcSwap::from_pointee(config.clone()),
            tls: ArcSwap::from(tls),
            routes: ArcSwap::from_pointee(routes),
            listen,
        });
        let task = tokio::spawn(super::accept_loop(listener, "connect portal", shared.clone(), serve));
        tracing::info!(listen = %listen, gate = %config.gate, "connect portal listening");
        Ok(ConnectPortal { shared, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.shared.listen
    }

    /// The portal's certificate, key and CA (re-read), routes and timeouts, for the next request.
    pub fn reload(&self, config: &ConnectPortalConfig, insecure: bool) -> Result<(), ProxyError> {
        if config.listen != self.shared.config.load().listen {
            return Err(ProxyError::config("[connect.portal]: listen changed; a restart applies that"));
        }
        let (tls, routes) = load(config, insecure)?;
        self.shared.tls.store(tls);
        self.shared.routes.store(Arc::new(routes));
        self.shared.config.store(Arc::new(config.clone()));
        Ok(())
    }

    pub fn shutdown(&self) {
        self.task.abort();
    }
}

fn load(config: &ConnectPortalConfig, insecure: bool) -> Result<(Arc<ClientConfig>, Routes), ProxyError> {
    let label = format!("connect portal {}", config.listen);
    let tls = tlsgate_tls::connect::portal_client_config(config, insecure)
        .map_err(|e| ProxyError::config(format!("{label}: {e}")))?;
    let routes = Routes::parse(&config.route).map_err(|e| ProxyError::config(format!("{label}: {e}")))?;
    Ok((tls, routes))
}

async fn answer(tcp: &mut TcpStream, status: u16, phrase: &str, why: &str) {
    let _ = tcp.write_all(&response(status, phrase, &[("Tlsgate-Reason", why)])).await;
    let _ = tcp.shutdown().await;
}

async fn serve(mut tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let config = shared.config.load_full();
    let mut buf = Vec::new();
    let head = match tokio::time::timeout(config.head_timeout, read_head(&mut tcp, &mut buf, MAX_HEAD)).await
    {
        Ok(Ok(end)) => end,
        Ok(Err(HeadFailure::Bad(e))) => {
            tracing::warn!(client = %peer, error = %e, "connect portal: bad request (client side)");
            return answer(&mut tcp, e.status(), phrase(e.status()), &e.to_string()).await;
        }
        Ok(Err(_)) => return,
        Err(_) => return answer(&mut tcp, 408, "Request Timeout", "no complete head in time").await,
    };
    let request = match parse_request(&buf[..head]) {
        Ok(r) => r,
        Err(e) => return answer(&mut tcp, e.status(), phrase(e.status()), &e.to_string()).await,
    };
    if request.method == "GET" && request.target.trim_start_matches("http://").ends_with("/proxy.pac") {
        let pac = shared.routes.load().pac(&shared.listen.to_string(), config.direct);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-ns-proxy-autoconfig\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            pac.len()
        );
        let _ = tcp.write_all(&[head.as_bytes(), pac.as_bytes()].concat()).await;
        let _ = tcp.shutdown().await;
        return;
    }
    let target = match request.connect_target() {
        Ok(t) => t,
        Err(e) => return answer(&mut tcp, e.status(), phrase(e.status()), &e.to_string()).await,
    };
    let early = buf.split_off(head);
    if shared.routes.load().matches(&target.host) {
        via_gate(tcp, peer, &shared, &config, target, early).await;
    } else if config.direct {
        direct(tcp, peer, &config, target, early).await;
    } else {
        tracing::warn!(client = %peer, target = %target, "connect portal: refused: no route for this host");
        answer(&mut tcp, 403, "Forbidden", &format!("{target}: no route through the gate")).await;
    }
}

async fn direct(
    mut tcp: TcpStream,
    peer: SocketAddr,
    config: &ConnectPortalConfig,
    target: Target,
    early: Vec<u8>,
) {
    let addr = target.to_string();
    let up = match tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr.as_str())).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return answer(&mut tcp, 502, "Bad Gateway", &format!("connect {addr}: {e}")).await,
        Err(_) => {
            return answer(&mut tcp, 504, "Gateway Timeout", &format!("connect {addr}: timed out")).await
        }
    };
    tracing::info!(client = %peer, target = %target, "connect portal: direct");
    let mut up = up;
    if tcp.write_all(&response(200, "Connection established", &[])).await.is_err()
        || up.write_all(&early).await.is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional_with_sizes(&mut tcp, &mut up, super::RAW_BUF, super::RAW_BUF).await;
}

/// Through the gate with the downgrade; the gate's refusals reach the browser as they are.
async fn via_gate(
    mut tcp: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    config: &ConnectPortalConfig,
    target: Target,
    early: Vec<u8>,
) {
    let opened =
        tokio::time::timeout(config.connect_timeout + config.head_timeout, open(shared, config, &target))
            .await;
    let (mut gate, rest) = match opened {
        Ok(Ok(Opened::Raw(gate, rest))) => (gate, rest),
        Ok(Ok(Opened::Refused(status, phrase, why))) => {
            tracing::warn!(client = %peer, target = %target, status, reason = %why, "connect portal: gate refused");
            return answer(&mut tcp, status, &phrase, &why).await;
        }
        Ok(Err(e)) => {
            tracing::warn!(client = %peer, target = %target, error = %e, "connect portal: gate failed (gate side)");
            return answer(&mut tcp, 502, "Bad Gateway", &format!("gate {}: {e}", config.gate)).await;
        }
        Err(_) => {
            tracing::warn!(client = %peer, target = %target, "connect portal: gate timed out (gate side)");
            return answer(&mut tcp, 504, "Gateway Timeout", &format!("gate {}: timed out", config.gate))
                .await;
        }
    };
    tracing::info!(client = %peer, target = %target, gate = %config.gate, "connect portal: tunnel open (downgraded)");
    let ok = tcp.write_all(&response(200, "Connection established", &[])).await.is_ok()
        && tcp.write_all(&rest).await.is_ok()
        && gate.write_all(&early).await.is_ok();
    if !ok {
        return;
    }
    // TCP to TCP: spliced, as on the gate.
    match crate::ktls::splice::relay(tcp, gate, &(), None).await {
        Ok(t) => {
            let (up, down) = (t.up + early.len() as u64, t.down + rest.len() as u64);
            tracing::info!(client = %peer, target = %target, up, down, "connect portal: tunnel closed")
        }
        Err((e, _)) => {
            tracing::debug!(client = %peer, target = %target, error = %e, "connect portal: tunnel ended")
        }
    }
}

enum Opened {
    /// The raw connection after the downgrade, and the bytes already read past the gate's
    /// close_notify.
    Raw(TcpStream, Vec<u8>),
    Refused(u16, String, String),
}

async fn open(shared: &Shared, config: &ConnectPortalConfig, target: &Target) -> std::io::Result<Opened> {
    let gate_addr = config.gate.to_string();
    let tcp = TcpStream::connect(gate_addr.as_str()).await?;
    let _ = tcp.set_nodelay(true);
    let name = config.server_name.clone().unwrap_or_else(|| config.gate.host.clone());
    let name = ServerName::try_from(name).map_err(|e| std::io::Error::other(format!("server name: {e}")))?;
    let mut outer = OuterClient::connect(tcp, shared.tls.load_full(), name).await?;
    let head = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{}: {}\r\n\r\n",
        downgrade::HEADER,
        downgrade::VALUE
    );
    outer.write_all(head.as_bytes()).await?;
    let mut plain = Vec::new();
    let end = loop {
        if let Some(end) =
            head_end(&plain, MAX_HEAD).map_err(|e| std::io::Error::other(format!("answer: {e}")))?
        {
            break end;
        }
        if outer.peer_closed() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "gate closed before answering",
            ));
        }
        outer.read_records(&mut plain).await?;
    };
    let answer = parse_response(&plain[..end]).map_err(|e| std::io::Error::other(format!("answer: {e}")))?;
    if answer.status != 200 {
        let why = answer.header("Tlsgate-Reason").unwrap_or("").to_string();
        outer.close().await;
        return Ok(Opened::Refused(answer.status, answer.reason, why));
    }
    if !downgrade::requested(&answer.headers) {
        return Err(std::io::Error::other("gate answered 200 without agreeing to the downgrade"));
    }
    // Only the gate's close_notify may follow its answer inside TLS.
    while !outer.peer_closed() {
        outer.read_records(&mut plain).await?;
    }
    if plain.len() > end {
        return Err(std::io::Error::other("gate sent data inside TLS after its downgrade answer"));
    }
    let (tcp, rest) = outer.downgrade().await?;
    Ok(Opened::Raw(tcp, rest))
}

fn phrase(status: u16) -> &'static str {
    match status {
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Bad Request",
    }
}

//! Transparent interception: connections of unmodified programs, redirected to this listener by
//! iptables REDIRECT, are handled by the first policy rule matching their original destination
//! (read with SO_ORIGINAL_DST) and, when a rule asks, the SNI of their ClientHello.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustls::pki_types::ServerName;
use tlsgate_config::{RuleConfig, TransparentListener};
use tlsgate_core::policy::{Action, Policy};
use tlsgate_core::side::Side;
use tlsgate_telemetry::metrics::{metrics, DecisionLabels};
use tlsgate_tls::describe::{self, Peer};
use tlsgate_tls::peek::{client_hello_sni, Peek};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::relay::relay;
use crate::ProxyError;

pub(super) struct Transparent {
    pub name: String,
    pub config: TransparentListener,
    pub policy: Policy,
    pub connector: TlsConnector,
}

impl Transparent {
    pub(super) fn build(
        t: &TransparentListener,
        allow_insecure_key_permissions: bool,
    ) -> Result<Transparent, ProxyError> {
        let name = t.display_name();
        let fail = |e: String| ProxyError::config(format!("originate transparent listener {name}: {e}"));
        let tls = tlsgate_tls::client::client_config(t.into(), allow_insecure_key_permissions)
            .map_err(|e| fail(e.to_string()))?;
        let policy = t.policy().map_err(fail)?;
        Ok(Transparent { name: name.clone(), config: t.clone(), policy, connector: TlsConnector::from(tls) })
    }
}

pub(super) async fn accept_loop(socket: TcpListener, state: Arc<ArcSwap<Transparent>>, tracker: TaskTracker) {
    let addr = socket.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(listener = %state.load().name, %addr, "transparent listening");
    loop {
        match socket.accept().await {
            Ok((tcp, peer)) => {
                let t = state.load_full();
                let span = tracing::info_span!("conn", listener = %t.name, client = %peer);
                tracker.spawn(handle(tcp, t.clone()).instrument(span));
            }
            Err(e) => {
                tracing::error!(side = %Side::Internal, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(mut client: TcpStream, t: Arc<Transparent>) {
    let started = Instant::now();
    let dst = match original_destination(&client) {
        Ok(dst) => dst,
        Err(e) => {
            tracing::warn!(side = %Side::Internal, error = %e, "no original destination, connection closed");
            return;
        }
    };
    if client.local_addr().is_ok_and(|local| local == dst) {
        tracing::warn!(side = %Side::Client, %dst, "connection was not redirected (addressed to tlsgate itself), closed");
        return;
    }
    let (first, sni) = if t.policy.needs_sni() {
        peek_sni(&mut client, t.config.sni_wait).await
    } else {
        (Vec::new(), None)
    };
    let decision = t.policy.decide(dst, sni.as_deref());
    let action = match decision.action {
        Action::Originate => "originate",
        Action::Passthrough => "passthrough",
        Action::Deny => "deny",
    };
    let rule = decision.rule.map(|r| r.to_string()).unwrap_or_else(|| "none".into());
    let labels = DecisionLabels { listener: t.name.clone(), action: action.into(), rule: rule.clone() };
    metrics().transparent_decisions.get_or_create(&labels).inc();
    let sni_text = sni.as_deref().unwrap_or("");
    tracing::info!(%dst, sni = %sni_text, %rule, %action, "policy decision");

    let rule_config = decision.rule.map(|i| &t.config.rule[i]);
    let result = match (decision.action, rule_config) {
        (Action::Deny, _) | (_, None) => return,
        (Action::Passthrough, _) => match connect(&t.config, dst).await {
            Ok(mut upstream) => match upstream.write_all(&first).await {
                Ok(()) => relay(client, upstream, &(), None).await,
                Err(e) => Err((ProxyError::backend(format!("write to {dst}: {e}")), Default::default())),
            },
            Err(e) => Err((e, Default::default())),
        },
        (Action::Originate, Some(rule)) => match originate(&t, rule, dst).await {
            Ok(mut upstream) => match upstream.write_all(&first).await {
                Ok(()) => relay(client, upstream, &(), None).await,
                Err(e) => Err((ProxyError::backend(format!("write to {dst}: {e}")), Default::default())),
            },
            Err(e) => Err((e, Default::default())),
        },
    };
    match result {
        Ok(x) => {
            tracing::info!(%dst, %action, up = x.up, down = x.down, duration = ?started.elapsed(), "connection closed")
        }
        Err((e, x)) => tracing::warn!(
            %dst, %action, side = %e.side, error = %e.context, up = x.up, down = x.down,
            duration = ?started.elapsed(), "connection aborted"
        ),
    }
}

/// Where the client meant to connect before iptables REDIRECT changed it.
fn original_destination(tcp: &TcpStream) -> std::io::Result<SocketAddr> {
    let sock = socket2::SockRef::from(tcp);
    let addr = match tcp.local_addr()?.ip() {
        IpAddr::V4(_) => sock.original_dst_v4()?,
        IpAddr::V6(_) => sock.original_dst_v6()?,
    };
    addr.as_socket().ok_or_else(|| std::io::Error::other("original destination is not an IP address"))
}

/// Reads the client's first bytes for up to `wait`, for the SNI of a ClientHello. Whatever was
/// read is returned to be sent on first; a client that stays silent (server-speaks-first
/// protocols) or is not TLS simply has no SNI.
async fn peek_sni(client: &mut TcpStream, wait: Duration) -> (Vec<u8>, Option<String>) {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut chunk = [0u8; 4096];
    // A ClientHello larger than this is not one tlsgate will route on.
    while buf.len() < 16 * 1024 {
        match client_hello_sni(&buf) {
            Peek::Hello(sni) => return (buf, sni),
            Peek::NotTls => return (buf, None),
            Peek::NeedMore => {}
        }
        match tokio::time::timeout_at(deadline, client.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    (buf, None)
}

/// A TCP connection from tlsgate, marked so the REDIRECT rule lets it through.
async fn connect(config: &TransparentListener, dst: SocketAddr) -> Result<TcpStream, ProxyError> {
    let attempt = async {
        let domain = if dst.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
        let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        if let Some(mark) = config.outbound_mark {
            socket.set_mark(mark)?;
        }
        socket.set_nonblocking(true)?;
        let stream = TcpSocket::from_std_stream(socket.into()).connect(dst).await?;
        let _ = stream.set_nodelay(true);
        Ok::<_, std::io::Error>(stream)
    };
    match tokio::time::timeout(config.connect_timeout, attempt).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(ProxyError::backend(format!("connect {dst}: {e}"))),
        Err(_) => {
            Err(ProxyError::backend(format!("connect {dst}: timed out after {:?}", config.connect_timeout)))
        }
    }
}

async fn originate(
    t: &Transparent,
    rule: &RuleConfig,
    dst: SocketAddr,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ProxyError> {
    let target = SocketAddr::new(dst.ip(), rule.tls_port.unwrap_or(dst.port()));
    let name = rule.server_name.clone().unwrap_or_else(|| dst.ip().to_string());
    let server_name = ServerName::try_from(name.clone())
        .map_err(|e| ProxyError::internal(format!("server name {name:?}: {e}")))?;
    let attempt = async {
        let tcp = connect(&t.config, target).await?;
        t.connector.connect(server_name, tcp).await.map_err(|e| {
            let e = describe::io_error(&e, Peer::Server);
            ProxyError::backend(format!("TLS to {target} failed: {e} (SNI {name})"))
        })
    };
    let tls = tokio::time::timeout(t.config.handshake_timeout, attempt).await.map_err(|_| {
        ProxyError::backend(format!("no TLS session with {target} within {:?}", t.config.handshake_timeout))
    })??;
    let conn = tls.get_ref().1;
    let version = conn.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
    tracing::info!(upstream = %target, %name, %version, "upstream handshake done");
    Ok(tls)
}

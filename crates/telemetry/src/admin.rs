//! The admin listener: `/healthz`, `/metrics` (Prometheus text), `/status` (HTML) and
//! `/status.json` (the live connections; the inline engine's tables, `"inline": null` when it
//! does not run; the fleet's state, `"fleet": null` outside a fleet).
//!
//! Off unless configured; it shows client addresses and identities, so bind it to loopback or a
//! management network.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::conns::live;
use crate::metrics::{metrics, BackendLabels};
use crate::status::{render, StatusSource};

/// Connections served at once. A scraper and an operator need a few; beyond this the listener
/// stops accepting (the rest wait in the kernel's queue), so idle connections cannot take the
/// file descriptors the TLS listeners need.
pub const MAX_CONNECTIONS: usize = 16;

/// How long one admin connection may stay open, idle or not: every answer takes milliseconds.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the admin address; `serve` answers until the task is dropped. Off loopback it warns:
/// the pages show client addresses and identities to whoever can connect.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "admin listener is not on loopback: /status and /metrics show client addresses and \
             identities to anyone who can connect; bind it to loopback or a management network"
        );
    }
    Ok(listener)
}

pub async fn serve(listener: TcpListener, source: Arc<dyn StatusSource>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(
            %addr,
            max_connections = MAX_CONNECTIONS,
            timeout_s = CONNECTION_TIMEOUT.as_secs(),
            "admin listening"
        );
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (tcp, peer) = match listener.accept().await {
            Ok(ok) => ok,
            Err(e) => {
                tracing::error!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let source = source.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(req, source.clone()));
            let conn =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service);
            if tokio::time::timeout(CONNECTION_TIMEOUT, conn).await.is_err() {
                tracing::debug!(%peer, "admin connection closed after {CONNECTION_TIMEOUT:?}");
            }
            drop(slot);
        });
    }
}

async fn answer<B>(
    req: Request<B>,
    source: Arc<dyn StatusSource>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, ctype, body) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain; charset=utf-8", "ok\n".to_string()),
        "/metrics" => {
            refresh_backend_gauges(source.as_ref());
            if let Some(v) = source.inline() {
                crate::inline::update_metrics(&v, metrics());
            }
            (StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics().encode())
        }
        "/status" => {
            let page = render(&source.listeners(), &live().snapshot(), source.inline().as_ref());
            (StatusCode::OK, "text/html; charset=utf-8", page)
        }
        "/status.json" => {
            let inline = source.inline().map(|v| crate::inline::json(&v));
            let conns: Vec<_> = live().snapshot().iter().map(|c| c.json()).collect();
            let fleet = crate::fleet::view().map(|v| crate::fleet::json(&v));
            let body = serde_json::json!({ "inline": inline, "connections": conns, "fleet": fleet })
                .to_string()
                + "\n";
            (StatusCode::OK, "application/json", body)
        }
        _ => (StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found\n".to_string()),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert("content-type", v);
    }
    Ok(r)
}

/// Backend gauges mirror the pools at scrape time; clearing first drops backends a reload removed.
fn refresh_backend_gauges(source: &dyn StatusSource) {
    let m = metrics();
    m.backend_up.clear();
    m.backend_connections.clear();
    for l in source.listeners() {
        for r in &l.routes {
            for b in &r.backends {
                let labels = BackendLabels {
                    listener: l.name.clone(),
                    route: r.label.clone(),
                    backend: b.addr.clone(),
                };
                m.backend_up.get_or_create(&labels).set(i64::from(b.up));
                m.backend_connections.get_or_create(&labels).set(i64::from(b.active));
            }
        }
    }
}

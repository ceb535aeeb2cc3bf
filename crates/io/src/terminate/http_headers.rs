//! HTTP header mode: the route relays HTTP/1.1 requests (hyper on both sides) and tells the
//! backend who the client is in headers, the way HAProxy and nginx setups do:
//!
//! | header | value |
//! |---|---|
//! | `X-Forwarded-For` | the client's IP address |
//! | `X-Forwarded-Proto` | `https` |
//! | `X-Client-Verify` | `SUCCESS` when a client certificate was verified, else `NONE` |
//! | `X-Client-Subject` | the certificate's subject DN |
//! | `X-Client-CN` | its common name |
//! | `X-Client-DNS` / `X-Client-URI` / `X-Client-IP` | its SANs of each kind, comma-separated |
//!
//! Every `X-Forwarded-*` and `X-Client-*` header, `Forwarded`, `X-Real-IP` and the other
//! client-address headers the client sent are removed first, in any spelling a backend folds to
//! one of them (`X_Forwarded_For`), so a client can never pose as someone else. Protocol upgrades (WebSocket) are not relayed in
//! this mode.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tlsgate_core::identity::PeerIdentity;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use super::routes::Route;
use crate::backend::Lease;
use crate::ProxyError;

type Body = BoxBody<bytes::Bytes, hyper::Error>;

/// Who the client is, as the headers will say.
#[derive(Debug, Clone)]
pub struct ClientFacts {
    pub addr: SocketAddr,
    pub identity: Option<PeerIdentity>,
    /// Sent first on every backend connection, when the route speaks the PROXY protocol.
    pub proxy_header: Option<Vec<u8>>,
}

/// One backend connection, reused across the client's requests while it stays open.
struct Upstream {
    sender: hyper::client::conn::http1::SendRequest<Incoming>,
    _lease: Lease,
}

/// Serves HTTP/1.1 on the client's TLS stream until it closes; `Err` names the failing side.
pub async fn serve<S>(client: S, route: Arc<Route>, facts: ClientFacts) -> Result<(), ProxyError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let upstream: Arc<Mutex<Option<Upstream>>> = Arc::new(Mutex::new(None));
    let facts = Arc::new(facts);
    let service = hyper::service::service_fn(move |req| {
        let (route, upstream, facts) = (route.clone(), upstream.clone(), facts.clone());
        async move { Ok::<_, std::convert::Infallible>(forward(req, &route, &upstream, &facts).await) }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(client), service)
        .await
        .map_err(|e| ProxyError::client(format!("HTTP: {e}")))
}

async fn forward(
    mut req: Request<Incoming>,
    route: &Arc<Route>,
    upstream: &Mutex<Option<Upstream>>,
    facts: &ClientFacts,
) -> Response<Body> {
    rewrite_headers(req.headers_mut(), facts);
    let mut slot = upstream.lock().await;
    if slot.as_ref().is_none_or(|u| u.sender.is_closed()) {
        match connect(route, facts).await {
            Ok(u) => *slot = Some(u),
            Err(e) => {
                tracing::warn!(side = %e.side, error = %e.context, "no backend for request");
                return error_response(StatusCode::SERVICE_UNAVAILABLE);
            }
        }
    }
    let Some(u) = slot.as_mut() else { return error_response(StatusCode::SERVICE_UNAVAILABLE) };
    if let Err(e) = u.sender.ready().await {
        tracing::warn!(side = "backend", error = %e, "backend connection not usable");
        *slot = None;
        return error_response(StatusCode::BAD_GATEWAY);
    }
    match u.sender.send_request(req).await {
        Ok(resp) => resp.map(|b| b.boxed()),
        Err(e) => {
            tracing::warn!(side = "backend", error = %e, "backend request failed");
            *slot = None;
            error_response(StatusCode::BAD_GATEWAY)
        }
    }
}

async fn connect(route: &Arc<Route>, facts: &ClientFacts) -> Result<Upstream, ProxyError> {
    let (mut tcp, lease) = route.pool.connect(facts.addr.ip()).await?;
    if let Some(header) = &facts.proxy_header {
        tcp.write_all(header)
            .await
            .map_err(|e| ProxyError::backend(format!("sending the PROXY header: {e}")))?;
    }
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| ProxyError::backend(format!("HTTP handshake: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(side = "backend", error = %e, "backend HTTP connection ended");
        }
    });
    Ok(Upstream { sender, _lease: lease })
}

/// Names of client-address headers that backends and frameworks trust besides tlsgate's own
/// (nginx's realip module, Rack, Akamai and Cloudflare, proxies in front of proxies).
const OTHER_IDENTITY: [&str; 5] =
    ["x-real-ip", "true-client-ip", "x-cluster-client-ip", "client-ip", "x-original-forwarded-for"];

/// Whether a backend may read `name` as an identity header. Backends fold names: CGI, WSGI and
/// PHP turn `-` into `_` (so `X_Forwarded_For` and `X-Forwarded-For` are one variable), so the
/// name is compared with every separator folded to `-`.
fn is_identity_header(name: &str) -> bool {
    let folded: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    folded.starts_with("x-forwarded-")
        || folded.starts_with("x-client-")
        || folded == "forwarded"
        || OTHER_IDENTITY.contains(&folded.as_str())
}

/// Removes what the client claimed about itself, then says what tlsgate knows.
pub fn rewrite_headers(headers: &mut HeaderMap, facts: &ClientFacts) {
    let spoofable: Vec<HeaderName> =
        headers.keys().filter(|k| is_identity_header(k.as_str())).cloned().collect();
    for k in spoofable {
        headers.remove(&k);
    }
    let mut set = |name: &'static str, value: &str| {
        headers.insert(HeaderName::from_static(name), header_value(value));
    };
    set("x-forwarded-for", &facts.addr.ip().to_string());
    set("x-forwarded-proto", "https");
    match &facts.identity {
        None => set("x-client-verify", "NONE"),
        Some(id) => {
            set("x-client-verify", "SUCCESS");
            set("x-client-subject", &id.subject);
            if let Some(cn) = &id.common_name {
                set("x-client-cn", cn);
            }
            if !id.dns.is_empty() {
                set("x-client-dns", &id.dns.join(","));
            }
            if !id.uri.is_empty() {
                set("x-client-uri", &id.uri.join(","));
            }
            if !id.ip.is_empty() {
                set("x-client-ip", &id.ip.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(","));
            }
        }
    }
}

/// Certificate text may hold anything; a header carries visible ASCII, so the rest is
/// percent-encoded.
fn header_value(s: &str) -> HeaderValue {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn error_response(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(
        Full::new(bytes::Bytes::from(format!("{status}\n"))).map_err(|never| match never {}).boxed(),
    );
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_sent_identity_headers_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("X-Client-CN", HeaderValue::from_static("admin"));
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil"));
        h.insert("user-agent", HeaderValue::from_static("curl"));
        let facts =
            ClientFacts { addr: "10.1.2.3:4444".parse().unwrap(), identity: None, proxy_header: None };
        rewrite_headers(&mut h, &facts);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-client-verify"], "NONE");
        assert!(
            h.get("x-client-cn").is_none()
                && h.get("forwarded").is_none()
                && h.get("x-forwarded-host").is_none()
        );
        assert_eq!(h["user-agent"], "curl");
    }

    #[test]
    fn every_spelling_a_backend_folds_to_an_identity_header_is_one() {
        for name in [
            "x-forwarded-for",
            "x_forwarded_for",
            "x-forwarded_for",
            "x.forwarded.for",
            "x_client_cn",
            "forwarded",
            "x-real-ip",
            "x_real_ip",
            "true-client-ip",
            "x_cluster_client_ip",
        ] {
            assert!(is_identity_header(name), "{name}");
        }
        for name in ["user-agent", "x-forwardedfor", "forwarded-by-me", "x-request-id", "xx-forwarded-for"] {
            assert!(!is_identity_header(name), "{name}");
        }
    }

    #[test]
    fn identity_headers_are_safe_ascii() {
        let mut h = HeaderMap::new();
        let id = PeerIdentity {
            subject: "CN=Zoë\r\nX-Evil: 1".into(),
            common_name: Some("Zoë".into()),
            dns: vec!["a.test".into(), "b.test".into()],
            uri: vec!["spiffe://t/x".into()],
            ip: vec!["10.0.0.1".parse().unwrap()],
        };
        rewrite_headers(
            &mut h,
            &ClientFacts { addr: "[::1]:1".parse().unwrap(), identity: Some(id), proxy_header: None },
        );
        assert_eq!(h["x-forwarded-for"], "::1");
        assert_eq!(h["x-client-cn"], "Zo%C3%AB");
        assert_eq!(h["x-client-subject"], "CN=Zo%C3%AB%0D%0AX-Evil: 1");
        assert_eq!(h["x-client-dns"], "a.test,b.test");
        assert_eq!(h["x-client-ip"], "10.0.0.1");
    }
}

//! A small plaintext HTTP/1.1 server: the demo's backend, and a peer for tests.
//!
//! - `GET /` answers a short text naming the server;
//! - `POST /echo` streams the request body straight back;
//! - `POST /sha256` answers the hex SHA-256 of the request body.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, hyper::Error>;

/// Binds the server; `serve` then answers until the process ends.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(listener: TcpListener, name: String) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(ok) => ok,
            Err(e) => {
                tracing::error!(error = %e, "http backend accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let name = name.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(req, name.clone()));
            if let Err(e) =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await
            {
                tracing::debug!(client = %peer, error = %e, "http backend connection ended with error");
            }
        });
    }
}

async fn answer(req: Request<Incoming>, name: String) -> Result<Response<Body>, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => text(StatusCode::OK, format!("hello from {name}\n")),
        (&Method::POST, "/echo") => Response::new(req.into_body().boxed()),
        (&Method::POST, "/sha256") => {
            let mut hasher = Sha256::new();
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            hasher.update(data);
                        }
                    }
                    Err(e) => return Ok(text(StatusCode::BAD_REQUEST, format!("body: {e}\n"))),
                }
            }
            text(StatusCode::OK, format!("{}\n", hex(&hasher.finalize())))
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    Ok(response)
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", "text/plain; charset=utf-8".parse().expect("static header"));
    r
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

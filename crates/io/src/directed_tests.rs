//! A directed connection's waits end: an idle connection is closed, and a directive whose offset
//! the application never reaches fails and closes it (over loopback sockets, no TLS peer).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::{run, Role, Timeouts};
use crate::control::registry::{self, Steer, SteerOp};

/// A connected pair on loopback: (accepted, connecting).
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let connecting = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    (listener.accept().await.unwrap().0, connecting)
}

fn client_role() -> Role<'static> {
    let config = rustls::ClientConfig::builder_with_provider(tlsgate_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Role::Client { config: Arc::new(config), default_sni: "far.test".into(), identities: Arc::default() }
}

fn on_runtime(test: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(test);
}

#[test]
fn an_idle_directed_connection_is_closed() {
    on_runtime(async {
        let ((app, _application), (_far_peer, far)) = (pair().await, pair().await);
        let timeouts =
            Timeouts { handshake: Duration::from_secs(30), idle: Some(Duration::from_millis(100)) };
        let (_, result) = run(app, far, client_role(), "t", timeouts).await;
        assert!(result.unwrap_err().context.starts_with("idle for 100ms"));
    });
}

#[test]
fn a_directive_whose_offset_is_never_reached_fails_and_closes_the_connection() {
    on_runtime(async {
        let ((app, mut application), (_far_peer, far)) = (pair().await, pair().await);
        let addrs = (application.local_addr().unwrap(), application.peer_addr().unwrap());
        let timeouts = Timeouts { handshake: Duration::from_millis(100), idle: None };
        let directed = tokio::spawn(async move { run(app, far, client_role(), "t", timeouts).await.1 });
        // The connection registers once its task runs.
        let entry = loop {
            match registry::lookup(addrs) {
                Some(entry) => break entry,
                None => tokio::task::yield_now().await,
            }
        };
        let (done, outcome) = tokio::sync::oneshot::channel();
        let op = SteerOp::Start { after: 100, sni: None, alpn: Vec::new(), client_cert: None };
        entry.steer.as_ref().unwrap().send(Steer { op, done }).await.unwrap();
        application.write_all(b"HELLO\n").await.unwrap();
        let answer = outcome.await.unwrap().unwrap_err();
        assert!(
            answer.starts_with("byte 100 of the application's stream not reached within 100ms"),
            "{answer}"
        );
        assert!(directed.await.unwrap().is_err());
    });
}

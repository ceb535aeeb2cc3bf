//! `tlsgate demo`: everything needed to see tlsgate terminate TLS, made up on the spot.
//!
//! A throwaway CA and a certificate for `localhost` / 127.0.0.1 go into a temporary directory
//! (removed on exit); the built-in HTTP backend listens on a free loopback port; a terminate
//! listener fronts it. The printed curl command is the one a test runs.

use std::net::SocketAddr;

use tlsgate_config::{BackendAddr, Config, ListenerConfig, LogConfig, TerminateConfig};
use tlsgate_io::{http_backend, terminate};
use tlsgate_tls::pki::{write_file, TestCa};

use crate::cli::{DemoArgs, LogArgs};
use crate::failure::Failure;
use crate::logging;

pub async fn run(args: DemoArgs, log: &LogArgs) -> Result<(), Failure> {
    logging::init(&LogConfig::default(), log);
    let mut signals = super::lifecycle::Signals::install()?;
    let dir = tempfile::Builder::new()
        .prefix("tlsgate-demo-")
        .tempdir()
        .map_err(|e| format!("demo: temporary directory: {e}"))?;
    let ca = TestCa::new("tlsgate demo CA").map_err(|e| e.to_string())?;
    let ca_path = dir.path().join("ca.pem");
    write_file(&ca_path, ca.cert_pem(), 0o644).map_err(|e| e.to_string())?;
    let host = args.listen.ip().to_string();
    let server = ca.issue_server(&["localhost", &host]).map_err(|e| e.to_string())?;
    let (cert, key) = server.write(dir.path(), "server").map_err(|e| e.to_string())?;

    let backend = http_backend::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| format!("demo: backend bind: {e}"))?;
    let backend_addr = backend.local_addr().map_err(|e| e.to_string())?;

    let mut listener = ListenerConfig::from_flags(
        args.listen,
        cert,
        key,
        vec![BackendAddr { host: backend_addr.ip().to_string(), port: backend_addr.port() }],
    );
    listener.name = Some("demo".into());
    listener.alpn = vec!["http/1.1".into()];
    let config = Config { terminate: Some(TerminateConfig::new(vec![listener])), ..Config::default() };
    let server = terminate::Server::start(&config).await?;
    let addr = server.local_addrs()[0];

    println!("tlsgate demo: https://localhost:{} -> built-in backend http://{backend_addr}", addr.port());
    println!("CA certificate: {}", ca_path.display());
    println!("Try it:");
    println!("  curl --cacert {} https://localhost:{}/", ca_path.display(), addr.port());
    println!("Press Ctrl-C to stop.");

    tokio::select! {
        _ = http_backend::serve(backend, "tlsgate demo backend".into()) => {}
        _ = signals.stopped("demo") => {}
    }
    server.shutdown(std::time::Duration::from_secs(5)).await;
    drop(dir);
    Ok(())
}

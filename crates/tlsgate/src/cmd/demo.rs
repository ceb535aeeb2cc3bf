//! `tlsgate demo`: everything needed to see tlsgate terminate TLS, made up on the spot.
//!
//! A throwaway CA and a certificate for `localhost` / 127.0.0.1 go into a temporary directory
//! (removed on exit); the built-in HTTP backend listens on a free loopback port; a terminate
//! listener fronts it. With `--keep DIR`, copies of the CA and server certificates and a client
//! certificate from the same CA (for trying mutual TLS) go into DIR and stay there. The printed
//! curl command is the one a test runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tlsgate_config::{BackendAddr, Config, ListenerConfig, LogConfig, TerminateConfig};
use tlsgate_io::{http_backend, terminate};
use tlsgate_tls::pki::{write_file, ClientSpec, Issued, TestCa};

use crate::cli::{DemoArgs, LogArgs};
use crate::failure::Failure;
use crate::logging;

pub async fn run(args: DemoArgs, log: &LogArgs) -> Result<(), Failure> {
    logging::init(&LogConfig::default(), log);
    let mut signals = super::lifecycle::Signals::install()?;
    // Checked before anything starts, written once it has: a failed start leaves nothing behind.
    let keep = args.keep.as_deref().map(keep_dir).transpose()?;
    // The files the server runs on; dropping the directory deletes them.
    let scratch = tempfile::Builder::new()
        .prefix("tlsgate-demo-")
        .tempdir()
        .map_err(|e| format!("demo: temporary directory: {e}"))?;
    let ca = TestCa::new("tlsgate demo CA").map_err(|e| e.to_string())?;
    let mut ca_path = scratch.path().join("ca.pem");
    write_file(&ca_path, ca.cert_pem(), 0o644).map_err(|e| e.to_string())?;
    let host = args.listen.ip().to_string();
    let server_cert = ca.issue_server(&["localhost", &host]).map_err(|e| e.to_string())?;
    let (cert, key) = server_cert.write(scratch.path(), "server").map_err(|e| e.to_string())?;

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
    if let Some(dir) = &keep {
        ca_path = write_kept(dir, &ca, &server_cert, &host)?;
    }

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
    drop(scratch);
    Ok(())
}

/// The identity in the kept client certificate: a SPIFFE ID (URI SAN) and a DNS name.
const DEMO_CLIENT_URI: &str = "spiffe://demo.tlsgate.test/client";
const DEMO_CLIENT_DNS: &str = "client.demo.tlsgate.test";

/// Writes the CA certificate, the server pair and a client pair from the same CA into `dir`, says
/// so, and returns the kept CA's path.
fn write_kept(dir: &Path, ca: &TestCa, server: &Issued, host: &str) -> Result<PathBuf, String> {
    let kept = |e: tlsgate_tls::TlsError| format!("demo: --keep {}: {e}", dir.display());
    let ca_path = dir.join("ca.pem");
    write_file(&ca_path, ca.cert_pem(), 0o644).map_err(kept)?;
    server.write(dir, "server").map_err(kept)?;
    let client = ca
        .issue_client(&ClientSpec {
            common_name: "tlsgate demo client",
            dns: &[DEMO_CLIENT_DNS],
            uri: &[DEMO_CLIENT_URI],
            ..ClientSpec::default()
        })
        .map_err(kept)?;
    client.write(dir, "client").map_err(kept)?;
    println!("Kept in {} (not deleted on exit; the CA's own key is not kept):", dir.display());
    println!("  ca.pem                    the demo CA's certificate");
    println!("  server.pem, server.key    the server certificate (localhost, {host}) and key");
    println!(
        "  client.pem, client.key    a client certificate from the same CA \
         (URI SAN {DEMO_CLIENT_URI}, DNS SAN {DEMO_CLIENT_DNS}) and key"
    );
    Ok(ca_path)
}

/// Files `--keep` writes; an existing one is refused rather than overwritten.
const KEPT: [&str; 5] = ["ca.pem", "server.pem", "server.key", "client.pem", "client.key"];

/// Creates `dir` (owner-only when new) and returns its absolute path, so the printed commands
/// work from anywhere.
fn keep_dir(dir: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("demo: --keep {}: {e}", dir.display()))?;
    let dir = std::fs::canonicalize(dir).map_err(|e| format!("demo: --keep {}: {e}", dir.display()))?;
    if let Some(name) = KEPT.iter().find(|n| dir.join(n).exists()) {
        return Err(format!(
            "demo: --keep {}: {name} already exists; remove it or choose another directory",
            dir.display()
        ));
    }
    Ok(dir)
}

//! docs/certificates.md, run as written: its openssl blocks with bash, in document order, in an
//! empty directory; then its `tlsgate backend` and `tlsgate terminate` commands on the files they
//! made, and its curl command, which must reach the backend. The outcomes the page describes in
//! prose are checked with curl too: `deploy` (DNS SAN) gets through, the revoked `batch`, a client
//! without a certificate and one that no allow-list names are refused with the alert it gives.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tlsgate_testkit::clients::{curl, describe};
use tlsgate_testkit::docs::blocks;
use tlsgate_testkit::process::Tlsgate;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const DOC: &str = include_str!("../../../docs/certificates.md");

/// `bash -e -c TEXT` in `dir`, with the binary under test first on PATH as `tlsgate`.
fn bash(dir: &Path, text: &str) -> Command {
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin_dir.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    let mut cmd = Command::new("bash");
    cmd.args(["-e", "-c", text]).current_dir(dir).env("PATH", std::env::join_paths(paths).unwrap());
    cmd
}

#[test]
fn the_certificate_how_to_runs_as_written_and_does_what_it_says() {
    let blocks: Vec<_> = blocks("docs/certificates.md", DOC).into_iter().filter(|b| b.lang == "sh").collect();
    let first_word = |text: &str| text.split_whitespace().next().unwrap_or("").to_string();
    let (mut setup, mut servers, mut clients) = (Vec::new(), Vec::new(), Vec::new());
    for b in &blocks {
        match first_word(&b.text).as_str() {
            "tlsgate" => servers.push(b.text.clone()),
            "curl" => clients.push(b.text.clone()),
            _ => setup.push(b.text.clone()),
        }
    }
    assert!(setup.len() >= 5, "expected the openssl steps (CA, server, clients, CRL): {blocks:#?}");
    assert_eq!(servers.len(), 2, "expected `tlsgate backend` and `tlsgate terminate`: {servers:#?}");
    assert!(servers[0].starts_with("tlsgate backend") && servers[1].starts_with("tlsgate terminate"));
    assert_eq!(clients.len(), 1, "expected one curl command: {clients:#?}");

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for text in &setup {
        let out = bash(dir, text).output().unwrap();
        assert!(out.status.success(), "docs/certificates.md block failed:\n{text}\n{}", describe(&out));
    }
    for file in ["ca.pem", "server.pem", "server.key", "web.pem", "batch.pem", "deploy.pem", "ca.crl"] {
        assert!(dir.join(file).exists(), "the openssl steps did not make {file}");
    }

    // The servers, as written; `exec` so that the process the test stops is tlsgate itself.
    let backend = Tlsgate::start_command(bash(dir, &format!("exec {}", servers[0])));
    backend.proc.wait_for(&["backend listening"], Duration::from_secs(30));
    let gate = Tlsgate::start_command(bash(dir, &format!("exec {}", servers[1])));
    let addr = gate.listening(None);

    let out = bash(dir, &clients[0]).output().unwrap();
    assert!(out.status.success(), "{}\n{}\n{}", clients[0], describe(&out), gate.proc.log_text());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from tlsgate built-in backend\n");
    gate.proc.wait_for(&["handshake done", "URI:spiffe://example.org/ns/prod/web"], Duration::from_secs(10));

    // A client of the same CA that no allow-list entry names, issued the page's way.
    let stranger = bash(
        dir,
        r#"openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc \
               -keyout dev.key -out dev.csr -subj "/CN=dev" \
               -addext "subjectAltName=URI:spiffe://example.org/ns/dev/tool"
           openssl ca -batch -notext -config ca.cnf -extensions client_cert -in dev.csr -out dev.pem"#,
    )
    .output()
    .unwrap();
    assert!(stranger.status.success(), "{}", describe(&stranger));

    let url = format!("https://localhost:{}/", addr.port());
    let ca = dir.join("ca.pem");
    let with = |stem: Option<&str>| {
        let mut args = vec!["--cacert".to_string(), ca.to_str().unwrap().to_string()];
        if let Some(stem) = stem {
            for (flag, ext) in [("--cert", "pem"), ("--key", "key")] {
                args.push(flag.to_string());
                args.push(dir.join(format!("{stem}.{ext}")).to_str().unwrap().to_string());
            }
        }
        args.push(url.clone());
        curl(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let deploy = with(Some("deploy"));
    assert!(deploy.status.success(), "{}", describe(&deploy));
    gate.proc.wait_for(&["handshake done", "DNS:deploy.ops.example.org"], Duration::from_secs(10));

    let refusals = [
        (Some("batch"), "certificate revoked", "client certificate revoked"),
        (None, "certificate required", "client sent no certificate, and one is required"),
        (Some("dev"), "access denied", "client certificate refused by tlsgate's policy"),
    ];
    for (stem, alert, logged) in refusals {
        let out = with(stem);
        assert!(!out.status.success(), "{stem:?} got through: {}", describe(&out));
        assert!(describe(&out).contains(alert), "{stem:?}: expected alert {alert:?}: {}", describe(&out));
        gate.proc.wait_for(&["side=client", "handshake failed", logged], Duration::from_secs(10));
    }
}

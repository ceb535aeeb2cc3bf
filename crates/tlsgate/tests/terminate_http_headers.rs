//! HTTP header mode seen by nginx's access log: the client's address and certificate identity
//! arrive as headers, and headers the client forged are gone.

use std::time::Duration;

use tlsgate_testkit::clients::{curl, describe};
use tlsgate_testkit::data::{random_file, sha256_file};
use tlsgate_testkit::nginx::Nginx;
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::{Proc, Tlsgate};
use tlsgate_tls::pki::ClientSpec;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");

#[test]
fn nginx_sees_forwarded_and_client_certificate_headers_not_forged_ones() {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let alice = ClientSpec { common_name: "alice", uri: &["spiffe://test/alice"], ..Default::default() };
    pki.ca.issue_client(&alice).unwrap().write(pki.dir.path(), "alice").unwrap();
    let root = pki.path("www");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("index.html"), "hello from nginx\n").unwrap();
    let nginx = Nginx::start(&root);
    let config = format!(
        r#"
[[terminate.listener]]
name = "http"
listen = "127.0.0.1:0"
  [terminate.listener.client_auth]
  mode = "optional"
  ca = "ca.pem"
  [[terminate.listener.certificate]]
  cert = "server.pem"
  key = "server.key"
  default = true
  [[terminate.listener.route]]
  backends = ["{}"]
  http_headers = true
"#,
        nginx.addr
    );
    std::fs::write(pki.path("tlsgate.toml"), config).unwrap();
    let gate = Tlsgate::start(BIN, &["terminate", "--config", pki.path("tlsgate.toml").to_str().unwrap()]);
    let port = gate.listening(Some("http")).port();
    let url = format!("https://localhost:{port}/index.html");
    let (cert, key) = (pki.path("alice.pem"), pki.path("alice.key"));

    // With a certificate, forging identity headers, two requests on one connection.
    let out = curl(&[
        "--cacert",
        pki.ca(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "-H",
        "X-Forwarded-For: 6.6.6.6",
        "-H",
        "X-Client-CN: admin",
        "-H",
        "X-Client-Verify: SUCCESS",
        &url,
        &url,
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from nginx\nhello from nginx\n");
    // Without one, forging again.
    let out =
        curl(&["--cacert", pki.ca(), "-H", "X-Client-CN: admin", "-H", "X-Client-Verify: SUCCESS", &url]);
    assert!(out.status.success(), "{}", describe(&out));

    // A streamed 16 MiB upload in this mode.
    let body = pki.path("up.bin");
    let want = random_file(&body, 16 << 20);
    let put = format!("https://localhost:{port}/up.bin");
    let out = curl(&["--cacert", pki.ca(), "-f", "-T", body.to_str().unwrap(), &put]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sha256_file(&root.join("up.bin")), want);

    gate.proc.wait_for(&["connection closed"], Duration::from_secs(10));
    // Three GETs and the PUT.
    let log = nginx.access_log_lines(4);
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("GET /index.html")).collect();
    assert_eq!(lines.len(), 3, "{log}");
    for l in &lines[..2] {
        for want in [
            "xff=\"127.0.0.1\"",
            "proto=\"https\"",
            "verify=\"SUCCESS\"",
            "cn=\"alice\"",
            "uri=\"spiffe://test/alice\"",
            "subject=\"CN=alice",
        ] {
            assert!(l.contains(want), "{want} missing: {l}");
        }
    }
    for want in ["xff=\"127.0.0.1\"", "verify=\"NONE\"", "cn=\"-\""] {
        assert!(lines[2].contains(want), "{want} missing: {}", lines[2]);
    }
    assert!(!log.contains("6.6.6.6") && !log.contains("admin"), "a forged header reached nginx:\n{log}");
    // Both requests of the first client shared one TLS connection (keep-alive through the mode).
    assert_eq!(gate.proc.lines_with(&["handshake done", "client_cert=CN=alice"]).len(), 1);
}

/// A backend that normalises header names the CGI way (Python's wsgiref: `X_Forwarded_For` and
/// `X-Forwarded-For` are both `HTTP_X_FORWARDED_FOR`) sees only tlsgate's identity headers,
/// whatever spelling the client forged them in.
#[test]
fn a_normalising_backend_sees_no_forged_spelling() {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(tlsgate_testkit::docs::support_script("wsgi_environ.py"));
    let wsgi = Proc::spawn("wsgi", cmd);
    let line = wsgi.wait_for(&["listening"], Duration::from_secs(10));
    let backend = format!("127.0.0.1:{}", line.trim_start_matches("listening ").trim());
    let config = format!(
        "[[terminate.listener]]\nname = \"http\"\nlisten = \"127.0.0.1:0\"\n\
         [[terminate.listener.certificate]]\ncert = \"server.pem\"\nkey = \"server.key\"\ndefault = true\n\
         [[terminate.listener.route]]\nbackends = [\"{backend}\"]\nhttp_headers = true\n"
    );
    std::fs::write(pki.path("tlsgate.toml"), config).unwrap();
    let gate = Tlsgate::start(BIN, &["terminate", "--config", pki.path("tlsgate.toml").to_str().unwrap()]);
    let addr = gate.listening(Some("http"));
    let mut forged = Vec::new();
    for h in [
        "X_Forwarded_For: 6.6.6.1",
        "X-Forwarded_For: 6.6.6.2",
        "x_forwarded-for: 6.6.6.3",
        "X-Real-IP: 6.6.6.4",
        "X_Real_Ip: 6.6.6.5",
        "X_Client_CN: admin",
        "X-Client_Verify: SUCCESS",
        "True-Client-IP: 6.6.6.6",
        "X-Cluster-Client-IP: 6.6.6.7",
        "Client-IP: 6.6.6.8",
        "X-Original-Forwarded-For: 6.6.6.9",
        "X_Forwarded_Proto: http",
        "Forwarded: for=6.6.6.10",
    ] {
        forged.extend(["-H", h]);
    }
    let url = format!("https://localhost:{}/", addr.port());
    let mut args = vec!["--cacert", pki.ca(), "--interface", "127.0.0.61", "-f"];
    args.extend(forged);
    args.push(&url);
    let out = curl(&args);
    assert!(out.status.success(), "{}", describe(&out));
    let seen = String::from_utf8_lossy(&out.stdout).into_owned();
    for want in [
        "\"HTTP_X_FORWARDED_FOR\": \"127.0.0.61\"",
        "\"HTTP_X_FORWARDED_PROTO\": \"https\"",
        "\"HTTP_X_CLIENT_VERIFY\": \"NONE\"",
    ] {
        assert!(seen.contains(want), "{want} missing: {seen}");
    }
    for gone in
        ["6.6.6.", "admin", "SUCCESS", "HTTP_X_REAL_IP", "HTTP_X_CLIENT_CN", "HTTP_FORWARDED", "\"http\""]
    {
        assert!(!seen.contains(gone), "a forged header reached the backend ({gone}): {seen}");
    }
    drop(gate);
}

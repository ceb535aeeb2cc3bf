//! HTTP header mode seen by nginx's access log: the client's address and certificate identity
//! arrive as headers, and headers the client forged are gone.

use std::time::Duration;

use tlsgate_testkit::clients::{curl, describe};
use tlsgate_testkit::data::{random_file, sha256_file};
use tlsgate_testkit::nginx::Nginx;
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::Tlsgate;
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

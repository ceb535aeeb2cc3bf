//! `tlsgate originate`: a plaintext curl reaches an HTTPS nginx through tlsgate; the upstream's
//! certificate is verified (CA and name), a client certificate is presented when configured, the
//! second connection resumes, and a dead first upstream fails over to the next.

use std::time::Duration;

use tlsgate_testkit::clients::{curl, describe};
use tlsgate_testkit::net::dead_port;
use tlsgate_testkit::nginx::Nginx;
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::{Proc, Tlsgate};
use tlsgate_tls::pki::{ClientSpec, TestCa};

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");

struct Setup {
    pki: Pki,
    nginx: Nginx,
}

fn https_nginx(require_client_cert: bool) -> Setup {
    let pki = Pki::new();
    let (cert, key) = pki.server("upstream", &["localhost"]);
    let root = pki.path("www");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("index.html"), "hello over TLS\n").unwrap();
    let ca = require_client_cert.then_some(pki.ca_path.as_path());
    let nginx = Nginx::start_https(&root, &cert, &key, ca);
    Setup { pki, nginx }
}

fn originate(args: &[&str]) -> (Tlsgate, u16) {
    let mut all = vec!["originate", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let gate = Tlsgate::start(BIN, &all);
    let line = gate.proc.wait_logged(&["originate listening"], Duration::from_secs(30));
    let port = Proc::field(&line, "addr").unwrap().parse::<std::net::SocketAddr>().unwrap().port();
    (gate, port)
}

fn plain_get(port: u16) -> std::process::Output {
    curl(&[&format!("http://127.0.0.1:{port}/index.html")])
}

#[test]
fn plaintext_curl_reaches_https_nginx_and_the_second_connection_resumes() {
    let s = https_nginx(false);
    let upstream = s.nginx.addr.to_string();
    let (gate, port) = originate(&[
        "--connect",
        &upstream,
        "--ca",
        s.pki.ca(),
        "--sni",
        "localhost",
        "--admin",
        "127.0.0.1:0",
    ]);
    for _ in 0..2 {
        let out = plain_get(port);
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello over TLS\n");
    }
    gate.proc.wait_for(&["upstream handshake done", "resumed=false"], Duration::from_secs(10));
    gate.proc.wait_for(&["upstream handshake done", "resumed=true"], Duration::from_secs(10));
    let log = s.nginx.access_log_lines(2);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].contains("reused=\".\"") && lines[1].contains("reused=\"r\""),
        "nginx saw no resumption:\n{log}"
    );
    assert!(lines[0].contains("tls=\"TLSv1.3\""), "{log}");
    let admin =
        Proc::field(&gate.proc.wait_logged(&["admin listening"], Duration::from_secs(10)), "addr").unwrap();
    let metrics = String::from_utf8_lossy(&curl(&[&format!("http://{admin}/metrics")]).stdout).into_owned();
    assert!(
        metrics.contains(
            "tlsgate_upstream_handshakes_total{listener=\"127.0.0.1:0\",result=\"ok\",resumed=\"true\"} 1"
        ),
        "{metrics}"
    );
}

#[test]
fn wrong_ca_and_wrong_name_are_refused_with_a_clear_log_line() {
    let s = https_nginx(false);
    let upstream = s.nginx.addr.to_string();
    let other = s.pki.path("other-ca.pem");
    std::fs::write(&other, TestCa::new("not the upstream's CA").unwrap().cert_pem()).unwrap();
    let (gate, port) =
        originate(&["--connect", &upstream, "--ca", other.to_str().unwrap(), "--sni", "localhost"]);
    assert!(String::from_utf8_lossy(&plain_get(port).stdout).is_empty());
    gate.proc.wait_for(
        &["upstream failed", "side=backend", "server certificate not issued by a trusted CA"],
        Duration::from_secs(10),
    );
    gate.proc.wait_for(&["no upstream, client connection closed"], Duration::from_secs(10));

    let (gate, port) = originate(&["--connect", &upstream, "--ca", s.pki.ca(), "--sni", "wrong.test"]);
    assert!(String::from_utf8_lossy(&plain_get(port).stdout).is_empty());
    gate.proc.wait_for(
        &["upstream failed", "server certificate is not valid for wrong.test (it names localhost"],
        Duration::from_secs(10),
    );
    assert!(s.nginx.access_log().is_empty(), "a request reached the upstream: {}", s.nginx.access_log());
}

#[test]
fn client_certificate_is_presented_and_a_dead_upstream_fails_over() {
    let s = https_nginx(true);
    let client =
        s.pki.ca.issue_client(&ClientSpec { common_name: "originator", ..Default::default() }).unwrap();
    let (cert, key) = client.write(s.pki.dir.path(), "client").unwrap();
    let dead = format!("127.0.0.1:{}", dead_port());
    let upstream = s.nginx.addr.to_string();
    let (gate, port) = originate(&[
        "--connect",
        &dead,
        "--connect",
        &upstream,
        "--ca",
        s.pki.ca(),
        "--sni",
        "localhost",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let out = plain_get(port);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello over TLS\n");
    gate.proc.wait_for(&["upstream failed", &dead, "refused"], Duration::from_secs(10));
    gate.proc.wait_for(&["upstream handshake done", &upstream], Duration::from_secs(10));
    let log = s.nginx.access_log_lines(1);
    assert!(log.contains("CN=originator\""), "{log}");

    // Without the certificate, nginx refuses the request.
    let (_gate, port) = originate(&["--connect", &upstream, "--ca", s.pki.ca(), "--sni", "localhost"]);
    let out = plain_get(port);
    assert!(String::from_utf8_lossy(&out.stdout).contains("400"), "{}", describe(&out));
}

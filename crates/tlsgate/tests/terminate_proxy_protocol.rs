//! The PROXY protocol both ways, against real peers: nginx (`listen … proxy_protocol`) sees the
//! client's real address in v1 and v2; a backend with its own v2 parser (Python, written from the
//! spec) receives the TLS details as TLVs; and a listener behind HAProxy (`send-proxy-v2`) takes
//! the client's address from HAProxy's header.

use std::process::{Command, Stdio};
use std::time::Duration;

use tlsgate_testkit::clients::{curl, describe};
use tlsgate_testkit::net::{free_port, wait_accepting};
use tlsgate_testkit::nginx::Nginx;
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::{Proc, Tlsgate};
use tlsgate_tls::pki::ClientSpec;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");

fn terminate(pki: &Pki, backend: &str, extra: &[&str]) -> (Tlsgate, u16) {
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let (gate, addr) = Tlsgate::terminate(BIN, &[], (&cert, &key), backend, extra);
    (gate, addr.port())
}

#[test]
fn nginx_sees_the_real_client_address_in_v1_and_v2() {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let root = pki.path("www");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("index.html"), "behind PROXY\n").unwrap();
    let nginx = Nginx::start_proxy_protocol(&root);
    for (i, (version, from)) in [("v1", "127.0.0.21"), ("v2", "127.0.0.22")].into_iter().enumerate() {
        let (_gate, port) = terminate(&pki, &nginx.addr.to_string(), &["--proxy-protocol", version]);
        let out = curl(&[
            "--cacert",
            pki.ca(),
            "--interface",
            from,
            &format!("https://localhost:{port}/index.html"),
        ]);
        assert!(out.status.success(), "{version}: {}", describe(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "behind PROXY\n");
        let log = nginx.access_log_lines(i + 1);
        assert!(log.contains(&format!("pp=\"{from}:")), "{version}: nginx did not see {from}:\n{log}");
    }
}

#[test]
fn v2_tlvs_carry_alpn_sni_version_cipher_and_the_client_certificate() {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let alice = ClientSpec {
        common_name: "alice",
        dns: &["alice.clients.test"],
        uri: &["spiffe://test/alice"],
        ..Default::default()
    };
    pki.ca.issue_client(&alice).unwrap().write(pki.dir.path(), "alice").unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(tlsgate_testkit::docs::support_script("proxy_v2_server.py"));
    let server = Proc::spawn("proxy_v2_server", cmd);
    let line = server.wait_for(&["listening"], Duration::from_secs(10));
    let port = line.trim_start_matches("listening ").to_string();
    let backend = format!("127.0.0.1:{port}");
    let config = format!(
        "[[terminate.listener]]\nname = \"pp\"\nlisten = \"127.0.0.1:0\"\nalpn = [\"http/1.1\"]\n\
         [terminate.listener.client_auth]\nmode = \"optional\"\nca = \"ca.pem\"\n\
         [[terminate.listener.certificate]]\ncert = \"server.pem\"\nkey = \"server.key\"\ndefault = true\n\
         [[terminate.listener.route]]\nbackends = [\"{backend}\"]\nproxy_protocol = \"v2\"\n"
    );
    std::fs::write(pki.path("tlsgate.toml"), config).unwrap();
    let gate = Tlsgate::start(BIN, &["terminate", "--config", pki.path("tlsgate.toml").to_str().unwrap()]);
    let port = gate.listening(Some("pp")).port();
    let (c, k) = (pki.path("alice.pem"), pki.path("alice.key"));
    let out = curl(&[
        "--cacert",
        pki.ca(),
        "--cert",
        c.to_str().unwrap(),
        "--key",
        k.to_str().unwrap(),
        "--interface",
        "127.0.0.31",
        "--tlsv1.3",
        &format!("https://localhost:{port}/"),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let line = server.wait_for(&["\"src\""], Duration::from_secs(10));
    for want in [
        "\"src\": \"127.0.0.31:",
        &format!("\"dst\": \"127.0.0.1:{port}\""),
        "\"alpn\": \"http/1.1\"",
        "\"authority\": \"localhost\"",
        "\"ssl_version\": \"TLSv1.3\"",
        "\"ssl_cipher\": \"TLS_AES_128_GCM_SHA256\"",
        "\"ssl_cn\": \"alice\"",
        "\"ssl_client\": 7",
        "\"ssl_verify\": 0",
        "\"cert_dns\": [\"alice.clients.test\"]",
        "\"cert_uri\": [\"spiffe://test/alice\"]",
        "\"cert_subject\": [\"CN=alice",
    ] {
        assert!(line.contains(want), "{want} missing from {line}");
    }
    // Without a client certificate: no identity TLV, verify says not verified.
    let out =
        curl(&["--cacert", pki.ca(), "--tlsv1.2", "--tls-max", "1.2", &format!("https://localhost:{port}/")]);
    assert!(out.status.success(), "{}", describe(&out));
    let line = server.wait_for(&["\"src\""], Duration::from_secs(10));
    assert!(line.contains("\"ssl_version\": \"TLSv1.2\"") && line.contains("\"ssl_verify\": 1"), "{line}");
    assert!(!line.contains("cert_subject") && !line.contains("ssl_cn"), "{line}");
}

#[test]
fn behind_haproxy_the_client_address_comes_from_its_proxy_header() {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let root = pki.path("www");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("index.html"), "through haproxy\n").unwrap();
    let nginx = Nginx::start(&root);
    let config = format!(
        "[[terminate.listener]]\nname = \"lb\"\nlisten = \"127.0.0.1:0\"\naccept_proxy_protocol = true\n\
         [[terminate.listener.certificate]]\ncert = \"server.pem\"\nkey = \"server.key\"\ndefault = true\n\
         [[terminate.listener.route]]\nbackends = [\"{}\"]\nhttp_headers = true\n",
        nginx.addr
    );
    std::fs::write(pki.path("tlsgate.toml"), config).unwrap();
    let gate = Tlsgate::start(BIN, &["terminate", "--config", pki.path("tlsgate.toml").to_str().unwrap()]);
    let gate_port = gate.listening(Some("lb")).port();

    // HAProxy in TCP mode in front, sending PROXY v2.
    let front = free_port();
    let cfg = pki.path("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  log stderr format raw local0\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend f\n  bind 127.0.0.1:{front}\n  default_backend b\n\
             backend b\n  server gate 127.0.0.1:{gate_port} send-proxy-v2\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("haproxy");
    cmd.args(["-db", "-f", cfg.to_str().unwrap()]).stdin(Stdio::null());
    let _haproxy = Proc::spawn("haproxy", cmd);
    wait_accepting(format!("127.0.0.1:{front}").parse().unwrap(), Duration::from_secs(10));

    let resolve = format!("localhost:{front}:127.0.0.1");
    let out = curl(&[
        "--cacert",
        pki.ca(),
        "--interface",
        "127.0.0.41",
        "--resolve",
        &resolve,
        &format!("https://localhost:{front}/index.html"),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through haproxy\n");
    gate.proc.wait_for(&["client address from PROXY header", "client=127.0.0.41:"], Duration::from_secs(10));
    let log = nginx.access_log_lines(1);
    assert!(log.contains("xff=\"127.0.0.41\""), "{log}");

    // A client that skips HAProxy and speaks TLS straight away is refused: no PROXY header.
    let out = curl(&["--cacert", pki.ca(), &format!("https://localhost:{gate_port}/index.html")]);
    assert!(!out.status.success());
    gate.proc.wait_for(&["handshake failed", "expected a PROXY header"], Duration::from_secs(10));
}

/// Runs `support/proxy_v2_client.py`: a v2 header with `command` claiming 10.9.9.9, then a GET.
fn python_behind_v2(command: &str, from: &str, port: u16, ca: &str, path: &str) -> String {
    let script = tlsgate_testkit::docs::support_script("proxy_v2_client.py");
    let out = Command::new("python3")
        .arg(script)
        .args([command, from, &port.to_string(), ca, path])
        .output()
        .unwrap();
    assert!(out.status.success(), "{command}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_v2_local_header_keeps_the_peer_address() {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let root = pki.path("www");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("index.html"), "local\n").unwrap();
    let nginx = Nginx::start(&root);
    let config = format!(
        "[[terminate.listener]]\nname = \"lb\"\nlisten = \"127.0.0.1:0\"\naccept_proxy_protocol = true\n\
         [[terminate.listener.certificate]]\ncert = \"server.pem\"\nkey = \"server.key\"\ndefault = true\n\
         [[terminate.listener.route]]\nbackends = [\"{}\"]\nhttp_headers = true\n",
        nginx.addr
    );
    std::fs::write(pki.path("tlsgate.toml"), config).unwrap();
    let gate = Tlsgate::start(BIN, &["terminate", "--config", pki.path("tlsgate.toml").to_str().unwrap()]);
    let port = gate.listening(Some("lb")).port();

    // PROXY: the header's source is the client's, as before.
    let out = python_behind_v2("proxy", "127.0.0.51", port, pki.ca(), "/index.html");
    assert_eq!(out, "HTTP/1.1 200 OK\nlocal\n");
    gate.proc
        .wait_for(&["client address from PROXY header", "client=10.9.9.9:1000"], Duration::from_secs(10));
    let log = nginx.access_log_lines(1);
    assert!(log.contains("xff=\"10.9.9.9\""), "{log}");

    // LOCAL with the same address block: the addresses are ignored, the peer's address stays.
    let out = python_behind_v2("local", "127.0.0.52", port, pki.ca(), "/index.html");
    assert_eq!(out, "HTTP/1.1 200 OK\nlocal\n");
    let log = nginx.access_log_lines(2);
    let last = log.lines().last().unwrap();
    assert!(last.contains("xff=\"127.0.0.52\""), "{log}");
    gate.proc.wait_for(&["PROXY header without a client address", "command=Local"], Duration::from_secs(10));
}

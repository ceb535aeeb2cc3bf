//! SIGHUP in every long-running mode: the process logs what it reloaded and stays up, a
//! connection open across the signal keeps working, new connections work after it; a replaced
//! CA (originate) or certificate (tunnel gate) takes effect for new connections only, and a
//! broken file is refused by name while the old material keeps serving.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tlsgate_testkit::clients::{curl, describe};
use tlsgate_testkit::pki::{swap_in, Pki};
use tlsgate_testkit::process::{Proc, Tlsgate};
use tlsgate_testkit::tls_client;
use tlsgate_tls::pki::{write_file, ClientSpec, TestCa};

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const WAIT: Duration = Duration::from_secs(30);

fn hup(p: &Tlsgate) {
    let ok = Command::new("kill").args(["-HUP", &p.proc.pid().to_string()]).status().unwrap();
    assert!(ok.success());
}

fn assert_alive(p: &mut Tlsgate) {
    assert!(p.proc.is_running(), "tlsgate died:\n{}", p.proc.log_text());
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A plaintext connection kept open, for HTTP/1.1 requests one after another.
fn connect(addr: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp
}

/// One `GET /` on a kept-alive connection; the answer's body (the built-in backend's is one line).
fn get(stream: &mut impl ReadWrite) -> String {
    stream.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((_, body)) = text.split_once("\r\n\r\n") {
            if body.ends_with('\n') {
                return body.to_string();
            }
        }
        let n = stream.read(&mut chunk).unwrap_or_else(|e| panic!("read after {text:?}: {e}"));
        assert!(n > 0, "connection closed after {text:?}");
        answer.extend_from_slice(&chunk[..n]);
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn curl_ok(args: &[&str], want: &str) {
    let out = curl(args);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}

/// Writes `text` to `path` by renaming a complete file over it.
fn replace(path: &Path, text: &str, mode: u32) {
    let staged = path.with_extension("new");
    write_file(&staged, text, mode).unwrap();
    std::fs::rename(staged, path).unwrap();
}

#[test]
fn terminate_reloads_on_sighup_and_keeps_serving() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server", &["localhost"]);
    let (_backend, backend) = Tlsgate::backend(BIN, "127.0.0.1:0", "ops");
    let (mut gate, addr) = Tlsgate::terminate(BIN, &[], (&cert, &key), &backend, &[]);
    let mut open = tls_client::handshake(addr, &pki.ca_path, "localhost", WAIT).unwrap();
    assert!(tls_client::get(&mut open).unwrap().ends_with("hello from ops\n"));

    hup(&gate);
    let line = gate.proc.wait_for(&["reloaded", "section=terminate"], WAIT);
    assert!(line.contains("server.pem") && line.contains("server.key"), "{line}");
    assert_alive(&mut gate);
    assert!(tls_client::get(&mut open).unwrap().ends_with("hello from ops\n"));
    let url = format!("https://localhost:{}/", addr.port());
    curl_ok(&["--cacert", pki.ca(), &url], "hello from ops\n");
}

#[test]
fn backend_and_demo_say_there_is_nothing_to_reload_and_keep_serving() {
    let (mut backend, addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "solo");
    let addr: SocketAddr = addr.parse().unwrap();
    let mut open = connect(addr);
    assert_eq!(get(&mut open), "hello from solo\n");
    hup(&backend);
    backend.proc.wait_for(&["SIGHUP: nothing to reload", "mode=backend"], WAIT);
    assert_alive(&mut backend);
    assert_eq!(get(&mut open), "hello from solo\n");
    curl_ok(&[&format!("http://{addr}/")], "hello from solo\n");

    let mut demo = Tlsgate::start(BIN, &["demo", "--listen", "127.0.0.1:0"]);
    let line = demo.proc.wait_for(&["curl --cacert"], WAIT);
    let words: Vec<&str> = line.split_whitespace().collect();
    let (ca, url) = (PathBuf::from(words[2]), words[3].to_string());
    let addr = demo.listening(Some("demo"));
    let mut open = tls_client::handshake(addr, &ca, "localhost", WAIT).unwrap();
    assert!(tls_client::get(&mut open).unwrap().ends_with("hello from tlsgate demo backend\n"));
    hup(&demo);
    demo.proc.wait_for(&["SIGHUP: nothing to reload", "mode=demo"], WAIT);
    assert_alive(&mut demo);
    assert!(tls_client::get(&mut open).unwrap().ends_with("hello from tlsgate demo backend\n"));
    curl_ok(&["--cacert", s(&ca), &url], "hello from tlsgate demo backend\n");
}

#[test]
fn originate_trusts_a_replaced_ca_for_new_connections_after_sighup() {
    // The upstream: tlsgate terminate with a certificate from the first CA.
    let pki = Pki::new();
    let (cert, key) = pki.server("upstream", &["localhost"]);
    let (_backend, backend) = Tlsgate::backend(BIN, "127.0.0.1:0", "upstream");
    let (upstream, upstream_addr) = Tlsgate::terminate(BIN, &[], (&cert, &key), &backend, &[]);
    let trusted = pki.path("upstream-ca.pem");
    replace(&trusted, pki.ca.cert_pem(), 0o644);
    let upstream_arg = upstream_addr.to_string();
    let mut originate = Tlsgate::start(
        BIN,
        &[
            "originate",
            "--listen",
            "127.0.0.1:0",
            "--connect",
            &upstream_arg,
            "--sni",
            "localhost",
            "--ca",
            s(&trusted),
        ],
    );
    let addr = originate.listening(None);
    let url = format!("http://{addr}/");
    let mut open = connect(addr);
    assert_eq!(get(&mut open), "hello from upstream\n");

    // The upstream moves to a certificate from a second CA: originate no longer trusts it.
    let second = TestCa::new("second upstream CA").unwrap();
    swap_in(&second.issue_server(&["localhost"]).unwrap(), pki.dir.path(), "upstream");
    hup(&upstream);
    upstream.proc.wait_for(&["reloaded", "section=terminate"], WAIT);
    let out = curl(&[&url]);
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    originate.proc.wait_for(&["upstream failed", "TLS handshake"], WAIT);

    // Its CA file now holds the second CA: after SIGHUP new connections trust it.
    replace(&trusted, second.cert_pem(), 0o644);
    hup(&originate);
    let line = originate.proc.wait_for(&["reloaded", "section=originate"], WAIT);
    assert!(line.contains("upstream-ca.pem"), "{line}");
    assert_alive(&mut originate);
    curl_ok(&[&url], "hello from upstream\n");
    assert_eq!(get(&mut open), "hello from upstream\n", "the connection open across SIGHUP");

    // A broken CA file: refused by name, the second CA still trusted.
    replace(&trusted, "not a certificate\n", 0o644);
    hup(&originate);
    let line = originate.proc.wait_for(&["reload refused, still serving the previous configuration"], WAIT);
    assert!(line.contains("side=config") && line.contains("upstream-ca.pem"), "{line}");
    assert_alive(&mut originate);
    curl_ok(&[&url], "hello from upstream\n");
    assert_eq!(get(&mut open), "hello from upstream\n");
}

struct Tunnel {
    pki: Pki,
    portal_cert: PathBuf,
    portal_key: PathBuf,
    backend: String,
    _backend: Tlsgate,
}

fn tunnel_setup() -> Tunnel {
    let pki = Pki::new();
    pki.server("gate", &["127.0.0.1", "localhost"]);
    let spec = ClientSpec { common_name: "laptop-1", ..ClientSpec::default() };
    let (portal_cert, portal_key) =
        pki.ca.issue_client(&spec).unwrap().write(pki.dir.path(), "portal").unwrap();
    let (backend_proc, backend) = Tlsgate::backend(BIN, "127.0.0.1:0", "far side");
    Tunnel { pki, portal_cert, portal_key, backend, _backend: backend_proc }
}

fn start_gate(t: &Tunnel) -> (Tlsgate, String) {
    let (cert, key) = (t.pki.path("gate.pem"), t.pki.path("gate.key"));
    let gate = Tlsgate::start(
        BIN,
        &[
            "tunnel",
            "gate",
            "--listen",
            "127.0.0.1:0",
            "--cert",
            s(&cert),
            "--key",
            s(&key),
            "--client-ca",
            t.pki.ca(),
        ],
    );
    let line = gate.proc.wait_logged(&["tunnel gate listening"], WAIT);
    (gate, Proc::field(&line, "listen").unwrap())
}

/// A portal trusting `ca` for the gate, with a TCP forward to the backend and SOCKS5; returns it
/// with the forward's and SOCKS's addresses once it logged the outcome of its first connect.
fn start_portal(t: &Tunnel, gate: &str, ca: &Path) -> (Tlsgate, SocketAddr, SocketAddr) {
    let forward = format!("tcp:127.0.0.1:0={}", t.backend);
    let portal = Tlsgate::start(
        BIN,
        &[
            "tunnel",
            "portal",
            "--gate",
            gate,
            "--ca",
            s(ca),
            "--cert",
            s(&t.portal_cert),
            "--key",
            s(&t.portal_key),
            "--forward",
            &forward,
            "--socks",
            "127.0.0.1:0",
        ],
    );
    let field = |needle: &str| -> SocketAddr {
        let line = portal.proc.wait_logged(&[needle], WAIT);
        Proc::field(&line, "listen").unwrap().parse().unwrap()
    };
    let (forward, socks) = (field("TCP forward"), field("SOCKS5 listening"));
    (portal, forward, socks)
}

fn socks_get(socks: SocketAddr, backend: &str) -> std::process::Output {
    curl(&["--socks5", &socks.to_string(), &format!("http://{backend}/")])
}

#[test]
fn tunnel_gate_serves_a_replaced_certificate_to_new_portals_after_sighup() {
    let t = tunnel_setup();
    let (mut gate, gate_addr) = start_gate(&t);
    let (_portal, forward, socks) = start_portal(&t, &gate_addr, &t.pki.ca_path);
    _portal.proc.wait_logged(&["connected to gate"], WAIT);
    let mut open = connect(forward);
    assert_eq!(get(&mut open), "hello from far side\n");

    // The gate's certificate is replaced with one from another CA.
    let second = TestCa::new("second gate CA").unwrap();
    let second_ca = t.pki.path("second-ca.pem");
    write_file(&second_ca, second.cert_pem(), 0o644).unwrap();
    swap_in(&second.issue_server(&["127.0.0.1", "localhost"]).unwrap(), t.pki.dir.path(), "gate");
    hup(&gate);
    let line = gate.proc.wait_for(&["reloaded", "section=tunnel.gate"], WAIT);
    assert!(line.contains("gate.pem") && line.contains("gate.key") && line.contains("ca.pem"), "{line}");
    assert_alive(&mut gate);

    // The tunnel open across SIGHUP carries on, old session and new ones alike.
    assert_eq!(get(&mut open), "hello from far side\n");
    let out = socks_get(socks, &t.backend);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from far side\n", "{}", describe(&out));

    // A portal trusting only the new CA connects; one trusting only the old CA no longer does.
    let (new_portal, new_forward, _) = start_portal(&t, &gate_addr, &second_ca);
    new_portal.proc.wait_logged(&["connected to gate"], WAIT);
    assert_eq!(get(&mut connect(new_forward)), "hello from far side\n");
    let (old_trust, _, _) = start_portal(&t, &gate_addr, &t.pki.ca_path);
    old_trust.proc.wait_logged(&["cannot reach gate", "TLS handshake with the gate failed"], WAIT);

    // A broken key: refused by name, the new certificate still served.
    replace(&t.pki.path("gate.key"), "not a key\n", 0o600);
    hup(&gate);
    let line = gate.proc.wait_for(&["reload refused, still serving the previous configuration"], WAIT);
    assert!(line.contains("side=config") && line.contains("gate.key"), "{line}");
    assert_alive(&mut gate);
    let (again, again_forward, _) = start_portal(&t, &gate_addr, &second_ca);
    again.proc.wait_logged(&["connected to gate"], WAIT);
    assert_eq!(get(&mut connect(again_forward)), "hello from far side\n");
    assert_eq!(get(&mut open), "hello from far side\n");
}

#[test]
fn tunnel_portal_reloads_on_sighup_and_keeps_its_tunnel() {
    let t = tunnel_setup();
    let (_gate, gate_addr) = start_gate(&t);
    let (mut portal, forward, socks) = start_portal(&t, &gate_addr, &t.pki.ca_path);
    portal.proc.wait_for(&["connected to gate"], WAIT);
    let mut open = connect(forward);
    assert_eq!(get(&mut open), "hello from far side\n");

    hup(&portal);
    let line = portal.proc.wait_for(&["reloaded", "section=tunnel.portal"], WAIT);
    assert!(line.contains("portal.pem") && line.contains("portal.key"), "{line}");
    assert_alive(&mut portal);
    assert_eq!(get(&mut open), "hello from far side\n");
    assert_eq!(get(&mut connect(forward)), "hello from far side\n");
    let out = socks_get(socks, &t.backend);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from far side\n", "{}", describe(&out));
    assert!(portal.proc.lines_with(&["connected to gate"]).len() == 1, "the tunnel was not redone");

    // A broken CA file: refused by name, the tunnel untouched.
    replace(&t.pki.ca_path, "not a certificate\n", 0o644);
    hup(&portal);
    let line = portal.proc.wait_for(&["reload refused, still serving the previous configuration"], WAIT);
    assert!(line.contains("side=config") && line.contains("ca.pem"), "{line}");
    assert_alive(&mut portal);
    assert_eq!(get(&mut open), "hello from far side\n");
}

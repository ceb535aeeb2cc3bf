//! `tlsgate tunnel portal|gate` with real peers: curl through SOCKS5 to nginx by a name only the
//! gate's dnsmasq knows, 64 MiB each way, 200 concurrent curls, dig through the DNS forwarder and
//! a UDP forward, half-close, a stalled session beside a busy one, gate restart.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tlsgate_testkit::clients::{curl, describe};
use tlsgate_testkit::data::{random_file, sha256_file};
use tlsgate_testkit::dns::Dnsmasq;
use tlsgate_testkit::nginx::Nginx;
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::{Proc, Tlsgate};
use tlsgate_tls::pki::ClientSpec;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const WAIT: Duration = Duration::from_secs(30);
/// A name only the gate's resolver knows.
const WEB: &str = "web.tunnel.test";

struct Certs {
    pki: Pki,
    gate_cert: PathBuf,
    gate_key: PathBuf,
    portal_cert: PathBuf,
    portal_key: PathBuf,
}

fn certs() -> Certs {
    let pki = Pki::new();
    let (gate_cert, gate_key) = pki.server("gate", &["127.0.0.1", "localhost"]);
    let spec = ClientSpec {
        common_name: "laptop-1",
        dns: &[],
        uri: &["spiffe://corp.test/portal/laptop-1"],
        ip: &[],
        expired: false,
    };
    let (portal_cert, portal_key) =
        pki.ca.issue_client(&spec).unwrap().write(pki.dir.path(), "portal").unwrap();
    Certs { pki, gate_cert, gate_key, portal_cert, portal_key }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn start_gate(c: &Certs, listen: &str, extra: &[&str]) -> (Tlsgate, SocketAddr) {
    let mut args = vec![
        "tunnel",
        "gate",
        "--listen",
        listen,
        "--cert",
        s(&c.gate_cert),
        "--key",
        s(&c.gate_key),
        "--client-ca",
        c.pki.ca(),
    ];
    args.extend_from_slice(extra);
    let gate = Tlsgate::start(BIN, &args);
    let line = gate.proc.wait_logged(&["tunnel gate listening"], WAIT);
    let addr = Proc::field(&line, "listen").unwrap().parse().unwrap();
    (gate, addr)
}

fn start_portal(c: &Certs, gate: SocketAddr, cert: &Path, key: &Path, extra: &[&str]) -> Tlsgate {
    let gate = gate.to_string();
    let mut args =
        vec!["tunnel", "portal", "--gate", &gate, "--ca", c.pki.ca(), "--cert", s(cert), "--key", s(key)];
    args.extend_from_slice(extra);
    Tlsgate::start(BIN, &args)
}

/// A portal with SOCKS on a free port, connected to the gate.
fn connected_portal(c: &Certs, gate: SocketAddr, extra: &[&str]) -> (Tlsgate, SocketAddr) {
    let mut args = vec!["--socks", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let portal = start_portal(c, gate, &c.portal_cert, &c.portal_key, &args);
    let line = portal.proc.wait_logged(&["SOCKS5 listening"], WAIT);
    let socks = Proc::field(&line, "listen").unwrap().parse().unwrap();
    portal.proc.wait_logged(&["connected to gate"], WAIT);
    (portal, socks)
}

fn logged_addr(p: &Tlsgate, needle: &str) -> SocketAddr {
    let line = p.proc.wait_logged(&[needle], WAIT);
    Proc::field(&line, "listen").unwrap().parse().unwrap()
}

fn socks_curl(socks: SocketAddr, url: &str, extra: &[&str]) -> Output {
    let proxy = socks.to_string();
    let mut args = vec!["--socks5-hostname", proxy.as_str(), url];
    args.extend_from_slice(extra);
    curl(&args)
}

fn web_root(dir: &Path, big: Option<usize>) -> (PathBuf, Option<String>) {
    let root = dir.join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "hello through the tunnel\n").unwrap();
    let sum = big.map(|len| random_file(&root.join("big.bin"), len));
    (root, sum)
}

#[test]
fn socks_curl_reaches_nginx_by_a_name_only_the_gate_resolves_64mib_each_way() {
    let c = certs();
    let (root, big_sum) = web_root(c.pki.dir.path(), Some(64 << 20));
    let nginx = Nginx::start(&root);
    let dns = Dnsmasq::start(&[(WEB, "127.0.0.1")]);
    // The portal's own resolver does not know the name.
    let local = Command::new("getent").args(["hosts", WEB]).output().unwrap();
    assert!(!local.status.success(), "{WEB} resolves locally; the test would prove nothing");
    let resolver = dns.addr.to_string();
    let (_gate, gate_addr) = start_gate(&c, "127.0.0.1:0", &["--resolver", &resolver]);
    let (backend, backend_addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "tunnel-backend");
    let (_portal, socks) = connected_portal(&c, gate_addr, &[]);

    let port = nginx.addr.port();
    let out = socks_curl(socks, &format!("http://{WEB}:{port}/index.html"), &["-sS"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello through the tunnel\n");
    dns.proc.wait_for(&["query[A]", WEB], WAIT);

    // 64 MiB down from nginx, compared by SHA-256.
    let down = c.pki.path("down.bin");
    let out = socks_curl(socks, &format!("http://{WEB}:{port}/big.bin"), &["-sS", "-o", s(&down)]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sha256_file(&down), big_sum.unwrap());

    // 64 MiB up to the built-in backend, which answers with the SHA-256 of what it received.
    let up = c.pki.path("up.bin");
    let up_sum = random_file(&up, 64 << 20);
    let bport = backend_addr.rsplit(':').next().unwrap();
    let out = socks_curl(
        socks,
        &format!("http://{WEB}:{bport}/sha256"),
        &["-sS", "--data-binary", &format!("@{}", s(&up))],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), up_sum);
    drop(backend);
}

#[test]
fn two_hundred_concurrent_curls_all_succeed() {
    let c = certs();
    let (root, _) = web_root(c.pki.dir.path(), None);
    let nginx = Nginx::start(&root);
    let (_gate, gate_addr) = start_gate(&c, "127.0.0.1:0", &[]);
    let (_portal, socks) = connected_portal(&c, gate_addr, &[]);
    let url = format!("http://127.0.0.1:{}/index.html", nginx.addr.port());
    let proxy = socks.to_string();
    let children: Vec<_> = (0..200)
        .map(|_| {
            Command::new("curl")
                .args(["-sS", "--max-time", "60", "--socks5-hostname", &proxy, &url])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut failures = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        if !out.status.success() || out.stdout != b"hello through the tunnel\n" {
            failures.push(describe(&out));
        }
    }
    assert!(failures.is_empty(), "{} of 200 failed, first: {}", failures.len(), failures[0]);
}

fn dig(server: SocketAddr, name: &str) -> Output {
    let at = format!("@{}", server.ip());
    let port = server.port().to_string();
    Command::new("dig").args([&at, "-p", &port, name, "A", "+short", "+tries=1", "+time=5"]).output().unwrap()
}

#[test]
fn dig_through_the_dns_forwarder_and_a_udp_forward_reaches_the_gates_dnsmasq() {
    let c = certs();
    let dns = Dnsmasq::start(&[(WEB, "192.0.2.44")]);
    let resolver = dns.addr.to_string();
    let (_gate, gate_addr) = start_gate(&c, "127.0.0.1:0", &["--resolver", &resolver]);
    let forward = format!("udp:127.0.0.1:0={resolver}");
    let (portal, _) = connected_portal(&c, gate_addr, &["--dns", "127.0.0.1:0", "--forward", &forward]);
    let dns_fwd = logged_addr(&portal, "DNS forwarder");
    let udp_fwd = logged_addr(&portal, "UDP forward");
    for via in [dns_fwd, udp_fwd] {
        let out = dig(via, WEB);
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "192.0.2.44",
            "via {via}: {}",
            describe(&out)
        );
    }
    assert_eq!(dns.proc.lines_with(&["query[A]", WEB]).len(), 2, "{}", dns.proc.log_text());
}

/// A server that reads the request to EOF, then answers with `reply_len` bytes and closes.
fn read_all_then_reply(reply_len: usize) -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut sock, _) = l.accept().unwrap();
        let mut request = Vec::new();
        sock.read_to_end(&mut request).unwrap();
        let reply: Vec<u8> = (0..reply_len).map(|i| (i % 251) as u8).collect();
        sock.write_all(&reply).unwrap();
        request
    });
    (addr, t)
}

#[test]
fn half_close_a_client_that_shuts_down_writing_still_gets_the_whole_reply() {
    let c = certs();
    let (server, seen) = read_all_then_reply(8 << 20);
    let (_gate, gate_addr) = start_gate(&c, "127.0.0.1:0", &[]);
    let forward = format!("tcp:127.0.0.1:0={server}");
    let (portal, _) = connected_portal(&c, gate_addr, &["--forward", &forward]);
    let fwd = logged_addr(&portal, "TCP forward");
    let mut sock = TcpStream::connect(fwd).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.write_all(b"the whole request").unwrap();
    sock.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    sock.read_to_end(&mut reply).unwrap();
    assert_eq!(seen.join().unwrap(), b"the whole request");
    assert_eq!(reply.len(), 8 << 20);
    assert!(reply.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
}

#[test]
fn a_stalled_session_does_not_stop_another() {
    let c = certs();
    let (root, big_sum) = web_root(c.pki.dir.path(), Some(32 << 20));
    let nginx = Nginx::start(&root);
    // A destination that accepts and never reads.
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let (_gate, gate_addr) = start_gate(&c, "127.0.0.1:0", &[]);
    let forward = format!("tcp:127.0.0.1:0={sink_addr}");
    let (portal, socks) = connected_portal(&c, gate_addr, &["--forward", &forward]);
    let fwd = logged_addr(&portal, "TCP forward");
    let url = format!("http://127.0.0.1:{}/big.bin", nginx.addr.port());
    let down = c.pki.path("down.bin");

    let baseline = Instant::now();
    let out = socks_curl(socks, &url, &["-sS", "-o", s(&down)]);
    assert!(out.status.success(), "{}", describe(&out));
    let baseline = baseline.elapsed();

    // Stall: write into the forward until the writes stop being taken.
    let mut stalled = TcpStream::connect(fwd).unwrap();
    let _held = sink.accept().unwrap();
    stalled.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let mut pushed = 0usize;
    while pushed < (1 << 30) {
        match stalled.write(&chunk) {
            Ok(n) => pushed += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                break
            }
            Err(e) => panic!("stalled session failed instead of stalling: {e}"),
        }
    }
    // Flow control held the sender back: what it pushed sits in socket buffers and one window,
    // not in an unbounded queue.
    assert!(pushed < 64 << 20, "a stalled session took {pushed} bytes: no back-pressure");

    let during = Instant::now();
    let out = socks_curl(socks, &url, &["-sS", "-o", s(&down)]);
    assert!(out.status.success(), "{}", describe(&out));
    let during = during.elapsed();
    assert_eq!(sha256_file(&down), big_sum.unwrap());
    eprintln!(
        "32 MiB: {:.0} MB/s alone, {:.0} MB/s beside a stalled session holding {} KiB",
        33.5 / baseline.as_secs_f64(),
        33.5 / during.as_secs_f64(),
        pushed / 1024
    );
}

#[test]
fn the_portal_reconnects_after_a_gate_restart() {
    let c = certs();
    let (root, _) = web_root(c.pki.dir.path(), None);
    let nginx = Nginx::start(&root);
    let (gate, gate_addr) = start_gate(&c, "127.0.0.1:0", &[]);
    let (portal, socks) = connected_portal(&c, gate_addr, &[]);
    let url = format!("http://127.0.0.1:{}/index.html", nginx.addr.port());
    assert!(socks_curl(socks, &url, &["-sS"]).status.success());
    // A gate stopped with SIGTERM says goodbye (GoAway) before it goes.
    let pid = gate.proc.pid().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    portal.proc.wait_for(&["tunnel to gate ended", "peer closed the tunnel"], WAIT);
    drop(gate);
    let (_gate, _) = start_gate(&c, &gate_addr.to_string(), &[]);
    portal.proc.wait_for(&["connected to gate"], WAIT);
    let out = socks_curl(socks, &url, &["-sS"]);
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn portals_with_unknown_ca_expired_or_revoked_certificates_are_refused() {
    let c = certs();
    let other = Pki::new();
    let spec = |cn, expired| ClientSpec { common_name: cn, dns: &[], uri: &[], ip: &[], expired };
    let (foreign_cert, foreign_key) =
        other.ca.issue_client(&spec("stranger", false)).unwrap().write(c.pki.dir.path(), "stranger").unwrap();
    let (expired_cert, expired_key) =
        c.pki.ca.issue_client(&spec("old-laptop", true)).unwrap().write(c.pki.dir.path(), "old").unwrap();
    let stolen = c.pki.ca.issue_client(&spec("stolen-laptop", false)).unwrap();
    let (stolen_cert, stolen_key) = stolen.write(c.pki.dir.path(), "stolen").unwrap();
    let crl = c.pki.path("portals.crl");
    std::fs::write(&crl, c.pki.ca.crl(&[stolen.serial], 1).unwrap()).unwrap();

    let (gate, gate_addr) = start_gate(&c, "127.0.0.1:0", &["--crl", s(&crl)]);
    let (root, _) = web_root(c.pki.dir.path(), None);
    let nginx = Nginx::start(&root);
    let (_good, socks) = connected_portal(&c, gate_addr, &[]);
    for (cert, key, why) in [
        // The other CA has the same name as the trusted one: its signature does not verify.
        (&foreign_cert, &foreign_key, "client certificate has a bad signature"),
        (&expired_cert, &expired_key, "client certificate expired on"),
        (&stolen_cert, &stolen_key, "client certificate revoked"),
    ] {
        let bad = start_portal(&c, gate_addr, cert, key, &[]);
        gate.proc.wait_for(&["portal refused", why], WAIT);
        bad.proc.wait_for(&["cannot reach gate"], WAIT);
        assert!(bad.proc.lines_with(&["connected to gate"]).is_empty());
    }
    // The good portal is untouched.
    let out = socks_curl(socks, &format!("http://127.0.0.1:{}/index.html", nginx.addr.port()), &["-sS"]);
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn an_open_outside_policy_gets_a_reason() {
    let c = certs();
    let (root, _) = web_root(c.pki.dir.path(), None);
    let nginx = Nginx::start(&root);
    let allowed = format!("allow tcp 127.0.0.1 {}", nginx.addr.port());
    let (gate, gate_addr) = start_gate(&c, "127.0.0.1:0", &["--allow", &allowed]);
    let (_portal, socks) = connected_portal(&c, gate_addr, &[]);
    let out = socks_curl(socks, &format!("http://127.0.0.1:{}/index.html", nginx.addr.port()), &["-sS"]);
    assert!(out.status.success(), "{}", describe(&out));
    let denied = tlsgate_testkit::net::free_port();
    let out = socks_curl(socks, &format!("http://127.0.0.1:{denied}/"), &["-sS"]);
    assert!(!out.status.success());
    // SOCKS reply 2: "connection not allowed by ruleset".
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SOCKS5 connection to 127.0.0.1. (2)"),
        "{}",
        describe(&out)
    );
    let line = gate.proc.wait_for(
        &[
            "open refused",
            &format!("127.0.0.1:{denied}"),
            "a loopback address: only a rule naming it allows it",
        ],
        WAIT,
    );
    assert!(line.contains("spiffe://corp.test/portal/laptop-1"), "{line}");
}

/// Speaks TLS with the portal's certificate, then sends `records` raw.
fn raw_portal(c: &Certs, gate: SocketAddr, records: &[u8]) -> Vec<u8> {
    let mut tls = tlsgate_testkit::tls_client::handshake_as(
        gate,
        &c.pki.ca_path,
        "127.0.0.1",
        Some((&c.portal_cert, &c.portal_key)),
        WAIT,
    )
    .unwrap();
    tls.write_all(records).unwrap();
    tls.flush().unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    answer
}

fn hello() -> Vec<u8> {
    use tlsgate_tunnel::wire::{Frame, Hello};
    let mut out = Vec::new();
    Frame::Hello(Hello { min_version: 1, max_version: 1, role: 0, max_frame_len: 65536 }).encode(&mut out);
    out
}

#[test]
fn malformed_records_end_that_tunnel_with_a_reason_and_others_keep_working() {
    use tlsgate_tunnel::wire::Frame;
    let c = certs();
    let (root, _) = web_root(c.pki.dir.path(), None);
    let nginx = Nginx::start(&root);
    let (gate, gate_addr) = start_gate(&c, "127.0.0.1:0", &[]);
    let (_portal, socks) = connected_portal(&c, gate_addr, &[]);
    let url = format!("http://127.0.0.1:{}/index.html", nginx.addr.port());

    let mut oversized = hello();
    oversized.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0, 3, 0, 1]);
    let mut unknown_session = hello();
    Frame::Send { session: 77, data: b"who?" }.encode(&mut unknown_session);
    let cases: [(&str, Vec<u8>); 3] = [
        ("garbage", b"GET / HTTP/1.1\r\nHost: gate\r\n\r\n".to_vec()),
        ("oversized", oversized),
        ("unknown session", unknown_session),
    ];
    for (what, records) in cases {
        let answer = raw_portal(&c, gate_addr, &records);
        let line = gate.proc.wait_for(&["portal disconnected", "peer broke the tunnel protocol"], WAIT);
        // The gate answered with its Hello and a GoAway (type 0x0103) before closing.
        assert!(answer.windows(2).any(|w| w == [0x01, 0x03]), "{what}: no GoAway in {answer:?}; {line}");
        let out = socks_curl(socks, &url, &["-sS"]);
        assert!(out.status.success(), "after {what}: {}", describe(&out));
    }
}

#[test]
fn a_key_revoked_while_the_gate_runs_is_refused_after_sighup() {
    let c = certs();
    let crl = c.pki.path("portals.crl");
    std::fs::write(&crl, c.pki.ca.crl(&[], 1).unwrap()).unwrap();
    let (gate, gate_addr) = start_gate(&c, "127.0.0.1:0", &["--crl", s(&crl)]);
    let laptop =
        c.pki.ca.issue_client(&ClientSpec { common_name: "laptop-2", ..ClientSpec::default() }).unwrap();
    let (cert, key) = laptop.write(c.pki.dir.path(), "laptop-2").unwrap();
    let before = start_portal(&c, gate_addr, &cert, &key, &[]);
    before.proc.wait_for(&["connected to gate"], WAIT);
    drop(before);

    // The laptop is stolen: its serial goes into the CRL, the gate re-reads it on SIGHUP.
    std::fs::write(&crl, c.pki.ca.crl(&[laptop.serial], 2).unwrap()).unwrap();
    let pid = gate.proc.pid().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    gate.proc.wait_for(&["reloaded", "section=tunnel.gate"], WAIT);
    let after = start_portal(&c, gate_addr, &cert, &key, &[]);
    gate.proc.wait_for(&["portal refused", "client certificate revoked"], WAIT);
    after.proc.wait_for(&["cannot reach gate"], WAIT);
}

/// The SOCKS5 reply code for a CONNECT to `host` (sent as a name, verbatim) and `port`.
fn socks_reply(socks: SocketAddr, host: &str, port: u16) -> String {
    let script = tlsgate_testkit::docs::support_script("socks5_connect.py");
    let out = Command::new("python3")
        .arg(script)
        .args([&socks.port().to_string(), host, &port.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The gate's own services stay out of reach past `deny any 127.0.0.0/8` and `allow any *`:
/// `0.0.0.0`, the names `0` and `0x0` (getaddrinfo makes them 0.0.0.0), `[::1]`, over TCP and
/// over a UDP forward; the gate's admin port is the target. A rule naming the address (before
/// the deny) still reaches it.
#[test]
fn unspecified_and_loopback_addresses_stay_out_of_reach_past_a_loopback_deny() {
    let c = certs();
    let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    echo.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let (root, _) = web_root(c.pki.dir.path(), None);
    let nginx = Nginx::start(&root);
    let named = format!("allow tcp 127.0.0.1 {}", nginx.addr.port());
    let (gate, gate_addr) = start_gate(
        &c,
        "127.0.0.1:0",
        &[
            "--admin",
            "127.0.0.1:0",
            "--allow",
            &named,
            "--allow",
            "deny any 127.0.0.0/8",
            "--allow",
            "allow any *",
        ],
    );
    gate.proc
        .wait_logged(&["WARN", "denies IPv4 loopback (127.0.0.0/8) but none denies IPv6 loopback"], WAIT);
    let admin = Proc::field(&gate.proc.wait_logged(&["admin listening"], WAIT), "addr").unwrap();
    let admin_port: u16 = admin.rsplit(':').next().unwrap().parse().unwrap();
    let forward = format!("udp:127.0.0.1:0=0.0.0.0:{echo_port}");
    let (portal, socks) = connected_portal(&c, gate_addr, &["--forward", &forward]);
    let udp_fwd = logged_addr(&portal, "UDP forward");

    for host in ["0.0.0.0", "0", "0x0", "::1", "::ffff:127.0.0.1"] {
        assert_eq!(socks_reply(socks, host, admin_port), "2", "{host} reached the admin port");
    }
    gate.proc.wait_for(&["open refused", "0.0.0.0:", "an unspecified address"], WAIT);
    gate.proc.wait_for(&["open refused", "target=0x0:", "resolves to 0.0.0.0"], WAIT);
    gate.proc.wait_for(&["open refused", "[::1]:", "a loopback address"], WAIT);
    // The rule naming 127.0.0.1 and nginx's port still admits it.
    let out = socks_curl(socks, &format!("http://127.0.0.1:{}/index.html", nginx.addr.port()), &["-sS"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello through the tunnel\n", "{}", describe(&out));

    // UDP to 0.0.0.0 through the forward: refused at the gate, nothing arrives.
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"ping", udp_fwd).unwrap();
    gate.proc
        .wait_for(&["datagram refused", &format!("0.0.0.0:{echo_port}"), "an unspecified address"], WAIT);
    let mut buf = [0u8; 16];
    assert!(echo.recv_from(&mut buf).is_err(), "a datagram to 0.0.0.0 reached 127.0.0.1");
}

/// DNS rebinding: `allow tcp allowed.test PORT` while the gate's DNS answers 127.0.0.1 for it.
/// Without `to` in the rule, a name may not resolve to loopback; with `to 127.0.0.1` it may.
#[test]
fn a_name_rule_does_not_follow_its_name_to_loopback() {
    let c = certs();
    let (root, _) = web_root(c.pki.dir.path(), None);
    let nginx = Nginx::start(&root);
    let port = nginx.addr.port();
    let dns = Dnsmasq::start(&[("allowed.test", "127.0.0.1"), ("pinned.test", "127.0.0.1")]);
    let resolver = dns.addr.to_string();
    let allowed = format!("allow tcp allowed.test {port}");
    let (gate, gate_addr) = start_gate(&c, "127.0.0.1:0", &["--resolver", &resolver, "--allow", &allowed]);
    let (portal, socks) = connected_portal(&c, gate_addr, &[]);
    assert_eq!(socks_reply(socks, "allowed.test", port), "2", "a name rule followed its name to loopback");
    gate.proc.wait_for(&["open refused", "allowed.test", "resolves to 127.0.0.1, a loopback address"], WAIT);
    drop((portal, gate));

    let pinned = format!("allow tcp pinned.test {port} to 127.0.0.1");
    let (_gate, gate_addr) = start_gate(&c, "127.0.0.1:0", &["--resolver", &resolver, "--allow", &pinned]);
    let (_portal, socks) = connected_portal(&c, gate_addr, &[]);
    let out = socks_curl(socks, &format!("http://pinned.test:{port}/index.html"), &["-sS"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello through the tunnel\n", "{}", describe(&out));
}

/// A portal that is connected when its certificate is revoked loses its tunnel at the reload
/// that reads the new CRL, not whenever its TCP connection happens to drop.
#[test]
fn a_connected_portal_is_closed_when_a_reload_finds_its_certificate_revoked() {
    let c = certs();
    let (root, _) = web_root(c.pki.dir.path(), None);
    let nginx = Nginx::start(&root);
    let crl = c.pki.path("portals.crl");
    std::fs::write(&crl, c.pki.ca.crl(&[], 1).unwrap()).unwrap();
    let (gate, gate_addr) = start_gate(&c, "127.0.0.1:0", &["--crl", s(&crl)]);
    let laptop =
        c.pki.ca.issue_client(&ClientSpec { common_name: "laptop-3", ..ClientSpec::default() }).unwrap();
    let (cert, key) = laptop.write(c.pki.dir.path(), "laptop-3").unwrap();
    let portal = start_portal(&c, gate_addr, &cert, &key, &["--socks", "127.0.0.1:0"]);
    let socks = logged_addr(&portal, "SOCKS5 listening");
    portal.proc.wait_logged(&["connected to gate"], WAIT);
    let url = format!("http://127.0.0.1:{}/index.html", nginx.addr.port());
    let out = socks_curl(socks, &url, &["-sS"]);
    assert!(out.status.success(), "{}", describe(&out));

    std::fs::write(&crl, c.pki.ca.crl(&[laptop.serial], 2).unwrap()).unwrap();
    let pid = gate.proc.pid().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    portal.proc.wait_for(&["tunnel to gate ended"], WAIT);
    gate.proc
        .wait_for(&["closing a portal connection", "certificate is revoked now", "portal=laptop-3"], WAIT);
    gate.proc.wait_for(&["portal disconnected", "portal=laptop-3", "reason=certificate revoked"], WAIT);
    // It cannot come back: its next handshake is refused.
    gate.proc.wait_for(&["portal refused", "client certificate revoked"], WAIT);
    let out = socks_curl(socks, &url, &["-sS", "--max-time", "5"]);
    assert!(!out.status.success(), "still reached nginx through a revoked portal: {}", describe(&out));
}

/// A CRL past its next update is a warning at start and at each reload; with `crl_strict` the
/// gate refuses every portal until the CRL is refreshed.
#[test]
fn an_out_of_date_crl_warns_and_with_crl_strict_refuses_portals() {
    let c = certs();
    let crl = c.pki.path("stale.crl");
    let yesterday = std::time::SystemTime::now() - Duration::from_secs(86_400);
    std::fs::write(&crl, c.pki.ca.crl_until(&[], 1, yesterday).unwrap()).unwrap();
    let (gate, gate_addr) = start_gate(&c, "127.0.0.1:0", &["--crl", s(&crl)]);
    gate.proc.wait_logged(&["WARN", "CRL is out of date", "stale.crl"], WAIT);
    let (_portal, _) = connected_portal(&c, gate_addr, &[]);

    let conf = c.pki.path("strict.toml");
    std::fs::write(
        &conf,
        format!(
            "[tunnel.gate]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n\
             crl = [\"{}\"]\ncrl_strict = true\n",
            s(&c.gate_cert),
            s(&c.gate_key),
            c.pki.ca(),
            s(&crl)
        ),
    )
    .unwrap();
    let strict = Tlsgate::start(BIN, &["tunnel", "gate", "-c", s(&conf)]);
    let line = strict.proc.wait_logged(&["tunnel gate listening"], WAIT);
    let strict_addr: SocketAddr = Proc::field(&line, "listen").unwrap().parse().unwrap();
    let refused = start_portal(&c, strict_addr, &c.portal_cert, &c.portal_key, &[]);
    strict.proc.wait_for(&["portal refused", "is out of date"], WAIT);
    refused.proc.wait_for(&["cannot reach gate"], WAIT);
}

//! `tlsgate connect gate|portal` with real peers: curl through portal and gate to an nginx that
//! requires the user's own client certificate (from a CA the gate knows nothing of), the inner
//! ClientHello visible on the gate's port after the downgrade, 64 MiB each way, with a TLS 1.3
//! and a TLS 1.2 outer session; plain `curl --proxy https://…` (nested TLS); refusals with their
//! status, log line, and the destination never contacted; live tunnels on the admin listener.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tlsgate_testkit::clients::{curl, describe, s_client};
use tlsgate_testkit::data::{random_file, sha256_file};
use tlsgate_testkit::nginx::Nginx;
use tlsgate_testkit::pki::{client_cert, Pki};
use tlsgate_testkit::process::{Proc, Tlsgate};
use tlsgate_tls::pki::{write_file, TestCa};

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const WAIT: Duration = Duration::from_secs(30);
/// The destination's name: only the gate maps it (`--host`), nothing on this host resolves it.
const DEST: &str = "internal.test";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The gate's PKI (gate server certificate, portal client certificates, one revoked) and the
/// destination's (its server certificate, the user's client certificate): two unrelated CAs.
struct World {
    pki: Pki,
    gate_cert: PathBuf,
    gate_key: PathBuf,
    portal: (PathBuf, PathBuf),
    revoked: (PathBuf, PathBuf),
    crl: PathBuf,
    dest_ca: PathBuf,
    user: (PathBuf, PathBuf),
    stranger: (PathBuf, PathBuf),
    nginx: Nginx,
    root: PathBuf,
}

fn world(big: bool) -> World {
    let pki = Pki::new();
    let dir = pki.dir.path().to_path_buf();
    let (gate_cert, gate_key) = pki.server("gate", &["127.0.0.1"]);
    let (pc, pk, _) = client_cert(&pki.ca, "laptop-1", &dir, "portal");
    let (rc, rk, serial) = client_cert(&pki.ca, "laptop-2", &dir, "revoked");
    let crl = dir.join("gate.crl");
    write_file(&crl, &pki.ca.crl(&[serial], 1).unwrap(), 0o644).unwrap();

    let dest = TestCa::new("destination CA").unwrap();
    let dest_ca = dir.join("dest-ca.pem");
    write_file(&dest_ca, dest.cert_pem(), 0o644).unwrap();
    let (dcert, dkey) = dest.issue_server(&[DEST]).unwrap().write(&dir, "dest").unwrap();
    let (uc, uk, _) = client_cert(&dest, "user-alice", &dir, "user");
    let (sc, sk, _) = client_cert(&dest, "laptop-1", &dir, "stranger");

    let root = dir.join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "hello from the inside\n").unwrap();
    if big {
        random_file(&root.join("big.bin"), 64 << 20);
    }
    let nginx = Nginx::start_https(&root, &dcert, &dkey, Some(&dest_ca));
    World {
        pki,
        gate_cert,
        gate_key,
        portal: (pc, pk),
        revoked: (rc, rk),
        crl,
        dest_ca,
        user: (uc, uk),
        stranger: (sc, sk),
        nginx,
        root,
    }
}

fn start_gate(w: &World, extra: &[&str]) -> (Tlsgate, SocketAddr) {
    let port = w.nginx.addr.port();
    let allow = format!("laptop-1={DEST} {port} to 127.0.0.1");
    let host = format!("{DEST}=127.0.0.1");
    let mut args = vec![
        "connect",
        "gate",
        "--listen",
        "127.0.0.1:0",
        "--cert",
        s(&w.gate_cert),
        "--key",
        s(&w.gate_key),
        "--client-ca",
        w.pki.ca(),
        "--crl",
        s(&w.crl),
        "--allow",
        &allow,
        "--host",
        &host,
    ];
    args.extend_from_slice(extra);
    let gate = Tlsgate::start(BIN, &args);
    let line = gate.proc.wait_logged(&["connect gate listening"], WAIT);
    let addr = Proc::field(&line, "listen").unwrap().parse().unwrap();
    (gate, addr)
}

fn start_portal(w: &World, gate: SocketAddr, extra: &[&str]) -> (Tlsgate, SocketAddr) {
    let gate = gate.to_string();
    let mut args = vec![
        "connect",
        "portal",
        "--listen",
        "127.0.0.1:0",
        "--gate",
        &gate,
        "--ca",
        w.pki.ca(),
        "--cert",
        s(&w.portal.0),
        "--key",
        s(&w.portal.1),
        "--route",
        DEST,
    ];
    args.extend_from_slice(extra);
    let portal = Tlsgate::start(BIN, &args);
    let line = portal.proc.wait_logged(&["connect portal listening"], WAIT);
    let addr = Proc::field(&line, "listen").unwrap().parse().unwrap();
    (portal, addr)
}

/// curl to the destination with the user's certificate, through `proxy` (`--proxy …` args).
fn user_curl(w: &World, proxy: &[&str], path: &str, extra: &[&str]) -> Output {
    let url = format!("https://{DEST}:{}{path}", w.nginx.addr.port());
    let mut args = proxy.to_vec();
    args.extend_from_slice(&["--cert", s(&w.user.0), "--key", s(&w.user.1), "--cacert", s(&w.dest_ca)]);
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args)
}

/// tcpdump on loopback for one TCP port, written to a file.
struct PortCapture {
    proc: Proc,
    file: PathBuf,
}

impl PortCapture {
    fn start(dir: &Path, port: u16) -> PortCapture {
        let file = dir.join(format!("port-{port}.pcap"));
        let port = port.to_string();
        let mut cmd = Command::new("tcpdump");
        cmd.args(["-i", "lo", "-n", "-U", "--immediate-mode", "-B", "8192", "-s", "0", "-w", s(&file)]);
        cmd.args(["tcp", "port", &port]);
        let proc = Proc::spawn("tcpdump", cmd);
        proc.wait_for(&["listening on"], WAIT);
        PortCapture { proc, file }
    }

    /// Waits (bounded) for `needle` to be in the captured bytes; stops tcpdump. tcpdump writes
    /// each packet as it comes (-U), so the wait ends as soon as the packet is on disk.
    fn contains(self, needle: &[u8]) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        let found = loop {
            let bytes = std::fs::read(&self.file).unwrap_or_default();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.proc.interrupt();
        found
    }
}

#[test]
fn downgrade_carries_the_users_own_tls_end_to_end_64mib_each_way() {
    let w = world(true);
    let (gate, gate_addr) = start_gate(&w, &[]);
    carries_end_to_end(&w, &gate, gate_addr);
    gate.proc.wait_logged(&["connect gate: tunnel open", "version=TLSv1_3"], WAIT);
}

/// The same with the gate limited to TLS 1.2 by its config: the outer session is TLS 1.2
/// (close_notify an encrypted alert record), the downgrade and the inner TLS 1.3 the same.
#[test]
fn downgrade_of_a_tls12_outer_session_carries_the_same_end_to_end() {
    let w = world(true);
    let port = w.nginx.addr.port();
    let config = w.pki.path("gate12.toml");
    let text = format!(
        "[connect.gate]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n\
         tls_versions = [\"1.2\"]\nhosts = {{ \"{DEST}\" = \"127.0.0.1\" }}\n\
         [[connect.gate.allow]]\nidentity = \"laptop-1\"\nrules = [\"{DEST} {port} to 127.0.0.1\"]\n",
        s(&w.gate_cert),
        s(&w.gate_key),
        w.pki.ca()
    );
    std::fs::write(&config, text).unwrap();
    let gate = Tlsgate::start(BIN, &["connect", "gate", "-c", s(&config)]);
    let line = gate.proc.wait_logged(&["connect gate listening"], WAIT);
    let gate_addr: SocketAddr = Proc::field(&line, "listen").unwrap().parse().unwrap();
    // A TLS 1.3-only client is refused: the limit is in force.
    let tls13 = s_client(
        &["-connect", &gate_addr.to_string(), "-tls1_3", "-cert", s(&w.portal.0), "-key", s(&w.portal.1)],
        b"",
    );
    assert!(!tls13.status.success(), "{}", describe(&tls13));
    gate.proc.wait_logged(&["connect gate: refused: TLS handshake failed"], WAIT);
    carries_end_to_end(&w, &gate, gate_addr);
    let opened = gate.proc.lines_with(&["connect gate: tunnel open"]);
    assert!(
        opened.len() >= 3 && opened.iter().all(|l| l.contains("version=TLSv1_2")),
        "every outer session TLS 1.2:\n{}",
        opened.join("\n")
    );
}

/// Through portal and gate: the inner ClientHello on the gate's port in clear, the user's
/// certificate checked by nginx itself, 64 MiB down and up byte for byte.
fn carries_end_to_end(w: &World, gate: &Tlsgate, gate_addr: SocketAddr) {
    let (portal, portal_addr) = start_portal(w, gate_addr, &[]);
    let proxy = format!("http://{portal_addr}");
    let local = Command::new("getent").args(["hosts", DEST]).output().unwrap();
    assert!(!local.status.success(), "{DEST} resolves on this host; the test would prove nothing");

    let capture = PortCapture::start(w.pki.dir.path(), gate_addr.port());
    let out = user_curl(w, &["--proxy", &proxy], "/index.html", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from the inside\n");
    // After the downgrade the browser's ClientHello crosses the gate's port as raw TCP: its SNI
    // is there in clear, which it never is inside the outer TLS.
    assert!(capture.contains(DEST.as_bytes()), "the inner SNI is not in the gate port's TCP payload");
    // nginx checked the user's certificate itself: the gate never had it.
    let log = w.nginx.access_log_lines(1);
    assert!(log.contains(",CN=user-alice\" "), "{log}");
    gate.proc.wait_logged(&["connect gate: tunnel open", "identity=laptop-1", "mode=\"downgrade\""], WAIT);
    portal.proc.wait_logged(&["connect portal: tunnel open (downgraded)"], WAIT);

    // 64 MiB down and up, byte for byte.
    let down = w.pki.path("down.bin");
    let out = user_curl(w, &["--proxy", &proxy], "/big.bin", &["-o", s(&down)]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sha256_file(&down), sha256_file(&w.root.join("big.bin")));
    let up = w.pki.path("up.bin");
    let up_sum = random_file(&up, 64 << 20);
    let out = user_curl(w, &["--proxy", &proxy], "/uploaded.bin", &["-T", s(&up)]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sha256_file(&w.root.join("uploaded.bin")), up_sum);
}

#[test]
fn plain_https_proxy_clients_get_nested_tls() {
    let w = world(false);
    let (gate, gate_addr) = start_gate(&w, &[]);
    let proxy = format!("https://{gate_addr}");
    let capture = PortCapture::start(w.pki.dir.path(), gate_addr.port());
    let nested = ["--proxy", &proxy, "--proxy-cert", s(&w.portal.0), "--proxy-key", s(&w.portal.1)];
    let nested = [&nested[..], &["--proxy-cacert", w.pki.ca()]].concat();
    let out = user_curl(&w, &nested, "/index.html", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from the inside\n");
    gate.proc.wait_logged(&["connect gate: tunnel closed", "identity=laptop-1", "mode=\"nested\""], WAIT);
    assert!(!capture.contains(DEST.as_bytes()), "nested: the inner ClientHello is inside the outer TLS");
    let log = w.nginx.access_log_lines(1);
    assert!(log.contains(",CN=user-alice\" "), "{log}");
}

/// The HTTP status curl got for its CONNECT.
fn connect_status(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn refusals_have_their_status_and_log_line_and_never_reach_the_destination() {
    let w = world(false);
    // Where every refused CONNECT would go: it must never see a connection.
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let tport = trap.local_addr().unwrap().port();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let admin_s = admin.to_string();
    let loop_rule = format!("laptop-1=loop.test {tport}");
    let (gate, gate_addr) = start_gate(
        &w,
        &[
            "--allow",
            &loop_rule,
            "--host",
            "loop.test=127.0.0.1",
            "--admin",
            &admin_s,
            // Long enough for a handshake with a client certificate on a loaded machine (the
            // deadline runs from accept), short enough for the slow head's 408 below.
            "--head-timeout",
            "4s",
        ],
    );
    gate.proc.wait_logged(&["admin"], WAIT);
    let proxy = format!("https://{gate_addr}");
    let via = |cert: &(PathBuf, PathBuf), target: &str| {
        let url = format!("https://{target}/");
        curl(&[
            "--proxy",
            &proxy,
            "--proxy-cert",
            s(&cert.0),
            "--proxy-key",
            s(&cert.1),
            "--proxy-cacert",
            w.pki.ca(),
            "-o",
            "/dev/null",
            "-w",
            "%{http_connect}",
            &url,
        ])
    };
    for (target, why) in [
        (format!("{DEST}:{tport}"), "not allowed"),
        (format!("other.test:{}", w.nginx.addr.port()), "not allowed"),
        (format!("loop.test:{tport}"), "a loopback address"),
        (format!("127.0.0.1:{tport}"), "a loopback address"),
        (admin_s.clone(), "a loopback address"),
    ] {
        let out = via(&w.portal, &target);
        assert_eq!(connect_status(&out), "403", "{target}: {}", describe(&out));
        let line = gate.proc.wait_for(&["connect gate: refused", "status=403", "identity=laptop-1"], WAIT);
        assert!(line.contains(&target) && line.contains(why), "{why}: {line}");
    }
    let reasons = gate.proc.lines_with(&["connect gate: refused"]);
    assert!(reasons.iter().any(|l| l.contains("resolves to 127.0.0.1")), "{reasons:?}");

    // A revoked portal and one from another CA do not get past the handshake.
    for cert in [&w.revoked, &w.stranger] {
        let out = via(cert, &format!("{DEST}:{}", w.nginx.addr.port()));
        assert!(!out.status.success(), "{}", describe(&out));
        gate.proc.wait_for(&["connect gate: refused: TLS handshake failed"], WAIT);
    }
    let fails = gate.proc.lines_with(&["TLS handshake failed"]);
    assert!(fails.iter().any(|l| l.contains("revoked")), "{fails:?}");

    // A head that never ends: 408 after the head timeout; one over the limit: 431.
    let tls =
        ["-connect", &proxy[8..], "-cert", s(&w.portal.0), "-key", s(&w.portal.1), "-CAfile", w.pki.ca()];
    let tls = [&tls[..], &["-quiet", "-ign_eof"]].concat();
    let slow = format!("CONNECT {DEST}:{tport} HTTP/1.1\r\nHost: x\r\n");
    let out = s_client(&tls, slow.as_bytes());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("HTTP/1.1 408 "), "{}", describe(&out));
    gate.proc.wait_for(&["connect gate: refused", "status=408"], WAIT);
    let big = format!("CONNECT {DEST}:{tport} HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(9000));
    let out = s_client(&tls, big.as_bytes());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("HTTP/1.1 431 "), "{}", describe(&out));
    gate.proc.wait_for(&["connect gate: refused", "status=431"], WAIT);

    assert!(trap.accept().is_err(), "a refused CONNECT reached the destination");
    // The gate still serves.
    let nested = ["--proxy", &proxy, "--proxy-cert", s(&w.portal.0), "--proxy-key", s(&w.portal.1)];
    let out = user_curl(&w, &[&nested[..], &["--proxy-cacert", w.pki.ca()]].concat(), "/index.html", &[]);
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn the_portal_serves_a_pac_file_and_refuses_unrouted_hosts() {
    let w = world(false);
    let (_gate, gate_addr) = start_gate(&w, &[]);
    let (portal, portal_addr) = start_portal(&w, gate_addr, &[]);
    let out = curl(&[&format!("http://{portal_addr}/proxy.pac")]);
    assert!(out.status.success(), "{}", describe(&out));
    let pac = String::from_utf8_lossy(&out.stdout);
    assert!(pac.contains("function FindProxyForURL"), "{pac}");
    assert!(pac.contains(&format!("host == \"{DEST}\"")), "{pac}");
    assert!(pac.contains(&format!("PROXY {portal_addr}")), "{pac}");

    let proxy = format!("http://{portal_addr}");
    let out =
        curl(&["--proxy", &proxy, "-o", "/dev/null", "-w", "%{http_connect}", "https://elsewhere.test/"]);
    assert_eq!(connect_status(&out), "403", "{}", describe(&out));
    portal.proc.wait_logged(&["connect portal: refused: no route for this host"], WAIT);
}

fn signal(p: &Tlsgate, sig: &str) {
    let ok = Command::new("kill").args([sig, &p.proc.pid().to_string()]).status().unwrap();
    assert!(ok.success());
}

#[test]
fn sighup_rereads_crls_and_grants_from_the_connect_section() {
    let w = world(false);
    let port = w.nginx.addr.port();
    // A destination that accepts and never answers: the tunnel to it stays open until closed.
    let hold = TcpListener::bind("127.0.0.1:0").unwrap();
    let hold_port = hold.local_addr().unwrap().port();
    let config = w.pki.path("gate.toml");
    let write = |crl: &str, port: u16| {
        let text = format!(
            "[connect.gate]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\ncrl = [{crl}]\n\
             hosts = {{ \"{DEST}\" = \"127.0.0.1\" }}\n[[connect.gate.allow]]\nidentity = \"*\"\n\
             rules = [\"{DEST} {port} to 127.0.0.1\", \"{DEST} {hold_port} to 127.0.0.1\"]\n",
            s(&w.gate_cert),
            s(&w.gate_key),
            w.pki.ca()
        );
        std::fs::write(&config, text).unwrap();
    };
    write("", port);
    let check = Command::new(BIN).args(["check", "--config", s(&config)]).output().unwrap();
    assert!(check.status.success(), "{}", describe(&check));
    assert!(String::from_utf8_lossy(&check.stdout).contains("connect gate: listen"), "{}", describe(&check));
    let gate = Tlsgate::start(BIN, &["connect", "gate", "-c", s(&config)]);
    let line = gate.proc.wait_logged(&["connect gate listening"], WAIT);
    let proxy = format!("https://{}", Proc::field(&line, "listen").unwrap());
    let nested = |cert: &(PathBuf, PathBuf)| {
        let args = ["--proxy", &proxy, "--proxy-cert", s(&cert.0), "--proxy-key", s(&cert.1)];
        let args =
            [&args[..], &["--proxy-cacert", w.pki.ca(), "-w", "%{http_connect}", "-o", "/dev/null"]].concat();
        user_curl(&w, &args, "/index.html", &[])
    };
    // laptop-2 is revoked only by the CRL the reload brings.
    let out = nested(&w.revoked);
    assert!(out.status.success(), "{}", describe(&out));
    // laptop-2's tunnel open across the reload: the new CRL closes it.
    let mut held = Command::new("curl");
    held.args(["-sS", "--ipv4", "-p", "--proxy", &proxy, "--proxy-cert", s(&w.revoked.0)]);
    held.args(["--proxy-key", s(&w.revoked.1), "--proxy-cacert", w.pki.ca()]);
    held.arg(format!("http://{DEST}:{hold_port}/"));
    let mut held = Proc::spawn("held curl", held);
    let (mut dest_side, _) = hold.accept().unwrap();
    dest_side.set_read_timeout(Some(WAIT)).unwrap();
    let mut request = [0u8; 1024];
    assert!(std::io::Read::read(&mut dest_side, &mut request).unwrap() > 0, "the request crossed the tunnel");
    write(&format!("\"{}\"", s(&w.crl)), port);
    signal(&gate, "-HUP");
    gate.proc.wait_for(&["reloaded", "section=connect.gate"], WAIT);
    // Both lines may come before or after the reload's own: any order.
    gate.proc
        .wait_logged(&["closing a connection: its client certificate is revoked now", "connect gate"], WAIT);
    gate.proc.wait_logged(&["connect gate: tunnel failed", "identity=laptop-2", "revoked now"], WAIT);
    let n = std::io::Read::read(&mut dest_side, &mut request).expect("the gate closed the destination side");
    assert_eq!(n, 0, "the destination side ends with the tunnel");
    let status = held.wait_exit(WAIT).expect("curl ends when its tunnel is closed");
    assert!(!status.success(), "the tunnel was cut, not completed");
    let out = nested(&w.revoked);
    assert!(!out.status.success(), "{}", describe(&out));
    gate.proc.wait_for(&["connect gate: refused: TLS handshake failed", "revoked"], WAIT);
    // A grant for another port: the same CONNECT is now refused by policy.
    write(&format!("\"{}\"", s(&w.crl)), port.wrapping_add(1));
    signal(&gate, "-HUP");
    gate.proc.wait_for(&["reloaded", "section=connect.gate"], WAIT);
    let out = nested(&w.portal);
    assert_eq!(connect_status(&out), "403", "{}", describe(&out));
    // A config that does not load is refused; the running one stays.
    std::fs::write(&config, "[connect.gate]\nlisten = 1\n").unwrap();
    signal(&gate, "-HUP");
    gate.proc.wait_for(&["reload refused"], WAIT);
    assert_eq!(connect_status(&nested(&w.portal)), "403");
}

/// Headless Chromium with the portal's PAC file loads an HTTPS page of the destination through
/// portal and gate; the destination's CA is trusted in an NSS database of Chromium's own.
#[test]
fn chromium_with_the_pac_file_loads_an_https_page_through_portal_and_gate() {
    let w = world(false);
    let dir = w.pki.dir.path();
    // A second nginx without client certificates: the browser has none to present.
    let open_nginx = Nginx::start_https(&w.root, &dir.join("dest.pem"), &dir.join("dest.key"), None);
    let port = open_nginx.addr.port();
    let grant = format!("laptop-1={DEST} {port} to 127.0.0.1");
    let (gate, gate_addr) = start_gate(&w, &["--allow", &grant]);
    let (_portal, portal_addr) = start_portal(&w, gate_addr, &[]);

    let home = tempfile::Builder::new().prefix("tlsgate-chromium-home-").tempdir().unwrap();
    let nssdb = home.path().join(".pki/nssdb");
    std::fs::create_dir_all(&nssdb).unwrap();
    let db = format!("sql:{}", nssdb.display());
    for args in [
        vec!["-N", "-d", &db, "--empty-password"],
        vec!["-A", "-d", &db, "-n", "destination CA", "-t", "C,,", "-i", s(&w.dest_ca)],
    ] {
        let out =
            Command::new("certutil").args(&args).output().expect("certutil (libnss3-tools) is installed");
        assert!(out.status.success(), "certutil {args:?}: {}", describe(&out));
    }
    let out = Command::new("chromium")
        .env("HOME", home.path())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", home.path().join("profile").display()),
            &format!("--proxy-pac-url=http://{portal_addr}/proxy.pac"),
            "--dump-dom",
            &format!("https://{DEST}:{port}/index.html"),
        ])
        .output()
        .expect("chromium is installed");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("hello from the inside"), "{}", describe(&out));
    gate.proc.wait_logged(
        &["connect gate: tunnel open", "mode=\"downgrade\"", &format!("to=127.0.0.1:{port}")],
        WAIT,
    );
    let log = open_nginx.access_log_lines(1);
    assert!(log.contains("GET /index.html"), "{log}");
}

/// `/status.json` until `done` says yes of its connections (bounded: the counts move as the
/// relay runs), then that list.
fn live_connections(admin: &str, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = curl(&[&format!("http://{admin}/status.json")]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status.json is JSON");
        let conns = v["connections"].as_array().cloned().unwrap_or_default();
        if done(&conns) {
            return conns;
        }
        assert!(Instant::now() < deadline, "connections never as expected: {conns:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn scrape(admin: &str) -> String {
    String::from_utf8_lossy(&curl(&[&format!("http://{admin}/metrics")]).stdout).into_owned()
}

/// A connection before its CONNECT, and two tunnels held open, one downgraded through the portal
/// and one nested: listed on `/status.json` and the HTML page with identity, destination, state
/// and exact bytes; the metrics count them, refusals by reason and the bytes; once closed,
/// nothing stays open.
#[test]
fn admin_lists_live_tunnels_and_counts_them_in_metrics() {
    let w = world(false);
    // A destination that answers only what the test writes.
    let hold = TcpListener::bind("127.0.0.1:0").unwrap();
    let hold_port = hold.local_addr().unwrap().port();
    let grant = format!("laptop-1={DEST} {hold_port} to 127.0.0.1");
    let (gate, gate_addr) = start_gate(&w, &["--allow", &grant, "--admin", "127.0.0.1:0"]);
    let admin = Proc::field(&gate.proc.wait_logged(&["admin listening"], WAIT), "addr").unwrap();
    let (_portal, portal_addr) = start_portal(&w, gate_addr, &[]);
    let url = format!("http://{DEST}:{hold_port}/");
    let portal_proxy = format!("http://{portal_addr}");
    let gate_proxy = format!("https://{gate_addr}");
    let row = |conns: &[serde_json::Value], state: &str| {
        conns
            .iter()
            .find(|c| c["state"] == state && c["listener"].as_str().unwrap().starts_with("connect gate"))
            .cloned()
    };

    // A client that finishes its handshake and sends no CONNECT: listed as `outer TLS` until its
    // head time-out refuses it (408, counted as `head_timeout`).
    let mut idle = Command::new("openssl");
    idle.args(["s_client", "-connect", &gate_addr.to_string(), "-CAfile", w.pki.ca(), "-ign_eof"]);
    idle.args(["-cert", s(&w.portal.0), "-key", s(&w.portal.1)]);
    let mut idle = Proc::spawn("idle s_client", idle);
    let conns = live_connections(&admin, |c| row(c, "outer TLS").is_some());
    let r = row(&conns, "outer TLS").unwrap();
    assert!(r["identity"].as_str().unwrap().contains("CN=laptop-1") && r["backend"] == "", "{r}");

    let mut downgraded = Command::new("curl");
    downgraded.args(["-sS", "--ipv4", "-p", "--proxy", &portal_proxy, &url]);
    let mut downgraded = Proc::spawn("downgraded curl", downgraded);
    let (mut d_side, _) = hold.accept().unwrap();
    let mut nested = Command::new("curl");
    nested.args(["-sS", "--ipv4", "-p", "--proxy", &gate_proxy, "--proxy-cacert", w.pki.ca()]);
    nested.args(["--proxy-cert", s(&w.portal.0), "--proxy-key", s(&w.portal.1), &url]);
    let mut nested = Proc::spawn("nested curl", nested);
    let (mut n_side, _) = hold.accept().unwrap();
    let mut sent = Vec::new();
    for (side, body) in [(&mut d_side, 1000usize), (&mut n_side, 2000)] {
        use std::io::{Read, Write};
        side.set_read_timeout(Some(WAIT)).unwrap();
        let mut request = [0u8; 4096];
        let got = side.read(&mut request).unwrap();
        assert!(got > 0, "the request crossed the tunnel");
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n";
        side.write_all(&[head.as_bytes(), &vec![b'x'; body]].concat()).unwrap();
        sent.push((got as u64, (head.len() + body) as u64));
    }
    let conns = live_connections(&admin, |c| {
        let down = |state| row(c, state).and_then(|r| r["down"].as_u64());
        down("downgraded") == Some(sent[0].1) && down("nested") == Some(sent[1].1)
    });
    for (state, (up, _)) in [("downgraded", sent[0]), ("nested", sent[1])] {
        let r = row(&conns, state).unwrap();
        assert!(r["identity"].as_str().unwrap().contains("CN=laptop-1"), "{r}");
        assert!(r["backend"].as_str().unwrap().contains(&format!("{DEST}:{hold_port}")), "{r}");
        assert_eq!(r["version"], "TLSv1_3", "{r}");
        assert!(r["up"].as_u64().unwrap() >= up, "{r}");
    }

    let page = tlsgate_testkit::browser::dump_dom(&format!("http://{admin}/status"));
    let table = &page[page.find("id=\"connections\"").expect("connections table")..];
    for state in ["downgraded", "nested"] {
        let tr = table.split("<tr>").find(|r| r.contains(&format!("<td>{state}</td>")));
        let tr = tr.unwrap_or_else(|| panic!("no {state} row:\n{page}"));
        assert!(tr.contains("laptop-1") && tr.contains(DEST), "{tr}");
    }

    // A refusal, counted by its reason.
    let refused = curl(&[
        "--proxy",
        &gate_proxy,
        "--proxy-cacert",
        w.pki.ca(),
        "--proxy-cert",
        s(&w.portal.0),
        "--proxy-key",
        s(&w.portal.1),
        "-o",
        "/dev/null",
        "-w",
        "%{http_connect}",
        "https://elsewhere.test:443/",
    ]);
    assert_eq!(connect_status(&refused), "403", "{}", describe(&refused));
    idle.wait_exit(WAIT).expect("the idle client is refused at its head time-out");
    gate.proc.wait_logged(&["connect gate: refused", "status=408"], WAIT);
    let metrics = scrape(&admin);
    let has = |m: &str, needle: &str| assert!(m.contains(needle), "{needle} missing from:\n{m}");
    has(&metrics, "tlsgate_connect_tunnels_total{result=\"allowed\",reason=\"\"} 2");
    has(&metrics, "tlsgate_connect_tunnels_total{result=\"refused\",reason=\"policy\"} 1");
    has(&metrics, "tlsgate_connect_tunnels_total{result=\"refused\",reason=\"head_timeout\"} 1");
    has(&metrics, "tlsgate_connect_tunnels_open{state=\"outer_tls\"} 0");
    has(&metrics, "tlsgate_connect_tunnels_open{state=\"downgraded\"} 1");
    has(&metrics, "tlsgate_connect_tunnels_open{state=\"nested\"} 1");
    has(
        &metrics,
        "tlsgate_handshakes_total{listener=\"connect gate 127.0.0.1:0\",result=\"ok\",version=\"TLSv1_3\"",
    );
    let down = sent[0].1 + sent[1].1;
    has(
        &metrics,
        &format!("tlsgate_bytes_total{{listener=\"connect gate 127.0.0.1:0\",direction=\"down\"}} {down}"),
    );

    // The destination ends both: the tunnels close and leave the table and the gauges.
    drop((d_side, n_side));
    assert!(downgraded.wait_exit(WAIT).is_some() && nested.wait_exit(WAIT).is_some());
    live_connections(&admin, |c| {
        c.iter().all(|r| !r["listener"].as_str().unwrap().starts_with("connect gate"))
    });
    let metrics = scrape(&admin);
    for state in ["outer_tls", "downgraded", "nested"] {
        has(&metrics, &format!("tlsgate_connect_tunnels_open{{state=\"{state}\"}} 0"));
    }
}

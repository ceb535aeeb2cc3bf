//! Operations: reload under traffic (SIGHUP and a certificate swap) with zero failed requests,
//! a CRL change taking effect without restart, a broken config refused while the old one serves,
//! and SIGTERM letting a 64 MiB download finish within the drain period.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tlsgate_testkit::clients::{curl, describe, s_client};
use tlsgate_testkit::data::{random_file, sha256_file};
use tlsgate_testkit::nginx::Nginx;
use tlsgate_testkit::pki::{swap_in, Pki};
use tlsgate_testkit::process::{Proc, Tlsgate};
use tlsgate_tls::pki::ClientSpec;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");

fn signal(proc: &Proc, sig: &str) {
    let ok = Command::new("kill").args([sig, &proc.pid().to_string()]).status().unwrap();
    assert!(ok.success());
}

/// The serial number of the certificate `port` serves, as openssl prints it (hex).
fn served_serial(port: u16) -> String {
    let out = s_client(&["-connect", &format!("127.0.0.1:{port}"), "-servername", "localhost"], b"");
    let pem = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    x509.stdin.take().unwrap().write_all(pem.as_bytes()).unwrap();
    let out = x509.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().trim_start_matches("serial=").to_uppercase()
}

fn hex_serial(serial: u64) -> String {
    format!("{serial:016X}")
}

fn start(pki: &Pki, extra: &str) -> (Tlsgate, u16, Tlsgate) {
    let (backend, addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "ops");
    let config = format!(
        r#"
[terminate]
watch_interval = "200ms"
drain_timeout = "20s"

[[terminate.listener]]
name = "ops"
listen = "127.0.0.1:0"
{extra}
  [[terminate.listener.certificate]]
  cert = "server.pem"
  key = "server.key"
  default = true
  [[terminate.listener.route]]
  backends = ["{addr}"]
"#
    );
    std::fs::write(pki.path("tlsgate.toml"), config).unwrap();
    let gate = Tlsgate::start(BIN, &["terminate", "--config", pki.path("tlsgate.toml").to_str().unwrap()]);
    let port = gate.listening(Some("ops")).port();
    (gate, port, backend)
}

#[test]
fn reload_under_traffic_fails_no_request_and_serves_the_new_certificate() {
    let pki = Pki::new();
    let first = pki.ca.issue_server(&["localhost"]).unwrap();
    first.write(pki.dir.path(), "server").unwrap();
    let (gate, port, _backend) = start(&pki, "");
    assert_eq!(served_serial(port), hex_serial(first.serial));

    // A long transfer that starts before the reloads and ends after them.
    let body = pki.path("long.bin");
    let want = random_file(&body, 8 << 20);
    let long = {
        let (ca, body, got) = (pki.ca().to_string(), body.clone(), pki.path("long.out"));
        std::thread::spawn(move || {
            let data = format!("@{}", body.display());
            let url = format!("https://localhost:{port}/echo");
            let out = curl(&[
                "--cacert",
                &ca,
                "--limit-rate",
                "2M",
                "--data-binary",
                &data,
                "-o",
                got.to_str().unwrap(),
                &url,
            ]);
            (out, got)
        })
    };
    // A loop of short requests across both reloads.
    let stop = Arc::new(AtomicBool::new(false));
    let looper = {
        let (ca, stop) = (pki.ca().to_string(), stop.clone());
        std::thread::spawn(move || {
            let url = format!("https://localhost:{port}/");
            let (mut ok, mut failed) = (0, Vec::new());
            for _ in 0..5000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let out = curl(&["--cacert", &ca, &url]);
                if out.status.success() && out.stdout == b"hello from ops\n" {
                    ok += 1;
                } else {
                    failed.push(describe(&out));
                }
            }
            (ok, failed)
        })
    };
    gate.proc.wait_for(&["handshake done"], Duration::from_secs(30));

    signal(&gate.proc, "-HUP");
    gate.proc.wait_for(&["reloading", "SIGHUP"], Duration::from_secs(10));
    gate.proc.wait_for(&["reloaded", "section=terminate"], Duration::from_secs(10));

    let second = pki.ca.issue_server(&["localhost"]).unwrap();
    swap_in(&second, pki.dir.path(), "server");
    gate.proc.wait_for(&["reloading", "server.pem"], Duration::from_secs(10));
    gate.proc.wait_for(&["reloaded", "section=terminate"], Duration::from_secs(10));
    assert_eq!(served_serial(port), hex_serial(second.serial), "new handshakes use the new certificate");

    // Let the loop run a little past the swap, on an event: 20 more handshakes logged.
    for _ in 0..20 {
        gate.proc.wait_for(&["handshake done"], Duration::from_secs(30));
    }
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = looper.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across reloads:\n{}",
        failed.len(),
        ok + failed.len(),
        failed.join("\n")
    );
    assert!(ok >= 20, "only {ok} requests ran");

    let (out, got) = long.join().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sha256_file(&got), want, "the open connection was disturbed by the reloads");
}

#[test]
fn broken_config_or_certificate_is_refused_and_the_old_one_keeps_serving() {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let (gate, port, _backend) = start(&pki, "");
    let url = format!("https://localhost:{port}/");
    let good_config = std::fs::read_to_string(pki.path("tlsgate.toml")).unwrap();

    std::fs::write(
        pki.path("tlsgate.toml"),
        good_config.replace("[[terminate.listener.route]]", "[[terminate.listener.rout]]"),
    )
    .unwrap();
    signal(&gate.proc, "-HUP");
    gate.proc.wait_for(
        &["reload refused, still serving the previous configuration", "unknown field"],
        Duration::from_secs(10),
    );
    let out = curl(&["--cacert", pki.ca(), &url]);
    assert!(out.status.success(), "{}", describe(&out));

    // A certificate that does not match its key: refused as well.
    std::fs::write(pki.path("tlsgate.toml"), &good_config).unwrap();
    let other = pki.ca.issue_server(&["localhost"]).unwrap();
    std::fs::write(pki.path("server.pem"), other.cert_pem).unwrap();
    gate.proc
        .wait_for(&["reload refused", "side=config", "does not match certificate"], Duration::from_secs(10));
    let out = curl(&["--cacert", pki.ca(), &url]);
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn crl_change_takes_effect_without_restart() {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let bob = pki.ca.issue_client(&ClientSpec { common_name: "bob", ..Default::default() }).unwrap();
    bob.write(pki.dir.path(), "bob").unwrap();
    std::fs::write(pki.path("clients.crl"), pki.ca.crl(&[], 1).unwrap()).unwrap();
    let auth = "  [terminate.listener.client_auth]\n  mode = \"required\"\n  ca = \"ca.pem\"\n  crl = [\"clients.crl\"]\n";
    let (gate, port, _backend) = start(&pki, auth);
    let url = format!("https://localhost:{port}/");
    let (cert, key) = (pki.path("bob.pem"), pki.path("bob.key"));
    let args = ["--cacert", pki.ca(), "--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap(), &url];
    let out = curl(&args);
    assert!(out.status.success(), "{}", describe(&out));

    let staged = pki.path("clients.crl.new");
    std::fs::write(&staged, pki.ca.crl(&[bob.serial], 2).unwrap()).unwrap();
    std::fs::rename(&staged, pki.path("clients.crl")).unwrap();
    gate.proc.wait_for(&["reloading", "clients.crl"], Duration::from_secs(10));
    gate.proc.wait_for(&["reloaded", "section=terminate"], Duration::from_secs(10));
    let out = curl(&args);
    assert!(!out.status.success());
    assert!(describe(&out).contains("certificate revoked"), "{}", describe(&out));
}

#[test]
fn sigterm_lets_a_64mib_download_finish_within_the_drain_period() {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let root = pki.path("www");
    std::fs::create_dir(&root).unwrap();
    let want = random_file(&root.join("big.bin"), 64 << 20);
    let nginx = Nginx::start(&root);
    let config = format!(
        "[terminate]\ndrain_timeout = \"30s\"\n[[terminate.listener]]\nname = \"drain\"\nlisten = \"127.0.0.1:0\"\n\
         [[terminate.listener.certificate]]\ncert = \"server.pem\"\nkey = \"server.key\"\ndefault = true\n\
         [[terminate.listener.route]]\nbackends = [\"{}\"]\n",
        nginx.addr
    );
    std::fs::write(pki.path("tlsgate.toml"), config).unwrap();
    let mut gate =
        Tlsgate::start(BIN, &["terminate", "--config", pki.path("tlsgate.toml").to_str().unwrap()]);
    let addr = gate.listening(Some("drain"));
    let got = pki.path("big.out");
    let download = {
        let (ca, got) = (pki.ca().to_string(), got.clone());
        std::thread::spawn(move || {
            let url = format!("https://localhost:{}/big.bin", addr.port());
            curl(&["--cacert", &ca, "-f", "--limit-rate", "16M", "-o", got.to_str().unwrap(), &url])
        })
    };
    gate.proc.wait_for(&["handshake done"], Duration::from_secs(30));
    signal(&gate.proc, "-TERM");
    gate.proc.wait_for(&["draining connections", "open=1"], Duration::from_secs(10));
    // No new connections once draining.
    assert!(std::net::TcpStream::connect(addr).is_err(), "listener still accepting while draining");
    let out = download.join().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sha256_file(&got), want);
    gate.proc.wait_for(&["all connections finished"], Duration::from_secs(30));
    let status = gate.proc.wait_exit(Duration::from_secs(10)).expect("exits after draining");
    assert!(status.success(), "{status:?}");
}

#[test]
fn drain_is_bounded_and_json_logs_say_so() {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let (_backend, addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "ops");
    let config = format!(
        "[log]\nformat = \"json\"\n[terminate]\ndrain_timeout = \"1s\"\n[[terminate.listener]]\nname = \"cut\"\n\
         listen = \"127.0.0.1:0\"\n[[terminate.listener.certificate]]\ncert = \"server.pem\"\nkey = \"server.key\"\n\
         default = true\n[[terminate.listener.route]]\nbackends = [\"{addr}\"]\n"
    );
    std::fs::write(pki.path("tlsgate.toml"), config).unwrap();
    let mut gate =
        Tlsgate::start(BIN, &["terminate", "--config", pki.path("tlsgate.toml").to_str().unwrap()]);
    let line = gate
        .proc
        .wait_logged(&["\"message\":\"listening\"", "\"listener\":\"cut\""], Duration::from_secs(30));
    let addr: std::net::SocketAddr =
        line.split("\"addr\":\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
    // A client that never finishes: a held connection after its handshake.
    let _held =
        tlsgate_testkit::tls_client::handshake(addr, &pki.ca_path, "localhost", Duration::from_secs(10))
            .unwrap();
    gate.proc.wait_for(&["\"message\":\"handshake done\""], Duration::from_secs(10));
    signal(&gate.proc, "-TERM");
    gate.proc.wait_for(&["draining connections", "\"open\":1"], Duration::from_secs(10));
    gate.proc.wait_for(&["drain period over, cutting remaining connections"], Duration::from_secs(10));
    let status = gate.proc.wait_exit(Duration::from_secs(10)).expect("exits once the drain period is over");
    assert!(status.success(), "{status:?}");
    // Every line of the log is one JSON object.
    for l in gate.proc.log_text().lines() {
        assert!(l.starts_with('{') && l.ends_with('}'), "not a JSON line: {l}");
    }
}

/// A client connected with a certificate that a reloaded CRL now revokes is disconnected at the
/// reload; another client's connection on the same listener goes on.
#[test]
fn a_reload_closes_connections_whose_client_certificate_is_now_revoked() {
    use std::io::Read;
    use tlsgate_testkit::tls_client::{get, handshake_as};
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let bob = pki.ca.issue_client(&ClientSpec { common_name: "bob", ..Default::default() }).unwrap();
    bob.write(pki.dir.path(), "bob").unwrap();
    let alice = pki.ca.issue_client(&ClientSpec { common_name: "alice", ..Default::default() }).unwrap();
    alice.write(pki.dir.path(), "alice").unwrap();
    std::fs::write(pki.path("clients.crl"), pki.ca.crl(&[], 1).unwrap()).unwrap();
    let auth = "  [terminate.listener.client_auth]\n  mode = \"required\"\n  ca = \"ca.pem\"\n  crl = [\"clients.crl\"]\n";
    let (gate, port, _backend) = start(&pki, auth);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let wait = Duration::from_secs(10);
    let held = |stem: &str| {
        let (cert, key) = (pki.path(&format!("{stem}.pem")), pki.path(&format!("{stem}.key")));
        let mut s = handshake_as(addr, &pki.ca_path, "localhost", Some((&cert, &key)), wait).unwrap();
        assert!(get(&mut s).unwrap().starts_with("HTTP/1.1 200"));
        s
    };
    let mut bobs = held("bob");
    let mut alices = held("alice");
    let bob_addr = bobs.sock.local_addr().unwrap().to_string();

    let staged = pki.path("clients.crl.new");
    std::fs::write(&staged, pki.ca.crl(&[bob.serial], 2).unwrap()).unwrap();
    std::fs::rename(&staged, pki.path("clients.crl")).unwrap();
    // Bob's connection ends (no close_notify: it is cut), within the read timeout.
    let mut buf = [0u8; 64];
    match bobs.read(&mut buf) {
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            panic!("bob's revoked connection is still open")
        }
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("bob's revoked connection still delivers {n} bytes"),
    }
    gate.proc.wait_for(&["closing a connection", "revoked now", &format!("client={bob_addr}")], wait);
    gate.proc.wait_for(&["connection closed: client certificate revoked", &bob_addr], wait);
    assert!(get(&mut alices).unwrap().starts_with("HTTP/1.1 200"), "alice's connection was disturbed");
    assert_eq!(gate.proc.lines_with(&["closing a connection", "revoked now"]).len(), 1);
}

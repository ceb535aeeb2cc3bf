//! `tlsgate run --config FILE`: terminate, originate, tunnel gate and tunnel portal from one
//! config in one process — traffic through each, one admin listener whose /metrics shows each,
//! one SIGHUP reloading each, one SIGTERM stopping all with exit 0 — and a section `run` cannot
//! start refused by name.

use std::process::Command;
use std::time::Duration;

use tlsgate_testkit::clients::{curl, describe};
use tlsgate_testkit::net::two_free_ports;
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::{Proc, Tlsgate};
use tlsgate_tls::pki::ClientSpec;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const WAIT: Duration = Duration::from_secs(30);

fn signal(p: &Tlsgate, sig: &str) {
    let ok = Command::new("kill").args([sig, &p.proc.pid().to_string()]).status().unwrap();
    assert!(ok.success());
}

/// The sample line of metric `name` carrying every one of `labels`.
fn sample<'a>(metrics: &'a str, name: &str, labels: &[&str]) -> Option<&'a str> {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|label| l.contains(label)))
}

#[test]
fn one_process_runs_terminate_originate_gate_and_portal_from_one_config() {
    let pki = Pki::new();
    pki.server("front", &["localhost"]);
    pki.server("gate", &["localhost"]);
    let spec = ClientSpec { common_name: "laptop-1", ..ClientSpec::default() };
    pki.ca.issue_client(&spec).unwrap().write(pki.dir.path(), "portal").unwrap();
    let (_backend, backend) = Tlsgate::backend(BIN, "127.0.0.1:0", "one process");
    // The originate upstream and the portal's gate are sections of the same file, so their
    // addresses are written into it.
    let (front, gate) = two_free_ports();
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[terminate]
drain_timeout = "5s"

[[terminate.listener]]
name = "front"
listen = "127.0.0.1:{front}"
  [[terminate.listener.certificate]]
  cert = "front.pem"
  key = "front.key"
  default = true
  [[terminate.listener.route]]
  backends = ["{backend}"]

[[originate.listener]]
name = "to-front"
listen = "127.0.0.1:0"
upstreams = ["127.0.0.1:{front}"]
sni = "localhost"
ca = "ca.pem"

[tunnel.gate]
listen = "127.0.0.1:{gate}"
cert = "gate.pem"
key = "gate.key"
client_ca = "ca.pem"

[tunnel.portal]
gate = "127.0.0.1:{gate}"
server_name = "localhost"
ca = "ca.pem"
cert = "portal.pem"
key = "portal.key"
socks = "127.0.0.1:0"
"#
    );
    let path = pki.path("tlsgate.toml");
    std::fs::write(&path, config).unwrap();
    let mut run = Tlsgate::start(BIN, &["run", "--config", path.to_str().unwrap()]);
    let logged = |needles: &[&str], key: &str| -> String {
        let line = run.proc.wait_logged(needles, WAIT);
        Proc::field(&line, key).unwrap_or_else(|| panic!("no {key} in {line}"))
    };
    let admin = logged(&["admin listening"], "addr");
    let originate = logged(&["originate listening", "listener=to-front"], "addr");
    let socks = logged(&["SOCKS5 listening"], "listen");
    run.listening(Some("front"));
    run.proc.wait_logged(&["connected to gate"], WAIT);

    let hello = "hello from one process\n";
    let check = |out: std::process::Output| {
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), hello);
    };
    // TLS in through terminate; plaintext in through originate (then TLS to terminate); SOCKS5
    // through the portal and the gate.
    check(curl(&["--cacert", pki.ca(), &format!("https://localhost:{front}/")]));
    check(curl(&[&format!("http://{originate}/")]));
    check(curl(&["--socks5", &socks, &format!("http://{backend}/")]));

    let metrics = curl(&[&format!("http://{admin}/metrics")]);
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    let has = |name: &str, labels: &[&str]| {
        assert!(sample(&metrics, name, labels).is_some(), "no {name} {labels:?} in:\n{metrics}");
    };
    has("tlsgate_handshakes_total", &["listener=\"front\"", "result=\"ok\""]);
    has("tlsgate_upstream_handshakes_total", &["listener=\"to-front\"", "result=\"ok\""]);
    has("tlsgate_tunnel_connections_open", &["role=\"gate\""]);
    has("tlsgate_tunnel_connections_open", &["role=\"portal\""]);
    has("tlsgate_tunnel_sessions_total", &["role=\"gate\"", "result=\"opened\""]);

    signal(&run, "-HUP");
    for section in ["terminate", "originate", "tunnel.gate", "tunnel.portal"] {
        run.proc.wait_logged(&["reloaded", &format!("section={section} ")], WAIT);
    }
    assert!(run.proc.is_running(), "{}", run.proc.log_text());
    check(curl(&[&format!("http://{originate}/")]));

    signal(&run, "-TERM");
    let status = run.proc.wait_exit(WAIT).expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", run.proc.log_text());
}

#[test]
fn a_bad_section_is_refused_by_name_and_an_empty_config_runs_nothing() {
    let pki = Pki::new();
    let path = pki.path("connect.toml");
    std::fs::write(&path, "[connect]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let out = Command::new(BIN).args(["run", "--config", path.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field `listen`"), "{stderr}");
    assert!(stderr.contains("connect.toml"), "{stderr}");

    std::fs::write(&path, "[admin]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let out = Command::new(BIN).args(["run", "--config", path.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to run"), "{}", describe(&out));
}

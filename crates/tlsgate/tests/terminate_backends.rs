//! Backend pools: a connect that is refused or times out moves on to the next member before any
//! byte was forwarded, so the client never notices; the log says what happened.

use std::time::Duration;

use tlsgate_testkit::clients::{curl, describe};
use tlsgate_testkit::net::{blackhole, dead_port};
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::Tlsgate;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");

#[test]
fn failed_connects_retry_on_the_next_backend() {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let (_backend, healthy) = Tlsgate::backend(BIN, "127.0.0.1:0", "healthy");
    let hole = blackhole();
    let refused = format!("127.0.0.1:{}", dead_port());
    let config = format!(
        r#"
[[terminate.listener]]
name = "pool"
listen = "127.0.0.1:0"
  [[terminate.listener.certificate]]
  cert = "server.pem"
  key = "server.key"
  default = true
  [[terminate.listener.route]]
  backends = ["{hole}", "{refused}", "{healthy}"]
  connect_timeout = "1s"
"#,
        hole = hole.addr
    );
    let path = pki.path("tlsgate.toml");
    std::fs::write(&path, config).unwrap();
    let gate = Tlsgate::start(BIN, &["terminate", "--config", path.to_str().unwrap()]);
    let port = gate.listening(Some("pool")).port();
    let url = format!("https://localhost:{port}/");

    // Round-robin starts at the black hole, then the refusing port, then the healthy member.
    let out = curl(&["--cacert", pki.ca(), &url]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from healthy\n");
    gate.proc.wait_for(
        &["backend connect failed", &hole.addr.to_string(), "timed out after 1s"],
        Duration::from_secs(10),
    );
    gate.proc.wait_for(&["backend connect failed", &refused, "refused"], Duration::from_secs(10));
    gate.proc.wait_for(&["connected after retry", &healthy], Duration::from_secs(10));

    // The next connections start further on and still all land on the healthy member.
    for _ in 0..2 {
        let out = curl(&["--cacert", pki.ca(), &url]);
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from healthy\n");
    }
}

struct Pools {
    pki: Pki,
    gate: Tlsgate,
    port: u16,
}

/// One listener whose default route has `backends` and the extra route settings `route`.
fn pool_gate(backends: &[String], route: &str) -> Pools {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    let config = format!(
        "[[terminate.listener]]\nname = \"pool\"\nlisten = \"127.0.0.1:0\"\n\
         [[terminate.listener.certificate]]\ncert = \"server.pem\"\nkey = \"server.key\"\ndefault = true\n\
         [[terminate.listener.route]]\nbackends = [{}]\nconnect_timeout = \"1s\"\n{route}\n",
        list.join(", ")
    );
    std::fs::write(pki.path("tlsgate.toml"), config).unwrap();
    let gate = Tlsgate::start(BIN, &["terminate", "--config", pki.path("tlsgate.toml").to_str().unwrap()]);
    let port = gate.listening(Some("pool")).port();
    Pools { pki, gate, port }
}

/// GET / from source address `from` (any 127/8 address is local); the backend's name.
fn hello(p: &Pools, from: &str) -> Result<String, String> {
    let url = format!("https://localhost:{}/", p.port);
    let out = curl(&["--cacert", p.pki.ca(), "--interface", from, &url]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().trim_start_matches("hello from ").to_string())
    } else {
        Err(describe(&out))
    }
}

#[test]
fn least_connections_avoids_the_busy_member() {
    let (_a, a) = Tlsgate::backend(BIN, "127.0.0.1:0", "A");
    let (_b, b) = Tlsgate::backend(BIN, "127.0.0.1:0", "B");
    let p = pool_gate(&[a, b], "balance = \"least-connections\"");
    // Hold one slow connection open, then see where new ones go.
    let body = p.pki.path("slow.bin");
    tlsgate_testkit::data::random_file(&body, 4 << 20);
    let slow = {
        let (ca, port) = (p.pki.ca().to_string(), p.port);
        std::thread::spawn(move || {
            let data = format!("@{}", body.display());
            curl(&[
                "--cacert",
                &ca,
                "--limit-rate",
                "1M",
                "--data-binary",
                &data,
                "-o",
                "/dev/null",
                &format!("https://localhost:{port}/echo"),
            ])
        })
    };
    p.gate.proc.wait_for(&["handshake done"], Duration::from_secs(30));
    // While the slow client holds one member, every quick GET must go to the other.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(hello(&p, "127.0.0.1").unwrap());
    }
    assert_eq!(seen.len(), 1, "quick requests spread over the busy member too: {seen:?}");
    let out = slow.join().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    // Idle again: both members take turns.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(hello(&p, "127.0.0.1").unwrap());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn source_hash_keeps_each_client_on_one_member() {
    let names = ["A", "B", "C"];
    let backends: Vec<(Tlsgate, String)> =
        names.iter().map(|n| Tlsgate::backend(BIN, "127.0.0.1:0", n)).collect();
    let p =
        pool_gate(&backends.iter().map(|(_, a)| a.clone()).collect::<Vec<_>>(), "balance = \"source-hash\"");
    let mut members = std::collections::HashSet::new();
    for client in 1..=12 {
        let from = format!("127.0.0.{client}");
        let first = hello(&p, &from).unwrap();
        for _ in 0..3 {
            assert_eq!(hello(&p, &from).unwrap(), first, "client {from} moved");
        }
        members.insert(first);
    }
    assert!(members.len() >= 2, "12 clients all hashed to {members:?}");
}

#[test]
fn active_checks_take_a_dead_member_out_and_bring_it_back() {
    let (a_proc, a) = Tlsgate::backend(BIN, "127.0.0.1:0", "A");
    let (_b, b) = Tlsgate::backend(BIN, "127.0.0.1:0", "B");
    let p = pool_gate(
        &[a.clone(), b],
        "[terminate.listener.route.health]\ninterval = \"100ms\"\ntimeout = \"500ms\"\nrise = 2\nfall = 2\n",
    );
    drop(a_proc);
    p.gate.proc.wait_for(&["backend marked down", &a, "health check"], Duration::from_secs(10));
    for _ in 0..6 {
        assert_eq!(hello(&p, "127.0.0.1").unwrap(), "B", "a request went to the dead member");
    }
    assert!(
        p.gate.proc.lines_with(&["backend connect failed", &a]).is_empty(),
        "real traffic was sent to the down member"
    );
    let (_a2, _) = Tlsgate::backend(BIN, &a, "A");
    p.gate.proc.wait_for(&["backend marked up", &a], Duration::from_secs(10));
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(hello(&p, "127.0.0.1").unwrap());
    }
    assert!(seen.contains("A"), "{seen:?}");
}

#[test]
fn a_member_killed_during_a_load_run_is_ejected_and_no_request_fails() {
    let (a_proc, a) = Tlsgate::backend(BIN, "127.0.0.1:0", "A");
    let (_b, b) = Tlsgate::backend(BIN, "127.0.0.1:0", "B");
    let (_c, c) = Tlsgate::backend(BIN, "127.0.0.1:0", "C");
    let p =
        pool_gate(&[a.clone(), b, c], "[terminate.listener.route.health]\nfall = 2\neject_time = \"60s\"\n");
    let mut a_proc = Some(a_proc);
    let mut failures = Vec::new();
    for i in 0..40 {
        if i == 10 {
            a_proc.take(); // killed mid-run
        }
        if let Err(e) = hello(&p, "127.0.0.1") {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
    p.gate.proc.wait_logged(&["backend marked down", &a], Duration::from_secs(10));
    // Ejected: after the two failed connects that took it out, no more attempts on it.
    assert_eq!(
        p.gate.proc.lines_with(&["backend connect failed", &a]).len(),
        2,
        "{}",
        p.gate.proc.log_text()
    );
}

#[test]
fn a_pool_without_healthy_members_fails_fast() {
    let dead = format!("127.0.0.1:{}", dead_port());
    let p = pool_gate(
        std::slice::from_ref(&dead),
        "[terminate.listener.route.health]\nfall = 1\neject_time = \"60s\"\n",
    );
    assert!(hello(&p, "127.0.0.1").is_err());
    p.gate.proc.wait_for(&["backend marked down", &dead], Duration::from_secs(10));
    assert!(hello(&p, "127.0.0.1").is_err());
    p.gate.proc.wait_for(&["side=backend", "no healthy backend in pool"], Duration::from_secs(10));
    assert_eq!(
        p.gate.proc.lines_with(&["backend connect failed"]).len(),
        1,
        "the second client waited on a connect"
    );
}

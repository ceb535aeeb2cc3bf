//! Limits: connections per listener and per process (the rest wait in the accept queue, never
//! refused), and the idle timeout.

use std::time::Duration;

use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::{Proc, Tlsgate};
use tlsgate_testkit::tls_client::{get, handshake};

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");

fn start(pki: &Pki, terminate: &str, listeners: &[(&str, &str)]) -> (Tlsgate, Tlsgate) {
    pki.server("server", &["localhost"]);
    let (backend, addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "limits");
    let mut config = format!("[terminate]\n{terminate}\n");
    for (name, extra) in listeners {
        config.push_str(&format!(
            "[[terminate.listener]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\n{extra}\n\
             [[terminate.listener.certificate]]\ncert = \"server.pem\"\nkey = \"server.key\"\ndefault = true\n\
             [[terminate.listener.route]]\nbackends = [\"{addr}\"]\n"
        ));
    }
    std::fs::write(pki.path("tlsgate.toml"), config).unwrap();
    let gate = Tlsgate::start(BIN, &["terminate", "--config", pki.path("tlsgate.toml").to_str().unwrap()]);
    (gate, backend)
}

const QUICK: Duration = Duration::from_millis(800);
const PATIENT: Duration = Duration::from_secs(10);

#[test]
fn listener_limit_queues_the_next_client_until_one_leaves() {
    let pki = Pki::new();
    let (gate, _b) = start(&pki, "", &[("small", "max_connections = 2"), ("other", "")]);
    let small = gate.listening(Some("small"));
    let other = gate.listening(Some("other"));
    let mut first = handshake(small, &pki.ca_path, "localhost", PATIENT).unwrap();
    let _second = handshake(small, &pki.ca_path, "localhost", PATIENT).unwrap();
    // The third is not accepted while two are open: its handshake cannot finish...
    assert!(handshake(small, &pki.ca_path, "localhost", QUICK).is_err(), "a third connection was served");
    gate.proc.wait_for(&["connection limit reached", "listener=small", "scope=listener"], PATIENT);
    // ...while another listener without a limit serves on.
    assert!(get(&mut handshake(other, &pki.ca_path, "localhost", PATIENT).unwrap())
        .unwrap()
        .contains("hello from limits"));
    assert!(get(&mut first).unwrap().contains("hello from limits"));
    drop(first);
    let mut third = handshake(small, &pki.ca_path, "localhost", PATIENT).expect("served once a slot is free");
    assert!(get(&mut third).unwrap().contains("hello from limits"));
}

#[test]
fn process_limit_spans_listeners() {
    let pki = Pki::new();
    let (gate, _b) = start(&pki, "max_connections = 2", &[("a", ""), ("b", "")]);
    let a = gate.listening(Some("a"));
    let b = gate.listening(Some("b"));
    let held_a = handshake(a, &pki.ca_path, "localhost", PATIENT).unwrap();
    let _held_b = handshake(b, &pki.ca_path, "localhost", PATIENT).unwrap();
    assert!(handshake(a, &pki.ca_path, "localhost", QUICK).is_err(), "over the process limit");
    gate.proc.wait_logged(&["connection limit reached", "scope=process"], PATIENT);
    drop(held_a);
    assert!(handshake(b, &pki.ca_path, "localhost", PATIENT).is_ok());
}

#[test]
fn idle_connections_are_closed_and_busy_ones_are_not() {
    let pki = Pki::new();
    let (gate, _b) = start(&pki, "", &[("idle", "idle_timeout = \"1s\"")]);
    let addr = gate.listening(Some("idle"));
    let mut quiet = handshake(addr, &pki.ca_path, "localhost", PATIENT).unwrap();
    let mut busy = handshake(addr, &pki.ca_path, "localhost", PATIENT).unwrap();
    // The busy one talks every 300 ms for 2.4 s, well past the idle timeout.
    for _ in 0..8 {
        assert!(get(&mut busy).unwrap().contains("hello from limits"));
        std::thread::sleep(Duration::from_millis(300));
    }
    gate.proc.wait_for(&["connection aborted", "idle for 1s, closed"], PATIENT);
    // The quiet one was closed: reading sees the end of the connection.
    let mut buf = [0u8; 16];
    let ended = matches!(std::io::Read::read(&mut quiet, &mut buf), Ok(0) | Err(_));
    assert!(ended, "idle connection still open");
    assert!(get(&mut busy).unwrap().contains("hello from limits"));
}

/// The soft file descriptor limit is raised to the hard one at start, and logged; running with
/// `--allow-insecure-key-permissions` is logged as a warning.
#[test]
fn the_descriptor_limit_is_raised_and_insecure_keys_warned() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server", &["localhost"]);
    let (_backend, addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "limits");
    let mut cmd = std::process::Command::new("prlimit");
    cmd.args(["--nofile=256:4096", BIN, "terminate", "--listen", "127.0.0.1:0"]);
    cmd.args(["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap(), "--backend", &addr]);
    cmd.arg("--allow-insecure-key-permissions");
    let gate = Tlsgate::start_command(cmd);
    gate.listening(None);
    let line = gate.proc.wait_logged(&["file descriptor limit"], PATIENT);
    assert_eq!(Proc::field(&line, "nofile").as_deref(), Some("4096"), "{line}");
    assert_eq!(Proc::field(&line, "raised_from").as_deref(), Some("256"), "{line}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", gate.proc.pid())).unwrap();
    let nofile = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    assert_eq!(nofile.split_whitespace().collect::<Vec<_>>()[3..5], ["4096", "4096"], "{nofile}");
    gate.proc.wait_logged(&["WARN", "allow_insecure_key_permissions"], PATIENT);
}

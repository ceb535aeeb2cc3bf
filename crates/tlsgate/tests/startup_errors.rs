//! Start-up mistakes are the configuration's: each is said once, as a `config` error that names
//! the listener and the file, in words (no rustls variant, no `Some(…)`, no error number).

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::Proc;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");

/// Runs tlsgate with `args` to its exit (it must fail) and returns everything it printed.
fn fails(args: &[&str]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    let mut p = Proc::spawn("tlsgate", cmd);
    let status = p.wait_exit(Duration::from_secs(30)).expect("tlsgate exits on a start-up mistake");
    let log = p.log_text();
    assert!(!status.success(), "tlsgate started:\n{log}");
    log
}

/// `want` is said on exactly one line, as a config error, and nothing reads like Rust.
fn said_once(log: &str, want: &str) {
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(want)).collect();
    assert_eq!(lines.len(), 1, "expected one line with {want:?}:\n{log}");
    assert!(lines[0].contains("config error: "), "not a config error: {}", lines[0]);
    for bad in ["internal", "Some(", "None", "os error", "KeyMismatch", "Error {", "http"] {
        assert!(!log.contains(bad), "{bad:?} in:\n{log}");
    }
}

#[test]
fn tls_material_mistakes_name_the_listener_and_the_file() {
    let pki = Pki::new();
    let (cert, key) = pki.server("a", &["localhost"]);
    let (_, other_key) = pki.server("b", &["localhost"]);
    let junk = pki.path("junk.key");
    tlsgate_tls::pki::write_file(&junk, "not a key\n", 0o600).unwrap();
    let missing = pki.path("missing.pem");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let (cert, key, other_key, junk, missing) = (
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        other_key.to_str().unwrap(),
        junk.to_str().unwrap(),
        missing.to_str().unwrap(),
    );
    let run = |cert: &str, key: &str| {
        fails(&["terminate", "--listen", &listen, "--cert", cert, "--key", key, "--backend", "127.0.0.1:9"])
    };

    let log = run(cert, other_key);
    said_once(&log, &format!("listener {listen}: key {other_key} does not match certificate {cert}"));
    assert!(log.contains("side=config"), "{log}");

    let log = run(missing, key);
    said_once(
        &log,
        &format!("listener {listen}: cannot read certificate {missing}: no such file or directory"),
    );

    let log = run(cert, junk);
    said_once(&log, &format!("listener {listen}: key {junk}: no usable private key"));
}

#[test]
fn an_address_in_use_is_named() {
    let pki = Pki::new();
    let (cert, key) = pki.server("a", &["localhost"]);
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let base = ["terminate", "--cert", cert, "--key", key, "--backend", "127.0.0.1:9"];

    let log = fails(&[&base[..], &["--listen", &addr]].concat());
    said_once(&log, &format!("listener {addr}: address already in use"));

    // The admin listener's address: the terminate listener starts, then tlsgate stops.
    let log = fails(&[&base[..], &["--listen", "127.0.0.1:0", "--admin", &addr]].concat());
    said_once(&log, &format!("admin listener {addr}: address already in use"));

    // JSON logs: the same words, once, as a JSON line.
    let log = fails(&[&["--log-format", "json"][..], &base[..], &["--listen", &addr]].concat());
    said_once(&log, &format!("config error: listener {addr}: address already in use"));
    assert!(log.contains(r#""side":"config""#), "{log}");
}

#[test]
fn a_broken_config_file_is_named_with_its_line() {
    let pki = Pki::new();
    let path = pki.path("broken.toml");
    std::fs::write(&path, "[[terminate.listener]]\nlisten = \"127.0.0.1:0\"\nrout = 1\n").unwrap();
    let path = path.to_str().unwrap();
    let log = fails(&["terminate", "--config", path]);
    said_once(&log, &format!("tlsgate: config error: syntax error: {path}, line 3: unknown field `rout`"));

    let missing = pki.path("missing.toml");
    let missing = missing.to_str().unwrap();
    let log = fails(&["terminate", "--config", missing]);
    said_once(&log, &format!("cannot read config file {missing}: no such file or directory"));
}

//! `tlsgate check --config FILE`: a good config says `config OK` with a line per section and
//! exits 0; a missing key, a key of another certificate, a key others can read and a TOML syntax
//! error each exit 1 with a message naming the file. Nothing is bound meanwhile.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use tlsgate_testkit::pki::Pki;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");

/// A terminate listener on `listen` with one certificate, and an admin listener.
fn config(dir: &Path, listen: &str, cert: &str, key: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[terminate]
[[terminate.listener]]
name = "web"
listen = "{listen}"
  [[terminate.listener.certificate]]
  cert = "{cert}"
  key = "{key}"
  default = true
  [[terminate.listener.route]]
  backends = ["127.0.0.1:9"]
"#
    );
    let path = dir.join("tlsgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn check(path: &Path) -> (i32, String, String) {
    let out: Output = Command::new(BIN).args(["check", "--config", path.to_str().unwrap()]).output().unwrap();
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn good_config_is_ok_and_binds_nothing() {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    // A port something already holds: check must not try to bind it.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = busy.local_addr().unwrap().to_string();
    let path = config(pki.dir.path(), &listen, "server.pem", "server.key");
    let (code, out, err) = check(&path);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains(&format!("terminate: 1 listener(s) (web {listen}), 1 certificate(s)")), "{out}");
    assert!(out.contains("admin: 127.0.0.1:0"), "{out}");
    assert_eq!(out.lines().last(), Some("config OK"), "{out}");
}

#[test]
fn missing_key_file_is_named() {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let path = config(pki.dir.path(), "127.0.0.1:0", "server.pem", "absent.key");
    let (code, out, err) = check(&path);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    let named = pki.path("absent.key").display().to_string();
    assert!(err.contains("terminate listener web") && err.contains(&named), "{err}");
    assert!(!out.contains("config OK"), "{out}");
}

#[test]
fn key_of_another_certificate_is_named() {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    pki.server("other", &["localhost"]);
    let path = config(pki.dir.path(), "127.0.0.1:0", "server.pem", "other.key");
    let (code, out, err) = check(&path);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("does not match certificate"), "{err}");
    assert!(err.contains(&pki.path("other.key").display().to_string()), "{err}");
    assert!(err.contains(&pki.path("server.pem").display().to_string()), "{err}");
}

#[test]
fn world_readable_key_is_refused() {
    let pki = Pki::new();
    let (_, key) = pki.server("server", &["localhost"]);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = config(pki.dir.path(), "127.0.0.1:0", "server.pem", "server.key");
    let (code, out, err) = check(&path);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains(&key.display().to_string()) && err.contains("accessible to group or others"),
        "{err}"
    );
}

#[test]
fn toml_syntax_error_names_the_file_and_line() {
    let pki = Pki::new();
    let path = pki.path("tlsgate.toml");
    std::fs::write(&path, "[terminate]\nwatch_interval = \n").unwrap();
    let (code, out, err) = check(&path);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains(&format!("syntax error: {}, line 2", path.display())), "{err}");
}

#[test]
fn every_broken_file_is_reported_once() {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let text = r#"
[terminate]
[[terminate.listener]]
name = "a"
listen = "127.0.0.1:0"
  [[terminate.listener.certificate]]
  cert = "server.pem"
  key = "gone-a.key"
  names = ["a.example"]
  [[terminate.listener.certificate]]
  cert = "server.pem"
  key = "gone-b.key"
  names = ["b.example"]
  [[terminate.listener.route]]
  backends = ["127.0.0.1:9"]

[process]
user = "tlsgate-check-no-such-user"
"#;
    let path = pki.path("tlsgate.toml");
    std::fs::write(&path, text).unwrap();
    let (code, _, err) = check(&path);
    assert_eq!(code, 1, "{err}");
    let problems: Vec<&str> = err.lines().filter(|l| l.starts_with("tlsgate check: ")).collect();
    assert_eq!(problems.len(), 3, "{err}");
    assert!(problems[0].contains("gone-a.key") && problems[1].contains("gone-b.key"), "{err}");
    assert!(problems[2].contains("\"tlsgate-check-no-such-user\": no such user"), "{err}");
}

/// An `[inline]` section between two interfaces with one direct service.
fn inline_config(dir: &Path, server_iface: &str, key: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[inline]
client_iface = "veth-c0"
server_iface = "{server_iface}"

[[inline.service]]
listen = "10.9.0.2:443"
plain_port = 80
cert = "server.pem"
key = "{key}"
"#
    );
    let path = dir.join("inline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn an_inline_section_is_checked_without_opening_an_interface() {
    let pki = Pki::new();
    let (_, key) = pki.server("server", &["localhost"]);
    // Interfaces that do not exist: check reads files and opens nothing.
    let (code, out, err) = check(&inline_config(pki.dir.path(), "veth-s0", "server.key"));
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("inline: veth-c0 <-> veth-s0, 1 service(s) (10.9.0.2:443=80 buffered)"), "{out}");
    assert_eq!(out.lines().last(), Some("config OK"), "{out}");

    let (code, _, err) = check(&inline_config(pki.dir.path(), "veth-c0", "server.key"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("[inline]: client_iface and server_iface are both \"veth-c0\""), "{err}");

    let (code, _, err) = check(&inline_config(pki.dir.path(), "veth-s0", "absent.key"));
    assert_eq!(code, 1, "{err}");
    let named = pki.path("absent.key").display().to_string();
    assert!(err.contains("inline service 10.9.0.2:443=80") && err.contains(&named), "{err}");

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = check(&inline_config(pki.dir.path(), "veth-s0", "server.key"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("accessible to group or others"), "{err}");
}

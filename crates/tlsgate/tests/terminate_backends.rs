//! Backend pools: a connect that is refused or times out moves on to the next member before any
//! byte was forwarded, so the client never notices; the log says what happened.

use std::time::Duration;

use tlsgate_testkit::clients::{curl, describe};
use tlsgate_testkit::net::{blackhole, dead_port};
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::{Proc, Tlsgate};

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");

#[test]
fn failed_connects_retry_on_the_next_backend() {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let backend = Tlsgate::start(BIN, &["backend", "--listen", "127.0.0.1:0", "--name", "healthy"]);
    let healthy =
        Proc::field(&backend.proc.wait_for(&["backend listening"], Duration::from_secs(30)), "addr").unwrap();
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

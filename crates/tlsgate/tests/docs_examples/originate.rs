//! `tlsgate originate`: README's commands, docs/originate.md and docs/transparent.md.

use tlsgate_testkit::docs::Block;
use tlsgate_testkit::process::Tlsgate;

use crate::scene::{only, Scene, WAIT};

/// db.example (127.0.0.2:5432): a TLS server in front of the built-in backend, requiring a
/// client certificate from the scene's CA when `mutual`. Returns it and the backend.
fn db_upstream(s: &Scene, mutual: bool) -> (Tlsgate, Tlsgate) {
    s.server_cert("db", &["db.example"]);
    let backend = s.backend("127.0.0.1:8080", "db");
    let mut line = "tlsgate terminate --listen 127.0.0.2:5432 --cert db.pem --key db.key \
                    --backend 127.0.0.1:8080"
        .to_string();
    if mutual {
        line += " --client-ca ca.pem";
    }
    let db = s.start(&line);
    db.listening(None);
    (db, backend)
}

fn hosts() -> [(&'static str, &'static str); 2] {
    [("db.example", "127.0.0.2"), ("db2.example", "127.0.0.3")]
}

/// The flags of docs/originate.md: a plaintext client reaches db.example over verified mutual
/// TLS (db2.example, the failover, is not needed while db.example answers).
pub fn flags(block: &Block, _: &[Block]) {
    let s = Scene::new("doc-orig", &hosts());
    s.client_cert("client", "app", &[]);
    let (db, _backend) = db_upstream(&s, true);
    let gate = s.start(only(&block.commands()));
    gate.proc.wait_logged(&["originate listening"], WAIT);
    s.expect_hello("http://127.0.0.1:5432/", "db");
    db.proc.wait_logged(&["handshake done", "app"], WAIT);
}

/// The same listener in TOML.
pub fn toml(block: &Block, _: &[Block]) {
    let s = Scene::new("doc-origt", &hosts());
    s.client_cert("client", "app", &[]);
    s.file("originate.toml", &block.text);
    let (db, _backend) = db_upstream(&s, true);
    let gate = s.start("tlsgate originate --config originate.toml");
    gate.proc.wait_logged(&["originate listening", "listener=db"], WAIT);
    s.expect_hello("http://127.0.0.1:5432/", "db");
    db.proc.wait_logged(&["handshake done", "app"], WAIT);
    gate.proc.wait_logged(&["upstream handshake done", "db.example"], WAIT);
}

/// README: the stunnel-like command, and `--config mesh.toml` with docs/transparent.md's file.
pub fn readme(block: &Block, all: &[Block]) {
    let commands = block.commands();
    assert_eq!(commands.len(), 2, "{commands:?}");
    let s = Scene::new("doc-origr", &hosts());
    let (_db, _backend) = db_upstream(&s, false);
    let plain = s.start(&commands[0]);
    plain.proc.wait_logged(&["originate listening"], WAIT);
    s.expect_hello("http://127.0.0.1:5432/", "db");

    let mesh = crate::find(all, "docs/transparent.md", "[admin]");
    s.file("mesh.toml", &mesh.text);
    s.ca_as("mesh-ca.pem");
    s.client_cert("host", "host", &[]);
    let transparent = s.start(&commands[1]);
    transparent.proc.wait_logged(&["transparent listening", "listener=mesh"], WAIT);
}

/// docs/transparent.md: its iptables rule and `tlsgate originate --config mesh.toml` in a
/// client namespace, 10.20.0.2 a TLS server in a second namespace, and an unmodified curl.
pub fn transparent(block: &Block, all: &[Block]) {
    let far = Scene::new("doc-far", &[]);
    far.server_cert("far", &["10.20.0.2"]);
    let host = Scene::new("doc-host", &[]);
    host.ns.link("10.20.0.1/16", &far.ns, "10.20.0.2/16");
    let _backend = far.backend("127.0.0.1:8080", "far");
    let server = far.start(
        "tlsgate terminate --listen 10.20.0.2:80 --cert far.pem --key far.key --backend 127.0.0.1:8080",
    );
    server.listening(None);

    let mesh = crate::find(all, "docs/transparent.md", "[admin]");
    host.file("mesh.toml", &mesh.text);
    host.file("mesh-ca.pem", far.pki.ca.cert_pem());
    host.client_cert("host", "host", &[]);
    let commands = block.commands();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(commands[0].starts_with("iptables "), "{commands:?}");
    host.must(&commands[0]);
    let gate = host.start(&commands[1]);
    gate.proc.wait_logged(&["transparent listening"], WAIT);
    host.expect_hello("http://10.20.0.2/", "far");
    gate.proc.wait_logged(&["policy decision", "dst=10.20.0.2:80", "action=originate"], WAIT);
    server.proc.wait_logged(&["handshake done", "TLSv1_3"], WAIT);
    let refused = host.run("curl -sS --max-time 20 http://10.20.0.2:9090/");
    assert!(!refused.status.success(), "the deny rule closes other ports");
}

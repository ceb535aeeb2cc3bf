//! `tlsgate tunnel`: README's gate and portal, docs/tunnel.md's quick start.

use tlsgate_testkit::docs::Block;
use tlsgate_testkit::process::Tlsgate;

use crate::scene::{Scene, WAIT};

/// The certificates both examples name: gate.pem for the gate's host, portal.pem for a portal.
fn tunnel_scene(tag: &str, gate_host: &str, hosts: &[(&str, &str)]) -> Scene {
    let mut all = vec![(gate_host, "127.0.0.1")];
    all.extend_from_slice(hosts);
    let s = Scene::new(tag, &all);
    s.server_cert("gate", &[gate_host]);
    s.client_cert("portal", "portal-1", &[]);
    s
}

/// README: a gate, and a portal with SOCKS5 and a TCP forward to db.internal:5432.
pub fn readme(block: &Block, _: &[Block]) {
    let commands = block.commands();
    assert_eq!(commands.len(), 2, "{commands:?}");
    let s = tunnel_scene("doc-tunr", "gate.example", &[("db.internal", "127.0.0.2")]);
    let _db = s.backend("127.0.0.2:5432", "db");
    let gate = s.start(&commands[0]);
    gate.proc.wait_logged(&["tunnel gate listening"], WAIT);
    let portal = s.start(&commands[1]);
    portal.proc.wait_logged(&["tunnel portal: connected to gate"], WAIT);
    s.expect_hello("http://127.0.0.1:15432/", "db");
    s.expect_hello("--socks5-hostname 127.0.0.1:1080 http://db.internal:5432/", "db");
}

/// docs/tunnel.md's quick start: gate, portal, then its curl and dig lines as written; the psql
/// line's forward is checked with curl (its `…` stands for the reader's own arguments).
pub fn quick_start(block: &Block, _: &[Block]) {
    let commands = block.commands();
    assert_eq!(commands.len(), 5, "{commands:?}");
    let s = tunnel_scene(
        "doc-tunq",
        "gate.example.com",
        &[("intranet.internal", "127.0.0.2"), ("db.internal", "127.0.0.3")],
    );
    s.must("ip addr add 10.0.0.53/32 dev lo");
    let dns = s.spawn(
        "dnsmasq",
        "dnsmasq",
        &[
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--log-facility=-",
            "--bind-interfaces",
            "--listen-address=10.0.0.53",
            "--user=root",
            "--pid-file=",
            "--address=/intranet.internal/127.0.0.2",
        ],
    );
    dns.wait_for(&["started, version"], WAIT);
    let _intranet = s.backend("127.0.0.2:80", "intranet");
    let _db = s.backend("127.0.0.3:5432", "db");
    let gate = s.start(&commands[0]);
    gate.proc.wait_logged(&["tunnel gate listening"], WAIT);
    let portal = s.start(&commands[1]);
    portal.proc.wait_logged(&["tunnel portal: connected to gate"], WAIT);

    assert!(commands[2].starts_with("curl --socks5-hostname"), "{commands:?}");
    assert!(s.must(&commands[2]).contains("hello from intranet"), "{}", commands[2]);
    assert!(commands[3].starts_with("psql -h 127.0.0.1 -p 15432"), "{commands:?}");
    s.expect_hello("http://127.0.0.1:15432/", "db");
    assert!(commands[4].starts_with("dig @127.0.0.1 -p 5353 intranet.internal"), "{commands:?}");
    let answer = s.must(&commands[4]);
    assert!(answer.contains("intranet.internal.\t") && answer.contains("127.0.0.2"), "{answer}");
}

/// A gate from [`crate::GATE`] with `fragment` merged in, on 127.0.0.1:7443 (gate.pem for
/// localhost, portals from the scene's CA), started and listening.
fn gate_with(s: &Scene, fragment: &Block) -> Tlsgate {
    s.server_cert("gate", &["localhost"]);
    s.file("gate.toml", &crate::merge(crate::GATE, &fragment.text));
    let gate = s.start("tlsgate tunnel gate -c gate.toml");
    gate.proc.wait_logged(&["tunnel gate listening"], WAIT);
    gate
}

/// A portal with a forward 127.0.0.1:`port` → `target` through the gate, connected.
fn portal(s: &Scene, stem: &str, port: u16, target: &str) -> Tlsgate {
    let p = s.start(&format!(
        "tlsgate tunnel portal --gate localhost:7443 --ca ca.pem --cert {stem}.pem --key {stem}.key \
         --forward tcp:127.0.0.1:{port}={target}"
    ));
    p.proc.wait_logged(&["tunnel portal: connected to gate"], WAIT);
    p
}

/// The per-identity policy: the portal it names opens 127.0.0.2:8080 (on the gate's host, so
/// only a rule naming it admits it); another portal gets `default_policy`, which does not.
pub fn policy(block: &Block, _: &[Block]) {
    let s = Scene::new("doc-tunp", &[]);
    s.client_cert("build-1", "build-1", &["spiffe://corp.example/portal/build-1"]);
    s.client_cert("other", "other", &[]);
    let _web = s.backend("127.0.0.2:8080", "web");
    let gate = gate_with(&s, block);
    let _build1 = portal(&s, "build-1", 15001, "127.0.0.2:8080");
    s.expect_hello("http://127.0.0.1:15001/", "web");
    let other = portal(&s, "other", 15002, "127.0.0.2:8080");
    let out = s.run("curl -sS --max-time 20 http://127.0.0.1:15002/");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hello"), "default_policy refuses it");
    other.proc.wait_logged(&["forward refused by gate"], WAIT);
    gate.proc.wait_logged(&["open refused", "portal=other"], WAIT);
}

/// The reverse forward: the gate's 127.0.0.1:2222 reaches 127.0.0.1:22 on the portal's side,
/// which its `allow_reverse` admits.
pub fn reverse(block: &Block, _: &[Block]) {
    let s = Scene::new("doc-tunv", &[]);
    s.client_cert("portal", "build-1", &["spiffe://corp.example/portal/build-1"]);
    let _ssh = s.backend("127.0.0.1:22", "sshd");
    let gate = gate_with(&s, block);
    gate.proc.wait_logged(&["tunnel gate: reverse forward", "127.0.0.1:2222"], WAIT);
    s.file(
        "portal.toml",
        "[tunnel.portal]\ngate = \"localhost:7443\"\nca = \"ca.pem\"\ncert = \"portal.pem\"\n\
         key = \"portal.key\"\nallow_reverse = [\"allow tcp 127.0.0.1 22\"]\n",
    );
    let portal = s.start("tlsgate tunnel portal -c portal.toml");
    portal.proc.wait_logged(&["tunnel portal: connected to gate"], WAIT);
    s.expect_hello("http://127.0.0.1:2222/", "sshd");
}

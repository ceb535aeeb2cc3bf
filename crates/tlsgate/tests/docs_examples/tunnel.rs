//! `tlsgate tunnel`: README's gate and portal, docs/tunnel.md's quick start.

use tlsgate_testkit::docs::Block;

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

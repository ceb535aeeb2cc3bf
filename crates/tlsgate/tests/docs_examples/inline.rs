//! README's `tlsgate inline run` line, as written, in a namespace whose `eth0` and `eth1` are
//! veths to a client and a server namespace on one subnet: curl on the client gets the server's
//! plaintext backend over HTTPS through the bridge, and the admin answers.

use std::process::Command;

use tlsgate_testkit::docs::Block;
use tlsgate_testkit::netns::Netns;

use crate::scene::{self, Scene, WAIT};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("iproute2");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Offloads off, as on a wire: the bridge must never see frames above the MTU.
fn wire_like(ns: &Netns, dev: &str) {
    ns.must("ethtool", &["-K", dev, "tso", "off", "gso", "off", "gro", "off", "tx", "off"]);
}

pub fn readme(block: &Block, _: &[Block]) {
    let s = Scene::new("doc-inlr", &[]);
    let (client, server) = (Netns::new("doc-inlc"), Netns::new("doc-inls"));
    for (mine, host, theirs, addr) in
        [("eth0", &client, "c0", "10.0.0.1/24"), ("eth1", &server, "s0", "10.0.0.2/24")]
    {
        ip(&[
            "-n", &s.ns.name, "link", "add", mine, "type", "veth", "peer", "name", theirs, "netns",
            &host.name,
        ]);
        s.ns.must("sysctl", &["-qw", &format!("net.ipv6.conf.{mine}.disable_ipv6=1")]);
        ip(&["-n", &s.ns.name, "link", "set", mine, "up"]);
        ip(&["-n", &host.name, "addr", "add", addr, "dev", theirs]);
        ip(&["-n", &host.name, "link", "set", theirs, "up"]);
        wire_like(&s.ns, mine);
        wire_like(host, theirs);
    }
    s.server_cert("server", &["www.example.com"]);
    let backend = {
        let bin = env!("CARGO_BIN_EXE_tlsgate");
        let p = tlsgate_testkit::process::Proc::spawn(
            "backend",
            server.command(bin, &["backend", "--listen", "10.0.0.2:80", "--name", "inline"]),
        );
        p.wait_for(&["backend listening"], WAIT);
        p
    };
    let gate = s.start(scene::only(&block.commands()));
    gate.proc.wait_for(&["inline running"], WAIT);
    let ca = s.dir().join("ca.pem");
    s.ca_as("ca.pem");
    let out = client.run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "20",
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            "www.example.com:443:10.0.0.2",
            "https://www.example.com/",
        ],
    );
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("hello from inline"),
        "curl through the bridge: {body}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = s.must("curl -sS --max-time 10 http://127.0.0.1:9900/status.json");
    assert!(status.contains("\"inline\""), "{status}");
    drop(gate);
    drop(backend);
}

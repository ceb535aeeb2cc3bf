//! `tlsgate connect`: README's gate and portal, docs/config.md's `[connect]` sections.

use tlsgate_testkit::docs::Block;
use tlsgate_testkit::netns::Netns;
use tlsgate_testkit::process::Proc;

use crate::scene::{Scene, WAIT};

/// The built-in backend on `listen` inside `ns` (a destination network beside the gate's).
fn backend_in(ns: &Netns, listen: &str, name: &str) -> Proc {
    let bin = env!("CARGO_BIN_EXE_tlsgate");
    let p = Proc::spawn(name, ns.command(bin, &["backend", "--listen", listen, "--name", name]));
    p.wait_for(&["backend listening"], WAIT);
    p
}

/// README: a gate granting internal.test:443 inside 10.0.0.0/8 to every portal, and a portal
/// routing internal.test; curl through the portal reaches the destination, in a network of its
/// own beside the gate's (an address of the gate's own host would need a rule naming it).
pub fn readme(block: &Block, _: &[Block]) {
    let commands = block.commands();
    assert_eq!(commands.len(), 2, "{commands:?}");
    let s = Scene::new("doc-conr", &[("gate.example", "127.0.0.1"), ("internal.test", "10.20.0.5")]);
    let dest = Netns::new("doc-conr-dst");
    s.ns.link("10.20.0.1/24", &dest, "10.20.0.5/24");
    let _web = backend_in(&dest, "10.20.0.5:443", "intranet");
    s.server_cert("gate", &["gate.example"]);
    s.client_cert("portal", "laptop-1", &[]);
    let gate = s.start(&commands[0]);
    gate.proc.wait_logged(&["connect gate listening"], WAIT);
    let portal = s.start(&commands[1]);
    portal.proc.wait_logged(&["connect portal listening", "127.0.0.1:3128"], WAIT);
    // A plain-HTTP destination, so the tunnel alone is checked: curl asks for it with CONNECT (-p).
    s.expect_hello("-p --proxy http://127.0.0.1:3128 http://internal.test:443/", "intranet");
    gate.proc.wait_logged(&["connect gate: tunnel open", "identity=laptop-1", "mode=\"downgrade\""], WAIT);
    let pac = s.must("curl -sS http://127.0.0.1:3128/proxy.pac");
    assert!(pac.contains("host == \"internal.test\""), "{pac}");
}

/// docs/config.md: both sections in one file under `tlsgate run`; the granted name reaches its
/// destination through the portal; an unrouted host is refused by the portal.
pub fn toml(block: &Block, _: &[Block]) {
    let s = Scene::new("doc-cont", &[]);
    let dest = Netns::new("doc-cont-dst");
    s.ns.link("10.20.0.1/16", &dest, "10.20.0.5/16");
    let _wiki = backend_in(&dest, "10.20.0.5:443", "wiki");
    s.server_cert("gate", &["localhost"]);
    s.client_cert("portal", "laptop-1", &[]);
    s.file("connect.toml", &block.text);
    let run = s.start("tlsgate run -c connect.toml");
    run.proc.wait_logged(&["connect gate listening"], WAIT);
    run.proc.wait_logged(&["connect portal listening"], WAIT);
    s.expect_hello("-p --proxy http://127.0.0.1:3128 http://wiki.corp.test:443/", "wiki");
    run.proc.wait_logged(&["connect gate: tunnel open", "identity=laptop-1", "to=10.20.0.5:443"], WAIT);
    let out = s.run(
        "curl -sS -o /dev/null -w %{http_connect} -p --proxy http://127.0.0.1:3128 http://10.20.0.5:443/",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "403",
        "an address is not routed by `.corp.test`"
    );
    run.proc.wait_logged(&["connect portal: refused: no route for this host"], WAIT);
}

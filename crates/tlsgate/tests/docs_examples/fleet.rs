//! docs/fleet.md's instances and HAProxy front, its nftables ruleset, docs/config.md's `[fleet]`.

use tlsgate_testkit::docs::Block;

use crate::scene::{Scene, WAIT};

/// A redis-server on redis.internal:6379 with the docs' password.
fn redis(s: &Scene) -> tlsgate_testkit::process::Proc {
    let args = ["--bind", "127.0.0.2", "--port", "6379", "--requirepass", "s3cret", "--save", ""];
    let r = s.spawn("redis-server", "redis-server", &args);
    r.wait_for(&["Ready to accept connections"], WAIT);
    r
}

/// The key, two instances sharing Redis, then the HAProxy block as `haproxy.cfg` in front.
pub fn instances(block: &Block, all: &[Block]) {
    let commands = block.commands();
    assert_eq!(commands.len(), 3, "{commands:?}");
    let s = Scene::new("doc-fleet", &[("redis.internal", "127.0.0.2"), ("www.example.com", "127.0.0.1")]);
    s.server_cert("site", &["www.example.com"]);
    s.ca_as("ca.pem");
    let _redis = redis(&s);
    let _web = s.backend("127.0.0.1:8080", "web");
    s.must(&commands[0]);
    let mode = std::fs::metadata(s.dir().join("fleet.key")).unwrap();
    assert_eq!(
        (mode.len(), std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777),
        (32, 0o600)
    );
    let a = s.start(&commands[1]);
    let b = s.start(&commands[2]);
    for i in [&a, &b] {
        i.proc.wait_logged(&["fleet: Redis reachable; ticket keys shared"], WAIT);
        let line = i.proc.wait_logged(&["fleet: sharing TLS session resumption"], WAIT);
        assert!(!line.contains("s3cret"), "the password is logged: {line}");
    }
    let cfg = crate::find(all, "docs/fleet.md", "# haproxy.cfg: one address for the fleet.");
    s.file("haproxy.cfg", &cfg.text);
    let haproxy = s.spawn("haproxy", "haproxy", &["-db", "-f", "haproxy.cfg"]);
    let _ = &haproxy;
    let mut reached = false;
    for _ in 0..50 {
        let out = s.run("curl -sS --max-time 5 --cacert ca.pem https://www.example.com/");
        if out.status.success() {
            assert!(String::from_utf8_lossy(&out.stdout).contains("hello from web"));
            reached = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(reached, "HAProxy never passed a connection; log:\n{}", haproxy.log_text());
}

/// The nftables ruleset loads as written (`nft -f`) and lists the `numgen random` DNAT; the fleet
/// test (tests/fleet.rs) runs it in front of three instances.
pub fn nft_ruleset(block: &Block, _all: &[Block]) {
    let s = Scene::new("doc-fleetn", &[]);
    s.file("fleet.nft", &block.text);
    s.must("nft -f fleet.nft");
    let listed = s.must("nft list chain ip fleet prerouting");
    assert!(
        listed.contains("dnat to numgen random mod 3 map { 0 : 10.90.1.2, 1 : 10.90.2.2, 2 : 10.90.3.2 }"),
        "{listed}"
    );
}

/// `[fleet]` with its key file: `tlsgate check` reads the key and names Redis without the
/// password.
pub fn toml(block: &Block, _: &[Block]) {
    let s = Scene::new("doc-fleetc", &[]);
    s.server_cert("server", &["localhost"]);
    let config = crate::merge(crate::TERMINATE, &block.text);
    s.file("tlsgate.toml", &config);
    std::fs::write(s.dir().join("fleet.key"), tlsgate_tls::fleet::random_key()).unwrap();
    let key = s.dir().join("fleet.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = s.must("tlsgate check --config tlsgate.toml");
    assert!(out.contains("fleet: redis redis://redis.internal:6379/0, ticket rotation 3600s"), "{out}");
    assert!(!out.contains("s3cret"), "{out}");
    // Readable by others: refused like a private key.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = s.run("tlsgate check --config tlsgate.toml");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("[fleet]"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

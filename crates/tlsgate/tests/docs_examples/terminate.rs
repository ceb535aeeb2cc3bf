//! README's `tlsgate terminate` commands and docs/config.md's full example.

use tlsgate_testkit::docs::Block;

use tlsgate_testkit::process::Tlsgate;

use crate::scene::{only, Scene, WAIT};

/// `terminate` in front of two backends by flags.
pub fn readme_flags(block: &Block, _: &[Block]) {
    let s = Scene::new("doc-term", &[]);
    s.server_cert("server", &["localhost"]);
    let _one = s.backend("127.0.0.1:8080", "one");
    let _two = s.backend("127.0.0.1:8081", "two");
    let gate = s.start(only(&block.commands()));
    gate.listening(None);
    s.expect_hello("--cacert ca.pem https://localhost:8443/", "one");
    s.expect_hello("--cacert ca.pem https://localhost:8443/", "two");
}

/// Mutual TLS with a CRL and a URI allow-list, PROXY v2 to the backend, an admin listener.
pub fn readme_mtls(block: &Block, _: &[Block]) {
    let s = Scene::new("doc-mtls", &[]);
    s.server_cert("server", &["localhost"]);
    s.ca_as("clients-ca.pem");
    s.crl_as("clients.crl");
    s.client_cert("prod", "web", &["spiffe://example.org/ns/prod/web"]);
    s.client_cert("dev", "web", &["spiffe://example.org/ns/dev/web"]);
    let backend = s.spawn("proxy-v2 backend", "python3", &[&support("proxy_v2_server.py"), "8080"]);
    backend.wait_for(&["listening 8080"], WAIT);
    let gate = s.start(only(&block.commands()));
    gate.listening(None);
    let curl = "--cacert ca.pem https://localhost:8443/";
    let body = s.must(&format!("curl -sS --max-time 20 --cert prod.pem --key prod.key {curl}"));
    assert_eq!(body, "ok\n", "allowed client");
    let header = backend.wait_for(&["spiffe://example.org/ns/prod/web"], WAIT);
    assert!(header.contains("TLSv1.3"), "PROXY v2 header with TLS details: {header}");
    let refused = s.run(&format!("curl -sS --max-time 20 --cert dev.pem --key dev.key {curl}"));
    assert!(!refused.status.success(), "a client outside the allow-list is refused");
    assert!(s.must("curl -sS --max-time 20 http://127.0.0.1:9900/healthz").contains("ok"));
}

/// docs/config.md's full example as `tlsgate.toml`, with every file it names, in a namespace
/// where its host names are local and a built-in backend serves its default route.
fn full_example(tag: &str, all: &[Block]) -> (Scene, Tlsgate) {
    let example = crate::find(all, "docs/config.md", "# Shared by every mode.");
    let s = Scene::new(
        tag,
        &[
            ("www.example.com", "127.0.0.1"),
            ("api.example.com", "127.0.0.1"),
            ("gate.example.com", "127.0.0.1"),
        ],
    );
    s.file("tlsgate.toml", &example.text);
    s.server_cert("certs/www", &["www.example.com", "example.com"]);
    s.server_cert("certs/api", &["api.example.com"]);
    s.server_cert("certs/internal", &["localhost"]);
    s.server_cert("certs/mx", &["mx.example.com"]);
    s.server_cert("certs/gate", &["gate.example.com"]);
    s.client_cert("certs/portal", "build-1", &["spiffe://corp.example/portal/build-1"]);
    for ca in ["certs/clients-ca.pem", "certs/db-ca.pem", "certs/portal-ca.pem", "certs/gate-ca.pem"] {
        s.ca_as(ca);
    }
    s.crl_as("certs/clients.crl");
    s.crl_as("certs/portal-ca.crl");
    let backend = s.backend("127.0.0.1:8080", "default-route");
    (s, backend)
}

/// README's `check` then `terminate --config tlsgate.toml` with docs/config.md's full example as
/// the file, and the same file's originate and tunnel sections run by their own subcommands.
pub fn readme_config(block: &Block, all: &[Block]) {
    let commands = block.commands();
    assert_eq!(commands.len(), 2, "{commands:?}");
    let (s, _backend) = full_example("doc-conf", all);
    let checked = s.must(&commands[0]);
    assert!(checked.ends_with("config OK\n"), "{}: {checked}", commands[0]);

    let terminate = s.start(&commands[1]);
    for listener in ["public", "internal", "submission"] {
        terminate.listening(Some(listener));
    }
    // HTTP/1.1: the example sends www.example.com's h2 clients to a pool of their own.
    s.expect_hello("--http1.1 --cacert ca.pem https://www.example.com/", "default-route");

    // One [admin] listener per process: each mode of the file runs alone, as on its own host.
    drop(terminate);
    let originate = s.start("tlsgate originate --config tlsgate.toml");
    originate.proc.wait_logged(&["originate listening", "listener=db"], WAIT);
    drop(originate);
    let gate = s.start("tlsgate tunnel gate -c tlsgate.toml");
    gate.proc.wait_logged(&["tunnel gate listening"], WAIT);
    // The portal on a second host, where gate.example.com is the first one.
    let laptop = Scene::new("doc-confp", &[("gate.example.com", "10.30.0.1")]);
    s.ns.link("10.30.0.1/24", &laptop.ns, "10.30.0.2/24");
    for file in ["tlsgate.toml", "certs/gate-ca.pem", "certs/portal.pem", "certs/portal.key"] {
        laptop.file(file, &std::fs::read_to_string(s.dir().join(file)).unwrap());
    }
    std::fs::set_permissions(
        laptop.dir().join("certs/portal.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let portal = laptop.start("tlsgate tunnel portal -c tlsgate.toml");
    portal.proc.wait_logged(&["tunnel portal: connected to gate"], WAIT);
    gate.proc.wait_logged(&["portal connected", "spiffe://corp.example/portal/build-1"], WAIT);
}

/// README's `tlsgate run --config tlsgate.toml`: the same full example, every section of it in
/// one process (the portal reaching the gate beside it), one admin listener.
pub fn readme_run(block: &Block, all: &[Block]) {
    let (s, _backend) = full_example("doc-run", all);
    let run = s.start(only(&block.commands()));
    for listener in ["public", "internal", "submission"] {
        run.listening(Some(listener));
    }
    run.proc.wait_logged(&["originate listening", "listener=db"], WAIT);
    run.proc.wait_logged(&["portal connected", "spiffe://corp.example/portal/build-1"], WAIT);
    s.expect_hello("--http1.1 --cacert ca.pem https://www.example.com/", "default-route");
    assert!(s.must("curl -sS --max-time 20 http://127.0.0.1:9900/healthz").contains("ok"));
}

/// A helper script of the integration tests.
pub fn support(name: &str) -> String {
    tlsgate_testkit::docs::support_script(name).display().to_string()
}

/// docs/config.md's routes by ALPN: `curl --http2` reaches the HTTP/2 backend on 8081, `curl
/// --http1.1` the built-in one on 8080, both for www.example.com.
pub fn alpn_routes(block: &Block, _: &[Block]) {
    let s = Scene::new("doc-alpn", &[("www.example.com", "127.0.0.1")]);
    s.file("alpn.toml", &block.text);
    s.server_cert("www", &["www.example.com"]);
    let h2 = s.spawn("h2 backend", "python3", &[&support("h2_backend.py"), "h2", "8081"]);
    h2.wait_for(&["listening 8081"], WAIT);
    let _http1 = s.backend("127.0.0.1:8080", "http1");
    let gate = s.start("tlsgate terminate --config alpn.toml");
    gate.listening(Some("web"));
    s.expect_hello("--http2 --cacert ca.pem https://www.example.com:8443/", "h2");
    h2.wait_for(&["connection preface=True"], WAIT);
    s.expect_hello("--http1.1 --cacert ca.pem https://www.example.com:8443/", "http1");
}

//! Every fenced block of README.md and docs/*.md is exercised: TOML is parsed and validated by
//! the real config loader and, when it is a whole configuration, served by `tlsgate` as
//! written; `tlsgate …` commands run as written. Each runs in its own network namespace, where
//! the example's fixed ports and host names are private (see `scene`). Blocks that are not
//! examples are tagged `text`; an untagged block, or a `toml`/`sh` block missing from
//! [`EXAMPLES`], fails the test, so a new example cannot be added without being run.

mod connect;
mod fleet;
mod inline;
mod originate;
mod scene;
mod starttls;
mod terminate;
mod tunnel;

use tlsgate_config::Config;
use tlsgate_testkit::docs::{all_blocks, repo_root, Block};

/// Runs one example; gets every block too, for examples that use another block as a file.
type Run = fn(&Block, &[Block]);

enum How {
    /// Started and sent a request by this function.
    Run(Run),
    /// A whole configuration run by the example at (file, first line), which uses it as its file.
    RunBy(&'static str, &'static str),
    /// A fragment: validated merged into this minimal configuration, then run by the function.
    Fragment(&'static str, Run),
    /// Not run here, for this reason.
    Skip(&'static str),
}

/// Each example by file and first line.
const EXAMPLES: &[(&str, &str, How)] = &[
    ("README.md", "cargo run --release -- demo", How::Skip("run by tests/demo.rs")),
    ("README.md", "cargo test --workspace", How::Skip("the test suite itself, run by .ci/run")),
    ("docs/conformance.md", "cargo build -p tlsgate", How::Skip("the conformance run itself, run by .ci/run")),
    ("README.md", "tlsgate terminate --listen 127.0.0.1:8443 --cert server.pem --key server.key \\", How::Run(terminate::readme_flags)),
    ("README.md", "tlsgate terminate --listen 0.0.0.0:8443 --cert server.pem --key server.key --backend 127.0.0.1:8080 \\", How::Run(terminate::readme_mtls)),
    ("README.md", "tlsgate check --config tlsgate.toml       # loads every file it names, binds nothing", How::Run(terminate::readme_config)),
    ("README.md", "tlsgate run --config tlsgate.toml", How::Run(terminate::readme_run)),
    ("README.md", "tlsgate originate --listen 127.0.0.1:5432 --connect db.example:5432 --ca ca.pem", How::Run(originate::readme)),
    ("README.md", "tlsgate tunnel gate --listen 0.0.0.0:7443 --cert gate.pem --key gate.key --client-ca ca.pem", How::Run(tunnel::readme)),
    ("README.md", "tlsgate connect gate --listen 0.0.0.0:8443 --cert gate.pem --key gate.key --client-ca ca.pem \\", How::Run(connect::readme)),
    ("docs/config.md", "[connect.gate]", How::Run(connect::toml)),
    ("README.md", "tlsgate inline run --client-iface eth0 --server-iface eth1 --service 10.0.0.2:443=80 \\", How::Run(inline::readme)),
    ("README.md", "tlsgate inline simulate --flows 50 --seed 7 --loss 0.03 --reorder 0.05 --duplicate 0.01 \\", How::Run(inline_simulate)),
    ("docs/config.md", "# Shared by every mode.", How::RunBy("README.md", "tlsgate check --config tlsgate.toml       # loads every file it names, binds nothing")),
    ("docs/config.md", "[[terminate.listener]]", How::Run(terminate::alpn_routes)),
    ("docs/config.md", INLINE_TOML, How::Run(inline_check)),
    ("docs/originate.md", "tlsgate originate --listen 127.0.0.1:5432 --connect db.example:5432 --ca ca.pem \\", How::Run(originate::flags)),
    ("docs/originate.md", "[[originate.listener]]", How::Run(originate::toml)),
    ("docs/starttls.md", STARTTLS_TOML, How::Run(starttls::toml)),
    ("docs/starttls.md", "tlsgate terminate --listen 0.0.0.0:587 --cert mx.pem --key mx.key --backend 127.0.0.1:10587 \\", How::Run(starttls::flags)),
    ("docs/transparent.md", "[admin]", How::RunBy("docs/transparent.md", "iptables -t nat -A OUTPUT -p tcp -d 10.20.0.0/16 -m mark ! --mark 1337 \\")),
    ("docs/transparent.md", "iptables -t nat -A OUTPUT -p tcp -d 10.20.0.0/16 -m mark ! --mark 1337 \\", How::Run(originate::transparent)),
    ("docs/tunnel.md", "# The gate: its certificate, and the CA that issues portal certificates.", How::Run(tunnel::quick_start)),
    ("docs/tunnel.md", "[tunnel.gate]", How::Fragment(GATE, tunnel::policy)),
    ("docs/tunnel.md", "[[tunnel.gate.reverse]]", How::Fragment(GATE, tunnel::reverse)),
    ("README.md", "# hold server.key in its own process, as user tlsgate-keys, signing for uid tlsgate", How::Skip("keyd's --help examples: tests/help.rs has the binary parse them; the same commands with a test's paths and users run by tests/keyd.rs")),
    ("docs/keyd.md", "# as root: keyd reads the 0600 keys, binds the socket, then runs as tlsgate-keys", How::Skip("the same commands with a test's paths and users run by tests/keyd.rs")),
    ("docs/keyd.md", "# SoftHSM2: a token, a key imported from PKCS#8, the PEM file deleted", How::Skip("the same steps with a test's paths run by tests/pkcs11.rs")),
    ("docs/fleet.md", "# One fleet key for every instance, readable by tlsgate only; copy it to each host.", How::Run(fleet::instances)),
    ("docs/fleet.md", "# haproxy.cfg: one address for the fleet.", How::RunBy("docs/fleet.md", "# One fleet key for every instance, readable by tlsgate only; copy it to each host.")),
    ("docs/fleet.md", "# /etc/nftables.d/fleet.nft on the balancer: 10.96.0.10:443 spread over three instances.", How::Run(fleet::nft_ruleset)),
    ("docs/fleet.md", "# fleet-health.sh on the balancer (needs curl and nft): the map follows the instances that answer.", How::Skip("run by tests/fleet.rs, the health check of its balancer in front of three instances")),
    ("docs/config.md", "[fleet]", How::Fragment(TERMINATE, fleet::toml)),
    ("docs/operations.md", "[Service]", How::Skip("the unit's lines, compared with packaging/systemd/tlsgate.service by tests/package.rs")),
    ("docs/benchmarks.md", "apt-get install -y nginx-core libnginx-mod-stream haproxy hitch stunnel4 wrk openssl \\", How::Skip(BENCH)),
    ("docs/benchmarks.md", "apt-get install -y openssh-server openssh-client openssl util-linux python3", How::Skip(BENCH)),
    ("docs/benchmarks.md", "apt-get install -y openssl util-linux python3 nginx-core iproute2 ethtool curl", How::Skip(BENCH)),
    ("docs/benchmarks.md", "apt-get install -y nginx-core squid-openssl curl openssl python3 iproute2 ethtool util-linux", How::Skip(BENCH)),
    ("docs/benchmarks.md", "bench/inline.sh --only-net                     # this section alone (root, 2 CPUs)", How::Skip(BENCH)),
    ("docs/benchmarks.md", "cargo bench -p tlsgate --bench inline_impaired -- --seeds 8 --rounds 2", How::Skip(BENCH)),
];

const STARTTLS_TOML: &str =
    "# Server side: SMTP clients do STARTTLS with tlsgate; the mail server behind it is plaintext.";

const INLINE_TOML: &str =
    "# Between eth0 (the clients) and eth1 (the servers); alone: `tlsgate inline run -c inline.toml`.";

const BENCH: &str = "installs packages and runs minutes-long benchmarks; not part of the tests";

/// The least a terminate config needs, for `[fleet]`.
pub const TERMINATE: &str = "[[terminate.listener]]\nlisten = \"127.0.0.1:8443\"\n[[terminate.listener.certificate]]\ncert = \"server.pem\"\nkey = \"server.key\"\n[[terminate.listener.route]]\nbackends = [\"127.0.0.1:8080\"]\n";

/// The least a gate needs, for fragments of `[tunnel.gate]`.
pub const GATE: &str = "[tunnel.gate]\nlisten = \"127.0.0.1:7443\"\ncert = \"gate.pem\"\nkey = \"gate.key\"\nclient_ca = \"ca.pem\"\n";

/// Files with their own test.
const OWN_TEST: &[&str] = &["docs/certificates.md"];

fn blocks() -> Vec<Block> {
    all_blocks(&repo_root()).into_iter().filter(|b| !OWN_TEST.contains(&b.file.as_str())).collect()
}

/// The block at (file, first line); there must be exactly one.
pub fn find<'a>(all: &'a [Block], file: &str, first: &str) -> &'a Block {
    let found: Vec<&Block> = all.iter().filter(|b| b.file == file && b.first_line() == first).collect();
    assert_eq!(found.len(), 1, "{file}: {} blocks start with {first:?}", found.len());
    found[0]
}

#[test]
fn every_docs_block_is_exercised() {
    let all = blocks();
    let mut problems = Vec::new();
    for b in &all {
        let at = format!("{}:{} ({:?})", b.file, b.line, b.first_line());
        match b.lang.as_str() {
            "text" => continue,
            "toml" | "sh" | "ini" | "nft" => {}
            "" => {
                problems.push(format!("{at}: untagged block; tag it `text` if it is not an example"));
                continue;
            }
            other => {
                problems.push(format!("{at}: `{other}` blocks are not handled; tag it `text` or handle it"));
                continue;
            }
        }
        let entries =
            EXAMPLES.iter().filter(|(f, first, _)| *f == b.file && *first == b.first_line()).count();
        if entries != 1 {
            problems.push(format!("{at}: {entries} entries in EXAMPLES (one needed: how is it run?)"));
        }
    }
    for (file, first, how) in EXAMPLES {
        let n =
            all.iter().filter(|b| b.file == *file && b.first_line() == *first && b.lang != "text").count();
        if n != 1 {
            problems.push(format!("EXAMPLES names {file} {first:?}, which matches {n} blocks"));
        }
        if let How::Skip(reason) = how {
            eprintln!("not run here: {file} {first:?}: {reason}");
        }
        if let How::RunBy(f, l) = how {
            if !EXAMPLES.iter().any(|(ef, el, h)| ef == f && el == l && matches!(h, How::Run(_))) {
                problems.push(format!("{file} {first:?} is said to run by {f} {l:?}, which runs nothing"));
            }
        }
    }
    assert!(problems.is_empty(), "docs blocks:\n{}", problems.join("\n"));

    // Every TOML block passes the real loader: whole, or merged into a minimal configuration.
    for (file, first, how) in EXAMPLES {
        let b = find(&all, file, first);
        if b.lang != "toml" {
            continue;
        }
        let text = match how {
            How::Fragment(base, _) => merge(base, &b.text),
            _ => b.text.clone(),
        };
        if let Err(e) = Config::from_toml(&text) {
            panic!("{file}:{}: {e}\n{text}", b.line);
        }
    }

    // Then each runnable example, all at once: each has its own namespace.
    let failures: Vec<String> = std::thread::scope(|scope| {
        let running: Vec<_> = EXAMPLES
            .iter()
            .filter_map(|(file, first, how)| match how {
                How::Run(run) | How::Fragment(_, run) => {
                    let b = find(&all, file, first);
                    let all = &all;
                    Some((format!("{file}:{}", b.line), scope.spawn(move || run(b, all))))
                }
                _ => None,
            })
            .collect();
        running.into_iter().filter_map(|(at, t)| t.join().is_err().then_some(at)).collect()
    });
    assert!(failures.is_empty(), "examples that failed (their panics are above): {failures:?}");
}

/// The bug docs/starttls.md once had: a TOML listener without `default = true` refuses clients
/// that send no SNI (flags make their one certificate the default). The log says how to fix it.
#[test]
fn starttls_example_without_default_names_the_setting() {
    let all = blocks();
    let b = find(&all, "docs/starttls.md", STARTTLS_TOML);
    starttls::without_default(b);
}

/// `base` with `fragment`'s tables merged in (the fragment's keys win).
pub fn merge(base: &str, fragment: &str) -> String {
    fn into(base: &mut toml::Table, add: toml::Table) {
        for (k, v) in add {
            match (base.get_mut(&k), v) {
                (Some(toml::Value::Table(b)), toml::Value::Table(a)) => into(b, a),
                (_, v) => {
                    base.insert(k, v);
                }
            }
        }
    }
    let mut merged: toml::Table = base.parse().expect("base parses");
    into(
        &mut merged,
        fragment.parse().unwrap_or_else(|e| panic!("fragment does not parse: {e}\n{fragment}")),
    );
    toml::to_string(&merged).expect("serializes")
}

/// docs/config.md's `[inline]` example, with the files it names: `tlsgate check` loads every
/// service's certificate and key and accepts it.
fn inline_check(block: &Block, _: &[Block]) {
    let s = scene::Scene::new("doc-inlc", &[]);
    s.file("inline.toml", &block.text);
    s.server_cert("certs/www", &["www.example.com"]);
    s.server_cert("certs/api", &["api.example.com"]);
    let out = s.must("tlsgate check --config inline.toml");
    assert!(out.contains("inline: eth0 <-> eth1, 2 service(s) (10.0.0.2:443=80 buffered, "), "{out}");
    assert!(out.contains("10.0.0.100:443 -> 10.0.0.11:80,10.0.0.12:80 cut-through"), "{out}");
    assert!(out.ends_with("config OK\n"), "{out}");
}

/// README's simulator run, as written: every flow completes with its bytes verified.
fn inline_simulate(block: &Block, _: &[Block]) {
    let s = scene::Scene::new("doc-inl", &[]);
    let out = s.must(scene::only(&block.commands()));
    let field = |k: &str| tlsgate_testkit::process::Proc::field(&out, k).unwrap_or_default();
    assert!(!field("flows").is_empty() && field("flows") == field("completed"), "{out}");
    assert_eq!(field("violations"), "0", "{out}");
}

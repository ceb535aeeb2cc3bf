//! Kernel TLS on a host kernel: `--ktls auto` offloads where the kernel has the tls ULP and
//! otherwise falls back to tlsgate's record layer with `no_ulp` (log line and metric), relaying
//! as before; `--ktls on` refuses to start on a kernel without it. The offload itself is tested
//! in a kernel that has it: tests/ktls-vm/run.sh.

use std::time::Duration;

use tlsgate_testkit::clients::{curl, describe};
use tlsgate_testkit::data::random_file;
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::{Proc, Tlsgate};

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");

/// Whether this kernel can give a socket the tls ULP: loaded, or a module it may load.
fn host_has_ktls() -> bool {
    let listed = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp").unwrap_or_default();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    listed.split_whitespace().any(|u| u == "tls")
        || std::fs::read_to_string(format!("/lib/modules/{}/modules.dep", release.trim()))
            .unwrap_or_default()
            .contains("net/tls/tls.ko")
}

#[test]
fn auto_offloads_or_falls_back_and_relays_the_same() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server", &["localhost"]);
    let (_backend, addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "ktls");
    let (gate, listen) =
        Tlsgate::terminate(BIN, &[], (&cert, &key), &addr, &["--ktls", "auto", "--admin", "127.0.0.1:0"]);
    let admin =
        Proc::field(&gate.proc.wait_logged(&["admin listening"], Duration::from_secs(30)), "addr").unwrap();
    let body = pki.path("body.bin");
    let digest = random_file(&body, 4 << 20);
    let url = format!("https://localhost:{}/sha256", listen.port());
    for version in ["--tlsv1.3", "--tlsv1.2"] {
        let out = curl(&[
            "--cacert",
            pki.ca(),
            version,
            "--tls-max",
            &version[6..],
            "--data-binary",
            &format!("@{}", body.display()),
            &url,
        ]);
        assert!(out.status.success(), "{}\n{}", describe(&out), gate.proc.log_text());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), digest, "{version}");
    }
    let (result, line) = if host_has_ktls() {
        ("offloaded", "record layer offloaded to the kernel")
    } else {
        ("no_ulp", "kernel TLS offload not used")
    };
    let lines = gate.proc.lines_with(&[line, &format!("ktls=\"{result}\"")]);
    assert_eq!(lines.len(), 2, "one line per connection:\n{}", gate.proc.log_text());
    let metrics = curl(&[&format!("http://{admin}/metrics")]);
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains(&format!("tlsgate_ktls_connections_total{{result=\"{result}\"}} 2")),
        "{metrics}"
    );
}

#[test]
fn on_refuses_to_start_without_kernel_tls() {
    if host_has_ktls() {
        eprintln!("this kernel has kernel TLS: nothing to refuse (tests/ktls-vm covers `on`)");
        return;
    }
    let pki = Pki::new();
    let (cert, key) = pki.server("server", &["localhost"]);
    let mut gate = Tlsgate::start(
        BIN,
        &[
            "terminate",
            "--listen",
            "127.0.0.1:0",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--backend",
            "127.0.0.1:9",
            "--ktls",
            "on",
        ],
    );
    let status = gate.proc.wait_exit(Duration::from_secs(30)).expect("tlsgate exits");
    let log = gate.proc.log_text();
    assert!(!status.success(), "started:\n{log}");
    assert!(log.contains("kernel TLS") && log.contains("config error"), "{log}");
}

/// `tlsgate originate --ktls auto` in front of a TLS server (`tlsgate terminate --ktls off`):
/// a plaintext client's body goes up and its digest comes back, with one decision per
/// connection (offloaded, or `no_ulp` on a kernel without the ULP) in the log and the metric.
#[test]
fn originate_auto_offloads_or_falls_back_and_relays_the_same() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server", &["localhost"]);
    let (_backend, addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "ktls");
    let (_server, tls) = Tlsgate::terminate(BIN, &[], (&cert, &key), &addr, &["--ktls", "off"]);
    let upstream = tls.to_string();
    let mut gate = Tlsgate::start(
        BIN,
        &[
            "originate",
            "--listen",
            "127.0.0.1:0",
            "--connect",
            &upstream,
            "--ca",
            pki.ca(),
            "--sni",
            "localhost",
            "--ktls",
            "auto",
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let line = gate.proc.wait_logged(&["originate listening"], Duration::from_secs(30));
    let listen = Proc::field(&line, "addr").unwrap();
    let admin =
        Proc::field(&gate.proc.wait_logged(&["admin listening"], Duration::from_secs(30)), "addr").unwrap();
    let body = pki.path("body.bin");
    let digest = random_file(&body, 4 << 20);
    for _ in 0..2 {
        let out =
            curl(&["--data-binary", &format!("@{}", body.display()), &format!("http://{listen}/sha256")]);
        assert!(out.status.success(), "{}\n{}", describe(&out), gate.proc.log_text());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), digest);
    }
    let (result, line) = if host_has_ktls() {
        ("offloaded", "record layer offloaded to the kernel")
    } else {
        ("no_ulp", "kernel TLS offload not used")
    };
    let lines = gate.proc.lines_with(&[line, &format!("ktls=\"{result}\"")]);
    assert_eq!(lines.len(), 2, "one line per connection:\n{}", gate.proc.log_text());
    // The second connection resumed the first one's session.
    gate.proc.wait_for(&["upstream handshake done", "resumed=true"], Duration::from_secs(10));
    let metrics = curl(&[&format!("http://{admin}/metrics")]);
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains(&format!("tlsgate_ktls_connections_total{{result=\"{result}\"}} 2")),
        "{metrics}"
    );
    gate.proc.kill();
}

#[test]
fn originate_on_refuses_to_start_without_kernel_tls() {
    if host_has_ktls() {
        eprintln!("this kernel has kernel TLS: nothing to refuse (tests/ktls-vm covers `on`)");
        return;
    }
    let pki = Pki::new();
    let mut gate = Tlsgate::start(
        BIN,
        &[
            "originate",
            "--listen",
            "127.0.0.1:0",
            "--connect",
            "127.0.0.1:9",
            "--ca",
            pki.ca(),
            "--ktls",
            "on",
        ],
    );
    let status = gate.proc.wait_exit(Duration::from_secs(30)).expect("tlsgate exits");
    let log = gate.proc.log_text();
    assert!(!status.success(), "started:\n{log}");
    assert!(log.contains("kernel TLS") && log.contains("config error"), "{log}");
}

/// `--ktls off` keeps rustls's own connection: relayed as before, no decision logged.
#[test]
fn originate_off_relays_with_rustls_and_decides_nothing() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server", &["localhost"]);
    let (_backend, addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "ktls");
    let (_server, tls) = Tlsgate::terminate(BIN, &[], (&cert, &key), &addr, &["--ktls", "off"]);
    let upstream = tls.to_string();
    let mut gate = Tlsgate::start(
        BIN,
        &[
            "originate",
            "--listen",
            "127.0.0.1:0",
            "--connect",
            &upstream,
            "--ca",
            pki.ca(),
            "--sni",
            "localhost",
            "--ktls",
            "off",
        ],
    );
    let line = gate.proc.wait_logged(&["originate listening"], Duration::from_secs(30));
    let listen = Proc::field(&line, "addr").unwrap();
    let body = pki.path("body.bin");
    let digest = random_file(&body, 1 << 20);
    let out = curl(&["--data-binary", &format!("@{}", body.display()), &format!("http://{listen}/sha256")]);
    assert!(out.status.success(), "{}\n{}", describe(&out), gate.proc.log_text());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), digest);
    gate.proc.wait_for(&["connection closed", "relay=\"copy\""], Duration::from_secs(10));
    assert!(gate.proc.lines_with(&["ktls="]).is_empty(), "{}", gate.proc.log_text());
    gate.proc.kill();
}

#[test]
fn tunnel_gate_and_portal_on_refuse_to_start_without_kernel_tls() {
    if host_has_ktls() {
        eprintln!("this kernel has kernel TLS: nothing to refuse (tests/ktls-vm covers `on`)");
        return;
    }
    let pki = Pki::new();
    let (cert, key) = pki.server("server", &["localhost"]);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let gate =
        ["tunnel", "gate", "--listen", "127.0.0.1:0", "--cert", cert, "--key", key, "--client-ca", pki.ca()];
    let portal =
        ["tunnel", "portal", "--gate", "127.0.0.1:9", "--ca", pki.ca(), "--cert", cert, "--key", key];
    for args in [&gate[..], &portal[..]] {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--ktls", "on"]);
        let mut t = Tlsgate::start(BIN, &all);
        let status = t.proc.wait_exit(Duration::from_secs(30)).expect("tlsgate exits");
        let log = t.proc.log_text();
        assert!(!status.success(), "{}: started:\n{log}", args[1]);
        assert!(log.contains("kernel TLS") && log.contains("config error"), "{}: {log}", args[1]);
    }
}

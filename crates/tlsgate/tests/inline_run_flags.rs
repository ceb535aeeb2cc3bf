//! `tlsgate inline run`'s flags: mistakes are refused before anything is opened, each with the side
//! that made it, and an interface that does not exist is named.

use std::process::{Command, Output};

use tlsgate_testkit::clients::describe;
use tlsgate_testkit::pki::Pki;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");

fn inline_run(pki: &Pki, args: &[&str]) -> Output {
    let cert = pki.path("server.pem");
    let key = pki.path("server.key");
    Command::new(BIN)
        .args(["inline", "run", "--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn one_interface_for_both_sides_is_a_config_error() {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let out =
        inline_run(&pki, &["--client-iface", "lo", "--server-iface", "lo", "--service", "127.0.0.2:443=80"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("config error: [inline]: client_iface and server_iface are both \"lo\""),
        "{stderr}"
    );
}

#[test]
fn a_malformed_service_is_a_usage_error() {
    let pki = Pki::new();
    let out = inline_run(
        &pki,
        &["--client-iface", "a0", "--server-iface", "b0", "--service", "127.0.0.2:443=http"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"http\" is not a port"), "{}", describe(&out));
    // A pool without its virtual address.
    let out = inline_run(&pki, &["--client-iface", "a0", "--server-iface", "b0", "--pool", "127.0.0.3:80"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

#[test]
fn without_a_service_nothing_starts() {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let out = inline_run(&pki, &["--client-iface", "a0", "--server-iface", "b0"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no [[inline.service]] defined"),
        "{}",
        describe(&out)
    );
}

/// The certificate is loaded and the engine built; opening the client interface fails, and the
/// error names it.
#[test]
fn an_interface_that_does_not_exist_is_named() {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let out = inline_run(
        &pki,
        &[
            "--client-iface",
            "tlsg-absent0",
            "--server-iface",
            "tlsg-absent1",
            "--service",
            "127.0.0.2:443=80",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("config error: inline bridge tlsg-absent0 <-> tlsg-absent1"), "{stderr}");
    assert!(stderr.contains("tlsg-absent0"), "{stderr}");
    assert!(!stderr.contains("inline running"), "{stderr}");
}

#[test]
fn a_flow_window_outside_its_bounds_is_a_config_error() {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let out = inline_run(
        &pki,
        &[
            "--client-iface",
            "a0",
            "--server-iface",
            "b0",
            "--service",
            "127.0.0.2:443=80",
            "--flow-window",
            "1000",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("limits: flow_window 1000 is outside 65536..=67108864 bytes"), "{stderr}");
}

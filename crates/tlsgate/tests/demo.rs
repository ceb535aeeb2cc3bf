//! `tlsgate demo`: the command the README gives a newcomer. The curl command it prints must work
//! exactly as printed, and Ctrl-C must stop it and remove its throwaway keys, unless `--keep DIR`
//! asked for them, with a client certificate from the same CA, to be left in DIR.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tlsgate_testkit::clients::{curl, describe};
use tlsgate_testkit::demo::{run_printed_curl, BODY};
use tlsgate_testkit::process::Tlsgate;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");

#[test]
fn demo_prints_a_curl_command_that_works_and_stops_on_ctrl_c() {
    let mut demo = Tlsgate::start(BIN, &["demo", "--listen", "127.0.0.1:0"]);
    let ca = run_printed_curl(&demo.proc, Duration::from_secs(30));
    assert!(ca.exists());

    demo.proc.interrupt();
    let status = demo.proc.wait_exit(Duration::from_secs(10)).expect("demo exits on SIGINT");
    assert!(status.success(), "{status:?}\n{}", demo.proc.log_text());
    assert!(!ca.exists(), "throwaway CA left behind at {}", ca.display());
    assert!(!ca.parent().unwrap().exists(), "throwaway directory left behind");
}

#[test]
fn demo_keep_leaves_a_ca_a_server_and_a_client_certificate_for_mutual_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("kept");
    let dir_s = dir.to_str().unwrap();
    let mut demo = Tlsgate::start(BIN, &["demo", "--listen", "127.0.0.1:0", "--keep", dir_s]);
    demo.proc.wait_for(&["Kept in", dir_s], Duration::from_secs(30));
    let line = demo.proc.wait_for(&["built-in backend http://"], Duration::from_secs(30));
    let backend = line.rsplit("http://").next().unwrap().trim().to_string();
    let ca = run_printed_curl(&demo.proc, Duration::from_secs(30));
    assert_eq!(ca, dir.join("ca.pem"), "the printed curl command uses the kept CA");
    for key in ["server.key", "client.key"] {
        let mode = std::fs::metadata(dir.join(key)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key} has mode {mode:o}");
    }

    // The kept files are what mutual TLS needs: the server pair, the CA for client certificates,
    // and a client certificate with a SPIFFE ID (in front of the demo's own backend).
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (_mtls, addr) = Tlsgate::terminate(
        BIN,
        &[],
        (&dir.join("server.pem"), &dir.join("server.key")),
        &backend,
        &["--client-ca", &p("ca.pem"), "--allow-uri", "spiffe://demo.tlsgate.test/client"],
    );
    let url = format!("https://localhost:{}/", addr.port());
    let with_cert =
        curl(&["--cacert", &p("ca.pem"), "--cert", &p("client.pem"), "--key", &p("client.key"), &url]);
    assert!(with_cert.status.success(), "{}", describe(&with_cert));
    assert_eq!(String::from_utf8_lossy(&with_cert.stdout), BODY);
    let without = curl(&["--cacert", &p("ca.pem"), &url]);
    assert!(!without.status.success(), "no client certificate, yet: {}", describe(&without));

    demo.proc.interrupt();
    let status = demo.proc.wait_exit(Duration::from_secs(10)).expect("demo exits on SIGINT");
    assert!(status.success(), "{status:?}\n{}", demo.proc.log_text());
    for name in ["ca.pem", "server.pem", "server.key", "client.pem", "client.key"] {
        assert!(Path::new(&p(name)).exists(), "{name} was not kept");
    }

    // A second demo refuses to overwrite them.
    let mut again = Tlsgate::start(BIN, &["demo", "--listen", "127.0.0.1:0", "--keep", dir_s]);
    let status = again.proc.wait_exit(Duration::from_secs(30)).expect("a refused demo exits");
    assert!(!status.success());
    assert!(again.proc.log_text().contains("already exists"), "{}", again.proc.log_text());
    let verify =
        Command::new("openssl").args(["verify", "-CAfile", &p("ca.pem"), &p("client.pem")]).output().unwrap();
    assert!(verify.status.success(), "the kept client certificate is the kept CA's: {}", describe(&verify));
}

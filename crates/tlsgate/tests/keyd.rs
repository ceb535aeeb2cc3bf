//! `tlsgate keyd`: terminate signs every handshake through it (1000 full handshakes by curl),
//! the terminator's memory holds no key byte while keyd's does, a killed keyd makes handshakes
//! fail with an alert and a log line and a restarted one brings them back, a keyd that does not
//! allow terminate's uid refuses it, and keyd runs as the user it was told to drop to.

use std::time::Duration;

use tlsgate_testkit::clients::{curl_name, describe, s_client};
use tlsgate_testkit::memory::{p256_scalar, process_holds};
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::Tlsgate;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const PATIENT: Duration = Duration::from_secs(30);

fn keyd(socket: &str, key: &str, extra: &[&str]) -> Tlsgate {
    let mut args = vec!["--user", "nobody", "keyd", "--socket", socket, "--key", key];
    args.extend_from_slice(extra);
    let keyd = Tlsgate::start(BIN, &args);
    keyd.proc.wait_logged(&["keyd listening"], PATIENT);
    keyd
}

fn uid_of(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().to_string()
}

#[test]
fn terminate_signs_through_keyd_and_holds_no_key() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server", &["localhost"]);
    let socket = pki.path("keyd.sock");
    let socket = socket.to_str().unwrap();
    let named = format!("web={}", key.display());
    let (_backend, backend) = Tlsgate::backend(BIN, "127.0.0.1:0", "keyd");

    let mut daemon = keyd(socket, &named, &["--allow-uid", "0"]);
    assert_eq!(uid_of(daemon.proc.pid()), "65534", "keyd runs as nobody once the socket is bound");

    let source = format!("keyd:{socket}#web");
    let (gate, addr) = Tlsgate::terminate(BIN, &[], (&cert, source.as_ref()), &backend, &[]);
    let port = addr.port();

    let started = std::time::Instant::now();
    // 1000 full handshakes: a new connection per URL and no session reuse.
    let url = format!("https://localhost:{port}/?n=[1-1000]");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let out = tlsgate_testkit::clients::curl(&[
        "--cacert",
        pki.ca(),
        "--resolve",
        &resolve,
        "--no-sessionid",
        "-H",
        "Connection: close",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}\n",
        &url,
    ]);
    eprintln!("1000 handshakes: {:?}", started.elapsed());
    let codes = String::from_utf8_lossy(&out.stdout);
    assert_eq!(codes.lines().filter(|c| *c == "200").count(), 1000, "{}", describe(&out));
    // TLS 1.2 signs through keyd too (ServerKeyExchange).
    let tls12 = s_client(
        &["-connect", &addr.to_string(), "-tls1_2", "-CAfile", pki.ca(), "-verify_return_error"],
        b"",
    );
    assert!(
        String::from_utf8_lossy(&tls12.stdout).contains("Verify return code: 0 (ok)"),
        "{}",
        describe(&tls12)
    );

    // The key's scalar is in keyd's memory and in neither byte order in the terminator's.
    let scalar = p256_scalar(&std::fs::read_to_string(&key).unwrap());
    let started = std::time::Instant::now();
    assert!(process_holds(daemon.proc.pid(), &scalar), "the search finds the key where it is");
    assert!(!process_holds(gate.proc.pid(), &scalar), "the terminator holds key bytes");
    eprintln!("memory search: {:?}", started.elapsed());

    // keyd gone: the handshake ends with an alert, terminate says why.
    daemon.proc.kill();
    let down = curl_name(pki.ca(), "localhost", port, &[]);
    assert!(!down.status.success());
    assert!(String::from_utf8_lossy(&down.stderr).contains("alert handshake failure"), "{}", describe(&down));
    gate.proc.wait_logged(&["keyd unreachable", "cannot connect to keyd"], PATIENT);
    // Under TLS 1.2, whose ServerKeyExchange is where the key signs, rustls fails without an
    // alert; the handshake driver sends internal_error in its place, and the log says why.
    // (the line for curl's handshake first, then the one for this handshake)
    gate.proc.wait_for(&["keyd unreachable"], PATIENT);
    let down12 = s_client(&["-connect", &addr.to_string(), "-servername", "localhost", "-tls1_2"], b"");
    assert!(
        String::from_utf8_lossy(&down12.stderr).contains("alert internal error"),
        "{}",
        describe(&down12)
    );
    gate.proc.wait_for(&["keyd unreachable", "handshake refused"], PATIENT);

    // Back: the stale socket is replaced, and handshakes succeed again.
    let _daemon = keyd(socket, &named, &["--allow-uid", "0"]);
    let up = curl_name(pki.ca(), "localhost", port, &[]);
    assert!(up.status.success(), "{}", describe(&up));

    // A keyd that allows another uid refuses terminate (root here) at start.
    let other = pki.path("other.sock");
    let strict = keyd(other.to_str().unwrap(), &named, &["--allow-uid", "12345"]);
    // terminate with `key` logs `expected` and stops.
    let refuses_to_start = |key: &str, expected: &[&str]| {
        let args = ["terminate", "--listen", "127.0.0.1:0", "--cert", cert.to_str().unwrap()];
        let mut gate = Tlsgate::start(BIN, &[&args[..], &["--key", key, "--backend", &backend]].concat());
        gate.proc.wait_logged(expected, PATIENT);
        assert!(!gate.proc.wait_exit(PATIENT).expect("terminate stops").success());
    };
    refuses_to_start(
        &format!("keyd:{}#web", other.display()),
        &["keyd refused this process", "uid 0 is not allowed"],
    );
    strict.proc.wait_logged(&["refused a client whose uid is not allowed", "uid=0"], PATIENT);

    // A name keyd does not hold is a start-up error naming it.
    refuses_to_start(&format!("keyd:{socket}#mail"), &["no key named", "mail"]);
}

//! Application directives on the control socket (docs/directives.md), against real peers: a
//! plaintext Python HTTP backend behind `terminate` with client certificates asks `peer` for each
//! request's connection through libtlsgate (ctypes) and answers with what it learnt; curl with two
//! client certificates sees its own subject. Refused: a caller of another uid, a connection
//! tlsgate never saw.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tlsgate_testkit::clients::{curl, describe};
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::{Proc, Tlsgate};
use tlsgate_tls::pki::ClientSpec;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");

/// libtlsgate.so, built into this test's target directory by the cargo running the test.
fn libtlsgate() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps/<test>");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "libtlsgate"]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    if let Some(target) = profile_dir.parent() {
        build.env("CARGO_TARGET_DIR", target);
    }
    let out = build.output().unwrap();
    assert!(out.status.success(), "building libtlsgate: {}", describe(&out));
    let lib = profile_dir.join("libtlsgate.so");
    assert!(lib.exists(), "{} missing", lib.display());
    lib
}

fn script() -> PathBuf {
    tlsgate_testkit::docs::support_script("peer_backend.py")
}

fn get(pki: &Pki, port: u16, stem: &str, path: &str) -> String {
    let (cert, key) = (pki.path(&format!("{stem}.pem")), pki.path(&format!("{stem}.key")));
    let url = format!("https://localhost:{port}{path}");
    let out =
        curl(&["--cacert", pki.ca(), "--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap(), &url]);
    assert!(out.status.success(), "curl {path} as {stem}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_backend_learns_its_clients_certificate_and_strangers_learn_nothing() {
    let lib = libtlsgate();
    let pki = Pki::new();
    let (cert, key) = pki.server("server", &["localhost"]);
    for (stem, dns) in [("alice", "alice.clients.test"), ("bob", "bob.clients.test")] {
        let spec = ClientSpec { common_name: stem, dns: &[dns], ..Default::default() };
        pki.ca.issue_client(&spec).unwrap().write(pki.dir.path(), stem).unwrap();
    }
    let control = pki.path("control.sock");

    let mut cmd = Command::new("python3");
    cmd.arg(script()).arg("serve").arg(&lib).env("TLSGATE_CONTROL", &control);
    let backend = Proc::spawn("peer_backend", cmd);
    let line = backend.wait_for(&["listening"], Duration::from_secs(10));
    let backend_addr = format!("127.0.0.1:{}", line.trim_start_matches("listening "));

    let control_arg = control.to_str().unwrap();
    let (gate, addr) = Tlsgate::terminate(
        BIN,
        &[],
        (&cert, &key),
        &backend_addr,
        &["--client-ca", pki.ca(), "--control", control_arg],
    );
    gate.proc.wait_logged(&["control socket listening"], Duration::from_secs(10));
    let mode = std::fs::metadata(&control).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "control socket mode {mode:o}");

    // Each client sees its own certificate, twice over (a connection each time).
    for _ in 0..2 {
        for (stem, san) in [("alice", "DNS:alice.clients.test"), ("bob", "DNS:bob.clients.test")] {
            let body = get(&pki, addr.port(), stem, "/");
            assert!(
                body.contains(&format!("subject=CN={stem}, O=tlsgate throwaway PKI\n")),
                "{stem} got:\n{body}"
            );
            assert!(body.contains(&format!("identity=CN={stem},{san}\n")), "{body}");
            assert!(body.contains(&format!("sans={san}\n")), "{body}");
            assert!(body.contains("version=TLSv1.3\n") && body.contains("sni=localhost\n"), "{body}");
            assert!(body.contains("suite=TLS_") && body.contains("cert=pem\n"), "{body}");
        }
    }
    gate.proc.wait_logged(&["directive done", "op=\"peer\"", "uid=0"], Duration::from_secs(5));

    // Another uid asking about this very connection: refused by the owner check (the socket file
    // is opened to everyone here so that the check, not the file mode, is what refuses).
    std::fs::set_permissions(pki.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o666)).unwrap();
    let body = get(&pki, addr.port(), "alice", "/as-nobody");
    assert!(
        body.starts_with("error=permission denied: the socket") && body.contains("belongs to uid 0"),
        "as nobody: {body}"
    );
    assert!(!body.contains("subject="), "{body}");
    gate.proc.wait_logged(&["directive refused", "uid=65534", "permission denied"], Duration::from_secs(5));

    // A connection tlsgate never saw.
    let out = Command::new("python3")
        .arg(script())
        .args(["unknown", lib.to_str().unwrap()])
        .env("TLSGATE_CONTROL", &control)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("error=unknown connection:"), "{}", describe(&out));
    gate.proc.wait_logged(&["directive refused", "unknown connection"], Duration::from_secs(5));

    // Bad input on the socket: a clear answer, the socket keeps serving.
    let answer = raw_request(&control, "{\"op\":\"dance\"}\n");
    assert_eq!(
        answer,
        "{\"ok\":false,\"error\":\"unknown op \\\"dance\\\" (peer, start_tls or stop_tls)\"}\n"
    );
    assert!(get(&pki, addr.port(), "bob", "/").contains("subject=CN=bob, O=tlsgate throwaway PKI\n"));
}

/// One request line on the control socket; its answer line.
fn raw_request(control: &std::path::Path, line: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(control).unwrap();
    s.write_all(line.as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).unwrap();
    answer
}

/// Everything that crossed a TCP relay, each way: the capture between tlsgate and the server.
#[derive(Default)]
struct Capture {
    /// tlsgate to the server.
    up: Vec<u8>,
    /// The server to tlsgate.
    down: Vec<u8>,
}

/// A relay on 127.0.0.1 in front of `server`, recording every connection's bytes (one capture
/// per connection, in accept order).
fn recording_relay(server: std::net::SocketAddr) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Capture>>>) {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let captures: Arc<Mutex<Vec<Capture>>> = Arc::default();
    let all = captures.clone();
    std::thread::spawn(move || {
        for inbound in listener.incoming() {
            let Ok(inbound) = inbound else { return };
            let outbound = std::net::TcpStream::connect(server).unwrap();
            let index = {
                let mut all = all.lock().unwrap();
                all.push(Capture::default());
                all.len() - 1
            };
            for (mut from, mut to, up) in [
                (inbound.try_clone().unwrap(), outbound.try_clone().unwrap(), true),
                (outbound, inbound, false),
            ] {
                let all = all.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    loop {
                        let n = from.read(&mut buf).unwrap_or(0);
                        if n == 0 {
                            let _ = to.shutdown(std::net::Shutdown::Write);
                            return;
                        }
                        let mut all = all.lock().unwrap();
                        let c = &mut all[index];
                        if up { &mut c.up } else { &mut c.down }.extend_from_slice(&buf[..n]);
                        drop(all);
                        if to.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    (port, captures)
}

/// `bytes` is a whole number of TLS records (handshake, alert, application data, CCS); their
/// count.
fn tls_records(bytes: &[u8]) -> usize {
    let (mut at, mut n) = (0, 0);
    while at < bytes.len() {
        assert!(bytes.len() >= at + 5, "a cut record header at {at}");
        assert!(
            (20..=23).contains(&bytes[at]) && bytes[at + 1] == 3,
            "not a TLS record at {at}: {:?}",
            &bytes[at..at + 5]
        );
        at += 5 + u16::from_be_bytes([bytes[at + 3], bytes[at + 4]]) as usize;
        n += 1;
    }
    assert_eq!(at, bytes.len(), "the last record is cut");
    n
}

/// `capture` is `clear_before`, then TLS records only, then `clear_after`.
fn clear_tls_clear(capture: &[u8], clear_before: &[u8], clear_after: &[u8], secret: &[u8]) {
    assert!(capture.starts_with(clear_before), "{:?}", String::from_utf8_lossy(capture));
    assert!(capture.ends_with(clear_after), "{:?}", String::from_utf8_lossy(capture));
    let middle = &capture[clear_before.len()..capture.len() - clear_after.len()];
    assert!(tls_records(middle) >= 2, "no TLS in between");
    assert!(!middle.windows(secret.len()).any(|w| w == secret), "{secret:?} went in the clear");
}

#[test]
fn an_application_starts_and_stops_tls_toward_its_server_through_originate() {
    let lib = libtlsgate();
    let pki = Pki::new();
    let (cert, key) = pki.server("server", &["localhost"]);
    let spec = ClientSpec { common_name: "directed-app", ..Default::default() };
    pki.ca.issue_client(&spec).unwrap().write(pki.dir.path(), "app").unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(tlsgate_testkit::docs::support_script("directed_server.py")).args([&cert, &key]).arg(pki.ca());
    let server = Proc::spawn("directed_server", cmd);
    let line = server.wait_for(&["listening"], Duration::from_secs(10));
    let server_addr: std::net::SocketAddr =
        format!("127.0.0.1:{}", line.trim_start_matches("listening ")).parse().unwrap();
    let (relay_port, captures) = recording_relay(server_addr);

    let control = pki.path("control.sock");
    let upstream = format!("127.0.0.1:{relay_port}");
    let (app_cert, app_key) = (pki.path("app.pem"), pki.path("app.key"));
    let args = [
        "originate",
        "--listen",
        "127.0.0.1:0",
        "--connect",
        &upstream,
        "--ca",
        pki.ca(),
        "--cert",
        app_cert.to_str().unwrap(),
        "--key",
        app_key.to_str().unwrap(),
        "--directed",
        "--control",
        control.to_str().unwrap(),
    ];
    let gate = Tlsgate::start(BIN, &args);
    let port = gate.listening(None).port();

    let client = |mode: &str| {
        let out = Command::new("python3")
            .arg(tlsgate_testkit::docs::support_script("directed_client.py"))
            .args([lib.to_str().unwrap(), &port.to_string(), mode])
            .env("TLSGATE_CONTROL", &control)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let transcript = client("full");
    let expected = "got OK\n\
        start_tls error: offset 2 already passed: 6 bytes of the application's stream were relayed\n\
        start_tls ok\n\
        got PONG directed-app\n\
        start_tls error: start_tls: the connection is already secured\n\
        stop_tls ok\n\
        got CIAO\n";
    assert_eq!(transcript, expected);
    gate.proc.wait_logged(&["TLS started as client (SNI localhost"], Duration::from_secs(5));
    gate.proc.wait_logged(&["TLS stopped, in the clear again"], Duration::from_secs(5));
    gate.proc.wait_logged(&["directive refused", "already passed"], Duration::from_secs(5));
    gate.proc.wait_logged(&["connection closed", "up=15"], Duration::from_secs(5));
    {
        let c = &captures.lock().unwrap()[0];
        clear_tls_clear(&c.up, b"HELLO\n", b"BYE\n", b"PING");
        clear_tls_clear(&c.down, b"OK\n", b"CIAO\n", b"PONG");
    }

    // A handshake that fails (the server's certificate is not for that name): the directive
    // says so, the connection is closed, and nothing more goes out in the clear.
    let transcript = client("badname");
    assert!(
        transcript.starts_with("got OK\nstart_tls error: start_tls: TLS handshake failed: "),
        "{transcript}"
    );
    assert!(transcript.contains("wrong.test"), "{transcript}");
    assert!(transcript.ends_with("after failure: b''\n"), "{transcript}");
    gate.proc.wait_logged(&["connection aborted", "TLS handshake failed"], Duration::from_secs(5));
    let c = &captures.lock().unwrap()[1];
    assert!(c.up.starts_with(b"HELLO\n") && tls_records(&c.up[6..]) >= 1, "{:?}", c.up);
}

#[test]
fn a_backend_starts_and_stops_tls_toward_its_client_through_terminate() {
    let lib = libtlsgate();
    let pki = Pki::new();
    let (cert, key) = pki.server("server", &["localhost"]);
    let spec = ClientSpec { common_name: "far-client", ..Default::default() };
    pki.ca.issue_client(&spec).unwrap().write(pki.dir.path(), "far").unwrap();
    let control = pki.path("control.sock");

    let mut cmd = Command::new("python3");
    cmd.arg(tlsgate_testkit::docs::support_script("directed_backend.py"))
        .arg(&lib)
        .env("TLSGATE_CONTROL", &control);
    let backend = Proc::spawn("directed_backend", cmd);
    let line = backend.wait_for(&["listening"], Duration::from_secs(10));
    let backend_addr = format!("127.0.0.1:{}", line.trim_start_matches("listening "));
    let (gate, addr) = Tlsgate::terminate(
        BIN,
        &[],
        (&cert, &key),
        &backend_addr,
        &["--client-ca", pki.ca(), "--directed", "--control", control.to_str().unwrap()],
    );
    // The capture: between the client and tlsgate.
    let (relay_port, captures) = recording_relay(addr);

    let (far_cert, far_key) = (pki.path("far.pem"), pki.path("far.key"));
    let out = Command::new("python3")
        .arg(tlsgate_testkit::docs::support_script("directed_far_client.py"))
        .arg(relay_port.to_string())
        .arg(pki.ca())
        .args([&far_cert, &far_key])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got OK\ntls TLSv1.3\ngot PONG\ngot CIAO\n");
    backend.wait_for(&["start_tls ok"], Duration::from_secs(5));
    backend.wait_for(&["peer subject=CN=far-client, O=tlsgate throwaway PKI"], Duration::from_secs(5));
    backend.wait_for(&["stop_tls ok"], Duration::from_secs(5));
    gate.proc.wait_logged(
        &["TLS started as server", "client certificate \"CN=far-client\""],
        Duration::from_secs(5),
    );
    gate.proc.wait_logged(&["TLS stopped, in the clear again"], Duration::from_secs(5));
    gate.proc.wait_logged(&["connection closed", "up=15", "down=13"], Duration::from_secs(5));
    let c = &captures.lock().unwrap()[0];
    // Toward tlsgate: the client's bytes; back: the backend's.
    clear_tls_clear(&c.up, b"HELLO\n", b"BYE\n", b"PING");
    clear_tls_clear(&c.down, b"OK\n", b"CIAO\n", b"PONG");
}

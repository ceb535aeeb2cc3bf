//! Application directives on the control socket (docs/directives.md), against real peers: a
//! plaintext Python HTTP backend behind `terminate` with client certificates asks `peer` for each
//! request's connection through libtlsgate (ctypes) and answers with what it learnt; curl with two
//! client certificates sees its own subject. Refused: a caller of another uid, a connection
//! tlsgate never saw. A made-up protocol through `--directed` listeners, both roles: a plaintext
//! prologue, `start_tls` (on originate with a client certificate and ALPN picked per call by
//! name), `stop_tls`, the clear again; tcpdump on loopback records the wire, read back from the
//! pcap; the connection's `/status` row and the directive metrics.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tlsgate_testkit::clients::{curl, describe};
use tlsgate_testkit::pcap;
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

/// tcpdump on loopback for one TCP port (the wire between tlsgate and its far side).
struct Wire {
    proc: Proc,
    file: PathBuf,
    /// Sent to itself last: once tcpdump printed it, it has read everything sent before.
    mark: std::net::UdpSocket,
}

impl Wire {
    /// Returns once tcpdump says it listens.
    fn capture(pki: &Pki, port: u16) -> Wire {
        let mark = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mark_port = mark.local_addr().unwrap().port();
        let file = pki.path(&format!("wire-{port}.pcap"));
        let mut cmd = Command::new("tcpdump");
        // -U / --immediate-mode: each packet written as it comes; --print: a line per packet too.
        cmd.args(["-i", "lo", "-n", "-l", "-U", "--immediate-mode", "--print", "-B", "8192", "-w"])
            .arg(&file)
            .arg(format!("tcp port {port} or udp port {mark_port}"));
        let proc = Proc::spawn("tcpdump", cmd);
        proc.wait_for(&["listening on"], Duration::from_secs(10));
        Wire { proc, file, mark }
    }

    /// Stops tcpdump once it saw the mark, insists it dropped nothing; each TCP connection's two
    /// directions (to `port`, from `port`) in the order they were opened.
    fn streams(mut self, port: u16) -> Vec<(Vec<u8>, Vec<u8>)> {
        let to = self.mark.local_addr().unwrap();
        self.mark.send_to(b"end of capture", to).unwrap();
        self.proc.wait_logged(&[&format!("> {}.{}: UDP", to.ip(), to.port())], Duration::from_secs(10));
        self.proc.interrupt();
        assert!(self.proc.wait_exit(Duration::from_secs(10)).is_some(), "tcpdump did not stop");
        let dropped = self.proc.wait_logged(&["packets dropped by kernel"], Duration::from_secs(1));
        assert!(dropped.starts_with("0 "), "the capture is incomplete: {dropped}");
        let packets = pcap::read(&std::fs::read(&self.file).unwrap()).unwrap();
        let streams = pcap::streams(&packets);
        let towards = streams.iter().filter(|s| s.dst.port() == port);
        towards
            .map(|up| {
                let down = streams.iter().find(|d| d.src == up.dst && d.dst == up.src).expect("both ways");
                assert_eq!((up.after_hole, down.after_hole), (0, 0), "the capture has a hole");
                (up.bytes.clone(), down.bytes.clone())
            })
            .collect()
    }
}

/// `capture` is `clear_before`, then only well-formed TLS records (handshake, application data,
/// alerts, change_cipher_spec; TLS 1.3 hides its close_notify in application data), then
/// `clear_after`.
fn clear_tls_clear(capture: &[u8], clear_before: &[u8], clear_after: &[u8], secret: &[u8]) {
    assert!(capture.starts_with(clear_before), "{:?}", String::from_utf8_lossy(capture));
    assert!(capture.ends_with(clear_after), "{:?}", String::from_utf8_lossy(capture));
    let middle = &capture[clear_before.len()..capture.len() - clear_after.len()];
    let types = pcap::tls_record_types(middle).unwrap();
    assert!(types.contains(&22) && types.contains(&23), "handshake and data: {types:?}");
    assert!(!pcap::contains(middle, secret), "{secret:?} went in the clear");
}

#[test]
fn an_application_starts_and_stops_tls_toward_its_server_through_originate() {
    let lib = libtlsgate();
    let pki = Pki::new();
    let (cert, key) = pki.server("server", &["localhost"]);
    for (stem, cn) in [("app", "directed-app"), ("alpha", "app-alpha"), ("beta", "app-beta")] {
        let spec = ClientSpec { common_name: cn, ..Default::default() };
        pki.ca.issue_client(&spec).unwrap().write(pki.dir.path(), stem).unwrap();
    }
    let mut cmd = Command::new("python3");
    cmd.arg(tlsgate_testkit::docs::support_script("directed_server.py")).args([&cert, &key]).arg(pki.ca());
    let server = Proc::spawn("directed_server", cmd);
    let line = server.wait_for(&["listening"], Duration::from_secs(10));
    let server_port: u16 = line.trim_start_matches("listening ").trim().parse().unwrap();

    let control = pki.path("control.sock");
    let upstream = format!("127.0.0.1:{server_port}");
    let file = |name: &str| pki.path(name).to_str().unwrap().to_string();
    let identity =
        |stem: &str| format!("{stem}={},{}", file(&format!("{stem}.pem")), file(&format!("{stem}.key")));
    let (app_cert, app_key, control_arg) = (file("app.pem"), file("app.key"), file("control.sock"));
    let (alpha, beta) = (identity("alpha"), identity("beta"));
    let args = [
        "originate",
        "--listen",
        "127.0.0.1:0",
        "--connect",
        &upstream,
        "--ca",
        pki.ca(),
        "--cert",
        &app_cert,
        "--key",
        &app_key,
        "--directed",
        "--client-identity",
        &alpha,
        "--client-identity",
        &beta,
        "--control",
        &control_arg,
    ];
    let gate = Tlsgate::start(BIN, &args);
    let port = gate.listening(None).port();
    let wire = Wire::capture(&pki, server_port);

    let client = |mode: &[&str]| {
        let out = Command::new("python3")
            .arg(tlsgate_testkit::docs::support_script("directed_client.py"))
            .args([lib.to_str().unwrap(), &port.to_string()])
            .args(mode)
            .env("TLSGATE_CONTROL", &control)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let transcript = client(&["full"]);
    let expected = "got OK\n\
        start_tls error: offset 2 already passed: 6 bytes of the application's stream were relayed\n\
        start_tls ok\n\
        got PONG directed-app None\n\
        start_tls error: start_tls: the connection is already secured\n\
        stop_tls ok\n\
        got CIAO\n";
    assert_eq!(transcript, expected);
    gate.proc.wait_logged(&["TLS started as client (SNI localhost"], Duration::from_secs(5));
    gate.proc.wait_logged(&["TLS stopped, in the clear again"], Duration::from_secs(5));
    gate.proc.wait_logged(&["directive refused", "already passed"], Duration::from_secs(5));
    gate.proc.wait_logged(&["connection closed", "up=15"], Duration::from_secs(5));

    // The client certificate and ALPN per call, by the names the listener was given.
    for (name, alpn) in [("alpha", "x-one"), ("beta", "x-two")] {
        let transcript = client(&["as", name, alpn]);
        let pong = format!("got OK\nstart_tls ok\ngot PONG app-{name} {alpn}\nstop_tls ok\ngot CIAO\n");
        assert_eq!(transcript, pong);
        gate.proc.wait_logged(&[&format!("client certificate \"{name}\"")], Duration::from_secs(5));
    }
    // A name the listener does not have: refused, and the connection ends.
    let transcript = client(&["as", "gamma"]);
    assert_eq!(
        transcript,
        "got OK\nstart_tls error: start_tls: unknown client_cert \"gamma\" (this listener has: alpha, beta)\n\
         after failure: b''\n"
    );

    // A handshake that fails (the server's certificate is not for that name): the directive
    // says so, the connection is closed, and nothing more goes out in the clear.
    let transcript = client(&["badname"]);
    assert!(
        transcript.starts_with("got OK\nstart_tls error: start_tls: TLS handshake failed: "),
        "{transcript}"
    );
    assert!(transcript.contains("wrong.test"), "{transcript}");
    assert!(transcript.ends_with("after failure: b''\n"), "{transcript}");
    gate.proc.wait_logged(&["connection aborted", "TLS handshake failed"], Duration::from_secs(5));
    gate.proc.wait_logged(&["connection aborted", "unknown client_cert"], Duration::from_secs(5));

    // The wire between tlsgate and the server, connection by connection.
    let streams = wire.streams(server_port);
    assert_eq!(streams.len(), 5, "five connections");
    for (up, down) in &streams[..3] {
        clear_tls_clear(up, b"HELLO\n", b"BYE\n", b"PING");
        clear_tls_clear(down, b"OK\n", b"CIAO\n", b"PONG");
    }
    // The unknown name: the prologue, then nothing; the bad name: the prologue, then TLS only.
    assert_eq!(streams[3].0, b"HELLO\n");
    let up = &streams[4].0;
    assert!(
        up.starts_with(b"HELLO\n") && pcap::tls_record_types(&up[6..]).is_ok_and(|t| !t.is_empty()),
        "{up:?}"
    );
}

#[test]
fn a_backend_starts_and_stops_tls_toward_its_client_through_terminate() {
    let lib = libtlsgate();
    let pki = Pki::new();
    let (cert, key) = pki.server("server", &["localhost"]);
    let spec = ClientSpec { common_name: "far-client", ..Default::default() };
    pki.ca.issue_client(&spec).unwrap().write(pki.dir.path(), "far").unwrap();
    let control = pki.path("control.sock");
    let admin_file = pki.path("admin.addr");

    let mut cmd = Command::new("python3");
    cmd.arg(tlsgate_testkit::docs::support_script("directed_backend.py"))
        .arg(&lib)
        .env("TLSGATE_CONTROL", &control)
        .env("ADMIN_FILE", &admin_file);
    let backend = Proc::spawn("directed_backend", cmd);
    let line = backend.wait_for(&["listening"], Duration::from_secs(10));
    let backend_addr = format!("127.0.0.1:{}", line.trim_start_matches("listening "));
    let (gate, addr) = Tlsgate::terminate(
        BIN,
        &[],
        (&cert, &key),
        &backend_addr,
        &[
            "--client-ca",
            pki.ca(),
            "--directed",
            "--control",
            control.to_str().unwrap(),
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let admin =
        Proc::field(&gate.proc.wait_logged(&["admin listening"], Duration::from_secs(10)), "addr").unwrap();
    std::fs::write(&admin_file, &admin).unwrap();
    // The capture: between the client and tlsgate.
    let wire = Wire::capture(&pki, addr.port());

    let (far_cert, far_key) = (pki.path("far.pem"), pki.path("far.key"));
    let out = Command::new("python3")
        .arg(tlsgate_testkit::docs::support_script("directed_far_client.py"))
        .arg(addr.port().to_string())
        .arg(pki.ca())
        .args([&far_cert, &far_key])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got OK\ntls TLSv1.3\ngot PONG\ngot CIAO\n");
    // The connection's /status row as the backend saw it at each step.
    backend.wait_for(&["status state=clear identity= version= "], Duration::from_secs(5));
    backend.wait_for(&["start_tls ok"], Duration::from_secs(5));
    // The client's PING may have been relayed already (up 6 or 11).
    let tls_row = "status state=tls identity=CN=far-client version=TLSv1.3 up=";
    backend.wait_for(&[tls_row, "down=3"], Duration::from_secs(5));
    backend.wait_for(&["peer subject=CN=far-client, O=tlsgate throwaway PKI"], Duration::from_secs(5));
    backend.wait_for(&["stop_tls ok"], Duration::from_secs(5));
    // BYE may have been relayed already (up 11 or 15); CIAO waits for it.
    backend.wait_for(&["status state=clear identity= version= up=1", "down=8"], Duration::from_secs(5));
    gate.proc.wait_logged(
        &["TLS started as server", "client certificate \"CN=far-client\""],
        Duration::from_secs(5),
    );
    gate.proc.wait_logged(&["TLS stopped, in the clear again"], Duration::from_secs(5));
    gate.proc.wait_logged(&["connection closed", "up=15", "down=13"], Duration::from_secs(5));
    let metrics = String::from_utf8_lossy(&curl(&[&format!("http://{admin}/metrics")]).stdout).into_owned();
    for line in [
        "tlsgate_directives_total{op=\"start_tls\",result=\"done\"} 1",
        "tlsgate_directives_total{op=\"stop_tls\",result=\"done\"} 1",
        "tlsgate_directives_total{op=\"peer\",result=\"done\"} 1",
        "tlsgate_directed_connections_open{state=\"tls\"} 0",
        "tlsgate_directed_connections_open{state=\"clear\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} missing:\n{metrics}");
    }
    let streams = wire.streams(addr.port());
    assert_eq!(streams.len(), 1, "one connection");
    // Toward tlsgate: the client's bytes; back: the backend's.
    let (up, down) = &streams[0];
    clear_tls_clear(up, b"HELLO\n", b"BYE\n", b"PING");
    clear_tls_clear(down, b"OK\n", b"CIAO\n", b"PONG");
}

//! STARTTLS with real peers. Server side: `openssl s_client -starttls PROTO` (and `psql`) through
//! `tlsgate terminate --starttls PROTO` to a plaintext server of each protocol — a small Python
//! server, or Debian's real PostgreSQL. Client side: a plaintext `psql` and a plaintext SMTP
//! client through `tlsgate originate --starttls` to servers that insist on TLS. And the
//! failures: a refused upgrade, TLS before the prologue, garbage, injected plaintext.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use tlsgate_testkit::clients::{describe, s_client};
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::postgres::{psql, PgTls, Postgres};
use tlsgate_testkit::process::{Proc, Tlsgate};

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const WAIT: Duration = Duration::from_secs(20);

/// The Python peer (`tests/support/starttls_server.py`) and the address it listens on.
fn peer(args: &[&str]) -> (Proc, String) {
    let mut cmd = Command::new("python3");
    cmd.arg(tlsgate_testkit::docs::support_script("starttls_server.py")).args(args);
    let p = Proc::spawn("starttls_server", cmd);
    let line = p.wait_for(&["listening"], WAIT);
    let port = line.trim_start_matches("listening ").trim().to_string();
    (p, format!("127.0.0.1:{port}"))
}

/// `tlsgate terminate --starttls PROTO` in front of `backend`, with a certificate for localhost.
fn terminate(pki: &Pki, backend: &str, proto: &str) -> (Tlsgate, SocketAddr) {
    terminate_with(pki, backend, proto, &[])
}

fn terminate_with(pki: &Pki, backend: &str, proto: &str, extra: &[&str]) -> (Tlsgate, SocketAddr) {
    let (cert, key) = pki.server("gate", &["localhost"]);
    let mut args = vec!["--starttls", proto, "--starttls-host", "gate.test"];
    args.extend_from_slice(extra);
    Tlsgate::terminate(BIN, &[], (&cert, &key), backend, &args)
}

/// `tlsgate originate --starttls PROTO` toward `upstream`, verifying it against the test CA.
fn originate(pki: &Pki, upstream: &str, proto: &str) -> (Tlsgate, SocketAddr) {
    let gate = Tlsgate::start(
        BIN,
        &[
            "originate",
            "--listen",
            "127.0.0.1:0",
            "--connect",
            upstream,
            "--ca",
            pki.ca(),
            "--sni",
            "localhost",
            "--starttls",
            proto,
        ],
    );
    let addr = gate.listening(None);
    (gate, addr)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// Everything until the peer closes; a read timeout is a hang and fails the test.
fn read_to_close(s: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return String::from_utf8_lossy(&all).into_owned(),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            // A signal to the test process (a child exiting) interrupts the read: read again.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return String::from_utf8_lossy(&all).into_owned()
            }
            Err(e) => panic!("connection not closed: {e}; got {:?}", String::from_utf8_lossy(&all)),
        }
    }
}

#[test]
fn openssl_starttls_clients_reach_plaintext_backends_of_every_line_protocol() {
    let pki = Pki::new();
    for (proto, backend_greeting) in [
        ("smtp", Some("plain backend")),
        ("imap", Some("backend ready")),
        ("pop3", Some("backend ready")),
        ("ftp", Some("plain FTP backend")),
        ("ldap", None),
    ] {
        let (backend, addr) = peer(&["plain", proto]);
        let (gate, gate_addr) = terminate(&pki, &addr, proto);
        let out = s_client(
            &[
                "-starttls",
                proto,
                "-connect",
                &gate_addr.to_string(),
                "-CAfile",
                pki.ca(),
                "-servername",
                "localhost",
                "-verify_return_error",
                "-crlf",
                "-ign_eof",
            ],
            b"hello backend\nQUIT\n",
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{proto}: {}", describe(&out));
        assert!(stdout.contains("Verify return code: 0 (ok)"), "{proto}: {}", describe(&out));
        assert!(stdout.contains("backend got: hello backend"), "{proto}: {}", describe(&out));
        // The backend's greeting was swallowed: the client had tlsgate's.
        if let Some(greeting) = backend_greeting {
            assert!(!stdout.contains(greeting), "{proto}: second greeting: {}", describe(&out));
        }
        backend.wait_for(&["got hello backend"], WAIT);
        gate.proc.wait_for(&["handshake done", "sni=localhost"], WAIT);
        gate.proc.wait_for(&["connection closed"], WAIT);
    }
}

#[test]
fn client_side_and_server_side_chained_carry_every_protocol() {
    // plaintext client -> originate --starttls -> TLS -> terminate --starttls -> plaintext backend:
    // tlsgate's two halves against each other over real sockets, one greeting end to end.
    let pki = Pki::new();
    for (proto, greeting) in [
        ("smtp", "220 gate.test ESMTP ready\r\n"),
        ("imap", "* OK gate.test ready\r\n"),
        ("pop3", "+OK gate.test POP3 ready\r\n"),
        ("ftp", "220 gate.test FTP ready\r\n"),
        ("ldap", ""),
    ] {
        let (backend, addr) = peer(&["plain", proto]);
        let (server_side, server_addr) = terminate(&pki, &addr, proto);
        let (client_side, client_addr) = originate(&pki, &server_addr.to_string(), proto);
        let mut s = connect(client_addr);
        s.write_all(b"hello through both\r\nQUIT\r\n").unwrap();
        let got = read_to_close(&mut s);
        assert_eq!(
            got,
            format!("{greeting}backend got: hello through both\r\nbackend got: QUIT\r\n"),
            "{proto}"
        );
        drop(s);
        backend.wait_for(&["got hello through both"], WAIT);
        client_side.proc.wait_for(&["upstream handshake done"], WAIT);
        server_side.proc.wait_for(&["handshake done", "sni=localhost"], WAIT);
        client_side.proc.wait_for(&["connection closed"], WAIT);
        server_side.proc.wait_for(&["connection closed"], WAIT);
    }
}

#[test]
fn openssl_and_psql_reach_a_plaintext_postgres_through_the_server_side() {
    let pki = Pki::new();
    let pg = Postgres::start(None);
    let (gate, gate_addr) = terminate(&pki, &format!("127.0.0.1:{}", pg.port), "postgres");
    let out = s_client(
        &[
            "-starttls",
            "postgres",
            "-connect",
            &gate_addr.to_string(),
            "-CAfile",
            pki.ca(),
            "-servername",
            "localhost",
            "-verify_return_error",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Verify return code: 0 (ok)"),
        "{}",
        describe(&out)
    );
    gate.proc.wait_for(&["handshake done"], WAIT);

    let conninfo = format!(
        "hostaddr=127.0.0.1 host=localhost port={} user=postgres dbname=postgres sslmode=verify-full \
         sslrootcert={}",
        gate_addr.port(),
        pki.ca()
    );
    let out = psql(&conninfo, "SELECT 'over TLS to tlsgate, ssl on the backend leg: ' || ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
    assert!(out.status.success(), "{}\npostgres log:\n{}", describe(&out), pg.log());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "over TLS to tlsgate, ssl on the backend leg: false"
    );
    gate.proc.wait_for(&["handshake done", "sni=localhost"], WAIT);

    // And tlsgate's client side in front: plaintext psql, TLS between the two tlsgates.
    let (client_side, client_addr) = originate(&pki, &gate_addr.to_string(), "postgres");
    let conninfo = format!("host=127.0.0.1 port={} user=postgres dbname=postgres", client_addr.port());
    let out = psql(&conninfo, "SELECT 6 * 7");
    assert!(out.status.success(), "{}\npostgres log:\n{}", describe(&out), pg.log());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    client_side.proc.wait_for(&["upstream handshake done", "sni=localhost"], WAIT);
}

#[test]
fn plaintext_psql_reaches_a_tls_only_postgres_through_the_client_side() {
    let pki = Pki::new();
    let (cert, key) = pki.server("pg", &["localhost"]);
    let pg = Postgres::start(Some(PgTls { cert: &cert, key: &key }));
    // The server refuses plaintext outright.
    let direct = psql(&format!("host=127.0.0.1 port={} user=postgres sslmode=disable", pg.port), "SELECT 1");
    assert!(!direct.status.success(), "{}", describe(&direct));
    assert!(
        String::from_utf8_lossy(&direct.stderr).contains("no pg_hba.conf entry"),
        "{}",
        describe(&direct)
    );

    let (gate, gate_addr) = originate(&pki, &format!("127.0.0.1:{}", pg.port), "postgres");
    let query = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    // sslmode=disable sends the startup at once; prefer (psql's default) asks for TLS first and
    // is told N by tlsgate.
    for mode in ["disable", "prefer"] {
        let conninfo =
            format!("host=127.0.0.1 port={} user=postgres dbname=postgres sslmode={mode}", gate_addr.port());
        let out = psql(&conninfo, query);
        assert!(out.status.success(), "sslmode={mode}: {}\npostgres log:\n{}", describe(&out), pg.log());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t", "sslmode={mode}");
        gate.proc.wait_for(&["upstream handshake done"], WAIT);
        gate.proc.wait_for(&["connection closed"], WAIT);
    }

    // A client that speaks TLS to the plaintext side is told off, not relayed.
    let mut s = connect(gate_addr);
    s.write_all(&tlsgate_testkit::hello::client_hello("localhost")).unwrap();
    read_to_close(&mut s);
    gate.proc
        .wait_for(&["connection aborted", "side=client", "client sent TLS to a plaintext listener"], WAIT);
}

#[test]
fn plaintext_smtp_client_reaches_a_starttls_server_through_the_client_side() {
    let pki = Pki::new();
    let (cert, key) = pki.server("upstream", &["localhost"]);
    let (upstream, addr) = peer(&["upstream", "smtp", cert.to_str().unwrap(), key.to_str().unwrap()]);
    let (gate, gate_addr) = originate(&pki, &addr, "smtp");
    let s = connect(gate_addr);
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut writer = s;
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "220 upstream.test ESMTP\r\n");
    writer.write_all(b"EHLO client.test\r\n").unwrap();
    let mut ehlo = String::new();
    while !ehlo.contains("250 ") {
        assert!(reader.read_line(&mut ehlo).unwrap() > 0, "closed: {ehlo:?}");
    }
    // After TLS the upstream no longer offers STARTTLS: this EHLO went over TLS.
    assert_eq!(ehlo, "250-upstream.test\r\n250 AUTH PLAIN\r\n");
    upstream.wait_for(&["tls established"], WAIT);
    upstream.wait_for(&["got EHLO client.test tls=True"], WAIT);
    writer.write_all(b"NOOP\r\nQUIT\r\n").unwrap();
    let rest = read_to_close(reader.get_mut());
    assert_eq!(rest, "250 got NOOP over TLS\r\n221 bye\r\n");
    drop((reader, writer));
    gate.proc.wait_for(&["upstream handshake done", "sni=localhost"], WAIT);
    gate.proc.wait_for(&["connection closed"], WAIT);
    // tlsgate's own EHLO named the machine; the client's came after TLS only.
    assert_eq!(upstream.lines_with(&["got EHLO client.test"]).len(), 1);
}

#[test]
fn a_server_refusing_the_upgrade_closes_the_client_with_its_reason() {
    let pki = Pki::new();
    let (cert, key) = pki.server("upstream", &["localhost"]);
    let (_upstream, addr) =
        peer(&["upstream", "smtp", cert.to_str().unwrap(), key.to_str().unwrap(), "refuse"]);
    let (gate, gate_addr) = originate(&pki, &addr, "smtp");
    let mut s = connect(gate_addr);
    // Nothing of the refused session reaches the client, not even the greeting.
    assert_eq!(read_to_close(&mut s), "");
    gate.proc.wait_for(
        &["upstream failed", "side=backend", "refused STARTTLS: 454 4.7.0 TLS not available"],
        WAIT,
    );
    gate.proc.wait_for(&["no upstream, client connection closed"], WAIT);
}

#[test]
fn tls_before_the_prologue_is_refused_and_nothing_reaches_the_backend() {
    let pki = Pki::new();
    let (backend, addr) = peer(&["plain", "smtp"]);
    let (gate, gate_addr) = terminate(&pki, &addr, "smtp");
    // A client that skipped STARTTLS: its ClientHello lands where a command belongs.
    let out = s_client(&["-connect", &gate_addr.to_string(), "-servername", "localhost"], b"");
    assert!(!out.status.success(), "{}", describe(&out));
    gate.proc.wait_for(&["handshake failed", "side=client", "client sent TLS before STARTTLS"], WAIT);
    assert!(backend.lines_with(&["accepted"]).is_empty(), "{}", backend.log_text());
}

#[test]
fn garbage_long_lines_and_injected_plaintext_close_the_connection() {
    let pki = Pki::new();
    let (backend, addr) = peer(&["plain", "smtp"]);
    let (gate, gate_addr) = terminate(&pki, &addr, "smtp");

    let mut s = connect(gate_addr);
    s.write_all(&b"GARBAGE\r\n".repeat(12)).unwrap();
    let answers = read_to_close(&mut s);
    assert!(answers.starts_with("220 gate.test ESMTP ready\r\n"), "{answers}");
    assert_eq!(answers.matches("530 5.7.0 Must issue a STARTTLS command first").count(), 10, "{answers}");
    gate.proc.wait_for(&["handshake failed", "side=client", "sent 10 commands without STARTTLS"], WAIT);

    let mut s = connect(gate_addr);
    s.write_all(&[b'A'; 600]).unwrap();
    read_to_close(&mut s);
    gate.proc.wait_for(&["handshake failed", "client sent a line longer than 512 bytes"], WAIT);

    // CVE-2011-0411: a command pipelined behind STARTTLS must not survive into the session.
    let mut s = connect(gate_addr);
    s.write_all(b"EHLO x\r\nSTARTTLS\r\nMAIL FROM:<evil@example>\r\n").unwrap();
    read_to_close(&mut s);
    gate.proc.wait_for(
        &["handshake failed", "side=client", "bytes of plaintext after the STARTTLS exchange"],
        WAIT,
    );

    let mut s = connect(gate_addr);
    s.write_all(b"QUIT\r\n").unwrap();
    assert!(read_to_close(&mut s).ends_with("221 2.0.0 gate.test closing connection\r\n"));
    gate.proc.wait_for(&["handshake failed", "ended the smtp prologue without asking for TLS"], WAIT);
    assert!(backend.lines_with(&["accepted"]).is_empty(), "{}", backend.log_text());
}

#[test]
fn a_silent_client_is_cut_off_by_the_handshake_timeout() {
    let pki = Pki::new();
    let (_backend, addr) = peer(&["plain", "imap"]);
    let (gate, gate_addr) = terminate_with(&pki, &addr, "imap", &["--handshake-timeout", "1s"]);
    let mut s = connect(gate_addr);
    s.write_all(b"a CAPABILITY\r\n").unwrap();
    let got = read_to_close(&mut s);
    assert!(got.contains("a OK CAPABILITY completed"), "{got}");
    gate.proc.wait_for(&["handshake timed out", "side=client"], WAIT);
}

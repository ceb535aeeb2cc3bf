//! Handshake failures in an operator's words: real clients (`openssl s_client`, curl) that are
//! too old, share no cipher suite, ask for an unknown name, send no SNI, distrust the server,
//! present an expired certificate, or speak plain HTTP to the TLS port. Each gets one log line
//! that says so with the side that failed, and no line reads like rustls's source (`Some(`,
//! `None`, a documentation URL, a CamelCase variant name).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use tlsgate_testkit::clients::{curl, describe, s_client};
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::Tlsgate;
use tlsgate_tls::pki::{ClientSpec, TestCa};

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const WAIT: Duration = Duration::from_secs(10);

struct Setup {
    pki: Pki,
    gate: Tlsgate,
    /// Certificate for `localhost` only, no default: other names are refused.
    open: String,
    /// Client certificates required.
    mtls: String,
    _backend: Tlsgate,
}

fn setup() -> Setup {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let spec = ClientSpec { common_name: "alice", expired: true, ..Default::default() };
    pki.ca.issue_client(&spec).unwrap().write(pki.dir.path(), "expired").unwrap();
    let (backend, backend_addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "words");
    let config = format!(
        r#"
[[terminate.listener]]
name = "open"
listen = "127.0.0.1:0"
  [[terminate.listener.certificate]]
  cert = "server.pem"
  key = "server.key"
  [[terminate.listener.route]]
  backends = ["{backend_addr}"]

[[terminate.listener]]
name = "mtls"
listen = "127.0.0.1:0"
  [terminate.listener.client_auth]
  mode = "required"
  ca = "ca.pem"
  [[terminate.listener.certificate]]
  cert = "server.pem"
  key = "server.key"
  [[terminate.listener.route]]
  backends = ["{backend_addr}"]
"#
    );
    let path = pki.path("tlsgate.toml");
    std::fs::write(&path, config).unwrap();
    let gate = Tlsgate::start(BIN, &["terminate", "--config", path.to_str().unwrap()]);
    let open = gate.listening(Some("open")).to_string();
    let mtls = gate.listening(Some("mtls")).to_string();
    Setup { pki, gate, open, mtls, _backend: backend }
}

/// `openssl s_client -connect addr args…`, which must fail.
fn refused(addr: &str, args: &[&str]) {
    let out = s_client(&[&["-connect", addr][..], args].concat(), b"");
    assert!(!out.status.success(), "{}", describe(&out));
}

/// The `handshake failed` line of listener `listener` that says `words`, with side=client.
fn logged(s: &Setup, listener: &str, words: &str) -> String {
    let listener = format!("listener={listener}");
    s.gate.proc.wait_logged(&["handshake failed", "side=client", &listener, words], WAIT)
}

/// Nothing in `line`'s error reads like Rust or links to rustls's documentation.
fn in_words(line: &str) {
    let error = line.split("error=").nth(1).unwrap_or_else(|| panic!("no error field: {line}"));
    for bad in ["Some(", "None", "docs.rs", "http://", "UnixTime", "Context {"] {
        assert!(!error.contains(bad), "{bad:?} in {line}");
    }
    let camel = error.split(|c: char| !c.is_ascii_alphanumeric()).find(|w| {
        *w != "ClientHello"
            && w.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && w.chars().any(|c| c.is_ascii_lowercase())
            && w.chars().skip(1).any(|c| c.is_ascii_uppercase())
    });
    assert_eq!(camel, None, "a CamelCase name in {line}");
}

#[test]
fn client_mistakes_are_logged_in_words() {
    let s = setup();
    let open = s.open.as_str();

    // TLS 1.1 only (OpenSSL 3 needs security level 0 to offer it at all).
    refused(open, &["-servername", "localhost", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    let line =
        logged(&s, "open", "client offered only TLS 1.1 (protocol too old; tlsgate accepts TLS 1.2 and 1.3)");
    in_words(&line);

    // TLS 1.2 suites tlsgate does not offer: CBC with ECDHE, and RSA key exchange (whose client
    // offers no ECDHE group at all).
    refused(open, &["-servername", "localhost", "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"]);
    in_words(&logged(&s, "open", "no cipher suite in common with the client"));
    refused(open, &["-servername", "localhost", "-tls1_2", "-cipher", "AES128-SHA"]);
    in_words(&logged(&s, "open", "no key exchange in common with the client (tlsgate uses ECDHE only)"));

    // A name no certificate serves, and no name at all.
    refused(open, &["-servername", "unknown.test"]);
    in_words(&logged(&s, "open", "client asked for name unknown.test, which no certificate serves"));
    refused(open, &["-noservername"]);
    in_words(&logged(&s, "open", "client sent no SNI, and no default certificate is set"));

    // A client that does not trust the server's CA aborts with an alert.
    let stranger = s.pki.path("stranger-ca.pem");
    std::fs::write(&stranger, TestCa::new("a CA nobody uses").unwrap().cert_pem()).unwrap();
    let stranger = stranger.to_str().unwrap();
    refused(open, &["-servername", "localhost", "-CAfile", stranger, "-verify_return_error"]);
    in_words(&logged(&s, "open", "client aborted the handshake with alert unknown_ca"));
}

#[test]
fn an_expired_client_certificate_is_logged_with_its_date() {
    let s = setup();
    let cert = s.pki.path("expired.pem");
    let key = s.pki.path("expired.key");
    // The certificate's notAfter as OpenSSL prints it: `notAfter=2025-01-31 12:00:00Z`.
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in", cert.to_str().unwrap()])
        .output()
        .unwrap();
    let end = String::from_utf8(out.stdout).unwrap();
    let end = end.trim().trim_start_matches("notAfter=").trim_end_matches('Z');
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    // TLS 1.2: the refusal reaches the client before its handshake completes (with TLS 1.3 the
    // client finishes first and may exit before reading the alert).
    let args = ["-servername", "localhost", "-tls1_2", "-cert", cert, "-key", key, "-CAfile", s.pki.ca()];
    refused(&s.mtls, &args);
    in_words(&logged(&s, "mtls", &format!("client certificate expired on {end} UTC")));
}

#[test]
fn plain_http_to_the_tls_port_gets_a_400_that_says_so() {
    let s = setup();
    let out = curl(&["-i", &format!("http://{}/", s.open)]);
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{}", describe(&out));
    assert!(answer.contains("the plain HTTP request was sent to an HTTPS port"), "{}", describe(&out));
    let line = logged(&s, "open", "plain HTTP request sent to TLS port (client should use https://)");
    assert_eq!(s.gate.proc.lines_with(&["plain HTTP request sent to TLS port"]).len(), 1, "{line}");

    // Bytes that are neither TLS nor HTTP still get a TLS alert, as before.
    let mut tcp = TcpStream::connect(&s.open).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(b"\x42 hello, is this TLS?\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    assert_eq!(answer.first(), Some(&0x15), "expected an alert record, got {answer:?}");
    in_words(&logged(&s, "open", "not a valid TLS ClientHello: client sent data that is not TLS"));
}

/// A refused ClientHello whose client is still writing it: a hello of the largest length a
/// handshake message can have (2^24 - 1 bytes; rustls takes up to 64 KiB) in 16 KiB records,
/// written in one go, more than the sockets' buffers hold. The alert reaches the client, the
/// connection ends with a FIN, and none of the client's writes is refused by a reset (a socket
/// closed with unread bytes answers with RST, which came before the client read its alert).
#[test]
fn a_client_still_writing_a_refused_hello_reads_its_alert_not_a_reset() {
    let s = setup();
    let len: usize = (1 << 24) - 1;
    let mut message = vec![1u8, (len >> 16) as u8, (len >> 8) as u8, len as u8];
    message.extend_from_slice(&[0x03, 0x03]); // legacy_version TLS 1.2, then zeros
    message.resize(4 + len, 0);
    let mut wire = Vec::new();
    for chunk in message.chunks(1 << 14) {
        wire.extend_from_slice(&[0x16, 0x03, 0x03]);
        wire.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        wire.extend_from_slice(chunk);
    }
    let mut tcp = TcpStream::connect(&s.open).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let mut writer = tcp.try_clone().unwrap();
    let sending = std::thread::spawn(move || writer.write_all(&wire));
    let mut answer = Vec::new();
    let read = tcp.read_to_end(&mut answer);
    let sent = sending.join().unwrap();
    drop(tcp);
    let line = logged(&s, "open", "not a valid TLS ClientHello");
    assert!(read.is_ok(), "the connection ended with a FIN, not a reset: {read:?} ({line})");
    assert_eq!(answer.first(), Some(&0x15), "expected an alert record, got {answer:?} ({line})");
    sent.expect("the whole hello was taken, no write refused by a reset");
    in_words(&line);
}

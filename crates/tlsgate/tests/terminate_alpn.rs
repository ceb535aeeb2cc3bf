//! Routes by negotiated ALPN as well as by SNI: h2 and HTTP/1.1 clients of one name reach
//! different pools (curl, `openssl s_client`), the route labels in the log, /metrics and /status,
//! a protocol with no route for the name refused after the handshake, a listener without `alpn`
//! offering its routes' protocols, and a route protocol the listener does not offer refused at
//! start.

use std::process::{Command, Output};
use std::time::Duration;

use tlsgate_testkit::clients::{curl, curl_name, describe, s_client};
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::{Proc, Tlsgate};

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const WAIT: Duration = Duration::from_secs(10);

/// A prior-knowledge HTTP/2 backend answering `hello from <name>`; it logs, per connection,
/// whether the bytes reaching it began with the HTTP/2 connection preface.
fn h2_backend(name: &str) -> (Proc, String) {
    let mut cmd = Command::new("python3");
    cmd.arg(tlsgate_testkit::docs::support_script("h2_backend.py")).arg(name);
    let server = Proc::spawn("h2_backend", cmd);
    let line = server.wait_for(&["listening"], WAIT);
    let port = line.trim_start_matches("listening ").to_string();
    (server, format!("127.0.0.1:{port}"))
}

/// Starts `tlsgate terminate` on `config` (written next to the PKI's files).
fn start(pki: &Pki, config: &str) -> Tlsgate {
    let path = pki.path("tlsgate.toml");
    std::fs::write(&path, config).unwrap();
    Tlsgate::start(BIN, &["terminate", "--config", path.to_str().unwrap()])
}

fn body(out: &Output) -> String {
    assert!(out.status.success(), "{}", describe(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What an h2 client sends first: the connection preface, an empty SETTINGS frame, and a
/// HEADERS frame opening stream 1 with `GET https /` (HPACK static-table indices 2, 7, 4).
fn h2_request() -> Vec<u8> {
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    bytes.extend_from_slice(&[0, 0, 3, 1, 0x05, 0, 0, 0, 1, 0x82, 0x87, 0x84]);
    bytes
}

const HTTP11_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";

#[test]
fn h2_and_http11_clients_of_one_name_reach_their_own_pools() {
    let pki = Pki::new();
    pki.server("app", &["app.test"]);
    let (a, a_addr) = h2_backend("A");
    let (_b, b_addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "B");
    let gate = start(
        &pki,
        &format!(
            r#"
[admin]
listen = "127.0.0.1:0"

[[terminate.listener]]
name = "web"
listen = "127.0.0.1:0"
alpn = ["h2", "http/1.1"]
  [[terminate.listener.certificate]]
  cert = "app.pem"
  key = "app.key"
  [[terminate.listener.route]]
  sni = ["app.test"]
  alpn = ["h2"]
  backends = ["{a_addr}"]
  [[terminate.listener.route]]
  backends = ["{b_addr}"]
"#
        ),
    );
    let port = gate.listening(Some("web")).port();
    // The log's fields: `alpn=` the negotiated protocol, `route=` the label of the route taken.
    let h2_route = "route=route[0] app.test alpn=h2";
    let default_route = "route=route[1] default";

    // curl negotiating h2 reaches A, which saw the HTTP/2 connection preface.
    let out = curl_name(pki.ca(), "app.test", port, &["-v", "--http2"]);
    assert_eq!(body(&out), "hello from A\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ALPN: server accepted h2"), "{}", describe(&out));
    a.wait_for(&["connection preface=True"], WAIT);
    gate.proc.wait_for(&["handshake done", "alpn=h2 client_cert", h2_route], WAIT);

    // The same name over HTTP/1.1 goes to the default route: B.
    let out = curl_name(pki.ca(), "app.test", port, &["-v", "--http1.1"]);
    assert_eq!(body(&out), "hello from B\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ALPN: server accepted http/1.1"));
    gate.proc.wait_for(&["handshake done", "alpn=http/1.1 client_cert", default_route], WAIT);

    // openssl s_client offering h2 only: A answers its HTTP/2 request.
    let connect = format!("127.0.0.1:{port}");
    let s = |extra: &[&str], input: &[u8]| {
        let mut args = vec!["-connect", &connect, "-servername", "app.test", "-CAfile", pki.ca(), "-quiet"];
        args.extend_from_slice(extra);
        s_client(&args, input)
    };
    let out = s(&["-alpn", "h2"], &h2_request());
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from A"), "{}", describe(&out));
    a.wait_for(&["connection preface=True"], WAIT);
    a.wait_for(&["answered stream 1"], WAIT);
    gate.proc.wait_for(&["handshake done", "alpn=h2 client_cert", h2_route], WAIT);

    // Without ALPN no protocol is negotiated: only a route taking any protocol matches.
    let out = s(&[], HTTP11_REQUEST);
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from B"), "{}", describe(&out));
    let line = gate.proc.wait_for(&["handshake done", default_route], WAIT);
    assert_eq!(Proc::field(&line, "alpn").as_deref(), Some(""), "{line}");

    // A saw only the two h2 connections, each starting with the preface.
    assert_eq!(a.lines_with(&["connection"]).len(), 2, "{}", a.log_text());
    assert!(a.lines_with(&["preface=False"]).is_empty(), "{}", a.log_text());

    // The admin listener labels each route with its names and protocols.
    let admin = Proc::field(&gate.proc.wait_logged(&["admin listening"], WAIT), "addr").unwrap();
    let metrics = body(&curl(&[&format!("http://{admin}/metrics")]));
    for (route, addr) in [("route[0] app.test alpn=h2", &a_addr), ("route[1] default", &b_addr)] {
        let series = format!("tlsgate_backend_up{{listener=\"web\",route=\"{route}\",backend=\"{addr}\"}} 1");
        assert!(metrics.contains(&series), "no {series} in:\n{metrics}");
    }
    let status = body(&curl(&[&format!("http://{admin}/status")]));
    assert!(status.contains("route[0] app.test alpn=h2"), "{status}");
}

#[test]
fn a_protocol_without_a_route_for_the_name_is_refused_and_a_listener_offers_what_its_routes_name() {
    let pki = Pki::new();
    pki.server("app", &["app.test"]);
    let (_a, a_addr) = h2_backend("A");
    let (_b, b_addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "B");
    let gate = start(
        &pki,
        &format!(
            r#"
# Offers HTTP/1.1 too, but app.test has a route for h2 only.
[[terminate.listener]]
name = "h2only"
listen = "127.0.0.1:0"
alpn = ["h2", "http/1.1"]
  [[terminate.listener.certificate]]
  cert = "app.pem"
  key = "app.key"
  [[terminate.listener.route]]
  sni = ["app.test"]
  alpn = ["h2"]
  backends = ["{a_addr}"]

# No alpn of its own: it offers h2 and http/1.1, the protocols its routes name.
[[terminate.listener]]
name = "implied"
listen = "127.0.0.1:0"
  [[terminate.listener.certificate]]
  cert = "app.pem"
  key = "app.key"
  [[terminate.listener.route]]
  sni = ["app.test"]
  alpn = ["h2"]
  backends = ["{a_addr}"]
  [[terminate.listener.route]]
  alpn = ["http/1.1"]
  backends = ["{b_addr}"]
"#
        ),
    );
    let h2only = gate.listening(Some("h2only")).port();
    let implied = gate.listening(Some("implied")).port();

    assert_eq!(body(&curl_name(pki.ca(), "app.test", h2only, &["--http2"])), "hello from A\n");
    // HTTP/1.1 is negotiated, then refused: no route of app.test takes it.
    let out = curl_name(pki.ca(), "app.test", h2only, &["--http1.1"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hello"), "{}", describe(&out));
    gate.proc.wait_for(
        &[
            "listener=h2only",
            "refused",
            "SNI Some(\"app.test\")",
            "ALPN Some(\"http/1.1\")",
            "matches no route",
        ],
        WAIT,
    );
    // The client is told why: the alert of RFC 7301, sent under the session's keys.
    // `-ign_eof`: the alert comes after the handshake; s_client stays to read it.
    let connect = format!("127.0.0.1:{h2only}");
    let out =
        s_client(&["-connect", &connect, "-servername", "app.test", "-alpn", "http/1.1", "-ign_eof"], b"");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no application protocol"), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ALPN protocol: http/1.1"), "{}", describe(&out));

    // The implied offer: each protocol negotiated and routed.
    let out = curl_name(pki.ca(), "app.test", implied, &["-v", "--http2"]);
    assert_eq!(body(&out), "hello from A\n");
    let out = curl_name(pki.ca(), "app.test", implied, &["-v", "--http1.1"]);
    assert_eq!(body(&out), "hello from B\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ALPN: server accepted http/1.1"));
    // Every route names a protocol, so a client without ALPN finds none.
    let connect = format!("127.0.0.1:{implied}");
    let out = s_client(&["-connect", &connect, "-servername", "app.test", "-ign_eof"], b"");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no application protocol"), "{}", describe(&out));
    gate.proc.wait_for(&["listener=implied", "refused", "ALPN None", "matches no route"], WAIT);
}

#[test]
fn a_route_protocol_the_listener_does_not_offer_is_refused_at_start() {
    let pki = Pki::new();
    pki.server("app", &["app.test"]);
    let mut gate = start(
        &pki,
        r#"
[[terminate.listener]]
name = "web"
listen = "127.0.0.1:0"
alpn = ["http/1.1"]
  [[terminate.listener.certificate]]
  cert = "app.pem"
  key = "app.key"
  [[terminate.listener.route]]
  sni = ["app.test"]
  alpn = ["h2"]
  backends = ["127.0.0.1:9"]
  [[terminate.listener.route]]
  backends = ["127.0.0.1:9"]
"#,
    );
    let status = gate.proc.wait_exit(WAIT).expect("tlsgate exits");
    assert!(!status.success());
    let log = gate.proc.log_text();
    assert!(
        log.contains(
            "terminate.listener[0] (web) route[0]: alpn \"h2\" is not offered by the listener \
             (its alpn is [\"http/1.1\"]), so this route could never match"
        ),
        "{log}"
    );
    assert!(!log.contains("listening"), "{log}");
}

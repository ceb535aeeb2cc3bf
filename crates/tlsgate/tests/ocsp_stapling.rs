//! OCSP stapling against openssl: a test CA made with `openssl req`/`x509`, its responses made by
//! `openssl ocsp` (as files, as the http:// responder the certificate names, or served by a Python
//! HTTPS server as its https:// responder), checked by `openssl s_client -status` and the admin
//! listener's metrics.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tlsgate_testkit::process::{Proc, Tlsgate};

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");

fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh").arg("-ec").arg(script).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
}

/// CA, a leaf for localhost naming `responder` (a URL) as its OCSP responder (chain file: leaf
/// then CA), and a second leaf from the same CA.
fn pki(dir: &Path, responder: &str) {
    sh(
        dir,
        &format!(
            r#"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
  -days 30 -subj /CN=ocsp-test-ca 2>/dev/null
for leaf in leaf other; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $leaf.key -out $leaf.csr \
    -subj /CN=localhost 2>/dev/null
  printf 'subjectAltName=DNS:localhost\nauthorityInfoAccess=OCSP;URI:{responder}\n' > ext
  openssl x509 -req -in $leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 10 -extfile ext \
    -out $leaf.crt 2>/dev/null
  cat $leaf.crt ca.pem > $leaf.pem
  chmod 600 $leaf.key
done
: > index.txt
# An old mtime, so the responder notices (by mtime) each rewrite of the index.
touch -d 2000-01-01 index.txt
"#
        ),
    );
}

/// Marks `leaf` in the responder's index as valid (`V`) or revoked (`R`).
fn index(dir: &Path, leaf: &str, status: char) {
    sh(
        dir,
        &format!(
            r#"serial=$(openssl x509 -in {leaf}.crt -noout -serial | cut -d= -f2)
rev=""; [ {status} = R ] && rev="250101000000Z"
printf '{status}\t300101000000Z\t%s\t%s\tunknown\t/CN=localhost\n' "$rev" "$serial" > index.txt"#
        ),
    );
}

/// A response file for `leaf` made by `openssl ocsp` from the index.
fn response_file(dir: &Path, leaf: &str, out: &str) {
    sh(
        dir,
        &format!(
            "openssl ocsp -index index.txt -rsigner ca.pem -rkey ca.key -CA ca.pem -issuer ca.pem \
             -cert {leaf}.crt -ndays 1 -respout {out} >/dev/null 2>&1"
        ),
    );
}

/// What `openssl s_client -status` prints about the staple.
fn s_client_status(port: u16) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "localhost", "-status"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn config(dir: &Path, backend: &str, ocsp: &str) {
    std::fs::write(
        dir.join("tlsgate.toml"),
        format!(
            r#"
[terminate]
watch_interval = "200ms"
[[terminate.listener]]
name = "stapled"
listen = "127.0.0.1:0"
  [[terminate.listener.certificate]]
  cert = "leaf.pem"
  key = "leaf.key"
  {ocsp}
  [[terminate.listener.route]]
  backends = ["{backend}"]
"#
        ),
    )
    .unwrap();
}

#[test]
fn ocsp_file_is_stapled_in_the_metrics_and_a_mismatched_or_missing_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pki(d, "http://127.0.0.1:1");
    index(d, "leaf", 'V');
    response_file(d, "leaf", "leaf.ocsp");
    let (_backend, addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "ocsp");
    config(d, &addr, r#"ocsp_file = "leaf.ocsp""#);
    let toml = d.join("tlsgate.toml");
    let gate =
        Tlsgate::start(BIN, &["terminate", "--config", toml.to_str().unwrap(), "--admin", "127.0.0.1:0"]);
    let port = gate.listening(Some("stapled")).port();
    let admin =
        Proc::field(&gate.proc.wait_logged(&["admin listening"], Duration::from_secs(10)), "addr").unwrap();
    let status = s_client_status(port);
    assert!(status.contains("OCSP Response Status: successful"), "{status}");
    assert!(status.contains("Cert Status: good"), "{status}");
    // The operator's staple in the same metrics as fetched ones: stapled, its age from its
    // thisUpdate (made just now), no failure.
    let m = metrics(&admin);
    assert_eq!(metric(&m, "tlsgate_ocsp_stapled{"), Some(1), "{m}");
    assert!(metric(&m, "tlsgate_ocsp_staple_age_seconds{").is_some_and(|age| age < 60), "{m}");
    assert_eq!(metric(&m, "tlsgate_ocsp_fetch_failures_total{").unwrap_or(0), 0, "{m}");

    // A response for another certificate replaces it on reload: refused (counted as a failure),
    // the good one stays.
    index(d, "other", 'V');
    response_file(d, "other", "other.ocsp");
    std::fs::rename(d.join("other.ocsp"), d.join("leaf.ocsp")).unwrap();
    gate.proc.wait_for(&["reload refused", "response is for another certificate"], Duration::from_secs(10));
    assert!(s_client_status(port).contains("Cert Status: good"));
    let m = metrics(&admin);
    assert_eq!(metric(&m, "tlsgate_ocsp_fetch_failures_total{"), Some(1), "{m}");
    assert_eq!(metric(&m, "tlsgate_ocsp_stapled{"), Some(1), "{m}");
    // The file gone: unreadable, refused and counted the same way.
    std::fs::rename(d.join("leaf.ocsp"), d.join("mismatched.ocsp")).unwrap();
    gate.proc.wait_for(&["reload refused", "cannot read OCSP response"], Duration::from_secs(10));
    assert!(s_client_status(port).contains("Cert Status: good"));
    let m = metrics(&admin);
    assert_eq!(metric(&m, "tlsgate_ocsp_fetch_failures_total{"), Some(2), "{m}");
    drop(gate);
    std::fs::rename(d.join("mismatched.ocsp"), d.join("leaf.ocsp")).unwrap();

    // At start, the same mismatch stops tlsgate with the reason.
    let mut refused =
        Tlsgate::start(BIN, &["terminate", "--config", d.join("tlsgate.toml").to_str().unwrap()]);
    refused.proc.wait_for(&["response is for another certificate"], Duration::from_secs(10));
    assert!(!refused.proc.wait_exit(Duration::from_secs(10)).unwrap().success());

    // Without ocsp_file, and its responder unreachable: nothing is stapled.
    config(d, &addr, "");
    let bare = Tlsgate::start(BIN, &["terminate", "--config", d.join("tlsgate.toml").to_str().unwrap()]);
    let status = s_client_status(bare.listening(Some("stapled")).port());
    assert!(status.contains("OCSP response: no response sent"), "{status}");
}

/// `openssl ocsp` answering on `port` from the index, responses valid for one minute. It listens
/// on every address: OpenSSL 3.0's `-port` takes a number only (`-port 127.0.0.1:N` is refused);
/// the certificate names 127.0.0.1.
fn responder(dir: &Path, port: u16) -> Proc {
    let mut cmd = Command::new("openssl");
    cmd.args(["ocsp", "-index", "index.txt", "-CA", "ca.pem", "-rsigner", "ca.pem", "-rkey", "ca.key"])
        .args(["-nmin", "1", "-port", &port.to_string()])
        .current_dir(dir);
    let proc = Proc::spawn("openssl ocsp", cmd);
    proc.wait_for(&["ACCEPT"], Duration::from_secs(10));
    proc
}

#[test]
fn fetched_staple_is_refreshed_kept_while_fresh_and_dropped_before_stale() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let responder_port = tlsgate_testkit::net::free_port();
    pki(d, &format!("http://127.0.0.1:{responder_port}"));
    index(d, "leaf", 'V');
    let mut ocsp = responder(d, responder_port);
    let (_backend, addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "ocsp");
    // Responses live 60 s; stapled until 45 s before that, refreshed at about half of the 15 s.
    config(d, &addr, r#"ocsp_margin = "45s""#);
    let config = d.join("tlsgate.toml");
    let gate =
        Tlsgate::start(BIN, &["terminate", "--config", config.to_str().unwrap(), "--admin", "127.0.0.1:0"]);
    let port = gate.listening(Some("stapled")).port();
    let admin =
        Proc::field(&gate.proc.wait_logged(&["admin listening"], Duration::from_secs(10)), "addr").unwrap();
    gate.proc.wait_for(&["response fetched and stapled", "Good"], Duration::from_secs(20));
    let status = s_client_status(port);
    assert!(status.contains("Cert Status: good"), "{status}");
    let m = metrics(&admin);
    assert_eq!(metric(&m, "tlsgate_ocsp_stapled{"), Some(1), "{m}");
    assert!(metric(&m, "tlsgate_ocsp_staple_age_seconds{").is_some_and(|age| age < 60), "{m}");

    // Revoked at the responder (restarted: it rereads its index only between requests): the
    // next refresh staples that, logged as an error.
    ocsp.kill();
    index(d, "leaf", 'R');
    let mut ocsp = responder(d, responder_port);
    gate.proc.wait_for(&["ERROR", "REVOKED"], Duration::from_secs(30));
    let status = s_client_status(port);
    assert!(status.contains("Cert Status: revoked"), "{status}");

    // The responder gone: the stapled response stays until the margin, then none.
    ocsp.kill();
    gate.proc.wait_for(&["fetching a response failed", "kept_until"], Duration::from_secs(30));
    let status = s_client_status(port);
    assert!(status.contains("Cert Status: revoked"), "{status}");
    gate.proc.wait_for(&["is no longer stapled"], Duration::from_secs(30));
    let status = s_client_status(port);
    assert!(status.contains("OCSP response: no response sent"), "{status}");
    let m = metrics(&admin);
    assert_eq!(metric(&m, "tlsgate_ocsp_stapled{"), Some(0), "{m}");
    assert_eq!(metric(&m, "tlsgate_ocsp_staple_age_seconds{"), None, "{m}");
    assert!(metric(&m, "tlsgate_ocsp_fetch_failures_total{").is_some_and(|n| n >= 1), "{m}");
}

/// The admin listener's metrics page.
fn metrics(admin: &str) -> String {
    let out = Command::new("curl").args(["-sS", &format!("http://{admin}/metrics")]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of the first sample whose line starts with `prefix`.
fn metric(page: &str, prefix: &str) -> Option<i64> {
    page.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A Python HTTPS server on `port` (certificate `front.pem`) answering every POST with the
/// response file `leaf.ocsp`, as a CA's https:// responder serving precomputed responses.
fn https_responder(dir: &Path, port: u16) -> Proc {
    let script = r#"
import http.server, ssl, sys
class Responder(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        body = open("leaf.ocsp", "rb").read()
        self.send_response(200)
        self.send_header("Content-Type", "application/ocsp-response")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Responder)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("front.pem", "front.key")
server.socket = context.wrap_socket(server.socket, server_side=True)
print("responder ready", flush=True)
server.serve_forever()
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, &port.to_string()]).current_dir(dir);
    let proc = Proc::spawn("https responder", cmd);
    proc.wait_for(&["responder ready"], Duration::from_secs(10));
    proc
}

#[test]
fn https_responder_is_fetched_with_the_system_roots() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let responder_port = tlsgate_testkit::net::free_port();
    pki(d, &format!("https://127.0.0.1:{responder_port}"));
    index(d, "leaf", 'V');
    response_file(d, "leaf", "leaf.ocsp");
    // The responder's own certificate, from the same CA, for its address.
    sh(
        d,
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout front.key -out front.csr \
           -subj /CN=responder 2>/dev/null
         printf 'subjectAltName=IP:127.0.0.1\n' > front.ext
         openssl x509 -req -in front.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 10 \
           -extfile front.ext -out front.pem 2>/dev/null
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout stranger.key \
           -out stranger.pem -days 30 -subj /CN=stranger-ca 2>/dev/null",
    );
    let _responder = https_responder(d, responder_port);
    let (_backend, addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "ocsp");
    config(d, &addr, "");
    let config = d.join("tlsgate.toml");
    // The TLS client's roots are the system's, which SSL_CERT_FILE replaces.
    let start = |roots: &str| {
        let mut cmd = Command::new(BIN);
        cmd.args(["terminate", "--config", config.to_str().unwrap()]);
        cmd.env("SSL_CERT_FILE", d.join(roots)).env_remove("SSL_CERT_DIR");
        Tlsgate::start_command(cmd)
    };

    // Roots without the responder's CA: a failed fetch naming the responder, nothing stapled.
    let untrusted = start("stranger.pem");
    let port = untrusted.listening(Some("stapled")).port();
    let line = untrusted.proc.wait_for(&["fetching a response failed"], Duration::from_secs(20));
    assert!(line.contains(&format!("TLS with the responder https://127.0.0.1:{responder_port}")), "{line}");
    assert!(s_client_status(port).contains("OCSP response: no response sent"));
    drop(untrusted);

    // The test CA as the roots: fetched over TLS and stapled.
    let gate = start("ca.pem");
    let port = gate.listening(Some("stapled")).port();
    gate.proc.wait_for(&["response fetched and stapled", "Good"], Duration::from_secs(20));
    let status = s_client_status(port);
    assert!(status.contains("Cert Status: good"), "{status}");
}

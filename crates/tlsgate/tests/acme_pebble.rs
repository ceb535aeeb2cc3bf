//! ACME against Pebble (Debian's `pebble`, with its own test CA) and `pebble-challtestsrv` as the
//! DNS that points every name at loopback: tlsgate starts with no certificate, gets one by
//! TLS-ALPN-01 on its own listener, curl verifies it against Pebble's root, renewals swap in new
//! serials without a failed request, and an order Pebble refuses is retried with backoff while the
//! listener serves its fallback certificate. With `--acme-http-port`, the same by HTTP-01 on that
//! plain port, which answers nothing but challenge tokens.

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tlsgate_testkit::process::{Proc, Tlsgate};

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");

fn free_tcp() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("sh").arg("-ec").arg(script).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Pebble {
    _dns: Proc,
    _pebble: Proc,
    directory: String,
    /// Pebble's HTTPS certificate: the trust for the directory itself.
    directory_ca: String,
    /// Pebble's issuing root, fetched from its management port.
    root: String,
    /// Its management port (roots, intermediates and their keys).
    mgmt: u16,
}

/// Pebble validating TLS-ALPN-01 on `tls_port` (tlsgate's listener) and HTTP-01 on `http_port`,
/// with certificates valid for `validity_secs` naming `ocsp` (if not empty) as their OCSP
/// responder, refusing names under `blocked.test`.
fn pebble(dir: &Path, tls_port: u16, http_port: u16, validity_secs: u64, ocsp: &str) -> Pebble {
    sh(
        dir,
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout wfe-ca.key \
         -out wfe-ca.pem -days 2 -subj /CN=pebble-wfe-ca 2>/dev/null
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout pebble.key -out pebble.csr \
         -subj /CN=pebble 2>/dev/null
         printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' > wfe.ext
         openssl x509 -req -in pebble.csr -CA wfe-ca.pem -CAkey wfe-ca.key -CAcreateserial -days 2 \
         -extfile wfe.ext -out pebble.pem 2>/dev/null",
    );
    let (wfe, mgmt, dns) = (free_tcp(), free_tcp(), free_udp());
    let config = format!(
        r#"{{"pebble": {{"listenAddress": "127.0.0.1:{wfe}", "managementListenAddress": "127.0.0.1:{mgmt}",
 "certificate": "pebble.pem", "privateKey": "pebble.key", "httpPort": {http_port}, "tlsPort": {tls_port},
 "ocspResponderURL": "{ocsp}", "externalAccountBindingRequired": false,
 "domainBlocklist": ["blocked.test"], "certificateValidityPeriod": {validity_secs}}}}}"#,
    );
    std::fs::write(dir.join("pebble.json"), config).unwrap();
    let mut dns_cmd = Command::new("pebble-challtestsrv");
    dns_cmd.args(["-dns01", &format!("127.0.0.1:{dns}"), "-http01", "", "-https01", "", "-tlsalpn01", ""]);
    dns_cmd.args([
        "-management",
        &format!("127.0.0.1:{}", free_tcp()),
        "-defaultIPv4",
        "127.0.0.1",
        "-defaultIPv6",
        "",
    ]);
    let dns_proc = Proc::spawn("challtestsrv", dns_cmd);
    dns_proc.wait_for(&["Starting management server"], Duration::from_secs(20));
    let mut cmd = Command::new("pebble");
    cmd.current_dir(dir).args(["-config", "pebble.json", "-dnsserver", &format!("127.0.0.1:{dns}")]);
    cmd.env("PEBBLE_VA_NOSLEEP", "1").env("PEBBLE_WFE_NONCEREJECT", "0").env("PEBBLE_AUTHZREUSE", "0");
    let proc = Proc::spawn("pebble", cmd);
    proc.wait_for(&["ACME directory available"], Duration::from_secs(20));
    sh(dir, &format!("curl -sfk https://127.0.0.1:{mgmt}/roots/0 -o root.pem"));
    let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
    Pebble {
        _dns: dns_proc,
        _pebble: proc,
        directory: format!("https://127.0.0.1:{wfe}/dir"),
        directory_ca: path("wfe-ca.pem"),
        root: path("root.pem"),
        mgmt,
    }
}

/// curl to `name` on `port` trusting `ca`; the leaf's serial, or curl's complaint.
fn get(dir: &Path, name: &str, port: u16, ca: &str) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sS", "--resolve", &format!("{name}:{port}:127.0.0.1"), "--cacert", ca])
        .args(["-w", "%{certs}", &format!("https://{name}:{port}/")])
        .current_dir(dir)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.starts_with("hello from acme"), "{text}");
    let pem = &text[text.find("-----BEGIN").expect("no certificate in curl's output")..];
    Ok(serial_line(pem))
}

/// `tlsgate terminate` on `port` with no certificate, ordering from Pebble `p` into `state`;
/// `extra`: the names and any other ACME flag.
fn acme_terminate(p: &Pebble, port: u16, backend: &str, state: &Path, extra: &[&str]) -> Tlsgate {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["terminate", "--listen", &listen, "--backend", backend];
    args.extend(["--acme-directory", &p.directory, "--acme-directory-ca", &p.directory_ca]);
    args.extend(["--acme-state", state.to_str().unwrap()]);
    args.extend(extra);
    Tlsgate::start(BIN, &args)
}

#[test]
fn issues_by_tls_alpn_renews_without_a_failed_request_and_backs_off_when_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_tcp();
    // Short-lived certificates: renewal at two-thirds, every few seconds.
    let p = pebble(d, port, free_tcp(), 9, "");
    let (_backend, backend) = Tlsgate::backend(BIN, "127.0.0.1:0", "acme");
    let state = d.join("state");
    let gate = acme_terminate(
        &p,
        port,
        &backend,
        &state,
        &["--acme-name", "acme.test", "--acme-name", "www.acme.test"],
    );
    gate.listening(None);
    gate.proc.wait_for(&["ACME: certificate issued"], Duration::from_secs(60));
    let first =
        get(d, "acme.test", port, &p.root).expect("the issued certificate verifies against Pebble's root");
    assert_eq!(get(d, "www.acme.test", port, &p.root).unwrap(), first);
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions()) & 0o777
    };
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("account.json")), 0o600);
    assert_eq!(mode(&state.join("acme.test/key.pem")), 0o600);

    // Requests in a loop across renewals: every one succeeds, and the serial changes.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut serials = vec![first];
    let mut requests = 0;
    while serials.len() < 3 {
        assert!(Instant::now() < deadline, "no renewal seen; serials {serials:?}");
        let serial =
            get(d, "acme.test", port, &p.root).unwrap_or_else(|e| panic!("request {requests} failed: {e}"));
        requests += 1;
        if serials.last() != Some(&serial) {
            serials.push(serial);
        }
    }
    eprintln!("{requests} requests across {} renewals, none failed", serials.len() - 1);
    drop(gate);

    // A name Pebble refuses: the order fails, is retried with growing waits, and the listener
    // serves its fallback (throwaway) certificate meanwhile.
    std::fs::write(
        d.join("refused.toml"),
        format!(
            r#"
[[terminate.listener]]
name = "refused"
listen = "127.0.0.1:{port}"
acme = {{ directory = "{dir}", names = ["blocked.test"], state = "state", directory_ca = "{ca}", retry_min = "300ms", retry_max = "2s" }}
  [[terminate.listener.route]]
  backends = ["{backend}"]
"#,
            dir = p.directory,
            ca = p.directory_ca,
        ),
    )
    .unwrap();
    let refused = Tlsgate::start(BIN, &["terminate", "--config", d.join("refused.toml").to_str().unwrap()]);
    refused.listening(Some("refused"));
    refused.proc.wait_for(&["ACME: order failed", "failures=3"], Duration::from_secs(30));
    let log = refused.proc.log_text();
    assert!(log.contains("blocked.test"), "{log}");
    let fallback = Command::new("curl")
        .args([
            "-sSk",
            "--resolve",
            &format!("blocked.test:{port}:127.0.0.1"),
            &format!("https://blocked.test:{port}/"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&fallback.stdout), "hello from acme\n");
    // …and that certificate is not one Pebble issued.
    assert!(get(d, "blocked.test", port, &p.root).is_err());
}

/// `curl http://127.0.0.1:port{path}`: the HTTP status code.
fn plain_status(port: u16, path: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://127.0.0.1:{port}{path}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn issues_by_http01_on_the_plain_port_which_serves_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (port, http) = tlsgate_testkit::net::two_free_ports();
    let p = pebble(d, port, http, 3600, "");
    let (_backend, backend) = Tlsgate::backend(BIN, "127.0.0.1:0", "acme");
    let state = d.join("state");
    let http_port = http.to_string();
    let gate = acme_terminate(
        &p,
        port,
        &backend,
        &state,
        &["--acme-name", "acme.test", "--acme-http-port", &http_port],
    );
    gate.listening(None);
    gate.proc.wait_for(&["ACME: answering HTTP-01 on the plain port"], Duration::from_secs(30));
    gate.proc.wait_for(&["ACME: answered an HTTP-01 validation request"], Duration::from_secs(60));
    gate.proc.wait_for(&["ACME: certificate issued"], Duration::from_secs(60));
    get(d, "acme.test", port, &p.root).expect("the issued certificate verifies against Pebble's root");
    assert!(gate.proc.lines_with(&["answering TLS-ALPN-01"]).is_empty());
    // The plain port serves nothing but tokens under validation.
    assert_eq!(plain_status(http, "/"), "404");
    assert_eq!(plain_status(http, "/.well-known/acme-challenge/no-such-token"), "404");
}

/// `openssl ocsp` on `port` answering for Pebble's intermediate (the issuer of its leaves) from
/// `index.txt` in `dir`, responses valid for a day.
fn responder(dir: &Path, port: u16) -> Proc {
    let mut cmd = Command::new("openssl");
    cmd.args(["ocsp", "-index", "index.txt", "-CA", "inter.pem", "-rsigner", "inter.pem"])
        .args(["-rkey", "inter.key", "-ndays", "1", "-port", &port.to_string()])
        .current_dir(dir);
    let proc = Proc::spawn("openssl ocsp", cmd);
    proc.wait_for(&["ACCEPT"], Duration::from_secs(10));
    proc
}

/// Adds the leaf of the chain tlsgate keeps in `cert` to the responder's index as valid (its
/// serial, notAfter and subject, in the columns of `openssl ca`'s database); its serial.
fn index_issued(dir: &Path, cert: &Path) -> String {
    sh(
        dir,
        &format!(
            r#"openssl x509 -in {cert} -out leaf.pem
serial=$(openssl x509 -in leaf.pem -noout -serial | cut -d= -f2)
end=$(date -u -d "$(openssl x509 -in leaf.pem -noout -enddate | cut -d= -f2)" +%y%m%d%H%M%SZ)
subject=$(openssl x509 -in leaf.pem -noout -subject -nameopt compat | sed 's/^subject=//')
printf 'V\t%s\t\t%s\tunknown\t%s\n' "$end" "$serial" "$subject" >> index.txt
echo "$serial""#,
            cert = cert.display()
        ),
    )
    .trim()
    .to_string()
}

/// What `openssl s_client -status` prints for `name` on `port`: the leaf's serial (as
/// `openssl x509 -serial` spells it) and the stapled response's text.
fn stapled(dir: &Path, name: &str, port: u16, root: &str) -> (String, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", name, "-status"])
        .args(["-CAfile", root, "-verify_return_error"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    // The leaf follows "Server certificate" (the response before it may carry its signer's).
    let leaf = &text[text.find("Server certificate").expect("no server certificate in s_client's output")..];
    let serial = serial_line(leaf);
    (serial.trim_start_matches("serial=").to_string(), text)
}

/// `openssl x509 -noout -serial` of the first certificate in `pem`: its `serial=…` line.
fn serial_line(pem: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(pem.as_bytes()).unwrap();
    String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).trim().to_string()
}

#[test]
fn issued_and_renewed_certificates_are_stapled_from_their_responder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (port, ocsp_port) = tlsgate_testkit::net::two_free_ports();
    // Renewal 27 s after each issuance: time for each certificate's staple before the next.
    let p = pebble(d, port, free_tcp(), 40, &format!("http://127.0.0.1:{ocsp_port}"));
    sh(
        d,
        &format!(
            "curl -sfk https://127.0.0.1:{m}/intermediates/0 -o inter.pem
             curl -sfk https://127.0.0.1:{m}/intermediate-keys/0 -o inter.key
             : > index.txt
             # Each renewal keeps the subject: let the index hold several valid certificates for it.
             echo 'unique_subject = no' > index.txt.attr",
            m = p.mgmt
        ),
    );
    let mut ocsp = responder(d, ocsp_port);
    let (_backend, backend) = Tlsgate::backend(BIN, "127.0.0.1:0", "acme");
    let state = d.join("state");
    let cert = state.join("acme.test/cert.pem");
    let gate =
        acme_terminate(&p, port, &backend, &state, &["--acme-name", "acme.test", "--admin", "127.0.0.1:0"]);
    gate.listening(None);
    let admin =
        Proc::field(&gate.proc.wait_logged(&["admin listening"], Duration::from_secs(10)), "addr").unwrap();
    // The staple metrics name the certificate by the file the state directory keeps it in.
    let stapled_metric =
        format!("tlsgate_ocsp_stapled{{listener=\"127.0.0.1:{port}\",cert=\"{}\"}}", cert.display());

    let mut serials = Vec::new();
    for round in 0..2 {
        gate.proc.wait_for(&["ACME: certificate issued"], Duration::from_secs(60));
        // Its serial in the index, and the responder restarted to read it (it rereads a changed
        // index only after answering one more request from the old one).
        let serial = index_issued(d, &cert);
        ocsp.kill();
        ocsp = responder(d, ocsp_port);
        gate.proc.wait_for(&["response fetched and stapled", "Good"], Duration::from_secs(30));
        let (served, text) = stapled(d, "acme.test", port, &p.root);
        assert_eq!(served, serial, "round {round}: {text}");
        assert!(text.contains("OCSP Response Status: successful"), "round {round}: {text}");
        assert!(text.contains("Cert Status: good"), "round {round}: {text}");
        // The response is the one for this certificate, not the one before.
        assert!(text.contains(&format!("Serial Number: {serial}")), "round {round}: {text}");
        let m = sh(d, &format!("curl -sS http://{admin}/metrics"));
        assert!(
            m.lines().any(|l| l == format!("{stapled_metric} 1")),
            "round {round}: {stapled_metric} in\n{m}"
        );
        serials.push(serial);
    }
    assert_ne!(serials[0], serials[1]);
    let log = gate.proc.log_text();
    // The renewed certificate never got its predecessor's response.
    assert!(!log.contains("response is for another certificate"), "{log}");
}

//! SNI: certificates and backend pools chosen by name, defaults, refusals; several listeners in
//! one process; ALPN per listener; the key formats operators bring.

use std::process::Command;
use std::time::Duration;

use tlsgate_testkit::clients::{curl, curl_name, describe, s_client};
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::{Proc, Tlsgate};

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");

fn backend(name: &str) -> (Tlsgate, String) {
    Tlsgate::backend(BIN, "127.0.0.1:0", name)
}

/// GET / for `name` on `port`, resolved to loopback, with the test CA; body or curl's error.
fn get(pki: &Pki, name: &str, port: u16, extra: &[&str]) -> Result<String, String> {
    let out = curl_name(pki.ca(), name, port, extra);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(describe(&out))
    }
}

struct Setup {
    pki: Pki,
    gate: Tlsgate,
    open: u16,
    strict: u16,
    _backends: Vec<Tlsgate>,
}

fn setup() -> Setup {
    let pki = Pki::new();
    pki.server("main", &["a.test", "b.test", "*.wild.test"]);
    let mut backends = Vec::new();
    let mut addr = std::collections::HashMap::new();
    for name in ["A", "B1", "B2", "D"] {
        let (b, a) = backend(name);
        backends.push(b);
        addr.insert(name, a);
    }
    let config = format!(
        r#"
[[terminate.listener]]
name = "open"
listen = "127.0.0.1:0"
alpn = ["http/1.1"]
  [[terminate.listener.certificate]]
  cert = "main.pem"
  key = "main.key"
  default = true
  [[terminate.listener.route]]
  sni = ["a.test"]
  backends = ["{a}"]
  [[terminate.listener.route]]
  sni = ["b.test", "*.wild.test"]
  backends = ["{b1}", "{b2}"]
  [[terminate.listener.route]]
  backends = ["{d}"]

[[terminate.listener]]
name = "strict"
listen = "127.0.0.1:0"
  [[terminate.listener.certificate]]
  cert = "main.pem"
  key = "main.key"
  [[terminate.listener.route]]
  sni = ["a.test"]
  backends = ["{a}"]
"#,
        a = addr["A"],
        b1 = addr["B1"],
        b2 = addr["B2"],
        d = addr["D"]
    );
    let path = pki.path("tlsgate.toml");
    std::fs::write(&path, config).unwrap();
    let gate = Tlsgate::start(BIN, &["terminate", "--config", path.to_str().unwrap()]);
    let open = gate.listening(Some("open")).port();
    let strict = gate.listening(Some("strict")).port();
    Setup { pki, gate, open, strict, _backends: backends }
}

#[test]
fn sni_selects_route_and_round_robins_its_pool() {
    let s = setup();
    assert_eq!(get(&s.pki, "a.test", s.open, &[]).unwrap(), "hello from A\n");
    let mut seen: Vec<String> = (0..4).map(|_| get(&s.pki, "b.test", s.open, &[]).unwrap()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, vec!["hello from B1\n", "hello from B2\n"], "round-robin over the pool");
    let wild = get(&s.pki, "x.wild.test", s.open, &[]).unwrap();
    assert!(wild.starts_with("hello from B"), "wildcard route: {wild}");
    // The same name on the other listener of the same process goes to its own route.
    assert_eq!(get(&s.pki, "a.test", s.strict, &[]).unwrap(), "hello from A\n");
}

#[test]
fn unknown_or_missing_sni_gets_the_default_where_one_is_set() {
    let s = setup();
    // Unknown name: default certificate (its names do not cover it, so curl is told not to check
    // the name) and default route.
    let body = get(&s.pki, "unknown.test", s.open, &["-k"]).unwrap();
    assert_eq!(body, "hello from D\n");
    // No SNI at all.
    let out = s_client(
        &["-connect", &format!("127.0.0.1:{}", s.open), "-noservername", "-quiet", "-ign_eof"],
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from D"), "{}", describe(&out));
}

#[test]
fn unknown_sni_is_refused_where_no_default_is_set() {
    let s = setup();
    let err = get(&s.pki, "unknown.test", s.strict, &["-k"]).unwrap_err();
    assert!(err.contains("unrecognized name"), "{err}");
    s.gate.proc.wait_for(
        &["listener=strict", "refused: client asked for name unknown.test, which no certificate serves"],
        Duration::from_secs(10),
    );
    // A name the certificate covers but no route serves: refused the same way.
    let out = s_client(&["-connect", &format!("127.0.0.1:{}", s.strict), "-servername", "b.test"], b"");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized name"), "{}", describe(&out));
    s.gate.proc.wait_for(
        &["listener=strict", "client asked for name b.test, which no route serves"],
        Duration::from_secs(10),
    );
}

#[test]
fn alpn_is_offered_per_listener() {
    let s = setup();
    let resolve = format!("a.test:{}:127.0.0.1", s.open);
    let url = format!("https://a.test:{}/", s.open);
    let out = curl(&["-v", "--http1.1", "--cacert", s.pki.ca(), "--resolve", &resolve, &url]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ALPN: server accepted http/1.1"),
        "{}",
        describe(&out)
    );
    // A client that only speaks h2 shares no protocol with the listener: refused.
    let out = s_client(
        &["-connect", &format!("127.0.0.1:{}", s.open), "-servername", "a.test", "-alpn", "h2"],
        b"",
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no application protocol"), "{}", describe(&out));
    // The listener without ALPN configured negotiates none.
    let resolve = format!("a.test:{}:127.0.0.1", s.strict);
    let url = format!("https://a.test:{}/", s.strict);
    let out = curl(&["-v", "--cacert", s.pki.ca(), "--resolve", &resolve, &url]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("server accepted"), "{}", describe(&out));
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", describe(&out));
}

fn serve_once(cert: &str, key: &str, ca: &str, extra: &[&str]) -> Result<String, String> {
    let (_b, backend) = backend("keys");
    let mut args =
        vec!["terminate", "--listen", "127.0.0.1:0", "--cert", cert, "--key", key, "--backend", &backend];
    args.extend_from_slice(extra);
    let gate = Tlsgate::start(BIN, &args);
    let Some(line) = gate.proc.logged_or_exit(&["listening"], Duration::from_secs(30)) else {
        return Err(gate.proc.log_text());
    };
    let port = Proc::field(&line, "addr").unwrap().parse::<std::net::SocketAddr>().unwrap().port();
    let url = format!("https://localhost:{port}/");
    let out = curl(&["--cacert", ca, &url]);
    assert!(out.status.success(), "{}", describe(&out));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn pkcs8_sec1_and_pkcs1_keys_load_and_readable_keys_are_refused() {
    let pki = Pki::new();
    let (cert, pkcs8) = pki.server("ec", &["localhost"]);
    let (cert, pkcs8) = (cert.to_str().unwrap(), pkcs8.to_str().unwrap());
    assert!(std::fs::read_to_string(pkcs8).unwrap().contains("BEGIN PRIVATE KEY"));
    assert_eq!(serve_once(cert, pkcs8, pki.ca(), &[]).unwrap(), "hello from keys\n");

    let sec1 = pki.path("ec-sec1.key");
    let sec1 = sec1.to_str().unwrap();
    openssl(&["ec", "-in", pkcs8, "-out", sec1]);
    std::fs::set_permissions(sec1, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    assert!(std::fs::read_to_string(sec1).unwrap().contains("BEGIN EC PRIVATE KEY"));
    assert_eq!(serve_once(cert, sec1, pki.ca(), &[]).unwrap(), "hello from keys\n");

    let rsa_cert = pki.path("rsa.pem");
    let rsa8 = pki.path("rsa8.key");
    let rsa1 = pki.path("rsa1.key");
    let (rsa_cert, rsa8, rsa1) = (rsa_cert.to_str().unwrap(), rsa8.to_str().unwrap(), rsa1.to_str().unwrap());
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        rsa8,
        "-out",
        rsa_cert,
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost",
    ]);
    openssl(&["rsa", "-in", rsa8, "-traditional", "-out", rsa1]);
    std::fs::set_permissions(rsa1, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    assert!(std::fs::read_to_string(rsa1).unwrap().contains("BEGIN RSA PRIVATE KEY"));
    assert_eq!(serve_once(rsa_cert, rsa1, rsa_cert, &[]).unwrap(), "hello from keys\n");

    // A key others can read: refused at start with a clear reason, unless overridden.
    std::fs::set_permissions(pkcs8, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let err = serve_once(cert, pkcs8, pki.ca(), &[]).unwrap_err();
    assert!(err.contains("accessible to group or others (mode 644)"), "{err}");
    let ok = serve_once(cert, pkcs8, pki.ca(), &["--allow-insecure-key-permissions"]).unwrap();
    assert_eq!(ok, "hello from keys\n");
}

/// The subject CN of the certificate served for `sni` (none: no SNI sent).
fn served_cn(port: u16, sni: Option<&str>) -> String {
    let connect = format!("127.0.0.1:{port}");
    let mut args = vec!["-connect", connect.as_str()];
    match sni {
        Some(name) => args.extend_from_slice(&["-servername", name]),
        None => args.push("-noservername"),
    }
    let out = s_client(&args, b"");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let subject =
        text.lines().find(|l| l.starts_with("subject=")).unwrap_or_else(|| panic!("{}", describe(&out)));
    subject
        .split("CN = ")
        .nth(1)
        .or_else(|| subject.split("CN=").nth(1))
        .unwrap_or("")
        .split(',')
        .next()
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn certificates_are_chosen_by_sni_exact_wildcard_and_default() {
    let pki = Pki::new();
    pki.server("apex", &["apex.test", "www.apex.test"]);
    pki.server("wild", &["*.wild.test"]);
    pki.server("fallback", &["fallback.test"]);
    let (_b, addr) = backend("certs");
    let config = format!(
        "[[terminate.listener]]\nname = \"certs\"\nlisten = \"127.0.0.1:0\"\n\
         [[terminate.listener.certificate]]\ncert = \"apex.pem\"\nkey = \"apex.key\"\n\
         [[terminate.listener.certificate]]\ncert = \"wild.pem\"\nkey = \"wild.key\"\n\
         [[terminate.listener.certificate]]\ncert = \"fallback.pem\"\nkey = \"fallback.key\"\ndefault = true\n\
         [[terminate.listener.route]]\nbackends = [\"{addr}\"]\n"
    );
    std::fs::write(pki.path("certs.toml"), config).unwrap();
    let gate = Tlsgate::start(BIN, &["terminate", "--config", pki.path("certs.toml").to_str().unwrap()]);
    let port = gate.listening(Some("certs")).port();
    assert_eq!(served_cn(port, Some("www.apex.test")), "apex.test", "exact name from the SAN list");
    assert_eq!(served_cn(port, Some("a.wild.test")), "*.wild.test", "wildcard");
    assert_eq!(served_cn(port, Some("a.b.wild.test")), "fallback.test", "a wildcard covers one label only");
    assert_eq!(served_cn(port, Some("elsewhere.test")), "fallback.test", "unknown name: the default");
    assert_eq!(served_cn(port, None), "fallback.test", "no SNI: the default");
    // curl verifies the wildcard certificate for a name under it.
    assert_eq!(get(&pki, "x.wild.test", port, &[]).unwrap(), "hello from certs\n");
}

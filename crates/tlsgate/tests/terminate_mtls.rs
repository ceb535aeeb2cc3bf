//! Mutual TLS with curl: a good client certificate passes; expired, wrong-CA, revoked (CRL) and
//! not-allow-listed ones are refused with the matching alert and a log line saying why.

use std::time::Duration;

use tlsgate_testkit::clients::{curl, describe};
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::Tlsgate;
use tlsgate_tls::pki::{ClientSpec, TestCa};

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");

struct Setup {
    pki: Pki,
    gate: Tlsgate,
    required: u16,
    optional: u16,
    _backend: Tlsgate,
}

fn client(pki: &Pki, ca: &TestCa, stem: &str, spec: ClientSpec<'_>) -> u64 {
    let issued = ca.issue_client(&spec).unwrap();
    issued.write(pki.dir.path(), stem).unwrap();
    issued.serial
}

fn setup() -> Setup {
    let pki = Pki::new();
    pki.server("server", &["localhost"]);
    let alice = ClientSpec {
        common_name: "alice",
        dns: &["alice.clients.test"],
        uri: &["spiffe://test/ns/prod/alice"],
        ..Default::default()
    };
    client(&pki, &pki.ca, "alice", alice.clone());
    client(&pki, &pki.ca, "expired", ClientSpec { expired: true, ..alice.clone() });
    client(&pki, &TestCa::new("some other CA").unwrap(), "stranger", alice);
    let revoked =
        client(&pki, &pki.ca, "revoked", ClientSpec { common_name: "revoked-alice", ..Default::default() });
    client(
        &pki,
        &pki.ca,
        "mallory",
        ClientSpec { common_name: "mallory", dns: &["mallory.clients.test"], ..Default::default() },
    );
    std::fs::write(pki.path("clients.crl"), pki.ca.crl(&[revoked], 1).unwrap()).unwrap();

    let (backend, addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "mtls");
    let config = format!(
        r#"
[[terminate.listener]]
name = "required"
listen = "127.0.0.1:0"
  [terminate.listener.client_auth]
  mode = "required"
  ca = "ca.pem"
  crl = ["clients.crl"]
  allow_cn = ["revoked-alice"]
  allow_uri = ["spiffe://test/ns/prod/*"]
  [[terminate.listener.certificate]]
  cert = "server.pem"
  key = "server.key"
  [[terminate.listener.route]]
  backends = ["{addr}"]

[[terminate.listener]]
name = "optional"
listen = "127.0.0.1:0"
  [terminate.listener.client_auth]
  mode = "optional"
  ca = "ca.pem"
  [[terminate.listener.certificate]]
  cert = "server.pem"
  key = "server.key"
  [[terminate.listener.route]]
  backends = ["{addr}"]
"#
    );
    std::fs::write(pki.path("tlsgate.toml"), config).unwrap();
    let gate = Tlsgate::start(BIN, &["terminate", "--config", pki.path("tlsgate.toml").to_str().unwrap()]);
    let required = gate.listening(Some("required")).port();
    let optional = gate.listening(Some("optional")).port();
    Setup { pki, gate, required, optional, _backend: backend }
}

/// curl to `port` presenting client certificate `stem` (or none); body, or curl's complaint.
fn get(pki: &Pki, port: u16, stem: Option<&str>, tls: &str) -> Result<String, String> {
    let url = format!("https://localhost:{port}/");
    let cert = stem.map(|st| (pki.path(&format!("{st}.pem")), pki.path(&format!("{st}.key"))));
    let mut args = vec!["--cacert", pki.ca(), tls];
    let (c, k);
    if let Some((cert, key)) = &cert {
        (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
        args.extend_from_slice(&["--cert", c, "--key", k]);
    }
    args.push(&url);
    let out = curl(&args);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(describe(&out))
    }
}

#[test]
fn good_client_certificate_passes_and_is_logged() {
    let s = setup();
    for tls in ["--tlsv1.3", "--tlsv1.2"] {
        assert_eq!(get(&s.pki, s.required, Some("alice"), tls).unwrap(), "hello from mtls\n");
        s.gate.proc.wait_for(
            &[
                "listener=required",
                "handshake done",
                "client_cert=CN=alice,DNS:alice.clients.test,URI:spiffe://test/ns/prod/alice",
            ],
            Duration::from_secs(10),
        );
    }
}

#[test]
fn bad_client_certificates_get_the_matching_alert() {
    let s = setup();
    let cases = [
        (None, "certificate required", "client sent no certificate, and one is required"),
        (Some("expired"), "certificate expired", "client certificate expired on"),
        (Some("stranger"), "unknown ca", "client certificate not issued by a trusted CA"),
        (Some("revoked"), "certificate revoked", "client certificate revoked"),
        (Some("mallory"), "access denied", "client certificate refused by tlsgate's policy"),
    ];
    for (stem, alert, logged) in cases {
        let err = get(&s.pki, s.required, stem, "--tlsv1.3").unwrap_err();
        assert!(err.contains(alert), "{stem:?}: expected alert {alert:?}: {err}");
        s.gate.proc.wait_for(
            &["listener=required", "side=client", "handshake failed", logged],
            Duration::from_secs(10),
        );
    }
    s.gate
        .proc
        .wait_logged(&["client certificate refused by allow-list", "CN=mallory"], Duration::from_secs(10));
    // TLS 1.2 reports the same refusals.
    let err = get(&s.pki, s.required, Some("revoked"), "--tlsv1.2").unwrap_err();
    assert!(err.contains("certificate revoked"), "{err}");
}

#[test]
fn optional_mode_admits_clients_without_a_certificate_but_checks_presented_ones() {
    let s = setup();
    assert_eq!(get(&s.pki, s.optional, None, "--tlsv1.3").unwrap(), "hello from mtls\n");
    assert_eq!(get(&s.pki, s.optional, Some("alice"), "--tlsv1.3").unwrap(), "hello from mtls\n");
    s.gate.proc.wait_logged(&["listener=optional", "client_cert=CN=alice"], Duration::from_secs(10));
    let err = get(&s.pki, s.optional, Some("stranger"), "--tlsv1.3").unwrap_err();
    assert!(err.contains("unknown ca"), "{err}");
}

/// The mTLS flags alone (`--client-ca`, `--crl`, `--allow-dns`, `--allow-uri`), and an IP SAN
/// allow-list entry through the config.
#[test]
fn mtls_flags_and_ip_san_allow_list() {
    let pki = Pki::new();
    let (cert, key) = pki.server("server", &["localhost"]);
    let ip: std::net::IpAddr = "10.9.8.7".parse().unwrap();
    let specs = [
        ("dns", ClientSpec { common_name: "d", dns: &["svc.clients.test"], ..Default::default() }),
        ("uri", ClientSpec { common_name: "u", uri: &["spiffe://test/ns/prod/u"], ..Default::default() }),
        ("ip", ClientSpec { common_name: "i", ip: std::slice::from_ref(&ip), ..Default::default() }),
        ("other", ClientSpec { common_name: "o", dns: &["other.test"], ..Default::default() }),
        ("gone", ClientSpec { common_name: "g", dns: &["gone.clients.test"], ..Default::default() }),
    ];
    let mut gone = 0;
    for (stem, spec) in &specs {
        let serial = client(&pki, &pki.ca, stem, spec.clone());
        if *stem == "gone" {
            gone = serial;
        }
    }
    std::fs::write(pki.path("clients.crl"), pki.ca.crl(&[gone], 1).unwrap()).unwrap();
    let (_backend, addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "mtls");
    let crl = pki.path("clients.crl");
    let extra = [
        "--client-ca",
        pki.ca(),
        "--crl",
        crl.to_str().unwrap(),
        "--allow-dns",
        "*.clients.test",
        "--allow-uri",
        "spiffe://test/ns/prod/*",
    ];
    let (_gate, listen) = Tlsgate::terminate(BIN, &[], (&cert, &key), &addr, &extra);
    let port = listen.port();
    assert!(get(&pki, port, Some("dns"), "--tlsv1.3").is_ok());
    assert!(get(&pki, port, Some("uri"), "--tlsv1.3").is_ok());
    assert!(get(&pki, port, Some("ip"), "--tlsv1.3").unwrap_err().contains("access denied"));
    assert!(get(&pki, port, Some("other"), "--tlsv1.3").unwrap_err().contains("access denied"));
    assert!(get(&pki, port, Some("gone"), "--tlsv1.3").unwrap_err().contains("certificate revoked"));

    // IP SANs are allowed through the config's allow_ip.
    let config = format!(
        "[[terminate.listener]]\nname = \"ip\"\nlisten = \"127.0.0.1:0\"\n\
         [terminate.listener.client_auth]\nmode = \"required\"\nca = \"ca.pem\"\nallow_ip = [\"{ip}\"]\n\
         [[terminate.listener.certificate]]\ncert = \"server.pem\"\nkey = \"server.key\"\ndefault = true\n\
         [[terminate.listener.route]]\nbackends = [\"{addr}\"]\n"
    );
    std::fs::write(pki.path("ip.toml"), config).unwrap();
    let by_ip = Tlsgate::start(BIN, &["terminate", "--config", pki.path("ip.toml").to_str().unwrap()]);
    let port = by_ip.listening(Some("ip")).port();
    assert_eq!(get(&pki, port, Some("ip"), "--tlsv1.3").unwrap(), "hello from mtls\n");
    by_ip.proc.wait_for(&["handshake done", "client_cert=CN=i,IP:10.9.8.7"], Duration::from_secs(10));
    assert!(get(&pki, port, Some("dns"), "--tlsv1.3").unwrap_err().contains("access denied"));
}

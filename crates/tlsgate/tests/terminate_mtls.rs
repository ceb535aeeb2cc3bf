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
        expired: false,
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
fn get(s: &Setup, port: u16, stem: Option<&str>, tls: &str) -> Result<String, String> {
    let url = format!("https://localhost:{port}/");
    let cert = stem.map(|st| (s.pki.path(&format!("{st}.pem")), s.pki.path(&format!("{st}.key"))));
    let mut args = vec!["--cacert", s.pki.ca(), tls];
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
        assert_eq!(get(&s, s.required, Some("alice"), tls).unwrap(), "hello from mtls\n");
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
        (None, "certificate required", "peer sent no certificates"),
        (Some("expired"), "certificate expired", "expired"),
        (Some("stranger"), "unknown ca", "UnknownIssuer"),
        (Some("revoked"), "certificate revoked", "Revoked"),
        (Some("mallory"), "access denied", "ApplicationVerificationFailure"),
    ];
    for (stem, alert, logged) in cases {
        let err = get(&s, s.required, stem, "--tlsv1.3").unwrap_err();
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
    let err = get(&s, s.required, Some("revoked"), "--tlsv1.2").unwrap_err();
    assert!(err.contains("certificate revoked"), "{err}");
}

#[test]
fn optional_mode_admits_clients_without_a_certificate_but_checks_presented_ones() {
    let s = setup();
    assert_eq!(get(&s, s.optional, None, "--tlsv1.3").unwrap(), "hello from mtls\n");
    assert_eq!(get(&s, s.optional, Some("alice"), "--tlsv1.3").unwrap(), "hello from mtls\n");
    s.gate.proc.wait_logged(&["listener=optional", "client_cert=CN=alice"], Duration::from_secs(10));
    let err = get(&s, s.optional, Some("stranger"), "--tlsv1.3").unwrap_err();
    assert!(err.contains("unknown ca"), "{err}");
}

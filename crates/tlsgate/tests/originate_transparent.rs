//! Transparent policy on real Linux TCP: two network namespaces, iptables REDIRECT on the client
//! side. An unmodified `curl http://10.201.0.2:80` arrives at the far host as TLS; a passthrough
//! destination arrives as plaintext; a denied one is refused; TLS traffic is routed by its SNI.
//! Decisions are logged and counted. Needs root and iptables.

use std::time::Duration;

use tlsgate_testkit::netns::Netns;
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::Tlsgate;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const FAR: &str = "10.201.0.2";

fn start_in(ns: &Netns, args: &[&str]) -> Tlsgate {
    Tlsgate::start_command(ns.command(BIN, args))
}

fn backend_in(ns: &Netns, listen: &str, name: &str) -> Tlsgate {
    let b = start_in(ns, &["backend", "--listen", listen, "--name", name]);
    b.proc.wait_for(&["backend listening"], Duration::from_secs(30));
    b
}

fn curl_in(ns: &Netns, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["-sS", "--max-time", "10"];
    all.extend_from_slice(args);
    let out = ns.run("curl", &all);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn redirected_connections_follow_the_policy() {
    let client = Netns::new("cli");
    let far = Netns::new("far");
    client.link("10.201.0.1/24", &far, &format!("{FAR}/24"));

    let pki = Pki::new();
    let (cert, key) = pki.server("far", &[FAR, "pass.test", "other.test"]);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());

    // The far host: a TLS server on :80 that logs every handshake, plaintext on :8080 and :9090,
    // and a TLS service on :443 for the SNI rules.
    let _tls_backend = backend_in(&far, "127.0.0.1:9000", "far over TLS");
    let tls80 = start_in(
        &far,
        &[
            "terminate",
            "--listen",
            &format!("{FAR}:80"),
            "--cert",
            cert,
            "--key",
            key,
            "--backend",
            "127.0.0.1:9000",
        ],
    );
    tls80.listening(None);
    let tls443 = start_in(
        &far,
        &[
            "terminate",
            "--listen",
            &format!("{FAR}:443"),
            "--cert",
            cert,
            "--key",
            key,
            "--backend",
            "127.0.0.1:9000",
        ],
    );
    tls443.listening(None);
    let _plain = backend_in(&far, &format!("{FAR}:8080"), "far in plaintext");
    let _denied = backend_in(&far, &format!("{FAR}:9090"), "never reached");

    // The client host: tlsgate on the REDIRECT port, its own connections marked to skip the rule.
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:9901"

[[originate.transparent]]
name = "mesh"
listen = "127.0.0.1:15001"
ca = "{ca}"
outbound_mark = 1337

  [[originate.transparent.rule]]
  cidr = ["{FAR}/32"]
  ports = ["80"]
  action = "originate"

  [[originate.transparent.rule]]
  ports = ["8000-8099"]
  action = "passthrough"

  [[originate.transparent.rule]]
  ports = ["443"]
  sni = ["pass.test"]
  action = "passthrough"

  [[originate.transparent.rule]]
  ports = ["443", "9090"]
  action = "deny"
"#,
        ca = pki.ca()
    );
    std::fs::write(pki.path("client.toml"), config).unwrap();
    client.must(
        "iptables",
        &[
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            "10.201.0.0/24",
            "-m",
            "mark",
            "!",
            "--mark",
            "1337",
            "-j",
            "REDIRECT",
            "--to-ports",
            "15001",
        ],
    );
    let gate = start_in(&client, &["originate", "--config", pki.path("client.toml").to_str().unwrap()]);
    gate.proc.wait_logged(&["transparent listening", "listener=mesh"], Duration::from_secs(30));
    gate.proc.wait_logged(&["admin listening"], Duration::from_secs(30));

    // 1. Plain HTTP to :80 leaves as TLS: the far side's TLS server logs the handshake.
    assert_eq!(curl_in(&client, &[&format!("http://{FAR}:80/")]).unwrap(), "hello from far over TLS\n");
    gate.proc.wait_for(
        &["policy decision", &format!("dst={FAR}:80"), "rule=0", "action=originate"],
        Duration::from_secs(10),
    );
    let handshake = tls80.proc.wait_for(&["handshake done", "version=TLSv1_3"], Duration::from_secs(10));
    assert!(
        handshake.contains("client=10.201.0.1:"),
        "the far side did not see the client host: {handshake}"
    );

    // 2. Passthrough: plaintext arrives as plaintext.
    assert_eq!(curl_in(&client, &[&format!("http://{FAR}:8080/")]).unwrap(), "hello from far in plaintext\n");
    gate.proc.wait_for(&["policy decision", "rule=1", "action=passthrough"], Duration::from_secs(10));

    // 3. Deny: refused.
    assert!(curl_in(&client, &[&format!("http://{FAR}:9090/")]).is_err(), "denied destination answered");
    gate.proc.wait_for(
        &["policy decision", &format!("dst={FAR}:9090"), "rule=3", "action=deny"],
        Duration::from_secs(10),
    );

    // 4. TLS from the client itself, routed by SNI: end to end for pass.test, denied otherwise.
    let resolve = |name: &str| format!("{name}:443:{FAR}");
    let ok =
        curl_in(&client, &["--cacert", pki.ca(), "--resolve", &resolve("pass.test"), "https://pass.test/"]);
    assert_eq!(ok.unwrap(), "hello from far over TLS\n");
    gate.proc.wait_for(
        &["policy decision", "sni=pass.test", "rule=2", "action=passthrough"],
        Duration::from_secs(10),
    );
    tls443.proc.wait_for(&["handshake done", "sni=pass.test"], Duration::from_secs(10));
    assert!(curl_in(
        &client,
        &["--cacert", pki.ca(), "--resolve", &resolve("other.test"), "https://other.test/"]
    )
    .is_err());
    gate.proc
        .wait_for(&["policy decision", "sni=other.test", "rule=3", "action=deny"], Duration::from_secs(10));
    assert!(
        tls443.proc.lines_with(&["sni=other.test"]).is_empty(),
        "a denied TLS client reached the far side"
    );

    // Counted.
    let metrics = curl_in(&client, &["http://127.0.0.1:9901/metrics"]).unwrap();
    for want in [
        "tlsgate_transparent_decisions_total{listener=\"mesh\",action=\"originate\",rule=\"0\"} 1",
        "tlsgate_transparent_decisions_total{listener=\"mesh\",action=\"passthrough\",rule=\"1\"} 1",
        "tlsgate_transparent_decisions_total{listener=\"mesh\",action=\"passthrough\",rule=\"2\"} 1",
        "tlsgate_transparent_decisions_total{listener=\"mesh\",action=\"deny\",rule=\"3\"} 2",
    ] {
        assert!(metrics.contains(want), "{want} missing:\n{metrics}");
    }
}

//! Keys in a PKCS#11 token (SoftHSM2): curl and `openssl s_client` complete handshakes signed by
//! the token with an RSA key (RSA-PSS under TLS 1.3, TLS 1.2 too) and ECDSA P-256 and P-384
//! keys, the keys' PEM files deleted after import; a wrong PIN, a missing object and a PIN file others can read
//! are clear errors.

use std::path::Path;
use std::process::Command;

use tlsgate_testkit::clients::{curl, describe, s_client};
use tlsgate_testkit::process::Tlsgate;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn run(conf: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).env("SOFTHSM2_CONF", conf).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", describe(&out));
}

/// A self-signed certificate for `name` and its key imported into the token as `label`; the
/// key's file is gone afterwards.
fn token_key(dir: &Path, conf: &Path, name: &str, label: &str, id: &str, newkey: &[&str]) {
    let (key, cert) = (dir.join(format!("{label}.key")), dir.join(format!("{name}.pem")));
    let subject = format!("/CN={name}");
    let san = format!("subjectAltName=DNS:{name}");
    let mut args = vec!["req", "-x509", "-nodes", "-days", "2", "-subj", &subject, "-addext", &san];
    args.extend_from_slice(newkey);
    args.extend_from_slice(&["-keyout", key.to_str().unwrap(), "-out", cert.to_str().unwrap()]);
    run(conf, "openssl", &args);
    run(
        conf,
        "softhsm2-util",
        &[
            "--import",
            key.to_str().unwrap(),
            "--token",
            "tlsgate",
            "--label",
            label,
            "--id",
            id,
            "--pin",
            "5678",
        ],
    );
    std::fs::remove_file(&key).unwrap();
}

fn uri(object: &str, pin: &Path) -> String {
    format!(
        "pkcs11:token=tlsgate;object={object};type=private?module-path={MODULE}&pin-source=file:{}",
        pin.display()
    )
}

/// One listener serving the token's certificates: `keys` pairs each certificate's name with its
/// key's URI, the first the default.
fn config(dir: &Path, keys: &[(&str, String)], backend: &str) -> String {
    let d = dir.display();
    let mut toml =
        "[terminate]\n[[terminate.listener]]\nname = \"hsm\"\nlisten = \"127.0.0.1:0\"\n".to_string();
    for (i, (name, key)) in keys.iter().enumerate() {
        let default = if i == 0 { "default = true\n" } else { "" };
        toml += &format!(
            "[[terminate.listener.certificate]]\ncert = \"{d}/{name}.pem\"\nkey = \"{key}\"\n{default}"
        );
    }
    toml + &format!("[[terminate.listener.route]]\nbackends = [\"{backend}\"]\n")
}

/// The three keys of the token, through the PIN file `pin` (the EC one's object replaceable).
fn token_keys(pin: &Path, ec_object: &str) -> Vec<(&'static str, String)> {
    vec![
        ("rsa.test", uri("web-rsa", pin)),
        ("ec.test", uri(ec_object, pin)),
        ("p256.test", uri("web-p256", pin)),
    ]
}

fn check(conf: &Path, toml: &Path) -> String {
    let out = Command::new(BIN)
        .args(["check", "--config", toml.to_str().unwrap()])
        .env("SOFTHSM2_CONF", conf)
        .output()
        .unwrap();
    assert!(!out.status.success(), "check passed: {}", describe(&out));
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn handshakes_sign_through_softhsm_and_mistakes_are_clear() {
    let dir = tempfile::Builder::new().prefix("tlsgate-hk-").tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("tokens")).unwrap();
    let conf = d.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n",
            d.display()
        ),
    )
    .unwrap();
    run(
        &conf,
        "softhsm2-util",
        &["--init-token", "--free", "--label", "tlsgate", "--so-pin", "1234", "--pin", "5678"],
    );
    token_key(d, &conf, "rsa.test", "web-rsa", "01", &["-newkey", "rsa:2048"]);
    token_key(d, &conf, "ec.test", "web-ec", "02", &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"]);
    token_key(
        d,
        &conf,
        "p256.test",
        "web-p256",
        "03",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let pin = d.join("pin");
    std::fs::write(&pin, "5678\n").unwrap();
    std::fs::set_permissions(&pin, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let pem_keys: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "key"))
        .collect();
    assert!(pem_keys.is_empty(), "no key on disk");

    let (_backend, backend) = Tlsgate::backend(BIN, "127.0.0.1:0", "hsm");
    let toml = d.join("tlsgate.toml");
    std::fs::write(&toml, config(d, &token_keys(&pin, "web-ec"), &backend)).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["terminate", "--config", toml.to_str().unwrap()]).env("SOFTHSM2_CONF", &conf);
    let gate = Tlsgate::start_command(cmd);
    let port = gate.listening(Some("hsm")).port();

    for name in ["rsa.test", "ec.test", "p256.test"] {
        let ca = d.join(format!("{name}.pem"));
        let resolve = format!("{name}:{port}:127.0.0.1");
        let out = curl(&[
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("https://{name}:{port}/"),
        ]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{name}: {}", describe(&out));
        for version in ["-tls1_3", "-tls1_2"] {
            let out = s_client(
                &[
                    "-connect",
                    &format!("127.0.0.1:{port}"),
                    "-servername",
                    name,
                    version,
                    "-CAfile",
                    ca.to_str().unwrap(),
                    "-verify_return_error",
                ],
                b"",
            );
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("Verify return code: 0 (ok)"), "{name} {version}: {}", describe(&out));
            if name == "rsa.test" && version == "-tls1_3" {
                assert!(text.contains("RSA-PSS"), "TLS 1.3 signs with RSA-PSS: {text}");
            }
            // Each ECDSA key signs with its own curve's hash (TLS 1.3 ties them: RFC 8446 4.2.3).
            let digest = match name {
                "ec.test" => Some("Peer signing digest: SHA384"),
                "p256.test" => Some("Peer signing digest: SHA256"),
                _ => None,
            };
            if let (Some(digest), "-tls1_3") = (digest, version) {
                assert!(
                    text.contains("Peer signature type: ECDSA") && text.contains(digest),
                    "{name}: {text}"
                );
            }
        }
    }
    drop(gate);

    let wrong = d.join("wrong-pin");
    std::fs::write(&wrong, "0000\n").unwrap();
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::write(
        &toml,
        config(d, &[("rsa.test", uri("web-rsa", &wrong)), ("ec.test", uri("web-ec", &pin))], &backend),
    )
    .unwrap();
    let said = check(&conf, &toml);
    assert!(said.contains("login to token \"tlsgate\" refused") && said.contains("PinIncorrect"), "{said}");
    assert!(!said.contains("0000"), "the PIN is never logged: {said}");

    std::fs::write(&toml, config(d, &token_keys(&pin, "nope"), &backend)).unwrap();
    let said = check(&conf, &toml);
    assert!(said.contains("no private key object=\"nope\" on token \"tlsgate\""), "{said}");

    std::fs::set_permissions(&pin, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    std::fs::write(&toml, config(d, &token_keys(&pin, "web-ec"), &backend)).unwrap();
    let said = check(&conf, &toml);
    assert!(said.contains("PIN file") && said.contains("accessible to group or others"), "{said}");
}

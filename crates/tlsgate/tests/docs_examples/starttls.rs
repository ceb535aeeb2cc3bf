//! docs/starttls.md: the server side (SMTP clients, a plaintext mail server) and the client side
//! (a plaintext client, a PostgreSQL-style STARTTLS upstream), in TOML and by flags.

use tlsgate_testkit::docs::Block;
use tlsgate_testkit::process::{Proc, Tlsgate};

use crate::scene::{Scene, WAIT};
use crate::terminate::support;

/// The peers of the example: the plaintext mail server on 127.0.0.1:10587, and db.example
/// (127.0.0.2:5432) answering an SSLRequest, then TLS, in front of the built-in backend.
struct Peers {
    s: Scene,
    mail: Proc,
    _db: Tlsgate,
    _backend: Tlsgate,
}

fn peers(tag: &str) -> Peers {
    let s = Scene::new(tag, &[("db.example", "127.0.0.2")]);
    s.server_cert("mx", &["mx.example.com"]);
    s.server_cert("db", &["db.example"]);
    let mail = s.spawn("mail server", "python3", &[&support("starttls_server.py"), "plain", "smtp", "10587"]);
    mail.wait_for(&["listening 10587"], WAIT);
    let backend = s.backend("127.0.0.1:8080", "db");
    let db = s.start(
        "tlsgate terminate --listen 127.0.0.2:5432 --cert db.pem --key db.key \
         --backend 127.0.0.1:8080 --starttls postgres",
    );
    db.listening(None);
    Peers { s, mail, _db: db, _backend: backend }
}

/// `openssl s_client -starttls smtp` to 127.0.0.1:587, `servername` as SNI (`None`: no SNI).
fn smtp_client(s: &Scene, servername: Option<&str>) -> std::process::Output {
    let sni = match servername {
        Some(name) => format!("-servername {name}"),
        None => "-noservername".to_string(),
    };
    s.run(&format!(
        "printf 'EHLO client.test\\r\\nQUIT\\r\\n' | openssl s_client -quiet -starttls smtp \
         -connect 127.0.0.1:587 {sni} -CAfile ca.pem -verify_return_error -verify_hostname mx.example.com"
    ))
}

/// Both sides work: a client without SNI reaches the mail server, and a plaintext client
/// reaches the PostgreSQL-style upstream through the client side.
fn check(p: &Peers, terminate: &Tlsgate, originate: &Tlsgate) {
    terminate.listening(None);
    originate.proc.wait_logged(&["originate listening"], WAIT);
    let out = smtp_client(&p.s, None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("backend got: EHLO client.test"),
        "client without SNI: {}",
        tlsgate_testkit::clients::describe(&out)
    );
    p.mail.wait_logged(&["got QUIT"], WAIT);
    p.s.expect_hello("http://127.0.0.1:5432/", "db");
}

pub fn toml(block: &Block, _: &[Block]) {
    let p = peers("doc-stls");
    p.s.file("starttls.toml", &block.text);
    let terminate = p.s.start("tlsgate terminate --config starttls.toml");
    let originate = p.s.start("tlsgate originate --config starttls.toml");
    check(&p, &terminate, &originate);
}

pub fn flags(block: &Block, _: &[Block]) {
    let commands = block.commands();
    assert_eq!(commands.len(), 2, "{commands:?}");
    let p = peers("doc-stlf");
    let terminate = p.s.start(&commands[0]);
    let originate = p.s.start(&commands[1]);
    check(&p, &terminate, &originate);
}

/// The example without `default = true`: clients with no SNI or an unknown one are refused,
/// and the log names the setting that would serve them.
pub fn without_default(block: &Block) {
    let text: String =
        block.text.lines().filter(|l| !l.starts_with("default = true")).map(|l| format!("{l}\n")).collect();
    assert_ne!(text, block.text, "the example sets `default = true`");
    let p = peers("doc-stln");
    p.s.file("starttls.toml", &text);
    let terminate = p.s.start("tlsgate terminate --config starttls.toml");
    terminate.listening(Some("smtp"));
    let fix = "set `default = true` on one of its [[terminate.listener.certificate]]";

    assert!(!smtp_client(&p.s, None).status.success(), "no SNI, no default: refused");
    let line = terminate.proc.wait_logged(&["client sent no SNI", "listener smtp"], WAIT);
    assert!(line.contains(fix), "{line}");

    assert!(!smtp_client(&p.s, Some("other.example")).status.success(), "unknown SNI: refused");
    let line =
        terminate.proc.wait_logged(&["other.example, which no certificate serves", "listener smtp"], WAIT);
    assert!(line.contains(fix), "{line}");

    let out = smtp_client(&p.s, Some("mx.example.com"));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("backend got: EHLO"),
        "the certificate's own name is served"
    );
}

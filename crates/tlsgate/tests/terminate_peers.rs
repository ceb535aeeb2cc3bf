//! tlsgate terminate between real clients (curl, openssl s_client) and real backends (nginx, the
//! built-in backend), TLS 1.3 and TLS 1.2, with 64 MiB bodies both ways checked by SHA-256.

use std::time::Duration;

use tlsgate_testkit::clients::{curl, describe, s_client};
use tlsgate_testkit::data::{random_file, sha256, sha256_file};
use tlsgate_testkit::nginx::Nginx;
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::{Proc, Tlsgate};

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const BIG: usize = 64 << 20;

/// (curl flags, the version tlsgate must log) for TLS 1.3 and for TLS 1.2 forced.
const VERSIONS: [(&[&str], &str); 2] =
    [(&["--tlsv1.3"], "TLSv1_3"), (&["--tlsv1.2", "--tls-max", "1.2"], "TLSv1_2")];

fn builtin_backend() -> (Tlsgate, String) {
    Tlsgate::backend(BIN, "127.0.0.1:0", "builtin")
}

fn terminator(pki: &Pki, backend: &str) -> (Tlsgate, u16) {
    terminator_with(pki, backend, &[])
}

fn terminator_with(pki: &Pki, backend: &str, global: &[&str]) -> (Tlsgate, u16) {
    let (cert, key) = pki.server("server", &["localhost"]);
    let (gate, addr) = Tlsgate::terminate(BIN, global, (&cert, &key), backend, &[]);
    (gate, addr.port())
}

#[test]
fn curl_echoes_64mib_through_builtin_backend_tls13_and_tls12() {
    let pki = Pki::new();
    let (_backend, backend_addr) = builtin_backend();
    let (gate, port) = terminator(&pki, &backend_addr);
    let body = pki.path("body.bin");
    let want = random_file(&body, BIG);
    let url = format!("https://localhost:{port}/echo");
    for (flags, version) in VERSIONS {
        let got = pki.path("got.bin");
        let mut args = vec!["--cacert", pki.ca(), "--data-binary"];
        let at_body = format!("@{}", body.display());
        args.push(&at_body);
        args.extend_from_slice(flags);
        args.extend_from_slice(&[
            "-o",
            got.to_str().unwrap(),
            "-H",
            "Content-Type: application/octet-stream",
            &url,
        ]);
        let out = curl(&args);
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(sha256_file(&got), want, "echoed body differs ({version})");
        // Each connection's log line comes once it closed; the lines are consumed in order.
        let closed = gate.proc.wait_for(&["connection closed"], Duration::from_secs(30));
        let up: u64 = Proc::field(&closed, "up").unwrap().parse().unwrap();
        assert!(up > BIG as u64, "{closed}");
        assert!(
            !gate.proc.lines_with(&["handshake done", version]).is_empty(),
            "no {version} handshake logged"
        );
    }
}

#[test]
fn curl_puts_and_gets_64mib_through_nginx_tls13_and_tls12() {
    let pki = Pki::new();
    let root = pki.path("www");
    std::fs::create_dir(&root).unwrap();
    let nginx = Nginx::start(&root);
    let (gate, port) = terminator(&pki, &nginx.addr.to_string());
    let body = pki.path("body.bin");
    let want = random_file(&body, BIG);
    for (i, (flags, version)) in VERSIONS.into_iter().enumerate() {
        // Up: nginx stores the PUT body; its file must be byte-identical.
        let url = format!("https://localhost:{port}/up{i}.bin");
        let mut args = vec!["--cacert", pki.ca(), "-f", "-T", body.to_str().unwrap()];
        args.extend_from_slice(flags);
        args.push(&url);
        let out = curl(&args);
        assert!(out.status.success(), "PUT {version}: {}", describe(&out));
        assert_eq!(sha256_file(&root.join(format!("up{i}.bin"))), want, "uploaded file differs ({version})");

        // Down: the same file fetched back through tlsgate.
        let got = pki.path("got.bin");
        let mut args = vec!["--cacert", pki.ca(), "-f", "-o", got.to_str().unwrap()];
        args.extend_from_slice(flags);
        args.push(&url);
        let out = curl(&args);
        assert!(out.status.success(), "GET {version}: {}", describe(&out));
        assert_eq!(sha256_file(&got), want, "downloaded file differs ({version})");
        assert!(
            !gate.proc.lines_with(&["handshake done", version]).is_empty(),
            "no {version} handshake logged"
        );
    }
    assert!(
        nginx.access_log_lines(4).contains("\"PUT /up1.bin HTTP/1.1\" 201"),
        "nginx log: {}",
        nginx.access_log()
    );
}

/// One HTTP/1.1 exchange over `openssl s_client` (verifying the chain and name): `request` is
/// written, the whole answer read until the server closes; returns (status line + headers, body).
fn s_client_http(pki: &Pki, port: u16, flag: &str, request: &[u8]) -> (String, Vec<u8>) {
    let connect = format!("127.0.0.1:{port}");
    let args = [
        "-connect",
        &connect,
        "-servername",
        "localhost",
        "-CAfile",
        pki.ca(),
        "-verify_return_error",
        "-quiet",
        "-ign_eof",
        flag,
    ];
    let out = s_client(&args, request);
    let stdout = out.stdout.clone();
    let Some(split) = stdout.windows(4).position(|w| w == b"\r\n\r\n") else {
        panic!("no HTTP answer: {}", describe(&out));
    };
    (String::from_utf8_lossy(&stdout[..split]).into_owned(), stdout[split + 4..].to_vec())
}

fn request(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

const S_CLIENT_VERSIONS: [(&str, &str); 2] = [("-tls1_3", "TLSv1_3"), ("-tls1_2", "TLSv1_2")];

/// `openssl s_client` sends a 64 MiB POST to the built-in backend's /echo and reads it all back.
#[test]
fn openssl_s_client_echoes_64mib_through_builtin_backend_tls13_and_tls12() {
    let pki = Pki::new();
    let (_backend, backend_addr) = builtin_backend();
    // On one thread (`--workers 1`), as the benchmarks run it.
    let (gate, port) = terminator_with(&pki, &backend_addr, &["--workers", "1"]);
    let threads = std::fs::read_dir(format!("/proc/{}/task", gate.proc.pid())).unwrap().count();
    assert_eq!(threads, 1, "--workers 1 runs one thread");
    let path = pki.path("body.bin");
    random_file(&path, BIG);
    let payload = std::fs::read(&path).unwrap();
    let echo = request("POST", "/echo", &payload);
    for (flag, version) in S_CLIENT_VERSIONS {
        let (head, body) = s_client_http(&pki, port, flag, &echo);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(sha256(&body), sha256(&payload), "s_client {version}: echoed body differs");
        assert!(
            !gate.proc.lines_with(&["handshake done", version]).is_empty(),
            "no {version} handshake logged"
        );
    }
}

/// `openssl s_client` PUTs 64 MiB to nginx through tlsgate and GETs it back.
#[test]
fn openssl_s_client_puts_and_gets_64mib_through_nginx_tls13_and_tls12() {
    let pki = Pki::new();
    let root = pki.path("www");
    std::fs::create_dir(&root).unwrap();
    let nginx = Nginx::start(&root);
    let (gate, port) = terminator(&pki, &nginx.addr.to_string());
    let path = pki.path("body.bin");
    let want = random_file(&path, BIG);
    let payload = std::fs::read(&path).unwrap();
    for (i, (flag, version)) in S_CLIENT_VERSIONS.into_iter().enumerate() {
        let target = format!("/s{i}.bin");
        let (head, _) = s_client_http(&pki, port, flag, &request("PUT", &target, &payload));
        assert!(head.starts_with("HTTP/1.1 201"), "PUT {version}: {head}");
        assert_eq!(sha256_file(&root.join(&target[1..])), want, "uploaded file differs ({version})");
        let (head, body) = s_client_http(&pki, port, flag, &request("GET", &target, b""));
        assert!(head.starts_with("HTTP/1.1 200"), "GET {version}: {head}");
        assert_eq!(sha256(&body), want, "downloaded body differs ({version})");
        assert!(
            !gate.proc.lines_with(&["handshake done", version]).is_empty(),
            "no {version} handshake logged"
        );
    }
}

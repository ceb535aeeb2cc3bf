//! Bad input against a running terminator: garbage instead of a ClientHello, a ClientHello
//! dribbled a byte a second, a backend that is down, a backend that resets mid-response. Each ends
//! with a clear log line and that connection closed, while a healthy client running across all of
//! them completes byte-identical, and tlsgate never panics.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rand::RngCore;
use tlsgate_testkit::clients::{curl, describe};
use tlsgate_testkit::data::{random_file, sha256_file};
use tlsgate_testkit::hello::client_hello;
use tlsgate_testkit::net::{dead_port, reset_on_close};
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::{Proc, Tlsgate};

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const HEALTHY: usize = 24 << 20;

/// A backend that answers every request with the head of a 1 MiB response, then resets.
fn resetting_backend() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n");
            let _ = stream.write_all(&[7u8; 65536]);
            // Linger 0: close sends RST instead of FIN.
            reset_on_close(&stream);
        }
    });
    addr
}

#[test]
fn bad_input_closes_only_the_offending_connection() {
    let pki = Pki::new();
    pki.server("server", &["localhost", "down.test", "reset.test"]);
    let (_backend, backend_addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "backend");
    let config = format!(
        r#"
[[terminate.listener]]
name = "bad"
listen = "127.0.0.1:0"
handshake_timeout = "2s"
  [[terminate.listener.certificate]]
  cert = "server.pem"
  key = "server.key"
  default = true
  [[terminate.listener.route]]
  sni = ["down.test"]
  backends = ["127.0.0.1:{dead}"]
  connect_timeout = "1s"
  [[terminate.listener.route]]
  sni = ["reset.test"]
  backends = ["{reset}"]
  [[terminate.listener.route]]
  backends = ["{backend_addr}"]
"#,
        dead = dead_port(),
        reset = resetting_backend(),
    );
    let path = pki.path("tlsgate.toml");
    std::fs::write(&path, config).unwrap();
    let mut gate = Tlsgate::start(BIN, &["terminate", "--config", path.to_str().unwrap()]);
    let addr = gate.listening(Some("bad"));
    let port = addr.port();

    // The healthy client: a rate-limited 24 MiB echo that spans every bad input below.
    let body = pki.path("healthy.bin");
    let want = random_file(&body, HEALTHY);
    let got = pki.path("healthy.out");
    let healthy = {
        let (ca, body, got) = (pki.ca().to_string(), body.clone(), got.clone());
        std::thread::spawn(move || {
            let data = format!("@{}", body.display());
            let url = format!("https://localhost:{port}/echo");
            curl(&[
                "--cacert",
                &ca,
                "--limit-rate",
                "4M",
                "--data-binary",
                &data,
                "-o",
                got.to_str().unwrap(),
                &url,
            ])
        })
    };
    gate.proc.wait_for(&["handshake done", "sni=localhost"], Duration::from_secs(30));

    // 1. Random bytes instead of a ClientHello: an alert back, then the connection closes.
    let mut garbage = vec![0u8; 1024];
    rand::rng().fill_bytes(&mut garbage);
    garbage[0] = 0x42; // not a handshake record, whatever the rest
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&garbage).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert_eq!(answer.first(), Some(&0x15), "expected an alert record, got {answer:?}");
    gate.proc.wait_for(
        &["side=client", "not a valid TLS ClientHello", "connection closed"],
        Duration::from_secs(10),
    );

    // 2. A real ClientHello, one byte a second: closed by the 2 s handshake timeout.
    let hello = client_hello("localhost");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let start = Instant::now();
    let mut sent = 0;
    let closed = loop {
        if sent == hello.len() {
            break false;
        }
        if s.write_all(&hello[sent..sent + 1]).is_err() {
            break true;
        }
        sent += 1;
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => break true,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            _ => {} // still open after a second: dribble the next byte
        }
    };
    let elapsed = start.elapsed();
    assert!(closed, "server kept a dribbling handshake open for {sent} bytes ({elapsed:?})");
    assert!(
        sent < hello.len() && elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(8),
        "closed after {sent} bytes, {elapsed:?}"
    );
    gate.proc.wait_for(&["side=client", "handshake timed out"], Duration::from_secs(10));

    // 3. The route's backend is down: the client is closed, the log names the backend.
    let resolve = format!("down.test:{port}:127.0.0.1");
    let out = curl(&["--cacert", pki.ca(), "--resolve", &resolve, &format!("https://down.test:{port}/")]);
    assert!(!out.status.success(), "{}", describe(&out));
    gate.proc.wait_for(
        &["side=backend", "no backend reachable", "refused", "client connection closed"],
        Duration::from_secs(10),
    );

    // 4. The backend resets mid-response: the client sees a truncated answer.
    let resolve = format!("reset.test:{port}:127.0.0.1");
    let partial = pki.path("partial.out");
    let out = curl(&[
        "--cacert",
        pki.ca(),
        "--resolve",
        &resolve,
        "-o",
        partial.to_str().unwrap(),
        &format!("https://reset.test:{port}/"),
    ]);
    assert!(!out.status.success(), "truncated response reported as success: {}", describe(&out));
    assert!(std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) < 1 << 20);
    gate.proc.wait_for(&["connection aborted", "side=backend", "reset"], Duration::from_secs(10));

    // The healthy client was open through all of it and finished intact.
    let out = healthy.join().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sha256_file(&got), want);
    // Found after every bad input's line: the healthy connection outlived them all.
    let closed = gate
        .proc
        .wait_for(&["connection closed", &format!("backend={backend_addr}")], Duration::from_secs(30));
    let up: usize = Proc::field(&closed, "up").unwrap().parse().unwrap();
    assert!(up > HEALTHY, "{closed}");
    assert!(gate.proc.is_running(), "tlsgate exited:\n{}", gate.proc.log_text());
}

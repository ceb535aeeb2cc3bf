//! tlsgate's own record layer after the handshake, against real peers: a TLS 1.3 KeyUpdate from
//! `openssl s_client` (with and without asking for ours) and data both ways after it; session
//! resumption with `openssl s_client -sess_out/-sess_in`, TLS 1.3 and 1.2; a tampered record, a
//! garbage record, an oversized one and a truncated one each close that connection with the
//! right alert and a log line naming the client, while another connection carries on; records
//! cut at odd offsets and hundreds of records in one segment arrive whole; TLS 1.2
//! renegotiation and TLS 1.2 ChaCha20 are refused; a HelloRetryRequest handshake completes; a
//! backend's last reply and its close reach the client as one segment, the session ticket with
//! them; the ticket held for the first reply still reaches a client that resumes with it, and a
//! client with Nagle's algorithm on gets its first reply without a delayed ACK's 40 ms.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tlsgate_testkit::clients::{describe, s_client};
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::Tlsgate;
use tlsgate_testkit::tls_client::{self, TlsStream};

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const WAIT: Duration = Duration::from_secs(10);

/// A backend that echoes every byte back, one thread per connection.
fn echo_backend() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

fn terminator(pki: &Pki, backend: &str, extra: &[&str]) -> (Tlsgate, SocketAddr) {
    let (cert, key) = pki.server("server", &["localhost"]);
    // tlsgate's own record layer, whatever the kernel has (its offload: tests/ktls-vm).
    let extra = [&["--ktls", "off"], extra].concat();
    Tlsgate::terminate(BIN, &[], (&cert, &key), backend, &extra)
}

/// `openssl s_client` driven line by line: its stdout arrives on a channel.
struct Interactive {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Interactive {
    fn start(args: &[&str]) -> Interactive {
        let mut child = Command::new("openssl")
            .arg("s_client")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl is installed");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Interactive { child, stdin, lines, seen: Vec::new() }
    }

    /// s_client to `connect` verifying against `ca`, one protocol version, every protocol
    /// message printed (`-msg`, inner types of encrypted ones included). Not -quiet: s_client
    /// only takes its `k`/`K`/`R` commands without -ign_eof.
    fn verified(connect: &str, ca: &str, version: &str) -> Interactive {
        Interactive::start(&[
            "-connect",
            connect,
            "-servername",
            "localhost",
            "-CAfile",
            ca,
            "-verify_return_error",
            version,
            "-msg",
        ])
    }

    fn send(&mut self, line: &str) {
        self.stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        self.stdin.flush().unwrap();
    }

    /// Waits for the next stdout line containing `needle`; panics with everything seen on timeout.
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => {
                    panic!("no line with {needle:?} from s_client; it printed:\n{}", self.seen.join("\n"))
                }
            }
        }
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn openssl_key_update_mid_connection_and_data_both_ways_after_it() {
    let pki = Pki::new();
    let (gate, addr) = terminator(&pki, &echo_backend(), &[]);
    let connect = addr.to_string();
    let mut c = Interactive::verified(&connect, pki.ca(), "-tls1_3");
    c.expect("Verify return code: 0 (ok)");
    c.send("line one");
    c.expect("line one");

    // `k`: the client moves its own key on; tlsgate must follow to read what comes next.
    c.send("k");
    c.expect(">>> TLS 1.3, Handshake [length 0005], KeyUpdate");
    c.send("line two");
    c.expect("line two");

    // `K`: the client also asks for ours. tlsgate's KeyUpdate arrives, then data under the new
    // key both ways.
    c.send("K");
    c.expect(">>> TLS 1.3, Handshake [length 0005], KeyUpdate");
    let ours = c.expect("<<< TLS 1.3, Handshake");
    assert!(ours.contains("KeyUpdate"), "expected tlsgate's KeyUpdate, got {ours}");
    c.send("line three");
    c.expect("line three");
    c.send("K");
    c.expect(">>> TLS 1.3, Handshake [length 0005], KeyUpdate");
    c.send("line four");
    let ours = c.expect("<<< TLS 1.3, Handshake");
    assert!(ours.contains("KeyUpdate"), "expected tlsgate's second KeyUpdate, got {ours}");
    c.expect("line four");

    // `Q` closes with close_notify: the connection ends cleanly.
    c.send("Q");
    gate.proc.wait_for(&["connection closed"], WAIT);
    assert!(gate.proc.lines_with(&["connection aborted"]).is_empty(), "{}", gate.proc.log_text());
}

#[test]
fn openssl_resumes_sessions_tls13_and_tls12() {
    let pki = Pki::new();
    let (_backend, backend_addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "builtin");
    let (gate, addr) = terminator(&pki, &backend_addr, &[]);
    let connect = addr.to_string();
    let request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    for (flag, version) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
        let session = pki.path(&format!("session{flag}.pem"));
        let session = session.to_str().unwrap();
        let base = ["-connect", &connect, "-servername", "localhost", "-CAfile", pki.ca(), "-ign_eof", flag];
        let first = s_client(&[&base[..], &["-sess_out", session]].concat(), request);
        let text = String::from_utf8_lossy(&first.stdout);
        assert!(text.contains(&format!("New, {version}")), "{}", describe(&first));
        assert!(text.contains("hello from builtin"), "{}", describe(&first));
        let again = s_client(&[&base[..], &["-sess_in", session]].concat(), request);
        let text = String::from_utf8_lossy(&again.stdout);
        assert!(text.contains(&format!("Reused, {version}")), "not resumed: {}", describe(&again));
        assert!(text.contains("hello from builtin"), "{}", describe(&again));
    }
    assert!(gate.proc.lines_with(&["connection aborted"]).is_empty(), "{}", gate.proc.log_text());
}

/// A TLS 1.3 connection through tlsgate to the echo backend, checked with one round trip.
fn connected(addr: SocketAddr, pki: &Pki) -> TlsStream {
    let mut s = tls_client::handshake(addr, pki.ca().as_ref(), "localhost", WAIT).unwrap();
    round_trip(&mut s, b"ping");
    s
}

fn round_trip(s: &mut TlsStream, data: &[u8]) {
    s.write_all(data).unwrap();
    s.flush().unwrap();
    let mut got = vec![0u8; data.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, data);
}

/// Sends `data` as one sealed application-data record, passed through `mangle` on the way out.
fn send_mangled(s: &mut TlsStream, data: &[u8], mangle: impl FnOnce(&mut Vec<u8>)) {
    s.conn.writer().write_all(data).unwrap();
    let mut wire = Vec::new();
    while s.conn.wants_write() {
        s.conn.write_tls(&mut wire).unwrap();
    }
    mangle(&mut wire);
    s.sock.write_all(&wire).unwrap();
}

/// Reads what tlsgate sends until it closes; returns rustls's verdict on those bytes.
fn verdict(s: &mut TlsStream) -> Result<(), rustls::Error> {
    let mut wire = Vec::new();
    let _ = s.sock.read_to_end(&mut wire);
    let mut input = &wire[..];
    while !input.is_empty() {
        s.conn.read_tls(&mut input).unwrap();
    }
    s.conn.process_new_packets().map(|_| ())
}

#[test]
fn bad_records_close_only_their_connection_with_an_alert() {
    let pki = Pki::new();
    let (gate, addr) = terminator(&pki, &echo_backend(), &[]);
    let mut healthy = connected(addr, &pki);

    // A flipped bit in a ciphertext: bad_record_mac.
    let mut s = connected(addr, &pki);
    send_mangled(&mut s, b"tampered", |w| {
        let last = w.len() - 1;
        w[last - 20] ^= 1;
    });
    assert_eq!(verdict(&mut s), Err(rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac)));
    gate.proc.wait_for(
        &["connection aborted", "side=client", "bad record MAC", "sent alert bad_record_mac"],
        WAIT,
    );
    round_trip(&mut healthy, b"still here 1");

    // Garbage where a record header should be: unexpected_message.
    let mut s = connected(addr, &pki);
    s.sock.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(
        verdict(&mut s),
        Err(rustls::Error::AlertReceived(rustls::AlertDescription::UnexpectedMessage))
    );
    gate.proc.wait_for(&["connection aborted", "side=client", "content type 71"], WAIT);
    round_trip(&mut healthy, b"still here 2");

    // A header announcing more than the largest TLS 1.3 record: record_overflow.
    let mut s = connected(addr, &pki);
    s.sock.write_all(&[23, 3, 3, 0x48, 0]).unwrap();
    assert_eq!(verdict(&mut s), Err(rustls::Error::AlertReceived(rustls::AlertDescription::RecordOverflow)));
    gate.proc.wait_for(&["connection aborted", "side=client", "record of 18432 bytes"], WAIT);
    round_trip(&mut healthy, b"still here 3");

    // Half a record, then FIN: closed, and the log says it was cut mid-record.
    let mut s = connected(addr, &pki);
    send_mangled(&mut s, b"cut short", |w| w.truncate(w.len() / 2));
    s.sock.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = s.sock.read_to_end(&mut rest);
    gate.proc.wait_for(&["connection aborted", "side=client", "in the middle of a record"], WAIT);
    round_trip(&mut healthy, b"still here 4");

    // The healthy connection ends with close_notify both ways and a clean log line.
    healthy.conn.send_close_notify();
    healthy.flush().unwrap();
    let mut rest = Vec::new();
    healthy.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    gate.proc.wait_for(&["connection closed", "up=52"], WAIT);
}

/// The session ticket waits for the first record tlsgate sends: an alert before any reply
/// goes behind it, in sequence. (Were it sent without the ticket, under the sequence number after
/// the ticket's, the client could not decrypt it and would fail with its own decrypt error.)
#[test]
fn a_bad_record_before_any_reply_gets_its_alert_behind_the_session_ticket() {
    let pki = Pki::new();
    let (gate, addr) = terminator(&pki, &echo_backend(), &[]);
    let mut s = tls_client::handshake(addr, pki.ca().as_ref(), "localhost", WAIT).unwrap();
    send_mangled(&mut s, b"tampered", |w| {
        let last = w.len() - 1;
        w[last - 20] ^= 1;
    });
    assert_eq!(verdict(&mut s), Err(rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac)));
    gate.proc.wait_for(&["connection aborted", "side=client", "sent alert bad_record_mac"], WAIT);
}

/// Seals `data` as records (one per `write_all`, as rustls cuts them) and returns the wire bytes.
fn sealed(s: &mut TlsStream, pieces: &[&[u8]]) -> Vec<u8> {
    let mut wire = Vec::new();
    for piece in pieces {
        s.conn.writer().write_all(piece).unwrap();
        while s.conn.wants_write() {
            s.conn.write_tls(&mut wire).unwrap();
        }
    }
    wire
}

#[test]
fn records_cut_anywhere_and_many_in_one_segment_arrive_whole() {
    let pki = Pki::new();
    let (gate, addr) = terminator(&pki, &echo_backend(), &[]);
    let mut s = connected(addr, &pki);
    s.sock.set_nodelay(true).unwrap();

    // 300 small records in one write: opened in one read and moved together.
    let msgs: Vec<Vec<u8>> = (0..300).map(|i| format!("record {i};").into_bytes()).collect();
    let pieces: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    let wire = sealed(&mut s, &pieces);
    s.sock.write_all(&wire).unwrap();
    let want = msgs.concat();
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, want);

    // 40000 bytes (three records, the first two full) written 7 bytes at a time: headers and
    // bodies cut at every kind of offset.
    let big: Vec<u8> = (0..40000u32).map(|i| (i % 251) as u8).collect();
    let wire = sealed(&mut s, &[&big]);
    for chunk in wire.chunks(7) {
        s.sock.write_all(chunk).unwrap();
    }
    let mut got = vec![0u8; big.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, big);

    round_trip(&mut s, b"done");
    drop(s);
    gate.proc.wait_for(&["connection closed", &format!("up={}", 4 + want.len() + big.len() + 4)], WAIT);
}

/// RFC 7905: a TLS 1.2 client offering only ChaCha20-Poly1305 gets it, and tlsgate's own record
/// layer (no explicit nonce in this format) carries the request and the answer.
#[test]
fn a_tls12_client_offering_only_chacha20_is_served() {
    let pki = Pki::new();
    let (_backend, backend_addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "builtin");
    let (gate, addr) = terminator(&pki, &backend_addr, &[]);
    let connect = addr.to_string();
    let chacha = "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
    let args = [
        "-connect",
        &connect,
        "-servername",
        "localhost",
        "-CAfile",
        pki.ca(),
        "-tls1_2",
        "-cipher",
        chacha,
        "-ign_eof",
    ];
    let out = s_client(&args, b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Cipher is ECDHE-ECDSA-CHACHA20-POLY1305"), "{}", describe(&out));
    assert!(text.contains("hello from builtin"), "{}", describe(&out));
    gate.proc.wait_for(&["connection closed"], WAIT);
    assert!(gate.proc.lines_with(&["connection aborted"]).is_empty(), "{}", gate.proc.log_text());
}

/// RFC 5746 §4.4 / RFC 5246 §7.2.2: a ClientHello inside the session gets a warning
/// no_renegotiation and the session it has goes on; OpenSSL's client, which asked for the
/// renegotiation, then gives up with a fatal handshake_failure, which ends the connection with
/// the client named.
#[test]
fn tls12_renegotiation_is_refused_with_a_warning_no_renegotiation() {
    let pki = Pki::new();
    let (gate, addr) = terminator(&pki, &echo_backend(), &[]);
    let connect = addr.to_string();
    let mut c = Interactive::verified(&connect, pki.ca(), "-tls1_2");
    c.expect("Verify return code: 0 (ok)");
    c.send("line one");
    c.expect("line one");
    // `R`: s_client sends a new ClientHello inside the session.
    c.send("R");
    c.expect(">>> TLS 1.2, Handshake [length");
    let alert = c.expect("<<< TLS 1.2, Alert");
    assert!(alert.contains("warning no_renegotiation"), "{alert}");
    gate.proc
        .wait_for(&["connection aborted", "side=client", "client sent fatal alert handshake_failure"], WAIT);
}

#[test]
fn a_hello_retry_request_handshake_completes() {
    let pki = Pki::new();
    let (_backend, backend_addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "builtin");
    let (_gate, addr) = terminator(&pki, &backend_addr, &[]);
    let connect = addr.to_string();
    // The key share s_client sends first (ffdhe2048) is one tlsgate does not take: it asks for
    // X25519 with a HelloRetryRequest, and the client's second ClientHello finishes the handshake.
    let args = [
        "-connect",
        &connect,
        "-servername",
        "localhost",
        "-CAfile",
        pki.ca(),
        "-tls1_3",
        "-groups",
        "ffdhe2048:X25519",
        "-ign_eof",
        "-msg",
    ];
    let out = s_client(&args, b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("ServerHello").count(), 2, "no HelloRetryRequest: {}", describe(&out));
    assert!(text.contains("Server Temp Key: X25519"), "{}", describe(&out));
    assert!(text.contains("hello from builtin"), "{}", describe(&out));
}

/// A backend that reads one request, then answers `reply` and closes in one segment (data and
/// FIN together, as nginx does with `tcp_nopush` for `Connection: close`).
fn reply_and_close_backend(reply: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        let _ = stream.read(&mut buf).unwrap();
        // MSG_MORE holds the data back until the shutdown adds the FIN to it.
        socket2::SockRef::from(&stream).send_with_flags(reply, libc::MSG_MORE).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let _ = stream.read(&mut buf);
    });
    addr
}

/// Segments with data the kernel received on this socket, as `ss -i` reports it (TCP_INFO).
fn data_segments_in(s: &std::net::TcpStream) -> u32 {
    let port = s.local_addr().unwrap().port();
    let out =
        Command::new("ss").args(["-Htni", "state", "all", &format!("sport = :{port}")]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let field = text.split_whitespace().find_map(|w| w.strip_prefix("data_segs_in:"));
    field.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no data_segs_in in `ss -i`: {text}"))
}

#[test]
fn a_backends_last_reply_and_close_reach_the_client_in_one_segment() {
    let pki = Pki::new();
    let (gate, addr) = terminator(&pki, &reply_and_close_backend(b"last words"), &[]);
    let mut s = tls_client::handshake(addr, pki.ca().as_ref(), "localhost", WAIT).unwrap();
    s.write_all(b"go").unwrap();
    let mut got = Vec::new();
    // Ends cleanly: rustls returns end of stream only after close_notify.
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"last words");
    // The server's flight, then the session ticket, the reply and close_notify (and the FIN):
    // without the read-ahead the reply and close_notify took two, and the ticket one of its own.
    assert_eq!(data_segments_in(&s.sock), 2, "{}", gate.proc.log_text());
    drop(s);
    gate.proc.wait_logged(&["connection closed"], WAIT);
}

/// A client with Nagle's algorithm on (no TCP_NODELAY, Python's `ssl` over a plain socket here)
/// writes its Finished, then its request; the request waits for the ACK of the Finished. With the
/// session ticket held for the first reply nothing else went back, so the kernel held that ACK
/// for its delayed-ACK timeout, at least 40 ms (TCP_DELACK_MIN), on every connection's first
/// request. The median over ten connections, from the request's write to the echo, stays far
/// below that floor.
#[test]
fn a_nagle_clients_first_request_does_not_wait_for_a_delayed_ack() {
    let pki = Pki::new();
    let (gate, addr) = terminator(&pki, &echo_backend(), &[]);
    let script = r#"
import socket, ssl, statistics, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[3])
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
waits = []
for _ in range(10):
    s = ctx.wrap_socket(socket.create_connection((sys.argv[1], int(sys.argv[2]))), server_hostname="localhost")
    t = time.monotonic()
    s.sendall(b"ping\n")
    got = b""
    while len(got) < 5:
        chunk = s.recv(5 - len(got))
        if not chunk:
            sys.exit("closed before the echo")
        got += chunk
    assert got == b"ping\n", got
    waits.append(time.monotonic() - t)
    s.close()
print(f"{statistics.median(waits) * 1000:.2f} {max(waits) * 1000:.2f}")
"#;
    let out = Command::new("python3")
        .args(["-c", script, &addr.ip().to_string(), &addr.port().to_string(), pki.ca()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", describe(&out), gate.proc.log_text());
    let text = String::from_utf8_lossy(&out.stdout);
    let median: f64 = text.split_whitespace().next().and_then(|m| m.parse().ok()).expect("median ms");
    assert!(median < 20.0, "request to echo, median and max in ms: {text} (the delayed-ACK floor is 40 ms)");
}

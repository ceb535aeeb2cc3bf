//! `tlsgate tunnel portal` while its tunnel is not up: new SOCKS sessions wait for it (up to
//! `session_wait`) instead of being refused, are refused with 'network unreachable' after it,
//! and the portal fails over to the next `--gate` when the first dies, its listeners kept: UDP
//! associations (UDP forwards, DNS) carry on through the next gate, TCP sessions that went
//! through the dead one end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tlsgate_testkit::clients::{curl, describe};
use tlsgate_testkit::dns::Dnsmasq;
use tlsgate_testkit::net::{dead_port, free_port, two_free_ports};
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::{Proc, Tlsgate};
use tlsgate_tls::pki::ClientSpec;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const WAIT: Duration = Duration::from_secs(30);

struct Certs {
    pki: Pki,
    gate_cert: PathBuf,
    gate_key: PathBuf,
    portal_cert: PathBuf,
    portal_key: PathBuf,
}

fn certs() -> Certs {
    let pki = Pki::new();
    let (gate_cert, gate_key) = pki.server("gate", &["127.0.0.1", "localhost"]);
    let spec = ClientSpec { common_name: "laptop-1", dns: &[], uri: &[], ip: &[], expired: false };
    let (portal_cert, portal_key) =
        pki.ca.issue_client(&spec).unwrap().write(pki.dir.path(), "portal").unwrap();
    Certs { pki, gate_cert, gate_key, portal_cert, portal_key }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn start_gate(c: &Certs, listen: &str) -> Tlsgate {
    start_gate_with(c, listen, &[])
}

fn start_gate_with(c: &Certs, listen: &str, extra: &[&str]) -> Tlsgate {
    let mut args = vec![
        "tunnel",
        "gate",
        "--listen",
        listen,
        "--cert",
        s(&c.gate_cert),
        "--key",
        s(&c.gate_key),
        "--client-ca",
        c.pki.ca(),
    ];
    args.extend_from_slice(extra);
    let gate = Tlsgate::start(BIN, &args);
    gate.proc.wait_logged(&["tunnel gate listening"], WAIT);
    gate
}

/// A portal on `gates` (in order) with SOCKS on a free port, as soon as SOCKS is bound (the
/// tunnel may not be up yet).
fn start_portal(c: &Certs, gates: &[String], extra: &[&str]) -> (Tlsgate, SocketAddr) {
    let mut args = vec!["tunnel", "portal", "--ca", c.pki.ca(), "--cert", s(&c.portal_cert)];
    args.extend_from_slice(&["--key", s(&c.portal_key), "--socks", "127.0.0.1:0"]);
    for g in gates {
        args.extend_from_slice(&["--gate", g]);
    }
    args.extend_from_slice(extra);
    let portal = Tlsgate::start(BIN, &args);
    let line = portal.proc.wait_logged(&["SOCKS5 listening"], WAIT);
    let socks = Proc::field(&line, "listen").unwrap().parse().unwrap();
    (portal, socks)
}

fn socks_curl(socks: SocketAddr, url: &str) -> Output {
    curl(&["-sS", "--max-time", "30", "--socks5-hostname", &socks.to_string(), url])
}

#[test]
fn a_session_right_after_start_waits_for_the_tunnel_instead_of_being_refused() {
    let c = certs();
    let (backend, backend_addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "behind-gate");
    let (gate_port, _) = two_free_ports();
    let gate_addr = format!("127.0.0.1:{gate_port}");
    // The portal starts first: its first attempts find no gate.
    let (portal, socks) = start_portal(&c, std::slice::from_ref(&gate_addr), &[]);
    let url = format!("http://{backend_addr}/");
    let proxy = socks.to_string();
    let pending = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--socks5-hostname", &proxy, &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    portal.proc.wait_logged(&["cannot reach gate"], WAIT);
    let _gate = start_gate(&c, &gate_addr);
    let out = pending.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from behind-gate\n");
    portal.proc.wait_logged(&["connected to gate"], WAIT);
    drop(backend);
}

#[test]
fn with_no_gate_reachable_socks_answers_network_unreachable_after_session_wait() {
    let c = certs();
    let dead = format!("127.0.0.1:{}", dead_port());
    let (portal, socks) = start_portal(&c, &[dead], &["--session-wait", "1s"]);
    // curl connects through the SOCKS handshake and reads the reply code.
    let out = socks_curl(socks, "http://127.0.0.1:9/");
    assert!(!out.status.success(), "{}", describe(&out));
    assert_eq!(out.status.code(), Some(97), "curl's SOCKS failure: {}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("(3)") || err.to_lowercase().contains("network unreachable"), "{err}");
    portal.proc.wait_logged(&["SOCKS client refused", "waited session_wait"], WAIT);
}

#[test]
fn socks_fails_over_to_the_second_gate_when_the_first_is_killed() {
    let c = certs();
    let (backend, backend_addr) = Tlsgate::backend(BIN, "127.0.0.1:0", "behind-gate");
    let (p1, p2) = two_free_ports();
    let (g1, g2) = (format!("127.0.0.1:{p1}"), format!("127.0.0.1:{p2}"));
    let mut gate1 = start_gate(&c, &g1);
    let _gate2 = start_gate(&c, &g2);
    let (portal, socks) = start_portal(&c, &[g1.clone(), g2.clone()], &[]);
    let line = portal.proc.wait_logged(&["connected to gate"], WAIT);
    assert_eq!(Proc::field(&line, "gate").as_deref(), Some(g1.as_str()), "the first gate first: {line}");
    let url = format!("http://{backend_addr}/");
    let out = socks_curl(socks, &url);
    assert!(out.status.success(), "{}", describe(&out));

    gate1.proc.kill();
    // The same SOCKS listener: the next session waits for the tunnel to the second gate.
    let out = socks_curl(socks, &url);
    assert!(out.status.success(), "after failover: {}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from behind-gate\n");
    let lines = portal.proc.lines_with(&["connected to gate"]);
    assert!(
        lines.iter().any(|l| Proc::field(l, "gate").as_deref() == Some(g2.as_str())),
        "no connection to {g2}: {lines:?}"
    );
    drop(backend);
}

/// A UDP echo server on loopback: answers each datagram with itself, for the life of the test.
fn udp_echo() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    });
    addr
}

/// A TCP echo server on loopback (one thread per connection).
fn tcp_echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 2048];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn dig(port: u16, name: &str) -> Output {
    let p = port.to_string();
    // One try: a query lost on the way would show as a failure, not be hidden by a retry.
    let out =
        Command::new("dig").args(["@127.0.0.1", "-p", &p, "+tries=1", "+time=20", "+short", name]).output();
    out.expect("dig is installed (bind9-dnsutils)")
}

/// The first gate SIGKILLed with a UDP association, a DNS forwarder and a TCP session open
/// through it. The UDP client keeps its socket and sends once: its datagram is answered through
/// the second gate (UDP carries no end-to-end state, so the portal opens the association again
/// there); DNS is answered too. The TCP session's destination connection died with the gate:
/// the portal ends it cleanly (the local client reads end of stream, not silence or a reset).
#[test]
fn udp_and_dns_carry_on_through_the_next_gate_and_tcp_sessions_end() {
    let c = certs();
    let dns = Dnsmasq::start(&[("intranet.internal", "10.9.8.7")]);
    let resolver = dns.addr.to_string();
    let (p1, p2) = two_free_ports();
    let (g1, g2) = (format!("127.0.0.1:{p1}"), format!("127.0.0.1:{p2}"));
    let mut gate1 = start_gate_with(&c, &g1, &["--resolver", &resolver]);
    let _gate2 = start_gate_with(&c, &g2, &["--resolver", &resolver]);
    let (udp_target, tcp_target) = (udp_echo(), tcp_echo());
    let (udp_port, tcp_port, dns_port) = (free_port(), free_port(), free_port());
    let udp_fwd = format!("udp:127.0.0.1:{udp_port}={udp_target}");
    let tcp_fwd = format!("tcp:127.0.0.1:{tcp_port}={tcp_target}");
    let dns_listen = format!("127.0.0.1:{dns_port}");
    let extra = ["--forward", &udp_fwd, "--forward", &tcp_fwd, "--dns", &dns_listen];
    let (portal, _) = start_portal(&c, &[g1.clone(), g2.clone()], &extra);
    let line = portal.proc.wait_for(&["connected to gate"], WAIT);
    assert_eq!(Proc::field(&line, "gate").as_deref(), Some(g1.as_str()), "the first gate first: {line}");

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(("127.0.0.1", udp_port)).unwrap();
    udp.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 2048];
    let mut echo = |what: &[u8]| {
        udp.send(what).unwrap();
        let n = udp
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no answer to {:?}: {e}", String::from_utf8_lossy(what)));
        buf[..n].to_vec()
    };
    assert_eq!(echo(b"before"), b"before");
    let out = dig(dns_port, "intranet.internal");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "10.9.8.7", "{}", describe(&out));
    let mut tcp = TcpStream::connect(("127.0.0.1", tcp_port)).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(b"held").unwrap();
    let mut four = [0u8; 4];
    tcp.read_exact(&mut four).unwrap();
    assert_eq!(&four, b"held");

    gate1.proc.kill();
    // The TCP session ends with end of stream, within WAIT (a timeout would be a hang).
    match tcp.read(&mut four) {
        Ok(0) => {}
        Ok(n) => panic!("{n} bytes from a session whose gate is dead"),
        Err(e) => panic!("the TCP session through the dead gate did not end cleanly: {e}"),
    }
    // The same UDP socket, one datagram, no resend: answered through the second gate.
    assert_eq!(echo(b"after"), b"after");
    let line = portal.proc.wait_for(&["connected to gate"], WAIT);
    assert_eq!(Proc::field(&line, "gate").as_deref(), Some(g2.as_str()), "failed over: {line}");
    let out = dig(dns_port, "intranet.internal");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "10.9.8.7", "after failover: {}", describe(&out));
    assert_eq!(echo(b"again"), b"again");
}

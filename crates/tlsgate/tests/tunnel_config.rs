//! The tunnel configured by TOML: reverse forwards under the portal's `allow_reverse`, SOCKS5
//! username/password, UDP ASSOCIATE, reaching the gate through an HTTP CONNECT proxy (tinyproxy)
//! and through a SOCKS5 proxy, and the admin listener's metrics and status page.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use tlsgate_testkit::clients::{curl, describe};
use tlsgate_testkit::dns::Dnsmasq;
use tlsgate_testkit::net::{free_port, two_free_ports, wait_accepting};
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::{Proc, Tlsgate};
use tlsgate_tls::pki::ClientSpec;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const WAIT: Duration = Duration::from_secs(30);
const PORTAL_ID: &str = "spiffe://corp.test/portal/laptop-1";

struct Rig {
    pki: Pki,
}

impl Rig {
    fn new() -> Rig {
        let pki = Pki::new();
        pki.server("gate", &["127.0.0.1"]);
        let spec =
            ClientSpec { common_name: "laptop-1", dns: &[], uri: &[PORTAL_ID], ip: &[], expired: false };
        pki.ca.issue_client(&spec).unwrap().write(pki.dir.path(), "portal").unwrap();
        Rig { pki }
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.pki.path(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// `[tunnel.gate]` with the given extra TOML lines; paths are relative to the config file.
    fn gate(&self, extra: &str) -> (Tlsgate, SocketAddr) {
        let conf = self.write(
            "gate.toml",
            &format!(
                "[tunnel.gate]\nlisten = \"127.0.0.1:0\"\ncert = \"gate.pem\"\nkey = \"gate.key\"\n\
                 client_ca = \"ca.pem\"\n{extra}"
            ),
        );
        let gate = Tlsgate::start(BIN, &["tunnel", "gate", "-c", &conf, "--admin", "127.0.0.1:0"]);
        let line = gate.proc.wait_logged(&["tunnel gate listening"], WAIT);
        (gate, Proc::field(&line, "listen").unwrap().parse().unwrap())
    }

    fn portal(&self, name: &str, gate: SocketAddr, extra: &str) -> Tlsgate {
        let conf = self.write(
            name,
            &format!(
                "[tunnel.portal]\ngate = \"{gate}\"\nca = \"ca.pem\"\ncert = \"portal.pem\"\nkey = \"portal.key\"\n\
                 socks = \"127.0.0.1:0\"\n{extra}"
            ),
        );
        let portal = Tlsgate::start(BIN, &["tunnel", "portal", "-c", &conf]);
        portal.proc.wait_logged(&["connected to gate"], WAIT);
        portal
    }
}

fn socks_addr(p: &Tlsgate) -> String {
    Proc::field(&p.proc.wait_logged(&["SOCKS5 listening"], WAIT), "listen").unwrap()
}

/// GET `http://{target}`; `target` is `host:port/path`.
fn http_get(target: &str) -> String {
    let out = curl(&["-sS", "--max-time", "20", &format!("http://{target}")]);
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn reverse_forwards_socks_auth_and_the_admin_page() {
    let rig = Rig::new();
    // On the portal's side: a backend the gate side can reach only through the reverse forward.
    let (_backend, backend) = Tlsgate::backend(BIN, "127.0.0.1:0", "portal-side");
    let bport = backend.rsplit(':').next().unwrap();
    let (reverse_ok, reverse_denied) = two_free_ports();
    let (gate, gate_addr) = rig.gate(&format!(
        "[[tunnel.gate.reverse]]\nlisten = \"127.0.0.1:{reverse_ok}\"\nportal = \"{PORTAL_ID}\"\ntarget = \"{backend}\"\n\
         [[tunnel.gate.reverse]]\nlisten = \"127.0.0.1:{reverse_denied}\"\nportal = \"{PORTAL_ID}\"\ntarget = \"127.0.0.1:22\"\n"
    ));
    let portal = rig.portal(
        "portal.toml",
        gate_addr,
        &format!(
            "allow_reverse = [\"allow tcp 127.0.0.1 {bport}\"]\n\
             socks_auth = {{ username = \"alice\", password = \"s3cret\" }}\n"
        ),
    );

    // Reverse: a client on the gate's side reaches the portal's backend.
    assert!(http_get(&format!("127.0.0.1:{reverse_ok}/")).contains("hello from portal-side"));
    // A target outside allow_reverse is refused by the portal, with a reason on both ends.
    let out = curl(&["-sS", "--max-time", "20", &format!("http://127.0.0.1:{reverse_denied}/")]);
    assert!(!out.status.success(), "{}", describe(&out));
    portal.proc.wait_for(
        &["reverse session refused", "127.0.0.1:22", "a loopback address: only a rule naming it allows it"],
        WAIT,
    );
    gate.proc.wait_for(&["reverse forward refused by portal", "127.0.0.1:22"], WAIT);

    // SOCKS5 with username/password: the right pair passes, a wrong one is refused.
    let socks = socks_addr(&portal);
    let out = curl(&[
        "-sS",
        "--max-time",
        "20",
        "--proxy",
        &format!("socks5h://alice:s3cret@{socks}"),
        &format!("http://{backend}/"),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = curl(&[
        "-sS",
        "--max-time",
        "20",
        "--proxy",
        &format!("socks5h://alice:guess@{socks}"),
        &format!("http://{backend}/"),
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
    portal.proc.wait_for(&["SOCKS client refused", "authentication failed"], WAIT);

    // A session held open is on the gate's status page; the counters moved.
    let mut held = TcpStream::connect(("127.0.0.1", reverse_ok)).unwrap();
    held.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut first = [0u8; 12];
    held.read_exact(&mut first).unwrap();
    let admin = Proc::field(&gate.proc.wait_logged(&["admin listening"], WAIT), "addr").unwrap();
    let status = http_get(&format!("{admin}/status"));
    assert!(status.contains("tunnel gate reverse") && status.contains(&backend), "{status}");
    assert!(status.contains("tunnel gate") && status.contains(PORTAL_ID), "{status}");
    let out = curl(&["-sS", &format!("http://{admin}/metrics")]);
    let metrics = String::from_utf8_lossy(&out.stdout);
    assert!(metrics.contains("tlsgate_tunnel_connections_open{role=\"gate\"} 1"), "{metrics}");
    assert!(metrics.contains("tlsgate_tunnel_sessions_open{role=\"gate\"} 1"), "{metrics}");
    assert!(
        metrics.contains("tlsgate_tunnel_sessions_total{role=\"gate\",result=\"refused\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("tlsgate_tunnel_sessions_total{role=\"gate\",result=\"opened\"}"), "{metrics}");
}

#[test]
fn udp_associate_carries_a_dns_query_to_the_gates_side() {
    let rig = Rig::new();
    let dns = Dnsmasq::start(&[("only.gate.test", "192.0.2.77")]);
    let (_gate, gate_addr) = rig.gate("");
    let portal = rig.portal("portal.toml", gate_addr, "");
    let socks = socks_addr(&portal);
    let (host, port) = socks.rsplit_once(':').unwrap();
    let script = tlsgate_testkit::docs::support_script("socks5_udp_dns.py");
    let out = Command::new("python3")
        .arg(script)
        .args([host, port, "127.0.0.1", &dns.addr.port().to_string(), "only.gate.test"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "192.0.2.77");
}

#[test]
fn the_portal_reaches_the_gate_through_http_connect_and_socks5_proxies() {
    let rig = Rig::new();
    let (_backend, backend) = Tlsgate::backend(BIN, "127.0.0.1:0", "far-side");
    let (gate, gate_addr) = rig.gate("");

    // HTTP CONNECT through a real proxy, tinyproxy.
    let proxy_port = free_port();
    let conf = rig.write(
        "tinyproxy.conf",
        &format!(
            "User nobody\nGroup nogroup\nPort {proxy_port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\n\
             ConnectPort {}\nLogLevel Info\n",
            gate_addr.port()
        ),
    );
    let mut cmd = Command::new("tinyproxy");
    cmd.args(["-d", "-c", &conf]);
    let _tinyproxy = Proc::spawn("tinyproxy", cmd);
    wait_accepting(SocketAddr::from(([127, 0, 0, 1], proxy_port)), WAIT);
    let via_http =
        rig.portal("via-http.toml", gate_addr, &format!("proxy = \"http://127.0.0.1:{proxy_port}\"\n"));
    let socks = socks_addr(&via_http);
    let out = curl(&["-sS", "--max-time", "20", "--socks5-hostname", &socks, &format!("http://{backend}/")]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("far-side"),
        "{}",
        describe(&out)
    );

    // SOCKS5: the first portal's own SOCKS listener is the second portal's proxy to the gate.
    let via_socks = rig.portal("via-socks.toml", gate_addr, &format!("proxy = \"socks5://{socks}\"\n"));
    let socks2 = socks_addr(&via_socks);
    let out = curl(&["-sS", "--max-time", "20", "--socks5-hostname", &socks2, &format!("http://{backend}/")]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("far-side"),
        "{}",
        describe(&out)
    );
    // The gate saw two portals: one through tinyproxy, one nested inside the first one's tunnel.
    assert_eq!(gate.proc.lines_with(&["portal connected"]).len(), 2, "{}", gate.proc.log_text());
}

#[test]
fn an_idle_session_is_reaped() {
    let rig = Rig::new();
    let quiet = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dest = quiet.local_addr().unwrap();
    let (_gate, gate_addr) = rig.gate("");
    let portal = rig.portal(
        "portal.toml",
        gate_addr,
        &format!(
            "forward = [\"tcp:127.0.0.1:0={dest}\"]\n\
             [tunnel.portal.limits]\nsession_idle_timeout = \"1s\"\nkeepalive = \"500ms\"\nidle_timeout = \"5s\"\n"
        ),
    );
    let fwd = Proc::field(&portal.proc.wait_logged(&["TCP forward"], WAIT), "listen").unwrap();
    let mut client = TcpStream::connect(&fwd).unwrap();
    let _held = quiet.accept().unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    // Nobody says anything; the portal resets the session and closes the client's socket.
    portal.proc.wait_for(&["session idle too long"], WAIT);
    let mut buf = [0u8; 16];
    let n = client.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the reaped session's socket is closed");
}

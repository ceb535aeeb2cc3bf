//! `tlsgate inline run`'s full-proxy fallback on real kernels (the topology of inline_run.rs):
//! flows the end-to-end path is not for are terminated on both sides inside the gate — a client
//! advertising a ~300-byte window (made so on the wire by a test-only stage, since Linux will
//! not advertise less than about a thousand bytes), and flows beyond the end-to-end table's
//! limit — while other flows in the same run stay end to end. Bad input on the proxy path ends
//! only that flow. Needs root, iproute2, ethtool, nginx and curl.

use std::time::Duration;

use tlsgate_testkit::clients::{curl_in, describe};
use tlsgate_testkit::data::sha256;
use tlsgate_testkit::inline_net::{assert_tls_stream, Host, InlineNet, Site, CLIENT, SERVERS, SERVER_NAME};
use tlsgate_testkit::pcap;
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::{Proc, Tlsgate};
use tlsgate_testkit::window_clamp::WindowClamp;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const SERVER: &str = SERVERS[0];
const ADMIN: &str = "127.0.0.1:9900";
const MIB: usize = 1 << 20;

struct Scene {
    site: Site,
    net: InlineNet,
    pki: Pki,
}

impl Scene {
    fn new(net: InlineNet, big_len: usize) -> Scene {
        let pki = Pki::new();
        let site = Site::start(&net.servers[0], "server1", big_len, None);
        Scene { site, net, pki }
    }

    /// `tlsgate inline run` offloading SERVER:443 onto port 80, with the admin listener and `extra`.
    fn gate(&self, extra: &[&str]) -> Tlsgate {
        let (cert, key) = self.pki.server("gate", &[SERVER_NAME, SERVER]);
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let net = &self.net;
        let service = format!("{SERVER}:443=80");
        let mut args = vec!["inline", "run", "--client-iface", &net.gate_client_if];
        args.extend_from_slice(&["--server-iface", &net.gate_server_if, "--service", &service]);
        args.extend_from_slice(&["--cert", cert, "--key", key, "--admin", ADMIN, "--log-level", "debug"]);
        args.extend_from_slice(extra);
        let gate = Tlsgate::start_command(net.gate.command(BIN, &args));
        gate.proc.wait_for(&["inline running"], Duration::from_secs(30));
        net.gate.wait_listening(9900, Duration::from_secs(10));
        gate
    }

    fn https(&self, path: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec!["--cacert".into(), self.pki.ca().into()];
        args.extend(["--resolve".into(), format!("{SERVER_NAME}:443:{SERVER}")]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(format!("https://{SERVER_NAME}{path}"));
        args
    }

    fn client(&self) -> &Host {
        &self.net.client
    }

    /// Waits (bounded) until /metrics has every one of `lines`: flows end a round trip after
    /// their client is done.
    fn wait_metrics(&self, lines: &[&str], timeout: Duration, gate: &Tlsgate) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let metrics = self.admin("/metrics");
            let missing: Vec<&&str> = lines.iter().filter(|l| !metrics.contains(**l)).collect();
            if missing.is_empty() {
                return;
            }
            let log = gate.proc.lines_with(&["inline: "]).join("\n");
            assert!(std::time::Instant::now() < deadline, "{missing:?} missing:\n{metrics}\ngate: {log}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn admin(&self, path: &str) -> String {
        let out = curl_in(&self.net.gate, &["--fail", &format!("http://{ADMIN}{path}")]);
        assert!(out.status.success(), "{path}: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A client advertising 300 bytes (ports 40600-40699 clamped on the wire) goes to the full
/// proxy: 1 MiB down and 1 MiB up through nginx byte-identical, nginx sees the client's own
/// address and port, the switch is logged and counted with its reason, and /status shows the
/// flow's path while it runs. In the same run, a client with an ordinary window stays end to end,
/// and one whose window shrinks after its SYN is switched at its ClientHello.
#[test]
fn a_300_byte_client_window_goes_full_proxy_while_others_stay_end_to_end() {
    let s = Scene::new(InlineNet::impaired(1), MIB);
    let clamp = WindowClamp { ports: 40600..=40699, bytes: 300, after_syn_ports: 40650..=40659 };
    let hop = s.net.start_window_clamp(clamp);
    let gate = s.gate(&[]);

    // Down, slowed so the flow can be seen in /status while it runs.
    let slow = s.https("/big.bin", &["--local-port", "40600", "--limit-rate", "200k", "-o", "/dev/null"]);
    let mut args = vec!["-sS", "--fail", "--max-time", "120"];
    args.extend(strs(&slow));
    let mut curl = Proc::spawn("curl", s.client().ns.command("curl", &args));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = s.admin("/status.json");
        if status.contains("\"client\":\"10.203.0.1:40600\"") || std::time::Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let row = status.split("\"client\":\"10.203.0.1:40600\"").nth(1).unwrap_or_else(|| panic!("{status}"));
    // This row's keys, up to the next row's (serde_json writes a row's keys in order).
    let row = &row[..row.find("\"client\":").unwrap_or(row.len())];
    assert!(row.contains("\"path\":\"full-proxy\""), "{row}");
    assert!(row.contains("\"switch_reason\":\"window_below_floor\""), "{row}");
    let html = s.admin("/status");
    assert!(html.contains("full-proxy (window_below_floor)"), "{html}");
    assert_eq!(
        curl.wait_exit(Duration::from_secs(120)).map(|e| e.success()),
        Some(true),
        "{}",
        curl.log_text()
    );

    // Full speed, byte-identical, captured at the client: the proxy's TCP keeps to the
    // 300-byte window and its stream is TLS records from the first byte.
    let cap = s.client().capture();
    let started = std::time::Instant::now();
    let down = s.client().fetch(120, &strs(&s.https("/big.bin", &["--local-port", "40601"])));
    let down_time = started.elapsed();
    assert_eq!(down.len(), MIB);
    assert_eq!(sha256(&down), s.site.big_sha256, "download through the full proxy differs");
    let packets = cap.stop();
    let to_client: Vec<_> =
        packets.iter().filter_map(|p| p.tcp.as_ref()).filter(|t| t.dst.port() == 40601).collect();
    let largest = to_client.iter().map(|t| t.payload.len()).max().unwrap_or(0);
    assert!(largest > 0 && largest <= 300, "a {largest}-byte segment to a 300-byte window");
    let stream = pcap::streams(&packets).into_iter().find(|st| st.dst.port() == 40601).expect("the download");
    assert_tls_stream(&stream);
    let source = s.site.big_path();
    let put = ["--local-port", "40602", "-T", source.to_str().unwrap()];
    let started = std::time::Instant::now();
    s.client().fetch(120, &strs(&s.https("/up/big.bin", &put)));
    let up_time = started.elapsed();
    assert_eq!(s.site.uploaded_sha256("big.bin"), s.site.big_sha256, "upload through the full proxy differs");
    eprintln!("1 MiB through the full proxy at a 300-byte window: down {down_time:?}, up {up_time:?}");

    // An ordinary client in the same run: end to end.
    let normal = s.client().fetch(60, &strs(&s.https("/big.bin", &["--local-port", "40700"])));
    assert_eq!(sha256(&normal), s.site.big_sha256);

    // nginx saw the clients' own addresses and ports, both paths.
    for port in [40600, 40601, 40602, 40700] {
        let lines = s.site.log_lines_for(&format!("{CLIENT}:{port}"), 4);
        assert_eq!(lines.len(), 1, "port {port}: {}", s.site.nginx.access_log());
    }
    // A window that shrinks below the floor after an ordinary SYN (40650): the flow starts end
    // to end and is taken over at its ClientHello — the server's connection reset and opened
    // again from the client's address and port, the client's adopted as it stands.
    let body = s.client().fetch(60, &strs(&s.https("/", &["--local-port", "40650"])));
    assert_eq!(body, b"hello from server1\n");
    let lines = s.site.log_lines_for(&format!("{CLIENT}:40650"), 4);
    assert_eq!(lines.len(), 1, "port 40650: {}", s.site.nginx.access_log());
    gate.proc.wait_logged(
        &[
            "flow switched to the full proxy",
            &format!("client={CLIENT}:40650"),
            "reason=\"window_below_floor_at_client_hello\"",
        ],
        Duration::from_secs(5),
    );
    assert!(hop.stats().clamped > 100, "the stage clamped the client's windows: {:?}", hop.stats());

    let metrics = s.admin("/metrics");
    for line in [
        "tlsgate_inline_mode_switches_total{reason=\"window_below_floor\"} 3",
        "tlsgate_inline_mode_switches_total{reason=\"flow_table_full\"} 0",
        "tlsgate_inline_mode_switches_total{reason=\"window_below_floor_at_client_hello\"} 1",
        // End to end at the SYN: the ordinary client's flow and the one switched at its hello.
        "tlsgate_inline_flows_created_total 2",
        "tlsgate_inline_mac_failures_total 0",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    for port in [40600, 40601, 40602] {
        let client = format!("client={CLIENT}:{port}");
        gate.proc.wait_logged(
            &["flow switched to the full proxy", &client, "reason=\"window_below_floor\""],
            Duration::from_secs(5),
        );
    }
    assert!(gate.proc.lines_with(&["full-proxy flow failed"]).is_empty(), "{}", gate.proc.log_text());
}

/// The end-to-end table at its limit (one flow, held open by a slow download): the next flows
/// go to the full proxy and complete; the switch is counted as `flow_table_full`.
#[test]
fn flows_beyond_the_end_to_end_table_go_full_proxy() {
    let s = Scene::new(InlineNet::new(1), 4 * MIB);
    let gate = s.gate(&["--max-flows", "1"]);
    let slow = s.https("/big.bin", &["--local-port", "40800", "--limit-rate", "256k", "-o", "/dev/null"]);
    let mut args = vec!["-sS", "--max-time", "120"];
    args.extend(strs(&slow));
    let _holder = Proc::spawn("curl", s.client().ns.command("curl", &args));
    s.net.servers[0]
        .ns
        .wait_sockets(&["-t", "state", "established", "dport = :40800"], Duration::from_secs(20));

    for port in ["40801", "40802"] {
        let body = s.client().fetch(60, &strs(&s.https("/big.bin", &["--local-port", port])));
        assert_eq!(sha256(&body), s.site.big_sha256, "port {port}");
        let lines = s.site.log_lines_for(&format!("{CLIENT}:{port}"), 1);
        assert_eq!(lines.len(), 1, "port {port}: {}", s.site.nginx.access_log());
    }
    s.wait_metrics(
        &[
            "tlsgate_inline_mode_switches_total{reason=\"flow_table_full\"} 2",
            "tlsgate_inline_flows_created_total 1",
            "tlsgate_inline_full_proxy_ends_total{outcome=\"closed\"} 2",
            "tlsgate_inline_full_proxy_flows 0",
        ],
        Duration::from_secs(10),
        &gate,
    );
}

/// Every flow to the full proxy (a floor above any window Linux advertises in a SYN), and bad
/// input on it: garbage instead of a ClientHello, a client resetting mid-transfer, a dead
/// server. Each ends its flow promptly (no client waits for its deadline), is logged with the
/// side that failed, and the next flow is served.
#[test]
fn bad_input_on_the_full_proxy_path_closes_only_that_flow() {
    let mut s = Scene::new(InlineNet::new(1), 16 * MIB);
    let gate = s.gate(&["--window-floor", "65535"]);

    // Plain HTTP to the TLS port: the proxy closes the connection, nothing reaches nginx.
    let out =
        s.client().curl(&["--max-time", "20", "--local-port", "40900", &format!("http://{SERVER}:443/")]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert_ne!(out.status.code(), Some(28), "the client waited for its deadline: {}", describe(&out));
    gate.proc.wait_logged(
        &["full-proxy flow failed", "side=client", &format!("client={CLIENT}:40900"), "not a TLS handshake"],
        Duration::from_secs(10),
    );

    // The client resets mid-transfer (curl gives up after 1 s with unread data: its close is an RST).
    let out = s.client().curl(&strs(&s.https(
        "/big.bin",
        &["--local-port", "40901", "--limit-rate", "1M", "--max-time", "1", "-o", "/dev/null"],
    )));
    assert_eq!(out.status.code(), Some(28), "{}", describe(&out));
    gate.proc.wait_logged(
        &["full-proxy flow failed", "side=client", &format!("client={CLIENT}:40901"), "reset"],
        Duration::from_secs(10),
    );
    // nginx logged the request: its connection ended (the proxy reset it).
    s.site.log_lines_for(&format!("{CLIENT}:40901"), 1);

    // The next flow is served in full.
    let body = s.client().fetch(60, &strs(&s.https("/", &["--local-port", "40902"])));
    assert_eq!(body, b"hello from server1\n");

    // A dead server: the proxy's connection is refused, the client is reset at once.
    s.site.nginx.kill();
    let out = s.client().curl(&strs(&s.https("/", &["--local-port", "40903", "--max-time", "20"])));
    assert!(!out.status.success(), "{}", describe(&out));
    assert_ne!(out.status.code(), Some(28), "the client waited for its deadline: {}", describe(&out));
    gate.proc.wait_logged(
        &["full-proxy flow failed", "side=backend", &format!("client={CLIENT}:40903"), "refused"],
        Duration::from_secs(10),
    );
    let metrics = s.admin("/metrics");
    for line in [
        "tlsgate_inline_mode_switches_total{reason=\"window_below_floor\"} 4",
        "tlsgate_inline_full_proxy_ends_total{outcome=\"client_failed\"} 2",
        "tlsgate_inline_full_proxy_ends_total{outcome=\"backend_failed\"} 1",
        "tlsgate_inline_flows_created_total 0",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
}

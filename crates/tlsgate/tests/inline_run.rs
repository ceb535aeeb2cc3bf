//! `tlsgate inline run` on real kernels: the bump in the wire between a client namespace and the
//! server side (testkit::inline_net; the harness itself is checked by inline_net_harness.rs).
//! Unmodified clients (curl, `openssl s_client`) speak HTTPS to the server's address; nginx on the
//! server answers plain HTTP on port 80 over the client's own TCP connection, which the gate keeps
//! end to end without a socket of its own. Needs root, iproute2, ethtool, tcpdump, nginx, curl
//! and openssl.

use std::time::Duration;

use tlsgate_testkit::clients::{describe, s_client_in};
use tlsgate_testkit::data::sha256;
use tlsgate_testkit::impair::{ImpairHop, Impairment};
use tlsgate_testkit::inline_net::{
    assert_tls_stream, assert_wire_sized, Host, InlineNet, Site, CLIENT, SERVERS, SERVER_NAME, VIP,
};
use tlsgate_testkit::pcap::{self, contains};
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::{Proc, Tlsgate};

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const SERVER: &str = SERVERS[0];
const BIG: usize = 64 << 20;
/// The admin endpoint, on the gate namespace's own loopback.
const ADMIN: &str = "127.0.0.1:9900";

/// A topology, its certificate and a site on each server.
struct Scene {
    // Dropped in this order: the servers' nginx, then the namespaces.
    sites: Vec<Site>,
    net: InlineNet,
    pki: Pki,
}

impl Scene {
    fn new(servers: usize, big_len: usize) -> Scene {
        let net = InlineNet::new(servers);
        let pki = Pki::new();
        let sites = net
            .servers
            .iter()
            .enumerate()
            .map(|(i, host)| Site::start(host, &format!("server{}", i + 1), big_len, None))
            .collect();
        Scene { sites, net, pki }
    }

    /// A scene on `net` (built with an impairing hop) with one server and offloads on, and the
    /// hop started: 64 KiB frames lost 2 %, reordered 3 % and duplicated 1 % each way, whole.
    fn impaired(net: InlineNet, seed: u64) -> (Scene, ImpairHop) {
        let pki = Pki::new();
        let site = Site::start(&net.servers[0], "server1", BIG, None);
        let s = Scene { sites: vec![site], net, pki };
        s.net.offloads_on();
        let hop = s.net.start_impairment(Impairment { loss: 0.02, reorder: 0.03, duplicate: 0.01, seed });
        (s, hop)
    }

    /// `tlsgate inline run` in the gate namespace with the service `service` (`--service …` or
    /// `--vip … --pool …`) and `extra` flags, once it says both interfaces are open.
    fn gate(&self, service: &[&str], extra: &[&str]) -> Tlsgate {
        self.gate_on(None, service, extra)
    }

    /// [`Scene::gate`], pinned to CPU `cpu` (`taskset`) if given.
    fn gate_on(&self, cpu: Option<&str>, service: &[&str], extra: &[&str]) -> Tlsgate {
        let (cert, key) = self.pki.server("gate", &[SERVER_NAME, SERVER, VIP]);
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let net = &self.net;
        let mut args = vec!["inline", "run", "--client-iface", &net.gate_client_if];
        args.extend_from_slice(&["--server-iface", &net.gate_server_if]);
        args.extend_from_slice(service);
        args.extend_from_slice(&["--cert", cert, "--key", key]);
        args.extend_from_slice(extra);
        let command = match cpu {
            Some(cpu) => net.gate.command("taskset", &[&["-c", cpu, BIN][..], &args].concat()),
            None => net.gate.command(BIN, &args),
        };
        let gate = Tlsgate::start_command(command);
        gate.proc.wait_for(&["inline running"], Duration::from_secs(30));
        gate
    }

    /// The gate offloading `SERVER:443` onto the server's port 80.
    fn direct(&self, extra: &[&str]) -> Tlsgate {
        self.gate(&["--service", &format!("{SERVER}:443=80")], extra)
    }

    /// curl arguments for `https://SERVER_NAME<path>` at `addr`, verified against the test CA.
    fn https(&self, addr: &str, path: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec!["--cacert".into(), self.pki.ca().into()];
        args.extend(["--resolve".into(), format!("{SERVER_NAME}:443:{addr}")]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(format!("https://{SERVER_NAME}{path}"));
        args
    }

    fn client(&self) -> &Host {
        &self.net.client
    }

    /// curl on the client PUTs the first server's big file to it (pinned to CPU `cpu`, with
    /// `taskset`, if given), which must arrive byte-identical; `what` names it in failures.
    fn upload_big(&self, cpu: Option<&str>, what: &str) {
        let site = &self.sites[0];
        let source = site.big_path();
        let put = self.https(
            SERVER,
            "/up/big.bin",
            &["--fail", "--max-time", "120", "-T", source.to_str().unwrap()],
        );
        let out = match cpu {
            Some(cpu) => self
                .client()
                .ns
                .run("taskset", &[&["-c", cpu, "curl", "-sS", "--ipv4"][..], &strs(&put)].concat()),
            None => self.client().curl(&strs(&put)),
        };
        assert!(out.status.success(), "{what}: {}\nnginx: {}", describe(&out), site.nginx.access_log());
        assert_eq!(site.uploaded_sha256("big.bin"), site.big_sha256, "{what} differs");
    }

    /// The gate's /status.json (its admin listener at [`ADMIN`]), parsed.
    fn status(&self) -> serde_json::Value {
        let out = tlsgate_testkit::clients::curl_in(
            &self.net.gate,
            &["--fail", &format!("http://{ADMIN}/status.json")],
        );
        assert!(out.status.success(), "/status.json: {}", describe(&out));
        serde_json::from_slice(&out.stdout).expect("/status.json is JSON")
    }
}

/// The hop did impair: it dropped, reordered and duplicated frames.
fn assert_impaired(hop: &ImpairHop, mode: &str) {
    let st = hop.stats();
    assert!(st.dropped > 20 && st.reordered > 20 && st.duplicated > 5, "{mode}: the hop impaired: {st:?}");
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn curl_gets_the_servers_page_over_https_and_the_server_gets_plain_http() {
    let s = Scene::new(1, 1024);
    let gate = s.direct(&["--admin", ADMIN]);
    let body = s.client().fetch(30, &strs(&s.https(SERVER, "/", &["--local-port", "40001"])));
    assert_eq!(body, b"hello from server1\n");
    let lines = s.sites[0].log_lines_for(&format!("{CLIENT}:40001"), 1);
    assert_eq!(lines.len(), 1, "{}", s.sites[0].nginx.access_log());
    // nginx on port 80 speaks no TLS: the request reached it in plaintext.
    assert!(lines[0].contains("\"GET / HTTP/1.1\" 200") && lines[0].contains("tls=\"-\""), "{}", lines[0]);

    // The admin endpoint answers inside the gate's namespace.
    s.net.gate.wait_listening(9900, Duration::from_secs(10));
    let status =
        tlsgate_testkit::clients::curl_in(&s.net.gate, &["--fail", &format!("http://{ADMIN}/status.json")]);
    assert!(status.status.success(), "/status.json: {}", describe(&status));
    assert!(status.stdout.starts_with(b"{"), "/status.json is not a JSON object: {}", describe(&status));
    let metrics =
        tlsgate_testkit::clients::curl_in(&s.net.gate, &["--fail", &format!("http://{ADMIN}/metrics")]);
    assert!(metrics.status.success(), "/metrics: {}", describe(&metrics));
    assert!(contains(&metrics.stdout, b"# TYPE "), "/metrics is not Prometheus text: {}", describe(&metrics));
    drop(gate);
}

/// 64 MiB down through the gate with the client held to `tls` (curl flags), byte-identical by
/// SHA-256; curl's own report must name `expect` (version / suite).
fn sixty_four_mib_down(mode: &str, tls: &[&str], expect: &str) {
    let s = Scene::new(1, BIG);
    let _gate = s.direct(&["--mode", mode, "--admin", ADMIN]);
    sixty_four_mib(&s, tls, expect, false)
}

/// 64 MiB down and (with `up`) the same 64 MiB up through a running gate.
fn sixty_four_mib(s: &Scene, tls: &[&str], expect: &str, up: bool) {
    let site = &s.sites[0];
    let mut extra = vec!["--fail", "--max-time", "300", "-v"];
    extra.extend_from_slice(tls);
    let down = s.client().curl(&strs(&s.https(SERVER, "/big.bin", &extra)));
    assert!(down.status.success(), "download: {}", describe(&down));
    assert!(
        contains(&down.stderr, expect.as_bytes()),
        "not {expect}: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert_eq!(down.stdout.len(), BIG, "download length");
    assert_eq!(sha256(&down.stdout), site.big_sha256, "download differs");
    if !up {
        return;
    }
    let mut up = extra.clone();
    let source = site.big_path();
    up.extend_from_slice(&["-T", source.to_str().unwrap()]);
    let out = s.client().curl(&strs(&s.https(SERVER, "/up/big.bin", &up)));
    assert!(out.status.success(), "upload: {}\nnginx: {}", describe(&out), site.nginx.access_log());
    assert!(
        contains(&out.stderr, expect.as_bytes()),
        "not {expect}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(site.uploaded_sha256("big.bin"), site.big_sha256, "upload differs");
}

const TLS13_AES_GCM: [&str; 3] = ["--tlsv1.3", "--tls13-ciphers", "TLS_AES_128_GCM_SHA256"];
const TLS13_CHACHA: [&str; 3] = ["--tlsv1.3", "--tls13-ciphers", "TLS_CHACHA20_POLY1305_SHA256"];
// The test CA issues ECDSA certificates.
const TLS12_AES_GCM: [&str; 5] =
    ["--tlsv1.2", "--tls-max", "1.2", "--ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256"];
/// RFC 7905's format: no explicit nonce, records 8 bytes shorter than TLS 1.2 AES-GCM's.
const TLS12_CHACHA: [&str; 5] =
    ["--tlsv1.2", "--tls-max", "1.2", "--ciphers", "ECDHE-ECDSA-CHACHA20-POLY1305"];

#[test]
fn sixty_four_mib_down_tls13_aes_gcm_buffered() {
    sixty_four_mib_down("buffered", &TLS13_AES_GCM, "TLSv1.3 / TLS_AES_128_GCM_SHA256");
}

#[test]
fn sixty_four_mib_down_tls13_chacha20_buffered() {
    sixty_four_mib_down("buffered", &TLS13_CHACHA, "TLSv1.3 / TLS_CHACHA20_POLY1305_SHA256");
}

#[test]
fn sixty_four_mib_down_tls12_aes_gcm_buffered() {
    sixty_four_mib_down("buffered", &TLS12_AES_GCM, "TLSv1.2 / ECDHE-ECDSA-AES128-GCM-SHA256");
}

#[test]
fn sixty_four_mib_down_tls13_chacha20_cut_through() {
    sixty_four_mib_down("cut-through", &TLS13_CHACHA, "TLSv1.3 / TLS_CHACHA20_POLY1305_SHA256");
}

#[test]
fn sixty_four_mib_down_tls12_aes_gcm_cut_through() {
    sixty_four_mib_down("cut-through", &TLS12_AES_GCM, "TLSv1.2 / ECDHE-ECDSA-AES128-GCM-SHA256");
}

/// curl's flags for a suite, and how curl names it.
type Suite<'a> = (&'a [&'a str], &'a str);

/// With TSO/GSO and checksum offload on at every host and gate port (the veth default), the
/// server's stack hands the gate 64 KiB segments and the client's uploads come the same way: the
/// gate seals the server's whole, opens the client's whole (in either release mode), and both
/// directions arrive intact.
#[test]
fn sixty_four_mib_down_and_up_with_segmentation_offload_on() {
    // Both release modes: the client's frames are opened whole by either.
    for (mode, tls, expect) in [
        ("buffered", &TLS13_AES_GCM[..], "TLSv1.3 / TLS_AES_128_GCM_SHA256"),
        ("cut-through", &TLS12_AES_GCM[..], "TLSv1.2 / ECDHE-ECDSA-AES128-GCM-SHA256"),
    ] {
        let s = Scene::new(1, BIG);
        s.net.offloads_on();
        let _gate = s.direct(&["--mode", mode, "--admin", ADMIN]);
        sixty_four_mib(&s, tls, expect, true);
        let v = s.status();
        let bridge = &v["inline"]["bridge"];
        assert!(
            bridge["gso_whole"].as_u64() > Some(0),
            "{mode}: no GSO frame reached the engine whole: {bridge}"
        );
        // The upload's frames too: they reach the engine after the handshake, so none was cut.
        assert_eq!(bridge["gso_cut"].as_u64(), Some(0), "{mode}: an upload GSO frame was cut: {bridge}");
        assert_eq!(bridge["oversize"].as_u64(), Some(0), "{mode}: {bridge}");
        // Toward the client the engine's MSS-sized segments leave in runs, one message each.
        let ring = &v["inline"]["rings"][0];
        let (frames, messages) = (ring["tx_frames"].as_u64().unwrap(), ring["tx_messages"].as_u64().unwrap());
        assert!(messages > 0 && messages < frames, "{mode}: no run of segments sent as one message: {ring}");
        assert_eq!(ring["rx_truncated"].as_u64(), Some(0), "{mode}: {ring}");
    }
}

/// Uploads under impairment with segmentation offload on: the client's stack hands its veth
/// 64 KiB frames, which the gate opens whole, and the impairing hop between them drops 2 %,
/// reorders 3 % and duplicates 1 % of the frames both ways, whole: a lost upload frame is 45
/// segments lost at once. Both release modes; every upload arrives byte-identical and no
/// record fails its tag.
#[test]
fn uploads_of_whole_frames_under_impairment_arrive_intact() {
    for (mode, seed) in [("buffered", 11), ("cut-through", 12)] {
        let (s, hop) = Scene::impaired(InlineNet::impaired(1), seed);
        let _gate = s.direct(&["--mode", mode, "--admin", ADMIN]);
        for round in 0..2 {
            s.upload_big(None, &format!("{mode}, upload {round}"));
        }
        assert_impaired(&hop, mode);
        let metrics =
            tlsgate_testkit::clients::curl_in(&s.net.gate, &["--fail", &format!("http://{ADMIN}/metrics")]);
        let text = String::from_utf8_lossy(&metrics.stdout);
        assert!(text.contains("tlsgate_inline_mac_failures_total 0"), "{mode}: {text}");
        let v = s.status();
        let bridge = &v["inline"]["bridge"];
        assert!(bridge["gso_whole"].as_u64() > Some(100), "{mode}: the uploads' frames came whole: {bridge}");
    }
}

/// Downloads under impairment between the gate and the servers, segmentation offload on: the
/// server's stack hands its veth 64 KiB frames, which the gate seals whole, and the impairing
/// hop between the gate and the switch drops 2 %, reorders 3 % and duplicates 1 % of the frames
/// both ways, whole: the engine holds the server's bytes beyond each gap, reports them in SACK
/// blocks and repairs the records toward the client only in order. Both release modes; every
/// download arrives byte-identical.
#[test]
fn downloads_under_impairment_toward_the_servers_arrive_intact() {
    for (mode, seed) in [("buffered", 13), ("cut-through", 14)] {
        let (s, hop) = Scene::impaired(InlineNet::impaired_toward_servers(1), seed);
        let _gate = s.direct(&["--mode", mode, "--admin", ADMIN]);
        for round in 0..2 {
            let down = s.client().curl(&strs(&s.https(SERVER, "/big.bin", &["--fail", "--max-time", "120"])));
            assert!(down.status.success(), "{mode}, download {round}: {}", describe(&down));
            assert_eq!(sha256(&down.stdout), s.sites[0].big_sha256, "{mode}, download {round} differs");
        }
        assert_impaired(&hop, mode);
        let v = s.status();
        let bridge = &v["inline"]["bridge"];
        assert!(bridge["gso_whole"].as_u64() > Some(100), "{mode}: the server's frames came whole: {bridge}");
    }
}

/// Everything the gate sends counts against its sending socket's buffer until the receiving
/// stack takes it. Steered (the client's and the server's receive processing on CPU 1, where
/// curl uploads; the gate's on CPU 0, where it runs), the gate's frames wait in the busy CPU's
/// backlog: with the socket's default buffer (three 64 KiB GSO frames) sends failed by the
/// hundred, each a frame lost at the gate, and uploads crawled through the client's
/// retransmission timeouts (64 MiB in 3 to 16 s against 0.2 s, or cut by nginx's body timeout).
/// The rings' `tx_errors` counted them; now the gate drops none.
#[test]
fn uploads_to_a_busy_cpus_stack_lose_no_frame_at_the_gate() {
    let s = Scene::new(1, BIG);
    s.net.offloads_on();
    s.net.steer_receive();
    let service = format!("{SERVER}:443=80");
    let _gate = s.gate_on(Some("0"), &["--service", &service], &["--admin", ADMIN]);
    for round in 0..3 {
        s.upload_big(Some("1"), &format!("upload {round}"));
    }
    let v = s.status();
    for ring in v["inline"]["rings"].as_array().expect("rings") {
        assert_eq!(ring["tx_errors"].as_u64(), Some(0), "frames the gate failed to send: {ring}");
    }
}

/// Uploads: 64 MiB down and the same 64 MiB up, every suite (TLS 1.2 ChaCha20-Poly1305 only here,
/// down and up) and release mode, one topology and gate per mode. On a loaded machine the gate's
/// ring drops bursts of client segments; the client repairs them by SACK (the engine reports
/// what it holds beyond a gap), where before its RTT estimate grew until an upload stalled past
/// nginx's 60 s body timeout.
#[test]
fn sixty_four_mib_up_every_suite_and_release() {
    const TLS12_CHACHA_NAME: &str = "TLSv1.2 / ECDHE-ECDSA-CHACHA20-POLY1305";
    let modes: [(&str, &[Suite]); 2] = [
        (
            "buffered",
            &[
                (&TLS13_AES_GCM, "TLSv1.3 / TLS_AES_128_GCM_SHA256"),
                (&TLS13_CHACHA, "TLSv1.3 / TLS_CHACHA20_POLY1305_SHA256"),
                (&TLS12_AES_GCM, "TLSv1.2 / ECDHE-ECDSA-AES128-GCM-SHA256"),
                (&TLS12_CHACHA, TLS12_CHACHA_NAME),
            ],
        ),
        (
            "cut-through",
            &[
                (&TLS13_CHACHA, "TLSv1.3 / TLS_CHACHA20_POLY1305_SHA256"),
                (&TLS12_AES_GCM, "TLSv1.2 / ECDHE-ECDSA-AES128-GCM-SHA256"),
                (&TLS12_CHACHA, TLS12_CHACHA_NAME),
            ],
        ),
    ];
    for (mode, suites) in modes {
        let s = Scene::new(1, BIG);
        let _gate = s.direct(&["--mode", mode, "--admin", ADMIN]);
        for (tls, expect) in suites {
            sixty_four_mib(&s, tls, expect, true);
        }
    }
}

#[test]
fn the_server_sees_the_clients_own_address_and_port_and_the_gate_holds_no_socket() {
    let s = Scene::new(1, 16 << 20);
    let _gate = s.direct(&[]);
    // A download held open (rate-limited), so the connection is there to be looked at.
    let slow =
        s.https(SERVER, "/big.bin", &["--limit-rate", "256k", "--local-port", "40300", "-o", "/dev/null"]);
    let mut args = vec!["-sS", "--max-time", "120"];
    args.extend(strs(&slow));
    let curl = Proc::spawn("curl", s.client().ns.command("curl", &args));

    let at_client = s
        .client()
        .ns
        .wait_sockets(&["-t", "state", "established", "sport = :40300"], Duration::from_secs(20));
    assert!(at_client.contains(&format!("{SERVER}:443")), "client side: {at_client}");
    let at_server = s.net.servers[0]
        .ns
        .wait_sockets(&["-t", "state", "established", "dport = :40300"], Duration::from_secs(5));
    assert!(
        at_server.contains(&format!("{SERVER}:80")) && at_server.contains(&format!("{CLIENT}:40300")),
        "server side: {at_server}"
    );
    // The gate terminates nothing: not one TCP socket in its namespace, tlsgate's or another's.
    let gate = s.net.gate.run("ss", &["-Htanp"]);
    assert!(gate.status.success());
    let gate = String::from_utf8_lossy(&gate.stdout);
    assert!(gate.trim().is_empty(), "TCP sockets in the gate: {gate}");
    drop(curl);

    let body = s.client().fetch(30, &strs(&s.https(SERVER, "/", &["--local-port", "40301"])));
    assert_eq!(body, b"hello from server1\n");
    let lines = s.sites[0].log_lines_for(&format!("{CLIENT}:40301"), 1);
    assert!(lines.iter().any(|l| l.contains("\"GET / HTTP/1.1\" 200")), "{}", s.sites[0].nginx.access_log());
}

#[test]
fn captures_show_tls_records_on_the_client_side_and_plaintext_on_the_server_side() {
    let s = Scene::new(1, 256 << 10);
    let _gate = s.direct(&[]);
    let server = &s.net.servers[0];
    let site = &s.sites[0];
    let client_cap = s.client().capture();
    let server_cap = server.capture();

    let body = s.client().fetch(30, &strs(&s.https(SERVER, "/", &["--local-port", "40400"])));
    assert_eq!(body, b"hello from server1\n");
    let source = site.big_path();
    let put = ["--local-port", "40401", "-T", source.to_str().unwrap()];
    s.client().fetch(30, &strs(&s.https(SERVER, "/up/small.bin", &put)));
    assert_eq!(site.uploaded_sha256("small.bin"), site.big_sha256);

    let client_packets = client_cap.stop();
    let server_packets = server_cap.stop();
    assert_wire_sized(&client_packets, s.client().mtu(), "client side");
    assert_wire_sized(&server_packets, server.mtu(), "server side");

    // Client side: TLS records only, in every direction of every connection, nothing in clear.
    let client_streams = pcap::streams(&client_packets);
    assert_eq!(client_streams.len(), 4, "two connections, both directions");
    for stream in &client_streams {
        assert!(stream.src.port() == 443 || stream.dst.port() == 443, "{} -> {}", stream.src, stream.dst);
        let types = assert_tls_stream(stream);
        assert!(types.contains(&23), "{} -> {}: no application data", stream.src, stream.dst);
    }
    for p in client_packets.iter().filter_map(|p| p.tcp.as_ref()) {
        for clear in [&b"GET /"[..], b"PUT /", b"HTTP/1.1", b"hello from"] {
            assert!(
                !contains(&p.payload, clear),
                "{:?} in clear on the client side",
                String::from_utf8_lossy(clear)
            );
        }
    }

    // Server side: the same connections, plaintext HTTP, at the client's own sequence numbers.
    let server_streams = pcap::streams(&server_packets);
    let find = |streams: &[pcap::Stream], src: u16| streams.iter().find(|s| s.src.port() == src).cloned();
    for (port, request) in [(40400, &b"GET / HTTP/1.1\r\n"[..]), (40401, b"PUT /up/small.bin HTTP/1.1\r\n")] {
        let outer = find(&client_streams, port).expect("the client's connection");
        let inner = find(&server_streams, port)
            .unwrap_or_else(|| panic!("no connection from port {port} at the server"));
        assert_eq!(inner.src.to_string(), format!("{CLIENT}:{port}"));
        assert_eq!(inner.dst.to_string(), format!("{SERVER}:80"));
        assert!(
            inner.bytes.starts_with(request),
            "server side from {port}: {:?}",
            &inner.bytes[..64.min(inner.bytes.len())]
        );
        assert_eq!((inner.after_hole, inner.rewritten), (0, 0), "server side from {port}");
        assert_eq!(outer.isn, inner.isn, "the client's ISN reaches the server: one connection end to end");
        let outer_back = client_streams.iter().find(|s| s.dst.port() == port).unwrap();
        let inner_back =
            server_streams.iter().find(|s| s.dst.port() == port).expect("the server's direction");
        assert_eq!(outer_back.isn, inner_back.isn, "the server's ISN reaches the client");
    }
    let answer = server_streams.iter().find(|s| s.dst.port() == 40400).unwrap();
    assert!(contains(&answer.bytes, b"hello from server1"), "the response left the server in plaintext");
}

#[test]
fn balanced_mode_spreads_clients_over_the_pool_and_moves_them_off_a_dead_member() {
    let mut s = Scene::new(2, 1024);
    let pool = format!("{}:80,{}:80", SERVERS[0], SERVERS[1]);
    let _gate = s.gate(&["--vip", &format!("{VIP}:443"), "--pool", &pool], &[]);
    // Sixteen client hosts: all on one member by chance has odds of 2 in 65536.
    let clients: Vec<String> = (11..27).map(|i| format!("10.203.0.{i}")).collect();
    for addr in &clients {
        s.net.add_client_addr(addr);
    }
    let get = |s: &Scene, from: &str| {
        let out =
            s.client().curl(&strs(&s.https(VIP, "/", &["--fail", "--max-time", "20", "--interface", from])));
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let mut on = Vec::new();
    for from in &clients {
        let first = get(&s, from).unwrap_or_else(|| panic!("{from}: no answer through the VIP"));
        assert_eq!(get(&s, from).as_deref(), Some(first.as_str()), "{from} moved between members");
        on.push(first);
    }
    for name in ["hello from server1", "hello from server2"] {
        assert!(on.iter().any(|o| o == name), "no client reached {name}: {on:?}");
    }
    // The servers saw the clients' own addresses.
    for (i, from) in clients.iter().enumerate() {
        let site = if on[i] == "hello from server1" { &s.sites[0] } else { &s.sites[1] };
        assert!(
            site.nginx.access_log().contains(&format!("peer=\"{from}:")),
            "{from} not in {}'s log",
            site.name
        );
    }
    // The VIP is answered in ARP by the gate, with neither server's MAC.
    let neigh = s.client().ns.run("ip", &["neigh", "show", VIP]);
    let neigh = String::from_utf8_lossy(&neigh.stdout).to_string();
    assert!(neigh.contains("lladdr"), "the VIP was never resolved: {neigh:?}");
    for server in &s.net.servers {
        assert!(!neigh.contains(&server.mac()), "the VIP resolved to a server: {neigh}");
    }

    // server1's nginx dies (its host now refuses port 80). Its clients get through to server2
    // within a few attempts (the gate learns from failed connections), then at once.
    s.sites[0].nginx.kill();
    for (i, from) in clients.iter().enumerate().filter(|(i, _)| on[*i] == "hello from server1") {
        let answer = (0..5).find_map(|_| get(&s, from));
        assert_eq!(answer.as_deref(), Some("hello from server2"), "client {i} ({from}) after server1 died");
    }
    for from in &clients {
        assert_eq!(get(&s, from).as_deref(), Some("hello from server2"), "{from} after the pool settled");
    }
}

#[test]
fn traffic_that_is_not_the_service_crosses_unchanged() {
    let s = Scene::new(1, 1024);
    let _gate = s.direct(&[]);
    let server = &s.net.servers[0];
    // ARP and ICMP both ways: the client learns the server's own MAC.
    s.client().ns.must("ping", &["-c", "1", "-W", "5", SERVER]);
    server.ns.must("ping", &["-c", "1", "-W", "5", CLIENT]);
    let neigh = s.client().ns.run("ip", &["neigh", "show", SERVER, "dev", &s.client().iface]);
    let neigh = String::from_utf8_lossy(&neigh.stdout).to_string();
    assert!(neigh.contains(&server.mac()), "the client's entry {neigh:?} is not the server's MAC");
    // Plain TCP on a port no service covers: nginx's 8080, in clear, from the client's port.
    let body = s.client().fetch(20, &["--local-port", "40500", &format!("http://{SERVER}:8080/")]);
    assert_eq!(body, b"hello from server1\n");
    assert_eq!(s.sites[0].log_lines_for(&format!("{CLIENT}:40500"), 1).len(), 1);
}

/// Seconds on a CPU that the threads of process `pid` have had so far (each thread's
/// /proc/PID/task/TID/schedstat starts with its time on a CPU in nanoseconds).
fn cpu_seconds(pid: u32) -> f64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task");
    let nanos: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanos as f64 / 1e9
}

#[test]
fn an_interface_going_down_is_waited_for_and_one_removed_stops_the_gate() {
    let s = Scene::new(1, 1024);
    let mut gate = s.direct(&[]);
    let (ns, iface) = (&s.net.gate, s.net.gate_client_if.as_str());
    ns.must("ip", &["link", "set", iface, "down"]);
    gate.proc.wait_for(&["interface went down", iface], Duration::from_secs(10));
    // The socket's error was read, so poll(2) blocks again: before, it reported POLLERR at once
    // on every call from then on and the bridge thread took a whole CPU, even after the link
    // came back. A measurement over a second, not a wait for an event: spinning uses all of it.
    let (before, at) = (cpu_seconds(gate.proc.pid()), std::time::Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let share = (cpu_seconds(gate.proc.pid()) - before) / at.elapsed().as_secs_f64();
    assert!(share < 0.5, "the gate used {:.0} % of a CPU with its client interface down", share * 100.0);
    // What the server side sends toward the client meanwhile (the server's ARP requests and
    // pings) the kernel refuses: dropped and counted, and said in the log once a second.
    let _ = s.net.servers[0].ns.run("ping", &["-c", "2", "-i", "0.2", "-W", "1", CLIENT]);
    gate.proc.wait_for(&["frames the kernel refused to send dropped", iface], Duration::from_secs(10));

    // Up again: frames cross as before (ping retries until the link has carrier).
    ns.must("ip", &["link", "set", iface, "up"]);
    s.client().ns.must("ping", &["-c", "1", "-w", "10", SERVER]);
    let body = s.client().fetch(30, &strs(&s.https(SERVER, "/", &[])));
    assert_eq!(body, b"hello from server1\n");

    // Removed: no frame can cross again, so the gate says which interface and exits non-zero
    // (for its supervisor to restart it) instead of bridging nothing.
    ns.must("ip", &["link", "del", iface]);
    let status =
        gate.proc.wait_exit(Duration::from_secs(10)).expect("the gate exits once its interface is gone");
    assert!(!status.success(), "{status:?}");
    let log = gate.proc.log_text();
    assert!(log.contains(&format!("client interface {iface} is gone")), "{log}");
}

#[test]
fn openssl_s_client_gets_the_certificate_and_a_response() {
    let s = Scene::new(1, 1024);
    let _gate = s.direct(&[]);
    let request = format!("GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n");
    for version in ["-tls1_3", "-tls1_2"] {
        let connect = format!("{SERVER}:443");
        let args =
            ["-connect", &connect, "-servername", SERVER_NAME, "-CAfile", s.pki.ca(), "-verify_return_error"];
        let mut args = args.to_vec();
        args.extend_from_slice(&[version, "-ign_eof"]);
        let out = s_client_in(&s.client().ns, &args, request.as_bytes());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("Verify return code: 0 (ok)"), "{version}: {}", describe(&out));
        assert!(stdout.contains(&format!("CN = {SERVER_NAME}")), "{version}: {}", describe(&out));
        assert!(
            stdout.contains("HTTP/1.1 200 OK") && stdout.contains("hello from server1"),
            "{version}: {}",
            describe(&out)
        );
    }
    // RFC 6066 max_fragment_length offered: neither path negotiates it (rustls ignores the
    // extension), so the client takes full-size records; a 1 KiB body in one record, larger
    // than the 512 bytes asked for, arrives end to end.
    let request = format!("GET /big.bin HTTP/1.1\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n");
    for version in ["-tls1_3", "-tls1_2"] {
        let connect = format!("{SERVER}:443");
        let args = ["-connect", &connect, "-servername", SERVER_NAME, "-CAfile", s.pki.ca(), version];
        let mut args = args.to_vec();
        args.extend_from_slice(&["-verify_return_error", "-maxfraglen", "512", "-ign_eof"]);
        let out = s_client_in(&s.client().ns, &args, request.as_bytes());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("Verify return code: 0 (ok)"), "{version}: {}", describe(&out));
        assert!(
            stdout.contains("HTTP/1.1 200 OK") && stdout.contains("Content-Length: 1024"),
            "{version} -maxfraglen 512: {}",
            describe(&out)
        );
        assert!(out.stdout.len() > 1024, "{version}: the body arrived: {}", describe(&out));
    }
}

/// 2 Mbit/s with up to 400 ms of queue each way, and a client advertising 1000 bytes: less than
/// one full segment's record, so records are cut to the window, and every byte waits on the
/// window's ACK clock.
fn shaped_scene() -> Scene {
    let s = Scene::new(1, 1 << 20);
    for host in [s.client(), &s.net.servers[0]] {
        host.shape("2mbit", "32kbit", "400ms");
    }
    s.net.clamp_client_window(SERVER, 1000);
    s
}

#[test]
fn a_shaped_link_and_a_small_client_window_carry_a_mebibyte_down() {
    let s = shaped_scene();
    let _gate = s.direct(&[]);
    let down = s.client().fetch(240, &strs(&s.https(SERVER, "/big.bin", &[])));
    assert_eq!(sha256(&down), s.sites[0].big_sha256, "download differs");
}

#[test]
fn a_shaped_link_and_a_small_client_window_carry_a_mebibyte_up() {
    let s = shaped_scene();
    let _gate = s.direct(&[]);
    let site = &s.sites[0];
    let source = site.big_path();
    s.client().fetch(240, &strs(&s.https(SERVER, "/up/big.bin", &["-T", source.to_str().unwrap()])));
    assert_eq!(site.uploaded_sha256("big.bin"), site.big_sha256, "upload differs");
}

/// Impairment on real stacks: an impairing hop between client and gate drops 3 %, reorders 5 %
/// and duplicates 1 % of the frames both ways (seeded); 32 downloads of 4 MiB at once through
/// the gate all arrive byte-identical, and the engine saw no record fail its tag.
#[test]
fn thirty_two_flows_under_loss_reordering_and_duplication_arrive_intact() {
    const LEN: usize = 4 << 20;
    let net = InlineNet::impaired(1);
    let pki = Pki::new();
    let site = Site::start(&net.servers[0], "server1", LEN, None);
    let s = Scene { sites: vec![site], net, pki };
    let hop = s.net.start_impairment(Impairment { loss: 0.03, reorder: 0.05, duplicate: 0.01, seed: 7 });
    let _gate = s.direct(&["--admin", ADMIN]);
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> =
        vec!["--no-progress-meter".into(), "--parallel".into(), "--parallel-max".into(), "32".into()];
    args.extend(["--fail".into(), "--max-time".into(), "300".into()]);
    for i in 0..32 {
        let https = s.https(SERVER, "/big.bin", &[]);
        // `https` ends with the URL; its options apply to every transfer.
        if i == 0 {
            args.extend(https[..https.len() - 1].iter().cloned());
        }
        args.push("-o".into());
        args.push(dir.path().join(format!("f{i}")).to_str().unwrap().into());
        args.push(https.last().unwrap().clone());
    }
    let out = s.client().curl(&strs(&args));
    assert!(out.status.success(), "downloads: {}", describe(&out));
    for i in 0..32 {
        let got = std::fs::read(dir.path().join(format!("f{i}"))).unwrap();
        assert_eq!(got.len(), LEN, "flow {i} length");
        assert_eq!(sha256(&got), s.sites[0].big_sha256, "flow {i} differs");
    }
    let st = hop.stats();
    assert!(st.dropped > 100 && st.reordered > 100 && st.duplicated > 10, "the hop impaired: {st:?}");
    let metrics =
        tlsgate_testkit::clients::curl_in(&s.net.gate, &["--fail", &format!("http://{ADMIN}/metrics")]);
    let text = String::from_utf8_lossy(&metrics.stdout);
    assert!(text.contains("tlsgate_inline_mac_failures_total 0"), "{text}");
    assert!(text.contains("tlsgate_inline_flows_created_total 32"), "{text}");
    // Every frame fitted a ring block, and each interface's ring sent (runs or lone frames).
    for iface in [&s.net.gate_client_if, &s.net.gate_server_if] {
        let labels = format!("{{iface=\"{iface}\"}}");
        assert_eq!(
            metric(&text, &format!("tlsgate_inline_ring_rx_truncated_total{labels}")),
            Some(0),
            "{text}"
        );
        let sent = metric(&text, &format!("tlsgate_inline_ring_tx_messages_total{labels}"));
        assert!(sent > Some(0), "{iface} sent no message: {text}");
        // Bare ACKs left out of a batch: how many depends on timing, the series is always there.
        let superseded = metric(&text, &format!("tlsgate_inline_ring_tx_acks_superseded_total{labels}"));
        assert!(superseded.is_some(), "{iface}: no superseded-ACK series: {text}");
    }
}

/// The value of the series `series` (name and labels) in a Prometheus text exposition.
fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// SIGHUP re-reads the certificate: flows that begin afterwards get the new one, and the gate
/// keeps bridging.
#[test]
fn sighup_gives_new_flows_the_new_certificate() {
    use tlsgate_tls::pki::{write_file, TestCa};
    let s = Scene::new(1, 1024);
    let gate = s.direct(&[]);
    let get = |ca: &str| {
        let resolve = format!("{SERVER_NAME}:443:{SERVER}");
        let url = format!("https://{SERVER_NAME}/");
        s.client().curl(&["--fail", "--max-time", "20", "--cacert", ca, "--resolve", &resolve, &url])
    };
    let old_ca = s.pki.ca().to_string();
    assert_eq!(get(&old_ca).stdout, b"hello from server1\n");

    let second = TestCa::new("second inline CA").unwrap();
    let second_ca = s.pki.path("second-ca.pem");
    write_file(&second_ca, second.cert_pem(), 0o644).unwrap();
    let issued = second.issue_server(&[SERVER_NAME, SERVER]).unwrap();
    tlsgate_testkit::pki::swap_in(&issued, s.pki.dir.path(), "gate");
    let hup = std::process::Command::new("kill").args(["-HUP", &gate.proc.pid().to_string()]).status();
    assert!(hup.unwrap().success());
    gate.proc.wait_for(&["reloaded", "section=inline"], Duration::from_secs(30));

    let new = get(second_ca.to_str().unwrap());
    assert_eq!(new.stdout, b"hello from server1\n", "{}", describe(&new));
    let old = get(&old_ca);
    assert!(!old.status.success(), "the old CA no longer verifies new flows: {}", describe(&old));
}

/// An idle connection is parked by the engine's timer (its AEAD contexts dropped, its queues
/// freed) and carries the next request as before: a Python client sends a keep-alive request,
/// then waits (on its stdin) until /status.json counts the flow parked before sending another
/// on the same connection.
#[test]
fn an_idle_connection_is_parked_and_carries_the_next_request() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let s = Scene::new(1, 1024);
    let _gate = s.direct(&["--admin", ADMIN]);
    s.net.gate.wait_listening(9900, Duration::from_secs(10));
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
c = ctx.wrap_socket(socket.create_connection((sys.argv[2], 443)), server_hostname=sys.argv[3])
req = ("GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % sys.argv[3]).encode()
def get():
    c.sendall(req)
    got = b""
    while b"hello from server1\n" not in got:
        more = c.recv(4096)
        if not more:
            sys.exit("connection closed")
        got += more
    print("response", flush=True)
get()
sys.stdin.readline()
get()
"#;
    let mut child = s
        .client()
        .ns
        .command("python3", &["-c", script, s.pki.ca(), SERVER, SERVER_NAME])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is installed");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "response", "the first request");
    wait_parked(&s, 1);
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "response", "the request after parking");
    assert!(child.wait().unwrap().success());
}

/// Waits (bounded) until /status.json counts `n` flows parked and `n` put in the compact
/// parked form (nothing in flight: what resuming needs, the rest rebuilt by the next packet).
fn wait_parked(s: &Scene, n: u64) {
    let parked = || {
        let status = tlsgate_testkit::clients::curl_in(
            &s.net.gate,
            &["--fail", &format!("http://{ADMIN}/status.json")],
        );
        let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status.json");
        let engine = &v["inline"]["engine"];
        let count = |name: &str| engine[name].as_u64().unwrap_or(0);
        count("flows_parked").min(count("flows_compacted"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while parked() < n {
        assert!(std::time::Instant::now() < deadline, "the idle flow was never parked in the compact form");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A parked TLS 1.3 connection follows key updates both ways: `openssl s_client` sends a
/// request, waits until the flow is parked, sends a KeyUpdate asking for the engine's (its `K`
/// command, RFC 8446 §4.6.3) and a second request on the same connection. nginx gets it (the
/// engine opened it under the client's next key) and its answer reaches the client (sealed
/// under the engine's next key, after the engine's KeyUpdate): both keys derived from the
/// traffic secrets the engine keeps for a parked flow instead of rustls's key schedule. Twice.
#[test]
fn a_parked_connection_follows_key_updates_both_ways() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    use std::sync::mpsc;
    let s = Scene::new(1, 1024);
    let _gate = s.direct(&["--admin", ADMIN]);
    s.net.gate.wait_listening(9900, Duration::from_secs(10));
    let connect = format!("{SERVER}:443");
    let args = ["s_client", "-connect", &connect, "-servername", SERVER_NAME, "-CAfile", s.pki.ca()];
    let mut args = args.to_vec();
    args.extend_from_slice(&["-tls1_3", "-crlf", "-verify_return_error"]);
    let mut child = s
        .client()
        .ns
        .command("openssl", &args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    // Both outputs as lines through one channel, so every wait below has a deadline.
    let (tx, rx) = mpsc::channel::<String>();
    for out in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let wait_for = |what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(what) => return,
                Ok(_) => {}
                Err(e) => panic!("waiting for {what:?} from s_client: {e}"),
            }
        }
    };
    let mut stdin = child.stdin.take().unwrap();
    let request = format!("GET / HTTP/1.1\nHost: {SERVER_NAME}\n\n");
    stdin.write_all(request.as_bytes()).unwrap();
    wait_for("hello from server1");
    for round in 1..=2 {
        wait_parked(&s, round);
        stdin.write_all(b"K\n").unwrap();
        wait_for("KEYUPDATE");
        stdin.write_all(request.as_bytes()).unwrap();
        wait_for("hello from server1");
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

//! `tlsgate connect gate --kernel-splice`: the gate as its own host between two networks
//! (network namespaces, real Linux TCP), curl and the portal on one side, an nginx that requires
//! the user's own client certificate on the other. After the downgrade the portal's and the
//! destination's TCP connections are spliced into one by the BPF program at the gate's
//! interfaces: every byte arrives, both ways, under loss, reordering and duplication too; the
//! gate's sockets carry none of it; connections that cannot be spliced are relayed as before.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use tlsgate_testkit::clients::describe;
use tlsgate_testkit::data::{random_file, sha256_file};
use tlsgate_testkit::impair::{ImpairHop, Impairment};
use tlsgate_testkit::netns::Netns;
use tlsgate_testkit::nginx::Nginx;
use tlsgate_testkit::pki::{client_cert, Pki};
use tlsgate_testkit::process::{Proc, Tlsgate};
use tlsgate_tls::pki::{write_file, TestCa};

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const WAIT: Duration = Duration::from_secs(30);
/// Only the gate maps this name (`--host`).
const DEST: &str = "internal.test";
const CLIENT: &str = "10.94.1.1";
const GATE_C: &str = "10.94.1.2";
const GATE_D: &str = "10.94.2.1";
const DEST_IP: &str = "10.94.2.2";
const GATE_PORT: u16 = 8443;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// client — [impairing hop] — gate (two interfaces, the program on both) — destination.
struct Net {
    client: Netns,
    gate: Netns,
    dest: Netns,
    hop: Option<(Netns, String, String)>,
    /// The gate's interfaces toward the client and toward the destination.
    gate_ifs: (String, String),
}

fn net(impaired: bool) -> Net {
    let client = Netns::new("kscli");
    let gate = Netns::new("ksgate");
    let dest = Netns::new("ksdst");
    let (hop, gate_c) = if impaired {
        let hop = Netns::new("ksimp");
        let (client_if, hop_a) = client.veth(Some(&format!("{CLIENT}/24")), &hop, None);
        let (hop_b, gate_c) = hop.veth(None, &gate, Some(&format!("{GATE_C}/24")));
        // Wire-sized frames through the hop, which drops, reorders and duplicates them one by one.
        client.must("ethtool", &["-K", &client_if, "tso", "off", "gso", "off", "tx", "off"]);
        gate.must("ethtool", &["-K", &gate_c, "tso", "off", "gso", "off", "tx", "off"]);
        for dev in [&hop_a, &hop_b] {
            hop.must("ethtool", &["-K", dev, "gro", "off", "tso", "off", "gso", "off", "tx", "off"]);
        }
        (Some((hop, hop_a, hop_b)), gate_c)
    } else {
        let (_, gate_c) = client.veth(Some(&format!("{CLIENT}/24")), &gate, Some(&format!("{GATE_C}/24")));
        (None, gate_c)
    };
    let (gate_d, _) = gate.veth(Some(&format!("{GATE_D}/24")), &dest, Some(&format!("{DEST_IP}/24")));
    Net { client, gate, dest, hop, gate_ifs: (gate_c, gate_d) }
}

struct World {
    net: Net,
    pki: Pki,
    dest_ca: PathBuf,
    user: (PathBuf, PathBuf),
    portal_cert: (PathBuf, PathBuf),
    portal_serial: u64,
    crl: PathBuf,
    root: PathBuf,
    nginx: Nginx,
    gate: Tlsgate,
    portal: Tlsgate,
}

fn world(impaired: bool, big: usize, kernel_splice: bool) -> World {
    world_with(impaired, big, kernel_splice, &[])
}

fn world_with(impaired: bool, big: usize, kernel_splice: bool, gate_extra: &[&str]) -> World {
    let net = net(impaired);
    let pki = Pki::new();
    let dir = pki.dir.path().to_path_buf();
    let (gate_cert, gate_key) = pki.server("gate", &[GATE_C]);
    let (portal_cert, portal_key, portal_serial) = client_cert(&pki.ca, "laptop-1", &dir, "portal");
    let crl = dir.join("gate.crl");
    write_file(&crl, &pki.ca.crl(&[], 1).unwrap(), 0o644).unwrap();
    let dest = TestCa::new("destination CA").unwrap();
    let dest_ca = dir.join("dest-ca.pem");
    write_file(&dest_ca, dest.cert_pem(), 0o644).unwrap();
    let (dcert, dkey) = dest.issue_server(&[DEST]).unwrap().write(&dir, "dest").unwrap();
    let (uc, uk, _) = client_cert(&dest, "user-alice", &dir, "user");
    let root = dir.join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "hello from the inside\n").unwrap();
    if big > 0 {
        random_file(&root.join("big.bin"), big);
    }
    let nginx = Nginx::start_in_mtls(&net.dest, &root, 443, &dcert, &dkey, &dest_ca);

    let listen = format!("{GATE_C}:{GATE_PORT}");
    let allow = format!("laptop-1={DEST} 443,2222 to 10.94.2.0/24");
    let host = format!("{DEST}={DEST_IP}");
    let mut args = vec![
        "connect",
        "gate",
        "--listen",
        &listen,
        "--cert",
        s(&gate_cert),
        "--key",
        s(&gate_key),
        "--client-ca",
        pki.ca(),
        "--allow",
        &allow,
        "--host",
        &host,
        "--crl",
        s(&crl),
    ];
    args.extend_from_slice(gate_extra);
    if kernel_splice {
        args.extend(["--kernel-splice", &net.gate_ifs.0, "--kernel-splice", &net.gate_ifs.1]);
    }
    let gate = Tlsgate::start_command(net.gate.command(BIN, &args));
    gate.proc.wait_logged(&["connect gate listening"], WAIT);
    let portal = Tlsgate::start_command(net.client.command(
        BIN,
        &[
            "connect",
            "portal",
            "--listen",
            "127.0.0.1:3128",
            "--gate",
            &listen,
            "--ca",
            pki.ca(),
            "--cert",
            s(&portal_cert),
            "--key",
            s(&portal_key),
            "--route",
            DEST,
        ],
    ));
    portal.proc.wait_logged(&["connect portal listening"], WAIT);
    World {
        net,
        pki,
        dest_ca,
        user: (uc, uk),
        portal_cert: (portal_cert, portal_key),
        portal_serial,
        crl,
        root,
        nginx,
        gate,
        portal,
    }
}

/// curl's arguments for `path` on the destination through the portal at `proxy`, with the
/// user's own certificate.
fn curl_args(w: &World, proxy: &str, path: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["-sS", "--max-time", "120", "--proxy", proxy].map(String::from).into();
    for a in ["--cert", s(&w.user.0), "--key", s(&w.user.1), "--cacert", s(&w.dest_ca)].iter().chain(extra) {
        args.push(a.to_string());
    }
    args.push(format!("https://{DEST}{path}"));
    args
}

/// curl in the client's namespace, through the portal, with the user's own certificate.
fn user_curl(w: &World, path: &str, extra: &[&str]) -> Output {
    let args = curl_args(w, "http://127.0.0.1:3128", path, extra);
    w.net.client.run("curl", &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// `bytes` down and up through portal and gate, byte for byte.
fn down_and_up(w: &World, bytes: usize) {
    let down = w.pki.path("down.bin");
    let out = user_curl(w, "/big.bin", &["-o", s(&down)]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sha256_file(&down), sha256_file(&w.root.join("big.bin")), "download differs");
    let up = w.pki.path("up.bin");
    let sum = random_file(&up, bytes);
    let out = user_curl(w, "/uploaded.bin", &["-T", s(&up)]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sha256_file(&w.root.join("uploaded.bin")), sum, "upload differs");
}

/// The `tunnel closed` lines once `n` tunnels have closed, and the gate's namespace without a
/// TCP connection of theirs (its own sockets closed, the legs removed).
fn closed_tunnels(w: &World, n: usize) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let closed = w.gate.proc.lines_with(&["connect gate: tunnel closed"]);
        if closed.len() >= n {
            return closed;
        }
        assert!(Instant::now() < deadline, "{} of {n} tunnels closed", closed.len());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn field_u64(line: &str, key: &str) -> u64 {
    Proc::field(line, key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {key} in {line}"))
}

/// tcpdump on the gate's interface toward the client, into a file.
fn capture(w: &World) -> (Proc, PathBuf) {
    let file = w.pki.path("gate-client-side.pcap");
    let port = GATE_PORT.to_string();
    let cmd = w.net.gate.command(
        "tcpdump",
        &["-i", &w.net.gate_ifs.0, "-n", "-U", "-s", "0", "-w", s(&file), "tcp", "port", &port],
    );
    let proc = Proc::spawn("tcpdump", cmd);
    proc.wait_for(&["listening on"], WAIT);
    (proc, file)
}

#[test]
fn kernel_splice_carries_the_users_tls_64mib_each_way_past_the_gates_sockets() {
    const BIG: usize = 64 << 20;
    let w = world(false, BIG, true);
    let (tcpdump, pcap) = capture(&w);
    let out = user_curl(&w, "/index.html", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from the inside\n");
    // nginx checked the user's own certificate: the gate has neither it nor its CA.
    let log = w.nginx.access_log_lines(1);
    assert!(log.contains(",CN=user-alice\" "), "{log}");
    w.gate.proc.wait_logged(&["connect gate: tunnel open", "mode=\"downgrade, kernel splice\""], WAIT);
    // The inner ClientHello crossed the gate's client-side interface as raw TCP (its SNI in clear).
    let first = closed_tunnels(&w, 1);
    tcpdump.interrupt();
    let bytes = std::fs::read(&pcap).unwrap();
    assert!(bytes.windows(DEST.len()).any(|x| x == DEST.as_bytes()), "no inner SNI on the gate's wire");
    assert!(field_u64(&first[0], "down") > 0, "{}", first[0]);

    down_and_up(&w, BIG);
    let closed = closed_tunnels(&w, 3);
    // The program rewrote every byte of both transfers (its own counters, which the gate's
    // sockets never saw: they would not have been rewritten had they reached the sockets).
    assert!(field_u64(&closed[1], "down") >= BIG as u64, "{}", closed[1]);
    assert!(field_u64(&closed[2], "up") >= BIG as u64, "{}", closed[2]);
    assert!(w.gate.proc.lines_with(&["not spliced in the kernel"]).is_empty());
    // Nothing left on the gate: its sockets closed without a FIN or RST, the legs removed.
    let ss = w.net.gate.run("ss", &["-Htn", "state", "established"]);
    assert_eq!(String::from_utf8_lossy(&ss.stdout).trim(), "", "connections left on the gate");
    w.portal.proc.wait_logged(&["connect portal: tunnel closed"], WAIT);
}

#[test]
fn kernel_splice_keeps_every_byte_under_loss_reordering_and_duplication() {
    const BIG: usize = 16 << 20;
    let w = world(true, BIG, true);
    let (hop_ns, a, b) = w.net.hop.as_ref().unwrap();
    let hop =
        ImpairHop::start(hop_ns, a, b, Impairment { loss: 0.02, reorder: 0.02, duplicate: 0.02, seed: 7 });
    let out = user_curl(&w, "/index.html", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from the inside\n");
    down_and_up(&w, BIG);
    let stats = hop.stats();
    assert!(stats.dropped > 0 && stats.reordered > 0 && stats.duplicated > 0, "{stats:?}");
    let opened = w.gate.proc.lines_with(&["connect gate: tunnel open"]);
    assert_eq!(opened.len(), 3);
    assert!(opened.iter().all(|l| l.contains("kernel splice")), "{opened:?}");
    assert!(w.gate.proc.lines_with(&["not spliced in the kernel"]).is_empty());
    closed_tunnels(&w, 3);
}

#[test]
fn connections_that_cannot_be_spliced_are_relayed_with_the_reason_logged_and_counted() {
    let admin = "127.0.0.1:9901";
    let w = world_with(false, 4 << 20, true, &["--admin", admin]);
    // The portal's host sends no TCP timestamps: its connection and the destination's differ
    // in options the program cannot add or take away.
    w.net.client.must("sysctl", &["-qw", "net.ipv4.tcp_timestamps=0"]);
    down_and_up(&w, 4 << 20);
    w.gate.proc.wait_logged(&["not spliced in the kernel", "timestamps not on both connections"], WAIT);
    let closed = closed_tunnels(&w, 2);
    assert!(field_u64(&closed[0], "down") >= 4 << 20, "{}", closed[0]);
    let metrics =
        tlsgate_testkit::clients::curl_in(&w.net.gate, &["--fail", &format!("http://{admin}/metrics")]);
    assert!(metrics.status.success(), "/metrics: {}", describe(&metrics));
    let text = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        text.lines().any(|l| l == "tlsgate_connect_kernel_splice_fallbacks_total{reason=\"timestamps\"} 2"),
        "one fallback per tunnel, by reason: {text}"
    );
}

/// The gate spliced after dropping to an unprivileged user: it keeps CAP_NET_ADMIN only (the
/// repair-mode reads; the program was attached before).
#[test]
fn the_gate_splices_after_dropping_to_an_unprivileged_user() {
    let w = world_with(false, 4 << 20, true, &["--user", "nobody"]);
    w.gate.proc.wait_logged(&["privileges dropped", "capabilities=CAP_NET_ADMIN"], WAIT);
    down_and_up(&w, 4 << 20);
    closed_tunnels(&w, 2);
    assert!(w.gate.proc.lines_with(&["not spliced in the kernel"]).is_empty());
}

/// A reload whose CRL revokes the portal's certificate ends its spliced tunnel mid-transfer: the
/// entries go, and the next segment from either side meets no socket on the gate.
#[test]
fn revoking_the_portals_certificate_ends_a_spliced_tunnel() {
    const BIG: usize = 32 << 20;
    let w = world(false, BIG, true);
    let part = w.pki.path("part.bin");
    let args = curl_args(&w, "http://127.0.0.1:3128", "/big.bin", &["--limit-rate", "2M", "-o", s(&part)]);
    let mut held = w.net.client.command("curl", &args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut held = held.spawn().unwrap();
    w.gate.proc.wait_logged(&["connect gate: tunnel open", "kernel splice"], WAIT);
    // Bytes arrive through the splice before the reload.
    let deadline = Instant::now() + WAIT;
    while std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) < 1 << 20 {
        assert!(Instant::now() < deadline, "the download did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    write_file(&w.crl, &w.pki.ca.crl(&[w.portal_serial], 1).unwrap(), 0o644).unwrap();
    let hup = std::process::Command::new("kill").args(["-HUP", &w.gate.proc.pid().to_string()]).status();
    assert!(hup.unwrap().success());
    w.gate.proc.wait_logged(&["connect gate: tunnel failed", "revoked now"], WAIT);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = held.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "curl still running after the revocation");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "the download finished despite the revocation");
    assert!(std::fs::metadata(&part).unwrap().len() < BIG as u64);
}

/// Without `--kernel-splice` on the same topology, for contrast: relayed in user space (no
/// kernel-splice mode in the log), the same bytes.
#[test]
fn without_the_flag_the_gate_relays_in_user_space() {
    let w = world(false, 4 << 20, false);
    down_and_up(&w, 4 << 20);
    let opened = w.gate.proc.lines_with(&["connect gate: tunnel open"]);
    assert!(opened.iter().all(|l| l.contains("mode=\"downgrade\"")), "{opened:?}");
    closed_tunnels(&w, 2);
}

/// The gate refuses to start when the program cannot be attached, saying why.
#[test]
fn an_interface_that_does_not_exist_stops_the_gate_with_the_reason() {
    let net = net(false);
    let pki = Pki::new();
    let (cert, key) = pki.server("gate", &[GATE_C]);
    let out = net.gate.run(
        BIN,
        &[
            "connect",
            "gate",
            "--listen",
            &format!("{GATE_C}:{GATE_PORT}"),
            "--cert",
            s(&cert),
            "--key",
            s(&key),
            "--client-ca",
            pki.ca(),
            "--kernel-splice",
            "nosuchif0",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("attaching the BPF program to nosuchif0"), "{err}");
}

/// The same from a `[connect.gate]` section (`kernel_splice = [...]`) limited to TLS 1.2: the
/// portal's close_notify is then an alert record, whose header the program reads the same way.
#[test]
fn a_tls12_outer_session_from_the_config_file_is_spliced_the_same() {
    let w = world(false, 8 << 20, false);
    let dir = w.pki.dir.path();
    let (cert, key) = w.pki.server("gate12", &[GATE_C]);
    let config = dir.join("gate12.toml");
    let text = format!(
        "[connect.gate]\nlisten = \"{GATE_C}:{port}\"\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n\
         tls_versions = [\"1.2\"]\nhosts = {{ \"{DEST}\" = \"{DEST_IP}\" }}\n\
         kernel_splice = [\"{}\", \"{}\"]\n\
         [[connect.gate.allow]]\nidentity = \"laptop-1\"\nrules = [\"{DEST} 443 to 10.94.2.0/24\"]\n",
        s(&cert),
        s(&key),
        w.pki.ca(),
        w.net.gate_ifs.0,
        w.net.gate_ifs.1,
        port = GATE_PORT + 1,
    );
    std::fs::write(&config, text).unwrap();
    let gate = Tlsgate::start_command(w.net.gate.command(BIN, &["connect", "gate", "-c", s(&config)]));
    gate.proc.wait_logged(&["connect gate listening"], WAIT);
    let portal = Tlsgate::start_command(w.net.client.command(
        BIN,
        &[
            "connect",
            "portal",
            "--listen",
            "127.0.0.1:3129",
            "--gate",
            &format!("{GATE_C}:{}", GATE_PORT + 1),
            "--ca",
            w.pki.ca(),
            "--cert",
            s(&w.portal_cert.0),
            "--key",
            s(&w.portal_cert.1),
            "--route",
            DEST,
        ],
    ));
    portal.proc.wait_logged(&["connect portal listening"], WAIT);
    let down = w.pki.path("down12.bin");
    let args = curl_args(&w, "http://127.0.0.1:3129", "/big.bin", &["-o", s(&down)]);
    let out = w.net.client.run("curl", &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sha256_file(&down), sha256_file(&w.root.join("big.bin")));
    let opened = gate.proc.wait_logged(&["connect gate: tunnel open", "kernel splice"], WAIT);
    assert!(opened.contains("version=TLSv1_2"), "{opened}");
    let closed = gate.proc.wait_logged(&["connect gate: tunnel closed"], WAIT);
    assert!(field_u64(&closed, "down") >= 8 << 20, "{closed}");
    assert!(gate.proc.lines_with(&["not spliced in the kernel"]).is_empty());
}

/// A destination that speaks first (an SSH server's banner): bytes that come before the splice
/// is in place are held back (the destination retransmits them); the banner reaches the client
/// through the splice, then the exchange goes on both ways.
#[test]
fn a_destination_that_speaks_first_is_spliced_too() {
    let w = world(false, 0, true);
    let server = "import socket\n\
        l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
        l.bind(('10.94.2.2', 2222)); l.listen(); print('listening', flush=True)\n\
        c, _ = l.accept(); c.sendall(b'SSH-2.0-banner\\r\\n')\n\
        c.sendall(b'echo:' + c.recv(100)); c.close()\n";
    let server = Proc::spawn("banner", w.net.dest.command("python3", &["-c", server]));
    server.wait_for(&["listening"], WAIT);
    // The portal only routes DEST; through the gate's CONNECT directly would skip the portal.
    let client = format!(
        "import socket\n\
         s = socket.create_connection(('127.0.0.1', 3128), timeout=20)\n\
         s.sendall(b'CONNECT {DEST}:2222 HTTP/1.1\\r\\nHost: {DEST}:2222\\r\\n\\r\\n')\n\
         head = b''\n\
         while b'\\r\\n\\r\\n' not in head: head += s.recv(1)\n\
         assert head.startswith(b'HTTP/1.1 200'), head\n\
         banner = b''\n\
         while not banner.endswith(b'\\r\\n'): banner += s.recv(100)\n\
         s.sendall(b'hi'); print(banner.decode().strip(), s.recv(100).decode())\n"
    );
    let out = w.net.client.run("python3", &["-c", &client]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SSH-2.0-banner echo:hi");
    w.gate.proc.wait_logged(&["connect gate: tunnel open", "internal.test:2222", "kernel splice"], WAIT);
    assert!(w.gate.proc.lines_with(&["not spliced in the kernel"]).is_empty());
}

//! The real-kernel wire that `tlsgate inline run` is tested on (testkit::inline_net), checked with
//! a Linux bridge standing in the gate: the gate alone joins nothing; bridged, plain HTTP, pings
//! and ARP cross it; the server sees the client's own address, port and sequence numbers; the
//! captures read back as the traffic that crossed (requests in plaintext on port 80, TLS records
//! only on port 443, wire-sized packets); a shaped link with a small client window still carries
//! a transfer; two servers behind the switch each answer every client address. Needs root,
//! iproute2, ethtool, tcpdump, nginx and curl.

use tlsgate_testkit::data::sha256;
use tlsgate_testkit::inline_net::{
    assert_tls_stream, assert_wire_sized, InlineNet, Site, CLIENT, SERVERS, SERVER_NAME,
};
use tlsgate_testkit::pcap::{self, contains};
use tlsgate_testkit::pki::Pki;

const SERVER: &str = SERVERS[0];

#[test]
fn without_a_bridge_the_gate_joins_nothing() {
    let net = InlineNet::new(1);
    // The gate neither routes nor answers: a ping gets no reply within its deadline (exit status
    // 1; 2 would be an error of ping's own).
    let ping = net.client.ns.run("ping", &["-c", "1", "-W", "1", SERVER]);
    assert_eq!(ping.status.code(), Some(1), "{ping:?}");
}

#[test]
fn a_bridged_gate_carries_the_clients_own_connections_and_the_captures_show_them() {
    let net = InlineNet::new(1);
    net.join_with_linux_bridge();
    let pki = Pki::new();
    let (cert, key) = pki.server("server", &[SERVER_NAME, SERVER]);
    let server = &net.servers[0];
    let site = Site::start(server, "server1", 512 << 10, Some((&cert, &key)));
    let client_cap = net.client.capture();
    let server_cap = server.capture();

    // L2 and L3 cross: the client resolves the server's own MAC and gets a ping reply.
    net.client.ns.must("ping", &["-c", "1", "-W", "5", SERVER]);
    let neigh = net.client.ns.run("ip", &["neigh", "show", SERVER, "dev", &net.client.iface]);
    let neigh = String::from_utf8_lossy(&neigh.stdout).to_string();
    assert!(neigh.contains(&server.mac()), "client's neighbour entry {neigh:?} is not the server's MAC");

    // Plain HTTP from a known port: nginx logs the client's own address and that port.
    let url = format!("http://{SERVER}/");
    let body = net.client.fetch(20, &["--local-port", "40100", &url]);
    assert_eq!(body, b"hello from server1\n");
    let lines = site.log_lines_for(&format!("{CLIENT}:40100"), 1);
    assert!(lines.iter().any(|l| l.contains("\"GET / HTTP/1.1\" 200")), "{lines:?}");

    // A body each way, byte-identical.
    let big = format!("http://{SERVER}/big.bin");
    assert_eq!(sha256(&net.client.fetch(30, &[&big])), site.big_sha256);
    let up = format!("http://{SERVER}/up/copy.bin");
    net.client.fetch(30, &["-T", site.big_path().to_str().unwrap(), &up]);
    assert_eq!(site.uploaded_sha256("copy.bin"), site.big_sha256);

    // HTTPS straight to the server (the bridge does not touch it): the capture checks for TLS
    // records are checked on real TLS here.
    let resolve = format!("{SERVER_NAME}:443:{SERVER}");
    let https = format!("https://{SERVER_NAME}/");
    let body = net.client.fetch(20, &["--cacert", pki.ca(), "--resolve", &resolve, &https]);
    assert_eq!(body, b"hello from server1\n");

    let client_packets = client_cap.stop();
    let server_packets = server_cap.stop();
    assert_wire_sized(&client_packets, net.client.mtu(), "client side");
    assert_wire_sized(&server_packets, server.mtu(), "server side");

    let client_streams = pcap::streams(&client_packets);
    let server_streams = pcap::streams(&server_packets);
    let from_40100 = |streams: &[pcap::Stream]| {
        streams.iter().find(|s| s.src.port() == 40100).cloned().expect("the connection from port 40100")
    };
    let (at_client, at_server) = (from_40100(&client_streams), from_40100(&server_streams));
    assert!(at_server.bytes.starts_with(b"GET / HTTP/1.1\r\n"), "server side: {:?}", &at_server.bytes);
    assert_eq!(at_server.src.ip().to_string(), CLIENT);
    assert_eq!(at_client.isn, at_server.isn, "one connection end to end keeps the client's ISN");

    let tls: Vec<_> = client_streams.iter().filter(|s| s.src.port() == 443 || s.dst.port() == 443).collect();
    assert_eq!(tls.len(), 2, "one HTTPS connection, both directions");
    for stream in tls {
        let types = assert_tls_stream(stream);
        assert!(types.contains(&23), "no application data {}->{}: {types:?}", stream.src, stream.dst);
        assert!(!contains(&stream.bytes, b"hello from"), "plaintext inside the TLS stream");
    }
    let plain: Vec<_> = client_streams.iter().filter(|s| s.dst.port() == 80).collect();
    assert!(plain.iter().all(|s| tlsgate_testkit::pcap::tls_record_types(&s.bytes).is_err()));
}

#[test]
fn a_shaped_link_and_a_small_client_window_still_carry_a_transfer() {
    let net = InlineNet::new(1);
    net.join_with_linux_bridge();
    let server = &net.servers[0];
    let site = Site::start(server, "server1", 1 << 20, None);
    // 2 Mbit/s with a queue bounded by 400 ms both ways, and the client advertising 1000 bytes.
    for host in [&net.client, server] {
        host.shape("2mbit", "32kbit", "400ms");
    }
    net.clamp_client_window(SERVER, 1000);
    let cap = net.client.capture();
    let big = format!("http://{SERVER}/big.bin");
    assert_eq!(sha256(&net.client.fetch(120, &[&big])), site.big_sha256);
    let up = format!("http://{SERVER}/up/copy.bin");
    net.client.fetch(120, &["-T", site.big_path().to_str().unwrap(), &up]);
    assert_eq!(site.uploaded_sha256("copy.bin"), site.big_sha256);
    // The clamp is real: the server never sent more than the window beyond the client's ACK.
    let packets = cap.stop();
    let largest = packets
        .iter()
        .filter_map(|p| p.tcp.as_ref())
        .filter(|t| t.src.port() == 80)
        .map(|t| t.payload.len())
        .max()
        .unwrap();
    assert!(largest <= 1000, "a {largest}-byte segment to a client advertising 1000 bytes");
}

#[test]
fn two_servers_behind_the_switch_answer_every_client_address() {
    let net = InlineNet::new(2);
    net.join_with_linux_bridge();
    let sites: Vec<Site> = net
        .servers
        .iter()
        .enumerate()
        .map(|(i, h)| Site::start(h, &format!("server{}", i + 1), 1024, None))
        .collect();
    let clients = ["10.203.0.11", "10.203.0.12"];
    for addr in clients {
        net.add_client_addr(addr);
    }
    for (k, (site, server)) in sites.iter().zip(&net.servers).enumerate() {
        for (n, from) in clients.iter().enumerate() {
            let url = format!("http://{}/", server.addr);
            // A port per client and server: a closed connection waits in TIME_WAIT on its port.
            let port = (40200 + 10 * k + n).to_string();
            let body = net.client.fetch(20, &["--interface", from, "--local-port", &port, &url]);
            assert_eq!(body, format!("hello from {}\n", site.name).as_bytes());
            assert_eq!(site.log_lines_for(&format!("{from}:{port}"), n + 1).len(), 1);
        }
    }
}

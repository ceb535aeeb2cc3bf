//! The wire for a bump in it (`tlsgate inline run`), built from network namespaces:
//!
//! ```text
//! client ── veth ── gate ── veth ── switch (Linux bridge) ─┬─ veth ── server 1
//!                                                          └─ veth ── server 2 (balanced mode)
//! ```
//!
//! One IPv4 subnet spans it all. The gate's two interfaces carry no address and the gate does not
//! route, so only something joining them at L2 connects client and servers: `tlsgate inline run`,
//! or [`InlineNet::join_with_linux_bridge`], the stand-in that keeps this harness honest. Each
//! topology has its own namespaces and is removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::capture::Capture;
use crate::clients::{curl_in, describe};
use crate::data::{random_file, sha256_file};
use crate::netns::Netns;
use crate::nginx::Nginx;
use crate::pcap::{tls_record_types, Packet, Stream};

pub const CLIENT: &str = "10.203.0.1";
pub const SERVERS: [&str; 2] = ["10.203.0.2", "10.203.0.3"];
/// The virtual address of a balanced service (answered in ARP by the gate, not by any host).
pub const VIP: &str = "10.203.0.100";
pub const PREFIX_LEN: u8 = 24;
/// The name the servers' certificate is for.
pub const SERVER_NAME: &str = "server.inline.test";

/// A host at one end: its namespace, its interface toward the gate and its address.
pub struct Host {
    pub ns: Netns,
    pub iface: String,
    pub addr: &'static str,
}

pub struct InlineNet {
    pub client: Host,
    pub gate: Netns,
    /// The gate's interface toward the client, and toward the servers.
    pub gate_client_if: String,
    pub gate_server_if: String,
    pub switch: Netns,
    pub servers: Vec<Host>,
    /// With [`InlineNet::impaired`]: a namespace between client and gate and its two
    /// interfaces (toward the client, toward the gate), for [`crate::impair::ImpairHop`]; with
    /// [`InlineNet::impaired_toward_servers`], between gate and switch (toward the gate, toward
    /// the switch).
    pub impair: Option<(Netns, String, String)>,
}

/// Where the impairing hop sits, if anywhere.
#[derive(Clone, Copy, PartialEq)]
enum HopAt {
    Nowhere,
    ClientSide,
    ServerSide,
}

impl InlineNet {
    /// The topology with `servers` (1 or 2) servers; the gate joins nothing yet.
    pub fn new(servers: usize) -> InlineNet {
        InlineNet::build(servers, HopAt::Nowhere)
    }

    /// The topology with an impairing hop between client and gate (nothing crosses it until
    /// [`InlineNet::start_impairment`]).
    pub fn impaired(servers: usize) -> InlineNet {
        InlineNet::build(servers, HopAt::ClientSide)
    }

    /// The topology with the impairing hop between gate and switch instead: what the servers
    /// send the gate, and the gate them, crosses it.
    pub fn impaired_toward_servers(servers: usize) -> InlineNet {
        InlineNet::build(servers, HopAt::ServerSide)
    }

    /// Starts the impairing hop with these probabilities and seed.
    pub fn start_impairment(&self, impairment: crate::impair::Impairment) -> crate::impair::ImpairHop {
        let (ns, a, b) = self.impair.as_ref().expect("built with InlineNet::impaired");
        crate::impair::ImpairHop::start(ns, a, b, impairment)
    }

    /// Starts the hop without impairment, clamping the window of the client's connections from
    /// `clamp.ports` (see [`crate::window_clamp`]).
    pub fn start_window_clamp(&self, clamp: crate::window_clamp::WindowClamp) -> crate::impair::ImpairHop {
        let (ns, a, b) = self.impair.as_ref().expect("built with InlineNet::impaired");
        let none = crate::impair::Impairment { loss: 0.0, reorder: 0.0, duplicate: 0.0, seed: 0 };
        crate::impair::ImpairHop::start_with(ns, a, b, none, Some(clamp))
    }

    fn build(servers: usize, hop_at: HopAt) -> InlineNet {
        assert!((1..=SERVERS.len()).contains(&servers));
        let client_ns = Netns::new("icli");
        let gate = Netns::new("igate");
        let switch = Netns::new("isw");
        // A gate that routed or answered for an address would not be a bump in the wire.
        gate.must("sysctl", &["-qw", "net.ipv4.ip_forward=0"]);
        for key in ["all", "default"] {
            gate.must("sysctl", &["-qw", &format!("net.ipv6.conf.{key}.disable_ipv6=1")]);
        }
        let (client_if, gate_client_if, mut impair) = if hop_at == HopAt::ClientSide {
            let hop = Netns::new("iimp");
            let (client_if, hop_client) = client_ns.veth(Some(&cidr(CLIENT)), &hop, None);
            let (hop_gate, gate_client_if) = hop.veth(None, &gate, None);
            // The hop's packet ring sends runs of a flow as GSO frames too: cut on the way out,
            // or the client's capture would show the run whole.
            for dev in [&hop_client, &hop_gate] {
                bridge_port(&hop, dev);
            }
            (client_if, gate_client_if, Some((hop, hop_client, hop_gate)))
        } else {
            let (client_if, gate_client_if) = client_ns.veth(Some(&cidr(CLIENT)), &gate, None);
            (client_if, gate_client_if, None)
        };
        let (gate_server_if, uplink) = if hop_at == HopAt::ServerSide {
            let hop = Netns::new("iimp");
            let (gate_server_if, hop_gate) = gate.veth(None, &hop, None);
            let (hop_switch, uplink) = hop.veth(None, &switch, None);
            for dev in [&hop_gate, &hop_switch] {
                bridge_port(&hop, dev);
            }
            impair = Some((hop, hop_gate, hop_switch));
            (gate_server_if, uplink)
        } else {
            gate.veth(None, &switch, None)
        };
        switch.must("ip", &["link", "add", "br0", "type", "bridge"]);
        let mut ports = vec![uplink];
        let servers: Vec<Host> = SERVERS[..servers]
            .iter()
            .map(|&addr| {
                let ns = Netns::new("isrv");
                let (port, iface) = switch.veth(None, &ns, Some(&cidr(addr)));
                ports.push(port);
                Host { ns, iface, addr }
            })
            .collect();
        for port in &ports {
            switch.must("ip", &["link", "set", port, "master", "br0"]);
            receive_frames_as_sent(&switch, port);
        }
        switch.must("ip", &["link", "set", "br0", "up"]);
        let client = Host { ns: client_ns, iface: client_if, addr: CLIENT };
        for host in std::iter::once(&client).chain(&servers) {
            send_like_a_wire(host);
        }
        for dev in [&gate_client_if, &gate_server_if] {
            bridge_port(&gate, dev);
        }
        InlineNet { client, gate, gate_client_if, gate_server_if, switch, servers, impair }
    }

    /// Segmentation and checksum offload back on (the veth default) for every host, the gate's
    /// ports and the impairing hop's, GRO still off: the hosts' stacks hand 64 KiB TCP frames
    /// with partial checksums to their veths, which (and the switch's bridge) carry them whole
    /// to the gate, and the gate's own GSO frames reach the hosts whole.
    pub fn offloads_on(&self) {
        let on = ["tso", "on", "gso", "on", "tx", "on"];
        for host in std::iter::once(&self.client).chain(&self.servers) {
            host.ns.must("ethtool", &[&["-K", host.iface.as_str()][..], &on[..]].concat());
        }
        for dev in [&self.gate_client_if, &self.gate_server_if] {
            self.gate.must("ethtool", &[&["-K", dev.as_str()][..], &on[..]].concat());
        }
        // The impairing hop's ports too: it forwards each GSO frame whole, as it came.
        if let Some((ns, a, b)) = &self.impair {
            for dev in [a, b] {
                ns.must("ethtool", &[&["-K", dev.as_str()][..], &on[..]].concat());
            }
        }
    }

    /// Receive steering (RPS) as if each side were a host of its own: every interface of the
    /// client, the switch and the servers has its receive processing on CPU 1, the gate's on
    /// CPU 0. A veth hands a frame to its peer on the sending CPU; steered, what the gate sends
    /// waits in CPU 1's backlog until that CPU gets to it, as it waits for a NIC's transmit
    /// completion. Needs two CPUs.
    pub fn steer_receive(&self) {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(cpus >= 2, "receive steering needs two CPUs, this machine has {cpus}");
        let steer = |ns: &Netns, mask: &str| {
            let script = format!(
                "for d in /sys/class/net/*; do [ \"${{d##*/}}\" = lo ] || [ ! -e $d/queues/rx-0/rps_cpus ] \
                 || echo {mask} > $d/queues/rx-0/rps_cpus || exit 1; done"
            );
            ns.must("sh", &["-c", &script]);
        };
        steer(&self.gate, "1");
        for ns in
            std::iter::once(&self.client.ns).chain(self.servers.iter().map(|h| &h.ns)).chain([&self.switch])
        {
            steer(ns, "2");
        }
    }

    /// The stand-in for the bump: a Linux bridge in the gate joining its two interfaces.
    pub fn join_with_linux_bridge(&self) {
        self.gate.must("ip", &["link", "add", "br0", "type", "bridge"]);
        for port in [&self.gate_client_if, &self.gate_server_if] {
            self.gate.must("ip", &["link", "set", port, "master", "br0"]);
        }
        self.gate.must("ip", &["link", "set", "br0", "up"]);
    }

    /// Another address on the client's interface: one more client host as far as the servers can
    /// tell (curl `--interface ADDR` sends from it).
    pub fn add_client_addr(&self, addr: &str) {
        self.client.ns.must("ip", &["addr", "add", &cidr(addr), "dev", &self.client.iface]);
    }

    /// Caps the TCP receive window the client advertises to `to` at `bytes` (the route's `window`
    /// attribute), as a host with a small receive buffer does. Receive-buffer autotuning is turned
    /// off in the client's namespace: it would raise the cap along with the buffer.
    pub fn clamp_client_window(&self, to: &str, bytes: u32) {
        self.client.ns.must("sysctl", &["-qw", "net.ipv4.tcp_moderate_rcvbuf=0"]);
        let host = format!("{to}/32");
        let window = bytes.to_string();
        self.client.ns.must("ip", &["route", "add", &host, "dev", &self.client.iface, "window", &window]);
    }
}

impl Host {
    /// Shapes what this host sends with a token bucket (`tc qdisc … tbf rate … burst … latency …`):
    /// a slow link with a queue instead of a veth's instant one.
    pub fn shape(&self, rate: &str, burst: &str, latency: &str) {
        let args = [
            "qdisc",
            "add",
            "dev",
            &self.iface,
            "root",
            "tbf",
            "rate",
            rate,
            "burst",
            burst,
            "latency",
            latency,
        ];
        self.ns.must("tc", &args);
    }

    /// The interface's MAC address, `aa:bb:…`.
    pub fn mac(&self) -> String {
        self.sys("address")
    }

    /// The interface's MTU: the largest IP packet the wire carries.
    pub fn mtu(&self) -> usize {
        self.sys("mtu").parse().unwrap()
    }

    fn sys(&self, attr: &str) -> String {
        let out = self.ns.run("cat", &[&format!("/sys/class/net/{}/{attr}", self.iface)]);
        assert!(out.status.success(), "{attr} of {}: {}", self.iface, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// curl on this host with `args` (adds `-sS --ipv4`), whatever its exit status.
    pub fn curl(&self, args: &[&str]) -> Output {
        curl_in(&self.ns, args)
    }

    /// curl on this host that must succeed (`--fail`, at most `max_secs`); returns the body.
    pub fn fetch(&self, max_secs: u32, args: &[&str]) -> Vec<u8> {
        let max = max_secs.to_string();
        let mut all = vec!["--fail", "--max-time", &max];
        all.extend_from_slice(args);
        let out = self.curl(&all);
        assert!(out.status.success(), "curl {args:?} from {}: {}", self.addr, describe(&out));
        out.stdout
    }

    /// Starts capturing on this host's interface.
    pub fn capture(&self) -> Capture<'_> {
        Capture::start(&self.ns, &self.iface)
    }
}

/// A host's stack hands a veth one wire-sized, fully checksummed packet at a time, as with a
/// physical NIC without offloads. With TSO/GSO a veth carries 64 KiB TCP "packets" and with
/// checksum offload their TCP checksums are left unfinished: both are kernel-internal shortcuts no
/// real wire has, and a bump in the wire must be tested on what a wire carries.
fn send_like_a_wire(host: &Host) {
    host.ns.must("ethtool", &["-K", &host.iface, "tso", "off", "gso", "off", "gro", "off", "tx", "off"]);
}

/// Frames reach packet sockets and bridges as they were sent: GRO would merge a flow's segments
/// into one large packet before the gate (or switch) reads it, which a real wire's receiver only
/// does above the point where a bridge reads frames.
fn receive_frames_as_sent(ns: &Netns, iface: &str) {
    ns.must("ethtool", &["-K", iface, "gro", "off"]);
}

/// A bridged interface without GRO (frames as sent), and here without TSO and checksum offload
/// too, so what the bridge hands the kernel as one GSO frame is cut into wire-sized, fully
/// checksummed frames before it leaves and captures show what a wire carries (with TSO on, a
/// veth carries it to the peer whole: [`InlineNet::offloads_on`]).
fn bridge_port(ns: &Netns, iface: &str) {
    ns.must("ethtool", &["-K", iface, "gro", "off", "tso", "off", "gso", "off", "tx", "off"]);
}

fn cidr(addr: &str) -> String {
    format!("{addr}/{PREFIX_LEN}")
}

/// nginx on a server host: plain HTTP on port 80 and, as a port no inline service covers, 8080
/// (plus HTTPS on 443 when given a certificate). `/` answers `hello from <name>`, `/big.bin` is a
/// random file, and PUT stores under `/up/`. The access log's `peer=` shows each request's TCP
/// peer address and port.
pub struct Site {
    pub nginx: Nginx,
    pub name: String,
    /// SHA-256 of `/big.bin`.
    pub big_sha256: String,
    root: tempfile::TempDir,
}

impl Site {
    pub fn start(host: &Host, name: &str, big_len: usize, tls: Option<(&Path, &Path)>) -> Site {
        let root = tempfile::Builder::new().prefix("tlsgate-site-").tempdir().unwrap();
        std::fs::write(root.path().join("index.html"), format!("hello from {name}\n")).unwrap();
        let big_sha256 = random_file(&root.path().join("big.bin"), big_len);
        let ports: &[&str] = if tls.is_some() { &["80", "8080", "443 ssl"] } else { &["80", "8080"] };
        let nginx = Nginx::start_in(&host.ns, root.path(), ports, tls);
        Site { nginx, name: name.to_string(), big_sha256, root }
    }

    /// `/big.bin` on disk (as an upload source too).
    pub fn big_path(&self) -> PathBuf {
        self.root.path().join("big.bin")
    }

    /// SHA-256 of what a PUT to `/up/<name>` stored.
    pub fn uploaded_sha256(&self, name: &str) -> String {
        sha256_file(&self.root.path().join("up").join(name))
    }

    /// Lines of the access log naming `peer` (`addr:port`), once at least `lines` lines exist.
    pub fn log_lines_for(&self, peer: &str, lines: usize) -> Vec<String> {
        let needle = format!("peer=\"{peer}\"");
        self.nginx
            .access_log_lines(lines)
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_string)
            .collect()
    }
}

/// Panics unless every packet of a capture fits the wire: no IP fragment, none larger than
/// `mtu` (what a bump must keep to, since neither end expects it to fragment or coalesce), and
/// every TCP checksum complete and right.
pub fn assert_wire_sized(packets: &[Packet], mtu: usize, side: &str) {
    assert!(!packets.is_empty(), "{side}: nothing captured");
    let fragments = packets.iter().filter(|p| p.fragment).count();
    assert_eq!(fragments, 0, "{side}: {fragments} IP fragments on the wire");
    let largest = packets.iter().map(|p| p.ip_len).max().unwrap();
    assert!(largest <= mtu, "{side}: a {largest}-byte IP packet on a wire with MTU {mtu}");
    // The gate leaves TCP checksums to the kernel (checksum offload on its sends): with transmit
    // offload off on its ports the kernel finishes them, so a wire never carries a partial one.
    let bad: Vec<_> = packets.iter().filter_map(|p| p.tcp.as_ref()).filter(|t| !t.checksum_ok).collect();
    assert!(
        bad.is_empty(),
        "{side}: {} TCP segments with a wrong checksum, the first {} -> {} seq {}",
        bad.len(),
        bad[0].src,
        bad[0].dst,
        bad[0].seq
    );
}

/// Panics unless one direction of a connection is TLS records from its first byte to its last,
/// captured without a hole and never sent differently at the same sequence number; returns the
/// records' content types.
pub fn assert_tls_stream(stream: &Stream) -> Vec<u8> {
    let at = format!("{} -> {}", stream.src, stream.dst);
    assert_eq!(stream.after_hole, 0, "{at}: the capture has a hole");
    assert_eq!(stream.rewritten, 0, "{at}: bytes resent differently at the same sequence number");
    let types = tls_record_types(&stream.bytes).unwrap_or_else(|e| panic!("{at}: {e}"));
    assert_eq!(types.first(), Some(&22), "{at}: does not begin with a handshake record");
    types
}

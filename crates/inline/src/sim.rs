//! The inline engine's deterministic simulator, in the library so that `tlsgate inline simulate` can
//! run it: real user-space TCP stacks (smoltcp) on both ends driven with simulated time, rustls
//! clients over the client host's sockets, a plaintext echo server, the engine between (inside the
//! L2 [`Bridge`], as on real interfaces: the hosts' packets are framed with per-host MACs on the
//! way in, some with their checksum left to the "hardware", and unframed on the way out), and a
//! seeded link that drops, reorders, duplicates and delays packets.
//!
//! Checked on every run: each client gets back exactly the bytes it sent (so the server got
//! them too), every byte sent to a client at a sequence number is the byte first sent there
//! (with the rustls client accepting records only under strictly increasing record numbers, a
//! (key, record number) used twice shows up here or as a decryption failure), and no flow's
//! state exceeds the bound. Certificates come from the caller, so the library needs no PKI.

mod l2;
mod persist;
mod recut;
mod rtt;

pub use recut::RecutCounts;

use crate::bridge::{Bridge, InFrame, Side};
use crate::engine::{Config, Engine, Limits, Service};
use crate::packet;
use crate::queue_device::QueueDevice;
use crate::tables::{Mode, Release};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// The per-flow state bound checked during the run (the engine's own bounds: hold queues and
/// unacknowledged data 1 MiB each per direction, 4096 pairs per direction).
pub const STATE_BOUND: usize = 5 << 20;

const CLIENT_IP: [u8; 4] = [10, 0, 0, 1];
const SERVER_IP: [u8; 4] = [10, 0, 0, 2];
const VIRTUAL_IP: [u8; 4] = [10, 0, 0, 9];

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub flows: usize,
    pub seed: u64,
    pub loss: f64,
    pub reorder: f64,
    pub duplicate: f64,
    /// Plaintext each client sends (and gets back).
    pub bytes: usize,
    pub release: Release,
    /// A virtual address in front of the server instead of direct mode (443 → 80).
    pub balanced: bool,
    /// The clients' receive buffers, hence their windows.
    pub client_rx_buffer: usize,
    /// Each client updates its keys (requesting the engine's update) after this many bytes.
    pub key_update_at: Option<usize>,
    /// The echo server writes at most this many bytes per millisecond (a seeded amount from 1
    /// up), with Nagle off: its first transmissions are small pieces, and smoltcp, which
    /// retransmits from the oldest unacknowledged byte with the MSS of the moment, merges and
    /// splits them when it resends (as Linux collapses and splits retransmissions).
    pub server_write: Option<usize>,
    /// Every second client (odd flow index), once it has written this many bytes, puts only the
    /// first half of its next record on the wire, waits until the engine has it and resets the
    /// connection: a reset in the middle of a record. The server then must have received the
    /// plaintext of the whole records only (buffered; cut-through may have released part of the
    /// last one), must see the reset, and the engine must forget the flow. The servers send
    /// keep-alives, so a reset lost on the link is answered again by the client's stack.
    pub reset_at: Option<usize>,
    pub time_limit: Duration,
    /// No engine: each client speaks plaintext TCP straight to the echo server through the
    /// same link (same impairment, same bytes), the baseline the engine's goodput is set against.
    pub plain: bool,
    /// The clients' SYNs offer SACK, as smoltcp's and Linux's do; false takes the option out on
    /// the client's side of the link (a client without SACK).
    pub client_sack: bool,
    /// The server's SYN-ACK accepts SACK, as smoltcp's and Linux's do when offered; false takes
    /// the option out on the server's side of the link (a server without SACK).
    pub server_sack: bool,
    /// The engine's end-to-end flow table limit (beyond it new flows go to the full proxy).
    pub max_flows: usize,
    /// Every client segment after the SYN advertises at most this window field (the clients'
    /// windows shrink below what their SYNs offered, as RFC 9293 discourages but allows).
    pub client_window_after_syn: Option<u16>,
    /// The engine's `Limits::park_after`: a short one parks flows between the bursts of an
    /// impaired transfer, which then must go on as before.
    pub park_after: Option<Duration>,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            flows: 1,
            seed: 1,
            loss: 0.0,
            reorder: 0.0,
            duplicate: 0.0,
            bytes: 100_000,
            release: Release::Buffered,
            balanced: false,
            client_rx_buffer: 65535,
            key_update_at: None,
            server_write: None,
            reset_at: None,
            time_limit: Duration::from_secs(120),
            plain: false,
            client_sack: true,
            server_sack: true,
            max_flows: Limits::default().max_flows,
            client_window_after_syn: None,
            park_after: Limits::default().park_after,
        }
    }
}

/// The one-line result.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub flows: usize,
    /// Flows whose client got all its bytes back.
    pub completed: usize,
    /// Plaintext verified each way (the echo makes them equal when all is well).
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub records_up: u64,
    pub records_down: u64,
    /// Segments the engine saw again, both directions.
    pub retransmissions: u64,
    /// Positions where a client was sent a byte different from the first one sent there.
    pub nonce_reuses: u64,
    /// Client plaintext the server got before its record's tag verified (cut-through only).
    pub before_tag: u64,
    pub violations: Vec<String>,
    /// Flows that neither completed nor failed, with where they stood (for diagnosis).
    pub stalled: Vec<String>,
    pub peak_state_per_flow: usize,
    pub sim_time: Duration,
    /// The servers' retransmissions, and how many were cut differently from the first time.
    pub server_retransmissions: RecutCounts,
    /// Flows reset in the middle of a record (`reset_at`), checked as described there.
    pub resets: usize,
    /// The engine's goodput over the plain baseline's (see [`Summary::goodput`]), when the
    /// caller ran both.
    pub goodput_vs_plain: Option<f64>,
    /// The largest retransmission timeout, and the longest RTT sample, Linux's estimator would
    /// have taken from the ACKs the clients got (`sim::rtt`; the clients are smoltcp).
    pub client_rto_max: Duration,
    pub client_rtt_sample_max: Duration,
    /// The same for the server's data and the ACKs the server got (translated client ACKs,
    /// and the engine's own for server bytes it holds).
    pub server_rto_max: Duration,
    pub server_rtt_sample_max: Duration,
    /// Flows the engine switched to its full proxy (any reason).
    pub full_proxy: u64,
    /// Times the engine parked an idle flow (`SimConfig::park_after`).
    pub parked: u64,
    /// Of them, times a flow was put in its compact form (nothing in flight).
    pub compacted: u64,
}

impl Summary {
    /// Plaintext delivered both ways per second of simulated time.
    pub fn goodput(&self) -> f64 {
        (self.bytes_up + self.bytes_down) as f64 / self.sim_time.as_secs_f64().max(1e-6)
    }

    /// All flows completed (or were reset as asked, and checked) and nothing was violated.
    pub fn ok(&self) -> bool {
        self.violations.is_empty() && self.completed + self.resets == self.flows
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "flows={} completed={} bytes_up={} bytes_down={} records_up={} records_down={} retransmissions={} \
             nonce_reuses={} before_tag_up={} violations={} peak_state_bytes_per_flow={} sim_time={:?} \
             server_retransmissions={} recut={} client_rto_max={:?} server_rto_max={:?}",
            self.flows,
            self.completed,
            self.bytes_up,
            self.bytes_down,
            self.records_up,
            self.records_down,
            self.retransmissions,
            self.nonce_reuses,
            self.before_tag,
            self.violations.len(),
            self.peak_state_per_flow,
            self.sim_time,
            self.server_retransmissions.retransmissions,
            self.server_retransmissions.recut,
            self.client_rto_max,
            self.server_rto_max,
        )?;
        if let Some(g) = self.goodput_vs_plain {
            write!(f, " goodput_vs_plain={g:.3}")?;
        }
        Ok(())
    }
}

struct Host {
    /// The host's wire: two queues the simulation moves packets through.
    dev: QueueDevice,
    iface: Interface,
    sockets: SocketSet<'static>,
    /// The zero-window probes smoltcp does not send.
    persist: persist::Persist,
}

impl Host {
    fn new(addr: [u8; 4]) -> Host {
        let mut dev = QueueDevice::new(1500);
        let mut iface = Interface::new(IfaceConfig::new(HardwareAddress::Ip), &mut dev, Instant::ZERO);
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::v4(addr[0], addr[1], addr[2], addr[3]), 24)).expect("one address")
        });
        Host { dev, iface, sockets: SocketSet::new(Vec::new()), persist: persist::Persist::default() }
    }

    fn add_socket(&mut self, rx_buffer: usize) -> SocketHandle {
        let rx = tcp::SocketBuffer::new(vec![0; rx_buffer]);
        let tx = tcp::SocketBuffer::new(vec![0; 65535]);
        self.sockets.add(tcp::Socket::new(rx, tx))
    }

    fn poll(&mut self, now: Instant) {
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
    }

    /// Queues a window probe or a retransmission for each of `handles` (with the bytes its
    /// application has written) that the host leaves waiting.
    fn probe_zero_windows(&mut self, now: u64, handles: &[(SocketHandle, usize)]) {
        for &(h, written) in handles {
            let s = self.sockets.get::<tcp::Socket>(h);
            let (Some(local), Some(remote)) = (s.local_endpoint(), s.remote_endpoint()) else { continue };
            if s.send_queue() == 0 || !matches!(s.state(), tcp::State::Established | tcp::State::CloseWait) {
                continue;
            }
            let local = std::net::SocketAddr::new(local.addr.into(), local.port);
            let remote = std::net::SocketAddr::new(remote.addr.into(), remote.port);
            if let Some(p) = self.persist.probe(now, local, remote, written, s.send_queue()) {
                self.dev.tx.push(p);
            }
        }
    }
}

/// Deterministic xorshift.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hop {
    /// Into the bridge from that side's host.
    Bridge(Side),
    Client,
    Server,
}

/// The impairing wire: every packet crosses it twice (to the engine, and on from it).
struct Link {
    rng: Rng,
    loss: f64,
    reorder: f64,
    duplicate: f64,
    /// (delivery time in µs, sequence) → packet.
    queue: BTreeMap<(u64, u64), (Hop, Vec<u8>)>,
    n: u64,
}

impl Link {
    fn send(&mut self, now: u64, to: Hop, p: Vec<u8>) {
        if self.rng.chance(self.loss) {
            return;
        }
        let copies = if self.rng.chance(self.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let mut delay = 1000; // 1 ms per hop
            if self.rng.chance(self.reorder) {
                delay += 1000 + self.rng.next() % 5000;
            }
            self.n += 1;
            self.queue.insert((now + delay, self.n), (to, p.clone()));
        }
    }
}

/// What was sent to one client, by position, until the client acknowledges it: a resend must
/// carry the same bytes. Kept as segments and pruned on ACKs, so memory follows the window,
/// not the transfer.
#[derive(Default)]
struct SentLog {
    /// The first sequence number sent; positions are counted from it (no wrap within 4 GiB).
    base: Option<u32>,
    segs: BTreeMap<u64, Vec<u8>>,
}

impl SentLog {
    /// Records a segment; returns how many of its bytes differ from bytes sent before.
    fn check(&mut self, seq: u32, data: &[u8]) -> u64 {
        let base = *self.base.get_or_insert(seq);
        let start = seq.wrapping_sub(base) as u64;
        let end = start + data.len() as u64;
        let from = self.segs.range(..=start).next_back().map_or(start, |(&k, _)| k);
        let mut bad = 0;
        for (&k, v) in self.segs.range(from..end) {
            let (lo, hi) = (k.max(start), (k + v.len() as u64).min(end));
            bad += (lo..hi).filter(|&i| v[(i - k) as usize] != data[(i - start) as usize]).count() as u64;
        }
        if !data.is_empty() {
            self.segs.insert(start, data.to_vec());
        }
        bad
    }

    /// The client acknowledged up to `ack`: forget what lies wholly before it.
    fn ack(&mut self, ack: u32) {
        let Some(base) = self.base else { return };
        let a = ack.wrapping_sub(base) as u64;
        while let Some((&k, v)) = self.segs.first_key_value() {
            if k + v.len() as u64 > a {
                break;
            }
            self.segs.pop_first();
        }
    }
}

/// One client: its socket, its TLS connection and what it sent and got back.
struct Client {
    handle: SocketHandle,
    port: u16,
    tls: ClientConnection,
    payload: Vec<u8>,
    written: usize,
    tls_out: Vec<u8>,
    /// TLS bytes handed to the socket so far.
    tls_sent: usize,
    echoed: Vec<u8>,
    key_update_at: Option<usize>,
    /// See [`SimConfig::reset_at`].
    reset_at: Option<usize>,
    /// The plaintext of the whole records sent before the half record, once that is queued,
    /// and the half record's plaintext length.
    half_record: Option<(usize, usize)>,
    /// The connection was reset after the half record.
    reset: bool,
    done: bool,
    failed: bool,
}

/// Runs the simulation. `server_tls` must have `enable_secret_extraction` set; `client_tls`
/// must trust its certificate for the name "localhost".
pub fn run(cfg: &SimConfig, server_tls: Arc<ServerConfig>, client_tls: Arc<ClientConfig>) -> Summary {
    let service_ip = if cfg.balanced { VIRTUAL_IP } else { SERVER_IP };
    let engine = Engine::new(Config {
        services: vec![Service {
            addr: (service_ip, 443).into(),
            server_port: Some(80),
            mode: if cfg.balanced { Mode::Balanced } else { Mode::Direct },
            release: cfg.release,
            tls: server_tls,
            pool: if cfg.balanced { vec![(SERVER_IP, 80).into()] } else { Vec::new() },
        }],
        limits: Limits { max_flows: cfg.max_flows, park_after: cfg.park_after, ..Limits::default() },
    });
    let mut bridge = Bridge::new(engine, l2::BRIDGE_MAC, 1500);
    // As the AF_PACKET driver runs it: records leave as packets larger than the MTU, which the
    // bridge's frame list cuts at their segment size here (the kernel's GSO there).
    bridge.set_segmentation_offload(true);
    let mut l2 = l2::L2::default();
    let vip = cfg.balanced.then(|| IpAddr::from(VIRTUAL_IP));
    let server_ip = IpAddr::from(SERVER_IP);
    // The hosts announce themselves as their interfaces come up (not over the impaired link,
    // whose draws stay those of the packets).
    for (side, mac, ip) in
        [(Side::Client, l2::CLIENT_MAC, CLIENT_IP), (Side::Server, l2::SERVER_MAC, SERVER_IP)]
    {
        let f = l2::announcement(mac, ip.into());
        bridge.handle_frame(
            Duration::ZERO,
            InFrame { from: side, data: &f, csum_partial: false, gso_size: 0 },
            &mut Vec::new(),
        );
    }
    let mut client_host = Host::new(CLIENT_IP);
    let mut server_host = Host::new(SERVER_IP);
    // Shrinking windows: a second listening socket per flow, for the proxy's new connection,
    // which may arrive in the same poll as the reset of the old one.
    let listeners = if cfg.client_window_after_syn.is_some() { 2 * cfg.flows } else { cfg.flows };
    let mut server_socks: Vec<ServerConn> = (0..listeners)
        .map(|_| {
            let handle = server_host.add_socket(65535);
            let s = server_host.sockets.get_mut::<tcp::Socket>(handle);
            s.listen(80).expect("listen");
            s.set_nagle_enabled(cfg.server_write.is_none());
            if cfg.reset_at.is_some() {
                s.set_keep_alive(Some(smoltcp::time::Duration::from_millis(500)));
            }
            ServerConn { handle, pending: Vec::new(), client_port: None, received: 0, reset: false }
        })
        .collect();
    let mut clients: Vec<Client> = (0..cfg.flows)
        .map(|i| {
            let name = ServerName::try_from("localhost").expect("literal");
            Client {
                handle: client_host.add_socket(cfg.client_rx_buffer),
                port: 40000 + (i % 20000) as u16,
                tls: ClientConnection::new(client_tls.clone(), name).expect("client config"),
                payload: (0..cfg.bytes).map(|b| (b as u64 * 7919 + cfg.seed + i as u64) as u8).collect(),
                written: 0,
                tls_out: Vec::new(),
                tls_sent: 0,
                echoed: Vec::new(),
                key_update_at: cfg.key_update_at,
                reset_at: cfg.reset_at.filter(|_| i % 2 == 1),
                half_record: None,
                reset: false,
                done: false,
                failed: false,
            }
        })
        .collect();
    let mut link = Link {
        rng: Rng(cfg.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
        loss: cfg.loss,
        reorder: cfg.reorder,
        duplicate: cfg.duplicate,
        queue: BTreeMap::new(),
        n: 0,
    };
    let mut sum = Summary { flows: cfg.flows, ..Summary::default() };
    // Per client port: what was sent to it and not yet acknowledged.
    let mut sent: HashMap<u16, SentLog> = HashMap::new();
    let client_ip = IpAddr::from(CLIENT_IP);
    let mut recut = recut::Recut::default();
    let mut client_rtt = rtt::ClientRtt::default();
    let mut server_rtt = rtt::ClientRtt::server();
    // Its own generator, so that the link's draws are the same with and without `server_write`.
    let mut server_rng = Rng(cfg.seed.wrapping_mul(0xd1b5_4a32_d192_ed03) | 1);

    let limit = cfg.time_limit.as_micros() as u64;
    // Diagnosis: SIM_TRACE_PORT=<client port> prints that flow's packets in the last 3 s.
    let trace_port: Option<u16> = std::env::var("SIM_TRACE_PORT").ok().and_then(|v| v.parse().ok());
    let trace_from = std::env::var("SIM_TRACE_FROM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(limit.saturating_sub(3_000_000));
    let mut t = 0u64;
    // State is sampled every 100 ms (a report costs a walk over the flows).
    let mut next_sample = 0u64;
    while t < limit {
        let now = Instant::from_micros(t as i64);
        let dnow = Duration::from_micros(t);
        // Flows start one per millisecond (one tick each).
        if let Some(c) = clients.get((t / 1000) as usize) {
            let cx = client_host.iface.context();
            let to = IpAddress::v4(service_ip[0], service_ip[1], service_ip[2], service_ip[3]);
            let sock = client_host.sockets.get_mut::<tcp::Socket>(c.handle);
            let (to, port) = if cfg.plain {
                (IpAddress::v4(SERVER_IP[0], SERVER_IP[1], SERVER_IP[2], SERVER_IP[3]), 80)
            } else {
                (to, 443)
            };
            if sock.connect(cx, (to, port), c.port).is_err() {
                sum.violations.push(format!("flow on port {} could not connect", c.port));
            }
        }
        // The wire: packets due now go where they are headed.
        let mut to_wire: Vec<(Side, Vec<u8>)> = Vec::new();
        while let Some((&(at, n), _)) = link.queue.first_key_value() {
            if at > t {
                break;
            }
            let (to, p) = link.queue.remove(&(at, n)).expect("peeked");
            match to {
                Hop::Client => {
                    client_rtt.received(t, &p);
                    client_host.persist.received(&p);
                    client_host.dev.rx.push_back(p)
                }
                Hop::Server => {
                    recut.server_received(&p);
                    server_rtt.received(t, &p);
                    server_host.persist.received(&p);
                    server_host.dev.rx.push_back(p)
                }
                // The baseline: a plain forwarder in the bridge's place.
                Hop::Bridge(from) if cfg.plain => to_wire.push((from.other(), p)),
                Hop::Bridge(from) => {
                    if let (Some(port), Some(seg)) = (trace_port, packet::parse(&p)) {
                        if (seg.src.port() == port || seg.dst.port() == port) && t > trace_from {
                            eprintln!(
                                "t={t} in  {}->{} seq={} ack={:?} win={} len={}",
                                seg.src,
                                seg.dst,
                                seg.seq.0,
                                seg.ack.map(|a| a.0),
                                seg.window,
                                seg.payload.len()
                            );
                        }
                    }
                    let (frame, csum_partial) = l2.frame(from, &p, client_ip, server_ip);
                    let mut frames = Vec::new();
                    bridge.handle_frame(
                        dnow,
                        InFrame { from, data: &frame, csum_partial, gso_size: 0 },
                        &mut frames,
                    );
                    let out = unframe_all(frames, vip, &mut sum);
                    for (_, o) in &out {
                        if let (Some(port), Some(seg)) = (trace_port, packet::parse(o)) {
                            if (seg.src.port() == port || seg.dst.port() == port) && t > trace_from {
                                eprintln!(
                                    "t={t} out {}->{} seq={} ack={:?} win={} len={}",
                                    seg.src,
                                    seg.dst,
                                    seg.seq.0,
                                    seg.ack.map(|a| a.0),
                                    seg.window,
                                    seg.payload.len()
                                );
                            }
                        }
                    }
                    to_wire.extend(out);
                }
            }
        }
        if bridge.poll_timeout().is_some_and(|d| d <= dnow) {
            let mut frames = Vec::new();
            bridge.handle_timeout(dnow, &mut frames);
            to_wire.extend(unframe_all(frames, vip, &mut sum));
        }
        for (side, o) in to_wire {
            let Some(seg) = packet::parse(&o) else { continue };
            if side == Side::Client {
                if !seg.syn {
                    let log = sent.entry(seg.dst.port()).or_default();
                    sum.nonce_reuses += log.check(seg.seq.0, &o[seg.payload.clone()]);
                }
                link.send(t, Hop::Client, o);
            } else {
                link.send(t, Hop::Server, o);
            }
        }
        client_host.poll(now);
        server_host.poll(now);

        // The echo server: what each connection reads goes back on it.
        for sc in &mut server_socks {
            let s = server_host.sockets.get_mut::<tcp::Socket>(sc.handle);
            if let Some(remote) = s.remote_endpoint() {
                sc.client_port.get_or_insert(remote.port);
            }
            // Shrinking windows: a connection reset before its first byte is the old connection
            // of a flow the proxy took over at its ClientHello; like a real server's listening
            // socket, the port accepts the proxy's new connection.
            if cfg.client_window_after_syn.is_some()
                && sc.client_port.is_some()
                && sc.received == 0
                && s.state() == tcp::State::Closed
            {
                s.listen(80).expect("listen");
                sc.client_port = None;
                continue;
            }
            // Established once, closed without a FIN from the client: reset.
            if sc.client_port.is_some() && s.state() == tcp::State::Closed {
                sc.reset = true;
            }
            let pending = &mut sc.pending;
            if s.can_recv() {
                let mut buf = [0u8; 8192];
                if let Ok(n) = s.recv_slice(&mut buf) {
                    pending.extend_from_slice(&buf[..n]);
                    sc.received += n;
                }
            }
            if !pending.is_empty() && s.can_send() {
                let n = cfg.server_write.map_or(pending.len(), |max| {
                    pending.len().min(1 + (server_rng.next() % max.max(1) as u64) as usize)
                });
                if let Ok(n) = s.send_slice(&pending[..n]) {
                    pending.drain(..n);
                }
            }
        }
        for c in &mut clients {
            let sock = client_host.sockets.get_mut::<tcp::Socket>(c.handle);
            if cfg.plain {
                drive_plain_client(c, sock, &mut sum);
            } else {
                drive_client(c, sock, &mut sum);
            }
        }
        client_host.poll(now);
        server_host.poll(now);
        let client_handles: Vec<_> = clients.iter().map(|c| (c.handle, c.tls_sent)).collect();
        client_host.probe_zero_windows(t, &client_handles);
        let server_handles: Vec<_> =
            server_socks.iter().map(|s| (s.handle, s.received - s.pending.len())).collect();
        server_host.probe_zero_windows(t, &server_handles);
        for mut p in client_host.dev.tx.drain(..) {
            if !cfg.client_sack {
                if let Some(seg) = packet::parse(&p).filter(|s| s.syn) {
                    packet::edit_tcp(&mut p, &seg, |t| packet::strip_sack_permitted(t.options_mut()));
                }
            }
            if let Some(w) = cfg.client_window_after_syn {
                if let Some(seg) = packet::parse(&p).filter(|s| !s.syn && s.window > w) {
                    packet::edit_tcp(&mut p, &seg, |t| t.set_window_len(w));
                }
            }
            client_rtt.sent(t, &p);
            client_host.persist.sent(t, &p);
            if let Some(seg) = packet::parse(&p) {
                if let (Some(ack), Some(log)) = (seg.ack, sent.get_mut(&seg.src.port())) {
                    log.ack(ack.0);
                }
            }
            link.send(t, Hop::Bridge(Side::Client), p);
        }
        for mut p in server_host.dev.tx.drain(..) {
            if !cfg.server_sack {
                if let Some(seg) = packet::parse(&p).filter(|s| s.syn) {
                    packet::edit_tcp(&mut p, &seg, |t| packet::strip_sack_permitted(t.options_mut()));
                }
            }
            server_host.persist.sent(t, &p);
            server_rtt.sent(t, &p);
            recut.server_sent(&p);
            link.send(t, Hop::Bridge(Side::Server), p);
        }
        if t >= next_sample {
            next_sample += 100_000;
            let peak = bridge.engine().report().peak_flow_state();
            sum.peak_state_per_flow = sum.peak_state_per_flow.max(peak);
            if peak > STATE_BOUND {
                sum.violations.push(format!("{peak} bytes of state in one flow at {dnow:?}"));
            }
        }
        t += 1000;
        let reset_seen =
            |c: &Client| c.reset && server_socks.iter().any(|sc| sc.client_port == Some(c.port) && sc.reset);
        if clients.iter().all(|c| c.done || c.failed || reset_seen(c)) {
            break;
        }
    }
    sum.sim_time = Duration::from_micros(t);
    let (rto, sample) = client_rtt.max_rto_and_sample();
    (sum.client_rto_max, sum.client_rtt_sample_max) =
        (Duration::from_micros(rto), Duration::from_micros(sample));
    let (rto, sample) = server_rtt.max_rto_and_sample();
    (sum.server_rto_max, sum.server_rtt_sample_max) =
        (Duration::from_micros(rto), Duration::from_micros(sample));
    sum.server_retransmissions = recut.counts;
    let report = bridge.engine().report();
    let completed = bridge.stats().csum_completed;
    if completed != l2.partial {
        sum.violations
            .push(format!("{} partial checksums completed of {} left partial", completed, l2.partial));
    }
    for c in &clients {
        if let Some((whole, half)) = c.half_record.filter(|_| c.reset) {
            check_reset(c.port, whole, half, cfg.release, &server_socks, &report, &mut sum);
            continue;
        }
        sum.bytes_down += c.echoed.len() as u64;
        if c.done {
            sum.completed += 1;
        } else if !c.failed {
            // Say where it stopped: both ends' sockets and the engine's view of the flow.
            let sock = client_host.sockets.get::<tcp::Socket>(c.handle);
            let server = server_socks.iter().find(|sc| sc.client_port == Some(c.port)).map_or_else(
                || "no server connection".to_owned(),
                |sc| {
                    let s = server_host.sockets.get::<tcp::Socket>(sc.handle);
                    format!(
                        "server received {} echoed {} (send queue {}) {:?}",
                        sc.received,
                        sc.received - sc.pending.len(),
                        s.send_queue(),
                        s.state()
                    )
                },
            );
            let engine = report.connections.iter().find(|r| r.key.client.port() == c.port).map_or_else(
                || "engine: no flow".to_owned(),
                |r| {
                    let held = report.queues.iter().filter(|q| q.key == r.key).map(|q| q.segment.len).sum::<usize>();
                    format!(
                        "engine: {:?}, up {} records {} B, down {} records {} B, {held} B held, last packet {:?}",
                        r.state, r.up.records, r.up.inner_bytes, r.down.records, r.down.inner_bytes, r.last_activity
                    )
                },
            );
            sum.stalled.push(format!(
                "stalled port {}: client wrote {} of plaintext, {} TLS bytes of which {} acked, got back {} of {}, \
                 {:?}; {server}; {engine}",
                c.port,
                c.written,
                c.tls_sent,
                c.tls_sent - sock.send_queue(),
                c.echoed.len(),
                c.payload.len(),
                sock.state(),
            ));
        }
    }
    sum.bytes_up = sum.bytes_down;
    let proxy = bridge.engine().stats().proxy;
    sum.parked = bridge.engine().stats().flows_parked;
    sum.compacted = bridge.engine().stats().flows_compacted;
    sum.full_proxy = proxy.switched_window + proxy.switched_flow_table + proxy.switched_hello_window;
    sum.peak_state_per_flow = sum.peak_state_per_flow.max(report.peak_flow_state());
    for row in &report.connections {
        sum.records_up += row.up.records;
        sum.records_down += row.down.records;
        sum.retransmissions += row.up.retransmissions + row.down.retransmissions;
        sum.before_tag += row.up.before_tag;
    }
    if sum.nonce_reuses > 0 {
        sum.violations.push(format!("{} bytes resent differently", sum.nonce_reuses));
    }
    sum
}

/// The IP packets of the frames the bridge wrote, each with its side; a frame addressed wrong is
/// a violation.
fn unframe_all(frames: Vec<(Side, Vec<u8>)>, vip: Option<IpAddr>, sum: &mut Summary) -> Vec<(Side, Vec<u8>)> {
    let mut out = Vec::new();
    for (side, f) in frames {
        match l2::unframe(side, &f, vip) {
            Ok(Some(p)) => out.push((side, p)),
            Ok(None) => {}
            Err(e) => sum.violations.push(e),
        }
    }
    out
}

/// One accepted server connection of the echo server.
struct ServerConn {
    handle: SocketHandle,
    /// Read and not yet written back.
    pending: Vec<u8>,
    /// The client port it was first connected from.
    client_port: Option<u16>,
    received: usize,
    /// Closed after being connected, without the client's FIN: reset.
    reset: bool,
}

/// The checks of a flow reset in the middle of a record (see [`SimConfig::reset_at`]).
fn check_reset(
    port: u16,
    whole: usize,
    half: usize,
    release: Release,
    servers: &[ServerConn],
    report: &crate::tables::Report,
    sum: &mut Summary,
) {
    let Some(server) = servers.iter().find(|sc| sc.client_port == Some(port)) else {
        sum.violations.push(format!("flow on port {port}: no server connection"));
        return;
    };
    let expected = match release {
        Release::Buffered => server.received == whole,
        // Part of the half record may have left before its tag; never all of it.
        Release::CutThrough => server.received >= whole && server.received < whole + half,
    };
    if !expected {
        sum.violations.push(format!(
            "flow on port {port} reset mid-record: the server received {} bytes, {whole} in whole records \
             ({half} in the half record, {release:?})",
            server.received
        ));
    }
    if !server.reset {
        sum.violations.push(format!("flow on port {port}: the server never saw the reset"));
    }
    if report.connections.iter().any(|r| r.key.client.port() == port) {
        sum.violations.push(format!("flow on port {port}: the engine kept the flow after the reset"));
    }
    sum.resets += 1;
}

/// One client's turn: read records, check what came back, write more.
fn drive_client(c: &mut Client, sock: &mut tcp::Socket<'_>, sum: &mut Summary) {
    if c.done || c.failed {
        return;
    }
    if sock.can_recv() {
        let mut buf = [0u8; 8192];
        let n = sock.recv_slice(&mut buf).unwrap_or(0);
        // read_tls takes what fits its buffer, not necessarily all, and refuses more while
        // plaintext waits to be read: loop, draining as we go.
        let mut input = &buf[..n];
        while !input.is_empty() {
            if c.tls.read_tls(&mut input).is_err() {
                break;
            }
            if let Err(e) = c.tls.process_new_packets() {
                sum.violations.push(format!("flow on port {}: TLS error {e:?}", c.port));
                c.failed = true;
                return;
            }
            let mut plain = [0u8; 8192];
            while let Ok(k) = c.tls.reader().read(&mut plain) {
                if k == 0 {
                    break;
                }
                c.echoed.extend_from_slice(&plain[..k]);
            }
        }
        if check_echo(c, sum) {
            return;
        }
    }
    if let Some(at) = c.reset_at {
        if reset_mid_record(c, sock, at) {
            return;
        }
    }
    if c.key_update_at.is_some_and(|at| c.written >= at) {
        let _ = c.tls.refresh_traffic_keys();
        c.key_update_at = None;
    }
    if !c.tls.is_handshaking() && c.written < c.payload.len() && c.tls_out.len() < 32768 {
        let n = (c.payload.len() - c.written).min(4000);
        if c.tls.writer().write_all(&c.payload[c.written..c.written + n]).is_ok() {
            c.written += n;
        }
    }
    while c.tls.wants_write() {
        if c.tls.write_tls(&mut c.tls_out).is_err() {
            break;
        }
    }
    if !c.tls_out.is_empty() && sock.can_send() {
        if let Ok(n) = sock.send_slice(&c.tls_out) {
            c.tls_out.drain(..n);
            c.tls_sent += n;
        }
    }
}

/// After more of the echo arrived: a wrong byte fails the flow, the whole payload completes it.
/// True when either happened, and the client's turn ends.
fn check_echo(c: &mut Client, sum: &mut Summary) -> bool {
    if c.echoed[..] != c.payload[..c.echoed.len().min(c.payload.len())] {
        sum.violations.push(format!("flow on port {}: bytes delivered wrong", c.port));
        c.failed = true;
        return true;
    }
    if c.echoed.len() == c.payload.len() {
        c.done = true;
        return true;
    }
    false
}

/// One plaintext client's turn (the baseline without the engine): read the echo, write more.
fn drive_plain_client(c: &mut Client, sock: &mut tcp::Socket<'_>, sum: &mut Summary) {
    if c.done || c.failed {
        return;
    }
    if sock.can_recv() {
        let mut buf = [0u8; 8192];
        let n = sock.recv_slice(&mut buf).unwrap_or(0);
        c.echoed.extend_from_slice(&buf[..n]);
        if check_echo(c, sum) {
            return;
        }
    }
    if c.written < c.payload.len() && sock.can_send() {
        if let Ok(n) = sock.send_slice(&c.payload[c.written..]) {
            c.written += n;
            c.tls_sent += n;
        }
    }
}

/// The client's side of [`SimConfig::reset_at`]; true once it took over the client's turn.
fn reset_mid_record(c: &mut Client, sock: &mut tcp::Socket<'_>, at: usize) -> bool {
    if c.reset {
        return true;
    }
    if c.half_record.is_none() {
        if c.written < at || !c.tls_out.is_empty() || c.tls.wants_write() || c.tls.is_handshaking() {
            return false;
        }
        let n = (c.payload.len() - c.written).min(4000);
        let mut record = Vec::new();
        if n == 0 || c.tls.writer().write_all(&c.payload[c.written..c.written + n]).is_err() {
            return false;
        }
        while c.tls.wants_write() {
            if c.tls.write_tls(&mut record).is_err() {
                break;
            }
        }
        record.truncate(record.len() / 2);
        c.tls_out = record;
        c.half_record = Some((c.written, n));
    }
    if !c.tls_out.is_empty() && sock.can_send() {
        if let Ok(n) = sock.send_slice(&c.tls_out) {
            c.tls_out.drain(..n);
            c.tls_sent += n;
        }
    }
    // The engine has all of it (it acknowledges a partial record up to its last byte).
    if c.tls_out.is_empty() && sock.send_queue() <= 1 {
        sock.abort();
        c.reset = true;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_log_compares_overlaps_and_forgets_acknowledged_bytes() {
        let mut log = SentLog::default();
        let base = u32::MAX - 5; // positions across the wrap
        assert_eq!(log.check(base, b"abcdef"), 0);
        assert_eq!(log.check(base.wrapping_add(6), b"ghij"), 0);
        assert_eq!(log.check(base.wrapping_add(3), b"defgh"), 0, "resent with other boundaries");
        assert_eq!(log.check(base.wrapping_add(4), b"eXg"), 1, "one byte differs");
        log.ack(base.wrapping_add(6));
        assert_eq!(log.segs.keys().copied().collect::<Vec<_>>(), vec![3, 4, 6], "those reaching past 6 stay");
        log.ack(base.wrapping_add(10));
        assert!(log.segs.is_empty());
    }
}

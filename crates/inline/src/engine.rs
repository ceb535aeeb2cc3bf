//! The engine: packets and time in, packets and the next timer out (sans-IO, the quinn-proto
//! shape). Call [`Engine::handle_packet`] for every packet in either direction,
//! [`Engine::handle_timeout`] when [`Engine::poll_timeout`]'s instant has passed, and
//! [`Engine::report`] whenever the tables are wanted.
//!
//! Built so far (docs/inline-engine.md lists what is missing): the flow table keyed by the
//! client's 4-tuple, bounded, with half-open flows expiring sooner; the client's SYN has its MSS
//! lowered by the largest record overhead and timestamps removed; direct mode's server-port
//! rewrite both ways; everything that is not a service flow passes byte-identical. From the server's SYN-ACK on, a flow's
//! segments go through its [`TlsFlow`]: the client's handshake is consumed and answered by the
//! engine, then records are opened and sealed with sequence numbers translated both ways.

use crate::downstream::DownLimits;
use crate::flow::Flow;
use crate::handshake::Handshake;
use crate::health::Pools;
use crate::packet::{self, Build, Control, Segment};
use crate::proxy::{Adoption, Proxy, ProxyEvent, ProxyLimits, ProxyStats};
use crate::seq::Stream;
use crate::table_hash::TableHash;
use crate::tables::{
    ConnectionRow, Counters, Direction, FlowKey, FlowPath, FlowState, Mode, QueueRow, Release, Report,
    SessionRow, SwitchReason,
};
use crate::timers::Timers;
use crate::tls_flow::{Ends, TlsFlow, Verdict, Wake};
use crate::upstream::UpLimits;
use rustls::ServerConfig;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A TLS service the engine offloads.
#[derive(Clone, Debug)]
pub struct Service {
    /// The address clients connect to.
    pub addr: SocketAddr,
    /// Direct mode: the server's real port (443 offloaded toward 80), rewritten both ways.
    pub server_port: Option<u16>,
    pub mode: Mode,
    pub release: Release,
    /// Certificates and protocol settings; `enable_secret_extraction` must be set.
    pub tls: Arc<ServerConfig>,
    /// Balanced mode: the servers behind `addr` (a virtual address). Each flow goes to one,
    /// chosen by rendezvous hashing of the client's address among the members up (see
    /// [`Health`]), so a client sticks to a member while it serves.
    pub pool: Vec<SocketAddr>,
}

impl Service {
    /// The server a flow from `client` goes to at `now`.
    fn backend_for(&self, client: SocketAddr, pools: &mut Pools, now: Duration) -> SocketAddr {
        if self.mode == Mode::Balanced {
            if let Some(m) = pools.choose(&self.pool, client.ip(), now) {
                return m;
            }
        }
        SocketAddr::new(self.addr.ip(), self.server_port.unwrap_or(self.addr.port()))
    }

    /// Whether [`Service::backend_for`] may choose `backend`.
    fn may_send_to(&self, backend: SocketAddr) -> bool {
        backend == SocketAddr::new(self.addr.ip(), self.server_port.unwrap_or(self.addr.port()))
            || (self.mode == Mode::Balanced && self.pool.contains(&backend))
    }
}

/// What a parked flow needs back to wake: its addresses and the engine's limits.
fn wake(key: &FlowKey, backend: SocketAddr, l: &Limits) -> Wake {
    Wake {
        client: key.client,
        service: key.server,
        backend,
        up: l.up,
        down: l.down,
        park_after: l.park_after,
    }
}

/// A flow's counters: its TLS data path's once it has one, else what the TCP setup counted.
fn flow_counters(f: &Flow) -> (Counters, Counters) {
    f.counters()
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Flow-table bound: a SYN beyond it evicts the oldest half-open flow, or is dropped (and
    /// counted) when there is none; the client retries.
    pub max_flows: usize,
    /// A flow without its SYN-ACK expires after this.
    pub syn_timeout: Duration,
    pub idle_timeout: Duration,
    /// A flow that saw a FIN expires after this much silence: closed connections must not hold
    /// table entries for the whole idle timeout.
    pub closing_timeout: Duration,
    /// Per-flow bounds of the two data paths.
    pub up: UpLimits,
    pub down: DownLimits,
    /// The full-proxy fallback: its own flow limit and the client window floor.
    pub proxy: ProxyLimits,
    /// Established flows without a packet for this long are parked (`TlsFlow::park`: AEAD
    /// contexts dropped, queues shrunk) until their next packet; `None` parks nothing. The
    /// default is `tls_flow::PARK_AFTER`.
    pub park_after: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_flows: 65536,
            syn_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            closing_timeout: Duration::from_secs(60),
            up: up_limits(FLOW_WINDOW),
            down: down_limits(FLOW_WINDOW),
            proxy: ProxyLimits::default(),
            park_after: Some(crate::tls_flow::PARK_AFTER),
        }
    }
}

impl Limits {
    /// Both directions' stores and hold bounds at `bytes`. The store stands in for the sender's
    /// own buffer (sealed records kept until the client acknowledges them, plaintext until the
    /// server does) and the window each side is told stays within it, so a flow carries at most
    /// `bytes` per round trip each way (1 MiB over a 10 ms path: about 100 MB/s); a busy flow
    /// may hold up to twice it per direction (the store and the hold queue).
    pub fn with_flow_window(mut self, bytes: usize) -> Limits {
        self.up = UpLimits { record_limit: self.up.record_limit, ..up_limits(bytes) };
        self.down = down_limits(bytes);
        self
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub services: Vec<Service>,
    pub limits: Limits,
}

/// Counters over the engine's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets passed unchanged (not TCP, not a service, no flow).
    pub passed: u64,
    /// Packets of service flows forwarded (possibly rewritten).
    pub forwarded: u64,
    pub flows_created: u64,
    /// SYNs dropped because the flow table was full of flows past their SYN.
    pub syn_dropped: u64,
    /// Half-open flows (no SYN-ACK yet) evicted, oldest first, to make room for a new SYN
    /// when the table was full: a SYN flood displaces its own entries, not established flows.
    pub embryonic_evicted: u64,
    /// Connections a balanced pool's member refused (RST to the SYN) or left unanswered.
    pub member_failures: u64,
    /// Times a member was taken out of its pool for a while after failures in a row.
    pub members_taken_out: u64,
    /// Segments of a service address with no flow (picked up mid-stream): passed unchanged.
    pub midstream: u64,
    pub flows_expired: u64,
    pub flows_reset: u64,
    /// Ended flows (closing or reset) whose client started a new connection from the same
    /// address and port: dropped for the new flow (see `Engine::client_segment`).
    pub flows_replaced: u64,
    /// Data segments from a service's server on no known flow: dropped (plaintext never goes
    /// toward clients) and answered with RST.
    pub orphan_server_data: u64,
    /// Service flows whose first client bytes were not a TLS handshake: passed through.
    pub not_tls: u64,
    /// Flows failed because a client record's tag did not verify (answered with bad_record_mac).
    pub mac_failures: u64,
    /// Records and bytes of every flow, ended ones and live ones: client → server, server → client.
    pub up: Counters,
    pub down: Counters,
    /// The full-proxy fallback's switches and ends.
    pub proxy: ProxyStats,
    /// Flows whose processing panicked: reset on both sides and dropped, the others served on.
    pub flows_panicked: u64,
    /// Times an idle flow was parked (`Limits::park_after`); a flow woken and idle again
    /// counts again.
    pub flows_parked: u64,
    /// Times a parked flow with nothing in flight was put in its compact form (what resuming
    /// needs, rebuilt on its next packet): at parking, or once quiet after it.
    pub flows_compacted: u64,
}

/// Bytes a flow may have in flight each way by default ([`Limits::with_flow_window`]).
pub const FLOW_WINDOW: usize = 1 << 20;

/// Segments a hold queue of `bytes` may keep: one per KiB, at least 64.
const fn hold_segments(bytes: usize) -> usize {
    if bytes / 1024 > 64 {
        bytes / 1024
    } else {
        64
    }
}

/// The client → server bounds for a flow window of `bytes`. The client's window reaches the hold
/// bound past the next byte expected (`Upstream::client_room`): as toward the server, the hold
/// matches the store.
const fn up_limits(bytes: usize) -> UpLimits {
    UpLimits {
        hold_bytes: bytes,
        hold_segments: hold_segments(bytes),
        unacked_bytes: bytes,
        record_limit: 16384 + 2048,
    }
}

/// The server → client bounds for a flow window of `bytes`. The server's window reaches the hold
/// bound past the next byte to seal (`server_room`): at 256 KiB it, not the record store, capped
/// a download at 256 KiB per round trip (about 180 MB/s through a bridge whose rings add a
/// millisecond), so the hold matches the store.
const fn down_limits(bytes: usize) -> DownLimits {
    DownLimits { hold_bytes: bytes, hold_segments: hold_segments(bytes), unacked_bytes: bytes }
}
/// Flows dropped after a panic kept for the driver's log between two drains; beyond, counted.
const PANICS_KEPT: usize = 256;

/// Which part of the engine a packet goes to.
#[derive(Clone, Copy)]
enum Route {
    Proxy(FlowKey),
    Client(usize, FlowKey),
    Server(FlowKey),
}

/// The flow a packet taken whole ([`Engine::takes_whole`]) belongs to, and its direction.
#[derive(Clone, Copy)]
enum Whole {
    Client(FlowKey),
    Server(FlowKey),
}

/// An RST answering `seg` to its sender, at the sequence number it acknowledged (RFC 9293
/// §3.10.7.1); none when it acknowledged nothing.
fn rst_to_sender(seg: &Segment) -> Option<Vec<u8>> {
    let rst = Build {
        src: seg.dst,
        dst: seg.src,
        seq: seg.ack?,
        ack: None,
        control: Control::Rst,
        window: 0,
        payload: &[],
    };
    rst.emit()
}

/// Whether a client SYN (no ACK) starts a new connection over `flow`: the flow is closing (a FIN
/// or close_notify seen) or was ended by the engine, and the SYN is not its own SYN again. A SYN
/// into a flow still running goes on as before: the server answers it (RFC 9293 §3.10.7.4, a
/// challenge ACK), and a spoofed SYN cannot end a connection through the engine.
fn ended_by_new_syn(flow: &Flow, syn: &Segment) -> bool {
    matches!(flow.state, FlowState::Closing | FlowState::Reset) && syn.seq != flow.client_isn
}

/// The MSS a client gets when its SYN named none (RFC 9293).
const DEFAULT_MSS: u16 = 536;

/// The largest expansion of a record, for the MSS clamp: the version is not known at SYN time.
fn max_overhead() -> u16 {
    tlsgate_record::crypto::MAX_OVERHEAD as u16
}

#[derive(Debug)]
pub struct Engine {
    config: Config,
    /// Boxed: the table's buckets (about twice the flows after a doubling) then hold a pointer
    /// each instead of a 144-byte `Flow`, which idle flows pay for in every empty bucket.
    flows: HashMap<FlowKey, Box<Flow>, TableHash>,
    /// Flows in creation order with their creation time, for evicting the oldest half-open
    /// one. Entries whose flow moved on or left are skipped and dropped lazily.
    embryonic: VecDeque<(FlowKey, Duration)>,
    pools: Pools,
    stats: Stats,
    /// Flows the end-to-end path cannot serve, terminated on both sides.
    proxy: Proxy,
    /// Flows dropped after a panic since the driver last took them, for its log (bounded).
    panicked: Vec<FlowKey>,
    /// When flows next need [`Engine::handle_timeout`].
    timers: Timers,
    /// Who finishes the TCP checksums of the segments the flows build.
    checksum: packet::TcpChecksum,
    /// Flows send each record to the client as one packet, which the link cuts at the client's
    /// MSS (see [`Engine::set_segmentation_offload`]).
    gso: bool,
    /// Tests only: panics on a client segment whose payload this says yes to, so that the
    /// containment of a panic in one flow can be shown.
    #[cfg(feature = "test-hooks")]
    pub panic_on: Option<fn(&[u8]) -> bool>,
}

impl Engine {
    pub fn new(config: Config) -> Engine {
        Engine {
            proxy: Proxy::new(config.limits.proxy),
            config,
            flows: HashMap::default(),
            embryonic: VecDeque::new(),
            pools: Pools::default(),
            stats: Stats::default(),
            panicked: Vec::new(),
            timers: Timers::default(),
            checksum: packet::TcpChecksum::Full,
            gso: false,
            #[cfg(feature = "test-hooks")]
            panic_on: None,
        }
    }

    /// Flows dropped after a panic since the last call, for the driver's log.
    pub fn take_panicked(&mut self) -> Vec<FlowKey> {
        std::mem::take(&mut self.panicked)
    }

    /// Takes new TLS settings (certificates) for each service, matched by address, for flows
    /// that begin from now on; flows in progress keep theirs. Refused, changing nothing, when
    /// the services differ otherwise (addresses, modes, pools): that needs a restart.
    pub fn reload_tls(&mut self, services: &[Service]) -> Result<(), String> {
        let now = &self.config.services;
        if services.len() != now.len() {
            return Err(format!(
                "config: {} inline services given, {} running; adding or removing services needs a restart",
                services.len(),
                now.len()
            ));
        }
        let mut matched = Vec::with_capacity(now.len());
        for new in services {
            let Some(i) = now.iter().position(|s| s.addr == new.addr) else {
                return Err(format!(
                    "config: inline service {} is not running; new addresses need a restart",
                    new.addr
                ));
            };
            if matched.contains(&i) {
                return Err(format!("config: inline service {} given twice", new.addr));
            }
            let old = &now[i];
            let sorted = |p: &[SocketAddr]| {
                let mut p = p.to_vec();
                p.sort();
                p
            };
            let what = if old.mode != new.mode {
                Some("mode")
            } else if old.server_port != new.server_port {
                Some("server port")
            } else if sorted(&old.pool) != sorted(&new.pool) {
                Some("pool")
            } else if old.release != new.release {
                Some("release")
            } else if !new.tls.enable_secret_extraction {
                return Err(format!(
                    "internal: inline service {}: TLS settings without secret extraction",
                    new.addr
                ));
            } else {
                None
            };
            if let Some(what) = what {
                return Err(format!(
                    "config: inline service {}: {what} changed; that needs a restart",
                    new.addr
                ));
            }
            matched.push(i);
        }
        for (new, i) in services.iter().zip(matched) {
            self.config.services[i].tls = new.tls.clone();
        }
        Ok(())
    }

    /// The services, as configured (their TLS settings as last reloaded).
    pub fn services(&self) -> &[Service] {
        &self.config.services
    }

    /// The counters, the records and bytes of live flows included.
    /// Times a flow was parked so far (`Stats::flows_parked`, without summing over the flows
    /// as [`Engine::stats`] does): a driver gives freed memory back after parking.
    pub fn parked_total(&self) -> u64 {
        self.stats.flows_parked
    }

    pub fn stats(&self) -> Stats {
        let mut stats = self.stats;
        for f in self.flows.values() {
            let (up, down) = flow_counters(f);
            stats.up += up;
            stats.down += down;
        }
        stats.proxy = self.proxy.stats();
        stats
    }

    /// The largest IP packet the link carries: the full proxy's TCP stack sends no larger.
    pub fn set_mtu(&mut self, mtu: usize) {
        self.proxy.set_mtu(mtu);
    }

    /// Who finishes the TCP checksums of the segments flows begun from now on build:
    /// [`packet::TcpChecksum::Partial`] only for a driver that sends every TCP packet whose field
    /// holds the pseudo-header sum with checksum offload.
    pub fn set_tcp_checksum(&mut self, checksum: packet::TcpChecksum) {
        self.checksum = checksum;
    }

    pub fn tcp_checksum(&self) -> packet::TcpChecksum {
        self.checksum
    }

    /// With `on`, flows begun from now on send each record (at most 64 KiB of IP packet) to the
    /// client, and each record's plaintext to the server, as one TCP packet larger than the MTU,
    /// for a driver that cuts it into segments of [`Engine::segment_size`] (TCP segmentation
    /// offload, as the kernel's GSO does): one packet built, routed and handed over per record
    /// instead of one per segment.
    pub fn set_segmentation_offload(&mut self, on: bool) {
        self.gso = on;
    }

    /// The payload of each segment a TCP packet of this engine's larger than the MTU stands for:
    /// the MSS of its receiver (the client's, or toward a server the server's) less the TCP
    /// options the packet carries (the flow cut its payload so; RFC 9293's default of 536 bytes
    /// when the flow has gone meanwhile). `None` for a packet
    /// that is not TCP.
    pub fn segment_size(&self, pkt: &[u8]) -> Option<u16> {
        let seg = packet::parse(pkt)?;
        let options = (seg.payload.start - seg.tcp.start).saturating_sub(20);
        let to_client = FlowKey { client: seg.dst, server: seg.src };
        let mss = match self.flows.get(&to_client).and_then(|f| f.tls.as_ref()) {
            Some(t) => t.client_mss(),
            // Toward a server: plaintext the flow cut to the server's MSS.
            None => self
                .by_backend(seg.src, seg.dst)
                .and_then(|k| self.flows.get(&k)?.tls.as_ref())
                .map_or(DEFAULT_MSS, |t| t.server_mss()),
        };
        Some((usize::from(mss).saturating_sub(options).max(1)) as u16)
    }

    /// Full-proxy flows now.
    pub fn proxy_flow_count(&self) -> usize {
        self.proxy.len()
    }

    /// Flows switched to the full proxy and full-proxy flows ended since the last call, for the
    /// log.
    pub fn take_proxy_events(&mut self) -> Vec<ProxyEvent> {
        self.proxy.take_events()
    }

    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// Whether `pkt`, a TCP segment larger than the MTU (a GSO frame a host's stack left whole),
    /// may go to [`Engine::handle_whole`] as it is: server data of a flow whose records the
    /// engine seals (records cut to the client's MSS), or client data of an established flow
    /// whose records it opens (plaintext cut to the server's MSS). Either way the flow reads
    /// only the payload and builds every packet it sends. Any other packet would pass on as it
    /// came, so it must be cut into MTU-sized segments first.
    pub fn takes_whole(&self, pkt: &[u8]) -> bool {
        packet::parse(pkt).is_some_and(|seg| self.whole_route(&seg).is_some())
    }

    fn whole_route(&self, seg: &Segment) -> Option<Whole> {
        if seg.syn {
            return None;
        }
        if self.config.services.iter().any(|s| s.addr == seg.dst) {
            let key = FlowKey { client: seg.src, server: seg.dst };
            let flow = self.flows.get(&key).and_then(|f| f.tls.as_ref());
            let established = flow.is_some_and(|t| t.is_established());
            return (established && !self.proxy.has(&key)).then_some(Whole::Client(key));
        }
        if self.proxy.by_server(seg.dst, seg.src).is_some() {
            return None;
        }
        let key = self.by_backend(seg.dst, seg.src)?;
        self.flows.get(&key).is_some_and(|f| f.tls.is_some()).then_some(Whole::Server(key))
    }

    /// The flow of a packet from `backend` to `client`: keyed by the client and a service
    /// address, so looked up under each service that sends to `backend` (one, usually). No
    /// second table keyed by the backend: every flow would pay a bucket of it (some 190 bytes
    /// per idle flow).
    fn by_backend(&self, client: SocketAddr, backend: SocketAddr) -> Option<FlowKey> {
        self.config
            .services
            .iter()
            .filter(|s| s.may_send_to(backend))
            .map(|s| FlowKey { client, server: s.addr })
            .find(|k| self.flows.get(k).is_some_and(|f| f.backend == backend))
    }

    /// [`Engine::handle_packet`] for a packet [`Engine::takes_whole`] accepts, read where it
    /// lies: its flow takes only the payload, so the driver's buffer is not copied. Any other
    /// packet is copied and handled as usual.
    pub fn handle_whole(&mut self, now: Duration, pkt: &[u8], out: &mut Vec<Vec<u8>>) {
        let route = packet::parse(pkt).and_then(|seg| Some((self.whole_route(&seg)?, seg)));
        let Some((route, seg)) = route else { return self.handle_packet(now, pkt.to_vec(), out) };
        let payload = &pkt[seg.payload.clone()];
        let mark = out.len();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match route {
            Whole::Client(key) => self.record_data(now, key, &seg, payload, true, out),
            Whole::Server(key) => self.record_data(now, key, &seg, payload, false, out),
        }));
        let (Whole::Client(key) | Whole::Server(key)) = route;
        if caught.is_err() {
            out.truncate(mark);
            self.contain(now, key, Some(&seg), out);
        }
        self.arm(&key);
    }

    /// Handles one packet seen at `now` and appends the packets to emit to `out`.
    ///
    /// A panic in one flow's processing (a bug, whatever the packet) must not stop the thread
    /// that serves every flow: it is caught here, that flow is reset on both sides and dropped,
    /// and the others go on.
    pub fn handle_packet(&mut self, now: Duration, pkt: Vec<u8>, out: &mut Vec<Vec<u8>>) {
        let Some(seg) = packet::parse(&pkt) else {
            self.stats.passed += 1;
            out.push(pkt);
            return;
        };
        let route = if let Some(svc) = self.config.services.iter().position(|s| s.addr == seg.dst) {
            let key = FlowKey { client: seg.src, server: seg.dst };
            if self.proxy.has(&key) {
                Route::Proxy(key)
            } else {
                Route::Client(svc, key)
            }
        } else if let Some(key) = self.proxy.by_server(seg.dst, seg.src) {
            Route::Proxy(key)
        } else if let Some(key) = self.by_backend(seg.dst, seg.src) {
            Route::Server(key)
        } else if !seg.payload.is_empty() && self.is_service_server(seg.src) {
            self.orphan_server_data(&seg, out);
            return;
        } else {
            self.stats.passed += 1;
            out.push(pkt);
            return;
        };
        let key = match route {
            Route::Proxy(k) | Route::Client(_, k) | Route::Server(k) => k,
        };
        let is_proxy = matches!(route, Route::Proxy(_));
        let mark = out.len();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            #[cfg(feature = "test-hooks")]
            if matches!(route, Route::Client(..))
                && self.panic_on.is_some_and(|f| f(&pkt[seg.payload.clone()]))
            {
                panic!("test hook: a panic in one flow");
            }
            match route {
                Route::Proxy(key) => self.proxy.packet(now, key, pkt, out),
                Route::Client(svc, key) => self.client_segment(now, svc, key, &seg, pkt, out),
                Route::Server(key) => self.server_segment(now, key, &seg, pkt, out),
            }
        }));
        if caught.is_err() {
            // What the flow emitted before it panicked may be half-built: none of it goes out.
            out.truncate(mark);
            self.contain(now, key, Some(&seg), out);
        }
        if is_proxy {
            self.proxy_health(now);
        } else {
            self.arm(&key);
        }
    }

    /// After a packet or a timeout of the flow `key` (if it is still there): its expiry and its
    /// own next timer, for [`Engine::poll_timeout`].
    fn arm(&mut self, key: &FlowKey) {
        let Some(f) = self.flows.get_mut(key) else { return };
        self.timers.expires(f.deadline(&self.config.limits));
        f.timer = self.timers.arm(*key, f.rto(), f.timer);
    }

    /// Resets both sides of a flow whose processing panicked and drops it. Its state may be
    /// inconsistent, so even the resets are built under a guard; when that fails too, the
    /// sender of the segment in hand still gets one (RFC 9293: an RST at its ACK).
    fn contain(&mut self, now: Duration, key: FlowKey, seg: Option<&Segment>, out: &mut Vec<Vec<u8>>) {
        self.stats.flows_panicked += 1;
        if self.panicked.len() < PANICS_KEPT {
            self.panicked.push(key);
        }
        let mark = out.len();
        let reset = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if self.proxy.has(&key) {
                self.proxy.reset(now, key, out);
                return true;
            }
            let Some(flow) = self.flows.get_mut(&key) else { return false };
            match (flow.tls.as_mut(), seg) {
                (Some(tls), _) => tls.reset(&wake(&key, flow.backend, &self.config.limits), out),
                // Plain TCP (before the SYN-ACK, or not TLS): one sequence space on both sides,
                // so the segment in hand places an RST for each.
                (None, Some(seg)) => {
                    let (src, dst) = if seg.src == key.client {
                        (key.client, flow.backend)
                    } else {
                        (key.server, key.client)
                    };
                    let onward = Build {
                        src,
                        dst,
                        seq: seg.seq,
                        ack: None,
                        control: Control::Rst,
                        window: 0,
                        payload: &[],
                    };
                    out.extend(onward.emit());
                    out.extend(rst_to_sender(seg));
                }
                (None, None) => return false,
            }
            true
        }));
        if !matches!(reset, Ok(true)) {
            out.truncate(mark);
            if let Some(seg) = seg {
                out.extend(rst_to_sender(seg));
            }
        }
        self.proxy.forget(key);
        self.remove(&key);
        self.stats.flows_reset += 1;
    }

    /// Whether `addr` is where a service's flows go: plaintext comes from there.
    fn is_service_server(&self, addr: SocketAddr) -> bool {
        self.config.services.iter().any(|s| match s.mode {
            Mode::Balanced if !s.pool.is_empty() => s.pool.contains(&addr),
            _ => addr == SocketAddr::new(s.addr.ip(), s.server_port.unwrap_or(s.addr.port())),
        })
    }

    /// Data from a service's server on a flow the engine does not have (reset, expired, or
    /// begun before the engine): that is plaintext meant to be encrypted, so it never goes
    /// toward the client. Fail closed: drop it and reset the server's connection, as the client
    /// host would for a connection it does not know (RFC 9293: an RST at the segment's ACK).
    fn orphan_server_data(&mut self, seg: &Segment, out: &mut Vec<Vec<u8>>) {
        self.stats.orphan_server_data += 1;
        out.extend(rst_to_sender(seg));
    }

    /// Client → server.
    fn client_segment(
        &mut self,
        now: Duration,
        svc: usize,
        key: FlowKey,
        seg: &Segment,
        mut pkt: Vec<u8>,
        out: &mut Vec<Vec<u8>>,
    ) {
        let is_syn = seg.syn && seg.ack.is_none();
        if is_syn && self.flows.get(&key).is_some_and(|f| ended_by_new_syn(f, seg)) {
            // A new connection from the same address and port: the client let the old one go
            // (a passive close leaves no TIME-WAIT on its side, so Linux may hand the port out
            // again at once), and the old flow's numbers would take the new one's bytes for
            // garbage. Its ending went to both sides already; the new SYN starts a flow.
            self.remove(&key);
            self.stats.flows_replaced += 1;
        }
        if !self.flows.contains_key(&key) {
            if !is_syn {
                // No SYN seen: the MSS was never clamped and the ISNs are unknown. Pass.
                self.stats.midstream += 1;
                out.push(pkt);
                return;
            }
            let reason = self.full_proxy_reason(seg);
            let backend = self.config.services[svc].backend_for(key.client, &mut self.pools, now);
            if let Some(reason) = reason {
                let tls = self.config.services[svc].tls.clone();
                let connect = self.config.limits.syn_timeout;
                if !self.proxy.start(now, key, svc, backend, reason, tls, connect, pkt, out) {
                    self.stats.syn_dropped += 1;
                }
                self.proxy_health(now);
                return;
            }
            self.flows.insert(
                key,
                Box::new(Flow {
                    service: svc,
                    backend,
                    state: FlowState::SynSent,
                    client_isn: seg.seq,
                    server_isn: None,
                    mss: None,
                    created: now,
                    last_activity: now,
                    client_bytes: 0,
                    server_bytes: 0,
                    client_wscale: None,
                    server_wscale: None,
                    client_sack: false,
                    tls: None,
                    timer: None,
                }),
            );
            self.embryonic.push_back((key, now));
            self.trim_embryonic();
            self.stats.flows_created += 1;
        }
        let flow = self.flows.get_mut(&key).expect("inserted above");
        if let (false, Some(tls)) = (is_syn, flow.tls.as_ref()) {
            let window = u32::from(seg.window) << flow.server_wscale.and(flow.client_wscale).unwrap_or(0);
            if tls.at_first_client_byte(seg, &pkt[seg.payload.clone()])
                && self.proxy.window_too_small(window)
                && self.switch_at_client_hello(now, key, seg, &pkt, out)
            {
                return;
            }
        }
        let flow = self.flows.get_mut(&key).expect("inserted above");
        flow.last_activity = now;
        flow.client_bytes += seg.payload.len() as u64;
        let wake = wake(&key, flow.backend, &self.config.limits);
        if let (false, Some(tls)) = (is_syn, flow.tls.as_mut()) {
            // The TLS data path consumes the segment and builds what each side gets.
            let verdict = tls.client_packet(&wake, now, seg, &pkt[seg.payload.clone()], out);
            if verdict == Verdict::NotTls {
                // Nothing consumed yet: the flow continues as plain TCP, this packet included.
                flow.tls = None;
                flow.state = FlowState::PassThrough;
                self.stats.not_tls += 1;
            } else {
                if tls.is_established() && flow.state == FlowState::Handshake {
                    flow.state = FlowState::Established;
                }
                self.settle(&key, seg, verdict);
                return;
            }
        }
        if is_syn {
            flow.client_wscale = packet::window_scale(&pkt[seg.tcp.start + 20..seg.payload.start]);
        }
        let (mss, sack) = packet::edit_tcp(&mut pkt, seg, |t| {
            let (mut mss, mut sack) = (None, false);
            if is_syn {
                mss = packet::lower_mss(t.options_mut(), max_overhead());
                // SACK-permitted goes on: the engine reports server bytes it holds beyond a
                // gap (`Downstream::sack_blocks`) and ignores the server's own blocks.
                sack = packet::sack_permitted(t.options_mut());
                packet::strip_timestamps(t.options_mut());
            }
            (mss, sack)
        });
        packet::readdress(&mut pkt, seg, key.client, flow.backend);
        if is_syn {
            flow.mss = mss.or(flow.mss);
            flow.client_sack = sack;
        }
        if seg.rst {
            self.remove(&key);
            self.stats.flows_reset += 1;
        } else if seg.fin {
            flow.state = FlowState::Closing;
        }
        self.stats.forwarded += 1;
        out.push(pkt);
    }

    /// Whether a new flow goes to the full proxy, decided at its SYN: a window the end-to-end
    /// path cannot serve well, or no room left in its table.
    /// The window comes first, so such a SYN never evicts a half-open end-to-end flow; at the
    /// table's limit the oldest half-open flow is evicted before the proxy is asked.
    fn full_proxy_reason(&mut self, syn: &Segment) -> Option<SwitchReason> {
        if self.proxy.window_too_small(u32::from(syn.window)) {
            Some(SwitchReason::Window)
        } else if self.flows.len() >= self.config.limits.max_flows && !self.evict_embryonic() {
            Some(SwitchReason::FlowTable)
        } else {
            None
        }
    }

    /// The client's window shrank below the floor between its SYN and its ClientHello (`first`,
    /// nothing of it consumed): the full proxy takes both connections over. The server's, which
    /// has seen nothing but the handshake, is reset (an RST at the client's next sequence
    /// number) and opened again by the proxy from the client's address and port; the client's
    /// is adopted as it stands. False (the flow stays end to end) when the proxy has no room.
    fn switch_at_client_hello(
        &mut self,
        now: Duration,
        key: FlowKey,
        first: &Segment,
        pkt: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> bool {
        let Some(f) = self.flows.get(&key) else { return false };
        let Some(server_isn) = f.server_isn else { return false };
        if !self.proxy.has_room(&key, f.backend) {
            return false;
        }
        let adoption = Adoption {
            client_isn: f.client_isn,
            server_isn,
            mss: f.mss.map_or(DEFAULT_MSS, |m| m.0),
            client_wscale: f.client_wscale,
            server_wscale: f.server_wscale,
            window: first.window,
        };
        let (svc, backend) = (f.service, f.backend);
        let rst = Build {
            src: key.client,
            dst: backend,
            seq: f.client_isn + 1,
            ack: None,
            control: Control::Rst,
            window: 0,
            payload: &[],
        };
        self.remove(&key);
        out.extend(rst.emit());
        let tls = self.config.services[svc].tls.clone();
        let connect = self.config.limits.syn_timeout;
        if !self.proxy.adopt(now, key, svc, backend, tls, connect, adoption, pkt.to_vec(), out) {
            // The server's connection is gone already: the client's goes too.
            self.stats.flows_reset += 1;
            let rst = Build {
                src: key.server,
                dst: key.client,
                seq: server_isn + 1,
                ack: None,
                control: Control::Rst,
                window: 0,
                payload: &[],
            };
            out.extend(rst.emit());
        }
        self.proxy_health(now);
        true
    }

    /// What a flow's verdict on a segment it consumed means for the table: closed (or the
    /// segment a RST), the flow goes; failed, it is marked reset until it goes; a FIN marks it
    /// closing.
    fn settle(&mut self, key: &FlowKey, seg: &Segment, verdict: Verdict) {
        self.stats.forwarded += 1;
        if verdict == Verdict::Closed || seg.rst {
            self.remove(key);
            self.stats.flows_reset += 1;
        } else if verdict == Verdict::Failed {
            if let Some(flow) = self.flows.get_mut(key) {
                flow.state = FlowState::Reset;
            }
        } else if seg.fin {
            if let Some(flow) = self.flows.get_mut(key) {
                flow.state = FlowState::Closing;
            }
        }
    }

    /// A segment of a flow whose records the engine handles, of which only `payload` is read:
    /// server data it seals, or (`from_client`) client data it opens. False when the flow has
    /// no record layer (yet) or `seg` is a SYN: the caller handles it.
    fn record_data(
        &mut self,
        now: Duration,
        key: FlowKey,
        seg: &Segment,
        payload: &[u8],
        from_client: bool,
        out: &mut Vec<Vec<u8>>,
    ) -> bool {
        let Some(flow) = self.flows.get_mut(&key) else { return true };
        flow.last_activity = now;
        *if from_client { &mut flow.client_bytes } else { &mut flow.server_bytes } += payload.len() as u64;
        let wake = wake(&key, flow.backend, &self.config.limits);
        let (false, Some(tls)) = (seg.syn, flow.tls.as_mut()) else { return false };
        let verdict = if from_client {
            tls.client_packet(&wake, now, seg, payload, out)
        } else {
            tls.server_packet(&wake, now, seg, payload, out)
        };
        self.settle(&key, seg, verdict);
        true
    }

    /// Server → client.
    fn server_segment(
        &mut self,
        now: Duration,
        key: FlowKey,
        seg: &Segment,
        mut pkt: Vec<u8>,
        out: &mut Vec<Vec<u8>>,
    ) {
        if self.record_data(now, key, seg, &pkt[seg.payload.clone()], false, out) {
            return;
        }
        let Some(flow) = self.flows.get(&key) else { return };
        let (balanced, state, backend) =
            (self.config.services[flow.service].mode == Mode::Balanced, flow.state, flow.backend);
        if balanced && state == FlowState::SynSent {
            if seg.syn && seg.ack.is_some() {
                self.pools.record(backend, true, now);
            } else if seg.rst {
                self.member_failed(backend, now);
            }
        }
        let Some(flow) = self.flows.get_mut(&key) else { return };
        if seg.syn && seg.ack.is_some() && flow.state == FlowState::SynSent {
            flow.server_isn = Some(seg.seq);
            flow.state = FlowState::Handshake;
            let server_wscale = packet::window_scale(&pkt[seg.tcp.start + 20..seg.payload.start]);
            flow.server_wscale = server_wscale;
            let ends = Ends {
                client: key.client,
                service: key.server,
                backend: flow.backend,
                client_mss: flow.mss.map_or(DEFAULT_MSS, |m| m.0),
                server_mss: packet::mss(&pkt[seg.tcp.start + 20..seg.payload.start]).unwrap_or(DEFAULT_MSS),
                // Scaling applies only when both SYNs offered it.
                client_wscale: server_wscale.and(flow.client_wscale).unwrap_or(0),
                server_wscale: flow.client_wscale.and(server_wscale).unwrap_or(0),
                client_sack: flow.client_sack,
                server_sack: flow.client_sack
                    && packet::sack_permitted(&pkt[seg.tcp.start + 20..seg.payload.start]),
                checksum: self.checksum,
                gso: self.gso,
            };
            let tls = &self.config.services[flow.service].tls;
            if let Ok(hs) = Handshake::new(tls.clone()) {
                flow.tls = Some(
                    TlsFlow::new(
                        ends,
                        Stream::new(flow.client_isn),
                        Stream::new(seg.seq),
                        hs,
                        seg.window,
                        self.config.limits.up,
                        self.config.limits.down,
                    )
                    .with_release(self.config.services[flow.service].release)
                    .with_park_after(self.config.limits.park_after),
                );
            }
        }
        packet::readdress(&mut pkt, seg, key.server, key.client);
        if seg.syn && seg.ack.is_some() && flow.client_sack {
            // SACK between the client and the engine even when the server declined it (see
            // `tls_flow::Ends::client_sack`); a no-op when the server's SYN-ACK has the option.
            packet::add_sack_permitted(&mut pkt);
        }
        if seg.rst {
            self.remove(&key);
            self.stats.flows_reset += 1;
        } else if seg.fin {
            flow.state = FlowState::Closing;
        }
        self.stats.forwarded += 1;
        out.push(pkt);
    }

    /// Full-proxy flows' connections to balanced pools' members count as an end-to-end flow's
    /// SYN does: up is a success, refused or unanswered a failure.
    fn proxy_health(&mut self, now: Duration) {
        for c in self.proxy.take_connects() {
            if self.config.services[c.service].mode != Mode::Balanced {
                continue;
            }
            if c.ok {
                self.pools.record(c.backend, true, now);
            } else {
                self.member_failed(c.backend, now);
            }
        }
    }

    /// A pool member refused or ignored a connection.
    fn member_failed(&mut self, member: SocketAddr, now: Duration) {
        self.stats.member_failures += 1;
        if self.pools.record(member, false, now) {
            self.stats.members_taken_out += 1;
        }
    }

    /// Balanced pools' members skipped by new flows at `now`.
    pub fn members_down(&mut self, now: Duration) -> Vec<SocketAddr> {
        self.pools.down(now)
    }

    /// Whether `entry` of the embryonic queue is still a half-open flow.
    fn is_embryonic(&self, (key, created): &(FlowKey, Duration)) -> bool {
        self.flows.get(key).is_some_and(|f| f.state == FlowState::SynSent && f.created == *created)
    }

    /// Drops queue entries at the front that are no longer half-open flows: the queue holds at
    /// most the flows created within one SYN timeout, plus the live half-open ones.
    fn trim_embryonic(&mut self) {
        while self.embryonic.front().is_some_and(|e| !self.is_embryonic(e)) {
            self.embryonic.pop_front();
        }
    }

    /// Evicts the oldest half-open flow; false when there is none.
    fn evict_embryonic(&mut self) -> bool {
        while let Some(entry) = self.embryonic.pop_front() {
            if self.is_embryonic(&entry) {
                self.remove(&entry.0);
                self.stats.embryonic_evicted += 1;
                return true;
            }
        }
        false
    }

    fn remove(&mut self, key: &FlowKey) {
        if let Some(flow) = self.flows.remove(key) {
            // An ended flow's counts stay in the totals.
            let (up, down) = flow_counters(&flow);
            self.stats.up += up;
            self.stats.down += down;
            if flow.tls.as_ref().is_some_and(|t| t.mac_failed()) {
                self.stats.mac_failures += 1;
            }
        }
    }

    /// No later than the next instant at which [`Engine::handle_timeout`] has work; it may be
    /// earlier (a timer that moved later, an expiry bound; see [`crate::timers`]), and that
    /// call then finds nothing due and leaves the next one later.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let l = &self.config.limits;
        let proxy = self.proxy.poll_timeout(l.idle_timeout, l.closing_timeout);
        self.timers.next().into_iter().chain(proxy).min()
    }

    /// Expires flows whose deadline has passed and runs due retransmissions, appending the
    /// packets to emit to `out`.
    pub fn handle_timeout(&mut self, now: Duration, out: &mut Vec<Vec<u8>>) {
        let l = self.config.limits;
        for key in self.proxy.handle_timeout(now, l.idle_timeout, l.closing_timeout, out) {
            self.contain(now, key, None, out);
        }
        self.proxy_health(now);
        for (at, key) in self.timers.take_due(now) {
            // Only the entry the flow has armed: others are stale (superseded, or of a flow gone).
            if self.flows.get(&key).is_some_and(|f| f.timer == Some(at)) {
                self.flow_timeout(now, key, out);
            }
        }
        if self.timers.mostly_stale(self.flows.len()) {
            self.timers.clear();
            let keys: Vec<FlowKey> = self.flows.keys().copied().collect();
            for key in keys {
                self.flows.get_mut(&key).expect("listed above").timer = None;
                self.arm(&key);
            }
        }
        if self.timers.sweep_due(now) {
            self.expire(now);
        }
    }

    /// One flow's timers at `now`: retransmission, parking (and the compact form once quiet).
    fn flow_timeout(&mut self, now: Duration, key: FlowKey, out: &mut Vec<Vec<u8>>) {
        let Some(f) = self.flows.get_mut(&key) else { return };
        f.timer = None;
        if let Some(tls) = f.tls.as_mut() {
            let mark = out.len();
            let (parked, compact) = (tls.is_parked(), tls.is_compact());
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tls.timeout(now, out)));
            let Ok(verdict) = caught else {
                out.truncate(mark);
                self.contain(now, key, None, out);
                return;
            };
            if verdict == Verdict::Closed {
                // A failed flow's linger ended: its RST is out.
                self.remove(&key);
                self.stats.flows_reset += 1;
                return;
            }
            self.stats.flows_parked += u64::from(!parked && tls.is_parked());
            if !compact && tls.is_compact() {
                self.stats.flows_compacted += 1;
                // The entry moves too: made at the SYN, among the handshake's short-lived
                // allocations, it would keep their memory from going back to the system.
                let moved = crate::parked_memory::parked(|| Box::new(Flow { tls: f.tls.take(), ..**f }));
                *f = moved;
            }
        }
        self.arm(&key);
    }

    /// Removes the flows whose expiry has passed at `now` and notes the next expiry.
    fn expire(&mut self, now: Duration) {
        let l = self.config.limits;
        let mut next: Option<Duration> = None;
        let mut expired = Vec::new();
        for (key, f) in &self.flows {
            let at = f.deadline(&l);
            if at <= now {
                expired.push(*key);
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        for key in expired {
            let f = &self.flows[&key];
            if f.state == FlowState::SynSent && self.config.services[f.service].mode == Mode::Balanced {
                self.member_failed(f.backend, now);
            }
            self.remove(&key);
            self.stats.flows_expired += 1;
        }
        self.timers.swept(now, next);
    }

    /// Sweeps for expired flows so far (see [`crate::timers`]).
    pub fn expiry_sweeps(&self) -> u64 {
        self.timers.sweeps()
    }

    /// A snapshot of the tables (sessions and queues stay empty until the data path exists).
    pub fn report(&self) -> Report {
        // Each flow's share of the flow table (its own `Flow`, boxed, is
        // `Flow::state_bytes`): keys, pointers, empty buckets, control bytes; and of the timer
        // heap (empty while every flow is parked).
        let share =
            (table_bytes(&self.flows) + self.timers.heap_bytes()).checked_div(self.flows.len()).unwrap_or(0);
        let mut connections: Vec<ConnectionRow> = self
            .flows
            .iter()
            .map(|(key, f)| {
                let svc = &self.config.services[f.service];
                ConnectionRow {
                    key: *key,
                    backend: f.backend,
                    session: None,
                    state: f.state,
                    mode: svc.mode,
                    release: svc.release,
                    path: FlowPath::EndToEnd,
                    pairs_up: f.tls.as_ref().map(|t| t.pairs().0).unwrap_or_default(),
                    pairs_down: f.tls.as_ref().map(|t| t.pairs().1).unwrap_or_default(),
                    up: flow_counters(f).0,
                    down: flow_counters(f).1,
                    record_seqs: f.tls.as_ref().and_then(|t| t.record_seqs()),
                    state_bytes: f.state_bytes() + share,
                    last_activity: f.last_activity,
                }
            })
            .collect();
        connections.extend(self.proxy.flows().map(|(key, e)| {
            let svc = &self.config.services[e.service];
            e.row(*key, svc.mode, svc.release)
        }));
        connections.sort_by_key(|c| c.key);
        // One session per established flow for now (no resumption across flows yet).
        let mut sessions: Vec<SessionRow> = Vec::new();
        for (i, c) in connections.iter_mut().enumerate() {
            let info = match self.flows.get(&c.key) {
                Some(f) => f.tls.as_ref().and_then(|t| t.session().cloned()),
                None => self.proxy.get(&c.key).and_then(|e| e.flow.tls().session().cloned()),
            };
            let Some(info) = info else { continue };
            c.session = Some(i as u64);
            sessions.push(SessionRow {
                id: i as u64,
                version: info.version_name().to_owned(),
                suite: info.suite_name().to_owned(),
                sni: info.sni.map(String::from),
                peer_certificate: None,
                created: self.flows.get(&c.key).map_or_else(
                    || self.proxy.get(&c.key).map_or(Duration::ZERO, |e| e.created),
                    |f| f.created,
                ),
                expires: None,
            });
        }
        let mut queues = Vec::new();
        for c in &connections {
            let Some(t) = self.flows.get(&c.key).and_then(|f| f.tls.as_ref()) else { continue };
            let (up, down) = t.queue_rows();
            for (direction, rows) in [(Direction::Up, up), (Direction::Down, down)] {
                queues.extend(rows.into_iter().map(|segment| QueueRow { key: c.key, direction, segment }));
            }
        }
        Report { sessions, connections, queues }
    }
}

/// Bytes a hash table holds: its buckets (a power of two, at most 7/8 used) of one entry and
/// one control byte each.
fn table_bytes<K, V, S>(t: &HashMap<K, V, S>) -> usize {
    let buckets = if t.capacity() == 0 { 0 } else { (t.capacity() * 8 / 7).next_power_of_two() };
    buckets * (std::mem::size_of::<(K, V)>() + 1)
}

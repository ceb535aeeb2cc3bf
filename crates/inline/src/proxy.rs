//! The full-proxy fallback: flows the end-to-end path cannot serve are terminated here, inside
//! the engine, on both sides (as `tlsgate terminate` does): the client's TCP connection ends in a
//! user-space TCP stack (smoltcp) answering as the service, the TLS handshake and records run
//! through the same rustls driver and record layer as the end-to-end path, and the plaintext
//! goes to the server over a second connection opened from the client's own address and port.
//! The choice is made at the client's SYN ([`SwitchReason`]); the SYN is then never forwarded.
//! A flow whose window shrank below the floor by its ClientHello is taken over there instead
//! ([`Proxy::adopt`]): the server's connection reset and opened again, the client's adopted.
//! Sans-IO like the rest of the engine: packets and time in, packets and a timer out.

pub mod flow;
mod persist;
pub mod tls;

use crate::tables::{ConnectionRow, FlowKey, FlowPath, FlowState, Mode, Release, SwitchReason};
pub use flow::Adoption;
use flow::{End, FailedSide, ProxyFlow};
use rustls::ServerConfig;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyLimits {
    /// Full-proxy flows at once; a SYN that would need one more is dropped (the client retries).
    pub max_flows: usize,
    /// A client SYN advertising a window below this many bytes goes to the full proxy; 0 never.
    pub window_floor: u32,
    /// The link's MTU: the largest packet the proxy's TCP stack sends.
    pub mtu: usize,
}

impl Default for ProxyLimits {
    fn default() -> ProxyLimits {
        ProxyLimits { max_flows: 256, window_floor: 536, mtu: 1500 }
    }
}

/// Counters over the proxy's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Flows switched to the full proxy, by reason.
    pub switched_window: u64,
    pub switched_flow_table: u64,
    pub switched_hello_window: u64,
    /// SYNs that wanted a full-proxy flow while the proxy was at its limit: dropped.
    pub dropped: u64,
    /// Flows that ended with both connections closed in order.
    pub closed: u64,
    /// Flows that failed, by the side that failed.
    pub failed_client: u64,
    pub failed_backend: u64,
    /// Flows expired while idle.
    pub expired: u64,
}

impl ProxyStats {
    pub fn switched(&self, reason: SwitchReason) -> u64 {
        match reason {
            SwitchReason::Window => self.switched_window,
            SwitchReason::FlowTable => self.switched_flow_table,
            SwitchReason::HelloWindow => self.switched_hello_window,
        }
    }
}

/// A switch or an end, for the driver's log (the engine logs nothing itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyEvent {
    Switched { key: FlowKey, reason: SwitchReason },
    Ended { key: FlowKey, end: End },
}

/// Events kept between two drains; beyond that they are only counted.
const EVENTS_KEPT: usize = 256;

/// One full-proxy flow and what the tables show of it.
#[derive(Debug)]
pub struct Entry {
    pub flow: ProxyFlow,
    /// Index of the service in the engine's configuration.
    pub service: usize,
    pub reason: SwitchReason,
    pub backend: SocketAddr,
    pub created: Duration,
    /// How it ended was counted.
    counted: bool,
}

#[derive(Debug, Default)]
pub struct Proxy {
    limits: ProxyLimits,
    flows: HashMap<FlowKey, Entry>,
    /// (client, backend) → key: the server's packets come to the client's own address.
    by_backend: HashMap<(SocketAddr, SocketAddr), FlowKey>,
    stats: ProxyStats,
    events: VecDeque<ProxyEvent>,
    /// Connections to servers decided since the last [`Proxy::take_connects`].
    connects: Vec<Connect>,
}

/// How a full-proxy flow's connection to its server went, for the pool's member health (the
/// same evidence as an end-to-end flow's SYN: SYN-ACK, or RST / no answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connect {
    /// Index of the service in the engine's configuration.
    pub service: usize,
    pub backend: SocketAddr,
    pub ok: bool,
}

impl Proxy {
    pub fn new(limits: ProxyLimits) -> Proxy {
        Proxy { limits, ..Proxy::default() }
    }

    pub fn limits(&self) -> ProxyLimits {
        self.limits
    }

    pub fn set_mtu(&mut self, mtu: usize) {
        self.limits.mtu = mtu;
    }

    pub fn stats(&self) -> ProxyStats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Whether a client advertising `window` bytes (a SYN's field, unscaled as in every SYN, or
    /// a later one scaled) is below the floor.
    pub fn window_too_small(&self, window: u32) -> bool {
        self.limits.window_floor > 0 && window < self.limits.window_floor
    }

    /// The flow a client packet belongs to.
    pub fn has(&self, key: &FlowKey) -> bool {
        self.flows.contains_key(key)
    }

    /// The flow a server packet (from `server` to `client`) belongs to.
    pub fn by_server(&self, client: SocketAddr, server: SocketAddr) -> Option<FlowKey> {
        self.by_backend.get(&(client, server)).copied()
    }

    /// Takes a client's SYN as a full-proxy flow: false (the SYN dropped and counted) when the
    /// proxy is at its limit or the flow cannot be set up.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &mut self,
        now: Duration,
        key: FlowKey,
        service: usize,
        backend: SocketAddr,
        reason: SwitchReason,
        tls: Arc<ServerConfig>,
        connect: Duration,
        syn: Vec<u8>,
        out: &mut Vec<Vec<u8>>,
    ) -> bool {
        if self.flows.len() >= self.limits.max_flows || self.by_backend.contains_key(&(key.client, backend)) {
            self.stats.dropped += 1;
            return false;
        }
        let flow = match ProxyFlow::new(now, key.client, key.server, backend, tls, self.limits.mtu, connect) {
            Ok(f) => f,
            Err(_) => {
                self.stats.dropped += 1;
                return false;
            }
        };
        self.insert(now, key, service, backend, reason, flow);
        self.packet(now, key, syn, out);
        true
    }

    fn insert(
        &mut self,
        now: Duration,
        key: FlowKey,
        service: usize,
        backend: SocketAddr,
        reason: SwitchReason,
        flow: ProxyFlow,
    ) {
        match reason {
            SwitchReason::Window => self.stats.switched_window += 1,
            SwitchReason::FlowTable => self.stats.switched_flow_table += 1,
            SwitchReason::HelloWindow => self.stats.switched_hello_window += 1,
        }
        self.event(ProxyEvent::Switched { key, reason });
        self.flows.insert(key, Entry { flow, service, reason, backend, created: now, counted: false });
        self.by_backend.insert((key.client, backend), key);
    }

    /// Whether a flow of `key` toward `backend` could be taken now.
    pub fn has_room(&self, key: &FlowKey, backend: SocketAddr) -> bool {
        self.flows.len() < self.limits.max_flows
            && !self.flows.contains_key(key)
            && !self.by_backend.contains_key(&(key.client, backend))
    }

    /// Takes over an end-to-end flow at its first client data segment `first` (the ClientHello,
    /// nothing of it consumed): the client's connection is adopted as it stands (`adoption`),
    /// the server's is opened anew from the client's address and port (the engine has reset the
    /// old one). False when the proxy has no room or the flow cannot be set up.
    #[allow(clippy::too_many_arguments)]
    pub fn adopt(
        &mut self,
        now: Duration,
        key: FlowKey,
        service: usize,
        backend: SocketAddr,
        tls: Arc<ServerConfig>,
        connect: Duration,
        adoption: Adoption,
        first: Vec<u8>,
        out: &mut Vec<Vec<u8>>,
    ) -> bool {
        if !self.has_room(&key, backend) {
            self.stats.dropped += 1;
            return false;
        }
        let made =
            ProxyFlow::adopt(now, key.client, key.server, backend, tls, self.limits.mtu, connect, adoption);
        let Ok(flow) = made else {
            self.stats.dropped += 1;
            return false;
        };
        self.insert(now, key, service, backend, SwitchReason::HelloWindow, flow);
        self.packet(now, key, first, out);
        true
    }

    /// A packet of a full-proxy flow, from either peer.
    pub fn packet(&mut self, now: Duration, key: FlowKey, pkt: Vec<u8>, out: &mut Vec<Vec<u8>>) {
        if let Some(e) = self.flows.get_mut(&key) {
            e.flow.packet(now, pkt, out);
            self.settle(key);
        }
    }

    /// Counts how the flow ended as soon as it has, and removes it once both connections are over.
    fn settle(&mut self, key: FlowKey) {
        let Some(e) = self.flows.get_mut(&key) else { return };
        if let Some(ok) = e.flow.take_connect() {
            self.connects.push(Connect { service: e.service, backend: e.backend, ok });
        }
        if let (false, Some(end)) = (e.counted, e.flow.end().cloned()) {
            e.counted = true;
            self.count(key, end);
        }
        if self.flows.get(&key).is_some_and(|e| e.flow.finished()) {
            self.remove(key);
        }
    }

    fn count(&mut self, key: FlowKey, end: End) {
        match &end {
            End::Closed => self.stats.closed += 1,
            End::Failed(FailedSide::Client, _) => self.stats.failed_client += 1,
            End::Failed(FailedSide::Backend, _) => self.stats.failed_backend += 1,
        }
        self.event(ProxyEvent::Ended { key, end });
    }

    fn remove(&mut self, key: FlowKey) {
        if let Some(e) = self.flows.remove(&key) {
            self.by_backend.remove(&(key.client, e.backend));
        }
    }

    fn event(&mut self, e: ProxyEvent) {
        if self.events.len() < EVENTS_KEPT {
            self.events.push_back(e);
        }
    }

    /// The connections to servers decided since the last call, oldest first.
    pub fn take_connects(&mut self) -> Vec<Connect> {
        std::mem::take(&mut self.connects)
    }

    /// The switches and ends since the last call, oldest first (at most [`EVENTS_KEPT`]).
    pub fn take_events(&mut self) -> Vec<ProxyEvent> {
        self.events.drain(..).collect()
    }

    /// The next instant at which [`Proxy::handle_timeout`] has work.
    pub fn poll_timeout(&self, idle: Duration, closing: Duration) -> Option<Duration> {
        self.flows.values().flat_map(|e| [e.flow.poll_at(), Some(deadline(e, idle, closing))]).flatten().min()
    }

    /// Runs the flows' timers and expires the idle ones (their connections reset).
    /// Runs the flows' timers; returns the flows whose timer panicked (left for the engine to
    /// reset and forget, the others served on).
    pub fn handle_timeout(
        &mut self,
        now: Duration,
        idle: Duration,
        closing: Duration,
        out: &mut Vec<Vec<u8>>,
    ) -> Vec<FlowKey> {
        let keys: Vec<FlowKey> = self.flows.keys().copied().collect();
        let mut panicked = Vec::new();
        for key in keys {
            let mark = out.len();
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let e = self.flows.get_mut(&key).expect("listed above");
                if deadline(e, idle, closing) <= now {
                    if e.flow.end().is_none() {
                        // A silent flow's peers are gone or stuck: reset both connections.
                        e.flow.abort(now, out);
                    }
                    self.settle(key);
                    self.remove(key);
                    self.stats.expired += 1;
                    return;
                }
                e.flow.timeout(now, out);
                self.settle(key);
            }));
            if caught.is_err() {
                out.truncate(mark);
                panicked.push(key);
            }
        }
        panicked
    }

    /// Resets both connections of a flow being dropped (its processing failed).
    pub fn reset(&mut self, now: Duration, key: FlowKey, out: &mut Vec<Vec<u8>>) {
        if let Some(e) = self.flows.get_mut(&key) {
            e.flow.reset(now, out);
        }
    }

    /// Drops a flow without running it again (after a panic in it).
    pub fn forget(&mut self, key: FlowKey) {
        if self.flows.contains_key(&key) {
            self.remove(key);
        }
    }

    pub fn flows(&self) -> impl Iterator<Item = (&FlowKey, &Entry)> {
        self.flows.iter()
    }

    pub fn get(&self, key: &FlowKey) -> Option<&Entry> {
        self.flows.get(key)
    }
}

impl Entry {
    /// The connection-table row (no sequence pairs: each side has its own TCP connection).
    pub fn row(&self, key: FlowKey, mode: Mode, release: Release) -> ConnectionRow {
        let tls = self.flow.tls();
        let state = match (self.flow.end(), tls.is_established()) {
            (Some(_), _) => FlowState::Closing,
            (None, true) => FlowState::Established,
            (None, false) => FlowState::Handshake,
        };
        ConnectionRow {
            key,
            backend: self.backend,
            session: None,
            state,
            mode,
            release,
            path: FlowPath::FullProxy(self.reason),
            pairs_up: Vec::new(),
            pairs_down: Vec::new(),
            up: self.flow.up,
            down: self.flow.down,
            record_seqs: tls.record_seqs(),
            state_bytes: self.flow.state_bytes(),
            last_activity: self.flow.last_activity,
        }
    }
}

/// When a flow expires without a packet: ended flows after the closing timeout, others idle.
fn deadline(e: &Entry, idle: Duration, closing: Duration) -> Duration {
    e.flow.last_activity + if e.flow.end().is_some() { closing } else { idle }
}

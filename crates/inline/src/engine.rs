//! The engine: packets and time in, packets and the next timer out (sans-IO, the quinn-proto
//! shape). Call [`Engine::handle_packet`] for every packet in either direction,
//! [`Engine::handle_timeout`] when [`Engine::poll_timeout`]'s instant has passed, and
//! [`Engine::report`] whenever the tables are wanted.
//!
//! Built so far (the skeleton of issue 5): the flow table keyed by the client's 4-tuple, bounded,
//! with half-open flows expiring sooner; the client's SYN has its MSS lowered by the largest record
//! overhead and SACK-permitted removed; direct mode's server-port rewrite both ways; everything
//! that is not a service flow passes byte-identical. The TLS data path (consuming the handshake,
//! record layer, sequence translation) is not wired yet: established flows' segments pass with
//! only the rewrite.

use crate::flow::Flow;
use crate::packet::{self, Segment};
use crate::record_crypto::Version;
use crate::tables::{ConnectionRow, FlowKey, FlowState, Mode, Release, Report};
use rustls::ServerConfig;
use std::collections::HashMap;
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
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Flow-table bound: a SYN beyond it is dropped (and counted); the client retries.
    pub max_flows: usize,
    /// A flow without its SYN-ACK expires after this.
    pub syn_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_flows: 65536,
            syn_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
        }
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
    /// SYNs dropped because the flow table was full.
    pub syn_dropped: u64,
    /// Segments of a service address with no flow (picked up mid-stream): passed unchanged.
    pub midstream: u64,
    pub flows_expired: u64,
    pub flows_reset: u64,
}

/// The largest expansion of a record, for the MSS clamp: the version is not known at SYN time.
fn max_overhead() -> u16 {
    Version::Tls12.overhead().max(Version::Tls13.overhead()) as u16
}

#[derive(Debug)]
pub struct Engine {
    config: Config,
    flows: HashMap<FlowKey, Flow>,
    /// (client, backend) → key: finds the flow of a server packet after the port rewrite.
    by_backend: HashMap<(SocketAddr, SocketAddr), FlowKey>,
    stats: Stats,
}

impl Engine {
    pub fn new(config: Config) -> Engine {
        Engine { config, flows: HashMap::new(), by_backend: HashMap::new(), stats: Stats::default() }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// Handles one packet seen at `now` and appends the packets to emit to `out`.
    pub fn handle_packet(&mut self, now: Duration, mut pkt: Vec<u8>, out: &mut Vec<Vec<u8>>) {
        let Some(seg) = packet::parse(&pkt) else {
            self.stats.passed += 1;
            out.push(pkt);
            return;
        };
        if let Some(svc) = self.config.services.iter().position(|s| s.addr == seg.dst) {
            let key = FlowKey { client: seg.src, server: seg.dst };
            if self.client_segment(now, svc, key, &seg, &mut pkt) {
                out.push(pkt);
            }
        } else if let Some(&key) = self.by_backend.get(&(seg.dst, seg.src)) {
            self.server_segment(now, key, &seg, &mut pkt);
            out.push(pkt);
        } else {
            self.stats.passed += 1;
            out.push(pkt);
        }
    }

    /// Client → server. Returns whether to forward the packet.
    fn client_segment(
        &mut self,
        now: Duration,
        svc: usize,
        key: FlowKey,
        seg: &Segment,
        pkt: &mut [u8],
    ) -> bool {
        let is_syn = seg.syn && seg.ack.is_none();
        if !self.flows.contains_key(&key) {
            if !is_syn {
                // No SYN seen: the MSS was never clamped and the ISNs are unknown. Pass.
                self.stats.midstream += 1;
                return true;
            }
            if self.flows.len() >= self.config.limits.max_flows {
                self.stats.syn_dropped += 1;
                return false;
            }
            let service = &self.config.services[svc];
            let backend =
                SocketAddr::new(service.addr.ip(), service.server_port.unwrap_or(service.addr.port()));
            self.flows.insert(
                key,
                Flow {
                    service: svc,
                    backend,
                    state: FlowState::SynSent,
                    client_isn: seg.seq,
                    server_isn: None,
                    mss: None,
                    created: now,
                    last_activity: now,
                    up: Default::default(),
                    down: Default::default(),
                },
            );
            self.by_backend.insert((key.client, backend), key);
            self.stats.flows_created += 1;
        }
        let flow = self.flows.get_mut(&key).expect("inserted above");
        flow.last_activity = now;
        flow.up.outer_bytes += seg.payload.len() as u64;
        let backend_port = flow.backend.port();
        let mss = packet::edit_tcp(pkt, seg, |t| {
            let mut mss = None;
            if is_syn {
                mss = packet::lower_mss(t.options_mut(), max_overhead());
                packet::strip_sack_permitted(t.options_mut());
            }
            t.set_dst_port(backend_port);
            mss
        });
        if is_syn {
            flow.mss = mss.or(flow.mss);
        }
        if seg.rst {
            self.remove(&key);
            self.stats.flows_reset += 1;
        } else if seg.fin {
            flow.state = FlowState::Closing;
        }
        self.stats.forwarded += 1;
        true
    }

    /// Server → client.
    fn server_segment(&mut self, now: Duration, key: FlowKey, seg: &Segment, pkt: &mut [u8]) {
        let Some(flow) = self.flows.get_mut(&key) else { return };
        flow.last_activity = now;
        flow.down.inner_bytes += seg.payload.len() as u64;
        if seg.syn && seg.ack.is_some() && flow.state == FlowState::SynSent {
            flow.server_isn = Some(seg.seq);
            flow.state = FlowState::Handshake;
        }
        let service_port = key.server.port();
        packet::edit_tcp(pkt, seg, |t| t.set_src_port(service_port));
        if seg.rst {
            self.remove(&key);
            self.stats.flows_reset += 1;
        } else if seg.fin {
            flow.state = FlowState::Closing;
        }
        self.stats.forwarded += 1;
    }

    fn remove(&mut self, key: &FlowKey) {
        if let Some(flow) = self.flows.remove(key) {
            self.by_backend.remove(&(key.client, flow.backend));
        }
    }

    /// The next instant at which [`Engine::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let l = &self.config.limits;
        self.flows.values().map(|f| f.deadline(l.syn_timeout, l.idle_timeout)).min()
    }

    /// Expires flows whose deadline has passed.
    pub fn handle_timeout(&mut self, now: Duration) {
        let l = self.config.limits;
        let expired: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, f)| f.deadline(l.syn_timeout, l.idle_timeout) <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            self.remove(&key);
            self.stats.flows_expired += 1;
        }
    }

    /// A snapshot of the tables (sessions and queues stay empty until the data path exists).
    pub fn report(&self) -> Report {
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
                    pairs_up: Vec::new(),
                    pairs_down: Vec::new(),
                    up: f.up,
                    down: f.down,
                    record_seqs: None,
                    state_bytes: f.state_bytes(),
                    last_activity: f.last_activity,
                }
            })
            .collect();
        connections.sort_by_key(|c| c.key);
        Report { sessions: Vec::new(), connections, queues: Vec::new() }
    }
}

//! The tables the engine reports (its session, connection and queue-state tables), as
//! plain data: owned values with no references into the engine, so a snapshot can be taken at any
//! time, between two packets, and handed to the admin endpoint or a test.
//!
//! Secrets are deliberately absent: the engine's tables hold keys and IVs, but a report is read by
//! operators and logs; the keys stay inside [`tlsgate_record::crypto`].

use crate::hold::HeldSegment;
use crate::seq_map::Entry;
use std::net::SocketAddr;
use std::time::Duration;

/// A flow's 4-tuple as the client sees it (before any address or port rewriting).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// Which way bytes travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server: ciphertext in, plaintext out.
    Up,
    /// Server to client: plaintext in, records out.
    Down,
}

/// How a service's flows are addressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Addresses untouched, the server port optionally rewritten.
    Direct,
    /// A virtual address in front of a pool; the chosen member is rewritten in per flow.
    Balanced,
}

/// When client plaintext reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Release {
    /// Only after the record's tag verified (default).
    #[default]
    Buffered,
    /// As decrypted (opt-in, weaker): in-order record pieces are decrypted on arrival and
    /// forwarded at once, the tag checked at the record's end; on failure the server gets a RST
    /// (having seen unauthenticated bytes) and the client a bad_record_mac alert. What may leave
    /// before the tag is `cut`'s release rule.
    CutThrough,
}

/// Why a flow went to the full proxy instead of the end-to-end path (decided at its SYN, or at
/// its ClientHello for a window that shrank below the floor since).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SwitchReason {
    /// The client's SYN advertised a window below the configured floor.
    Window,
    /// The end-to-end flow table was at its limit.
    FlowTable,
    /// The client's window, scaled, was below the floor when its ClientHello arrived (its SYN's
    /// was not): both TCP connections taken over mid-stream.
    HelloWindow,
}

impl SwitchReason {
    pub const ALL: [SwitchReason; 3] =
        [SwitchReason::Window, SwitchReason::FlowTable, SwitchReason::HelloWindow];

    /// The name in logs, metrics labels and the status page.
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchReason::Window => "window_below_floor",
            SwitchReason::FlowTable => "flow_table_full",
            SwitchReason::HelloWindow => "window_below_floor_at_client_hello",
        }
    }
}

/// How a flow is carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FlowPath {
    /// The client's own TCP connection, end to end, records rewritten inside its segments.
    #[default]
    EndToEnd,
    /// Terminated on both sides inside the engine (`proxy`), for the reason given.
    FullProxy(SwitchReason),
}

/// Where a flow is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    /// Client SYN seen (MSS clamped), waiting for the server's SYN-ACK.
    SynSent,
    /// TCP up; the engine is running the handshake on the client's bytes.
    Handshake,
    /// The record layer runs in the engine.
    Established,
    /// A FIN or close_notify seen; draining.
    Closing,
    /// Not TLS or not handled: packets pass unchanged.
    PassThrough,
    /// Ended by the engine (a failed tag, a broken rule, a refused handshake): the server's
    /// connection reset, the fatal alert and a FIN sent to the client, which gets RST at its
    /// next data or FIN, or after a short linger, and the flow goes.
    Reset,
}

/// Session table row (without the master secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    pub id: u64,
    /// "TLSv1.3" / "TLSv1.2".
    pub version: String,
    /// IANA name, e.g. "TLS13_AES_128_GCM_SHA256".
    pub suite: String,
    pub sni: Option<String>,
    /// Subject of the client's certificate when one was presented.
    pub peer_certificate: Option<String>,
    /// Engine time at which the handshake completed.
    pub created: Duration,
    pub expires: Option<Duration>,
}

/// Bytes and records through one direction of a flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Bytes on the outer (client) side: ciphertext, headers and tags included.
    pub outer_bytes: u64,
    /// Plaintext bytes on the inner (server) side.
    pub inner_bytes: u64,
    pub records: u64,
    /// Segments seen again (retransmissions or duplicates).
    pub retransmissions: u64,
    /// Plaintext sent on before its record's tag verified (cut-through release only).
    pub before_tag: u64,
}

impl std::ops::AddAssign for Counters {
    fn add_assign(&mut self, o: Counters) {
        self.outer_bytes += o.outer_bytes;
        self.inner_bytes += o.inner_bytes;
        self.records += o.records;
        self.retransmissions += o.retransmissions;
        self.before_tag += o.before_tag;
    }
}

/// Connection table row (without keys; with the sequence pairs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionRow {
    pub key: FlowKey,
    /// The server address actually used (differs from `key.server` when rewritten).
    pub backend: SocketAddr,
    pub session: Option<u64>,
    pub state: FlowState,
    pub mode: Mode,
    pub release: Release,
    /// End to end, or the full proxy (and why).
    pub path: FlowPath,
    /// Sequence pairs held, per direction.
    pub pairs_up: Vec<Entry>,
    pub pairs_down: Vec<Entry>,
    pub up: Counters,
    pub down: Counters,
    /// Next record sequence numbers (receive, transmit) once established.
    pub record_seqs: Option<(u64, u64)>,
    /// Bytes of state the flow holds (tables, queues, partial headers): checked against bounds.
    pub state_bytes: usize,
    pub last_activity: Duration,
}

/// Queue-state table row: a held segment of one flow and direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueRow {
    pub key: FlowKey,
    pub direction: Direction,
    pub segment: HeldSegment,
}

/// A snapshot of all three tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub sessions: Vec<SessionRow>,
    pub connections: Vec<ConnectionRow>,
    pub queues: Vec<QueueRow>,
}

impl Report {
    /// Total state bytes across flows, for the flow-table bound and the simulator's summary.
    pub fn state_bytes(&self) -> usize {
        self.connections.iter().map(|c| c.state_bytes).sum()
    }

    /// The largest per-flow state, the "peak state bytes per flow" of the simulator's line.
    pub fn peak_flow_state(&self) -> usize {
        self.connections.iter().map(|c| c.state_bytes).max().unwrap_or(0)
    }

    pub fn connection(&self, key: &FlowKey) -> Option<&ConnectionRow> {
        self.connections.iter().find(|c| &c.key == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hold::{HoldQueue, HoldReason};
    use crate::seq_map::SeqMap;

    #[test]
    fn a_report_is_plain_data_built_from_live_structures() {
        let key =
            FlowKey { client: "10.0.0.1:40000".parse().unwrap(), server: "10.0.0.2:443".parse().unwrap() };
        let mut pairs = SeqMap::new(1, 1, 8);
        pairs.push(500, 0, 0).unwrap();
        pairs.push(122, 5, 100).unwrap();
        let mut q = HoldQueue::new(1000, 4);
        q.insert(900, &[1; 40], 623).unwrap();
        let row = ConnectionRow {
            key,
            backend: "10.0.0.2:80".parse().unwrap(),
            session: Some(1),
            state: FlowState::Established,
            mode: Mode::Direct,
            release: Release::default(),
            path: FlowPath::default(),
            pairs_up: pairs.entries().copied().collect(),
            pairs_down: Vec::new(),
            up: Counters { outer_bytes: 622, inner_bytes: 100, records: 1, ..Counters::default() },
            down: Counters::default(),
            record_seqs: Some((1, 0)),
            state_bytes: pairs.state_bytes() + q.bytes(),
            last_activity: Duration::from_millis(5),
        };
        let queues = q
            .rows(623, HoldReason::AwaitingTag)
            .into_iter()
            .map(|segment| QueueRow { key, direction: Direction::Up, segment })
            .collect();
        let report = Report { sessions: Vec::new(), connections: vec![row], queues };
        // The snapshot is independent of the structures it came from.
        drop(pairs);
        drop(q);
        let c = report.connection(&key).unwrap();
        assert_eq!(c.release, Release::Buffered);
        assert_eq!(c.pairs_up.len(), 2);
        assert_eq!(c.pairs_up[1].inner_end(), 101);
        assert_eq!(report.queues[0].segment.reason, HoldReason::Gap);
        assert_eq!(report.peak_flow_state(), report.state_bytes());
        assert!(report.state_bytes() >= 40);
    }
}

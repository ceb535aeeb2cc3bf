//! Prometheus metrics, registered once per process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    pub listener: String,
    /// `ok`, `failed`, `timeout` or `refused`.
    pub result: String,
    /// Empty unless the handshake finished.
    pub version: String,
    pub suite: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    pub listener: String,
    /// `up` (client to backend) or `down`.
    pub direction: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KtlsLabels {
    /// `offloaded`, `no_ulp`, `cipher` or `error` (docs/ktls.md).
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub listener: String,
    /// `ok` or `failed`.
    pub result: String,
    /// `true` when the session was resumed (no full handshake).
    pub resumed: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub listener: String,
    /// `originate`, `passthrough` or `deny`.
    pub action: String,
    /// Index of the rule that matched, or `none` (default deny).
    pub rule: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub listener: String,
    pub route: String,
    pub backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TunnelLabels {
    /// `gate` or `portal`.
    pub role: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TunnelSessionLabels {
    pub role: String,
    /// `opened` or `refused`.
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectTunnelLabels {
    /// `allowed` or `refused`.
    pub result: String,
    /// Why a CONNECT was refused (`policy`, `bad_request`, …; docs/connect.md), empty if allowed.
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectStateLabel {
    /// `outer_tls` (handshake done, CONNECT not relayed yet), `downgraded`, `kernel_spliced` or
    /// `nested`.
    pub state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectiveLabels {
    /// `peer`, `start_tls`, `stop_tls`, or `invalid` (a line that is no request).
    pub op: String,
    /// `done` or `refused`.
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectedStateLabel {
    /// `clear`, `starting`, `tls` or `stopping`.
    pub state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `up` (client to server) or `down`.
    pub direction: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A reason's short name: why an inline flow went to the full proxy (`window_below_floor`,
    /// `flow_table_full`, `window_below_floor_at_client_hello`), or why a connect gate's
    /// downgrade was not spliced in the kernel (docs/connect.md).
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `closed`, `client_failed`, `backend_failed`, `expired` or `dropped` (the proxy was full).
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InlineBytesLabels {
    pub direction: String,
    /// `client` (records, on the client's interface) or `server` (plaintext).
    pub side: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FrameLabels {
    /// `passed` (not a service flow, crossed unchanged), `non_ip`, `unroutable` (no MAC learned
    /// for the destination) or `oversize` (above the far side's MTU).
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RingLabels {
    pub iface: String,
}

/// A served certificate: its listener and certificate file.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    pub listener: String,
    pub cert: String,
}

/// Seconds since the stapled OCSP response's `thisUpdate`, computed when scraped; holds the
/// `thisUpdate` as Unix seconds.
#[derive(Debug, Clone, Default)]
pub struct StapleAge(Arc<AtomicU64>);

impl StapleAge {
    pub fn set_this_update(&self, at: std::time::SystemTime) {
        let secs = at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.0.store(secs, Ordering::Relaxed);
    }
}

impl prometheus_client::metrics::TypedMetric for StapleAge {
    const TYPE: prometheus_client::metrics::MetricType = prometheus_client::metrics::MetricType::Gauge;
}

impl prometheus_client::encoding::EncodeMetric for StapleAge {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let age = now.saturating_sub(self.0.load(Ordering::Relaxed));
        encoder.encode_gauge(&(age as i64))
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Gauge
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ticket_accepted`, `ticket_unknown_key` (expired, or a key never seen), `ticket_invalid`,
    /// `session_local`, `session_redis` or `session_miss` (TLS 1.2 session IDs).
    pub result: String,
}

pub struct Metrics {
    registry: Registry,
    /// Resumption attempts seen by the fleet's ticketer and session store, by result.
    pub fleet_resumptions: Family<ResultLabel, Counter>,
    /// 1 while Redis answers the fleet's requests.
    pub fleet_redis_up: Gauge,
    /// OCSP staples fetched from the certificate's responder: the stapled
    /// response's age (present only while one is stapled), whether one is, and failed fetches.
    pub ocsp_staple_age: Family<CertLabels, StapleAge>,
    pub ocsp_stapled: Family<CertLabels, Gauge>,
    pub ocsp_fetch_failures: Family<CertLabels, Counter>,
    pub connections_open: Family<ListenerLabel, Gauge>,
    pub connections_total: Family<ListenerLabel, Counter>,
    pub handshakes: Family<HandshakeLabels, Counter>,
    pub handshake_seconds: Family<ListenerLabel, Histogram>,
    /// Kernel TLS offload decisions, by result.
    pub ktls_connections: Family<KtlsLabels, Counter>,
    pub bytes: Family<BytesLabels, Counter>,
    /// 1 when the backend is up; refreshed from the pools at every scrape.
    pub backend_up: Family<BackendLabels, Gauge>,
    pub backend_connections: Family<BackendLabels, Gauge>,
    /// Handshakes tlsgate made as a client (originate).
    pub upstream_handshakes: Family<UpstreamLabels, Counter>,
    /// Transparent policy decisions.
    pub transparent_decisions: Family<DecisionLabels, Counter>,
    pub tunnel_connections: Family<TunnelLabels, Gauge>,
    pub tunnel_sessions_open: Family<TunnelLabels, Gauge>,
    pub tunnel_sessions: Family<TunnelSessionLabels, Counter>,
    /// Connect gate CONNECTs, allowed or refused by reason.
    pub connect_tunnels: Family<ConnectTunnelLabels, Counter>,
    /// Connect gate connections open, by state.
    pub connect_tunnels_open: Family<ConnectStateLabel, Gauge>,
    /// Connect gate downgrades relayed in user space although the kernel splice is on, by reason.
    pub connect_kernel_splice_fallbacks: Family<ReasonLabel, Counter>,
    /// Control socket directives, by op and result.
    pub directives: Family<DirectiveLabels, Counter>,
    /// Directed connections open, by state.
    pub directed_open: Family<DirectedStateLabel, Gauge>,
    /// The inline engine's: brought to its counters at every scrape (`crate::inline`).
    pub inline_flows: Gauge,
    pub inline_hold_bytes: Gauge,
    pub inline_flows_created: Counter,
    pub inline_mac_failures: Counter,
    pub inline_not_tls: Counter,
    pub inline_records: Family<DirectionLabel, Counter>,
    pub inline_bytes: Family<InlineBytesLabels, Counter>,
    pub inline_frames: Family<FrameLabels, Counter>,
    pub inline_flow_events: Family<FrameLabels, Counter>,
    pub inline_ring_drops: Family<RingLabels, Counter>,
    /// Frames larger than a receive ring block, cut short by the kernel and dropped.
    pub inline_ring_rx_truncated: Family<RingLabels, Counter>,
    /// Messages handed to the kernel to send (a GSO run of segments is one).
    pub inline_ring_tx_messages: Family<RingLabels, Counter>,
    /// Bare ACKs left out of a send batch: a later ACK of the same flow acknowledged further.
    pub inline_ring_tx_acks_superseded: Family<RingLabels, Counter>,
    /// Flows switched from the end-to-end path to the full proxy, by reason.
    pub inline_mode_switches: Family<ReasonLabel, Counter>,
    pub inline_full_proxy_flows: Gauge,
    /// How full-proxy flows ended (or were refused), by outcome.
    pub inline_full_proxy_ends: Family<OutcomeLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("tlsgate");
        let connections_open = Family::default();
        let ocsp_staple_age = Family::default();
        let ocsp_stapled = Family::default();
        let ocsp_fetch_failures = Family::default();
        registry.register(
            "ocsp_staple_age_seconds",
            "Seconds since the stapled OCSP response's thisUpdate (only while one is stapled)",
            ocsp_staple_age.clone(),
        );
        registry.register("ocsp_stapled", "An OCSP response is stapled (1) or not (0)", ocsp_stapled.clone());
        registry.register(
            "ocsp_fetch_failures",
            "OCSP responder fetches that failed or returned an unusable response",
            ocsp_fetch_failures.clone(),
        );
        let connections_total = Family::default();
        let handshakes = Family::default();
        // 100 µs .. ~6.5 s: a loopback handshake to a client across the world.
        let handshake_seconds = Family::<ListenerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 17))
        });
        let bytes = Family::default();
        let ktls_connections = Family::default();
        registry.register(
            "ktls_connections",
            "Connections whose record layer was offered to the kernel (kernel TLS), by result",
            ktls_connections.clone(),
        );
        let backend_up = Family::default();
        let backend_connections = Family::default();
        let upstream_handshakes = Family::default();
        let transparent_decisions = Family::default();
        let tunnel_connections = Family::default();
        let tunnel_sessions_open = Family::default();
        let tunnel_sessions = Family::default();
        registry.register("tunnel_connections_open", "Tunnel connections up", tunnel_connections.clone());
        registry.register("tunnel_sessions_open", "Tunnel sessions live", tunnel_sessions_open.clone());
        registry.register("tunnel_sessions", "Tunnel sessions opened or refused", tunnel_sessions.clone());
        let connect_tunnels = Family::default();
        let connect_tunnels_open = Family::default();
        let connect_kernel_splice_fallbacks = Family::default();
        registry.register(
            "connect_tunnels",
            "Connect gate CONNECTs by result (allowed, refused) and refusal reason",
            connect_tunnels.clone(),
        );
        registry.register(
            "connect_tunnels_open",
            "Connect gate connections open by state (outer_tls, downgraded, kernel_spliced, nested)",
            connect_tunnels_open.clone(),
        );
        registry.register(
            "connect_kernel_splice_fallbacks",
            "Connect gate downgrades relayed with splice although the kernel splice is on, by reason",
            connect_kernel_splice_fallbacks.clone(),
        );
        registry.register("connections_open", "TLS connections open", connections_open.clone());
        registry.register("connections", "TCP connections accepted", connections_total.clone());
        registry.register("handshakes", "TLS handshakes by result, version and suite", handshakes.clone());
        registry.register(
            "handshake_duration_seconds",
            "Time from TCP accept to a finished TLS handshake",
            handshake_seconds.clone(),
        );
        registry.register("bytes", "Plaintext bytes relayed", bytes.clone());
        registry.register("backend_up", "Backend health (1 up, 0 down)", backend_up.clone());
        registry.register(
            "upstream_handshakes",
            "TLS handshakes toward upstreams (originate), by result and resumption",
            upstream_handshakes.clone(),
        );
        registry.register(
            "transparent_decisions",
            "Transparent policy decisions by action and rule",
            transparent_decisions.clone(),
        );
        registry.register(
            "backend_connections",
            "Connections open to the backend",
            backend_connections.clone(),
        );
        let fleet_resumptions = Family::default();
        let fleet_redis_up = Gauge::default();
        registry.register(
            "fleet_resumptions",
            "TLS resumption attempts against the fleet's shared tickets and session IDs, by result",
            fleet_resumptions.clone(),
        );
        registry.register(
            "fleet_redis_up",
            "1 while the fleet's Redis answers; 0 while tickets are issued with the last keys held",
            fleet_redis_up.clone(),
        );
        let inline_flows = Gauge::default();
        let inline_hold_bytes = Gauge::default();
        let inline_flows_created = Counter::default();
        let inline_mac_failures = Counter::default();
        let inline_not_tls = Counter::default();
        let inline_records = Family::default();
        let inline_bytes = Family::default();
        let inline_frames = Family::default();
        let inline_flow_events = Family::default();
        let inline_ring_drops = Family::default();
        let inline_ring_rx_truncated = Family::default();
        let inline_ring_tx_messages = Family::default();
        let inline_ring_tx_acks_superseded = Family::default();
        let inline_mode_switches = Family::default();
        let inline_full_proxy_flows = Gauge::default();
        let inline_full_proxy_ends = Family::default();
        registry.register(
            "inline_mode_switches",
            "Inline flows switched at their SYN from the end-to-end path to the full proxy, by reason",
            inline_mode_switches.clone(),
        );
        registry.register(
            "inline_full_proxy_flows",
            "Flows the inline engine terminates on both sides (full proxy)",
            inline_full_proxy_flows.clone(),
        );
        registry.register(
            "inline_full_proxy_ends",
            "Full-proxy flows by how they ended: closed, client_failed, backend_failed, expired, or dropped at the proxy's limit",
            inline_full_proxy_ends.clone(),
        );
        registry.register("inline_flows", "Flows in the inline engine's table", inline_flows.clone());
        registry.register(
            "inline_hold_bytes",
            "Bytes held in the inline engine's queues (out of order, awaiting a tag or the client's window)",
            inline_hold_bytes.clone(),
        );
        registry.register(
            "inline_flows_created",
            "Flows the inline engine began",
            inline_flows_created.clone(),
        );
        registry.register(
            "inline_mac_failures",
            "Inline flows failed on a client record whose tag did not verify",
            inline_mac_failures.clone(),
        );
        registry.register(
            "inline_not_tls",
            "Inline service flows that were not TLS and passed through",
            inline_not_tls.clone(),
        );
        registry.register("inline_records", "TLS records through the inline engine", inline_records.clone());
        registry.register(
            "inline_bytes",
            "Bytes through the inline engine: records on the client side, plaintext on the server side",
            inline_bytes.clone(),
        );
        registry.register(
            "inline_frames",
            "Frames the inline bridge passed or dropped, by kind",
            inline_frames.clone(),
        );
        registry.register(
            "inline_flow_events",
            "Flow events of the inline engine, by kind: SYNs dropped or half-open flows evicted at the table's bound, flows reset, server data on no flow, pool members failing or taken out",
            inline_flow_events.clone(),
        );
        registry.register(
            "inline_ring_kernel_drops",
            "Frames the kernel dropped because an interface's ring was full",
            inline_ring_drops.clone(),
        );
        registry.register(
            "inline_ring_rx_truncated",
            "Frames larger than a receive ring block, which the kernel cut short: dropped",
            inline_ring_rx_truncated.clone(),
        );
        registry.register(
            "inline_ring_tx_messages",
            "Messages an interface's ring handed to the kernel to send; a run of segments of one flow sent as one GSO frame is one",
            inline_ring_tx_messages.clone(),
        );
        registry.register(
            "inline_ring_tx_acks_superseded",
            "Bare ACKs an interface's ring left out of a send batch because a later ACK of the same flow in it acknowledged further",
            inline_ring_tx_acks_superseded.clone(),
        );
        let directives = Family::default();
        let directed_open = Family::default();
        registry.register("directives", "Control socket directives by op and result", directives.clone());
        registry.register(
            "directed_connections_open",
            "Directed connections open, by state",
            directed_open.clone(),
        );
        Metrics {
            directives,
            directed_open,
            registry,
            ocsp_staple_age,
            ocsp_stapled,
            ocsp_fetch_failures,
            fleet_resumptions,
            fleet_redis_up,
            inline_flows,
            inline_hold_bytes,
            inline_flows_created,
            inline_mac_failures,
            inline_not_tls,
            inline_records,
            inline_bytes,
            inline_frames,
            inline_flow_events,
            inline_ring_drops,
            inline_ring_rx_truncated,
            inline_ring_tx_messages,
            inline_ring_tx_acks_superseded,
            inline_mode_switches,
            inline_full_proxy_flows,
            inline_full_proxy_ends,
            connections_open,
            connections_total,
            handshakes,
            handshake_seconds,
            ktls_connections,
            bytes,
            backend_up,
            backend_connections,
            upstream_handshakes,
            transparent_decisions,
            tunnel_connections,
            tunnel_sessions_open,
            tunnel_sessions,
            connect_tunnels,
            connect_tunnels_open,
            connect_kernel_splice_fallbacks,
        }
    }

    /// The Prometheus text exposition of everything.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

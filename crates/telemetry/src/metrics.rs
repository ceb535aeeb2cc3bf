//! Prometheus metrics, registered once per process.

use std::sync::OnceLock;

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

pub struct Metrics {
    registry: Registry,
    pub connections_open: Family<ListenerLabel, Gauge>,
    pub connections_total: Family<ListenerLabel, Counter>,
    pub handshakes: Family<HandshakeLabels, Counter>,
    pub handshake_seconds: Family<ListenerLabel, Histogram>,
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
    fn new() -> Self {
        let mut registry = Registry::with_prefix("tlsgate");
        let connections_open = Family::default();
        let connections_total = Family::default();
        let handshakes = Family::default();
        // 100 µs .. ~6.5 s: a loopback handshake to a client across the world.
        let handshake_seconds = Family::<ListenerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 17))
        });
        let bytes = Family::default();
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
        Metrics {
            registry,
            connections_open,
            connections_total,
            handshakes,
            handshake_seconds,
            bytes,
            backend_up,
            backend_connections,
            upstream_handshakes,
            transparent_decisions,
            tunnel_connections,
            tunnel_sessions_open,
            tunnel_sessions,
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

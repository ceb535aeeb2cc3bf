//! What the connect gate reports of each connection: its row on the status page (identity,
//! destination, state, live bytes), the open-connection gauge by state, CONNECTs by result and
//! refusal reason, and bytes by direction, under the same families terminate uses.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tlsgate_telemetry::conns::{live, ConnInfo, Listed};
use tlsgate_telemetry::metrics::{
    metrics, BytesLabels, ConnectStateLabel, ConnectTunnelLabels, HandshakeLabels,
};

use crate::relay::Tally;

/// Where a gate connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// TLS established; the CONNECT not answered, or the downgrade not finished.
    OuterTls,
    /// Raw TCP both ways: the client's own TLS runs end to end.
    Downgraded,
    /// The client's bytes inside the gate's records.
    Nested,
    /// Downgraded and spliced in the kernel: one TCP connection portal to destination.
    Spliced,
}

impl State {
    fn label(self) -> &'static str {
        match self {
            State::OuterTls => "outer_tls",
            State::Downgraded => "downgraded",
            State::Nested => "nested",
            State::Spliced => "kernel_spliced",
        }
    }

    fn shown(self) -> &'static str {
        match self {
            State::OuterTls => "outer TLS",
            State::Downgraded => "downgraded",
            State::Nested => "nested",
            State::Spliced => "kernel spliced",
        }
    }
}

fn open_gauge(state: State) -> Gauge {
    metrics().connect_tunnels_open.get_or_create_owned(&ConnectStateLabel { state: state.label().into() })
}

/// One gate connection after its handshake: listed and counted as open until dropped.
pub(super) struct Meter {
    listed: Listed,
    open: Gauge,
    up: Counter,
    down: Counter,
}

impl Meter {
    pub(super) fn new(
        listener: &str,
        client: SocketAddr,
        identity: String,
        version: String,
        suite: String,
    ) -> Meter {
        let listed = live().insert(ConnInfo {
            listener: listener.into(),
            client,
            sni: String::new(),
            version,
            suite,
            identity,
            record_layer: "tlsgate".into(),
            backend: Default::default(),
            state: Mutex::new(State::OuterTls.shown().into()),
            started: Instant::now(),
            up: Default::default(),
            down: Default::default(),
        });
        let open = open_gauge(State::OuterTls);
        open.inc();
        let bytes = |direction: &str| {
            metrics()
                .bytes
                .get_or_create_owned(&BytesLabels { listener: listener.into(), direction: direction.into() })
        };
        Meter { listed, open, up: bytes("up"), down: bytes("down") }
    }

    /// The CONNECT's target and the address connected.
    pub(super) fn destination(&self, target: &str, to: &str) {
        if let Ok(mut b) = self.listed.info.backend.lock() {
            *b = format!("{target} ({to})");
        }
    }

    pub(super) fn set_state(&mut self, state: State) {
        self.open.dec();
        self.open = open_gauge(state);
        self.open.inc();
        if let Ok(mut s) = self.listed.info.state.lock() {
            *s = state.shown().into();
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl Tally for Meter {
    fn up(&self, n: u64) {
        self.listed.info.up.fetch_add(n, Ordering::Relaxed);
        self.up.inc_by(n);
    }
    fn down(&self, n: u64) {
        self.listed.info.down.fetch_add(n, Ordering::Relaxed);
        self.down.inc_by(n);
    }
}

/// A CONNECT allowed (the destination connected, the answer about to go).
pub(super) fn allowed() {
    tunnels("allowed", "");
}

/// A CONNECT refused, by the reason's short name.
pub(super) fn refused(reason: &str) {
    tunnels("refused", reason);
}

fn tunnels(result: &str, reason: &str) {
    metrics()
        .connect_tunnels
        .get_or_create(&ConnectTunnelLabels { result: result.into(), reason: reason.into() })
        .inc();
}

/// A handshake's end: `ok` (with version and suite), `failed` or `timeout`.
pub(super) fn handshake(listener: &str, result: &str, version: &str, suite: &str) {
    let labels = HandshakeLabels {
        listener: listener.into(),
        result: result.into(),
        version: version.into(),
        suite: suite.into(),
    };
    metrics().handshakes.get_or_create(&labels).inc();
}

//! The inline engine on the admin listener: its session, connection and queue tables on
//! `/status` (HTML) and `/status.json`, its counters on `/metrics`. Each is a pure function of
//! one [`InlineView`], the engine's report and counters taken at one instant.

use std::fmt::Write as _;

use prometheus_client::metrics::counter::Counter;
use serde_json::{json, Value};
use tlsgate_inline::bridge::BridgeStats;
use tlsgate_inline::engine::Stats;
use tlsgate_inline::hold::HoldReason;
use tlsgate_inline::seq_map::Entry;
use tlsgate_inline::tables::{
    ConnectionRow, Counters, Direction, FlowKey, FlowPath, FlowState, Mode, Release, Report, SwitchReason,
};

use crate::metrics::{
    DirectionLabel, FrameLabels, InlineBytesLabels, Metrics, OutcomeLabel, ReasonLabel, RingLabels,
};
use crate::status::esc;

/// The running bridge at one instant.
#[derive(Debug, Clone, Default)]
pub struct InlineView {
    pub client_iface: String,
    pub server_iface: String,
    pub report: Report,
    pub engine: Stats,
    pub bridge: BridgeStats,
    /// The client interface's ring, then the server interface's.
    pub rings: [RingCounters; 2],
}

/// One AF_PACKET ring's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingCounters {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Frames the kernel dropped because the ring was full.
    pub kernel_drops: u64,
    pub tx_errors: u64,
    /// Frames larger than a ring block, cut short by the kernel: dropped.
    pub rx_truncated: u64,
    /// Messages handed to the kernel (a GSO run of frames is one).
    pub tx_messages: u64,
    /// Bare ACKs left out of a send batch because a later ACK of the same flow in it
    /// acknowledged further.
    pub tx_acks_superseded: u64,
}

impl InlineView {
    /// Bytes waiting in the hold queues, both directions, every flow.
    pub fn hold_bytes(&self) -> usize {
        self.report.queues.iter().map(|q| q.segment.len).sum()
    }

    /// (segments, bytes) held for one flow.
    fn held(&self, key: &FlowKey) -> (usize, usize) {
        let rows = self.report.queues.iter().filter(|q| q.key == *key);
        rows.fold((0, 0), |(n, b), q| (n + 1, b + q.segment.len))
    }

    fn ifaces(&self) -> [&str; 2] {
        [&self.client_iface, &self.server_iface]
    }
}

fn mode(m: Mode) -> &'static str {
    match m {
        Mode::Direct => "direct",
        Mode::Balanced => "balanced",
    }
}

fn release(r: Release) -> &'static str {
    match r {
        Release::Buffered => "buffered",
        Release::CutThrough => "cut-through",
    }
}

/// `end-to-end`, or `full-proxy` with the reason it was switched.
fn path(p: FlowPath) -> String {
    match p {
        FlowPath::EndToEnd => "end-to-end".into(),
        FlowPath::FullProxy(r) => format!("full-proxy ({})", r.as_str()),
    }
}

fn state(s: FlowState) -> &'static str {
    match s {
        FlowState::SynSent => "syn-sent",
        FlowState::Handshake => "handshake",
        FlowState::Established => "established",
        FlowState::Closing => "closing",
        FlowState::PassThrough => "pass-through",
        FlowState::Reset => "reset",
    }
}

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Up => "up",
        Direction::Down => "down",
    }
}

fn reason(r: HoldReason) -> &'static str {
    match r {
        HoldReason::Gap => "gap",
        HoldReason::AwaitingTag => "awaiting-tag",
        HoldReason::Window => "window",
    }
}

fn counters(c: &Counters) -> Value {
    json!({
        "outer_bytes": c.outer_bytes,
        "inner_bytes": c.inner_bytes,
        "records": c.records,
        "retransmissions": c.retransmissions,
        "before_tag": c.before_tag,
    })
}

fn pairs(entries: &[Entry]) -> Value {
    entries
        .iter()
        .map(|e| json!({"outer": e.outer, "inner": e.inner, "outer_len": e.outer_len, "inner_len": e.inner_len}))
        .collect()
}

fn connection(v: &InlineView, c: &ConnectionRow) -> Value {
    let (segments, bytes) = v.held(&c.key);
    json!({
        "client": c.key.client.to_string(),
        "server": c.key.server.to_string(),
        "backend": c.backend.to_string(),
        "session": c.session,
        "mode": mode(c.mode),
        "release": release(c.release),
        "path": match c.path {
            FlowPath::EndToEnd => json!("end-to-end"),
            FlowPath::FullProxy(_) => json!("full-proxy"),
        },
        "switch_reason": match c.path {
            FlowPath::EndToEnd => Value::Null,
            FlowPath::FullProxy(r) => json!(r.as_str()),
        },
        "state": state(c.state),
        "up": counters(&c.up),
        "down": counters(&c.down),
        "hold_segments": segments,
        "hold_bytes": bytes,
        "pairs_up": pairs(&c.pairs_up),
        "pairs_down": pairs(&c.pairs_down),
        "record_seqs": c.record_seqs.map(|(rx, tx)| json!({"receive": rx, "transmit": tx})),
        "state_bytes": c.state_bytes,
        "last_activity_ms": c.last_activity.as_millis() as u64,
    })
}

/// The tables and counters as one JSON document (`/status.json`'s `inline`).
pub fn json(v: &InlineView) -> Value {
    let r = &v.report;
    let e = &v.engine;
    let b = &v.bridge;
    json!({
        "client_iface": v.client_iface,
        "server_iface": v.server_iface,
        "sessions": r.sessions.iter().map(|s| json!({
            "id": s.id,
            "version": s.version,
            "suite": s.suite,
            "sni": s.sni,
            "peer_certificate": s.peer_certificate,
            "created_ms": s.created.as_millis() as u64,
        })).collect::<Value>(),
        "connections": r.connections.iter().map(|c| connection(v, c)).collect::<Value>(),
        "queues": r.queues.iter().map(|q| json!({
            "client": q.key.client.to_string(),
            "server": q.key.server.to_string(),
            "direction": direction(q.direction),
            "offset": q.segment.offset,
            "len": q.segment.len,
            "reason": reason(q.segment.reason),
        })).collect::<Value>(),
        "engine": {
            "passed": e.passed, "forwarded": e.forwarded, "flows_created": e.flows_created,
            "syn_dropped": e.syn_dropped, "midstream": e.midstream, "flows_expired": e.flows_expired,
            "flows_reset": e.flows_reset, "flows_replaced": e.flows_replaced,
            "orphan_server_data": e.orphan_server_data,
            "not_tls": e.not_tls, "mac_failures": e.mac_failures, "flows_panicked": e.flows_panicked,
            "flows_parked": e.flows_parked, "flows_compacted": e.flows_compacted,
            "embryonic_evicted": e.embryonic_evicted, "member_failures": e.member_failures,
            "members_taken_out": e.members_taken_out,
            "up": counters(&e.up), "down": counters(&e.down),
            "full_proxy": {
                "switched_window_below_floor": e.proxy.switched_window,
                "switched_flow_table_full": e.proxy.switched_flow_table,
                "switched_window_below_floor_at_client_hello": e.proxy.switched_hello_window,
                "dropped": e.proxy.dropped, "closed": e.proxy.closed,
                "failed_client": e.proxy.failed_client, "failed_backend": e.proxy.failed_backend,
                "expired": e.proxy.expired,
            },
        },
        "bridge": {
            "non_ip_frames": b.non_ip_frames, "arp_answered": b.arp_answered,
            "nd_answered": b.nd_answered, "arp_probes": b.arp_probes, "nd_probes": b.nd_probes,
            "unroutable": b.unroutable, "oversize": b.oversize, "csum_completed": b.csum_completed,
            "gso_whole": b.gso_whole, "gso_cut": b.gso_cut, "malformed": b.malformed,
        },
        "rings": v.ifaces().iter().zip(&v.rings).map(|(iface, ring)| json!({
            "iface": iface, "rx_frames": ring.rx_frames, "tx_frames": ring.tx_frames,
            "kernel_drops": ring.kernel_drops, "tx_errors": ring.tx_errors,
            "rx_truncated": ring.rx_truncated, "tx_messages": ring.tx_messages,
            "tx_acks_superseded": ring.tx_acks_superseded,
        })).collect::<Value>(),
    })
}

/// The status page's inline section: sessions, connections, held segments. Every value is
/// escaped (the SNI comes from clients).
pub fn html(v: &InlineView) -> String {
    let r = &v.report;
    let mut h = format!("<h2>Inline engine ({} &harr; {})</h2>", esc(&v.client_iface), esc(&v.server_iface));
    let _ = write!(h, "<h3>Sessions ({})</h3><table id=\"inline-sessions\"><tr><th>id</th><th>version</th><th>suite</th><th>SNI</th></tr>", r.sessions.len());
    for s in &r.sessions {
        let sni = s.sni.as_deref().unwrap_or("");
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            s.id,
            esc(&s.version),
            esc(&s.suite),
            esc(sni)
        );
    }
    let _ = write!(h, "</table><h3>Connections ({})</h3><table id=\"inline-connections\"><tr><th>client</th><th>server</th><th>backend</th><th>mode</th><th>release</th><th>path</th><th>state</th><th>records up</th><th>records down</th><th>bytes up (client/server)</th><th>bytes down (server/client)</th><th>held (segments/bytes)</th><th>sequence pairs (up/down)</th></tr>", r.connections.len());
    for c in &r.connections {
        let (segments, bytes) = v.held(&c.key);
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}/{}</td><td>{segments}/{bytes}</td><td>{}/{}</td></tr>",
            c.key.client,
            c.key.server,
            c.backend,
            mode(c.mode),
            release(c.release),
            path(c.path),
            state(c.state),
            c.up.records,
            c.down.records,
            c.up.outer_bytes,
            c.up.inner_bytes,
            c.down.inner_bytes,
            c.down.outer_bytes,
            c.pairs_up.len(),
            c.pairs_down.len()
        );
    }
    let _ = write!(h, "</table><h3>Held segments ({})</h3><table id=\"inline-queues\"><tr><th>client</th><th>direction</th><th>offset</th><th>bytes</th><th>reason</th></tr>", r.queues.len());
    for q in &r.queues {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            q.key.client,
            direction(q.direction),
            q.segment.offset,
            q.segment.len,
            reason(q.segment.reason)
        );
    }
    h.push_str("</table>");
    h
}

/// A counter brought up to a total the engine keeps (it only grows while the bridge runs).
fn set_total(c: &Counter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

/// Brings the inline families of `m` to `v`'s values (at every scrape).
pub fn update_metrics(v: &InlineView, m: &Metrics) {
    let e = &v.engine;
    m.inline_flows.set(v.report.connections.len() as i64);
    m.inline_hold_bytes.set(v.hold_bytes() as i64);
    set_total(&m.inline_flows_created, e.flows_created);
    set_total(&m.inline_mac_failures, e.mac_failures);
    set_total(&m.inline_not_tls, e.not_tls);
    for (dir, c) in [("up", &e.up), ("down", &e.down)] {
        let label = |side: &str| InlineBytesLabels { direction: dir.into(), side: side.into() };
        set_total(&m.inline_records.get_or_create(&DirectionLabel { direction: dir.into() }), c.records);
        // Up: ciphertext from the client, plaintext to the server; down the other way round.
        set_total(&m.inline_bytes.get_or_create(&label("client")), c.outer_bytes);
        set_total(&m.inline_bytes.get_or_create(&label("server")), c.inner_bytes);
    }
    let b = &v.bridge;
    for (kind, n) in [
        ("passed", e.passed + e.midstream),
        ("non_ip", b.non_ip_frames),
        ("unroutable", b.unroutable),
        ("oversize", b.oversize),
        ("malformed", b.malformed),
    ] {
        set_total(&m.inline_frames.get_or_create(&FrameLabels { kind: kind.into() }), n);
    }
    for (kind, n) in [
        ("syn_dropped", e.syn_dropped),
        ("embryonic_evicted", e.embryonic_evicted),
        ("flow_reset", e.flows_reset),
        ("flow_replaced", e.flows_replaced),
        ("flow_panicked", e.flows_panicked),
        ("orphan_server_data", e.orphan_server_data),
        ("member_failure", e.member_failures),
        ("member_taken_out", e.members_taken_out),
    ] {
        set_total(&m.inline_flow_events.get_or_create(&FrameLabels { kind: kind.into() }), n);
    }
    let p = &e.proxy;
    m.inline_full_proxy_flows
        .set(v.report.connections.iter().filter(|c| c.path != FlowPath::EndToEnd).count() as i64);
    for reason in SwitchReason::ALL {
        let label = ReasonLabel { reason: reason.as_str().into() };
        set_total(&m.inline_mode_switches.get_or_create(&label), p.switched(reason));
    }
    for (outcome, n) in [
        ("closed", p.closed),
        ("client_failed", p.failed_client),
        ("backend_failed", p.failed_backend),
        ("expired", p.expired),
        ("dropped", p.dropped),
    ] {
        set_total(&m.inline_full_proxy_ends.get_or_create(&OutcomeLabel { outcome: outcome.into() }), n);
    }
    for (iface, ring) in v.ifaces().iter().zip(&v.rings) {
        let label = RingLabels { iface: iface.to_string() };
        set_total(&m.inline_ring_drops.get_or_create(&label), ring.kernel_drops);
        set_total(&m.inline_ring_rx_truncated.get_or_create(&label), ring.rx_truncated);
        set_total(&m.inline_ring_tx_messages.get_or_create(&label), ring.tx_messages);
        set_total(&m.inline_ring_tx_acks_superseded.get_or_create(&label), ring.tx_acks_superseded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tlsgate_inline::hold::HeldSegment;
    use tlsgate_inline::tables::{QueueRow, SessionRow};

    fn view() -> InlineView {
        let key =
            FlowKey { client: "10.0.0.1:40000".parse().unwrap(), server: "10.0.0.2:443".parse().unwrap() };
        let up = Counters { outer_bytes: 622, inner_bytes: 100, records: 1, ..Counters::default() };
        let down = Counters { outer_bytes: 1022, inner_bytes: 1000, records: 2, ..Counters::default() };
        let row = ConnectionRow {
            key,
            backend: "10.0.0.2:80".parse().unwrap(),
            session: Some(0),
            state: FlowState::Established,
            mode: Mode::Direct,
            release: Release::CutThrough,
            path: FlowPath::EndToEnd,
            pairs_up: vec![Entry { outer: 500, inner: 1, outer_len: 122, inner_len: 100, head: 5 }],
            pairs_down: Vec::new(),
            up,
            down,
            record_seqs: Some((1, 2)),
            state_bytes: 4096,
            last_activity: Duration::from_millis(1500),
        };
        let session = SessionRow {
            id: 0,
            version: "TLSv1.3".into(),
            suite: "TLS13_AES_128_GCM_SHA256".into(),
            sni: Some("<b>x</b>".into()),
            peer_certificate: None,
            created: Duration::from_secs(1),
            expires: None,
        };
        let queue = |offset, len| QueueRow {
            key,
            direction: Direction::Up,
            segment: HeldSegment { offset, len, reason: HoldReason::Gap },
        };
        InlineView {
            client_iface: "eth0".into(),
            server_iface: "eth1".into(),
            report: Report {
                sessions: vec![session],
                connections: vec![row],
                queues: vec![queue(900, 40), queue(1000, 60)],
            },
            engine: Stats {
                flows_created: 3,
                mac_failures: 1,
                embryonic_evicted: 4,
                not_tls: 1,
                passed: 7,
                midstream: 2,
                up,
                down,
                ..Stats::default()
            },
            bridge: BridgeStats { non_ip_frames: 4, unroutable: 5, oversize: 6, ..BridgeStats::default() },
            rings: [
                RingCounters { kernel_drops: 8, tx_messages: 11, ..Default::default() },
                RingCounters {
                    kernel_drops: 9,
                    rx_truncated: 2,
                    tx_acks_superseded: 3,
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn the_json_carries_every_table_and_counter() {
        let j = json(&view());
        let c = &j["connections"][0];
        assert_eq!(c["client"], "10.0.0.1:40000");
        assert_eq!(
            (c["mode"].as_str(), c["release"].as_str(), c["state"].as_str()),
            (Some("direct"), Some("cut-through"), Some("established"))
        );
        assert_eq!((c["up"]["records"].as_u64(), c["down"]["outer_bytes"].as_u64()), (Some(1), Some(1022)));
        assert_eq!((c["hold_segments"].as_u64(), c["hold_bytes"].as_u64()), (Some(2), Some(100)));
        assert_eq!(c["pairs_up"][0]["outer"], 500);
        assert_eq!(c["record_seqs"]["transmit"], 2);
        assert_eq!(j["sessions"][0]["sni"], "<b>x</b>");
        assert_eq!(j["queues"][1]["reason"], "gap");
        assert_eq!(j["engine"]["mac_failures"], 1);
        assert_eq!(j["bridge"]["oversize"], 6);
        assert_eq!(
            (j["rings"][1]["iface"].as_str(), j["rings"][1]["kernel_drops"].as_u64()),
            (Some("eth1"), Some(9))
        );
        assert_eq!(
            (j["rings"][0]["tx_messages"].as_u64(), j["rings"][1]["rx_truncated"].as_u64()),
            (Some(11), Some(2))
        );
        assert_eq!(j["rings"][1]["tx_acks_superseded"].as_u64(), Some(3));
    }

    #[test]
    fn the_html_has_the_three_tables_escaped() {
        let h = html(&view());
        for id in ["inline-sessions", "inline-connections", "inline-queues"] {
            assert!(h.contains(&format!("id=\"{id}\"")), "{id}: {h}");
        }
        assert!(h.contains("&lt;b&gt;x&lt;/b&gt;") && !h.contains("<b>x"), "{h}");
        assert!(h.contains("<td>622/100</td>") && h.contains("<td>2/100</td>"), "{h}");
    }

    /// A full-proxy flow beside the end-to-end one: its path and reason in both tables, the
    /// switch counted by reason on /metrics.
    #[test]
    fn a_full_proxy_flow_shows_its_path_and_its_switch_is_counted() {
        let mut v = view();
        let mut row = v.report.connections[0].clone();
        row.key.client = "10.0.0.1:40001".parse().unwrap();
        row.path = FlowPath::FullProxy(SwitchReason::Window);
        row.pairs_up.clear();
        v.report.connections.push(row);
        v.engine.proxy.switched_window = 1;
        v.engine.proxy.failed_backend = 2;
        let j = json(&v);
        assert_eq!(j["connections"][0]["path"], "end-to-end");
        assert_eq!(j["connections"][0]["switch_reason"], Value::Null);
        assert_eq!(j["connections"][1]["path"], "full-proxy");
        assert_eq!(j["connections"][1]["switch_reason"], "window_below_floor");
        assert_eq!(j["engine"]["full_proxy"]["switched_window_below_floor"], 1);
        let h = html(&v);
        assert!(
            h.contains("<td>full-proxy (window_below_floor)</td>") && h.contains("<td>end-to-end</td>"),
            "{h}"
        );
        let m = crate::metrics::Metrics::new();
        update_metrics(&v, &m);
        let text = m.encode();
        for line in [
            "tlsgate_inline_mode_switches_total{reason=\"window_below_floor\"} 1",
            "tlsgate_inline_mode_switches_total{reason=\"flow_table_full\"} 0",
            "tlsgate_inline_full_proxy_flows 1",
            "tlsgate_inline_full_proxy_ends_total{outcome=\"backend_failed\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn metrics_follow_the_engines_totals() {
        let m = crate::metrics::metrics();
        let mut v = view();
        update_metrics(&v, m);
        v.engine.flows_created = 5;
        update_metrics(&v, m);
        let text = m.encode();
        for line in [
            "tlsgate_inline_flows 1",
            "tlsgate_inline_hold_bytes 100",
            "tlsgate_inline_flows_created_total 5",
            "tlsgate_inline_mac_failures_total 1",
            "tlsgate_inline_records_total{direction=\"down\"} 2",
            "tlsgate_inline_bytes_total{direction=\"up\",side=\"client\"} 622",
            "tlsgate_inline_bytes_total{direction=\"down\",side=\"server\"} 1000",
            "tlsgate_inline_frames_total{kind=\"passed\"} 9",
            "tlsgate_inline_flow_events_total{kind=\"embryonic_evicted\"} 4",
            "tlsgate_inline_frames_total{kind=\"unroutable\"} 5",
            "tlsgate_inline_ring_kernel_drops_total{iface=\"eth0\"} 8",
            "tlsgate_inline_ring_tx_messages_total{iface=\"eth0\"} 11",
            "tlsgate_inline_ring_rx_truncated_total{iface=\"eth1\"} 2",
            "tlsgate_inline_ring_rx_truncated_total{iface=\"eth0\"} 0",
            "tlsgate_inline_ring_tx_acks_superseded_total{iface=\"eth1\"} 3",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }
}

//! The `[inline]` section as the running bridge takes it: the engine's services with their
//! rustls configs, started, reloaded and shown on the admin listener.

use std::sync::{Arc, Weak};

use tlsgate_config::{InlineConfig, ReleaseMode};
use tlsgate_inline::engine::{self, Limits, Service};
use tlsgate_inline::proxy::ProxyLimits;
use tlsgate_inline::tables::{Mode, Release};
use tlsgate_io::inline::{InlineHandle, InlineSettings, InlineSnapshot};
use tlsgate_io::ProxyError;
use tlsgate_telemetry::inline::{InlineView, RingCounters};
use tlsgate_telemetry::status::{ListenerStatus, StatusSource};
use tlsgate_tls::inline::inline_server_config;

/// The engine's services: each certificate and key loaded (and its permissions checked).
pub fn services(c: &InlineConfig, insecure: bool) -> Result<Vec<Service>, String> {
    let mut services = Vec::new();
    for s in &c.service {
        let tls =
            inline_server_config(s, insecure).map_err(|e| format!("inline service {}: {e}", s.label()))?;
        services.push(Service {
            addr: s.addr(),
            server_port: s.plain_port,
            mode: if s.is_balanced() { Mode::Balanced } else { Mode::Direct },
            release: match c.mode_of(s) {
                ReleaseMode::Buffered => Release::Buffered,
                ReleaseMode::CutThrough => Release::CutThrough,
            },
            tls,
            pool: s.pool.clone(),
        });
    }
    Ok(services)
}

/// What `InlineHandle::start` takes: the section's limits over the engine's defaults.
pub fn settings(c: &InlineConfig, insecure: bool) -> Result<InlineSettings, String> {
    let limits = Limits {
        max_flows: c.limits.max_flows,
        idle_timeout: c.limits.idle_timeout,
        syn_timeout: c.limits.syn_timeout,
        proxy: ProxyLimits {
            max_flows: c.limits.full_proxy_max_flows,
            window_floor: c.limits.window_floor,
            ..ProxyLimits::default()
        },
        ..Limits::default()
    }
    .with_flow_window(c.limits.flow_window);
    Ok(InlineSettings {
        client_iface: c.client_iface.clone(),
        server_iface: c.server_iface.clone(),
        engine: engine::Config { services: services(c, insecure)?, limits },
        ring: Default::default(),
        release_memory: Some(crate::memory::release),
    })
}

/// Opens both interfaces and starts the bridge; logs `inline running` once both are open.
pub fn start(c: &InlineConfig, insecure: bool) -> Result<InlineHandle, ProxyError> {
    let settings = settings(c, insecure).map_err(ProxyError::config)?;
    // Parked flows' state in a heap of its own (allocator.rs).
    tlsgate_inline::parked_memory::install(crate::allocator::parked_scope);
    let handle = InlineHandle::start(settings).map_err(|e| start_error(c, &e))?;
    let labels: Vec<String> = c.service.iter().map(|s| format!("{} ({})", s.label(), c.mode_of(s))).collect();
    tracing::info!(
        client_iface = %c.client_iface,
        server_iface = %c.server_iface,
        services = %labels.join(", "),
        "inline running"
    );
    Ok(handle)
}

/// The interfaces are the operator's choice, and so are the privileges tlsgate runs with: a
/// failure to open them is a config error (the ring's error names the capabilities needed).
fn start_error(c: &InlineConfig, e: &std::io::Error) -> ProxyError {
    let text = tlsgate_core::os_error::os_error(e);
    ProxyError::config(format!("inline bridge {} <-> {}: {text}", c.client_iface, c.server_iface))
}

/// New certificates for the running bridge, or why `new` needs a restart.
pub fn reload(
    handle: &InlineHandle,
    old: &InlineConfig,
    new: &InlineConfig,
    insecure: bool,
) -> Result<(), ProxyError> {
    if let Some(why) = old.restart_needed(new) {
        return Err(ProxyError::config(why));
    }
    let services = services(new, insecure).map_err(ProxyError::config)?;
    handle.reload(services).map_err(|e| ProxyError::config(format!("inline: {e}")))
}

/// A snapshot as the admin pages show it.
pub fn view(c: &InlineConfig, s: InlineSnapshot) -> InlineView {
    let ring = |r: tlsgate_io::inline::ring::RingStats| RingCounters {
        rx_frames: r.rx_frames,
        tx_frames: r.tx_frames,
        kernel_drops: r.kernel_drops,
        tx_errors: r.tx_errors,
        rx_truncated: r.rx_truncated,
        tx_messages: r.tx_messages,
        tx_acks_superseded: r.tx_acks_superseded,
    };
    InlineView {
        client_iface: c.client_iface.clone(),
        server_iface: c.server_iface.clone(),
        report: s.report,
        engine: s.engine,
        bridge: s.bridge,
        rings: [ring(s.client_ring), ring(s.server_ring)],
    }
}

/// The admin listener's source with the bridge's tables added. It holds the bridge weakly:
/// the running sections own it, and stopping them stops it.
pub struct WithInline {
    pub inner: Arc<dyn StatusSource>,
    pub handle: Weak<InlineHandle>,
    pub config: InlineConfig,
}

impl StatusSource for WithInline {
    fn listeners(&self) -> Vec<ListenerStatus> {
        self.inner.listeners()
    }

    fn inline(&self) -> Option<InlineView> {
        self.handle.upgrade().map(|h| view(&self.config, h.snapshot()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tlsgate_inline::engine::Stats;
    use tlsgate_inline::tables::Report;
    use tlsgate_io::inline::ring::RingStats;

    #[test]
    fn a_snapshot_becomes_the_view_the_pages_render() {
        let c = InlineConfig::from_flags("eth0".into(), "eth1".into(), ReleaseMode::Buffered);
        let snapshot = InlineSnapshot {
            report: Report::default(),
            engine: Stats { flows_created: 2, ..Stats::default() },
            bridge: Default::default(),
            client_ring: RingStats { kernel_drops: 3, tx_messages: 5, ..RingStats::default() },
            server_ring: RingStats { rx_frames: 4, rx_truncated: 6, ..RingStats::default() },
        };
        let v = view(&c, snapshot);
        assert_eq!((v.rings[0].kernel_drops, v.rings[1].rx_frames), (3, 4));
        assert_eq!((v.rings[0].tx_messages, v.rings[1].rx_truncated), (5, 6));
        let json = tlsgate_telemetry::inline::json(&v);
        assert_eq!(json["engine"]["flows_created"], 2);
        assert_eq!(json["rings"][0]["iface"], "eth0");
    }

    #[test]
    fn a_missing_key_is_named_before_any_interface_is_opened() {
        let mut c = InlineConfig::from_flags("eth0".into(), "eth1".into(), ReleaseMode::CutThrough);
        c.service.push(tlsgate_config::InlineService {
            listen: Some("10.0.0.2:443".parse().unwrap()),
            plain_port: Some(80),
            vip: None,
            pool: Vec::new(),
            cert: "/nonexistent/a.pem".into(),
            key: "/nonexistent/a.key".into(),
            mode: None,
        });
        let err = settings(&c, false).unwrap_err();
        assert!(err.contains("inline service 10.0.0.2:443=80") && err.contains("a.pem"), "{err}");
    }
}

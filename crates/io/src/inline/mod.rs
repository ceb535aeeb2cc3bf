//! `tlsgate inline run`: the inline engine between two interfaces. A thin shell: one thread reads
//! frames from both [`ring::PacketRing`]s, hands them to the sans-IO
//! [`tlsgate_inline::bridge::Bridge`] and writes what it returns; the engine's timers bound the
//! wait. The admin side reads snapshots of the tables; a reload swaps certificates.

pub mod ring;

use std::io;
use tlsgate_inline::bridge::BridgeStats;
use tlsgate_inline::engine::{Config, Service, Stats};
use tlsgate_inline::tables::Report;

/// What to bridge.
#[derive(Debug, Clone)]
pub struct InlineSettings {
    pub client_iface: String,
    pub server_iface: String,
    pub engine: Config,
    pub ring: ring::RingConfig,
}

/// The tables and counters at one instant, for /status and /metrics.
#[derive(Debug, Clone, Default)]
pub struct InlineSnapshot {
    pub report: Report,
    pub engine: Stats,
    pub bridge: BridgeStats,
    pub client_ring: ring::RingStats,
    pub server_ring: ring::RingStats,
}

/// The running bridge; dropping it stops the thread.
#[derive(Debug)]
pub struct InlineHandle {}

impl InlineHandle {
    /// Opens both interfaces and starts the thread; returns once both are open. An error names
    /// the interface and, when permission is missing, the capabilities needed (CAP_NET_RAW,
    /// CAP_NET_ADMIN).
    pub fn start(settings: InlineSettings) -> io::Result<InlineHandle> {
        let _ = settings;
        todo!()
    }

    /// New certificates for flows that begin from now on (see `Engine::reload_tls`).
    pub fn reload(&self, services: Vec<Service>) -> Result<(), String> {
        let _ = services;
        todo!()
    }

    /// The current tables and counters.
    pub fn snapshot(&self) -> InlineSnapshot {
        todo!()
    }

    /// Stops the thread and waits for it.
    pub fn stop(self) {}
}

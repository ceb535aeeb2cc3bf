//! The live-connection table: what the status page lists.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// One connection, as the status page shows it. Byte counts move while it runs.
#[derive(Debug)]
pub struct ConnInfo {
    pub listener: String,
    pub client: SocketAddr,
    pub sni: String,
    pub version: String,
    pub suite: String,
    pub identity: String,
    /// Who runs the record layer: `tlsgate`, `kernel` (kernel TLS), or empty (not TLS here).
    pub record_layer: String,
    /// Filled in once a backend is connected (HTTP mode: per request, so left empty).
    pub backend: Mutex<String>,
    /// What the connection is doing, where that changes (a connect tunnel: `outer TLS`,
    /// `downgraded`, `nested`); empty otherwise.
    pub state: Mutex<String>,
    pub started: Instant,
    pub up: AtomicU64,
    pub down: AtomicU64,
}

/// A plain copy for rendering.
#[derive(Debug, Clone)]
pub struct ConnSnapshot {
    pub listener: String,
    pub client: SocketAddr,
    pub sni: String,
    pub version: String,
    pub suite: String,
    pub identity: String,
    pub record_layer: String,
    pub backend: String,
    pub state: String,
    pub age_secs: u64,
    pub up: u64,
    pub down: u64,
}

#[derive(Debug, Default)]
pub struct LiveConns {
    next: AtomicU64,
    table: Mutex<BTreeMap<u64, Arc<ConnInfo>>>,
}

/// Keeps a connection listed until dropped.
#[derive(Debug)]
pub struct Listed {
    id: u64,
    pub info: Arc<ConnInfo>,
}

impl Drop for Listed {
    fn drop(&mut self) {
        live().table.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

/// The process's table.
pub fn live() -> &'static LiveConns {
    static LIVE: OnceLock<LiveConns> = OnceLock::new();
    LIVE.get_or_init(LiveConns::default)
}

impl LiveConns {
    pub fn insert(&self, info: ConnInfo) -> Listed {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let info = Arc::new(info);
        self.table.lock().unwrap_or_else(|e| e.into_inner()).insert(id, info.clone());
        Listed { id, info }
    }

    /// Oldest first.
    pub fn snapshot(&self) -> Vec<ConnSnapshot> {
        let now = Instant::now();
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table
            .values()
            .map(|c| ConnSnapshot {
                listener: c.listener.clone(),
                client: c.client,
                sni: c.sni.clone(),
                version: c.version.clone(),
                suite: c.suite.clone(),
                identity: c.identity.clone(),
                record_layer: c.record_layer.clone(),
                backend: c.backend.lock().map(|b| b.clone()).unwrap_or_default(),
                state: c.state.lock().map(|s| s.clone()).unwrap_or_default(),
                age_secs: now.duration_since(c.started).as_secs(),
                up: c.up.load(Ordering::Relaxed),
                down: c.down.load(Ordering::Relaxed),
            })
            .collect()
    }
}

impl ConnSnapshot {
    /// The row as `/status.json` gives it.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "listener": self.listener,
            "client": self.client.to_string(),
            "sni": self.sni,
            "version": self.version,
            "suite": self.suite,
            "identity": self.identity,
            "record_layer": self.record_layer,
            "backend": self.backend,
            "state": self.state,
            "age_secs": self.age_secs,
            "up": self.up,
            "down": self.down,
        })
    }
}

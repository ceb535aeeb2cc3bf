//! Mutual-TLS connections (terminate's, the connect gate's) by client certificate, so a reload
//! whose CRLs now revoke one closes it instead of letting it run until the client leaves.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tlsgate_tls::revocation::{RevocationKey, Revocations};
use tokio::sync::Notify;

struct Entry {
    listener: String,
    client: SocketAddr,
    key: RevocationKey,
    revoked: Arc<Notify>,
}

#[derive(Default)]
struct Registry {
    next: AtomicU64,
    conns: Mutex<HashMap<u64, Entry>>,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// A connection's place in the registry; leaving it (drop) takes it out.
pub struct Registered(u64);

impl Drop for Registered {
    fn drop(&mut self) {
        registry().conns.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.0);
    }
}

/// Registers a connection whose client presented `key`; `revoked` is notified when a reload
/// finds it revoked.
pub fn register(listener: &str, client: SocketAddr, key: RevocationKey, revoked: Arc<Notify>) -> Registered {
    let r = registry();
    let id = r.next.fetch_add(1, Ordering::Relaxed);
    let entry = Entry { listener: listener.to_string(), client, key, revoked };
    r.conns.lock().unwrap_or_else(|e| e.into_inner()).insert(id, entry);
    Registered(id)
}

/// Closes every connection of `listener` whose certificate `revocations` lists.
pub fn close_revoked(listener: &str, revocations: &Revocations) {
    for e in registry().conns.lock().unwrap_or_else(|e| e.into_inner()).values() {
        if e.listener == listener && revocations.revokes(&e.key) {
            tracing::warn!(
                listener = %e.listener, client = %e.client, side = "client",
                "closing a connection: its client certificate is revoked now"
            );
            e.revoked.notify_one();
        }
    }
}

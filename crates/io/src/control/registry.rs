//! The connections an application may name in a directive, by the two addresses of its own
//! socket: for terminate the backend's accepted socket (its local address, and tlsgate's side of
//! the backend connection as its peer). Terminate and originate share it; an entry lives as long
//! as its connection (its [`Registered`] guard), so the map holds only open connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tlsgate_directive::PeerFacts;

/// The application's view of a connection: (its local address, its peer address).
pub type AppAddrs = (SocketAddr, SocketAddr);

/// What a directive can learn about or do to one connection.
#[derive(Debug)]
pub struct Entry {
    /// The client's TLS session (terminate), for `peer`; a directed connection's changes with
    /// `start_tls` and `stop_tls`.
    facts: Mutex<Option<PeerFacts>>,
    /// A directed connection's task, for `start_tls` and `stop_tls`.
    pub steer: Option<tokio::sync::mpsc::Sender<Steer>>,
}

impl Entry {
    pub fn new(facts: Option<PeerFacts>, steer: Option<tokio::sync::mpsc::Sender<Steer>>) -> Entry {
        Entry { facts: Mutex::new(facts), steer }
    }

    pub fn facts(&self) -> Option<PeerFacts> {
        self.facts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_facts(&self, facts: Option<PeerFacts>) {
        *self.facts.lock().unwrap_or_else(|e| e.into_inner()) = facts;
    }
}

/// `start_tls` or `stop_tls`, handed to a directed connection's task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SteerOp {
    /// `client_cert` names one of the listener's client identities.
    Start {
        after: u64,
        sni: Option<String>,
        alpn: Vec<String>,
        client_cert: Option<String>,
    },
    Stop {
        after: u64,
    },
}

impl SteerOp {
    /// The offset in the application's outgoing stream where it takes effect.
    pub fn after(&self) -> u64 {
        match self {
            SteerOp::Start { after, .. } | SteerOp::Stop { after } => *after,
        }
    }
}

/// A directive for a connection's task, and where its outcome goes once carried out.
#[derive(Debug)]
pub struct Steer {
    pub op: SteerOp,
    pub done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

type Map = HashMap<AppAddrs, Arc<Entry>>;

fn map() -> &'static Mutex<Map> {
    static MAP: OnceLock<Mutex<Map>> = OnceLock::new();
    MAP.get_or_init(Default::default)
}

/// Set once a control socket runs: without one no directive can arrive, so nothing registers.
static ENABLED: AtomicBool = AtomicBool::new(false);

pub(crate) fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Canonical form: an IPv4-mapped IPv6 address as the IPv4 one (what requests are parsed into).
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// Removes its entry when dropped, with the connection.
#[derive(Debug)]
pub struct Registered {
    key: AppAddrs,
    entry: Arc<Entry>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut map = map().lock().unwrap_or_else(|e| e.into_inner());
        // A later connection may reuse the addresses: remove only our own entry.
        if map.get(&self.key).is_some_and(|e| Arc::ptr_eq(e, &self.entry)) {
            map.remove(&self.key);
        }
    }
}

impl Registered {
    pub fn entry(&self) -> &Arc<Entry> {
        &self.entry
    }
}

/// Adds a connection under the application's addresses, until the guard is dropped.
pub fn register(app_local: SocketAddr, app_peer: SocketAddr, entry: Entry) -> Registered {
    let key = (canonical(app_local), canonical(app_peer));
    let entry = Arc::new(entry);
    map().lock().unwrap_or_else(|e| e.into_inner()).insert(key, entry.clone());
    Registered { key, entry }
}

pub fn lookup(app: AppAddrs) -> Option<Arc<Entry>> {
    map().lock().unwrap_or_else(|e| e.into_inner()).get(&(canonical(app.0), canonical(app.1))).cloned()
}

/// Entries held: the open registered connections.
pub fn len() -> usize {
    map().lock().unwrap_or_else(|e| e.into_inner()).len()
}

/// A certificate as PEM (RFC 7468): base64 in lines of 64.
pub fn pem(der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            b64.push(if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i)) as usize & 63] } else { b'=' });
        }
    }
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_as_long_as_their_guard() {
        let (a, b): (SocketAddr, SocketAddr) =
            ("127.0.0.9:1".parse().unwrap(), "127.0.0.9:2".parse().unwrap());
        let guard = register(a, "[::ffff:127.0.0.9]:2".parse().unwrap(), Entry::new(None, None));
        assert!(lookup((a, b)).is_some());
        let newer = register(a, b, Entry::new(None, None));
        drop(guard);
        assert!(lookup((a, b)).is_some(), "the older guard removed the newer entry");
        drop(newer);
        assert!(lookup((a, b)).is_none());
    }

    #[test]
    fn pem_is_base64_in_lines() {
        assert_eq!(pem(b"Man"), "-----BEGIN CERTIFICATE-----\nTWFu\n-----END CERTIFICATE-----\n");
        assert!(pem(b"Ma").contains("\nTWE=\n"));
        assert!(pem(b"M").contains("\nTQ==\n"));
        assert_eq!(pem(&[0u8; 48]).lines().nth(1).unwrap().len(), 64);
    }
}

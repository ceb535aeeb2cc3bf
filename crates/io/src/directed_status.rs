//! A directed connection as `/status` and `/metrics` show it: its row in the live-connection
//! table (state `clear`, `starting`, `tls`, `stopping`; bytes; the peer's identity once known)
//! and the gauge of directed connections by state.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tlsgate_telemetry::conns::{live, ConnInfo, Listed};
use tlsgate_telemetry::metrics::{metrics, DirectedStateLabel};

/// What the status row says about TLS once it is up.
#[derive(Default)]
pub struct Session {
    pub sni: String,
    pub version: String,
    pub suite: String,
    pub identity: String,
}

/// The row and the gauge, kept in step; dropped with the connection.
pub struct Shown {
    listed: Listed,
    state: &'static str,
    /// The application is the client (originate): its bytes go up. Behind terminate they go down.
    app_is_client: bool,
}

impl Shown {
    pub fn new(listener: &str, client: SocketAddr, backend: SocketAddr, app_is_client: bool) -> Shown {
        let listed = live().insert(ConnInfo {
            listener: listener.to_string(),
            client,
            sni: String::new(),
            version: String::new(),
            suite: String::new(),
            identity: String::new(),
            record_layer: String::new(),
            backend: std::sync::Mutex::new(backend.to_string()),
            state: std::sync::Mutex::new("clear".into()),
            started: Instant::now(),
            up: Default::default(),
            down: Default::default(),
        });
        metrics().directed_open.get_or_create(&label("clear")).inc();
        Shown { listed, state: "clear", app_is_client }
    }

    pub fn set_state(&mut self, state: &'static str) {
        let m = &metrics().directed_open;
        m.get_or_create(&label(self.state)).dec();
        m.get_or_create(&label(state)).inc();
        self.state = state;
        *self.listed.info.state.lock().unwrap_or_else(|e| e.into_inner()) = state.into();
    }

    /// TLS is up (with `Some`) or gone again: the row is listed anew with the session's facts,
    /// its age and counts kept.
    pub fn set_session(&mut self, session: Option<Session>) {
        let old = &self.listed.info;
        let s = session.unwrap_or_default();
        let tls = !s.version.is_empty();
        let info = ConnInfo {
            listener: old.listener.clone(),
            client: old.client,
            sni: s.sni,
            version: s.version,
            suite: s.suite,
            identity: s.identity,
            record_layer: if tls { "tlsgate".into() } else { String::new() },
            backend: std::sync::Mutex::new(old.backend.lock().map(|b| b.clone()).unwrap_or_default()),
            state: std::sync::Mutex::new(self.state.into()),
            started: old.started,
            up: old.up.load(Ordering::Relaxed).into(),
            down: old.down.load(Ordering::Relaxed).into(),
        };
        self.listed = live().insert(info);
    }

    /// The counts so far: `from_app` and `to_app` bytes.
    pub fn moved(&self, from_app: u64, to_app: u64) {
        let (up, down) = if self.app_is_client { (from_app, to_app) } else { (to_app, from_app) };
        self.listed.info.up.store(up, Ordering::Relaxed);
        self.listed.info.down.store(down, Ordering::Relaxed);
    }
}

fn label(state: &str) -> DirectedStateLabel {
    DirectedStateLabel { state: state.to_string() }
}

impl Drop for Shown {
    fn drop(&mut self) {
        metrics().directed_open.get_or_create(&label(self.state)).dec();
    }
}

//! All terminate listeners of a process, and what happens to them on reload and shutdown.
//!
//! A reload builds every listener's new state first and applies nothing unless all of it loaded:
//! a broken certificate or config leaves the running one serving. Listeners whose address stays
//! keep their socket (no connection is refused during a reload); new addresses are bound,
//! vanished ones stop accepting. Open connections keep the state they started with.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tlsgate_config::{Config, TerminateConfig};
use tlsgate_telemetry::status::{BackendStatus, ListenerStatus, RouteStatus, StatusSource};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use super::listener::{accept_loop, ListenerState};
use crate::error::listener_label;
use crate::ProxyError;
use tlsgate_tls::revocation::Revocations;

struct Running {
    name: String,
    state: Arc<ArcSwap<ListenerState>>,
    local: SocketAddr,
    accept: JoinHandle<()>,
}

pub struct Server {
    /// The configured address (port 0 allowed) of each, in config order.
    listeners: Vec<(SocketAddr, Running)>,
    tracker: TaskTracker,
    view: Arc<ServerView>,
    /// `terminate.max_connections`, fixed at start.
    global: Option<Arc<Semaphore>>,
    /// `[fleet]`, started once; a reload keeps it (a restart applies a changed `[fleet]`).
    fleet: Option<(tlsgate_config::FleetConfig, Arc<crate::fleet::Fleet>)>,
    /// `[terminate]`'s `control` socket, started once (a restart moves it).
    _control: Option<crate::control::ControlServer>,
    /// One ordering task per `acme` table; a reload keeps the ones whose table stays the same.
    acme: Vec<AcmeRunning>,
    /// One OCSP fetcher per certificate that staples from its responder (and one per `ocsp_file`,
    /// for its metrics); replaced on reload. ACME certificates have theirs in the ACME task.
    ocsp: Vec<crate::ocsp_fetch::Fetcher>,
}

struct AcmeRunning {
    config: tlsgate_config::AcmeConfig,
    shared: Arc<tlsgate_tls::acme::AcmeShared>,
    task: JoinHandle<()>,
}

/// What the admin listener sees of the server: refreshed at every apply.
#[derive(Default)]
struct ServerView {
    listeners: Mutex<Vec<(SocketAddr, Arc<ArcSwap<ListenerState>>)>>,
}

impl StatusSource for ServerView {
    fn listeners(&self) -> Vec<ListenerStatus> {
        let listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        listeners
            .iter()
            .map(|(local, state)| {
                let state = state.load();
                ListenerStatus {
                    name: state.name.clone(),
                    addr: local.to_string(),
                    routes: state
                        .routes
                        .all
                        .iter()
                        .map(|r| RouteStatus {
                            label: r.label.clone(),
                            balance: format!("{:?}", r.pool.policy()),
                            backends: r
                                .pool
                                .members
                                .iter()
                                .map(|m| BackendStatus {
                                    addr: m.addr.to_string(),
                                    up: m.is_healthy(),
                                    active: m.active(),
                                    total: m.total.load(std::sync::atomic::Ordering::Relaxed),
                                })
                                .collect(),
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("listeners", &self.local_addrs()).finish_non_exhaustive()
    }
}

fn section(config: &Config) -> Result<&TerminateConfig, ProxyError> {
    config.terminate.as_ref().ok_or_else(|| ProxyError::config("the config has no [terminate] section"))
}

impl Server {
    /// Loads and binds every listener; fails as a whole.
    pub async fn start(config: &Config) -> Result<Server, ProxyError> {
        let global = section(config)?.max_connections.map(|n| Arc::new(Semaphore::new(n)));
        let fleet = match &config.fleet {
            Some(f) => Some((f.clone(), crate::fleet::Fleet::start(f, &config.security)?)),
            None => None,
        };
        let control = match &section(config)?.control {
            Some(path) => Some(crate::control::ControlServer::start(path)?),
            None => None,
        };
        let mut server = Server {
            _control: control,
            listeners: Vec::new(),
            tracker: TaskTracker::new(),
            view: Arc::new(ServerView::default()),
            global,
            fleet,
            acme: Vec::new(),
            ocsp: Vec::new(),
        };
        server.apply(config).await?;
        Ok(server)
    }

    /// Addresses actually bound (port 0 resolved), in config order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|(_, r)| r.local).collect()
    }

    /// Listeners, routes and backend health, for the admin listener.
    pub fn status_source(&self) -> Arc<dyn StatusSource> {
        self.view.clone()
    }

    /// Applies `config`, or changes nothing and says why.
    pub async fn reload(&mut self, config: &Config) -> Result<(), ProxyError> {
        self.apply(config).await
    }

    async fn apply(&mut self, config: &Config) -> Result<(), ProxyError> {
        let section = section(config)?;
        if config.fleet.as_ref() != self.fleet.as_ref().map(|f| &f.0) {
            tracing::warn!("[fleet] changed: a restart applies that; the running fleet settings stay");
        }
        let fleet = self.fleet.as_ref().map(|f| f.1.as_ref());
        // 1. Load everything; nothing is touched until all of it loaded.
        let mut states = Vec::new();
        let mut revocations = Vec::new();
        let mut acme_new: Vec<(
            tlsgate_config::AcmeConfig,
            Arc<tlsgate_tls::acme::AcmeShared>,
            String,
            IpAddr,
        )> = Vec::new();
        for l in &section.listener {
            let acme = match &l.acme {
                Some(a) => Some(match self.acme.iter().find(|r| &r.config == a) {
                    Some(running) => running.shared.clone(),
                    None if acme_new.iter().any(|(c, _, _, _)| c == a) => {
                        acme_new.iter().find(|(c, _, _, _)| c == a).map(|(_, s, _, _)| s.clone()).unwrap()
                    }
                    None => {
                        let name = l.display_name();
                        let shared = crate::acme::prepare(a, &name).map_err(|e| {
                            ProxyError::config(format!("{}: acme: {e}", listener_label(&name, l.listen)))
                        })?;
                        acme_new.push((a.clone(), shared.clone(), name, l.listen.ip()));
                        shared
                    }
                }),
                None => None,
            };
            let state = ListenerState::build_with(l, &config.security, fleet, acme)?;
            if !l.client_auth.crl.is_empty() {
                let revs = Revocations::load(&l.client_auth.crl).map_err(|e| {
                    ProxyError::config(format!("{}: {e}", listener_label(&state.name, l.listen)))
                })?;
                revocations.push((state.name.clone(), revs));
            }
            states.push((l.listen, state));
        }
        // OCSP fetchers for the new slots, each starting with the staple of the slot it replaces;
        // dropped (stopped) if the reload fails below.
        let mut ocsp = Vec::new();
        for (_, state) in &states {
            for (slot, c) in state.cert_slots() {
                if c.ocsp_file.is_none() {
                    crate::ocsp_fetch::carry_over(&self.ocsp, slot);
                }
                ocsp.extend(crate::ocsp_fetch::start(slot, c, &state.name));
            }
        }
        // A listener keeps its socket when its address stays; with port 0 (the kernel picks),
        // the name must stay too.
        let same = |addr: &SocketAddr, name: &str, (a, r): &(SocketAddr, Running)| {
            a == addr && (addr.port() != 0 || r.name == name)
        };
        // 2. Bind the addresses that are new.
        let mut old: Vec<(SocketAddr, Running)> = std::mem::take(&mut self.listeners);
        let mut sockets = Vec::new();
        for (addr, state) in &states {
            let kept = old.iter().any(|entry| same(addr, &state.name, entry));
            if kept {
                sockets.push(None);
                continue;
            }
            match TcpListener::bind(addr).await {
                Ok(socket) => sockets.push(Some(socket)),
                Err(e) => {
                    self.listeners = old;
                    return Err(ProxyError::bind(&listener_label(&state.name, *addr), &e));
                }
            }
        }
        // 3. Swap states into kept listeners, start new ones, stop vanished ones.
        for ((addr, state), socket) in states.into_iter().zip(sockets) {
            let running = match socket {
                Some(socket) => {
                    let local = socket.local_addr().map_err(|e| ProxyError::internal(e.to_string()))?;
                    let name = state.name.clone();
                    let state = Arc::new(ArcSwap::from_pointee(state));
                    let accept = tokio::spawn(accept_loop(
                        socket,
                        state.clone(),
                        self.global.clone(),
                        self.tracker.clone(),
                    ));
                    Running { name, state, local, accept }
                }
                None => {
                    let i =
                        old.iter().position(|entry| same(&addr, &state.name, entry)).ok_or_else(|| {
                            ProxyError::internal(format!("listener {addr} vanished during reload"))
                        })?;
                    let (_, kept) = old.swap_remove(i);
                    kept.state.store(Arc::new(state));
                    kept
                }
            };
            self.listeners.push((addr, running));
        }
        for (addr, gone) in old {
            tracing::info!(%addr, "listener removed by reload");
            gone.accept.abort();
        }
        self.ocsp = ocsp;
        // ACME tasks: start the new tables' and stop those no listener has any more.
        let wanted: Vec<&tlsgate_config::AcmeConfig> =
            section.listener.iter().filter_map(|l| l.acme.as_ref()).collect();
        self.acme.retain(|r| {
            let keep = wanted.contains(&&r.config);
            if !keep {
                r.task.abort();
            }
            keep
        });
        for (config, shared, listener, ip) in acme_new {
            let task = tokio::spawn(crate::acme::run(config.clone(), shared.clone(), listener, ip));
            self.acme.push(AcmeRunning { config, shared, task });
        }
        *self.view.listeners.lock().unwrap_or_else(|e| e.into_inner()) =
            self.listeners.iter().map(|(_, r)| (r.local, r.state.clone())).collect();
        // The new CRLs hold for connections already open too.
        for (name, revs) in &revocations {
            crate::revoked::close_revoked(name, revs);
        }
        Ok(())
    }

    /// Stops accepting, then lets open connections finish for at most `drain`.
    pub async fn shutdown(mut self, drain: Duration) {
        for a in &self.acme {
            a.task.abort();
        }
        self.ocsp.clear();
        for (_, r) in self.listeners {
            r.accept.abort();
            // Wait for the task to be gone: its socket is closed once this returns.
            let _ = r.accept.await;
        }
        self.tracker.close();
        let open = self.tracker.len();
        tracing::info!(open, ?drain, "draining connections");
        if tokio::time::timeout(drain, self.tracker.wait()).await.is_err() {
            tracing::warn!(left = self.tracker.len(), "drain period over, cutting remaining connections");
        } else {
            tracing::info!("all connections finished");
        }
    }
}

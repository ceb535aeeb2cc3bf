//! The sections of one config running in one process — `[terminate]`, `[originate]`,
//! `[tunnel.gate]`, `[tunnel.portal]`, `[inline]`, whichever are present — with one admin listener, reloaded
//! and stopped together. Single-mode commands run a config holding only their own section.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tlsgate_config::Config;
use tlsgate_core::side::Side;
use tlsgate_io::connect::gate::ConnectGate;
use tlsgate_io::connect::portal::ConnectPortal;
use tlsgate_io::inline::InlineHandle;
use tlsgate_io::originate::Originator;
use tlsgate_io::terminate::watch::FileWatch;
use tlsgate_io::terminate::Server;
use tlsgate_io::tunnel::gate::Gate;
use tlsgate_io::tunnel::portal::Portal;
use tlsgate_io::ProxyError;
use tlsgate_telemetry::status::{ListenerStatus, StatusSource};

pub struct Running {
    terminate: Option<Server>,
    originate: Option<Originator>,
    gate: Option<Gate>,
    portal: Option<Portal>,
    connect_gate: Option<ConnectGate>,
    connect_portal: Option<ConnectPortal>,
    /// The bridge; shared only weakly with the admin listener, so stopping it here stops it.
    inline: Option<Arc<InlineHandle>>,
    _admin: Option<AbortOnDrop>,
    /// `[terminate]`'s certificate, key, CA and CRL files, polled every `watch_interval`.
    pub watch: FileWatch,
    config: Config,
}

impl Running {
    /// Starts every section present in `config`, then the admin listener; fails as a whole.
    pub async fn start(config: Config) -> Result<Running, ProxyError> {
        let insecure = config.security.allow_insecure_key_permissions;
        let terminate = match &config.terminate {
            Some(_) => Some(Server::start(&config).await?),
            None => None,
        };
        let originate = match &config.originate {
            Some(_) => Some(Originator::start(&config).await?),
            None => None,
        };
        let tunnel = config.tunnel.as_ref();
        let gate = match tunnel.and_then(|t| t.gate.as_ref()) {
            Some(g) => Some(Gate::start(g, insecure).await?),
            None => None,
        };
        let portal = match tunnel.and_then(|t| t.portal.as_ref()) {
            Some(p) => Some(Portal::start(p, insecure).await?),
            None => None,
        };
        let connect = config.connect.as_ref();
        let connect_gate = match connect.and_then(|c| c.gate.as_ref()) {
            Some(g) => Some(ConnectGate::start(g, insecure).await?),
            None => None,
        };
        let connect_portal = match connect.and_then(|c| c.portal.as_ref()) {
            Some(p) => Some(ConnectPortal::start(p, insecure).await?),
            None => None,
        };
        let inline = match &config.inline {
            Some(i) => Some(Arc::new(super::inline_run::start(i, insecure)?)),
            None => None,
        };
        let admin = match &config.admin {
            Some(admin) => {
                let socket = tlsgate_telemetry::admin::bind(admin.listen)
                    .await
                    .map_err(|e| ProxyError::bind(&format!("admin listener {}", admin.listen), &e))?;
                // Only terminate has listeners with routes to show; /metrics and the live
                // connections on /status are process-wide and cover every section.
                let mut source: Arc<dyn StatusSource> = match &terminate {
                    Some(server) => server.status_source(),
                    None => Arc::new(NoRoutes),
                };
                if let (Some(handle), Some(c)) = (&inline, &config.inline) {
                    source = Arc::new(super::inline_run::WithInline {
                        inner: source,
                        handle: Arc::downgrade(handle),
                        config: c.clone(),
                    });
                }
                Some(AbortOnDrop(tokio::spawn(tlsgate_telemetry::admin::serve(socket, source))))
            }
            None => None,
        };
        let watch = FileWatch::new(watched(&config));
        Ok(Running {
            terminate,
            originate,
            gate,
            portal,
            connect_gate,
            connect_portal,
            inline,
            _admin: admin,
            watch,
            config,
        })
    }

    /// The configuration as last applied.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// `terminate.watch_interval`; zero (never poll) without `[terminate]`.
    pub fn watch_interval(&self) -> Duration {
        self.config.terminate.as_ref().map_or(Duration::ZERO, |t| t.watch_interval)
    }

    /// Applies `new` section by section: each logs `reloaded` with the files it re-read, or
    /// `reload refused` with the reason, and then keeps serving what it had.
    pub async fn reload(&mut self, new: Config) {
        // Fingerprinted before the sections read the files: a file replaced while (or right
        // after) they read it is then seen as changed and reloaded again, never missed.
        let watch_new = FileWatch::new(watched(&new));
        let insecure = new.security.allow_insecure_key_permissions;
        let mut applied = self.config.clone();
        if let Some(server) = &mut self.terminate {
            let result = match &new.terminate {
                Some(t) => server.reload(&new).await.map(|()| t.watched_files()),
                None => Err(removed("[terminate]")),
            };
            if report("terminate", result) {
                applied.terminate = new.terminate.clone();
            }
        }
        if let Some(originator) = &self.originate {
            let result = match &new.originate {
                Some(o) => originator.reload(&new).map(|()| o.files()),
                None => Err(removed("[originate]")),
            };
            if report("originate", result) {
                applied.originate = new.originate.clone();
            }
        }
        let tunnel = new.tunnel.as_ref();
        if let Some(gate) = &self.gate {
            let result = match tunnel.and_then(|t| t.gate.as_ref()) {
                Some(g) => gate.reload(g, insecure).map(|()| g.files()),
                None => Err(removed("[tunnel.gate]")),
            };
            if report("tunnel.gate", result) {
                applied.tunnel.get_or_insert_default().gate = tunnel.and_then(|t| t.gate.clone());
            }
        }
        if let Some(portal) = &self.portal {
            let result = match tunnel.and_then(|t| t.portal.as_ref()) {
                Some(p) => portal.reload(p, insecure).map(|()| p.files()),
                None => Err(removed("[tunnel.portal]")),
            };
            if report("tunnel.portal", result) {
                applied.tunnel.get_or_insert_default().portal = tunnel.and_then(|t| t.portal.clone());
            }
        }
        let connect = new.connect.as_ref();
        if let Some(gate) = &self.connect_gate {
            let result = match connect.and_then(|c| c.gate.as_ref()) {
                Some(g) => gate.reload(g, insecure).map(|()| g.files()),
                None => Err(removed("[connect.gate]")),
            };
            if report("connect.gate", result) {
                applied.connect.get_or_insert_default().gate = connect.and_then(|c| c.gate.clone());
            }
        }
        if let Some(portal) = &self.connect_portal {
            let result = match connect.and_then(|c| c.portal.as_ref()) {
                Some(p) => portal.reload(p, insecure).map(|()| p.files()),
                None => Err(removed("[connect.portal]")),
            };
            if report("connect.portal", result) {
                applied.connect.get_or_insert_default().portal = connect.and_then(|c| c.portal.clone());
            }
        }
        if let (Some(handle), Some(old)) = (&self.inline, &self.config.inline) {
            let result = match &new.inline {
                Some(i) => super::inline_run::reload(handle, old, i, insecure).map(|()| i.files()),
                None => Err(removed("[inline]")),
            };
            if report("inline", result) {
                applied.inline = new.inline.clone();
            }
        }
        for (section, present, running) in [
            ("[terminate]", new.terminate.is_some(), self.terminate.is_some()),
            ("[originate]", new.originate.is_some(), self.originate.is_some()),
            ("[tunnel.gate]", tunnel.is_some_and(|t| t.gate.is_some()), self.gate.is_some()),
            ("[tunnel.portal]", tunnel.is_some_and(|t| t.portal.is_some()), self.portal.is_some()),
            ("[inline]", new.inline.is_some(), self.inline.is_some()),
            ("[connect.gate]", connect.is_some_and(|c| c.gate.is_some()), self.connect_gate.is_some()),
            ("[connect.portal]", connect.is_some_and(|c| c.portal.is_some()), self.connect_portal.is_some()),
        ] {
            if present && !running {
                tracing::error!(
                    side = %Side::Config, %section,
                    "reload refused for a section added since start; a restart starts it"
                );
            }
        }
        applied.security = new.security.clone();
        self.watch = if applied == new { watch_new } else { FileWatch::new(watched(&applied)) };
        self.config = applied;
    }

    /// Resolves when a section stopped on its own and the process cannot serve it any more, with
    /// why: the inline bridge when an interface it bridges is gone. Never otherwise.
    pub fn failed(&self) -> impl std::future::Future<Output = String> + 'static {
        let inline = self.inline.as_ref().map(|h| h.failed());
        async move {
            match inline {
                Some(failed) => failed.await,
                None => std::future::pending().await,
            }
        }
    }

    /// Stops accepting everywhere, then drains every section at once; the inline bridge has
    /// nothing to drain (the flows are the hosts' own TCP connections) and stops first.
    pub async fn shutdown(self) {
        if let Some(handle) = self.inline {
            // The admin listener holds it weakly; a snapshot in progress drops its copy when
            // done, and dropping the last one stops the bridge too.
            if let Ok(handle) = Arc::try_unwrap(handle) {
                handle.stop();
            }
        }
        if let Some(g) = &self.connect_gate {
            g.shutdown();
        }
        if let Some(p) = &self.connect_portal {
            p.shutdown();
        }
        let drain = self.config.terminate.as_ref().map(|t| t.drain_timeout);
        let terminate = async {
            if let (Some(server), Some(drain)) = (self.terminate, drain) {
                server.shutdown(drain).await;
            }
        };
        let originate = async {
            if let Some(o) = self.originate {
                o.shutdown(Duration::from_secs(30)).await;
            }
        };
        let gate = async {
            if let Some(g) = &self.gate {
                g.shutdown(Duration::from_secs(2)).await;
            }
        };
        let portal = async {
            if let Some(p) = self.portal {
                p.shutdown().await;
            }
        };
        tokio::join!(terminate, originate, gate, portal);
    }
}

fn removed(section: &str) -> ProxyError {
    ProxyError::config(format!("{section} is gone from the config; a restart stops it"))
}

/// Logs one section's reload; true when it was applied.
fn report(section: &str, result: Result<Vec<PathBuf>, ProxyError>) -> bool {
    match result {
        Ok(files) => {
            let files: Vec<_> = files.iter().map(|f| f.display().to_string()).collect();
            tracing::info!(section = %section, files = %files.join(", "), "reloaded");
            true
        }
        Err(e) => {
            tracing::error!(
                side = %Side::Config, section = %section, error = %e.context,
                "reload refused, still serving the previous configuration"
            );
            false
        }
    }
}

fn watched(config: &Config) -> Vec<PathBuf> {
    config.terminate.as_ref().map(|t| t.watched_files()).unwrap_or_default()
}

/// Without `[terminate]` there are no routes or backend pools to show.
struct NoRoutes;

impl StatusSource for NoRoutes {
    fn listeners(&self) -> Vec<ListenerStatus> {
        Vec::new()
    }
}

/// Stops the admin listener with the process's sections.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

//! What every long-running mode does between start and exit, in one place: SIGINT and SIGTERM
//! stop it (and drain), SIGHUP reloads it, and a changed certificate, key, CA or CRL file of
//! `[terminate]` reloads it too. A reload never stops the process: a broken new config is logged
//! and the running one keeps serving. A section that cannot go on (an inline interface removed)
//! stops it with an error.

use std::time::Duration;

use tlsgate_config::Config;
use tlsgate_core::side::Side;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::running::Running;

/// SIGINT, SIGTERM and SIGHUP, caught from the moment this is created: create it before
/// announcing anything, so a signal sent right after the announcement is never the default
/// (fatal) one.
pub struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

pub enum Event {
    Stop,
    Hangup,
}

impl Signals {
    pub fn install() -> Result<Self, String> {
        let handler = |kind: SignalKind, name: &str| signal(kind).map_err(|e| format!("{name} handler: {e}"));
        Ok(Signals {
            int: handler(SignalKind::interrupt(), "SIGINT")?,
            term: handler(SignalKind::terminate(), "SIGTERM")?,
            hup: handler(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    pub async fn next(&mut self) -> Event {
        tokio::select! {
            _ = self.int.recv() => tracing::info!("interrupted, stopping"),
            _ = self.term.recv() => tracing::info!("SIGTERM, stopping"),
            _ = self.hup.recv() => return Event::Hangup,
        }
        crate::notify::stopping();
        Event::Stop
    }

    /// For a mode whose state is all made at start (demo, backend): resolves when asked to
    /// stop; a SIGHUP is acknowledged in the log and changes nothing.
    pub async fn stopped(&mut self, mode: &str) {
        while let Event::Hangup = self.next().await {
            tracing::info!(mode = %mode, "SIGHUP: nothing to reload, still serving");
        }
    }

    /// Serves `running` until asked to stop, re-reading its config with `load` on SIGHUP or
    /// when a watched file changes; then drains it. A section that stopped on its own (an inline
    /// interface gone) drains the others too and is the error returned: the process exits
    /// non-zero, for a supervisor to restart it.
    pub async fn serve(
        mut self,
        mut running: Running,
        load: impl Fn() -> Result<Config, String>,
    ) -> Result<(), String> {
        let mut failure = None;
        let failed = running.failed();
        tokio::pin!(failed);
        loop {
            let reason = tokio::select! {
                event = self.next() => match event {
                    Event::Stop => break,
                    Event::Hangup => "SIGHUP".to_string(),
                },
                reason = &mut failed => {
                    crate::notify::stopping();
                    failure = Some(reason);
                    break;
                }
                changed = changed_files(&mut running) => format!("changed: {changed}"),
            };
            tracing::info!(%reason, "reloading");
            crate::notify::reloading();
            match load() {
                Ok(new) => running.reload(new).await,
                Err(e) => tracing::error!(
                    side = %Side::Config, error = %e,
                    "reload refused, still serving the previous configuration"
                ),
            }
            crate::notify::ready();
        }
        running.shutdown().await;
        failure.map_or(Ok(()), Err)
    }
}

/// Resolves with the files that changed, polled every `watch_interval` (never when it is zero).
async fn changed_files(running: &mut Running) -> String {
    let interval = running.watch_interval();
    if interval.is_zero() {
        std::future::pending::<()>().await;
    }
    loop {
        tokio::time::sleep(interval.max(Duration::from_millis(10))).await;
        let changed = running.watch.changed();
        if !changed.is_empty() {
            let files: Vec<_> = changed.iter().map(|p| p.display().to_string()).collect();
            return files.join(", ");
        }
    }
}

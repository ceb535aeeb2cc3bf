//! One module per subcommand.

mod backend;
mod demo;
mod inline;
mod originate;
mod terminate;
mod tunnel;

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::cli::{Cli, Command};
use crate::failure::Failure;

pub async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Terminate(args) => terminate::run(*args, &cli.log).await,
        Command::Originate(args) => originate::run(*args, &cli.log).await,
        Command::Tunnel(command) => tunnel::run(command, &cli.log).await,
        Command::Inline(command) => inline::run(command),
        Command::Demo(args) => demo::run(args, &cli.log).await,
        Command::Backend(args) => backend::run(args, &cli.log).await,
    }
}

/// SIGINT and SIGTERM, caught from the moment this is created: create it before announcing
/// anything, so a signal sent right after the announcement is never the default (fatal) one.
pub struct StopSignals {
    int: Signal,
    term: Signal,
}

impl StopSignals {
    pub fn install() -> Result<Self, String> {
        let int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
        let term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
        Ok(StopSignals { int, term })
    }

    /// Resolves when the process is asked to stop.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => tracing::info!("interrupted, stopping"),
            _ = self.term.recv() => tracing::info!("SIGTERM, stopping"),
        }
    }
}

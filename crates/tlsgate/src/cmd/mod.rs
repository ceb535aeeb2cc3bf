//! One module per subcommand.

mod backend;
mod demo;
mod terminate;

use crate::cli::{Cli, Command};

pub async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Terminate(args) => terminate::run(args, &cli.log).await,
        Command::Demo(args) => demo::run(args, &cli.log).await,
        Command::Backend(args) => backend::run(args, &cli.log).await,
    }
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted, stopping"),
        _ = term => tracing::info!("SIGTERM, stopping"),
    }
}

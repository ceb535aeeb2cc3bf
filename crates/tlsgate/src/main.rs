//! The `tlsgate` binary: one subcommand per mode, all sharing one config format.

mod cli;
mod cmd;
mod logging;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tlsgate: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Logging may not be set up yet (a config error), so say it on stderr plainly too.
            tracing::error!(error = %e, "tlsgate stopped");
            eprintln!("tlsgate: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

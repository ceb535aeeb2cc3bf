//! One module per subcommand; [`lifecycle`] and [`running`] are what the long-running ones share.

mod backend;
mod check;
mod connect;
mod demo;
mod inline;
mod inline_run;
mod keyd;
mod lifecycle;
mod originate;
mod run;
mod running;
mod terminate;
mod tunnel;

use std::path::Path;

use tlsgate_config::{Config, ConfigError};

use crate::cli::{Cli, Command};
use crate::failure::Failure;
use crate::logging;

pub async fn run(cli: Cli) -> Result<(), Failure> {
    crate::privileges::set_flags(cli.user.clone(), cli.group.clone());
    match cli.command {
        Command::Terminate(args) => terminate::run(*args, &cli.log).await,
        Command::Originate(args) => originate::run(*args, &cli.log).await,
        Command::Tunnel(command) => tunnel::run(command, &cli.log).await,
        Command::Connect(command) => connect::run(command, &cli.log).await,
        Command::Inline(command) => inline::run(command, &cli.log).await,
        Command::Demo(args) => demo::run(args, &cli.log).await,
        Command::Backend(args) => backend::run(args, &cli.log).await,
        Command::Keyd(args) => keyd::run(args, &cli.log).await,
        Command::Run(args) => run::run(args, &cli.log).await,
        Command::Check(args) => check::run(args).map_err(Failure::config),
    }
}

/// Reads a config file; every error names the file.
fn load_file(path: &Path) -> Result<Config, String> {
    Config::load(path).map_err(|e| match e {
        // These name the file themselves.
        ConfigError::Io(..) | ConfigError::Parse(..) => e.to_string(),
        _ => format!("{}: {e}", path.display()),
    })
}

/// Starts what `config` holds and serves it until SIGTERM/SIGINT; SIGHUP re-reads it with
/// `load`. The body of every config-driven subcommand.
async fn serve(
    config: Config,
    log: &crate::cli::LogArgs,
    load: impl Fn() -> Result<Config, String>,
) -> Result<(), Failure> {
    logging::init(&config.log, log);
    crate::limits::raise_nofile();
    crate::limits::warn_insecure_keys(config.security.allow_insecure_key_permissions);
    let signals = lifecycle::Signals::install()?;
    let running = running::Running::start(config).await?;
    let keep = crate::privileges::mode_caps(running.config());
    crate::privileges::drop_after_bind(running.config(), &keep).await?;
    crate::notify::ready();
    signals.serve(running, load).await.map_err(Failure::config)?;
    Ok(())
}

//! `tlsgate run --config FILE`: every mode section of one config in one process, sharing the
//! admin listener, one SIGHUP reloading them all and one SIGTERM draining them all.

use std::path::Path;

use tlsgate_config::Config;

use crate::cli::{LogArgs, RunArgs};
use crate::failure::Failure;

pub async fn run(args: RunArgs, log: &LogArgs) -> Result<(), Failure> {
    super::serve(config_from(&args.config).map_err(Failure::config)?, log, || config_from(&args.config)).await
}

fn config_from(path: &Path) -> Result<Config, String> {
    let config = super::load_file(path)?;
    let tunnel = config.tunnel.as_ref();
    let modes = [
        config.terminate.is_some(),
        config.originate.is_some(),
        tunnel.is_some_and(|t| t.gate.is_some()),
        tunnel.is_some_and(|t| t.portal.is_some()),
        config.inline.is_some(),
        config.connect.is_some(),
    ];
    if !modes.contains(&true) {
        return Err(format!(
            "{}: no [terminate], [originate], [tunnel.gate], [tunnel.portal], [inline] or [connect] section: \
             nothing to run",
            path.display()
        ));
    }
    Ok(config)
}

//! `tlsgate run --config FILE`: every mode section of one config in one process, sharing the
//! admin listener, one SIGHUP reloading them all and one SIGTERM draining them all.

use std::path::Path;

use tlsgate_config::Config;

use crate::cli::{LogArgs, RunArgs};
use crate::failure::Failure;

/// Sections a config may one day hold whose modes have no long-running form yet.
const NOT_RUNNABLE: [(&str, &str); 1] = [("connect", "the connect mode does not exist yet")];

pub async fn run(args: RunArgs, log: &LogArgs) -> Result<(), Failure> {
    super::serve(config_from(&args.config).map_err(Failure::config)?, log, || config_from(&args.config)).await
}

fn config_from(path: &Path) -> Result<Config, String> {
    refuse_unsupported(path)?;
    let config = super::load_file(path)?;
    let tunnel = config.tunnel.as_ref();
    let modes = [
        config.terminate.is_some(),
        config.originate.is_some(),
        tunnel.is_some_and(|t| t.gate.is_some()),
        tunnel.is_some_and(|t| t.portal.is_some()),
        config.inline.is_some(),
    ];
    if !modes.contains(&true) {
        return Err(format!(
            "{}: no [terminate], [originate], [tunnel.gate], [tunnel.portal] or [inline] section: \
             nothing to run",
            path.display()
        ));
    }
    Ok(config)
}

/// A section `tlsgate run` cannot start is refused by name, before the config model would call
/// it an unknown field.
fn refuse_unsupported(path: &Path) -> Result<(), String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(()); // Config::load says why it cannot be read.
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return Ok(()); // Config::load says where the syntax is wrong.
    };
    for (section, why) in NOT_RUNNABLE {
        if table.contains_key(section) {
            return Err(format!(
                "{}: [{section}] is not supported by `tlsgate run` yet: {why}",
                path.display()
            ));
        }
    }
    Ok(())
}

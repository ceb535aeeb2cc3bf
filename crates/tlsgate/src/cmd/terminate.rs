//! `tlsgate terminate`.

use tlsgate_config::{Config, ListenerConfig, TerminateConfig};
use tlsgate_io::terminate;

use crate::cli::{LogArgs, TerminateArgs};
use crate::logging;

pub async fn run(args: TerminateArgs, log: &LogArgs) -> Result<(), String> {
    let config = config_from(args)?;
    logging::init(&config.log, log);
    let listeners = terminate::bind_all(&config)
        .await
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = terminate::serve_all(listeners) => Ok(()),
        _ = super::stop_signal() => Ok(()),
    }
}

/// The config file, or the one listener the flags describe.
fn config_from(args: TerminateArgs) -> Result<Config, String> {
    let mut config = match args.config {
        Some(path) => Config::load(&path).map_err(|e| e.to_string())?,
        None => {
            let (Some(listen), Some(cert), Some(key)) = (args.listen, args.cert, args.key) else {
                return Err("--listen, --cert and --key are required without --config".into());
            };
            let mut listener = ListenerConfig::from_flags(listen, cert, key, args.backend);
            listener.alpn = args.alpn;
            if let Some(t) = args.handshake_timeout {
                listener.handshake_timeout = t;
            }
            let config = Config {
                terminate: Some(TerminateConfig {
                    listener: vec![listener],
                }),
                ..Config::default()
            };
            config.validate().map_err(|e| e.to_string())?;
            config
        }
    };
    if args.allow_insecure_key_permissions {
        config.security.allow_insecure_key_permissions = true;
    }
    Ok(config)
}

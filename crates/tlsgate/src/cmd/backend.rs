//! `tlsgate backend`: the built-in plaintext HTTP server on its own.

use tlsgate_config::LogConfig;
use tlsgate_io::{http_backend, ProxyError};

use crate::cli::{BackendArgs, LogArgs};
use crate::failure::Failure;
use crate::logging;

pub async fn run(args: BackendArgs, log: &LogArgs) -> Result<(), Failure> {
    logging::init(&LogConfig::default(), log);
    let mut signals = super::lifecycle::Signals::install()?;
    let listener = http_backend::bind(args.listen)
        .await
        .map_err(|e| ProxyError::bind(&format!("backend listener {}", args.listen), &e))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, "backend listening");
    tokio::select! {
        _ = http_backend::serve(listener, args.name) => Ok(()),
        _ = signals.stopped("backend") => Ok(()),
    }
}

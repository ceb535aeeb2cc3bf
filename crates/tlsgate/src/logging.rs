//! Log setup: text or JSON lines on stderr, filtered by RUST_LOG, flag or config, in that order.

use tlsgate_config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

use crate::cli::{LogArgs, LogFormatArg};

pub fn init(config: &LogConfig, args: &LogArgs) {
    let level = args.log_level.clone().unwrap_or_else(|| config.level.clone());
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let format = match args.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        None => config.format,
    };
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

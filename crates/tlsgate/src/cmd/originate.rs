//! `tlsgate originate`: serve until SIGTERM/Ctrl-C.

use std::sync::Arc;

use tlsgate_config::{AdminConfig, Config, OriginateConfig, OriginateListener};
use tlsgate_io::originate::Originator;
use tlsgate_io::ProxyError;
use tlsgate_telemetry::status::{ListenerStatus, StatusSource};

use crate::cli::{LogArgs, OriginateArgs};
use crate::failure::Failure;
use crate::logging;

pub async fn run(args: OriginateArgs, log: &LogArgs) -> Result<(), Failure> {
    let config = config_from(&args).map_err(Failure::config)?;
    logging::init(&config.log, log);
    let mut stop = super::StopSignals::install()?;
    let originator = Originator::start(&config).await?;
    let admin = match &config.admin {
        Some(admin) => {
            let socket = tlsgate_telemetry::admin::bind(admin.listen)
                .await
                .map_err(|e| ProxyError::bind(&format!("admin listener {}", admin.listen), &e))?;
            Some(tokio::spawn(tlsgate_telemetry::admin::serve(socket, Arc::new(NoRoutes))))
        }
        None => None,
    };
    stop.recv().await;
    originator.shutdown(std::time::Duration::from_secs(30)).await;
    if let Some(a) = admin {
        a.abort();
    }
    Ok(())
}

/// Originate has no routes or backend pools to show; its metrics are the upstream handshakes.
struct NoRoutes;

impl StatusSource for NoRoutes {
    fn listeners(&self) -> Vec<ListenerStatus> {
        Vec::new()
    }
}

fn config_from(args: &OriginateArgs) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => {
            let Some(listen) = args.listen else {
                return Err("--listen is required without --config".into());
            };
            let mut l = OriginateListener::from_flags(listen, args.connect.clone());
            l.ca = args.ca.clone();
            l.cert = args.cert.clone();
            l.key = args.key.clone();
            l.sni = args.sni.clone();
            l.alpn = args.alpn.clone();
            l.starttls = args.starttls;
            l.starttls_host = args.starttls_host.clone();
            let config = Config {
                originate: Some(OriginateConfig { listener: vec![l], transparent: Vec::new() }),
                ..Config::default()
            };
            config.validate().map_err(|e| e.to_string())?;
            config
        }
    };
    if config.originate.is_none() {
        return Err("the config has no [originate] section".into());
    }
    if let Some(addr) = args.admin {
        config.admin = Some(AdminConfig { listen: addr });
    }
    if args.allow_insecure_key_permissions {
        config.security.allow_insecure_key_permissions = true;
    }
    Ok(config)
}

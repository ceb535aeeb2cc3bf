//! `tlsgate terminate`: serve until SIGTERM/Ctrl-C; reload on SIGHUP and on changed files.

use std::time::Duration;

use tlsgate_config::{
    AdminConfig, ClientAuthConfig, ClientAuthMode, Config, ListenerConfig, TerminateConfig,
};
use tlsgate_io::terminate::watch::FileWatch;
use tlsgate_io::terminate::Server;
use tlsgate_io::ProxyError;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{LogArgs, TerminateArgs};
use crate::failure::Failure;
use crate::logging;

pub async fn run(args: TerminateArgs, log: &LogArgs) -> Result<(), Failure> {
    let mut config = config_from(&args).map_err(Failure::config)?;
    logging::init(&config.log, log);
    let mut stop = super::StopSignals::install()?;
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| format!("SIGHUP handler: {e}"))?;
    let mut server = Server::start(&config).await?;
    let _admin = match &config.admin {
        Some(admin) => {
            let socket = tlsgate_telemetry::admin::bind(admin.listen)
                .await
                .map_err(|e| ProxyError::bind(&format!("admin listener {}", admin.listen), &e))?;
            Some(AbortOnDrop(tokio::spawn(tlsgate_telemetry::admin::serve(socket, server.status_source()))))
        }
        None => None,
    };
    let mut watch = FileWatch::new(section(&config).watched_files());
    loop {
        let interval = section(&config).watch_interval;
        tokio::select! {
            _ = stop.recv() => break,
            _ = hangup.recv() => reload(&args, &mut server, &mut config, &mut watch, "SIGHUP").await,
            _ = tick(interval) => {
                let changed = watch.changed();
                if !changed.is_empty() {
                    let files: Vec<_> = changed.iter().map(|p| p.display().to_string()).collect();
                    let reason = format!("changed: {}", files.join(", "));
                    reload(&args, &mut server, &mut config, &mut watch, &reason).await;
                }
            }
        }
    }
    server.shutdown(section(&config).drain_timeout).await;
    Ok(())
}

/// Re-reads the configuration (the file, or the flags' files) and applies it, or keeps the
/// running one when anything is wrong with the new one.
async fn reload(
    args: &TerminateArgs,
    server: &mut Server,
    config: &mut Config,
    watch: &mut FileWatch,
    reason: &str,
) {
    tracing::info!(%reason, "reloading");
    let result = match config_from(args) {
        Ok(new) => server.reload(&new).await.map(|()| new).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match result {
        Ok(new) => {
            *watch = FileWatch::new(section(&new).watched_files());
            *config = new;
            tracing::info!("reload applied");
        }
        Err(e) => {
            tracing::error!(side = %tlsgate_core::side::Side::Config, error = %e, "reload refused, still serving the previous configuration")
        }
    }
}

/// Stops the admin listener with the command.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn tick(interval: Duration) {
    if interval.is_zero() {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(interval).await;
}

fn section(config: &Config) -> &TerminateConfig {
    config.terminate.as_ref().expect("config_from only returns configs with [terminate]")
}

/// The config file, or the one listener the flags describe.
fn config_from(args: &TerminateArgs) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => {
            let (Some(listen), Some(cert), Some(key)) = (args.listen, args.cert.clone(), args.key.clone())
            else {
                return Err("--listen, --cert and --key are required without --config".into());
            };
            let mut listener = ListenerConfig::from_flags(listen, cert, key, args.backend.clone());
            listener.alpn = args.alpn.clone();
            if let Some(t) = args.handshake_timeout {
                listener.handshake_timeout = t;
            }
            listener.route[0].proxy_protocol = args.proxy_protocol;
            listener.starttls = args.starttls;
            listener.starttls_host = args.starttls_host.clone();
            if let Some(ca) = &args.client_ca {
                listener.client_auth = ClientAuthConfig {
                    mode: ClientAuthMode::Required,
                    ca: Some(ca.clone()),
                    crl: args.crl.clone(),
                    allow_cn: args.allow_cn.clone(),
                    allow_dns: args.allow_dns.clone(),
                    allow_uri: args.allow_uri.clone(),
                    allow_ip: Vec::new(),
                };
            }
            let config =
                Config { terminate: Some(TerminateConfig::new(vec![listener])), ..Config::default() };
            config.validate().map_err(|e| e.to_string())?;
            config
        }
    };
    if config.terminate.is_none() {
        return Err("the config has no [terminate] section".into());
    }
    if let Some(addr) = args.admin {
        config.admin = Some(AdminConfig { listen: addr });
    }
    if args.allow_insecure_key_permissions {
        config.security.allow_insecure_key_permissions = true;
    }
    Ok(config)
}

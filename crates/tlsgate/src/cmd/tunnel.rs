//! `tlsgate tunnel gate|portal`: serve until SIGTERM/Ctrl-C; the gate re-reads its TLS material
//! and CRLs on SIGHUP.

use std::sync::Arc;

use tlsgate_config::{AdminConfig, Config, GateConfig, PortalConfig, TunnelConfig};
use tlsgate_io::tunnel::gate::Gate;
use tlsgate_io::tunnel::portal::Portal;
use tlsgate_io::ProxyError;
use tlsgate_telemetry::status::{ListenerStatus, StatusSource};
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{GateArgs, LogArgs, PortalArgs, TunnelCommand};
use crate::failure::Failure;
use crate::logging;

pub async fn run(command: TunnelCommand, log: &LogArgs) -> Result<(), Failure> {
    match command {
        TunnelCommand::Gate(args) => gate(*args, log).await,
        TunnelCommand::Portal(args) => portal(*args, log).await,
    }
}

async fn gate(args: GateArgs, log: &LogArgs) -> Result<(), Failure> {
    let config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| Failure::config(e.to_string()))?,
        None => {
            let (Some(listen), Some(cert), Some(key), Some(ca)) =
                (args.listen, args.cert.clone(), args.key.clone(), args.client_ca.clone())
            else {
                return Err(Failure::config(
                    "--listen, --cert, --key and --client-ca are required without --config",
                ));
            };
            let mut g = GateConfig::from_flags(listen, cert, key, ca);
            g.crl = args.crl.clone();
            g.resolver = args.resolver;
            if !args.rules.is_empty() {
                g.default_policy = Some(args.rules.clone());
            }
            with_tunnel(TunnelConfig { gate: Some(g), portal: None })?
        }
    };
    let mut config = common(config, args.admin, args.allow_insecure_key_permissions);
    let gate_config = config
        .tunnel
        .as_mut()
        .and_then(|t| t.gate.take())
        .ok_or_else(|| Failure::config("the config has no [tunnel.gate] section"))?;
    logging::init(&config.log, log);
    let insecure = config.security.allow_insecure_key_permissions;
    let mut stop = super::StopSignals::install()?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| format!("SIGHUP handler: {e}"))?;
    let gate = Gate::start(&gate_config, insecure).await?;
    let admin = admin(&config).await?;
    loop {
        tokio::select! {
            _ = stop.recv() => break,
            _ = hup.recv() => match gate.reload(insecure) {
                Ok(()) => tracing::info!("tunnel gate: TLS material and CRLs reloaded"),
                Err(e) => tracing::error!(side = %e.side, error = %e.context, "tunnel gate: reload refused; the old material stays"),
            },
        }
    }
    gate.shutdown(std::time::Duration::from_secs(2)).await;
    if let Some(a) = admin {
        a.abort();
    }
    Ok(())
}

async fn portal(args: PortalArgs, log: &LogArgs) -> Result<(), Failure> {
    let config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| Failure::config(e.to_string()))?,
        None => {
            let (Some(gate), Some(ca), Some(cert), Some(key)) =
                (args.gate.clone(), args.ca.clone(), args.cert.clone(), args.key.clone())
            else {
                return Err(Failure::config("--gate, --ca, --cert and --key are required without --config"));
            };
            let mut p = PortalConfig::from_flags(gate, ca, cert, key);
            p.server_name = args.server_name.clone();
            p.socks = args.socks;
            p.forward = args.forward.clone();
            p.dns = args.dns;
            p.proxy = args.proxy.clone();
            with_tunnel(TunnelConfig { gate: None, portal: Some(p) })?
        }
    };
    let mut config = common(config, args.admin, args.allow_insecure_key_permissions);
    let portal_config = config
        .tunnel
        .as_mut()
        .and_then(|t| t.portal.take())
        .ok_or_else(|| Failure::config("the config has no [tunnel.portal] section"))?;
    logging::init(&config.log, log);
    let mut stop = super::StopSignals::install()?;
    let portal = Portal::start(&portal_config, config.security.allow_insecure_key_permissions).await?;
    let admin = admin(&config).await?;
    stop.recv().await;
    portal.shutdown().await;
    if let Some(a) = admin {
        a.abort();
    }
    Ok(())
}

fn with_tunnel(tunnel: TunnelConfig) -> Result<Config, Failure> {
    let config = Config { tunnel: Some(tunnel), ..Config::default() };
    config.validate().map_err(|e| Failure::config(e.to_string()))?;
    Ok(config)
}

fn common(mut config: Config, admin: Option<std::net::SocketAddr>, insecure: bool) -> Config {
    if let Some(addr) = admin {
        config.admin = Some(AdminConfig { listen: addr });
    }
    if insecure {
        config.security.allow_insecure_key_permissions = true;
    }
    config
}

async fn admin(config: &Config) -> Result<Option<tokio::task::JoinHandle<()>>, Failure> {
    let Some(admin) = &config.admin else { return Ok(None) };
    let socket = tlsgate_telemetry::admin::bind(admin.listen)
        .await
        .map_err(|e| ProxyError::bind(&format!("admin listener {}", admin.listen), &e))?;
    Ok(Some(tokio::spawn(tlsgate_telemetry::admin::serve(socket, Arc::new(Sessions)))))
}

/// The tunnel lists its connections and sessions in the live table; it has no routes.
struct Sessions;

impl StatusSource for Sessions {
    fn listeners(&self) -> Vec<ListenerStatus> {
        Vec::new()
    }
}

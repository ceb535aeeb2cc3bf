//! `tlsgate tunnel gate|portal`: the `[tunnel.gate]` or `[tunnel.portal]` section, from the
//! config file or from flags.

use std::net::SocketAddr;

use tlsgate_config::{AdminConfig, Config, GateConfig, PortalConfig, TunnelConfig};

use crate::cli::{GateArgs, LogArgs, PortalArgs, TunnelCommand};
use crate::failure::Failure;

pub async fn run(command: TunnelCommand, log: &LogArgs) -> Result<(), Failure> {
    match command {
        TunnelCommand::Gate(args) => {
            super::serve(gate_config(&args).map_err(Failure::config)?, log, || gate_config(&args)).await
        }
        TunnelCommand::Portal(args) => {
            super::serve(portal_config(&args).map_err(Failure::config)?, log, || portal_config(&args)).await
        }
    }
}

fn gate_config(args: &GateArgs) -> Result<Config, String> {
    let config = match &args.config {
        Some(path) => super::load_file(path)?,
        None => {
            let (Some(listen), Some(cert), Some(key), Some(ca)) =
                (args.listen, args.cert.clone(), args.key.clone(), args.client_ca.clone())
            else {
                return Err("--listen, --cert, --key and --client-ca are required without --config".into());
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
    let gate = config.tunnel.as_ref().and_then(|t| t.gate.clone());
    let mut gate = gate.ok_or("the config has no [tunnel.gate] section")?;
    if let Some(mode) = args.ktls {
        gate.ktls = mode;
    }
    let tunnel = TunnelConfig { gate: Some(gate), portal: None };
    Ok(only(config, tunnel, args.admin, args.allow_insecure_key_permissions))
}

fn portal_config(args: &PortalArgs) -> Result<Config, String> {
    let config = match &args.config {
        Some(path) => super::load_file(path)?,
        None => {
            let (false, Some(ca), Some(cert), Some(key)) =
                (args.gate.is_empty(), args.ca.clone(), args.cert.clone(), args.key.clone())
            else {
                return Err("--gate, --ca, --cert and --key are required without --config".into());
            };
            let mut p = PortalConfig::from_flags(args.gate.clone(), ca, cert, key);
            p.server_name = args.server_name.clone();
            p.socks = args.socks;
            p.forward = args.forward.clone();
            p.dns = args.dns;
            p.proxy = args.proxy.clone();
            with_tunnel(TunnelConfig { gate: None, portal: Some(p) })?
        }
    };
    let portal = config.tunnel.as_ref().and_then(|t| t.portal.clone());
    let mut portal = portal.ok_or("the config has no [tunnel.portal] section")?;
    if let Some(mode) = args.ktls {
        portal.ktls = mode;
    }
    if let Some(wait) = args.session_wait {
        portal.session_wait = wait;
    }
    let tunnel = TunnelConfig { gate: None, portal: Some(portal) };
    Ok(only(config, tunnel, args.admin, args.allow_insecure_key_permissions))
}

fn with_tunnel(tunnel: TunnelConfig) -> Result<Config, String> {
    let config = Config { tunnel: Some(tunnel), ..Config::default() };
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// The config with `tunnel` as its only mode section (`tlsgate run` runs them all), and the flags
/// shared by both ends applied.
fn only(config: Config, tunnel: TunnelConfig, admin: Option<SocketAddr>, insecure: bool) -> Config {
    let mut config = Config {
        terminate: None,
        originate: None,
        tunnel: Some(tunnel),
        inline: None,
        connect: None,
        ..config
    };
    if let Some(addr) = admin {
        config.admin = Some(AdminConfig { listen: addr });
    }
    if insecure {
        config.security.allow_insecure_key_permissions = true;
    }
    config
}

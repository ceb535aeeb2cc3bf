//! `tlsgate connect gate|portal`: the `[connect.gate]` or `[connect.portal]` section, from the
//! config file or from flags.

use tlsgate_config::{
    AdminConfig, Config, ConnectConfig, ConnectGateConfig, ConnectGrant, ConnectPortalConfig,
};

use crate::cli::{ConnectCommand, ConnectGateArgs, ConnectPortalArgs, LogArgs};
use crate::failure::Failure;

pub async fn run(command: ConnectCommand, log: &LogArgs) -> Result<(), Failure> {
    match command {
        ConnectCommand::Gate(args) => {
            super::serve(gate_config(&args).map_err(Failure::config)?, log, || gate_config(&args)).await
        }
        ConnectCommand::Portal(args) => {
            super::serve(portal_config(&args).map_err(Failure::config)?, log, || portal_config(&args)).await
        }
    }
}

fn gate_config(args: &ConnectGateArgs) -> Result<Config, String> {
    let config = match &args.config {
        Some(path) => super::load_file(path)?,
        None => {
            let (Some(listen), Some(cert), Some(key), Some(ca)) =
                (args.listen, args.cert.clone(), args.key.clone(), args.client_ca.clone())
            else {
                return Err("--listen, --cert, --key and --client-ca are required without --config".into());
            };
            let mut g = ConnectGateConfig::from_flags(listen, cert, key, ca);
            g.crl = args.crl.clone();
            g.resolver = args.resolver;
            g.kernel_splice = args.kernel_splice.clone();
            if let Some(t) = args.head_timeout {
                g.head_timeout = t;
            }
            for a in &args.allow {
                let (identity, rule) = a
                    .split_once('=')
                    .ok_or_else(|| format!("--allow {a:?}: expected IDENTITY=DESTINATION"))?;
                g.allow.push(ConnectGrant { identity: identity.into(), rules: vec![rule.into()] });
            }
            for h in &args.hosts {
                let (name, ip) =
                    h.split_once('=').ok_or_else(|| format!("--host {h:?}: expected NAME=IP"))?;
                let ip = ip.parse().map_err(|_| format!("--host {h:?}: {ip:?} is not an IP address"))?;
                g.hosts.insert(name.to_ascii_lowercase(), ip);
            }
            with_connect(ConnectConfig { gate: Some(g), portal: None })?
        }
    };
    let gate = config.connect.as_ref().and_then(|c| c.gate.clone());
    let gate = gate.ok_or("the config has no [connect.gate] section")?;
    Ok(only(
        config,
        ConnectConfig { gate: Some(gate), portal: None },
        args.admin,
        args.allow_insecure_key_permissions,
    ))
}

fn portal_config(args: &ConnectPortalArgs) -> Result<Config, String> {
    let config = match &args.config {
        Some(path) => super::load_file(path)?,
        None => {
            let (Some(gate), Some(ca), Some(cert), Some(key)) =
                (args.gate.clone(), args.ca.clone(), args.cert.clone(), args.key.clone())
            else {
                return Err("--gate, --ca, --cert and --key are required without --config".into());
            };
            let p = ConnectPortalConfig {
                listen: args.listen,
                gate,
                server_name: args.server_name.clone(),
                ca,
                cert,
                key,
                route: args.route.clone(),
                direct: args.direct,
                head_timeout: std::time::Duration::from_secs(10),
                connect_timeout: std::time::Duration::from_secs(10),
            };
            with_connect(ConnectConfig { gate: None, portal: Some(p) })?
        }
    };
    let portal = config.connect.as_ref().and_then(|c| c.portal.clone());
    let portal = portal.ok_or("the config has no [connect.portal] section")?;
    Ok(only(
        config,
        ConnectConfig { gate: None, portal: Some(portal) },
        args.admin,
        args.allow_insecure_key_permissions,
    ))
}

fn with_connect(connect: ConnectConfig) -> Result<Config, String> {
    let config = Config { connect: Some(connect), ..Config::default() };
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// The config with `connect` as its only mode section, and the shared flags applied.
fn only(
    config: Config,
    connect: ConnectConfig,
    admin: Option<std::net::SocketAddr>,
    insecure: bool,
) -> Config {
    let mut config = Config {
        terminate: None,
        originate: None,
        tunnel: None,
        inline: None,
        connect: Some(connect),
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

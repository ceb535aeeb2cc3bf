//! `tlsgate terminate`: the `[terminate]` section, from the config file or from flags.

use std::path::PathBuf;

use tlsgate_config::{
    AcmeConfig, AdminConfig, ClientAuthConfig, ClientAuthMode, Config, FleetConfig, ListenerConfig,
    TerminateConfig,
};

use crate::cli::{LogArgs, TerminateArgs};
use crate::failure::Failure;

pub async fn run(args: TerminateArgs, log: &LogArgs) -> Result<(), Failure> {
    super::serve(config_from(&args).map_err(Failure::config)?, log, || config_from(&args)).await
}

/// The config file's `[terminate]` section, or the one listener the flags describe.
fn config_from(args: &TerminateArgs) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => {
            let config = super::load_file(path)?;
            // Only this mode's section runs; `tlsgate run` runs them all.
            Config { originate: None, tunnel: None, inline: None, connect: None, ..config }
        }
        None => {
            let Some(listen) = args.listen else {
                return Err("--listen is required without --config".into());
            };
            let mut listener = match (&args.acme_directory, args.cert.clone(), args.key.clone()) {
                (Some(directory), _, _) => {
                    let state = args.acme_state.clone().ok_or("--acme-directory needs --acme-state")?;
                    let mut l = ListenerConfig::from_flags(
                        listen,
                        PathBuf::new(),
                        PathBuf::new(),
                        args.backend.clone(),
                    );
                    l.certificate.clear();
                    let mut acme = AcmeConfig::new(directory.clone(), args.acme_name.clone(), state);
                    acme.directory_ca = args.acme_directory_ca.clone();
                    acme.contact = args.acme_contact.clone();
                    acme.http_port = args.acme_http_port;
                    l.acme = Some(acme);
                    l
                }
                (None, Some(cert), Some(key)) => {
                    ListenerConfig::from_flags(listen, cert, key, args.backend.clone())
                }
                _ => {
                    return Err("--cert and --key (or --acme-directory) are required without --config".into())
                }
            };
            listener.alpn = args.alpn.clone();
            if let Some(t) = args.handshake_timeout {
                listener.handshake_timeout = t;
            }
            listener.route[0].proxy_protocol = args.proxy_protocol;
            listener.starttls = args.starttls;
            listener.starttls_host = args.starttls_host.clone();
            listener.directed = args.directed;
            if let Some(ca) = &args.client_ca {
                listener.client_auth = ClientAuthConfig {
                    mode: ClientAuthMode::Required,
                    ca: Some(ca.clone()),
                    crl: args.crl.clone(),
                    crl_strict: false,
                    allow_cn: args.allow_cn.clone(),
                    allow_dns: args.allow_dns.clone(),
                    allow_uri: args.allow_uri.clone(),
                    allow_ip: Vec::new(),
                };
            }
            let mut terminate = TerminateConfig::new(vec![listener]);
            terminate.control = args.control.clone();
            let config = Config { terminate: Some(terminate), ..Config::default() };
            config.validate().map_err(|e| e.to_string())?;
            config
        }
    };
    if config.terminate.is_none() {
        return Err("the config has no [terminate] section".into());
    }
    if let (Some(path), Some(t)) = (&args.control, config.terminate.as_mut()) {
        t.control = Some(path.clone());
    }
    if let (Some(mode), Some(t)) = (args.ktls, config.terminate.as_mut()) {
        for l in &mut t.listener {
            l.ktls = mode;
        }
    }
    if let (Some(redis), Some(key)) = (&args.fleet_redis, &args.fleet_key) {
        let mut f = FleetConfig::new(redis.clone(), key.clone(), args.ticket_rotation);
        f.redis_ca = args.fleet_redis_ca.clone();
        config.fleet = Some(f);
    } else if let (Some(r), Some(f)) = (args.ticket_rotation, config.fleet.as_mut()) {
        f.ticket_rotation = r;
    }
    if let Some(f) = &config.fleet {
        f.validate().map_err(|e| e.to_string())?;
    }
    if let Some(addr) = args.admin {
        config.admin = Some(AdminConfig { listen: addr });
    }
    if args.allow_insecure_key_permissions {
        config.security.allow_insecure_key_permissions = true;
    }
    Ok(config)
}

//! `tlsgate originate`: the `[originate]` section, from the config file or from flags.

use tlsgate_config::{AdminConfig, Config, OriginateConfig, OriginateListener};

use crate::cli::{LogArgs, OriginateArgs};
use crate::failure::Failure;

pub async fn run(args: OriginateArgs, log: &LogArgs) -> Result<(), Failure> {
    super::serve(config_from(&args).map_err(Failure::config)?, log, || config_from(&args)).await
}

fn config_from(args: &OriginateArgs) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => {
            let config = super::load_file(path)?;
            // Only this mode's section runs; `tlsgate run` runs them all.
            Config { terminate: None, tunnel: None, inline: None, connect: None, ..config }
        }
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
            l.directed = args.directed;
            l.client_identities = args.client_identity.iter().cloned().collect();
            let config = Config {
                originate: Some(OriginateConfig {
                    listener: vec![l],
                    transparent: Vec::new(),
                    control: args.control.clone(),
                }),
                ..Config::default()
            };
            config.validate().map_err(|e| e.to_string())?;
            config
        }
    };
    if config.originate.is_none() {
        return Err("the config has no [originate] section".into());
    }
    if let (Some(path), Some(o)) = (&args.control, config.originate.as_mut()) {
        o.control = Some(path.clone());
    }
    if let (Some(mode), Some(o)) = (args.ktls, config.originate.as_mut()) {
        for l in &mut o.listener {
            l.ktls = mode;
        }
    }
    if let Some(addr) = args.admin {
        config.admin = Some(AdminConfig { listen: addr });
    }
    if args.allow_insecure_key_permissions {
        config.security.allow_insecure_key_permissions = true;
    }
    Ok(config)
}

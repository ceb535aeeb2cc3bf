//! `tlsgate inline run`: the `[inline]` section between two interfaces, from the config file or
//! from flags (`inline_run` builds the engine's settings); `tlsgate inline simulate`: flows
//! through the engine in its deterministic simulator (`tlsgate_inline::sim`): smoltcp client
//! and server, a rustls client, impaired links.

use std::sync::Arc;

use std::time::Duration;
use tlsgate_config::{AdminConfig, Config, InlineConfig, InlineService};

use tlsgate_inline::sim::{self, SimConfig};
use tlsgate_inline::tables::Release;

use crate::cli::{InlineCommand, InlineRunArgs, LogArgs, SimMode, SimulateArgs};
use crate::failure::Failure;

pub async fn run(command: InlineCommand, log: &LogArgs) -> Result<(), Failure> {
    match command {
        InlineCommand::Run(args) => {
            super::serve(config_from(&args).map_err(Failure::config)?, log, || config_from(&args)).await
        }
        InlineCommand::Simulate(args) => simulate(&args),
    }
}

/// The config file's `[inline]` section, or the one the flags describe.
fn config_from(args: &InlineRunArgs) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => {
            let config = super::load_file(path)?;
            // Only this mode's section runs; `tlsgate run` runs them all.
            Config { terminate: None, originate: None, tunnel: None, connect: None, ..config }
        }
        None => {
            let (Some(client), Some(server), Some(cert), Some(key)) =
                (args.client_iface.clone(), args.server_iface.clone(), args.cert.clone(), args.key.clone())
            else {
                return Err(
                    "--client-iface, --server-iface, --cert and --key are required without --config".into()
                );
            };
            let mut inline = InlineConfig::from_flags(client, server, args.mode.unwrap_or_default());
            let service = |listen, plain_port, vip, pool| InlineService {
                listen,
                plain_port,
                vip,
                pool,
                cert: cert.clone(),
                key: key.clone(),
                mode: None,
            };
            for s in &args.service {
                inline.service.push(service(Some(s.listen), s.plain_port, None, Vec::new()));
            }
            if let Some(vip) = args.vip {
                inline.service.push(service(None, None, Some(vip), args.pool.clone()));
            }
            let l = &mut inline.limits;
            l.max_flows = args.max_flows.unwrap_or(l.max_flows);
            l.window_floor = args.window_floor.unwrap_or(l.window_floor);
            l.full_proxy_max_flows = args.full_proxy_max_flows.unwrap_or(l.full_proxy_max_flows);
            l.flow_window = args.flow_window.unwrap_or(l.flow_window);
            let config = Config { inline: Some(inline), ..Config::default() };
            config.validate().map_err(|e| e.to_string())?;
            config
        }
    };
    if config.inline.is_none() {
        return Err("the config has no [inline] section".into());
    }
    if let Some(addr) = args.admin {
        config.admin = Some(AdminConfig { listen: addr });
    }
    if args.allow_insecure_key_permissions {
        config.security.allow_insecure_key_permissions = true;
    }
    Ok(config)
}

fn simulate(args: &SimulateArgs) -> Result<(), Failure> {
    for (name, p) in [("loss", args.loss), ("reorder", args.reorder), ("duplicate", args.duplicate)] {
        if !(0.0..=1.0).contains(&p) {
            return Err(Failure::config(format!("--{name} must be a probability between 0 and 1")));
        }
    }
    let (client, mut server) = tlsgate_tls::pki::throwaway_pair("localhost").map_err(|e| e.to_string())?;
    // The engine takes the keys over from rustls after the handshake.
    server.enable_secret_extraction = true;
    let config = SimConfig {
        flows: args.flows,
        seed: args.seed,
        loss: args.loss,
        reorder: args.reorder,
        duplicate: args.duplicate,
        bytes: args.bytes,
        release: match args.mode {
            SimMode::Buffered => Release::Buffered,
            SimMode::CutThrough => Release::CutThrough,
        },
        balanced: args.balanced,
        client_rx_buffer: args.client_window,
        key_update_at: args.key_update_at,
        server_write: args.server_write,
        reset_at: None,
        time_limit: Duration::from_secs(600),
        plain: false,
        client_sack: true,
        ..SimConfig::default()
    };
    let server = Arc::new(server);
    let mut summary = sim::run(&config, server.clone(), client.clone());
    // The same flows with a plain forwarder in the engine's place: the baseline.
    let plain = sim::run(&SimConfig { plain: true, ..config }, server, client);
    summary.goodput_vs_plain = Some(summary.goodput() / plain.goodput().max(1e-9));
    println!("{summary}");
    for line in &summary.stalled {
        println!("{line}");
    }
    for v in summary.violations.iter().take(5) {
        eprintln!("violation: {v}");
    }
    if summary.ok() {
        Ok(())
    } else {
        Err(Failure::from(format!(
            "{} violation(s), {} of {} flows completed",
            summary.violations.len(),
            summary.completed,
            summary.flows
        )))
    }
}

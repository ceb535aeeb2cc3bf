//! `tlsgate inline simulate`: flows through the inline engine in its deterministic simulator
//! (`tlsgate_inline::sim`): smoltcp client and server, a rustls client, impaired links.

use std::sync::Arc;
use std::time::Duration;

use tlsgate_inline::sim::{self, SimConfig};
use tlsgate_inline::tables::Release;

use crate::cli::{InlineCommand, SimMode, SimulateArgs};
use crate::failure::Failure;

pub fn run(command: InlineCommand) -> Result<(), Failure> {
    match command {
        InlineCommand::Simulate(args) => simulate(&args),
    }
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

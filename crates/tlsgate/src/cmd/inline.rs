//! `tlsgate inline simulate`: flows through the deterministic simulated network (crates/simnet).

use std::sync::Arc;

use tlsgate_simnet::{simulate, Impairments, PassThrough, SimConfig, SimPki};

use crate::cli::{InlineCommand, SimMode, SimulateArgs};

pub fn run(command: InlineCommand) -> Result<(), String> {
    match command {
        InlineCommand::Simulate(args) => simulate_cmd(&args),
    }
}

fn simulate_cmd(args: &SimulateArgs) -> Result<(), String> {
    for (name, p) in [("loss", args.loss), ("reorder", args.reorder), ("duplicate", args.duplicate)] {
        if !(0.0..=1.0).contains(&p) {
            return Err(format!("--{name} must be a probability between 0 and 1"));
        }
    }
    let pki = SimPki::new();
    let config = SimConfig {
        flows: args.flows,
        bytes: args.bytes,
        seed: args.seed,
        impairments: Impairments {
            loss: args.loss,
            reorder: args.reorder,
            duplicate: args.duplicate,
            ..Impairments::default()
        },
        ..SimConfig::default()
    };
    let client = pki.default_client();
    let report = match args.mode {
        SimMode::Passthrough => simulate(&config, &mut PassThrough, client, Some(Arc::new(pki.server()))),
    };
    println!("mode={:?} seed={} {report}", args.mode, args.seed);
    if report.ok() {
        Ok(())
    } else {
        Err("violations found".into())
    }
}

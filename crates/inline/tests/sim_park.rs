//! Parking under impairment: with a short `Limits::park_after` flows are parked in the pauses
//! of an impaired transfer (between a loss and its repair, while a window is shut) and woken by
//! whatever comes next — a retransmission, a duplicate, a reordered segment, the engine's own
//! timer. Every byte must still arrive both ways.

mod common;

use common::*;
use std::time::Duration;
use tlsgate_inline::sim::SimConfig;
use tlsgate_inline::tables::Release;

#[test]
fn flows_parked_between_bursts_of_an_impaired_transfer_deliver_everything() {
    let suites = all_suites();
    for park in [1u64, 30] {
        for seed in 1..=4u64 {
            for release in [Release::Buffered, Release::CutThrough] {
                let cfg = SimConfig {
                    seed,
                    flows: 4,
                    bytes: 60_000,
                    release,
                    park_after: Some(Duration::from_millis(park)),
                    ..SIM_MIX
                };
                let s = run(suites[seed as usize % suites.len()], &cfg);
                eprintln!("park={park} seed={seed} {release:?} parked={} {s}", s.parked);
                assert!(s.parked > 0, "flows were parked: {s}");
            }
        }
    }
}

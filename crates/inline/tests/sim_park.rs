//! Parking under impairment: with a short `Limits::park_after` flows are parked in the pauses
//! of an impaired transfer (between a loss and its repair, while a window is shut) and woken by
//! whatever comes next — a retransmission, a duplicate, a reordered segment, the engine's own
//! timer. Every byte must still arrive both ways, and the run must be the one without parking:
//! the same records and retransmissions (parking drops only what the next packet rebuilds).

mod common;

use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tlsgate_inline::sim::SimConfig;
use tlsgate_inline::tables::Release;

/// Times the engine made a parked flow's state in the allocator's scope for it.
static SCOPED: AtomicUsize = AtomicUsize::new(0);

/// A scope that only counts: the engine's side of `tlsgate_inline::parked_memory` (the
/// binary's serves the allocations from a heap of their own).
fn counting_scope(f: &mut dyn FnMut()) {
    SCOPED.fetch_add(1, Ordering::Relaxed);
    f();
}

#[test]
fn flows_parked_between_bursts_of_an_impaired_transfer_run_as_without_parking() {
    tlsgate_inline::parked_memory::install(counting_scope);
    let suites = all_suites();
    for seed in 1..=4u64 {
        for release in [Release::Buffered, Release::CutThrough] {
            let suite = suites[seed as usize % suites.len()];
            let cfg = SimConfig { seed, flows: 4, bytes: 60_000, release, park_after: None, ..SIM_MIX };
            let unparked = run(suite, &cfg);
            assert_eq!(unparked.parked, 0);
            for park in [1u64, 30] {
                let s = run(suite, &SimConfig { park_after: Some(Duration::from_millis(park)), ..cfg });
                assert!(s.parked > 0, "flows were parked: {s}");
                assert!(s.compacted > 0, "parked flows were compacted: {s}");
                let scoped = SCOPED.swap(0, Ordering::Relaxed) as u64;
                assert!(scoped >= s.compacted, "each compaction in the scope: {scoped} for {s}");
                let same = |s: &tlsgate_inline::sim::Summary| {
                    (s.records_up, s.records_down, s.retransmissions, s.sim_time)
                };
                assert_eq!(same(&s), same(&unparked), "seed {seed} {release:?} parked after {park} ms: {s}");
            }
        }
    }
}

//! The deterministic simulation in cut-through release (`tests/sim.rs` runs buffered): every
//! suite, many seeds and impairment mixes, a key update mid-stream, a client window smaller than
//! a record. Each run checks byte-exact delivery both ways, that no byte is ever resent
//! differently, and the per-flow state bound.

mod common;

use common::*;
use tlsgate_inline::sim::SimConfig;
use tlsgate_inline::tables::Release;

const MIX: SimConfig = SimConfig { release: Release::CutThrough, ..SIM_MIX };

#[test]
fn clean_link_every_suite() {
    for (i, suite) in all_suites().into_iter().enumerate() {
        let cfg =
            SimConfig { seed: i as u64 + 1, loss: 0.0, reorder: 0.0, duplicate: 0.0, bytes: 200_000, ..MIX };
        let s = run(suite, &cfg);
        assert_eq!((s.bytes_up, s.bytes_down), (200_000, 200_000));
        assert_eq!(s.retransmissions, 0, "nothing lost, nothing resent: {s}");
        // Records span several segments: most plaintext left before its record's tag.
        assert!(s.before_tag > s.bytes_up / 2, "cut-through: {s}");
    }
}

#[test]
fn each_impairment_alone() {
    for (loss, reorder, duplicate) in [(0.03, 0.0, 0.0), (0.0, 0.05, 0.0), (0.0, 0.0, 0.02)] {
        for seed in 1..=4u64 {
            run(
                TLS13[seed as usize % 3],
                &SimConfig { seed, loss, reorder, duplicate, bytes: 60_000, ..MIX },
            );
        }
    }
}

#[test]
fn impaired_links_many_seeds_every_suite() {
    // SIM_SEEDS=1000 for a longer search; 20 by default keeps the suite quick.
    let seeds: u64 = std::env::var("SIM_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let suites = all_suites();
    let mut retransmissions = 0;
    for seed in 1..=seeds {
        let s = run(suites[seed as usize % suites.len()], &SimConfig { seed, ..MIX });
        assert!(s.before_tag > 0, "{s}");
        retransmissions += s.retransmissions;
    }
    assert!(retransmissions > 0, "the impairment was felt");
}

#[test]
fn many_flows_at_once() {
    let s = run(TLS12[0], &SimConfig { flows: 40, seed: 7, bytes: 20_000, ..MIX });
    assert_eq!(s.completed, 40);
    assert_eq!(s.bytes_up, 40 * 20_000);
}

#[test]
fn client_key_update_mid_stream_under_impairment() {
    for seed in 1..=9u64 {
        let cfg = SimConfig { seed, bytes: 80_000, key_update_at: Some(40_000), ..MIX };
        run(TLS13[seed as usize % 3], &cfg);
    }
}

#[test]
fn heavy_impairment_larger_transfers() {
    let suites = all_suites();
    for seed in 1..=5u64 {
        let cfg = SimConfig { seed, loss: 0.08, reorder: 0.15, duplicate: 0.05, bytes: 300_000, ..MIX };
        run(suites[seed as usize % suites.len()], &cfg);
    }
}

#[test]
fn client_window_smaller_than_a_record() {
    for seed in 1..=4u64 {
        let (loss, reorder, duplicate) = if seed % 2 == 0 { (0.03, 0.05, 0.01) } else { (0.0, 0.0, 0.0) };
        let cfg = SimConfig { seed, loss, reorder, duplicate, bytes: 30_000, client_rx_buffer: 1000, ..MIX };
        run(all_suites()[seed as usize % 5], &cfg);
    }
}

#[test]
fn balanced_mode_under_impairment() {
    for seed in 1..=4u64 {
        run(all_suites()[seed as usize % 5], &SimConfig { seed, balanced: true, ..MIX });
    }
}

/// The server retransmitting with other boundaries than the first time (the echo server writes
/// small pieces, smoltcp re-cuts its retransmissions; see tests/sim.rs) while the client's
/// records are released before their tags: the two directions' hazards at once.
#[test]
fn server_retransmissions_with_other_boundaries() {
    let seeds: u64 = std::env::var("SIM_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let suites = all_suites();
    let mut recut = 0;
    for seed in 1..=seeds {
        let server_write = Some(if seed % 2 == 0 { 300 } else { 1000 });
        let cfg = SimConfig { seed, bytes: 60_000, server_write, ..MIX };
        let s = run(suites[seed as usize % suites.len()], &cfg);
        assert_eq!((s.nonce_reuses, s.bytes_up, s.bytes_down), (0, 60_000, 60_000));
        recut += s.server_retransmissions.recut;
    }
    assert!(recut > 0, "no retransmission was cut differently");
}

/// A connection reset in the middle of a record, on a clean and on an impaired link, every
/// suite: every second client sends half of a record and resets. The simulator checks that the
/// server got the whole records' plaintext and never all of the half one, saw the reset, and that the engine forgot
/// the flow; the other flows complete.
#[test]
fn reset_in_the_middle_of_a_record() {
    for (i, suite) in all_suites().into_iter().enumerate() {
        for (loss, reorder, duplicate) in [(0.0, 0.0, 0.0), (0.03, 0.05, 0.01)] {
            let seed = i as u64 + 1;
            let cfg = SimConfig { flows: 4, seed, loss, reorder, duplicate, reset_at: Some(30_000), ..MIX };
            let s = run(suite, &cfg);
            assert_eq!((s.resets, s.completed), (2, 2), "{s}");
        }
    }
}

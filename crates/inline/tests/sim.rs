//! The deterministic simulation (`tlsgate_inline::sim`) across suites, seeds and impairment
//! mixes: every run must deliver every byte both ways, never resend a byte differently, and keep
//! each flow's state within its bound.

mod common;

use common::*;
use std::time::Duration;
use tlsgate_inline::sim::{RecutCounts, SimConfig};

const MIX: SimConfig = SIM_MIX;

#[test]
fn clean_link_every_suite() {
    for (i, suite) in all_suites().into_iter().enumerate() {
        let cfg =
            SimConfig { seed: i as u64 + 1, loss: 0.0, reorder: 0.0, duplicate: 0.0, bytes: 200_000, ..MIX };
        let s = run(suite, &cfg);
        assert_eq!((s.bytes_up, s.bytes_down), (200_000, 200_000));
        assert_eq!(s.retransmissions, 0, "nothing lost, nothing resent: {s}");
        assert_eq!(s.before_tag, 0, "buffered: nothing before its tag: {s}");
        assert!(s.records_up >= 50 && s.records_down >= 140, "{s}");
    }
}

#[test]
fn each_impairment_alone() {
    for (loss, reorder, duplicate) in [(0.03, 0.0, 0.0), (0.0, 0.05, 0.0), (0.0, 0.0, 0.02)] {
        for seed in 1..=4u64 {
            run(TLS13[0], &SimConfig { seed, loss, reorder, duplicate, bytes: 60_000, ..MIX });
        }
    }
}

#[test]
fn impaired_links_many_seeds() {
    // SIM_SEEDS=1000 for a longer search; 20 by default keeps the suite quick.
    let seeds: u64 = std::env::var("SIM_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let suites = all_suites();
    let (mut retransmissions, mut server) = (0, RecutCounts::default());
    for seed in 1..=seeds {
        let s = run(suites[seed as usize % suites.len()], &SimConfig { seed, ..MIX });
        retransmissions += s.retransmissions;
        server += s.server_retransmissions;
    }
    assert!(retransmissions > 0, "the impairment was felt");
    // Even the plain echo server's retransmissions are sometimes cut differently: smoltcp
    // resends from the oldest unacknowledged byte, which a partial ACK puts mid-segment.
    assert!(server.recut > 0, "{server:?}");
}

#[test]
fn many_flows_at_once() {
    let s = run(TLS13[1], &SimConfig { flows: 40, seed: 7, bytes: 20_000, ..MIX });
    assert_eq!(s.completed, 40);
    assert_eq!(s.bytes_down, 40 * 20_000);
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
    for seed in 1..=4u64 {
        let cfg = SimConfig { seed, loss: 0.08, reorder: 0.15, duplicate: 0.05, bytes: 300_000, ..MIX };
        run(TLS13[seed as usize % 3], &cfg);
    }
}

#[test]
fn balanced_mode_under_impairment() {
    let suites = all_suites();
    for seed in 1..=6u64 {
        run(suites[seed as usize % suites.len()], &SimConfig { seed, balanced: true, ..MIX });
    }
}

#[test]
fn client_window_smaller_than_a_record() {
    // 1000 bytes of receive buffer: a full server segment sealed (1431 + overhead) never fits,
    // so the engine cuts records to the window and holds the rest.
    for seed in 1..=4u64 {
        let (loss, reorder, duplicate) = if seed % 2 == 0 { (0.03, 0.05, 0.01) } else { (0.0, 0.0, 0.0) };
        let cfg = SimConfig { seed, loss, reorder, duplicate, bytes: 30_000, client_rx_buffer: 1000, ..MIX };
        run(TLS13[seed as usize % 3], &cfg);
    }
}

/// The README's example run (`--flows 200 --seed 7 --loss 0.03 --reorder 0.05 --duplicate 0.01
/// --bytes 1048576`): minutes in a debug build, so run on demand:
/// `cargo test -p tlsgate-inline --test sim example_run -- --ignored --nocapture`.
#[test]
#[ignore = "long: 200 flows of 1 MiB"]
fn example_run() {
    let cfg = SimConfig { flows: 200, seed: 7, bytes: 1 << 20, time_limit: Duration::from_secs(600), ..MIX };
    let s = run(TLS13[0], &cfg);
    eprintln!("{s}");
}

/// The nonce-reuse hazard in full: the server retransmitting with other boundaries than the
/// first time. The echo server writes small seeded pieces (`server_write`), so its first
/// transmissions are small; smoltcp resends from the oldest unacknowledged byte with the MSS of
/// the moment, merging them, and splitting them where an ACK or the MSS falls inside one.
/// Counted at the server's egress; every run also checks that each byte a client was sent at a
/// sequence number equals the first one sent there, and byte-exact delivery both ways.
#[test]
fn server_retransmissions_with_other_boundaries() {
    let seeds: u64 = std::env::var("SIM_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let suites = all_suites();
    // Duplication alone makes no server retransmission (no loss, no reordering): it is
    // exercised in the mixes.
    for (loss, reorder, duplicate) in
        [(0.03, 0.0, 0.0), (0.0, 0.05, 0.0), (0.03, 0.05, 0.01), (0.08, 0.15, 0.05)]
    {
        let mut n = RecutCounts::default();
        for seed in 1..=seeds {
            let server_write = Some(if seed % 2 == 0 { 300 } else { 1000 });
            let cfg = SimConfig { seed, loss, reorder, duplicate, bytes: 60_000, server_write, ..MIX };
            let s = run(suites[seed as usize % suites.len()], &cfg);
            assert_eq!((s.nonce_reuses, s.bytes_down), (0, 60_000));
            n += s.server_retransmissions;
        }
        if std::env::var("SIM_PRINT").is_ok() {
            eprintln!("loss={loss} reorder={reorder} duplicate={duplicate}: {n:?}");
        }
        assert!(n.merged > 0 && n.split > 0, "loss={loss} reorder={reorder} duplicate={duplicate}: {n:?}");
        assert!(n.recut * 2 > n.retransmissions, "most are cut differently: {n:?}");
    }
}

/// A connection reset in the middle of a record, on a clean and on an impaired link, every
/// suite: every second client sends half of a record and resets. The simulator checks that the
/// server got the whole records' plaintext and never a byte of the half one, saw the reset, and that the engine forgot
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

/// A bulk upload over a lossy link, with and without SACK between the client and the engine,
/// as Linux's RTT estimator would see it (`sim::rtt`). Client segments the engine holds beyond
/// a gap are acknowledged only once the gap is repaired and the server's ACKs reach them record
/// by record: without SACK, samples as long as the repair, and an RTO that grows past the next
/// one (on real stacks it reached 98 s and uploads stalled). With SACK those segments are
/// reported once the engine's ACK covers the bytes before the gap (`Upstream::sack_blocks`)
/// and give no such sample. And the engine's ACK reaches those bytes as soon as the server has
/// their plaintext, a record in progress included (`Upstream::client_ack`), so the gap's repair
/// starts there, with or without SACK. (The smoltcp clients resend by their own rules, not by
/// SACK: what SACK spares a Linux client, undone recoveries and timeouts, shows on real stacks,
/// `crates/tlsgate/benches/inline_impaired.rs`.)
#[test]
fn a_bulk_upload_over_loss_keeps_the_clients_rto_down() {
    // Single runs vary both ways (a packet more or less moves every later draw of the link), so
    // the claim is over seeds: the total of the largest RTOs stays low with SACK and without.
    // Over 1 to 72 the totals read 96 s with SACK and 90 s without, the largest RTO 4.2 s either
    // way (over 73 to 144: 85 s and 87 s, 2.2 s and 2.1 s). With an ACK one byte short of a
    // record in progress and SACK blocks ahead of the ACK (both directions) they read 126 s and
    // 172 s, 4.8 s and 5.7 s (118 s and 170 s, 3.2 s and 10.8 s).
    let mut sum = [Duration::ZERO; 2];
    for seed in 1..=72 {
        let cfg = SimConfig { seed, loss: 0.03, reorder: 0.0, duplicate: 0.0, bytes: 1 << 20, ..MIX };
        let without = SimConfig { client_sack: false, ..cfg };
        for (i, s) in [run(TLS13[0], &cfg), run(TLS13[0], &without)].iter().enumerate() {
            sum[i] += s.client_rto_max;
        }
    }
    let limit = Duration::from_secs(110);
    assert!(sum[0] < limit && sum[1] < limit, "RTOs add up to {:?} with SACK, {:?} without", sum[0], sum[1]);
}

/// The download side of the same: a bulk transfer over a lossy link with and without SACK
/// between the engine and the server, as Linux's RTT estimator would see the server's side
/// (`sim::rtt`). The engine seals server bytes in order only, so segments beyond a gap wait in
/// its hold queue until the gap is repaired and their records reach the client; without SACK
/// the server learns of them only from the client's ACKs of those records, long after it sent
/// them: samples as long as the repair, and a timeout that grows with every one. On Linux
/// servers this showed as downloads in timeout recovery stopping until nginx's send timeout
/// (a repair one segment per round trip without SACK, each timeout longer than the last). With
/// SACK the held segments are reported once the ACK to the server covers the bytes before the
/// gap (`Downstream::sack_blocks`) and give no such sample. (The smoltcp server resends by its
/// own rules, not by SACK; the figure is the estimator's.)
#[test]
fn a_bulk_download_over_loss_keeps_the_servers_rto_down_with_sack() {
    // Over seeds, as above: the totals of the largest RTOs. Over 1 to 48 they read 20 s with
    // SACK against 54 without (the largest single RTO 1.2 s against 3.3); with SACK blocks only
    // once the ACK covers every byte taken in order (both directions; every draw moved), 23 s
    // against 53 (1.4 s against 2.9). The largest alone is one seed's draw: over 49 to 96 it
    // read 2.9 s against 2.8, the totals 26 s against 56.
    let mut sum = [Duration::ZERO; 2];
    for seed in 1..=48 {
        let cfg = SimConfig { seed, loss: 0.03, reorder: 0.0, duplicate: 0.0, bytes: 1 << 20, ..MIX };
        let without = SimConfig { server_sack: false, ..cfg };
        for (i, s) in [run(TLS13[0], &cfg), run(TLS13[0], &without)].iter().enumerate() {
            sum[i] += s.server_rto_max;
        }
    }
    assert!(sum[0] * 2 < sum[1], "RTOs add up to {:?} with SACK, {:?} without", sum[0], sum[1]);
}

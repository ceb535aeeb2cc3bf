//! The full-proxy fallback in the deterministic simulator: smoltcp clients with rustls on one
//! side, the plaintext echo server on the other, the engine between. Flows the end-to-end path
//! is not for (a client window below the floor, a full flow table) are switched at their SYN,
//! terminated on both sides inside the engine, and must still deliver every byte both ways.

mod common;

use common::*;
use tlsgate_inline::sim::SimConfig;

/// A 300-byte client window, below the default floor: every flow goes to the full proxy, every
/// suite, on a clean link and under loss, reordering and duplication.
#[test]
fn a_tiny_client_window_goes_full_proxy_and_completes() {
    for (i, suite) in all_suites().into_iter().enumerate() {
        let impaired = i % 2 == 1;
        let cfg = SimConfig {
            flows: 2,
            seed: i as u64 + 1,
            loss: if impaired { 0.03 } else { 0.0 },
            reorder: if impaired { 0.05 } else { 0.0 },
            duplicate: if impaired { 0.01 } else { 0.0 },
            bytes: 40_000,
            client_rx_buffer: 300,
            ..SIM_MIX
        };
        let s = run(suite, &cfg);
        assert_eq!((s.completed, s.full_proxy), (2, 2), "{suite:?}: {s}");
        assert_eq!(s.bytes_down, 80_000, "{s}");
    }
}

/// A flow table with no room for end-to-end flows: the flows go to the full proxy instead.
#[test]
fn a_full_flow_table_sends_new_flows_to_the_full_proxy() {
    let cfg = SimConfig { flows: 4, seed: 3, bytes: 60_000, max_flows: 0, ..SIM_MIX };
    let s = run(TLS13[0], &cfg);
    assert_eq!((s.completed, s.full_proxy), (4, 4), "{s}");
}

/// A window at the floor stays end to end.
#[test]
fn a_window_above_the_floor_stays_end_to_end() {
    let cfg = SimConfig { flows: 2, seed: 5, bytes: 20_000, client_rx_buffer: 1000, ..SIM_MIX };
    let s = run(TLS13[1], &cfg);
    assert_eq!((s.completed, s.full_proxy), (2, 0), "{s}");
    assert!(s.records_up > 0, "the engine carried the records: {s}");
}

/// Balanced mode: the proxy answers as the virtual address and connects to the member chosen
/// for the client, under impairment.
#[test]
fn balanced_mode_through_the_full_proxy() {
    for seed in 1..=3u64 {
        let cfg =
            SimConfig { seed, flows: 2, bytes: 30_000, balanced: true, client_rx_buffer: 300, ..SIM_MIX };
        let s = run(TLS13[seed as usize % 3], &cfg);
        assert_eq!((s.completed, s.full_proxy), (2, 2), "{s}");
    }
}

/// Windows that shrink below the floor after the SYN (which offered a large one): each flow is
/// taken over at its ClientHello, the server's connection reset and opened again by the proxy,
/// the client's adopted mid-stream with its sequence numbers translated, and every byte still
/// arrives both ways, every suite, clean and impaired.
#[test]
fn a_window_shrunk_by_the_client_hello_switches_there_and_completes() {
    for (i, suite) in all_suites().into_iter().enumerate() {
        let impaired = i % 2 == 1;
        let cfg = SimConfig {
            flows: 2,
            seed: i as u64 + 11,
            loss: if impaired { 0.03 } else { 0.0 },
            reorder: if impaired { 0.05 } else { 0.0 },
            duplicate: if impaired { 0.01 } else { 0.0 },
            bytes: 30_000,
            client_window_after_syn: Some(400),
            ..SIM_MIX
        };
        let s = run(suite, &cfg);
        assert_eq!((s.completed, s.full_proxy), (2, 2), "{suite:?}: {s}");
        assert_eq!(s.bytes_down, 60_000, "{s}");
        assert!(s.violations.is_empty(), "{s}");
    }
}

//! Client receive windows smaller than a record on lossy links. Server data then waits in the
//! engine for the client's window, and a lost window update must be repaired by window probes
//! (RFC 9293 section 3.8.6.1): the simulated hosts probe a zero window as Linux does, and the
//! engine passes probes on to the other side (and probes the client when the server resends
//! data held for the window), so the answer carries the current window to both ends.

mod common;

use common::*;
use tlsgate_inline::sim::SimConfig;
use tlsgate_inline::tables::Release;

/// A 600-byte window with 2% loss: flows stalled for good once a window update was lost
/// (the server, told the window was zero, never probed; the engine forgot the flow after its
/// idle timeout while both ends stayed established).
#[test]
fn a_lost_window_update_does_not_stall_the_flow() {
    for release in [Release::Buffered, Release::CutThrough] {
        let cfg = SimConfig {
            flows: 3,
            seed: 7,
            loss: 0.02,
            reorder: 0.0,
            duplicate: 0.0,
            bytes: 150_000,
            release,
            client_rx_buffer: 600,
            ..SIM_MIX
        };
        let s = run(TLS13[0], &cfg);
        assert_eq!(s.completed, 3, "{s}");
    }
}

/// Small windows under loss, reordering and duplication, both release modes, a few seeds,
/// with the echo server writing small pieces too.
#[test]
fn small_windows_with_loss_both_modes() {
    let suites = all_suites();
    for release in [Release::Buffered, Release::CutThrough] {
        for seed in 1..=3u64 {
            let window = if seed % 2 == 0 { 600 } else { 1000 };
            let server_write = (seed == 3).then_some(300);
            let cfg = SimConfig {
                flows: 4,
                seed,
                loss: 0.05,
                reorder: 0.05,
                duplicate: 0.05,
                bytes: 40_000,
                release,
                client_rx_buffer: window,
                server_write,
                ..SIM_MIX
            };
            let s = run(suites[seed as usize % suites.len()], &cfg);
            assert_eq!((s.completed, s.nonce_reuses), (4, 0), "{s}");
        }
    }
}

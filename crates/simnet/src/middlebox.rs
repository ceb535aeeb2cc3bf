//! The slot between the hosts where the inline engine goes.

use std::time::Duration;

/// Which host a packet came from, or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// Anything that takes IP packets with the time and returns the packets to emit.
pub trait Middlebox {
    /// A packet arrived from `from`; returns packets to send, each toward a side.
    fn packet(&mut self, now: Duration, from: Side, packet: Vec<u8>) -> Vec<(Side, Vec<u8>)>;
    /// When `timeout` next has work (retransmissions of its own bytes, say).
    fn poll_timeout(&self) -> Option<Duration>;
    fn timeout(&mut self, now: Duration) -> Vec<(Side, Vec<u8>)>;
    /// Bytes of state it holds per flow at its peak, for the report.
    fn peak_state_bytes_per_flow(&self) -> usize {
        0
    }
}

/// Forwards every packet unchanged: the harness's self-test, with TLS end to end.
#[derive(Debug, Default)]
pub struct PassThrough;

impl Middlebox for PassThrough {
    fn packet(&mut self, _now: Duration, from: Side, packet: Vec<u8>) -> Vec<(Side, Vec<u8>)> {
        let to = match from {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        };
        vec![(to, packet)]
    }

    fn poll_timeout(&self) -> Option<Duration> {
        None
    }

    fn timeout(&mut self, _now: Duration) -> Vec<(Side, Vec<u8>)> {
        Vec::new()
    }
}

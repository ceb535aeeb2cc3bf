//! One flow's state in the engine's flow table.
//!
//! So far a flow records what the TCP setup established (initial sequence numbers, the backend,
//! timestamps, counters); the handshake, the record layer, the sequence-pair tables and the hold
//! queues attach here as the data path is built (docs/inline-engine.md).

use crate::engine::Limits;
use crate::seq::Seq;
use crate::tables::{Counters, FlowState};
use crate::tls_flow::{TlsFlow, FAILED_LINGER};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug)]
pub struct Flow {
    /// Index of the service in the engine's configuration.
    pub service: usize,
    /// Where the server really is (the service address with the port rewritten, or a member).
    pub backend: SocketAddr,
    pub state: FlowState,
    pub client_isn: Seq,
    pub server_isn: Option<Seq>,
    /// The client's MSS as it asked, and as the server was told.
    pub mss: Option<(u16, u16)>,
    pub created: Duration,
    pub last_activity: Duration,
    /// Payload bytes seen from the client and from the server: the counters of a flow without
    /// a TLS data path (before the SYN-ACK, or passed through), which has its own.
    pub client_bytes: u64,
    pub server_bytes: u64,
    /// The window-scale shifts the client's SYN and the server's SYN-ACK offered.
    pub client_wscale: Option<u8>,
    pub server_wscale: Option<u8>,
    /// The client's SYN offered SACK (the option goes on to the server, and into the SYN-ACK
    /// toward the client whatever the server answered).
    pub client_sack: bool,
    /// The TLS data path, from the server's SYN-ACK on.
    pub tls: Option<TlsFlow>,
    /// The earliest instant this flow has in the engine's timer heap (`crate::timers`).
    pub timer: Option<Duration>,
}

impl Flow {
    /// When the flow expires if nothing more arrives: half-open flows go sooner, so a SYN flood
    /// frees its entries quickly, and closing ones too.
    pub fn deadline(&self, l: &Limits) -> Duration {
        match self.state {
            FlowState::SynSent => self.last_activity + l.syn_timeout,
            FlowState::Closing => self.last_activity + l.closing_timeout,
            // Its own timer resets the client at the linger's end: never expired before it.
            FlowState::Reset => self.last_activity + l.idle_timeout.max(2 * FAILED_LINGER),
            _ => self.last_activity + l.idle_timeout,
        }
    }

    /// Counters for the connection table: (client → server, server → client).
    pub fn counters(&self) -> (Counters, Counters) {
        match &self.tls {
            Some(t) => t.counters(),
            None => (
                Counters { outer_bytes: self.client_bytes, ..Counters::default() },
                Counters { inner_bytes: self.server_bytes, ..Counters::default() },
            ),
        }
    }

    /// The engine's own retransmission timer, when armed.
    pub fn rto(&self) -> Option<Duration> {
        self.tls.as_ref().and_then(|t| t.deadline())
    }

    /// Bytes of state this flow holds, for the bound and the report.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Flow>() + self.tls.as_ref().map_or(0, |t| t.state_bytes())
    }
}

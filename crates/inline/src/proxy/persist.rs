//! The persist timer smoltcp lacks (RFC 9293 section 3.8.6.1), for one side of a full-proxy
//! flow: while the stack has bytes queued for a peer that advertised a zero window, a probe goes
//! to the peer after 200 ms, then at doubling intervals up to 12.8 s. The probe is a segment
//! without data one below the peer's acknowledgement (as Linux sends it): not acceptable to the
//! peer, which answers with an ACK carrying its current window. Without it a lost window update
//! left the stack waiting for good and the peer (with nothing to send) too, until the idle
//! timeout; the full proxy serves exactly the clients with the smallest windows.

use crate::packet::{Build, Control, Segment};
use crate::seq::Seq;
use std::net::SocketAddr;
use std::time::Duration;

const FIRST: Duration = Duration::from_millis(200);
const MAX_BACKOFF: u32 = 6;

#[derive(Clone, Copy, Debug, Default)]
pub struct Persist {
    /// The peer's latest acknowledgement and window field (in the stack's terms).
    peer: Option<(Seq, u16)>,
    /// The stack's latest segment to the peer: its addresses, acknowledgement and window.
    stack: Option<(SocketAddr, SocketAddr, Option<Seq>, u16)>,
    deadline: Option<Duration>,
    backoff: u32,
}

impl Persist {
    /// A segment from the peer toward the stack.
    pub fn peer_sent(&mut self, seg: &Segment) {
        if let (Some(ack), false) = (seg.ack, seg.rst) {
            self.peer = Some((ack, seg.window));
        }
    }

    /// A segment from the stack toward the peer.
    pub fn stack_sent(&mut self, seg: &Segment) {
        if !seg.rst {
            self.stack = Some((seg.src, seg.dst, seg.ack, seg.window));
        }
    }

    /// After each run: `queued` when the stack has bytes waiting for the peer.
    pub fn update(&mut self, now: Duration, queued: bool) {
        let closed = self.peer.is_some_and(|(_, w)| w == 0);
        if queued && closed && self.stack.is_some() {
            self.deadline.get_or_insert(now + FIRST * (1 << self.backoff));
        } else {
            self.deadline = None;
            self.backoff = 0;
        }
    }

    /// The probe when its time has come (the next one is then armed, later).
    pub fn fire(&mut self, now: Duration) -> Option<Vec<u8>> {
        let deadline = self.deadline?;
        let ((ack, _), (src, dst, stack_ack, window)) = (self.peer?, self.stack?);
        if now < deadline {
            return None;
        }
        self.backoff = (self.backoff + 1).min(MAX_BACKOFF);
        self.deadline = Some(now + FIRST * (1 << self.backoff));
        Build { src, dst, seq: ack - 1, ack: stack_ack, control: Control::None, window, payload: &[] }.emit()
    }

    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }
}

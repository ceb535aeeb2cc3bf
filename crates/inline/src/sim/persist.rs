//! Zero-window probing for the simulated hosts, as Linux does it.
//!
//! smoltcp has no persist timer: a sender told the window is zero waits for a window update,
//! and when that update is lost on the link it waits forever (a retransmission timeout with a
//! zero window sends nothing either). RFC 9293 section 3.8.6.1 requires the sender to probe a
//! zero window; Linux sends, after a retransmission timeout and then with a doubling interval,
//! a segment without data at SND.UNA - 1, which the receiver answers with an ACK carrying its
//! current window. This module watches each host's packets and sends those probes on its behalf.

use crate::packet::{self, Build, Control};
use crate::seq::Seq;
use std::collections::HashMap;
use std::net::SocketAddr;

/// The first probe after this much silence (Linux's minimum RTO), then doubling.
const FIRST_US: u64 = 200_000;
/// Linux caps the probe interval at 120 s; 12.8 s keeps long simulations moving.
const MAX_BACKOFF: u32 = 6;

/// One connection as its host sees it.
#[derive(Default)]
struct Conn {
    /// The peer's latest ACK and raw window, as received.
    snd_una: Option<Seq>,
    peer_window: u16,
    /// The host's latest ACK and raw window, as sent.
    rcv_ack: Option<Seq>,
    window: u16,
    /// When the host last sent anything, or the last probe went.
    quiet_since: u64,
    backoff: u32,
}

/// Per host: its connections by (local, remote).
#[derive(Default)]
pub struct Persist {
    conns: HashMap<(SocketAddr, SocketAddr), Conn>,
    pub probes: u64,
}

impl Persist {
    /// A packet the host sent.
    pub fn sent(&mut self, now: u64, p: &[u8]) {
        let Some(seg) = packet::parse(p) else { return };
        let c = self.conns.entry((seg.src, seg.dst)).or_default();
        c.rcv_ack = seg.ack.or(c.rcv_ack);
        c.window = seg.window;
        c.quiet_since = now;
        if !seg.payload.is_empty() || seg.syn || seg.fin {
            c.backoff = 0;
        }
    }

    /// A packet the host received.
    pub fn received(&mut self, p: &[u8]) {
        let Some(seg) = packet::parse(p) else { return };
        if seg.rst {
            self.conns.remove(&(seg.dst, seg.src));
            return;
        }
        let c = self.conns.entry((seg.dst, seg.src)).or_default();
        if let Some(a) = seg.ack {
            c.snd_una = Some(a);
            c.peer_window = seg.window;
        }
    }

    /// The probe for a connection with data waiting to be sent (`local` → `remote`), when the
    /// peer's window is zero and the host has been quiet long enough.
    pub fn probe(&mut self, now: u64, local: SocketAddr, remote: SocketAddr) -> Option<Vec<u8>> {
        let c = self.conns.get_mut(&(local, remote))?;
        let (una, ack) = (c.snd_una?, c.rcv_ack?);
        if c.peer_window != 0 || now < c.quiet_since + (FIRST_US << c.backoff) {
            return None;
        }
        c.quiet_since = now;
        c.backoff = (c.backoff + 1).min(MAX_BACKOFF);
        self.probes += 1;
        Build {
            src: local,
            dst: remote,
            seq: Seq(una.0.wrapping_sub(1)),
            ack: Some(ack),
            control: Control::None,
            window: c.window,
            payload: &[],
        }
        .emit()
    }
}

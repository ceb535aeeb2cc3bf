//! Zero-window probing for the simulated hosts, as Linux does it.
//!
//! smoltcp has no persist timer: a sender told the window is zero waits for a window update,
//! and when that update is lost on the link it waits forever (a retransmission timeout with a
//! zero window sends nothing either). RFC 9293 section 3.8.6.1 requires the sender to probe a
//! zero window; Linux sends, after a retransmission timeout and then with a doubling interval,
//! a segment without data at SND.UNA - 1, which the receiver answers with an ACK carrying its
//! current window. This module watches each host's packets and sends those probes on its behalf.
//!
//! smoltcp can also leave its retransmission timer idle while data is outstanding (an ACK that
//! acknowledges only part of the data resets it to idle when it was not armed, and it is armed
//! again only after a transmission that leaves nothing more to send), so a lost segment then
//! is never resent. Linux keeps a timer armed while anything is outstanding; here a host quiet
//! for a retransmission timeout with data in flight resends the segment at SND.UNA, from a copy
//! of what it sent (bytes at a sequence number never change).

use crate::packet::{self, Build, Control};
use crate::seq::Seq;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

/// The first probe after this much silence (Linux's minimum RTO), then doubling.
const FIRST_US: u64 = 200_000;
/// Linux caps the probe interval at 120 s; 12.8 s keeps long simulations moving.
const MAX_BACKOFF: u32 = 6;
/// A retransmission on the host's behalf only after this much silence (Linux's initial RTO),
/// so that smoltcp's own timer, when armed, goes first.
const RETRANSMIT_US: u64 = 1_000_000;

/// One connection as its host sees it.
#[derive(Default)]
struct Conn {
    /// The host's initial sequence number (its SYN's), and the end of the data it sent.
    iss: Option<Seq>,
    snd_max: Option<Seq>,
    /// The host's latest ACK and raw window, as sent.
    rcv_ack: Option<Seq>,
    window: u16,
    /// When the host last sent anything, or the last probe went.
    quiet_since: u64,
    backoff: u32,
    /// Data segments sent and not yet acknowledged, as sent.
    unacked: VecDeque<(Seq, Vec<u8>)>,
}

/// Per host: its connections by (local, remote).
#[derive(Default)]
pub struct Persist {
    conns: HashMap<(SocketAddr, SocketAddr), Conn>,
    pub probes: u64,
    pub retransmissions: u64,
}

impl Persist {
    /// A packet the host sent.
    pub fn sent(&mut self, now: u64, p: &[u8]) {
        let Some(seg) = packet::parse(p) else { return };
        let c = self.conns.entry((seg.src, seg.dst)).or_default();
        if seg.syn {
            c.iss = Some(seg.seq);
        }
        c.rcv_ack = seg.ack.or(c.rcv_ack);
        c.window = seg.window;
        c.quiet_since = now;
        if !seg.payload.is_empty() || seg.syn || seg.fin {
            c.backoff = 0;
        }
        if !seg.payload.is_empty() && !seg.syn {
            let end = Seq(seg.seq.0.wrapping_add(seg.payload.len() as u32));
            c.snd_max = Some(c.snd_max.map_or(end, |m| if end.gt(m) { end } else { m }));
            c.unacked.push_back((seg.seq, p[seg.payload].to_vec()));
        }
    }

    /// A packet the host received.
    pub fn received(&mut self, p: &[u8]) {
        let Some(seg) = packet::parse(p) else { return };
        if seg.rst {
            self.conns.remove(&(seg.dst, seg.src));
        }
    }

    /// For a connection (`local` → `remote`) whose host has written `written` bytes, `queued`
    /// of them still in its send buffer (unacknowledged or unsent), when the host has been
    /// quiet long enough: the segment at SND.UNA again when data is in flight, else a window
    /// probe. SND.UNA is the host's own (its buffer starts there), not one read off the ACKs
    /// it received: a host drops the ACK of a segment that fails its acceptability test
    /// (RFC 9293 section 3.10.7.4, e.g. old data resent by the other side), and a stand-in
    /// that took those ACKs would believe data acknowledged, or a window open, that the host
    /// does not. With nothing in flight and data queued the host is held by a zero window as
    /// far as it knows (smoltcp sends whatever its window allows when nothing is in flight).
    pub fn probe(
        &mut self,
        now: u64,
        local: SocketAddr,
        remote: SocketAddr,
        written: usize,
        queued: usize,
    ) -> Option<Vec<u8>> {
        let c = self.conns.get_mut(&(local, remote))?;
        let (iss, ack) = (c.iss?, c.rcv_ack?);
        let una = Seq(iss.0.wrapping_add(1).wrapping_add(written.checked_sub(queued)? as u32));
        c.unacked.retain(|(s, d)| Seq(s.0.wrapping_add(d.len() as u32)).gt(una));
        let head = c.unacked.iter().find(|(s, d)| s.le(una) && una.lt(Seq(s.0.wrapping_add(d.len() as u32))));
        let (seq, payload, first) = match head {
            Some((s, d)) => (una, &d[una.diff(*s) as usize..], RETRANSMIT_US),
            None if c.snd_max.is_none_or(|m| m.le(una)) => (Seq(una.0.wrapping_sub(1)), &[][..], FIRST_US),
            None => return None,
        };
        if now < c.quiet_since + (first << c.backoff) {
            return None;
        }
        let p = Build {
            src: local,
            dst: remote,
            seq,
            ack: Some(ack),
            control: Control::Psh,
            window: c.window,
            payload,
        }
        .emit();
        if payload.is_empty() {
            self.probes += 1;
        } else {
            self.retransmissions += 1;
        }
        c.quiet_since = now;
        c.backoff = (c.backoff + 1).min(MAX_BACKOFF);
        p
    }
}

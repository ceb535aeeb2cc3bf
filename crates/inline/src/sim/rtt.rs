//! What Linux's RTT estimator would make of the ACKs a host gets (the clients', and the
//! server's for what it sends): the simulator's hosts are smoltcp, whose estimator is not
//! Linux's, so a host's data segments and the ACKs reaching it are watched on the link and Linux's sampling rules applied to them (as in `tcp_ack`):
//! - a cumulative ACK samples from the earliest-sent segment it newly acknowledges in full,
//!   unless it acknowledges a retransmitted segment (Karn) or one already SACKed;
//! - SACK blocks sample from the earliest-sent segment they newly cover, never a retransmitted
//!   one, and that sample is used when the cumulative ACK gives none;
//! - srtt and rttvar as RFC 6298, and the RTO as Linux sets it: srtt + max(4 × rttvar, 200 ms).
//!
//! The largest RTO per flow is the figure: segments acknowledged long after they arrived
//! (held beyond a gap, then released record by record) make samples as long as the gap's
//! repair, and an RTO that grows past the next repair.

use crate::packet;
use std::collections::{BTreeMap, HashMap};

/// Linux's smallest RTO (`TCP_RTO_MIN`), in µs.
const RTO_MIN: u64 = 200_000;

#[derive(Default)]
pub struct ClientRtt {
    flows: HashMap<u16, Flow>,
    /// Watching the server: flows are keyed by the peer's (the client's) port, the destination
    /// of what the server sends.
    server: bool,
}

#[derive(Default)]
struct Flow {
    /// The client's ISN: offsets count from it (no wrap within 4 GiB).
    isn: Option<u32>,
    /// Segments sent and not yet acknowledged in full: start → (end, first sent, resent, SACKed).
    segs: BTreeMap<u64, Seg>,
    srtt: Option<u64>,
    rttvar: u64,
    max_rto: u64,
    max_sample: u64,
}

#[derive(Clone, Copy)]
struct Seg {
    end: u64,
    sent: u64,
    resent: bool,
    sacked: bool,
}

impl ClientRtt {
    /// The same rules applied to the server's data and the ACKs reaching it.
    pub fn server() -> ClientRtt {
        ClientRtt { server: true, ..ClientRtt::default() }
    }

    /// A packet the host sent at `t` µs.
    pub fn sent(&mut self, t: u64, p: &[u8]) {
        let Some(seg) = packet::parse(p) else { return };
        let port = if self.server { seg.dst.port() } else { seg.src.port() };
        let f = self.flows.entry(port).or_default();
        if seg.syn {
            f.isn = Some(seg.seq.0);
            return;
        }
        let (Some(isn), false) = (f.isn, seg.payload.is_empty()) else { return };
        let start = seg.seq.0.wrapping_sub(isn) as u64;
        let end = start + seg.payload.len() as u64;
        let first = f.segs.range(..start).next_back().map_or(start, |(&s, _)| s);
        let overlapping: Vec<u64> =
            f.segs.range(first..end).filter(|(_, s)| s.end > start).map(|(&s, _)| s).collect();
        let resent = !overlapping.is_empty();
        for s in overlapping {
            let old = f.segs.remove(&s).expect("listed");
            // A resend cut differently: what lies outside it stays as it was.
            if s < start {
                f.segs.insert(s, Seg { end: start, ..old });
            }
            if old.end > end {
                f.segs.insert(end, Seg { end: old.end, ..old });
            }
        }
        f.segs.insert(start, Seg { end, sent: t, resent, sacked: false });
    }

    /// A packet that reached the host at `t` µs.
    pub fn received(&mut self, t: u64, p: &[u8]) {
        let Some(seg) = packet::parse(p) else { return };
        let port = if self.server { seg.src.port() } else { seg.dst.port() };
        let Some(f) = self.flows.get_mut(&port) else { return };
        let (Some(isn), Some(ack)) = (f.isn, seg.ack) else { return };
        let off = |s: u32| s.wrapping_sub(isn) as u64;
        let ack = off(ack.0);
        let mut first_sacked: Option<u64> = None;
        for (l, r) in sack_blocks(p) {
            let (l, r) = (off(l), off(r));
            for s in f.segs.range_mut(l..r).map(|(_, s)| s).filter(|s| s.end <= r && !s.sacked) {
                s.sacked = true;
                if !s.resent {
                    first_sacked = Some(first_sacked.map_or(s.sent, |f: u64| f.min(s.sent)));
                }
            }
        }
        let (mut first_acked, mut karn) = (None, false);
        while let Some(e) = f.segs.first_entry() {
            let s = *e.get();
            if s.end > ack {
                break;
            }
            e.remove();
            if s.resent {
                karn = true;
            } else if !s.sacked {
                first_acked = Some(first_acked.map_or(s.sent, |f: u64| f.min(s.sent)));
            }
        }
        let sample = match (first_acked, karn) {
            (Some(sent), false) => Some(t - sent),
            _ => first_sacked.map(|sent| t - sent),
        };
        if let Some(r) = sample {
            f.sample(r);
        }
    }

    /// The largest RTO over all flows, and the longest sample, in µs.
    pub fn max_rto_and_sample(&self) -> (u64, u64) {
        self.flows.values().fold((0, 0), |(a, b), f| (a.max(f.max_rto), b.max(f.max_sample)))
    }
}

impl Flow {
    fn sample(&mut self, r: u64) {
        self.max_sample = self.max_sample.max(r);
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(srtt) => {
                self.rttvar = (3 * self.rttvar + srtt.abs_diff(r)) / 4;
                self.srtt = Some((7 * srtt + r) / 8);
            }
        }
        let rto = self.srtt.unwrap_or(0) + (4 * self.rttvar).max(RTO_MIN);
        self.max_rto = self.max_rto.max(rto);
    }
}

/// A packet's SACK blocks (kind 5), as sequence numbers.
fn sack_blocks(p: &[u8]) -> Vec<(u32, u32)> {
    let Some(seg) = packet::parse(p) else { return Vec::new() };
    let opts = &p[seg.tcp.start + 20..seg.payload.start];
    let mut out = Vec::new();
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let Some(&len) = opts.get(i + 1) else { break };
                let len = len as usize;
                if len < 2 || i + len > opts.len() {
                    break;
                }
                if kind == 5 {
                    for b in opts[i + 2..i + len].chunks_exact(8) {
                        let l = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                        let r = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
                        out.push((l, r));
                    }
                }
                i += len;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Build, Control};
    use crate::seq::Seq;

    fn seg(seq: u32, ack: Option<u32>, len: usize, sack: &[(u32, u32)], syn: bool) -> Vec<u8> {
        let (c, s) = ("10.0.0.1:40000".parse().unwrap(), "10.0.0.2:443".parse().unwrap());
        let payload = vec![0; len];
        let (src, dst) = if ack.is_some() && len == 0 { (s, c) } else { (c, s) };
        let mut p = Build {
            src,
            dst,
            seq: Seq(seq),
            ack: ack.map(Seq),
            control: Control::None,
            window: 100,
            payload: &payload,
        }
        .emit_with_sack(&sack.iter().map(|&(l, r)| (Seq(l), Seq(r))).collect::<Vec<_>>())
        .unwrap();
        if syn {
            let at = packet::parse(&p).unwrap().tcp.start;
            p[at + 13] |= 0x02;
        }
        p
    }

    #[test]
    fn karn_sack_and_late_acks() {
        let isn = u32::MAX - 10;
        let mut r = ClientRtt::default();
        r.sent(0, &seg(isn, None, 0, &[], true));
        let at = |o: u32| isn.wrapping_add(o);
        for i in 0..4u32 {
            r.sent(1000 * i as u64, &seg(at(1 + 100 * i), None, 100, &[], false));
        }
        // The first acknowledged after 10 ms.
        r.received(10_000, &seg(0, Some(at(101)), 0, &[], false));
        assert_eq!(r.max_rto_and_sample(), (10_000 + 200_000, 10_000));
        // The third SACKed at 12 ms: a 10 ms sample.
        r.received(12_000, &seg(0, Some(at(101)), 0, &[(at(201), at(301))], false));
        assert_eq!(r.max_rto_and_sample().1, 10_000);
        // The second resent, then all acknowledged late: Karn, no sample.
        r.sent(500_000, &seg(at(101), None, 100, &[], false));
        r.received(900_000, &seg(0, Some(at(301)), 0, &[], false));
        assert_eq!(r.max_rto_and_sample().1, 10_000);
        // The fourth, never resent nor SACKed, acknowledged alone 1 s after it left.
        r.received(1_003_000, &seg(0, Some(at(401)), 0, &[], false));
        assert_eq!(r.max_rto_and_sample().1, 1_000_000);
        assert!(r.max_rto_and_sample().0 > 1_000_000);
    }
}

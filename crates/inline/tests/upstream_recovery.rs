//! The client → server path against a client that recovers from a burst loss as Linux does
//! after a retransmission timeout: congestion window one segment, its sent segments kept with
//! their original boundaries, the oldest resent trimmed to the last ACK, the next one sent only
//! once an ACK covers the whole of it. A partial ACK (one inside a segment) leaves the segment's
//! unacknowledged rest as the only one in flight; that rest alone must be enough to move the
//! ACK, or the client resends it on every timeout, forever.

mod common;

use common::*;
use tlsgate_inline::tables::Release;
use tlsgate_inline::upstream::{Up, UpLimits, Upstream};
use tlsgate_record::frame::{Event, Framer, MAX_CIPHERTEXT_TLS12};
use tlsgate_record::session::Session;

/// The engine's default bounds.
const LIMITS: UpLimits = UpLimits {
    hold_bytes: 256 * 1024,
    hold_segments: 256,
    unacked_bytes: 1 << 20,
    record_limit: 16384 + 2048,
};
const MSS: usize = 1448;

/// The server: takes plaintext in order (a duplicate must repeat the bytes it has), and
/// acknowledges what it holds at once.
struct Server {
    got: Vec<u8>,
}

impl Server {
    /// Takes the engine's output; returns the server's ACK (inner offset).
    fn take(&mut self, out: &mut Vec<Up>, plain: &[u8]) -> u64 {
        for u in out.drain(..) {
            let Up::Forward { inner, data } = u else { continue };
            let at = (inner - 1) as usize;
            assert_eq!(&plain[at..at + data.len()], &data[..], "wrong bytes at inner {inner}");
            assert!(at <= self.got.len(), "gap before inner {inner}");
            let new = (at + data.len()).saturating_sub(self.got.len());
            self.got.extend_from_slice(&data[data.len() - new..]);
        }
        1 + self.got.len() as u64
    }
}

struct Client {
    /// The segments as first sent: outer offset and length.
    segs: Vec<(u64, usize)>,
    wire: Vec<u8>,
    start: u64,
    /// SND.UNA: the highest ACK the engine gave.
    una: u64,
}

impl Client {
    fn payload(&self, off: u64, len: usize) -> &[u8] {
        let at = (off - self.start) as usize;
        &self.wire[at..at + len]
    }

    /// One segment to the engine, the server's answer, and the engine's ACK to the client.
    fn send(
        &mut self,
        up: &mut Upstream,
        layer: &mut Session,
        server: &mut Server,
        plain: &[u8],
        off: u64,
        len: usize,
    ) {
        let data = self.payload(off, len).to_vec();
        let mut out = Vec::new();
        up.segment(layer, off, &data, &mut out).unwrap();
        let ack = server.take(&mut out, plain);
        up.server_ack(ack);
        self.una = self.una.max(up.client_ack());
    }
}

/// `segments` segments of the client's stream in flight, `lost` of them (from index
/// `first_lost`) lost on the way; then recovery one segment at a time from the last ACK.
fn burst_loss_then_one_segment_per_timeout(
    release: Release,
    header_cut: bool,
    first_lost: usize,
    lost: usize,
) {
    let suite = TLS13[0];
    let (mut f, mut up, start) = upstream_after_handshake(suite, LIMITS, release);
    // 1 MB in records of every size the client's writes make.
    let msgs: Vec<Vec<u8>> = (0..48).map(|i| vec![i as u8 + 1; 9_000 + 613 * i]).collect();
    let (plain, wire) = client_writes(&mut f, &msgs);
    // Segments of the MSS; with `header_cut`, one also ends two bytes into each record header
    // (the engine then holds a partial header, and no record in progress).
    let mut cuts: Vec<usize> = (0..wire.len()).step_by(MSS).collect();
    if header_cut {
        let mut framer = Framer::new(0, MAX_CIPHERTEXT_TLS12);
        let mut input = &wire[..];
        while let Some(ev) = framer.next(&mut input).unwrap() {
            if let Event::Header { offset, .. } = ev {
                cuts.push(offset as usize + 2);
            }
        }
    }
    cuts.push(wire.len());
    cuts.sort_unstable();
    cuts.dedup();
    let segs: Vec<(u64, usize)> = cuts.windows(2).map(|w| (start + w[0] as u64, w[1] - w[0])).collect();
    let mut c = Client { segs, wire, start, una: start };
    let mut server = Server { got: Vec::new() };
    // The first flight: everything after the burst reaches the engine, whose hold queue fills.
    let flight = c.segs.len().min(first_lost + lost + 400);
    for i in 0..flight {
        if (first_lost..first_lost + lost).contains(&i) {
            continue;
        }
        let (off, len) = c.segs[i];
        c.send(&mut up, &mut f.layer, &mut server, &plain, off, len);
    }
    assert!(up.stats().dropped > 0, "the hold queue overflowed");
    // Retransmission timeouts: the oldest unacknowledged segment, trimmed to SND.UNA, one at a
    // time; a timeout that brings no new ACK counts.
    let end = start + c.wire.len() as u64;
    let mut timeouts_in_a_row = 0;
    while c.una < end {
        let &(off, len) = c.segs.iter().find(|(o, n)| o + *n as u64 > c.una).unwrap();
        let from = off.max(c.una);
        let before = c.una;
        c.send(&mut up, &mut f.layer, &mut server, &plain, from, len - (from - off) as usize);
        timeouts_in_a_row = if c.una > before { 0 } else { timeouts_in_a_row + 1 };
        assert!(
            timeouts_in_a_row < 3,
            "{release:?}: stalled at outer {} (next {}), segment [{from}, {}), server has {} of {}",
            c.una,
            up.next(),
            off + len as u64,
            server.got.len(),
            plain.len()
        );
    }
    assert_eq!(server.got, plain, "{release:?}: every plaintext byte, once, in order");
}

#[test]
fn buffered_recovers_from_a_burst_loss_larger_than_the_hold_queue() {
    for header_cut in [false, true] {
        for first_lost in [3, 20, 37] {
            burst_loss_then_one_segment_per_timeout(Release::Buffered, header_cut, first_lost, 30);
        }
    }
}

#[test]
fn cut_through_recovers_from_a_burst_loss_larger_than_the_hold_queue() {
    for header_cut in [false, true] {
        for first_lost in [3, 20, 37] {
            burst_loss_then_one_segment_per_timeout(Release::CutThrough, header_cut, first_lost, 30);
        }
    }
}

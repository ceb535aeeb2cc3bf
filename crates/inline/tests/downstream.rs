//! The server → client record path against a real rustls client: one record per server segment,
//! retransmissions with other boundaries answered with the very same records, the window kept.

mod common;

use common::*;
use std::collections::BTreeMap;
use tlsgate_inline::downstream::{DownLimits, Downstream, Send};
use tlsgate_inline::seq_map::SeqMap;

const LIMITS: DownLimits = DownLimits { hold_bytes: 256 * 1024, hold_segments: 1024, unacked_bytes: 1 << 20 };
/// Where the engine's records start on the client's side (after its handshake flight).
const OUTER_START: u64 = 4001;

fn setup(suite: rustls::SupportedCipherSuite, limits: DownLimits) -> (Flow, Downstream) {
    let f = Flow::handshake(suite).unwrap();
    let mut pairs = SeqMap::new(1, 1, 4096);
    pairs.push((OUTER_START - 1) as u32, 0, 0).unwrap();
    (f, Downstream::new(pairs, limits))
}

/// The client's view: bytes by outer offset. Every resend must equal what was sent there first
/// (a different byte at the same offset would mean a record sealed twice: nonce reuse).
#[derive(Default)]
struct Wire {
    bytes: BTreeMap<u64, Vec<u8>>,
    delivered: u64,
}

impl Wire {
    fn take(&mut self, sends: &[Send]) {
        for s in sends {
            if let Some(first) = self.bytes.get(&s.outer) {
                assert_eq!(first, &*s.data, "different bytes resent at outer {}", s.outer);
            }
            self.bytes.insert(s.outer, s.data.to_vec());
        }
    }

    /// The in-order bytes not yet handed to the client.
    fn in_order(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.delivered == 0 {
            self.delivered = OUTER_START;
        }
        while let Some(d) = self.bytes.get(&self.delivered) {
            out.extend_from_slice(d);
            self.delivered += d.len() as u64;
        }
        out
    }
}

fn server_stream(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 253) as u8).collect()
}

#[test]
fn each_server_segment_becomes_one_record_the_client_reads() {
    for &suite in TLS13.iter().chain(TLS12) {
        let (mut f, mut down) = setup(suite, LIMITS);
        let mut out = Vec::new();
        assert_eq!(down.client_ack(Some(&mut f.layer), OUTER_START, 1 << 20, &mut out).unwrap(), Some(1));
        let plain = server_stream(50_000);
        let mut at = 0;
        let mut segs = 0;
        for n in [1usize, 1460, 0, 7, 1448, 16384, 20000].iter().cycle() {
            if at >= plain.len() {
                break;
            }
            let n = (*n).min(plain.len() - at);
            down.server_segment(Some(&mut f.layer), 1 + at as u64, &plain[at..at + n], &mut out).unwrap();
            at += n;
            segs += usize::from(n > 0) + usize::from(n > 16384);
        }
        assert_eq!(out.len(), segs, "one record per segment (20000 bytes make two)");
        let mut wire = Wire::default();
        wire.take(&out);
        assert_eq!(f.client_reads(&wire.in_order()), plain);
    }
}

#[test]
fn server_retransmissions_with_other_boundaries_resend_the_same_records() {
    let (mut f, mut down) = setup(TLS13[0], LIMITS);
    let mut out = Vec::new();
    down.client_ack(Some(&mut f.layer), OUTER_START, 1 << 20, &mut out).unwrap();
    let plain = server_stream(6000);
    for (i, chunk) in plain.chunks(1000).enumerate() {
        down.server_segment(Some(&mut f.layer), 1 + (i * 1000) as u64, chunk, &mut out).unwrap();
    }
    assert_eq!(out.len(), 6);
    let mut wire = Wire::default();
    wire.take(&out);
    // Linux collapses and splits: [500, 2700) in one segment, then [2700, 3100) and the new
    // tail [3100, 7000) with 1000 bytes beyond what was sent before.
    let more = server_stream(7000);
    let mut again = Vec::new();
    down.server_segment(Some(&mut f.layer), 501, &more[500..2700], &mut again).unwrap();
    assert_eq!(
        again.iter().map(|s| s.outer).collect::<Vec<_>>(),
        vec![out[0].outer, out[1].outer, out[2].outer]
    );
    down.server_segment(Some(&mut f.layer), 2701, &more[2700..3100], &mut again).unwrap();
    down.server_segment(Some(&mut f.layer), 3101, &more[3100..7000], &mut again).unwrap();
    wire.take(&again); // asserts byte-identical resends
    let records = down.stats().records;
    assert_eq!(records, 7, "only the 1000 new bytes sealed anew");
    assert_eq!(f.client_reads(&wire.in_order()), more);
    // Once the client acknowledged everything, the server's retransmission finds nothing.
    let end = *wire.bytes.keys().last().unwrap() + wire.bytes.values().last().unwrap().len() as u64;
    assert_eq!(down.client_ack(Some(&mut f.layer), end, 1 << 20, &mut again).unwrap(), Some(7001));
    let mut late = Vec::new();
    down.server_segment(Some(&mut f.layer), 1, &more[..100], &mut late).unwrap();
    assert!(late.is_empty());
    down.park();
    assert!(down.state_bytes() < 64);
}

#[test]
fn out_of_order_server_data_waits_for_the_gap() {
    let (mut f, mut down) = setup(TLS13[2], LIMITS);
    let mut out = Vec::new();
    down.client_ack(Some(&mut f.layer), OUTER_START, 1 << 20, &mut out).unwrap();
    let plain = server_stream(3000);
    down.server_segment(Some(&mut f.layer), 1001, &plain[1000..2000], &mut out).unwrap();
    down.server_segment(Some(&mut f.layer), 2001, &plain[2000..], &mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(down.queue_rows().len(), 2);
    down.server_segment(Some(&mut f.layer), 1, &plain[..1000], &mut out).unwrap();
    let mut wire = Wire::default();
    wire.take(&out);
    assert_eq!(f.client_reads(&wire.in_order()), plain);
    assert!(down.queue_rows().is_empty());
}

#[test]
fn never_beyond_the_clients_window() {
    let (mut f, mut down) = setup(TLS12[0], LIMITS);
    let overhead = 29;
    let mut out = Vec::new();
    // A window smaller than one segment plus its overhead: nothing goes out, the data waits.
    down.client_ack(Some(&mut f.layer), OUTER_START, 1000, &mut out).unwrap();
    let plain = server_stream(1400);
    down.server_segment(Some(&mut f.layer), 1, &plain, &mut out).unwrap();
    assert_eq!(out.len(), 1, "what fits the window is sealed");
    assert_eq!(out[0].data.len(), 1000);
    let mut wire = Wire::default();
    wire.take(&out);
    let rows = down.queue_rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].len, 1400 - (1000 - overhead));
    // The client acknowledged the first record and opens its window: the rest follows.
    let ack = OUTER_START + 1000;
    let inner = down.client_ack(Some(&mut f.layer), ack, 4000, &mut out).unwrap();
    assert_eq!(inner, Some(1 + 1000 - overhead as u64));
    wire.take(&out);
    assert_eq!(f.client_reads(&wire.in_order()), plain);
    for s in &out {
        assert!(s.outer + s.data.len() as u64 <= ack + 4000);
    }
}

#[test]
fn injected_records_are_never_acknowledged_to_the_server() {
    let (mut f, mut down) = setup(TLS13[1], LIMITS);
    let mut out = Vec::new();
    down.client_ack(Some(&mut f.layer), OUTER_START, 1 << 20, &mut out).unwrap();
    down.server_segment(Some(&mut f.layer), 1, b"hello", &mut out).unwrap();
    let mut ku = Vec::new();
    f.layer.send_key_update(&mut ku).unwrap();
    down.inject(ku, &mut out).unwrap();
    down.server_segment(Some(&mut f.layer), 6, b"world", &mut out).unwrap();
    let mut wire = Wire::default();
    wire.take(&out);
    let all = wire.in_order();
    assert_eq!(f.client_reads(&all), b"helloworld");
    // The client acknowledging "hello" and the key update is, for the server, 5 bytes.
    let after_ku = out[2].outer;
    assert_eq!(down.client_ack(Some(&mut f.layer), after_ku, 1 << 20, &mut Vec::new()).unwrap(), Some(6));
    assert_eq!(
        down.client_ack(Some(&mut f.layer), OUTER_START + all.len() as u64, 1 << 20, &mut Vec::new())
            .unwrap(),
        Some(11)
    );
}

#[test]
fn the_store_bound_holds_server_data_back() {
    let limits = DownLimits { unacked_bytes: 3000, ..LIMITS };
    let (mut f, mut down) = setup(TLS13[0], limits);
    let mut out = Vec::new();
    down.client_ack(Some(&mut f.layer), OUTER_START, 1 << 20, &mut out).unwrap();
    let plain = server_stream(10_000);
    for (i, chunk) in plain.chunks(1000).enumerate() {
        down.server_segment(Some(&mut f.layer), 1 + (i * 1000) as u64, chunk, &mut out).unwrap();
    }
    assert_eq!(out.len(), 3, "stops once 3000 sealed bytes wait for the client");
    // Three records with their Rc and Vec headers, the held bytes, the store's, the hold
    // queue's and the pair table's allocations.
    assert!(down.state_bytes() <= 3 * (1022 + 40) + 7000 + 64 * 8 + 1024);
    let mut wire = Wire::default();
    wire.take(&out);
    // The client acknowledges all it has each time: the store drains and the rest follows.
    loop {
        let (last, data) = wire.bytes.last_key_value().unwrap();
        let mut more = Vec::new();
        down.client_ack(Some(&mut f.layer), last + data.len() as u64, 1 << 20, &mut more).unwrap();
        if more.is_empty() {
            break;
        }
        assert!(more.len() <= 3);
        wire.take(&more);
    }
    assert_eq!(f.client_reads(&wire.in_order()), plain);
}

#[test]
fn a_client_ack_inside_a_tag_still_gets_the_record_tail_resent() {
    let (mut f, mut down) = setup(TLS13[0], LIMITS);
    let mut out = Vec::new();
    down.client_ack(Some(&mut f.layer), OUTER_START, 1 << 20, &mut out).unwrap();
    let plain = server_stream(2000);
    down.server_segment(Some(&mut f.layer), 1, &plain[..1000], &mut out).unwrap();
    down.server_segment(Some(&mut f.layer), 1001, &plain[1000..], &mut out).unwrap();
    let first_end = out[0].outer + out[0].data.len() as u64;
    // The client got all of the first record but the last 9 bytes of its tag: for the server
    // that is all of its plaintext, so it retransmits from the second record on.
    let inner = down.client_ack(Some(&mut f.layer), first_end - 9, 1 << 20, &mut Vec::new()).unwrap();
    assert_eq!(inner, Some(1001));
    let mut again = Vec::new();
    down.server_segment(Some(&mut f.layer), 1001, &plain[1000..], &mut again).unwrap();
    assert_eq!(again.first().map(|s| s.outer), Some(out[0].outer), "the first record goes again");
    assert_eq!(again.len(), 2);
}

#[test]
fn a_hold_queue_full_beyond_a_gap_still_takes_the_segment_filling_it() {
    // Found in simulation with a server writing small pieces: one lost segment, then enough
    // small ones to fill the segment bound; the retransmission of the lost one was refused for
    // good (the server kept retransmitting, nothing reached the client).
    let limits = DownLimits { hold_segments: 16, ..LIMITS };
    let (mut f, mut down) = setup(TLS13[2], limits);
    let mut out = Vec::new();
    down.client_ack(Some(&mut f.layer), OUTER_START, 1 << 20, &mut out).unwrap();
    let plain = server_stream(100 * 40);
    for (i, piece) in plain.chunks(100).enumerate().skip(1) {
        down.server_segment(Some(&mut f.layer), 1 + (i * 100) as u64, piece, &mut out).unwrap();
    }
    assert!(out.is_empty(), "everything waits for the first 100 bytes");
    assert_eq!(down.queue_rows().len(), 16, "the queue is full");
    // The gap fills: it is sealed straight from the segment, then everything the queue kept
    // (held bytes are never dropped: the server may have been told, by SACK, that they are
    // held); the rest, refused at the bound, comes again.
    down.server_segment(Some(&mut f.layer), 1, &plain[..100], &mut out).unwrap();
    assert_eq!(down.next_inner(), 1 + 17 * 100, "the gap and the 16 segments kept after it");
    for (i, piece) in plain.chunks(100).enumerate().skip(16) {
        down.server_segment(Some(&mut f.layer), 1 + (i * 100) as u64, piece, &mut out).unwrap();
    }
    let mut wire = Wire::default();
    wire.take(&out);
    assert_eq!(f.client_reads(&wire.in_order()), plain);
}

#[test]
fn duplicate_client_acks_make_the_engine_resend_what_the_client_lost() {
    // Found on Linux stacks under loss: a record lost toward the client while the server was in
    // its timeout recovery (no SACK, so it ignores duplicate ACKs, and no timestamps, so its
    // backoff never resets) waited minutes for the server. The engine repairs it itself.
    let (mut f, mut down) = setup(TLS13[0], LIMITS);
    let mut out = Vec::new();
    down.client_ack(Some(&mut f.layer), OUTER_START, 1 << 20, &mut out).unwrap();
    let plain = server_stream(5000);
    for (i, chunk) in plain.chunks(1000).enumerate() {
        down.server_segment(Some(&mut f.layer), 1 + (i * 1000) as u64, chunk, &mut out).unwrap();
    }
    assert_eq!(out.len(), 5);
    // Records 0 and 1 are lost; each of 2, 3, 4 arriving brings a duplicate ACK.
    let mut again = Vec::new();
    for n in 1..=3 {
        assert_eq!(down.client_ack(Some(&mut f.layer), OUTER_START, 1 << 20, &mut again).unwrap(), Some(1));
        down.client_dup_ack(&mut again);
        assert_eq!(again.len(), if n < 3 { 0 } else { 1 }, "after {n} duplicates");
    }
    assert_eq!(again[0], out[0], "the oldest record, byte-identical");
    // More duplicates while it is on its way resend nothing more.
    down.client_dup_ack(&mut again);
    assert_eq!(again.len(), 1);
    // The client acknowledges record 0 only: record 1 was lost too and goes at once.
    let mut next = Vec::new();
    down.client_ack(Some(&mut f.layer), out[1].outer, 1 << 20, &mut next).unwrap();
    assert_eq!(next, vec![out[1].clone()]);
    // Everything acknowledged: the repair is over, nothing more goes.
    let end = out[4].outer + out[4].data.len() as u64;
    let mut none = Vec::new();
    down.client_ack(Some(&mut f.layer), end, 1 << 20, &mut none).unwrap();
    assert!(none.is_empty() && !down.has_unacked());
    let mut wire = Wire::default();
    wire.take(&out);
    assert_eq!(f.client_reads(&wire.in_order()), plain);
}

#[test]
fn the_engines_timer_resends_the_oldest_record_and_acks_bring_the_rest() {
    let (mut f, mut down) = setup(TLS13[1], LIMITS);
    let mut out = Vec::new();
    down.client_ack(Some(&mut f.layer), OUTER_START, 1 << 20, &mut out).unwrap();
    let plain = server_stream(3000);
    for (i, chunk) in plain.chunks(1000).enumerate() {
        down.server_segment(Some(&mut f.layer), 1 + (i * 1000) as u64, chunk, &mut out).unwrap();
    }
    // All three lost, nothing comes back: the timer.
    let mut again = Vec::new();
    assert!(down.resend_oldest(&mut again));
    assert_eq!(again, vec![out[0].clone()]);
    for (i, record) in out.iter().enumerate().skip(1) {
        let mut next = Vec::new();
        down.client_ack(Some(&mut f.layer), record.outer, 1 << 20, &mut next).unwrap();
        assert_eq!(next, vec![record.clone()], "the ACK of record {} brings record {i}", i - 1);
    }
}

#[test]
fn a_server_resending_its_window_gets_each_record_once() {
    // Linux without SACK resends its whole window after a timeout, one segment after another.
    // Each record goes once, not every record before each segment again (quadratic).
    let (mut f, mut down) = setup(TLS13[0], LIMITS);
    let mut out = Vec::new();
    down.client_ack(Some(&mut f.layer), OUTER_START, 1 << 20, &mut out).unwrap();
    let plain = server_stream(20_000);
    for (i, chunk) in plain.chunks(1000).enumerate() {
        down.server_segment(Some(&mut f.layer), 1 + (i * 1000) as u64, chunk, &mut out).unwrap();
    }
    let mut again = Vec::new();
    for (i, chunk) in plain.chunks(1000).enumerate() {
        down.server_segment(Some(&mut f.layer), 1 + (i * 1000) as u64, chunk, &mut again).unwrap();
    }
    assert_eq!(again, out, "each record once, in order, byte-identical");
}

#[test]
fn an_acknowledged_records_buffer_carries_a_later_record_but_never_while_shared() {
    use std::rc::Rc;
    let (mut f, mut down) = setup(TLS13[0], LIMITS);
    let mut out = Vec::new();
    down.client_ack(Some(&mut f.layer), OUTER_START, 1 << 20, &mut out).unwrap();
    let plain = server_stream(3000);
    let mut wire = Wire::default();
    // A record turned into packets (its `Send` dropped) and acknowledged: its buffer is free.
    down.server_segment(Some(&mut f.layer), 1, &plain[..1000], &mut out).unwrap();
    wire.take(&out);
    let first = Rc::as_ptr(&out.pop().unwrap().data);
    let end = down.outer_end();
    down.client_ack(Some(&mut f.layer), end, 1 << 20, &mut out).unwrap();
    down.server_segment(Some(&mut f.layer), 1001, &plain[1000..2000], &mut out).unwrap();
    assert_eq!(Rc::as_ptr(&out[0].data), first, "the acknowledged record's buffer again");
    wire.take(&out);
    // A record still held elsewhere when acknowledged is never written again.
    let held = out.pop().unwrap();
    let copy = held.data.to_vec();
    let end = down.outer_end();
    down.client_ack(Some(&mut f.layer), end, 1 << 20, &mut out).unwrap();
    down.server_segment(Some(&mut f.layer), 2001, &plain[2000..], &mut out).unwrap();
    assert_ne!(Rc::as_ptr(&out[0].data), Rc::as_ptr(&held.data));
    assert_eq!(*held.data, copy);
    wire.take(&out);
    assert_eq!(f.client_reads(&wire.in_order()), plain);
    out.clear();
    let end = down.outer_end();
    down.client_ack(Some(&mut f.layer), end, 1 << 20, &mut out).unwrap();
    assert!(down.state_bytes() > 1000, "the spare buffers are counted");
    down.park();
    assert!(down.state_bytes() < 64, "parking frees the spare buffers: {}", down.state_bytes());
}

//! The client → server data path of one established flow: client segments (at outer offsets)
//! in, plaintext for the server (at inner offsets) out, and the server's ACKs translated back for
//! the client.
//!
//! Packets are not this module's business: the engine reads offsets from segments and builds
//! packets from what comes out. Order of work for each in-order byte: hold queue → framer →
//! then, by release mode:
//! - buffered: whole record → open (tag verified) → plaintext released. No byte of a record
//!   leaves before its tag verified, so a tampered record never reaches the server.
//! - cut-through: each body piece decrypted at once ([`CutRecord`]) and what the release rule
//!   allows forwarded; the tag checked at the record's last byte, a failure fatal to the flow.
//!   The record's pair entry is written at its end; until then the released part maps byte for
//!   byte (`inner + k` ↔ `outer + head + k`), as a partly acknowledged record does in the table.
//!
//! Retransmission hazard: the client may resend bytes the engine already decrypted and forwarded
//! (the ACK translating the server's reception was lost, or is still on its way). The server has
//! not necessarily received that plaintext, so the same plaintext is delivered again from a store
//! kept until the server acknowledges it; the client's bytes are never decrypted twice (the
//! record sequence number and the keystream have moved on). That holds for the released part of
//! a cut-through record too: what left is stored as it left.

use crate::cut::{CutRecord, Ending};
use crate::handshake::{Handshake, HandshakeError, Progress};
use crate::hold::{HeldSegment, HoldError, HoldQueue, HoldReason};
use crate::sacked::Sacked;
use crate::seq_map::{CompactMap, Mapped, SeqMap, SeqMapError};
use crate::tables::Release;
use std::collections::VecDeque;
use std::rc::Rc;
use thiserror::Error;
use tlsgate_record::frame::{Event, FrameError, Framer, Header, HEADER_LEN};
use tlsgate_record::session::{Fatal, Received, Session};

/// Largest piece of the re-delivery store (one maximum-size record).
const STORE_CHUNK: usize = 1 << 14;

/// Pieces of plaintext shorter than this continue the last stored piece instead of becoming
/// pieces of their own (see [`Upstream::release_plain`]).
const SMALL_PIECE: usize = 1 << 10;

/// A piece's own allocation beside its bytes: the shared counts and the vector.
const PIECE_OVERHEAD: usize = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<Vec<u8>>();

/// Released plaintext, held once: the re-delivery store and the [`Up::Forward`] that sends it
/// share the buffer the record was opened in.
pub type Piece = Rc<Vec<u8>>;

/// Per-flow bounds of the upstream path.
#[derive(Clone, Copy, Debug)]
pub struct UpLimits {
    /// Out-of-order client bytes held.
    pub hold_bytes: usize,
    pub hold_segments: usize,
    /// Plaintext released but not yet acknowledged by the server. At the bound, new client
    /// bytes are dropped (the client retransmits once the server has caught up).
    pub unacked_bytes: usize,
    /// Largest record body accepted.
    pub record_limit: usize,
}

/// What the upstream path produced for the engine to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Up {
    /// Plaintext for the server at inner offset `inner`. Consecutive forwards may be
    /// contiguous (one record's plaintext each): the engine joins them into its packets.
    Forward { inner: u64, data: Piece },
    /// A record the session consumed (a KeyUpdate, a warning alert, a refused renegotiation);
    /// `reply` holds the records it sealed in answer, for the client (empty when none).
    Control { reply: Vec<u8> },
    /// The client's close_notify.
    Closed,
}

/// Fatal to the flow: the engine resets the server and alerts the client.
#[derive(Debug, Error, PartialEq)]
pub enum UpError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A post-handshake rule broken (or the session's own failure): the alert it chose is
    /// sealed by `Session::send_alert`.
    #[error(transparent)]
    Session(#[from] Fatal),
    #[error(transparent)]
    Pairs(#[from] SeqMapError),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
}

/// Counters for the connection table and the simulator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpStats {
    pub records: u64,
    /// Segments (or parts) the client sent again.
    pub retransmitted: u64,
    /// Plaintext bytes delivered again from the store.
    pub redelivered: u64,
    /// Segments dropped at a bound.
    pub dropped: u64,
    /// Cut-through: plaintext bytes released before their record's tag verified.
    pub before_tag: u64,
}

/// The record in progress.
#[derive(Debug)]
enum Partial {
    /// Buffered (and the handshake): header, outer offset, body so far (the handshake path keeps
    /// the header in it too).
    Whole(Header, u64, Vec<u8>),
    Cut(Box<CutRecord>),
}

impl Partial {
    fn outer(&self) -> u64 {
        match self {
            Partial::Whole(_, o, _) => *o,
            Partial::Cut(c) => c.outer(),
        }
    }
}

#[derive(Debug)]
pub struct Upstream {
    hold: HoldQueue,
    framer: Framer,
    release: Release,
    record: Option<Partial>,
    pairs: SeqMap,
    /// Released plaintext not yet acknowledged by the server: (inner offset, bytes) as released
    /// (whole records in buffered mode, pieces in cut-through), contiguous in inner offsets.
    unacked: VecDeque<(u64, Piece)>,
    /// The inner offset after the last plaintext byte released: where the server's stream
    /// ends, also after a failed cut-through record whose first part left.
    released_end: u64,
    unacked_bytes: usize,
    /// Highest inner offset the server acknowledged, and the outer ACK it translated to.
    inner_acked: u64,
    outer_acked: u64,
    limits: UpLimits,
    stats: UpStats,
    /// The end of the client's stream, by its FIN or its close_notify: (outer offset, inner
    /// offset). The FIN to the server occupies one sequence number past the inner end; on the
    /// client's side one is occupied only once its own FIN came (`client_fin`).
    fin: Option<(u64, u64)>,
    /// The client's TCP FIN came, at the outer end of `fin`.
    client_fin: bool,
    /// Outer ranges reported to the client in SACK blocks and not yet passed by its ACK,
    /// ascending, merged: see [`Upstream::sack_blocks`].
    sacked: Sacked,
}

/// The client → server path of a parked flow ([`Upstream::compact`]): nothing held, in flight
/// or half-framed, so its offsets, counters and pair table are all there is.
#[derive(Debug)]
pub struct CompactUp {
    pairs: CompactMap,
    next: u64,
    released_end: u64,
    inner_acked: u64,
    outer_acked: u64,
    stats: UpStats,
    release: Release,
}

impl CompactUp {
    pub fn stats(&self) -> UpStats {
        self.stats
    }

    pub fn pairs(&self) -> &CompactMap {
        &self.pairs
    }

    /// Where the server's stream ends (see [`Upstream::inner_end`]).
    pub fn inner_end(&self) -> u64 {
        self.released_end
    }

    /// The path again, as it was when compacted with these `limits`.
    pub fn resume(self, limits: UpLimits) -> Upstream {
        let CompactUp { pairs, next, released_end, inner_acked, outer_acked, stats, release } = self;
        Upstream {
            hold: HoldQueue::new(limits.hold_bytes, limits.hold_segments),
            framer: Framer::new(next, limits.record_limit),
            release,
            record: None,
            pairs: pairs.resume(),
            unacked: VecDeque::new(),
            released_end,
            unacked_bytes: 0,
            inner_acked,
            outer_acked,
            limits,
            stats,
            fin: None,
            client_fin: false,
            sacked: Sacked::default(),
        }
    }
}

impl Upstream {
    /// Nothing held, in flight or half-framed, no FIN: [`Upstream::compact`] keeps all of it.
    pub fn is_quiet(&self) -> bool {
        self.hold.is_empty()
            && self.framer.at_boundary()
            && self.record.is_none()
            && self.unacked.is_empty()
            && self.fin.is_none()
            && self.sacked.is_empty()
    }

    /// The compact form of a quiet path ([`Upstream::is_quiet`]); the path itself back otherwise.
    pub fn compact(self) -> Result<CompactUp, Box<Upstream>> {
        if !self.is_quiet() {
            return Err(Box::new(self));
        }
        let Upstream {
            hold: _,
            framer,
            release,
            record: _,
            pairs,
            unacked: _,
            released_end,
            unacked_bytes: _,
            inner_acked,
            outer_acked,
            limits: _,
            stats,
            fin: _,
            client_fin: _,
            sacked: _,
        } = self;
        Ok(CompactUp {
            pairs: pairs.compact(),
            next: framer.offset(),
            released_end,
            inner_acked,
            outer_acked,
            stats,
            release,
        })
    }

    /// Starts where `pairs` ends (after the handshake records the engine consumed).
    pub fn new(pairs: SeqMap, limits: UpLimits) -> Upstream {
        let (outer, inner) = pairs.end();
        Upstream {
            hold: HoldQueue::new(limits.hold_bytes, limits.hold_segments),
            framer: Framer::new(outer, limits.record_limit),
            release: Release::Buffered,
            record: None,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            released_end: inner,
            inner_acked: inner,
            outer_acked: outer,
            pairs,
            limits,
            stats: UpStats::default(),
            fin: None,
            client_fin: false,
            sacked: Sacked::default(),
        }
    }

    /// Sets the release mode (before the first application record).
    pub fn with_release(mut self, release: Release) -> Upstream {
        self.release = release;
        self
    }

    pub fn release(&self) -> Release {
        self.release
    }

    pub fn stats(&self) -> UpStats {
        self.stats
    }

    pub fn pairs(&self) -> &SeqMap {
        &self.pairs
    }

    /// The next outer offset expected in order.
    pub fn next(&self) -> u64 {
        self.framer.offset()
    }

    /// How far beyond `ack` (the ACK the client is sent, outer) the client may send: up to the
    /// hold queue's bound past the next byte expected, so that whatever is lost before them, the
    /// segments the client sends fit in the queue. The edge never moves back (`next` only grows).
    pub fn client_room(&self, ack: u64) -> u64 {
        (self.next() + self.limits.hold_bytes as u64).saturating_sub(ack)
    }

    /// The most client bytes in flight the engine takes without dropping: a client segment
    /// arriving while the plaintext the server has not acknowledged reaches `unacked_bytes` is
    /// dropped, and the client's bytes beyond the ACK it was sent are at least that plaintext
    /// (the rest is record headers, tags and a record in progress). A sixteenth is kept for
    /// those. Advertised to the client as a window ceiling, as [`Downstream::max_in_flight`] is
    /// to the server.
    ///
    /// [`Downstream::max_in_flight`]: crate::downstream::Downstream::max_in_flight
    pub fn max_in_flight(&self) -> u64 {
        (self.limits.unacked_bytes as u64) * 15 / 16
    }

    /// A client segment's payload at outer offset `offset`.
    pub fn segment(
        &mut self,
        session: &mut Session,
        offset: u64,
        data: &[u8],
        out: &mut Vec<Up>,
    ) -> Result<(), UpError> {
        let end = offset + data.len() as u64;
        let next = self.next();
        if offset < next {
            self.stats.retransmitted += 1;
            self.redeliver(offset, end.min(next), out);
        }
        if end <= next {
            return Ok(());
        }
        if self.unacked_bytes >= self.limits.unacked_bytes {
            self.stats.dropped += 1;
            self.probe_server(out);
            return Ok(());
        }
        if offset <= next {
            // In order: straight to the framer, no copy; held bytes it covered are dropped.
            self.consume(session, &data[(next - offset) as usize..], out)?;
            self.hold.discard_before(self.next());
        } else if let Err(HoldError::Full { .. }) = self.hold.insert(offset, data, next) {
            self.stats.dropped += 1;
            return Ok(());
        }
        while let Some(run) = self.hold.pop_ready(self.next()) {
            self.consume(session, &run, out)?;
            self.hold.discard_before(self.next());
        }
        Ok(())
    }

    /// Before the keys exist: a client segment whose whole records go to the rustls handshake
    /// (bytes for the client appended to `to_client`). Each record becomes a pair entry with no
    /// plaintext. Once the handshake completes, the rest of the segment is kept (in the hold
    /// queue) for [`Upstream::drain`] with the record layer.
    pub fn handshake_segment(
        &mut self,
        hs: &mut Handshake,
        offset: u64,
        data: &[u8],
        to_client: &mut Vec<u8>,
    ) -> Result<Progress, UpError> {
        let next = self.next();
        let end = offset + data.len() as u64;
        if end <= next {
            self.stats.retransmitted += 1;
            return Ok(Progress::NeedMore);
        }
        if self.hold.insert(offset, data, next).is_err() {
            self.stats.dropped += 1;
            return Ok(Progress::NeedMore);
        }
        while let Some(run) = self.hold.pop_ready(self.next()) {
            let mut input = &run[..];
            while let Some(ev) = self.framer.next(&mut input)? {
                match ev {
                    Event::Header { header, offset } => {
                        let mut whole = Vec::with_capacity(HEADER_LEN + header.len as usize);
                        whole.extend_from_slice(&header.encode());
                        self.record = Some(Partial::Whole(header, offset, whole));
                    }
                    Event::Body { data, .. } => {
                        if let Some(Partial::Whole(_, _, body)) = self.record.as_mut() {
                            body.extend_from_slice(data);
                        }
                    }
                    Event::End { .. } => {
                        let Some(Partial::Whole(_, _, whole)) = self.record.take() else {
                            unreachable!("a header precedes its end")
                        };
                        self.pairs.push(whole.len() as u32, 0, 0)?;
                        self.stats.records += 1;
                        if hs.record(&whole, to_client)? == Progress::Complete {
                            // The client's first application records stay for the record layer.
                            if !input.is_empty() {
                                let at = self.next();
                                self.hold.insert(at, input, at).ok();
                            }
                            return Ok(Progress::Complete);
                        }
                    }
                }
            }
            self.hold.discard_before(self.next());
        }
        Ok(Progress::NeedMore)
    }

    /// After the handshake: processes whatever in-order client bytes are already held.
    pub fn drain(&mut self, session: &mut Session, out: &mut Vec<Up>) -> Result<(), UpError> {
        while let Some(run) = self.hold.pop_ready(self.next()) {
            self.consume(session, &run, out)?;
            self.hold.discard_before(self.next());
        }
        Ok(())
    }

    /// The next inner offset: where the next plaintext byte for the server goes (after the
    /// released part of a cut-through record in progress, or of one that failed its tag).
    pub fn inner_end(&self) -> u64 {
        self.released_end
    }

    /// The inner offset of the next sequence number the server is sent: past the FIN once the
    /// FIN went (see `Downstream::outer_next`).
    pub fn inner_next(&self) -> u64 {
        self.inner_end() + u64::from(self.fin.is_some())
    }

    fn cut(&self) -> Option<&CutRecord> {
        match &self.record {
            Some(Partial::Cut(c)) => Some(c),
            _ => None,
        }
    }

    /// The inner offset the server last acknowledged.
    pub fn inner_acked(&self) -> u64 {
        self.inner_acked
    }

    /// Feeds in-order bytes to the framer and acts on whole records.
    fn consume(&mut self, session: &mut Session, mut input: &[u8], out: &mut Vec<Up>) -> Result<(), UpError> {
        // The framer's refusals get the session's alerts, like its own header checks.
        while let Some(ev) = self.framer.next(&mut input).map_err(|e| session.frame_error(e))? {
            match ev {
                Event::Header { header, offset } => {
                    session.header(header)?;
                    self.record = Some(match self.release {
                        Release::Buffered => {
                            Partial::Whole(header, offset, Vec::with_capacity(header.len as usize))
                        }
                        Release::CutThrough => {
                            Partial::Cut(Box::new(CutRecord::begin(session, header, offset)?))
                        }
                    })
                }
                Event::Body { data, .. } => match self.record.as_mut() {
                    Some(Partial::Whole(_, _, body)) => body.extend_from_slice(data),
                    Some(Partial::Cut(c)) => {
                        let inner = self.pairs.end().1 + c.released() as u64;
                        let plain = c.body(data);
                        self.stats.before_tag += plain.len() as u64;
                        self.release_plain(inner, plain, out);
                    }
                    None => {}
                },
                Event::End { .. } => match self.record.take() {
                    Some(Partial::Whole(header, _, body)) => self.open(session, header, body, out)?,
                    Some(Partial::Cut(c)) => self.end_cut(session, *c, out)?,
                    None => {}
                },
            }
        }
        Ok(())
    }

    /// Stores plaintext as it leaves (for re-delivery) and forwards it, one buffer for both.
    /// Small pieces continue the last stored one up to [`STORE_CHUNK`] bytes when nothing else
    /// holds it: cut-through releases as little as a byte per segment, and one allocation per
    /// byte would make the store's real size many times the bytes it counts.
    fn release_plain(&mut self, inner: u64, plain: Vec<u8>, out: &mut Vec<Up>) {
        if plain.is_empty() {
            return;
        }
        self.unacked_bytes += plain.len();
        self.released_end = inner + plain.len() as u64;
        if plain.len() < SMALL_PIECE {
            if let Some((at, last)) = self.unacked.back_mut() {
                let continues = *at + last.len() as u64 == inner && last.len() + plain.len() <= STORE_CHUNK;
                if let Some(last) = Rc::get_mut(last).filter(|_| continues) {
                    last.extend_from_slice(&plain);
                    out.push(Up::Forward { inner, data: Rc::new(plain) });
                    return;
                }
            }
        }
        let piece = Rc::new(plain);
        self.unacked.push_back((inner, piece.clone()));
        out.push(Up::Forward { inner, data: piece });
    }

    /// A cut-through record's last byte: tag, then its pair entry and what it meant.
    fn end_cut(&mut self, session: &mut Session, c: CutRecord, out: &mut Vec<Up>) -> Result<(), UpError> {
        self.stats.records += 1;
        let (outer_len, head, released) = (c.outer_len(), c.head() as u32, c.released());
        let mut reply = Vec::new();
        match c.end(session, &mut reply)? {
            Ending::Data(rest) => {
                let e = self.pairs.push(outer_len, head, (released + rest.len()) as u32)?;
                self.release_plain(e.inner + released as u64, rest, out);
            }
            Ending::Control => {
                self.pairs.push(outer_len, 0, 0)?;
                out.push(Up::Control { reply });
            }
            Ending::Closed => {
                self.pairs.push(outer_len, 0, 0)?;
                out.push(Up::Closed);
            }
        }
        Ok(())
    }

    /// A whole record, opened in place: its body becomes the released plaintext (no copy).
    fn open(
        &mut self,
        session: &mut Session,
        header: Header,
        mut body: Vec<u8>,
        out: &mut Vec<Up>,
    ) -> Result<(), UpError> {
        let outer_len = (HEADER_LEN + body.len()) as u32;
        self.stats.records += 1;
        let mut reply = Vec::new();
        match session.open(header, &mut body, &mut reply)? {
            Received::Data(r) => {
                let e = self.pairs.push(outer_len, (HEADER_LEN + r.start) as u32, r.len() as u32)?;
                body.truncate(r.end);
                body.drain(..r.start);
                self.release_plain(e.inner, body, out);
            }
            Received::Nothing => {
                self.pairs.push(outer_len, 0, 0)?;
                out.push(Up::Control { reply });
            }
            Received::Closed => {
                self.pairs.push(outer_len, 0, 0)?;
                out.push(Up::Closed);
            }
        }
        Ok(())
    }

    /// At the bound of unacknowledged plaintext the engine takes no more from the client, so
    /// if the server's last ACKs were lost nothing would ever move again: the server has
    /// nothing new to acknowledge. One byte of the oldest unacknowledged plaintext, sent again,
    /// makes the server answer with its current ACK (a duplicate is acknowledged at once, a
    /// missing byte accepted and acknowledged; RFC 9293, 3.10.7.4). The client's retransmission
    /// timer paces these probes.
    fn probe_server(&mut self, out: &mut Vec<Up>) {
        let Some((inner, data)) = self.unacked.front() else { return };
        let at = (*inner).max(self.inner_acked);
        if let Some(&byte) = data.get((at - inner) as usize) {
            self.stats.redelivered += 1;
            out.push(Up::Forward { inner: at, data: Rc::new(vec![byte]) });
        }
    }

    /// Delivers again the stored plaintext of the records overlapping outer `[start, end)` —
    /// all of each record's unacknowledged plaintext, not only the part under the range: the
    /// client may retransmit just a record's unacknowledged tail (see [`Upstream::client_ack`]).
    /// A cut-through record in progress counts with the part already released.
    fn redeliver(&mut self, start: u64, mut end: u64, out: &mut Vec<Up>) {
        // The client never resends what it was told the engine holds (SACK), and the engine's
        // ACK stops short of such a range: a resend reaching it stands for the range too.
        while let Some((_, e)) = self.sacked.containing(end) {
            end = e;
        }
        let mut range: Option<(u64, u64)> = None;
        for e in self.pairs.overlapping_outer(start, end).filter(|e| e.inner_len > 0) {
            range = Some((range.map_or(e.inner, |r| r.0), e.inner_end()));
        }
        if let Some(c) = self.cut().filter(|c| end > c.outer() && c.released() > 0) {
            let at = self.pairs.end().1;
            range = Some((range.map_or(at, |r| r.0), at + c.released() as u64));
        }
        let Some((a, b)) = range else { return };
        let a = a.max(self.inner_acked);
        for (inner, data) in &self.unacked {
            let (from, to) = ((*inner).max(a), (inner + data.len() as u64).min(b));
            if from < to {
                let piece = &data[(from - inner) as usize..(to - inner) as usize];
                self.stats.redelivered += piece.len() as u64;
                out.push(Up::Forward { inner: from, data: Rc::new(piece.to_vec()) });
            }
        }
    }

    /// The server's ACK (an inner offset) in outer terms: the pair table's translation, extended
    /// byte for byte over the released part of a cut-through record in progress.
    fn ack_to_outer(&self, inner: u64) -> Mapped {
        let base = self.pairs.end().1;
        match self.cut() {
            Some(c) if inner > base && inner <= base + c.released() as u64 => {
                Mapped::At(c.outer() + c.head() + (inner - base))
            }
            _ => self.pairs.ack_to_outer(inner),
        }
    }

    /// The server acknowledged client plaintext up to inner offset `inner`: returns the ACK for
    /// the client (outer offset), or `None` for an old or impossible ACK. Frees stored plaintext
    /// and prunes the pair table.
    pub fn server_ack(&mut self, inner: u64) -> Option<u64> {
        // The server acknowledging the forwarded FIN acknowledges the client's FIN, once the
        // client sent one: after a close_notify alone, an ACK past it would acknowledge a FIN
        // the client never sent, and Linux drops a segment that does (RFC 9293 §3.10.7.4).
        if let Some((fo, fi)) = self.fin {
            if inner == fi + 1 {
                self.server_ack(fi)?;
                self.outer_acked = fo + u64::from(self.client_fin);
                return Some(self.outer_acked);
            }
        }
        let Mapped::At(outer) = self.ack_to_outer(inner) else { return None };
        if inner < self.inner_acked {
            return None;
        }
        self.inner_acked = inner;
        self.outer_acked = self.outer_acked.max(outer);
        while let Some((i, d)) = self.unacked.front() {
            if i + d.len() as u64 > inner {
                break;
            }
            self.unacked_bytes -= d.len();
            self.unacked.pop_front();
        }
        self.pairs.prune(self.outer_acked, self.inner_acked);
        Some(self.outer_acked)
    }

    /// The end of the client's stream at outer offset `outer`, by its TCP FIN (`tcp_fin`) or its
    /// close_notify: when every byte before it has been consumed (and no record is half read),
    /// returns the inner offset where the FIN goes to the server (the same again for the FIN
    /// after a close_notify, or sent again); otherwise `None` (the client will retransmit).
    pub fn fin(&mut self, outer: u64, tcp_fin: bool) -> Option<u64> {
        if let Some((fo, fi)) = self.fin {
            self.client_fin |= tcp_fin && fo == outer;
            return (fo == outer).then_some(fi);
        }
        if outer != self.next() || !self.framer.at_boundary() {
            return None;
        }
        let inner = self.inner_end();
        self.fin = Some((outer, inner));
        self.client_fin = tcp_fin;
        Some(inner)
    }

    /// The ACK the engine may give the client on its own: the server's last ACK extended over
    /// records that carried nothing for the server (alerts, key updates) right after it, and
    /// over the part of a record still being assembled (a partial header counts): every byte
    /// of it received so far, which is never the record's last (that byte completes it).
    ///
    /// Why the partial record: in buffered mode nothing of a record reaches the server before
    /// its last byte, so the server's ACKs cannot move while the client waits for an ACK to
    /// send more — after a loss the client resends one segment per timeout and never reaches
    /// the record's end (seen in simulation). The engine holds those bytes itself, so it may
    /// acknowledge them; the record's end stays unacknowledged until the server has the
    /// plaintext, so once the record is released the client still retransmits its tail until
    /// the server acknowledges, which is what re-delivers a lost plaintext segment. Only done
    /// when the server has acknowledged everything before the partial record.
    ///
    /// Cut-through: the same rule. The server's ACKs do move inside a record there, but the
    /// engine still holds bytes of it (a TLS 1.3 record's first [`crate::cut::HOLD_FIRST`] bytes
    /// and its possible type/padding suffix), which a client resending from the server's ACK
    /// after a timeout would otherwise never get past. Plaintext that left and that this ACK
    /// covers before the server acknowledged it stays stored, and the record's unacknowledged
    /// end makes the client retransmit the tail, which re-delivers all of it. The end is the
    /// tag, so no record is ever acknowledged whole before its tag verified: a failure always
    /// reaches a client that still considers the record outstanding.
    ///
    /// All of what was received, not all but its last byte: an ACK inside one of the client's
    /// segments leaves Linux a remnant of it outstanding. After a timeout Linux resends just
    /// that remnant and nothing else until an ACK covers it, so an ACK short of the last byte
    /// received made every gap's repair one timeout longer; and an ACK short of the bytes taken
    /// in order may carry no SACK blocks ([`Upstream::sack_blocks`]).
    pub fn client_ack(&self) -> u64 {
        let translated = match self.ack_to_outer(self.inner_acked) {
            Mapped::At(o) => o.max(self.outer_acked),
            _ => self.outer_acked,
        };
        let next = self.next();
        let held_from = match &self.record {
            Some(p) => p.outer(),
            // A partial header: the framer holds the bytes of a record not yet begun.
            None => next - self.framer.held() as u64,
        };
        // Only once every earlier record is acknowledged by the server: jumping over a released
        // record the server has not acknowledged would stop the client from retransmitting it,
        // and its plaintext from being re-delivered.
        if held_from == next || translated < held_from || next == 0 {
            return self.clear_of_sacked(translated);
        }
        self.clear_of_sacked(next)
    }

    /// An ACK never ends inside a range the client was told (SACK) the engine holds. Linux
    /// takes a cumulative ACK followed by SACKed data as the receiver reneging on its SACKs
    /// (RFC 2018, section 8): it times out within 10 ms and resends everything from the ACK.
    /// Such an ACK stops one byte short of the range, so the client's oldest outstanding segment
    /// is one it was never told about; when the range ends exactly at the next expected byte and
    /// only the last byte of a record in progress was held back, the whole range is
    /// acknowledged instead (the record's end is still to come).
    fn clear_of_sacked(&self, ack: u64) -> u64 {
        let next = self.next();
        match self.sacked.containing(ack) {
            Some((_, e)) if e == next && ack + 1 == next => next,
            Some((s, _)) => s - 1,
            None => ack,
        }
    }

    /// SACK blocks for an ACK at outer offset `ack` (RFC 2018): the ranges of out-of-order
    /// client bytes held, the one stored last first, at most `max`. The engine holds client
    /// bytes beyond a gap until the gap fills (it needs whole records), so the server never sees
    /// them and cannot say it has them; without these blocks the client learns of them only
    /// when the gap fills and the server's ACKs reach them, one record at a time. Linux then
    /// takes RTT samples from segments it sent long before (they were never resent), its
    /// retransmission timeout grows past the gap's repair time, and the next repair takes
    /// longer still. SACKed segments give no such sample, and SACK recovery resends every hole
    /// in one round trip. Reported ranges are remembered until the ACK passes them (see
    /// [`Upstream::client_ack`]).
    ///
    /// Only with an ACK that covers every byte taken in order ([`Upstream::acks_all_taken`]);
    /// below that, none. The engine acknowledges bytes taken in order once the server has their
    /// plaintext, a round trip to the server after it could report the bytes beyond a gap. SACK
    /// blocks ahead of that ACK show the client a hole that reaches back over segments that
    /// arrived: Linux marks them lost along with the one really missing (RACK: sent before a
    /// segment since delivered), and when the server's ACK then covers them, never resent, it
    /// takes the loss for reordering and undoes its recovery, the real loss included, which
    /// waits for the retransmission timeout (200 ms and doubling: uploads under 2 % loss took
    /// several times as long, docs/inline-engine.md). Linux also raises its reordering estimate
    /// each time, which slows every later recovery.
    pub fn sack_blocks(&mut self, ack: u64, max: usize) -> Vec<(u64, u64)> {
        let blocks: Vec<(u64, u64)> = match self.acks_all_taken(ack) {
            true => self.hold.ranges().into_iter().filter(|&(s, _)| s > ack).take(max).collect(),
            false => Vec::new(),
        };
        self.sacked.report(ack, &blocks);
        blocks
    }

    /// How many SACK blocks an ACK at `ack` would carry now (segment sizes leave room for them).
    pub fn sack_count(&self, ack: u64, max: usize) -> usize {
        match self.acks_all_taken(ack) {
            true => self.hold.ranges().into_iter().filter(|&(s, _)| s > ack).take(max).count(),
            false => 0,
        }
    }

    /// Whether an ACK at outer offset `ack` covers every client byte taken in order: the only
    /// ACK that may carry SACK blocks (see [`Upstream::sack_blocks`]).
    pub fn acks_all_taken(&self, ack: u64) -> bool {
        ack >= self.next()
    }

    /// Whether client bytes beyond a gap are held.
    pub fn holds_beyond_gap(&self) -> bool {
        !self.hold.is_empty()
    }

    /// Bytes of state held: hold queue, partial record, stored plaintext, pair table, ranges
    /// reported in SACK blocks.
    pub fn state_bytes(&self) -> usize {
        self.hold.state_bytes()
            + self.record.as_ref().map_or(0, |r| match r {
                Partial::Whole(_, _, body) => body.len(),
                Partial::Cut(c) => c.state_bytes(),
            })
            + self.framer.held()
            + self.unacked_bytes
            + self.unacked.capacity() * std::mem::size_of::<(u64, Piece)>()
            + self.unacked.len() * PIECE_OVERHEAD
            + self.pairs.state_bytes()
            + self.sacked.state_bytes()
    }

    /// An idle flow gives back the room its store, pair table and SACK ranges grew to.
    pub fn park(&mut self) {
        self.hold.shrink();
        self.unacked.shrink_to_fit();
        self.pairs.shrink();
        self.sacked.shrink();
    }

    /// Queue-state rows: held segments, and the partial record awaiting its tag.
    pub fn queue_rows(&self) -> Vec<HeldSegment> {
        let mut rows = self.hold.rows(self.next(), HoldReason::Gap);
        if let Some(p) = &self.record {
            let len = match p {
                Partial::Whole(_, _, body) => body.len(),
                Partial::Cut(c) => c.received(),
            };
            rows.push(HeldSegment {
                offset: p.outer(),
                len: HEADER_LEN + len,
                reason: HoldReason::AwaitingTag,
            });
        }
        rows
    }
}

//! The TLS data path of one flow, from the server's SYN-ACK on: where segments become offsets,
//! offsets go through [`Upstream`] / [`Downstream`], and what comes out becomes packets again.
//!
//! Addressing: packets to the server go from the client's address to the backend; packets to
//! the client go from the service address. Sequence numbers: the client's ISN numbers both the
//! client's ciphertext (outer) and the plaintext the server sees (inner), the server's ISN both
//! the server's plaintext (inner) and the records the client sees (outer); `seq::Stream` turns
//! them into offsets and back.

mod parked;

use crate::downstream::{DownError, DownLimits, DownStats, Downstream, Send};
use crate::handshake::{Handshake, Progress, HANDSHAKE_STATE_BYTES};
use crate::hold::HeldSegment;
use crate::packet::{self, sack_option_len, Build, Control, Segment, TcpChecksum, MAX_SACK_BLOCKS};
use crate::seq::{Seq, Stream};
use crate::seq_map::Entry;
use crate::seq_map::SeqMap;
use crate::tables::{Counters, Release};
use crate::upstream::{Piece, Up, UpError, UpLimits, UpStats, Upstream};
use parked::Parked;
pub use parked::Wake;
use rustls::{CipherSuite, ProtocolVersion};
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;
use tlsgate_record::session::{Reason, Session};

/// First retransmission timeout for the engine's own bytes, and the largest backoff shift.
const RTO: Duration = Duration::from_millis(200);
const MAX_BACKOFF: u32 = 6;
/// Sequence pairs per direction.
const PAIRS: usize = 4096;
/// The default of `engine::Limits::park_after`: an established flow without a packet for this
/// long is parked ([`Live::park`]): its AEAD contexts dropped (rebuilt from the raw keys on
/// the next record, a key expansion per direction) and its queues' spare room given back. Long enough that a busy flow never pays
/// the rebuild per packet; short against the minutes an idle connection stays open.
pub const PARK_AFTER: Duration = Duration::from_millis(500);
/// How long a failed flow ([`Live::fail`]) waits, its fatal alert and FIN sent, for the client
/// to write again or close before it is reset anyway: long enough for a client to read the
/// alert and close, short against what a connection's state costs.
pub const FAILED_LINGER: Duration = Duration::from_secs(2);

#[derive(Debug, Error, PartialEq)]
pub enum FlowError {
    #[error(transparent)]
    Up(#[from] UpError),
    #[error(transparent)]
    Down(#[from] DownError),
}

/// What the flow needs to build packets.
#[derive(Clone, Copy, Debug)]
pub struct Ends {
    pub client: SocketAddr,
    /// The address the client connected to (source of packets to the client).
    pub service: SocketAddr,
    pub backend: SocketAddr,
    /// The client's own MSS (before the clamp): the largest segment the engine sends it.
    pub client_mss: u16,
    /// The server's MSS (from its SYN-ACK): the largest plaintext segment sent to it.
    pub server_mss: u16,
    /// Shift of the client's advertised windows (0 when scaling was not negotiated).
    pub client_wscale: u8,
    /// Shift of the server's advertised windows (0 when scaling was not negotiated): the scale
    /// of the window field the engine sends the client.
    pub server_wscale: u8,
    /// The client offered SACK and was told the engine accepts it: the engine's segments to
    /// the client carry SACK blocks for the client bytes it holds beyond a gap.
    pub client_sack: bool,
    /// The server accepted SACK (its SYN-ACK carries SACK-permitted): the engine's segments to
    /// the server carry SACK blocks for the server bytes it holds beyond a gap
    /// (`Downstream::sack_blocks`). The server's own blocks, about the plaintext the engine
    /// sends it, are ignored: the engine resends client plaintext only on the client's resends.
    pub server_sack: bool,
    /// Who finishes the TCP checksums of the segments the flow builds (the engine's setting).
    pub checksum: TcpChecksum,
    /// Records go to the client as one packet each, larger than the MTU, which the link cuts at
    /// the client's MSS (`Engine::set_segmentation_offload`).
    pub gso: bool,
}

/// The connection table's counters from each path's own and where its pair table ends.
fn counters(
    us: UpStats,
    ds: DownStats,
    (up_outer, up_inner): (u64, u64),
    (down_outer, down_inner): (u64, u64),
) -> (Counters, Counters) {
    (
        Counters {
            outer_bytes: up_outer - 1,
            inner_bytes: up_inner - 1,
            records: us.records,
            retransmissions: us.retransmitted,
            before_tag: us.before_tag,
        },
        Counters {
            outer_bytes: down_outer - 1,
            inner_bytes: down_inner - 1,
            records: ds.records,
            retransmissions: ds.retransmitted,
            before_tag: 0,
        },
    )
}

/// The TLS data path of one flow: working, or parked in its compact form ([`parked`]).
pub struct TlsFlow {
    state: State,
}

enum State {
    Live(Box<Live>),
    Parked(Box<Parked>),
    /// Only while the flow moves from one form to the other.
    Moving,
}

impl std::fmt::Debug for TlsFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.get() {
            Ok(l) => l.fmt(f),
            Err(p) => f.debug_struct("Parked").field("session", &p.session()).finish(),
        }
    }
}

impl TlsFlow {
    pub fn new(
        ends: Ends,
        client: Stream,
        server: Stream,
        hs: Handshake,
        server_window: u16,
        up: UpLimits,
        down: DownLimits,
    ) -> TlsFlow {
        TlsFlow { state: State::Live(Box::new(Live::new(ends, client, server, hs, server_window, up, down))) }
    }

    fn map_live(self, f: impl FnOnce(Live) -> Live) -> TlsFlow {
        match self.state {
            State::Live(l) => TlsFlow { state: State::Live(Box::new(f(*l))) },
            state => TlsFlow { state },
        }
    }

    /// The working state, or the parked one.
    fn get(&self) -> Result<&Live, &Parked> {
        match &self.state {
            State::Live(l) => Ok(l),
            State::Parked(p) => Err(p),
            State::Moving => unreachable!("a flow between its two forms"),
        }
    }

    /// Parks the flow once established and without a packet for `after` (`None`: never).
    pub fn with_park_after(self, after: Option<Duration>) -> TlsFlow {
        self.map_live(|l| l.with_park_after(after))
    }

    /// Sets when client plaintext reaches the server (before any client data).
    pub fn with_release(self, release: Release) -> TlsFlow {
        self.map_live(|l| l.with_release(release))
    }

    /// The working state, rebuilt first when parked. `Err`: the session could not be rebuilt;
    /// the flow keeps only what resets it.
    fn live(&mut self, wake: &Wake) -> Result<&mut Live, &mut Live> {
        if let State::Parked(_) = self.state {
            let State::Parked(p) = std::mem::replace(&mut self.state, State::Moving) else { unreachable!() };
            let live = match p.resume(wake) {
                Ok(l) | Err(l) => l,
            };
            self.state = State::Live(live);
        }
        let State::Live(l) = &mut self.state else { unreachable!("a flow between its two forms") };
        // Established once, keys gone: the parked session could not be rebuilt.
        if matches!(l.keys, Keys::Gone) && l.session.is_some() {
            return Err(l);
        }
        Ok(l)
    }

    pub fn is_established(&self) -> bool {
        match self.get() {
            Ok(l) => l.is_established(),
            Err(_) => true,
        }
    }

    pub fn session(&self) -> Option<&SessionInfo> {
        match self.get() {
            Ok(l) => l.session(),
            Err(p) => p.session(),
        }
    }

    /// The two pair tables' entries (client → server, server → client), for the connection table.
    pub fn pairs(&self) -> (Vec<Entry>, Vec<Entry>) {
        match self.get() {
            Ok(l) => (l.up.pairs().entries().copied().collect(), l.down.pairs().entries().copied().collect()),
            Err(p) => p.pairs(),
        }
    }

    /// Queue-state rows (client → server, server → client); none while parked.
    pub fn queue_rows(&self) -> (Vec<HeldSegment>, Vec<HeldSegment>) {
        match self.get() {
            Ok(l) => (l.up.queue_rows(), l.down.queue_rows()),
            Err(_) => (Vec::new(), Vec::new()),
        }
    }

    pub fn record_seqs(&self) -> Option<(u64, u64)> {
        match self.get() {
            Ok(l) => l.record_seqs(),
            Err(p) => Some(p.record_seqs()),
        }
    }

    /// The flow's next timer: the retransmission timeout, or when it is parked.
    pub fn deadline(&self) -> Option<Duration> {
        match self.get() {
            Ok(l) => l.deadline(),
            Err(_) => None,
        }
    }

    /// Whether the flow is parked: compact, or its AEAD contexts dropped until the next record.
    pub fn is_parked(&self) -> bool {
        match self.get() {
            Ok(l) => l.is_parked(),
            Err(_) => true,
        }
    }

    /// Whether the flow is parked in its compact form.
    pub fn is_compact(&self) -> bool {
        self.get().is_err()
    }

    pub fn mac_failed(&self) -> bool {
        match self.get() {
            Ok(l) => l.mac_failed(),
            Err(_) => false,
        }
    }

    pub fn counters(&self) -> (Counters, Counters) {
        match self.get() {
            Ok(l) => l.counters(),
            Err(p) => p.counters(),
        }
    }

    /// Bytes of state the flow holds beyond this handle, heap included (see
    /// [`Live::state_bytes`], [`Parked::state_bytes`]).
    pub fn state_bytes(&self) -> usize {
        match self.get() {
            Ok(l) => l.state_bytes(),
            Err(p) => p.state_bytes(),
        }
    }

    pub fn client_mss(&self) -> u16 {
        match self.get() {
            Ok(l) => l.client_mss(),
            Err(p) => p.client_mss(),
        }
    }

    pub fn server_mss(&self) -> u16 {
        match self.get() {
            Ok(l) => l.ends.server_mss,
            Err(p) => p.server_mss(),
        }
    }

    /// See [`Live::at_first_client_byte`]; never for an established flow.
    pub fn at_first_client_byte(&self, seg: &Segment, payload: &[u8]) -> bool {
        match self.get() {
            Ok(l) => l.at_first_client_byte(seg, payload),
            Err(_) => false,
        }
    }

    /// A client segment (not a SYN): see [`Live::client_packet`]. A parked flow wakes with
    /// what `wake` hands back.
    pub fn client_packet(
        &mut self,
        wake: &Wake,
        now: Duration,
        seg: &Segment,
        payload: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> Verdict {
        self.on_live(wake, out, |l, out| l.client_packet(now, seg, payload, out))
    }

    /// A server segment (not the SYN-ACK): see [`Live::server_packet`].
    pub fn server_packet(
        &mut self,
        wake: &Wake,
        now: Duration,
        seg: &Segment,
        payload: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> Verdict {
        self.on_live(wake, out, |l, out| l.server_packet(now, seg, payload, out))
    }

    /// Runs `f` on the working state (a parked flow woken first); a flow that cannot be woken
    /// is reset to both sides and closed.
    fn on_live(
        &mut self,
        wake: &Wake,
        out: &mut Vec<Vec<u8>>,
        f: impl FnOnce(&mut Live, &mut Vec<Vec<u8>>) -> Verdict,
    ) -> Verdict {
        match self.live(wake) {
            Ok(l) => f(l, out),
            Err(l) => {
                l.reset(out);
                Verdict::Closed
            }
        }
    }

    /// RST to both sides, as they stand.
    pub fn reset(&mut self, wake: &Wake, out: &mut Vec<Vec<u8>>) {
        match self.live(wake) {
            Ok(l) | Err(l) => l.reset(out),
        }
    }

    /// The flow's timers (a parked flow has none). An established flow idle for its
    /// `park_after` is parked: compact when quiet, else its AEAD contexts dropped (and compacted
    /// once quiet, at the next instant its deadline names). [`Verdict::Closed`] when a failed
    /// flow's linger ended (its RST is in `out`).
    pub fn timeout(&mut self, now: Duration, out: &mut Vec<Vec<u8>>) -> Verdict {
        let State::Live(l) = &mut self.state else { return Verdict::Continue };
        let was_parked = l.is_parked();
        let verdict = l.timeout(now, out);
        let compact = l.park_due(now) && l.is_quiet();
        if !compact && (was_parked || !l.is_parked()) {
            return verdict;
        }
        let State::Live(l) = std::mem::replace(&mut self.state, State::Moving) else { unreachable!() };
        // The compact form and what it allocates in the parked flows' own heap.
        self.state = match crate::parked_memory::parked(|| l.compact().map(Box::new)) {
            Ok(p) => State::Parked(p),
            // A new allocation, made among other parked flows' rather than in the memory the
            // handshake's short-lived allocations came from, which the allocator can then free.
            Err(l) => State::Live(Box::new(*l)),
        };
        verdict
    }
}

enum Keys {
    Handshake(Box<Handshake>),
    Records(Box<Session>),
    /// Only while the handshake is turned into the record layer.
    Gone,
}

/// What the session table shows of a flow's TLS session: rustls's codes (4 bytes each; their
/// names are static strings, [`SessionInfo::version_name`]), so the idle flow keeps no string
/// but the SNI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub version: Option<ProtocolVersion>,
    pub suite: Option<CipherSuite>,
    pub sni: Option<Box<str>>,
}

impl SessionInfo {
    /// What a finished handshake negotiated.
    pub fn of(hs: &Handshake) -> SessionInfo {
        SessionInfo {
            version: hs.protocol_version(),
            suite: hs.cipher_suite().map(|s| s.suite()),
            sni: hs.sni().map(Box::from),
        }
    }

    /// rustls's name of the version ("TLSv1_3").
    pub fn version_name(&self) -> &'static str {
        self.version.and_then(|v| v.as_str()).unwrap_or("unknown")
    }

    /// rustls's name of the suite ("TLS13_AES_128_GCM_SHA256").
    pub fn suite_name(&self) -> &'static str {
        self.suite.and_then(|s| s.as_str()).unwrap_or("unknown")
    }
}

/// Whether the flow goes on after a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    /// Reset (by a peer or the engine): remove the flow.
    Closed,
    /// The client's first bytes are not a TLS handshake record and nothing has been consumed:
    /// the engine forwards this segment and the rest of the flow unchanged.
    NotTls,
    /// The engine ended the flow ([`Live::fail`]): the server's connection reset, the fatal
    /// alert and a FIN sent to the client. The flow stays until the client's next data or FIN
    /// once it has both, or [`FAILED_LINGER`], each answered with RST ([`Verdict::Closed`]).
    Failed,
}

/// A flow the engine ended ([`Live::fail`]): what the client was sent and until when it waits.
/// Why not RST at once, as after any other end: a client that writes again before it reads
/// (a request right behind its bad record) would find its write refused by the RST and never
/// read the alert, which RFC 8446 §6.2 has it receive. A FIN keeps the client's socket
/// writable, as a TLS server closing its socket does.
struct Failed {
    /// The alert record at outer offset `at`, then the FIN: resent until the client
    /// acknowledges the FIN.
    alert: Vec<u8>,
    at: u64,
    /// The next resend and its backoff (`None` once acknowledged), and the linger's end.
    resend: Option<(Duration, u32)>,
    until: Duration,
    /// The client's highest ACK since (outer offset): where an RST is exact for it.
    acked: Option<u64>,
}

impl Failed {
    /// The outer offset past the FIN: the client's next expected byte once it has everything.
    fn end(&self) -> u64 {
        self.at + self.alert.len() as u64 + 1
    }
}

struct Live {
    ends: Ends,
    client: Stream,
    server: Stream,
    keys: Keys,
    up: Upstream,
    down: Downstream,
    /// Latest ACK for the server (inner offset of the server's stream), and for the client
    /// (outer offset of the client's stream), as last sent.
    ack_to_server: u64,
    ack_to_client: u64,
    /// Raw window fields last seen from each side, passed on in built packets.
    client_window: u16,
    server_window: u16,
    /// The window field of the last packet to the client (`None`: not known, after parking).
    window_told: Option<u16>,
    /// The engine's retransmission timer for its own bytes: deadline and backoff.
    rto: Option<(Duration, u32)>,
    /// Version, suite and SNI once established, for the session table.
    session: Option<SessionInfo>,
    /// The flow failed on a client record whose tag did not verify.
    mac_failed: bool,
    /// What rustls wrote to the client when the handshake failed (its fatal alert), sent by
    /// [`Live::fail`] before the RST.
    handshake_alert: Vec<u8>,
    /// When the last packet of either side arrived, and how long after it the flow is parked
    /// (`None`: never).
    last_packet: Duration,
    park_after: Option<Duration>,
    /// Set once the engine ended the flow (boxed: rare, and the live state's size counts).
    failed: Option<Box<Failed>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("ends", &self.ends).field("session", &self.session).finish()
    }
}

impl Live {
    pub fn new(
        ends: Ends,
        client: Stream,
        server: Stream,
        hs: Handshake,
        server_window: u16,
        up: UpLimits,
        down: DownLimits,
    ) -> Live {
        Live {
            ends,
            client,
            server,
            keys: Keys::Handshake(Box::new(hs)),
            up: Upstream::new(SeqMap::new(1, 1, PAIRS), up),
            down: Downstream::new(SeqMap::new(1, 1, PAIRS), down),
            ack_to_server: 0,
            ack_to_client: 1,
            client_window: 0,
            server_window,
            window_told: None,
            rto: None,
            session: None,
            mac_failed: false,
            handshake_alert: Vec::new(),
            last_packet: Duration::ZERO,
            park_after: None,
            failed: None,
        }
    }

    /// Parks the flow once established and without a packet for `after` (`None`: never).
    pub fn with_park_after(mut self, after: Option<Duration>) -> Live {
        self.park_after = after;
        self
    }

    /// Sets when client plaintext reaches the server (before any client data).
    pub fn with_release(mut self, release: Release) -> Live {
        self.up = self.up.with_release(release);
        self
    }

    pub fn is_established(&self) -> bool {
        matches!(self.keys, Keys::Records(_))
    }

    pub fn session(&self) -> Option<&SessionInfo> {
        self.session.as_ref()
    }

    pub fn record_seqs(&self) -> Option<(u64, u64)> {
        match &self.keys {
            Keys::Records(l) => Some(l.seqs()),
            _ => None,
        }
    }

    /// The flow's next timer: the retransmission timeout, or when it is parked (its contexts
    /// dropped, or compacted once quiet).
    pub fn deadline(&self) -> Option<Duration> {
        if let Some(f) = &self.failed {
            return Some(f.resend.map_or(f.until, |(d, _)| d.min(f.until)));
        }
        let park = match &self.keys {
            Keys::Records(s) if !s.parked() || self.is_quiet() => {
                self.park_after.map(|a| self.last_packet + a)
            }
            _ => None,
        };
        self.rto.map(|(d, _)| d).into_iter().chain(park).min()
    }

    /// Established and without a packet for `park_after`.
    fn park_due(&self, now: Duration) -> bool {
        self.park_after.is_some_and(|a| now >= self.last_packet + a)
            && self.is_established()
            && self.failed.is_none()
    }

    /// Whether the flow is parked (its AEAD contexts dropped until the next record).
    pub fn is_parked(&self) -> bool {
        matches!(&self.keys, Keys::Records(s) if s.parked())
    }

    /// Drops what an idle flow can rebuild: the session's AEAD contexts (the raw keys stay)
    /// and the queues' spare room. Nothing in flight is touched; the next packet works as
    /// before, rebuilding a context when a record needs it.
    pub fn park(&mut self) {
        self.keys = match std::mem::replace(&mut self.keys, Keys::Gone) {
            Keys::Records(s) => {
                let mut s = *s;
                s.park();
                // A new allocation: made among other parked flows' rather than in the memory
                // the handshake's short-lived allocations came from, which the allocator can
                // then free.
                Keys::Records(Box::new(s))
            }
            other => other,
        };
        self.up.park();
        self.down.park();
        self.handshake_alert = Vec::new();
    }

    /// Whether the flow failed on a client record whose tag did not verify.
    pub fn mac_failed(&self) -> bool {
        self.mac_failed
    }

    /// Counters for the connection table: (client → server, server → client). Plaintext bytes
    /// are those the record layer released or sealed; outer bytes those sent to the client
    /// (records, the engine's own included) or received from it in order.
    pub fn counters(&self) -> (Counters, Counters) {
        counters(self.up.stats(), self.down.stats(), self.up.pairs().end(), self.down.pairs().end())
    }

    /// Bytes of state the flow holds, heap included: the queues, the session (its keys,
    /// rustls's key schedule; the handshake's state before it, see
    /// [`HANDSHAKE_STATE_BYTES`]) and the session table's strings.
    pub fn state_bytes(&self) -> usize {
        let keys = match &self.keys {
            Keys::Records(s) => s.state_bytes(),
            Keys::Handshake(_) => HANDSHAKE_STATE_BYTES,
            Keys::Gone => 0,
        };
        let info = self.session.as_ref().and_then(|i| i.sni.as_ref()).map_or(0, |sni| sni.len());
        self.up.state_bytes()
            + self.down.state_bytes()
            + std::mem::size_of::<Live>()
            + keys
            + info
            + self.handshake_alert.capacity()
            + self.failed.as_ref().map_or(0, |f| std::mem::size_of::<Failed>() + f.alert.capacity())
    }

    fn tls(&mut self) -> Option<&mut Session> {
        match &mut self.keys {
            Keys::Records(l) => Some(l),
            _ => None,
        }
    }

    /// A client segment (not a SYN). The segment itself is consumed; what it means for each
    /// side is built anew.
    pub fn client_packet(
        &mut self,
        now: Duration,
        seg: &Segment,
        payload: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> Verdict {
        self.last_packet = now;
        if self.failed.is_some() {
            return self.client_after_failure(seg, payload, out);
        }
        if self.is_not_tls(seg, payload) {
            return Verdict::NotTls;
        }
        let same_window = self.client_window == seg.window;
        self.client_window = seg.window;
        match self.client_inner(now, seg, payload, same_window, out) {
            Ok(v) => v,
            Err(e) => self.fail(now, &e, out),
        }
    }

    /// The segment starts the client's stream (its ClientHello, as a TLS client writes it) and
    /// the engine has consumed and sent nothing yet: the flow could still go another way.
    pub fn at_first_client_byte(&self, seg: &Segment, payload: &[u8]) -> bool {
        matches!(self.keys, Keys::Handshake(_))
            && self.up.next() == 1
            && self.down.outer_end() == 1
            && self.client.offset(seg.seq, 1) == Some(1)
            && !payload.is_empty()
    }

    /// The first client byte of the stream, before the engine consumed or sent anything, is
    /// not a handshake record's content type (22).
    fn is_not_tls(&self, seg: &Segment, payload: &[u8]) -> bool {
        matches!(self.keys, Keys::Handshake(_))
            && self.up.next() == 1
            && self.down.outer_end() == 1
            && self.client.offset(seg.seq, 1) == Some(1)
            && payload.first().is_some_and(|&b| b != 22)
    }

    fn client_inner(
        &mut self,
        now: Duration,
        seg: &Segment,
        payload: &[u8],
        same_window: bool,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<Verdict, FlowError> {
        let mut sends = Vec::new();
        let mut ups = Vec::new();
        if seg.rst {
            self.send_server(Control::Rst, &[], out);
            return Ok(Verdict::Closed);
        }
        // The client's ACK of the records (and the engine's bytes) it received.
        if let Some(a) = seg.ack {
            if let Some(off) = self.server.offset(a, self.down.outer_acked()) {
                let window = (seg.window as u64) << self.ends.client_wscale;
                let layer = match &mut self.keys {
                    Keys::Records(l) => Some(&mut **l),
                    _ => None,
                };
                let before = self.down.outer_acked();
                if let Some(inner) = self.down.client_ack(layer, off, window, &mut sends)? {
                    if !self.down.has_unacked() {
                        self.rto = None;
                    } else if off > before && self.is_established() {
                        // The client is taking records: the timer starts over, without backoff.
                        self.rto = Some((now + RTO, 0));
                    }
                    // Never inside a range the server was told the engine holds (SACK).
                    self.ack_to_server = self.ack_to_server.max(self.down.clear_of_sacked(inner));
                }
                // A duplicate ACK (RFC 5681: no data, same ACK and window, data outstanding).
                if off == before && payload.is_empty() && !seg.fin && same_window && self.is_established() {
                    self.down.client_dup_ack(&mut sends);
                }
            }
        }
        // A window probe or keep-alive (no data, below what the engine acknowledged: RFC 9293
        // section 3.8.6.1, Linux sends it at SND.UNA - 1) is passed on as one to the server,
        // whose answer carries its current window: a lost window update is repaired only so.
        if payload.is_empty()
            && !seg.fin
            && self.is_probe(self.client.offset(seg.seq, self.up.next()), self.ack_to_client)
        {
            let at = self.up.inner_acked().max(1) - 1;
            self.forward_control(at, Control::None, &[], out);
        }
        // The engine passes every bare ACK from the client on to the server, duplicates
        // included: the server's retransmission and window logic relies on them. (The packet
        // driver may leave out one that a later ACK in the same send batch supersedes.)
        let mut ack_server = payload.is_empty() && !seg.fin && seg.ack.is_some();
        // Data exactly at the next byte expected (not a resend, not beyond a gap), and whether
        // bytes beyond a gap were held before it (it fills the gap, or part of it).
        let mut in_order = false;
        let gap_before = self.up.holds_beyond_gap();
        if !payload.is_empty() {
            if let Some(off) = self.client.offset(seg.seq, self.up.next()) {
                in_order = off == self.up.next();
                self.client_data(now, off, payload, &mut ups, &mut sends)?;
            }
        }
        // Contiguous forwards (a segment's records) leave as one run of packets.
        let mut run: Vec<Piece> = Vec::new();
        let (mut run_at, mut run_end) = (0, 0);
        let mut closed = false;
        for u in ups {
            match u {
                Up::Forward { inner, data } => {
                    ack_server = false;
                    if run.is_empty() || inner != run_end {
                        self.forward(run_at, &run, out);
                        run.clear();
                        run_at = inner;
                    }
                    run_end = inner + data.len() as u64;
                    run.push(data);
                }
                // The session's answer (our KeyUpdate, a no_renegotiation warning).
                Up::Control { reply } if !reply.is_empty() => {
                    self.down.inject(reply, &mut sends)?;
                    self.rto.get_or_insert((now + RTO, 0));
                }
                // Records needing no answer: consumed.
                Up::Control { .. } => {}
                Up::Closed => closed = true,
            }
        }
        self.forward(run_at, &run, out);
        if ack_server {
            self.send_server(Control::None, &[], out);
        }
        if !sends.is_empty() && self.is_established() {
            self.rto.get_or_insert((now + RTO, 0));
        }
        // RFC 5681 section 4.2: a segment out of order, or filling a gap, is acknowledged at once
        // — once the ACK covers every byte taken in order. Below that, the duplicate ACK could
        // not carry SACK blocks (`Upstream::sack_blocks`); the server's ACK of the plaintext
        // brings the ACK there, and it goes out then with the blocks.
        let ack = self.ack_to_client.max(self.up.client_ack());
        let at_once = (!in_order || gap_before) && self.up.acks_all_taken(ack);
        let tell = !payload.is_empty() && (at_once || self.ack_tells_client());
        self.emit_to_client(&sends, tell, out);
        // The client's close_notify ends its stream as its FIN would: the server gets a FIN
        // after the plaintext, as terminate's backend gets EOF. A client that waits for the
        // server's close_notify before it closes TCP (a bidirectional TLS shutdown) would
        // otherwise wait, and the server for more request, until a timeout.
        let mut fin_to_server = if closed { self.up.fin(self.up.next(), false) } else { None };
        if seg.fin {
            // The FIN follows the segment's payload; it goes on once every byte before it did
            // (again, for a FIN the client sends again: the first may have been lost, or this
            // one follows a close_notify whose FIN went already, and the server's ACK of it
            // then acknowledges the client's FIN).
            let at = self.client.offset(seg.seq + payload.len() as u32, self.up.next());
            fin_to_server = at.and_then(|o| self.up.fin(o, true));
        }
        if let Some(inner) = fin_to_server {
            self.forward_control(inner, Control::Fin, &[], out);
        }
        Ok(Verdict::Continue)
    }

    fn client_data(
        &mut self,
        now: Duration,
        off: u64,
        payload: &[u8],
        ups: &mut Vec<Up>,
        sends: &mut Vec<Send>,
    ) -> Result<(), FlowError> {
        match &mut self.keys {
            Keys::Records(layer) => self.up.segment(layer, off, payload, ups)?,
            Keys::Gone => {}
            Keys::Handshake(hs) => {
                let mut to_client = Vec::new();
                let progress = match self.up.handshake_segment(hs, off, payload, &mut to_client) {
                    Ok(p) => p,
                    Err(e) => {
                        // The alert rustls chose goes out with the RST (RFC 8446 §6.2).
                        self.handshake_alert = to_client;
                        return Err(e.into());
                    }
                };
                if !to_client.is_empty() {
                    self.down.inject(to_client, sends)?;
                    self.rto.get_or_insert((now + RTO, 0));
                }
                if progress == Progress::Complete {
                    self.establish(ups, sends)?;
                }
            }
        }
        Ok(())
    }

    /// The handshake completed: keys from rustls, held client bytes through the record layer,
    /// held server bytes sealed.
    fn establish(&mut self, ups: &mut Vec<Up>, sends: &mut Vec<Send>) -> Result<(), FlowError> {
        let Keys::Handshake(hs) = &self.keys else { return Ok(()) };
        let info = SessionInfo::of(hs);
        let Keys::Handshake(hs) = std::mem::replace(&mut self.keys, Keys::Gone) else { return Ok(()) };
        let (secrets, kernel) = hs.into_keys().map_err(UpError::from)?;
        let mut session = Box::new(Session::from_keys(secrets, kernel).map_err(DownError::from)?);
        self.up.drain(&mut session, ups)?;
        self.down.flush(Some(&mut session), sends)?;
        self.keys = Keys::Records(session);
        self.session = Some(info);
        Ok(())
    }

    /// A server segment (not the SYN-ACK).
    pub fn server_packet(
        &mut self,
        now: Duration,
        seg: &Segment,
        payload: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> Verdict {
        self.last_packet = now;
        if self.failed.is_some() {
            // The server's connection was reset: whatever it still had in flight is dropped
            // (plaintext never goes toward the client).
            return Verdict::Continue;
        }
        self.server_window = seg.window;
        match self.server_inner(now, seg, payload, out) {
            Ok(v) => v,
            Err(e) => self.fail(now, &e, out),
        }
    }

    fn server_inner(
        &mut self,
        now: Duration,
        seg: &Segment,
        payload: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<Verdict, FlowError> {
        if seg.rst {
            self.send_client(Control::Rst, self.down.outer_next(), &[], out);
            return Ok(Verdict::Closed);
        }
        let mut acked = false;
        if let Some(a) = seg.ack {
            if let Some(inner) = self.client.offset(a, self.up.inner_acked()) {
                // The ACK the engine gives the client moves with the server's, or past it
                // over a record in progress (`Upstream::client_ack`).
                if self.up.server_ack(inner).is_some() {
                    acked = self.up.client_ack() > self.ack_to_client;
                }
            }
        }
        let mut sends = Vec::new();
        let mut beyond_gap = false;
        if !payload.is_empty() {
            if let Some(off) = self.server.offset(seg.seq, self.down.next_inner()) {
                beyond_gap = off > self.down.next_inner();
                let layer = match &mut self.keys {
                    Keys::Records(l) => Some(&mut **l),
                    _ => None,
                };
                self.down.server_segment(layer, off, payload, &mut sends)?;
            }
        }
        let mut fin_at = None;
        if seg.fin {
            if let Some(inner) = self.server.offset(seg.seq + payload.len() as u32, self.down.next_inner()) {
                // close_notify before the FIN (RFC 8446 §6.1), once, when the keys exist.
                if self.down.fin_ready(inner) {
                    if let Some(s) = self.tls() {
                        let mut rec = Vec::new();
                        s.close(&mut rec).map_err(DownError::from)?;
                        self.down.inject(rec, &mut sends)?;
                        self.rto.get_or_insert((now + RTO, 0));
                    }
                }
                fin_at = self.down.fin(inner);
            }
        }
        // Server data the client already has (an old retransmission) produces nothing to send:
        // the server must still hear the ACK, or it retransmits forever. Data beyond a gap is
        // acknowledged at once (RFC 5681 section 4.2) once the ACK covers every server byte
        // taken in order; below that the duplicate ACK could carry no SACK blocks
        // (`Downstream::sack_blocks`), and the client's ACK that brings it there goes on to the
        // server with them.
        let ack_at_once = !beyond_gap || self.down.acks_all_taken(self.ack_to_server.max(1));
        if !payload.is_empty() && sends.is_empty() && ack_at_once {
            self.send_server(Control::None, &[], out);
        }
        // The server probes the window (or keeps alive), or retransmits data the engine holds
        // for the client's window: the client is probed in turn, and its answer (a bare ACK,
        // passed on to the server) brings its current window to both, should its last window
        // update have been lost.
        let probe = payload.is_empty()
            && !seg.fin
            && self.is_probe(self.server.offset(seg.seq, self.down.next_inner()), self.ack_to_server);
        if sends.is_empty() && (probe || (!payload.is_empty() && self.down.waiting_for_window())) {
            self.send_client(Control::None, self.down.outer_acked().max(1) - 1, &[], out);
        }
        if !sends.is_empty() && self.is_established() {
            // Records toward the client: the engine's timer resends the oldest should the
            // client's ACKs stop (a loss the server cannot see, or would repair only slowly).
            self.rto.get_or_insert((now + RTO, 0));
        }
        self.emit_to_client(&sends, acked, out);
        if let Some(outer) = fin_at {
            self.send_client(Control::Fin, outer, &[], out);
        }
        Ok(Verdict::Continue)
    }

    /// A segment without data at `offset` of its sender's stream is a window probe or a
    /// keep-alive when it lies below what the engine has acknowledged to that sender (an ACK
    /// carries SND.NXT, which never is).
    fn is_probe(&self, offset: Option<u64>, acked: u64) -> bool {
        offset.is_some_and(|o| o < acked)
    }

    /// The engine's timer: resend its own unacknowledged bytes with backoff; a failed flow's
    /// alert and FIN likewise, and its RST at the linger's end ([`Verdict::Closed`]).
    pub fn timeout(&mut self, now: Duration, out: &mut Vec<Vec<u8>>) -> Verdict {
        if self.failed.is_some() {
            return self.failed_timeout(now, out);
        }
        self.live_timeout(now, out);
        Verdict::Continue
    }

    fn live_timeout(&mut self, now: Duration, out: &mut Vec<Vec<u8>>) {
        let due = self.park_after.is_some_and(|a| now >= self.last_packet + a);
        if due && self.is_established() && !self.is_parked() {
            self.park();
        }
        let Some((deadline, backoff)) = self.rto else { return };
        if now < deadline {
            return;
        }
        if !self.down.has_unacked() {
            self.rto = None;
            return;
        }
        let mut sends = Vec::new();
        if self.is_established() {
            // Records the client has not taken for a whole timeout: the oldest goes again, and
            // the client's ACKs of it bring the next ones (Downstream's repair).
            self.down.resend_oldest(&mut sends);
        } else {
            // The handshake flight, whole.
            self.down.resend_unacked(&mut sends);
        }
        self.emit_to_client(&sends, false, out);
        let next = (backoff + 1).min(MAX_BACKOFF);
        self.rto = Some((now + RTO * (1 << next), next));
    }

    /// RST to both sides, as they stand: the flow is being dropped (its processing failed).
    pub fn reset(&mut self, out: &mut Vec<Vec<u8>>) {
        self.send_server(Control::Rst, &[], out);
        let at = self.down.outer_next();
        self.send_client(Control::Rst, at, &[], out);
    }

    /// A fatal error: RST to the server, and to the client the fatal alert the session chose
    /// (bad_record_mac for a failed tag, unexpected_message, record_overflow…) with a FIN; the
    /// flow then waits as [`Failed`] says. Without an alert to send, RST to the client too.
    fn fail(&mut self, now: Duration, e: &FlowError, out: &mut Vec<Vec<u8>>) -> Verdict {
        self.send_server(Control::Rst, &[], out);
        let bad_mac = matches!(e, FlowError::Up(UpError::Session(f)) if f.reason == Reason::BadRecordMac);
        self.mac_failed |= bad_mac;
        let at = self.down.outer_end();
        let mut alert = std::mem::take(&mut self.handshake_alert);
        // After the server's FIN the client's stream has ended: no alert can follow it.
        if self.down.fin_sent()
            || (alert.is_empty() && self.tls().and_then(|s| s.send_alert(&mut alert)).is_none())
        {
            self.send_client(Control::Rst, self.down.outer_next(), &[], out);
            return Verdict::Closed;
        }
        self.send_client(Control::Fin, at, &alert, out);
        self.rto = None;
        let resend = Some((now + RTO, 0));
        self.failed = Some(Box::new(Failed { alert, at, resend, until: now + FAILED_LINGER, acked: None }));
        Verdict::Failed
    }

    /// A client segment once the flow failed: ACKs are taken in (the server's connection is
    /// gone). Data or a FIN, once the client's ACK shows it has the alert and the FIN, gets RST
    /// there and ends the flow; before that it is dropped too (the client sent it before they
    /// reached it, and resends it), so the RST can never reach the client ahead of the alert.
    /// The client's RST ends the flow.
    fn client_after_failure(&mut self, seg: &Segment, payload: &[u8], out: &mut Vec<Vec<u8>>) -> Verdict {
        if seg.rst {
            return Verdict::Closed;
        }
        let f = self.failed.as_mut().expect("called for a failed flow");
        let end = f.end();
        if let Some(o) = seg.ack.and_then(|a| self.server.offset(a, end)).filter(|&o| o <= end) {
            f.acked = Some(f.acked.map_or(o, |a| a.max(o)));
        }
        let has_all = f.acked == Some(end);
        if has_all {
            f.resend = None;
        }
        if !has_all || (payload.is_empty() && !seg.fin) {
            return Verdict::Continue;
        }
        self.send_client(Control::Rst, end, &[], out);
        Verdict::Closed
    }

    /// A failed flow's timer: the alert and FIN again while unacknowledged (with backoff),
    /// and at the linger's end RST to the client.
    fn failed_timeout(&mut self, now: Duration, out: &mut Vec<Vec<u8>>) -> Verdict {
        let mut f = self.failed.take().expect("called for a failed flow");
        let verdict = if now >= f.until {
            self.send_client(Control::Rst, f.acked.unwrap_or(f.end()), &[], out);
            Verdict::Closed
        } else {
            if let Some((_, backoff)) = f.resend.filter(|&(d, _)| now >= d) {
                self.send_client(Control::Fin, f.at, &f.alert, out);
                let next = (backoff + 1).min(MAX_BACKOFF);
                f.resend = Some((now + RTO * (1 << next), next));
            }
            Verdict::Continue
        };
        self.failed = Some(f);
        verdict
    }

    /// Plaintext for the server at inner offset `inner`, cut to the server's MSS (a record
    /// carries up to 16 KiB), or with segmentation offload into packets the link cuts so.
    fn forward(&mut self, inner: u64, pieces: &[Piece], out: &mut Vec<Vec<u8>>) {
        if pieces.is_empty() {
            return;
        }
        // SACK blocks take room from the payload: a full segment must still fit the server's MTU.
        let blocks = if self.ends.server_sack {
            self.down.sack_count(self.ack_to_server.max(1), MAX_SACK_BLOCKS)
        } else {
            0
        };
        let mss = (self.ends.server_mss as usize).saturating_sub(sack_option_len(blocks)).max(1);
        // With segmentation offload, as toward the client: one packet of whole segments (the
        // IP packet within its 16-bit length) that the link cuts at the server's MSS, instead of
        // a packet built, checksummed and merged again by the ring per segment.
        let step = if self.ends.gso { mss * ((usize::from(u16::MAX) - 100) / mss).max(1) } else { mss };
        let sack = self.server_sack(Control::Psh);
        let ack = Some(self.server.seq(self.ack_to_server.max(1)));
        let window = self.window_to_server();
        let mut sent = 0;
        for chunk in packet::chunks(pieces.iter().map(|p| &p[..]), step) {
            let b = Build {
                src: self.ends.client,
                dst: self.ends.backend,
                seq: self.client.seq(inner + sent as u64),
                ack,
                control: Control::Psh,
                window,
                payload: &[],
            };
            sent += chunk.iter().map(|c| c.len()).sum::<usize>();
            out.extend(b.emit_parts(&chunk, &sack, self.ends.checksum));
        }
    }

    /// The window field for the server: the client's, but never beyond what the engine can hold
    /// — past the next byte to seal, the hold bound (`Downstream::server_room`); in flight, the
    /// record store (`Downstream::max_in_flight`) — in the client's scale, which the server applies.
    fn window_to_server(&self) -> u16 {
        let room = self.down.server_room(self.ack_to_server.max(1)).min(self.down.max_in_flight());
        self.client_window.min(u16::try_from(room >> self.ends.client_wscale).unwrap_or(u16::MAX))
    }

    /// SACK blocks for a segment to the server: the server bytes held beyond a gap, as sequence
    /// numbers of the server's stream.
    fn server_sack(&mut self, control: Control) -> Vec<(Seq, Seq)> {
        if !self.ends.server_sack || control == Control::Rst {
            return Vec::new();
        }
        let blocks = self.down.sack_blocks(self.ack_to_server.max(1), MAX_SACK_BLOCKS);
        blocks.into_iter().map(|(l, r)| (self.server.seq(l), self.server.seq(r))).collect()
    }

    /// A segment to the server with no data (ACK, RST) at the server's next expected number.
    fn send_server(&mut self, control: Control, data: &[u8], out: &mut Vec<Vec<u8>>) {
        let inner = self.up.inner_next();
        self.forward_control(inner, control, data, out);
    }

    fn forward_control(&mut self, inner: u64, control: Control, data: &[u8], out: &mut Vec<Vec<u8>>) {
        let b = Build {
            src: self.ends.client,
            dst: self.ends.backend,
            seq: self.client.seq(inner),
            ack: (control != Control::Rst).then(|| self.server.seq(self.ack_to_server.max(1))),
            control,
            window: self.window_to_server(),
            payload: data,
        };
        let sack = self.server_sack(control);
        out.extend(b.emit_checksummed(&sack, self.ends.checksum));
    }

    /// Whether an ACK to the client now would tell it anything: a further acknowledgment, SACK
    /// blocks, or another window than the last packet carried. Client data taken in order moves
    /// the ACK only when its record or the server's ACK does (the server acknowledges the
    /// plaintext later, and that ACK goes on to the client); an ACK for each such segment,
    /// repeating the last one, was a duplicate ACK per segment: four of five packets an upload
    /// sent the client. Segments out of order, resent or filling a gap are acknowledged whatever
    /// this says (the caller).
    fn ack_tells_client(&self) -> bool {
        let ack = self.ack_to_client.max(self.up.client_ack());
        ack > self.ack_to_client
            || (self.ends.client_sack && self.up.sack_count(ack, 1) > 0)
            || self.window_told != Some(self.window_to_client())
    }

    /// Records for the client, cut to its MSS, each carrying the current ACK; or a bare ACK
    /// when nothing is to be sent but `ack_anyway` (the client's bytes were acknowledged, or
    /// consumed and the ACK tells it something).
    fn emit_to_client(&mut self, sends: &[Send], ack_anyway: bool, out: &mut Vec<Vec<u8>>) {
        self.ack_to_client = self.ack_to_client.max(self.up.client_ack());
        // SACK blocks take room from the payload: a full segment must still fit the client's MTU.
        let blocks =
            if self.ends.client_sack { self.up.sack_count(self.ack_to_client, MAX_SACK_BLOCKS) } else { 0 };
        let mss = (self.ends.client_mss as usize).saturating_sub(sack_option_len(blocks)).max(1);
        if self.ends.gso {
            // The IP packet within its 16-bit length (room for the largest headers: IPv6, TCP,
            // three SACK blocks); a whole number of segments except in a run's last packet.
            let most = usize::from(u16::MAX) - 100;
            let piece = mss * (most / mss).max(1);
            self.emit_joined(sends, piece, most, out);
        } else {
            for s in sends {
                for (i, chunk) in s.data.chunks(mss).enumerate() {
                    self.send_client(Control::Psh, s.outer + (i * mss) as u64, chunk, out);
                }
            }
        }
        if sends.is_empty() && ack_anyway {
            self.send_client(Control::None, self.down.outer_next(), &[], out);
        }
    }

    /// With segmentation offload: the records of each run of `sends` contiguous in the client's
    /// stream as packets of `piece` bytes (a whole number of segments), a packet spanning records
    /// where they meet: as many packets as 64 KiB GSO frames, not one per record. A run's rest
    /// joins its last packet when both fit in `most` bytes: a server GSO frame's 45 segments of
    /// plaintext come out as records a few dozen bytes longer (their headers and tags), which
    /// would otherwise leave as a second packet of their own (a message, an skb and a wakeup of
    /// the client each) for the same segments on the wire (the short one last, either way).
    fn emit_joined(&mut self, sends: &[Send], piece: usize, most: usize, out: &mut Vec<Vec<u8>>) {
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut k = 0;
        while k < sends.len() {
            // The run: sends[k..end], each starting where the one before ended.
            let mut end = k + 1;
            let mut left = sends[k].data.len();
            while end < sends.len()
                && sends[end].outer == sends[end - 1].outer + sends[end - 1].data.len() as u64
            {
                left += sends[end].data.len();
                end += 1;
            }
            // The packet being gathered starts at `at`, holds `len` bytes in `parts` and is
            // `size` bytes long; `left` bytes of the run are not sent yet.
            let mut at = sends[k].outer;
            let mut len = 0;
            let mut size = packet_len(left, piece, most);
            for send in &sends[k..end] {
                let mut data = &send.data[..];
                while !data.is_empty() {
                    let take = (size - len).min(data.len());
                    parts.push(&data[..take]);
                    len += take;
                    data = &data[take..];
                    if len == size {
                        self.send_parts(at, &parts, out);
                        at += size as u64;
                        left -= size;
                        parts.clear();
                        len = 0;
                        size = packet_len(left, piece, most);
                    }
                }
            }
            debug_assert!(len == 0 && left == 0, "a run's bytes all sent");
            k = end;
        }
    }

    /// One data segment to the client from bytes in several buffers (see [`Build::emit_parts`]).
    fn send_parts(&mut self, outer: u64, parts: &[&[u8]], out: &mut Vec<Vec<u8>>) {
        let b = Build {
            src: self.ends.service,
            dst: self.ends.client,
            seq: self.server.seq(outer),
            ack: Some(self.client.seq(self.ack_to_client)),
            control: Control::Psh,
            window: self.window_to_client(),
            payload: &[],
        };
        self.window_told = Some(b.window);
        let sack = self.sack_to_client();
        out.extend(b.emit_parts(parts, &sack, self.ends.checksum));
    }

    /// The window field for the client: the server's, but never beyond what the engine can take
    /// from the client — past the next byte it expects, the hold bound
    /// (`Upstream::client_room`); in flight, the store of plaintext the server has not
    /// acknowledged (`Upstream::max_in_flight`) — in the server's scale, which the client
    /// applies. With the server's window alone (megabytes, autotuned) a bulk upload sent more
    /// than the engine takes: every segment past the store was dropped and resent (5–7 % of an
    /// upload's segments on veths, at a seventh of a plain TCP upload's rate or less).
    fn window_to_client(&self) -> u16 {
        let room = self.up.client_room(self.ack_to_client).min(self.up.max_in_flight());
        self.server_window.min(u16::try_from(room >> self.ends.server_wscale).unwrap_or(u16::MAX))
    }

    /// The SACK blocks segments to the client carry (none when it did not offer SACK).
    fn sack_to_client(&mut self) -> Vec<(Seq, Seq)> {
        if !self.ends.client_sack {
            return Vec::new();
        }
        let blocks = self.up.sack_blocks(self.ack_to_client, MAX_SACK_BLOCKS);
        blocks.into_iter().map(|(l, r)| (self.client.seq(l), self.client.seq(r))).collect()
    }

    /// The client's own MSS: the most payload a segment to it carries, TCP options included.
    pub fn client_mss(&self) -> u16 {
        self.ends.client_mss
    }

    fn send_client(&mut self, control: Control, outer: u64, data: &[u8], out: &mut Vec<Vec<u8>>) {
        let b = Build {
            src: self.ends.service,
            dst: self.ends.client,
            seq: self.server.seq(outer),
            ack: (control != Control::Rst).then(|| self.client.seq(self.ack_to_client)),
            control,
            window: self.window_to_client(),
            payload: data,
        };
        if control != Control::Rst {
            self.window_told = Some(b.window);
        }
        let sack = if control != Control::Rst { self.sack_to_client() } else { Vec::new() };
        out.extend(b.emit_checksummed(&sack, self.ends.checksum));
    }
}

/// The length of the next packet of a run with `left` bytes unsent: all of them when they fit
/// in `most`, else `piece` (a whole number of segments, so a run's packets cut into full
/// segments but for the last).
fn packet_len(left: usize, piece: usize, most: usize) -> usize {
    if left <= most {
        left
    } else {
        piece
    }
}

#[cfg(test)]
mod tests {
    use super::packet_len;

    /// A run's packets as `emit_joined` cuts them.
    fn cut(mut left: usize, mss: usize) -> Vec<usize> {
        let most = usize::from(u16::MAX) - 100;
        let piece = mss * (most / mss);
        let mut sizes = Vec::new();
        while left > 0 {
            let size = packet_len(left, piece, most);
            sizes.push(size);
            left -= size;
        }
        sizes
    }

    #[test]
    fn a_server_frames_records_leave_as_one_packet_and_longer_runs_in_whole_segments_but_the_last() {
        // 45 segments of 1448 bytes of plaintext, sealed as three 16 KiB records and the rest,
        // each 22 bytes longer (TLS 1.3 header, content type, tag): one packet, not two.
        assert_eq!(cut(45 * 1448 + 4 * 22, 1448), [45 * 1448 + 88]);
        // Two frames' worth: a packet of whole segments, then the rest.
        assert_eq!(cut(2 * (45 * 1448 + 88), 1448), [45 * 1448, 45 * 1448 + 176]);
        // A rest too long to join: it leaves on its own.
        assert_eq!(cut(46 * 1448, 1448), [45 * 1448, 1448]);
        assert_eq!(cut(100, 1448), [100]);
        assert_eq!(cut(0, 1448), Vec::<usize>::new());
    }
}

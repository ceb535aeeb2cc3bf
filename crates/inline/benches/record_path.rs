//! The inline engine's record path alone, on one core: server segments sealed into one record
//! each through `Downstream` (stored until the client's ACK, as the engine does), and client
//! records opened through `Upstream` (framer, open, plaintext released and freed on the
//! server's ACK), for each TLS 1.3 AEAD. No packets, no TCP: the cost per byte of the path.
//! `bench/inline.sh` runs it pinned beside `openssl speed -evp`; docs/benchmarks.md explains.
//!
//! `record_path [--seconds S] [--cipher NAME]` prints one line per suite and size (MB = 10^6
//! plaintext bytes): `cipher=aes-128-gcm bytes=1460 seal_mb_s=… open_mb_s=… cut_open_mb_s=…
//! aead_mb_s=…`, where `open` is buffered release (whole records), `cut_open` cut-through
//! release (records opened piece by piece), `aead` the record layer's bare seal
//! (`RecordKey::seal`, no engine) and `raw` aws-lc's own AEAD seal in place (a fresh nonce, 13
//! bytes of AAD and the tag per buffer of the size plus TLS 1.3's content type byte: what
//! `openssl speed -evp -aead` does), taking turns with the others: on a loaded machine
//! `seal / raw` is the same-run form of the engine-seal-to-openssl ratio.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, SupportedCipherSuite};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tlsgate_inline::downstream::{DownLimits, Downstream};
use tlsgate_inline::handshake::Handshake;
use tlsgate_inline::seq_map::SeqMap;
use tlsgate_inline::tables::Release;
use tlsgate_inline::upstream::{Up, UpLimits, Upstream};
use tlsgate_record::crypto::{RecordKey, Suite, Version};
use tlsgate_record::frame::{ContentType, MAX_CIPHERTEXT_TLS12};
use tlsgate_record::session::Session;

/// The shipped binary's allocator: the path allocates a buffer per record.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The engine's default per-flow bounds (engine.rs).
const DOWN: DownLimits = DownLimits { hold_bytes: 256 * 1024, hold_segments: 256, unacked_bytes: 1 << 20 };
const UP: UpLimits = UpLimits {
    hold_bytes: 256 * 1024,
    hold_segments: 256,
    unacked_bytes: 1 << 20,
    record_limit: MAX_CIPHERTEXT_TLS12 - 5,
};
/// Client records reach the engine in segments of this size (a 1500-byte MTU).
const SEGMENT: usize = 1460;
/// Work between clock reads and ACKs: well under the 1 MiB unacknowledged bound.
const BATCH_BYTES: usize = 512 * 1024;

/// The four measurements take turns in slices this long, so that a machine whose load changes
/// slows them alike and their ratios hold (the figures alone do not).
const SLICE: Duration = Duration::from_millis(50);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` adds `--bench`; only `--seconds` and `--cipher` mean anything here.
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let seconds = arg("--seconds").map_or(3.0, |s| s.parse::<f64>().expect("--seconds takes a number"));
    let only = arg("--cipher");
    let period = Duration::from_secs_f64(seconds);
    // Not measured: the first measurement in a process otherwise runs slower (glibc's malloc
    // hands freed batches back to the kernel until a large free raises its thresholds), which
    // penalised whichever cipher came first.
    let (mut layer, mut client) = keys(TLS13[0]);
    Open::new(16384, Release::Buffered).run(&mut layer, &mut client, Duration::from_millis(300));
    Seal::new(1460).run(&mut layer, Duration::from_millis(300));
    for (name, suite, aead) in [
        ("aes-128-gcm", TLS13[0], Suite::Aes128Gcm),
        ("aes-256-gcm", TLS13[1], Suite::Aes256Gcm),
        ("chacha20-poly1305", TLS13[2], Suite::Chacha20Poly1305),
    ] {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        for size in [1460, 16384] {
            let (mut layer, mut client) = keys(suite);
            let (mut seal, mut bare, mut raw) =
                (Seal::new(size), Bare::new(size, aead), Raw::new(size, aead));
            let (mut whole, mut cut) =
                (Open::new(size, Release::Buffered), Open::new(size, Release::CutThrough));
            let mut spent = Duration::ZERO;
            while spent < period {
                seal.run(&mut layer, SLICE);
                whole.run(&mut layer, &mut client, SLICE);
                cut.run(&mut layer, &mut client, SLICE);
                bare.run(SLICE);
                raw.run(SLICE);
                spent += SLICE;
            }
            println!(
                "cipher={name} bytes={size} seal_mb_s={:.0} open_mb_s={:.0} cut_open_mb_s={:.0} aead_mb_s={:.0} raw_mb_s={:.0}",
                seal.mb_s(),
                whole.mb_s(),
                cut.mb_s(),
                bare.mb_s(),
                raw.mb_s()
            );
        }
    }
}

/// A handshake between a rustls client and the engine's `Handshake`: the engine's record layer,
/// and the client's sending key (to make client records at will).
fn keys(suite: SupportedCipherSuite) -> (Session, RecordKey) {
    let (server_cfg, client_cfg) = configs(suite);
    let mut client_cfg = (*client_cfg).clone();
    client_cfg.enable_secret_extraction = true;
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = ClientConnection::new(Arc::new(client_cfg), name).unwrap();
    let mut hs = Handshake::new(server_cfg).unwrap();
    let mut records = Records::new();
    while !hs.is_complete() || client.is_handshaking() {
        let mut to_client = Vec::new();
        for (h, body) in records.push(&client_output(&mut client)) {
            hs.record(&whole(&h, &body), &mut to_client).unwrap();
        }
        client.read_tls(&mut &to_client[..]).unwrap();
        client.process_new_packets().unwrap();
    }
    let (secrets, kernel) = hs.into_keys().unwrap();
    let layer = Session::from_keys(secrets, kernel).unwrap();
    let (seq, secret) = client.dangerous_extract_secrets().unwrap().tx;
    (layer, RecordKey::new(Version::Tls13, seq, secret).unwrap())
}

/// Server segments of `size` bytes through `Downstream`, each sealed into one record and
/// stored; the client acknowledges every second record, a batch (512 KiB) behind. Plaintext MB/s.
struct Seal {
    down: Downstream,
    data: Vec<u8>,
    inner: u64,
    /// The outer end after each record not yet acknowledged.
    ends: VecDeque<u64>,
    segments: u64,
    timed: Duration,
}

impl Seal {
    fn new(size: usize) -> Seal {
        let mut down = Downstream::new(SeqMap::new(1, 1, 4096), DOWN);
        down.client_ack(None, 1, WINDOW, &mut Vec::new()).unwrap();
        Seal {
            down,
            data: vec![0x5a; size],
            inner: 1,
            ends: VecDeque::new(),
            segments: 0,
            timed: Duration::ZERO,
        }
    }

    fn run(&mut self, layer: &mut Session, period: Duration) {
        let size = self.data.len();
        let per_batch = (BATCH_BYTES / size).max(1);
        let mut out = Vec::new();
        let start = Instant::now();
        while start.elapsed() < period {
            for _ in 0..per_batch {
                self.down.server_segment(Some(layer), self.inner, &self.data, &mut out).unwrap();
                self.inner += size as u64;
                // The engine turns the records into packets at once: by the client's ACK the
                // store holds each record's only reference.
                out.clear();
                // The client acknowledges every second record, a batch behind: an ACK clock,
                // the batch in flight.
                self.ends.push_back(self.down.outer_end());
                if self.ends.len() >= per_batch + 2 {
                    let acked = self.ends.drain(..2).next_back().unwrap();
                    self.down.client_ack(Some(layer), acked, WINDOW, &mut out).unwrap();
                }
            }
            self.segments += per_batch as u64;
        }
        self.timed += start.elapsed();
        // Nothing held back by a window or a bound: every segment became a record.
        assert_eq!(self.down.stats().records, self.segments);
    }

    fn mb_s(&self) -> f64 {
        (self.segments * self.data.len() as u64) as f64 / self.timed.as_secs_f64() / 1e6
    }
}

/// The window the client advertises to `Seal`: never the bound.
const WINDOW: u64 = 1 << 30;

/// Client records of `size` plaintext bytes, cut into `SEGMENT`-byte segments, through
/// `Upstream` in release mode `release` (buffered: whole records opened; cut-through: each
/// piece decrypted as it arrives, the tag checked at the end); the server acknowledges every
/// batch. Making the records is not timed.
struct Open {
    up: Upstream,
    release: Release,
    plain: Vec<u8>,
    outer: u64,
    released: u64,
    timed: Duration,
}

impl Open {
    fn new(size: usize, release: Release) -> Open {
        let up = Upstream::new(SeqMap::new(1, 1, 4096), UP).with_release(release);
        Open { up, release, plain: vec![0xa5; size], outer: 1, released: 0, timed: Duration::ZERO }
    }

    fn run(&mut self, layer: &mut Session, client: &mut RecordKey, period: Duration) {
        let size = self.plain.len();
        let per_batch = (BATCH_BYTES / size).max(1);
        let (mut ups, mut wire) = (Vec::new(), Vec::new());
        let mut timed = Duration::ZERO;
        while timed < period {
            wire.clear();
            for _ in 0..per_batch {
                client.seal(ContentType::APPLICATION_DATA, &self.plain, &mut wire).unwrap();
            }
            let start = Instant::now();
            for segment in wire.chunks(SEGMENT) {
                self.up.segment(layer, self.outer, segment, &mut ups).unwrap();
                self.outer += segment.len() as u64;
            }
            self.up.server_ack(self.up.inner_end());
            timed += start.elapsed();
            for u in ups.drain(..) {
                let Up::Forward { data, .. } = u else { panic!("only data was sent") };
                self.released += data.len() as u64;
            }
        }
        self.timed += timed;
        assert_eq!(self.released, self.up.stats().records * size as u64, "every record opened and released");
        if self.release == Release::CutThrough && size > SEGMENT {
            assert!(self.up.stats().before_tag > 0, "records released piece by piece");
        }
    }

    fn mb_s(&self) -> f64 {
        self.released as f64 / self.timed.as_secs_f64() / 1e6
    }
}

/// The record layer's own seal, no engine around it: the ceiling for `Seal`. A key of its own
/// (the same suite): the client's must stay in step with the engine's for `Open`.
struct Bare {
    key: RecordKey,
    data: Vec<u8>,
    out: Vec<u8>,
    records: u64,
    timed: Duration,
}

impl Bare {
    fn new(size: usize, suite: Suite) -> Bare {
        let len = if suite == Suite::Aes128Gcm { 16 } else { 32 };
        let key = RecordKey::from_parts(Version::Tls13, suite, &vec![0x42; len], [7; 12], 0).unwrap();
        Bare { key, data: vec![0x3c; size], out: vec![0; size + 128], records: 0, timed: Duration::ZERO }
    }

    fn run(&mut self, period: Duration) {
        let start = Instant::now();
        while start.elapsed() < period {
            for _ in 0..64 {
                // The record starts 64 bytes into the buffer: with the plaintext's buffer at the
                // same offset in its page (mimalloc aligns both), each copy would stall on 4K
                // aliasing, which made this ceiling up to three times slower than the path.
                self.out.truncate(64);
                self.key.seal(ContentType::APPLICATION_DATA, &self.data, &mut self.out).unwrap();
            }
            self.records += 64;
        }
        self.timed += start.elapsed();
    }

    fn mb_s(&self) -> f64 {
        (self.records * self.data.len() as u64) as f64 / self.timed.as_secs_f64() / 1e6
    }
}

/// aws-lc's AEAD alone (through aws-lc-rs, which tlsgate's record layer uses): each buffer of
/// `size` bytes and one more (TLS 1.3's content type) sealed in place under a nonce of its own,
/// with a 13-byte AAD, the tag apart. The floor no record path can pass.
struct Raw {
    key: aws_lc_rs::aead::LessSafeKey,
    buf: Vec<u8>,
    records: u64,
    timed: Duration,
}

impl Raw {
    fn new(size: usize, suite: Suite) -> Raw {
        use aws_lc_rs::aead::{LessSafeKey, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305};
        let (alg, len) = match suite {
            Suite::Aes128Gcm => (&AES_128_GCM, 16),
            Suite::Aes256Gcm => (&AES_256_GCM, 32),
            Suite::Chacha20Poly1305 => (&CHACHA20_POLY1305, 32),
        };
        let key = LessSafeKey::new(UnboundKey::new(alg, &vec![0x42; len]).unwrap());
        Raw { key, buf: vec![0x3c; size + 1], records: 0, timed: Duration::ZERO }
    }

    fn run(&mut self, period: Duration) {
        use aws_lc_rs::aead::{Aad, Nonce};
        let start = Instant::now();
        while start.elapsed() < period {
            for _ in 0..64 {
                let mut nonce = [7u8; 12];
                nonce[4..].copy_from_slice(&self.records.to_be_bytes());
                self.records += 1;
                let tag = self
                    .key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from([0x17u8; 13]),
                        &mut self.buf,
                    )
                    .unwrap();
                let _ = std::hint::black_box(tag);
            }
        }
        self.timed += start.elapsed();
    }

    fn mb_s(&self) -> f64 {
        (self.records * (self.buf.len() as u64 - 1)) as f64 / self.timed.as_secs_f64() / 1e6
    }
}

//! The inline engine's record path alone, on one core: server segments sealed into one record
//! each through `Downstream` (stored until the client's ACK, as the engine does), and client
//! records opened through `Upstream` (framer, open, plaintext released and freed on the
//! server's ACK), for each TLS 1.3 AEAD. No packets, no TCP: the cost per byte of the path.
//! `bench/inline.sh` runs it pinned beside `openssl speed -evp`; docs/benchmarks.md explains.
//!
//! `record_path [--seconds S] [--cipher NAME]` prints one line per suite and size (MB = 10^6
//! plaintext bytes): `cipher=aes-128-gcm bytes=1460 seal_mb_s=… open_mb_s=… aead_mb_s=…`, where
//! `aead` is the record layer's bare seal (`RecordKey::seal`, no engine) for comparison.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, SupportedCipherSuite};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tlsgate_inline::downstream::{DownLimits, Downstream};
use tlsgate_inline::handshake::Handshake;
use tlsgate_inline::seq_map::SeqMap;
use tlsgate_inline::upstream::{Up, UpLimits, Upstream};
use tlsgate_record::crypto::{RecordKey, Version};
use tlsgate_record::frame::{ContentType, MAX_CIPHERTEXT_TLS12};
use tlsgate_record::session::Session;

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
    open(&mut layer, &mut client, 16384, Duration::from_millis(300));
    seal(&mut layer, 1460, Duration::from_millis(300));
    for (name, suite) in
        [("aes-128-gcm", TLS13[0]), ("aes-256-gcm", TLS13[1]), ("chacha20-poly1305", TLS13[2])]
    {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        for size in [1460, 16384] {
            let (mut layer, mut client) = keys(suite);
            let seal = seal(&mut layer, size, period);
            let open = open(&mut layer, &mut client, size, period);
            let aead = bare_seal(&mut client, size, period);
            println!(
                "cipher={name} bytes={size} seal_mb_s={seal:.0} open_mb_s={open:.0} aead_mb_s={aead:.0}"
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
/// stored; the client acknowledges every batch. Plaintext MB/s.
fn seal(layer: &mut Session, size: usize, period: Duration) -> f64 {
    let mut down = Downstream::new(SeqMap::new(1, 1, 4096), DOWN);
    let mut out = Vec::new();
    let window = 1 << 30;
    down.client_ack(Some(layer), 1, window, &mut out).unwrap();
    let data = vec![0x5a; size];
    let per_batch = (BATCH_BYTES / size).max(1);
    let (mut inner, mut segments) = (1u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < period {
        for _ in 0..per_batch {
            down.server_segment(Some(layer), inner, &data, &mut out).unwrap();
            inner += size as u64;
        }
        segments += per_batch as u64;
        let acked = down.outer_end();
        down.client_ack(Some(layer), acked, window, &mut out).unwrap();
        out.clear();
    }
    let elapsed = start.elapsed();
    // Nothing held back by a window or a bound: every segment became a record.
    assert_eq!(down.stats().records, segments);
    (segments * size as u64) as f64 / elapsed.as_secs_f64() / 1e6
}

/// Client records of `size` plaintext bytes, cut into `SEGMENT`-byte segments, through
/// `Upstream`; the server acknowledges every batch. Making the records is not timed.
fn open(layer: &mut Session, client: &mut RecordKey, size: usize, period: Duration) -> f64 {
    let mut up = Upstream::new(SeqMap::new(1, 1, 4096), UP);
    let plain = vec![0xa5; size];
    let per_batch = (BATCH_BYTES / size).max(1);
    let (mut outer, mut released) = (1u64, 0u64);
    let mut ups = Vec::new();
    let mut timed = Duration::ZERO;
    let mut wire = Vec::new();
    while timed < period {
        wire.clear();
        for _ in 0..per_batch {
            client.seal(ContentType::APPLICATION_DATA, &plain, &mut wire).unwrap();
        }
        let start = Instant::now();
        for segment in wire.chunks(SEGMENT) {
            up.segment(layer, outer, segment, &mut ups).unwrap();
            outer += segment.len() as u64;
        }
        up.server_ack(up.inner_end());
        timed += start.elapsed();
        for u in ups.drain(..) {
            let Up::Forward { data, .. } = u else { panic!("only data was sent") };
            released += data.len() as u64;
        }
    }
    assert_eq!(released, up.stats().records * size as u64, "every record opened and released");
    released as f64 / timed.as_secs_f64() / 1e6
}

/// The record layer's own seal, no engine around it: the ceiling for `seal`.
fn bare_seal(key: &mut RecordKey, size: usize, period: Duration) -> f64 {
    let data = vec![0x3c; size];
    let mut out = Vec::with_capacity(size + 64);
    let mut records = 0u64;
    let start = Instant::now();
    while start.elapsed() < period {
        for _ in 0..64 {
            out.clear();
            key.seal(ContentType::APPLICATION_DATA, &data, &mut out).unwrap();
        }
        records += 64;
    }
    (records * size as u64) as f64 / start.elapsed().as_secs_f64() / 1e6
}

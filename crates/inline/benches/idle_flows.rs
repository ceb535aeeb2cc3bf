//! State per idle flow in the inline engine: `--flows N` (1000) TLS flows opened through
//! `Engine` on hand-built packets (SYN, SYN-ACK, the client's handshake, its ACK of the
//! engine's flight, then one small request and answer as `bench/lib/idle_tls.py` makes, all
//! acknowledged; `--no-request` stops after the handshake), then left idle: `PARK_AFTER` passes
//! between flows and the engine's timers park each (`--no-park`: no time passes, nothing is
//! parked; `--live K`: K flows are opened between two parking rounds, all live at once, as
//! when a client opens flows faster than they idle out). The allocator is the binary's: parked
//! flows' state in a heap of its own (`--no-parked-heap`: among the rest) and no transparent
//! huge pages (`--huge-pages`: the kernel's default). Prints, per flow,
//! the engine's own accounting (`Report::state_bytes`), the heap really held (the Rust
//! allocations, counted by a wrapper around mimalloc, the shipped binary's allocator, plus
//! aws-lc's C allocations, which go to glibc's malloc and `mallinfo2` counts; and the Rust part
//! alone), and the growth of this process's
//! resident memory: `flows=1000 park=true state_bytes_per_flow=… heap_bytes_per_flow=…
//! rust_heap_bytes_per_flow=… rss_bytes_per_flow=…`.
//!
//! The RSS figure is measured as bench/run.sh measures `tlsgate terminate` (VmRSS after − before,
//! over the flows, after a warm-up), so the two compare; bench/inline.sh prints them side by side.
//! Each flow's rustls client is dropped once its flow is idle, so the process holds one client
//! at a time and the growth is the engine's (heap, keys, flow table).

// The counting allocator and mallinfo2 need unsafe; this program is a bench, never shipped.
#![allow(unsafe_code)]

/// The shipped binary's allocator, with its heap for parked flows' state.
#[path = "../../tlsgate/src/allocator.rs"]
mod allocator;
#[path = "../tests/common/mod.rs"]
mod common;

use allocator::Allocator;
use common::*;
use rustls::pki_types::ServerName;
use rustls::ClientConnection;
use std::alloc::{GlobalAlloc, Layout};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tlsgate_inline::engine::{Config, Engine, Limits, Service};
use tlsgate_inline::packet;
use tlsgate_inline::seq::Seq;
use tlsgate_inline::tables::{FlowState, Mode, Release};
use tlsgate_inline::tls_flow::PARK_AFTER;

const SERVICE: &str = "10.0.0.2:443";
const BACKEND: &str = "10.0.0.2:80";
const CISN: u32 = 1_000_000;
const SISN: u32 = 7000;
const WARM_UP: usize = 50;
/// The request and the answer each idle flow carries once (`--no-request`: none).
const REQUEST: &[u8] = b"GET /small HTTP/1.1\r\nHost: localhost\r\n\r\n";
const ANSWER: usize = 600;

/// The shipped binary's allocator (mimalloc), counting the bytes it has live: Rust's
/// allocations. aws-lc allocates through glibc's malloc, which `mallinfo2` counts.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        Allocator.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        Allocator.dealloc(p, l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        Allocator.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        Allocator.realloc(p, l, new)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// What the process holds: (resident bytes, heap bytes live in both allocators, Rust's alone).
fn memory() -> (usize, usize, usize) {
    // SAFETY: mallinfo2 only reads glibc's allocator statistics.
    let m = unsafe { libc::mallinfo2() };
    let rust = LIVE.load(Ordering::Relaxed);
    (rss_bytes(), m.uordblks + m.hblkhd + rust, rust)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flows = args
        .iter()
        .position(|a| a == "--flows")
        .and_then(|i| args.get(i + 1))
        .map_or(1000, |s| s.parse::<usize>().expect("--flows takes a count"));
    let request = !args.iter().any(|a| a == "--no-request");
    let park = !args.iter().any(|a| a == "--no-park");
    // Flows opened between two parking rounds: on real packets a client opens flows faster than
    // they idle long enough to park, so many are live (not yet parked) at once.
    let live = args
        .iter()
        .position(|a| a == "--live")
        .and_then(|i| args.get(i + 1))
        .map_or(1, |s| s.parse::<usize>().expect("--live takes a count").max(1));
    let mut release = Releaser { on: args.iter().any(|a| a == "--release-memory"), ..Releaser::default() };
    // As `tlsgate inline run` does: parked flows' state in a heap of its own
    // (`--no-parked-heap`: among the rest), no transparent huge pages (`--huge-pages`: the
    // kernel's default).
    let parked_heap = !args.iter().any(|a| a == "--no-parked-heap");
    if parked_heap {
        tlsgate_inline::parked_memory::install(allocator::parked_scope);
    }
    let huge_pages = args.iter().any(|a| a == "--huge-pages");
    if !huge_pages {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and only sets a flag of this process.
        let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
    // The suite terminate negotiates with its defaults (docs/benchmarks.md).
    let (server_cfg, client_cfg) = configs(TLS13[0]);
    let mut engine = Engine::new(Config {
        services: vec![Service {
            addr: SERVICE.parse().unwrap(),
            server_port: Some(80),
            mode: Mode::Direct,
            release: Release::Buffered,
            tls: server_cfg,
            pool: Vec::new(),
        }],
        // PARK_AFTER between flows adds up to minutes: none may idle out meanwhile.
        limits: Limits {
            idle_timeout: Duration::from_secs(24 * 3600),
            park_after: park.then_some(PARK_AFTER),
            ..Limits::default()
        },
    });
    let mut now = Duration::ZERO;
    for i in 0..WARM_UP {
        open_idle_flow(&mut engine, &client_cfg, i, request, &mut now);
        idle(&mut engine, park, &mut now);
        release.tick(&engine, now);
    }
    release.finish(&engine);
    let state_before = engine.report().state_bytes();
    let before = memory();
    for i in WARM_UP..WARM_UP + flows {
        open_idle_flow(&mut engine, &client_cfg, i, request, &mut now);
        if (i - WARM_UP + 1).is_multiple_of(live) || i + 1 == WARM_UP + flows {
            idle(&mut engine, park, &mut now);
            release.tick(&engine, now);
        }
    }
    // The bridge thread's last release comes within a second of the last parking.
    release.finish(&engine);
    let after = memory();
    let report = engine.report();
    assert_eq!(report.connections.len(), WARM_UP + flows);
    assert!(report.connections.iter().all(|c| c.state == FlowState::Established));
    assert!(report.connections.iter().all(|c| c.state_bytes > 0));
    let per = |x: usize, y: usize| x.saturating_sub(y) / flows;
    print!(
        "flows={flows} live={live} park={park} parked_heap={parked_heap} huge_pages={huge_pages} state_bytes_per_flow={} heap_bytes_per_flow={} \
         rust_heap_bytes_per_flow={} rss_bytes_per_flow={}",
        per(report.state_bytes(), state_before),
        per(after.1, before.1),
        per(after.2, before.2),
        per(after.0, before.0),
    );
    if release.on {
        let mean = release.total.as_micros() / release.count.max(1) as u128;
        print!(" releases={} release_us_mean={mean}", release.count);
    }
    println!();
}

/// `--release-memory`: what `tlsgate inline run`'s bridge thread does after the engine parked
/// flows (`tlsgate_io::inline::release`, the binary's `memory::release`): mimalloc's free pages
/// purged and glibc's heap trimmed, at most once a second (of the engine's clock here).
#[derive(Default)]
struct Releaser {
    on: bool,
    seen: u64,
    last: Option<Duration>,
    count: usize,
    total: Duration,
}

impl Releaser {
    fn tick(&mut self, engine: &Engine, now: Duration) {
        let parked = engine.parked_total();
        if !self.on || parked == self.seen || self.last.is_some_and(|l| now < l + Duration::from_secs(1)) {
            return;
        }
        self.seen = parked;
        self.last = Some(now);
        let started = std::time::Instant::now();
        // SAFETY: neither takes a pointer; both only walk their allocator's free lists.
        unsafe {
            libmimalloc_sys::mi_collect(true);
            libc::malloc_trim(0);
        }
        allocator::collect_parked();
        self.count += 1;
        self.total += started.elapsed();
    }

    /// The release still owed for the last parkings.
    fn finish(&mut self, engine: &Engine) {
        self.last = None;
        self.tick(engine, Duration::ZERO);
        self.last = None;
    }
}

/// The time between two flows: with `park`, long enough for the engine's timers to park the
/// flow just opened (as they do in `tlsgate inline run`), otherwise none.
fn idle(engine: &mut Engine, park: bool, now: &mut Duration) {
    if park {
        *now += PARK_AFTER;
        engine.handle_timeout(*now, &mut Vec::new());
    }
}

/// One flow from SYN to idle: the handshake done, one request and answer when `request`, and
/// every byte acknowledged on both sides.
fn open_idle_flow(
    engine: &mut Engine,
    client_cfg: &Arc<rustls::ClientConfig>,
    i: usize,
    request: bool,
    now: &mut Duration,
) {
    let client_addr: SocketAddr = SocketAddr::new([10, 1, (i >> 8) as u8, i as u8].into(), 40000);
    let (service, backend): (SocketAddr, SocketAddr) = (SERVICE.parse().unwrap(), BACKEND.parse().unwrap());
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = ClientConnection::new(client_cfg.clone(), name).unwrap();
    // Bytes the client sent and received (outer), the server received and sent (inner).
    let (mut sent, mut received, mut to_server, mut from_server) = (0u32, 0u32, 0u32, 0u32);
    let mut feed = |engine: &mut Engine,
                    pkt: Vec<u8>,
                    client: &mut ClientConnection,
                    received: &mut u32,
                    to_server: &mut u32| {
        *now += Duration::from_millis(1);
        let mut out = Vec::new();
        engine.handle_packet(*now, pkt, &mut out);
        for p in out {
            let seg = packet::parse(&p).unwrap();
            let payload = &p[seg.payload.clone()];
            // Only the peers' bytes matter here, in order (nothing is lost in this harness).
            if seg.dst == client_addr && !seg.syn && !payload.is_empty() {
                assert_eq!(seg.seq, Seq(SISN + 1 + *received));
                client.read_tls(&mut &payload[..]).unwrap();
                client.process_new_packets().unwrap();
                *received += payload.len() as u32;
            }
            if seg.dst == backend && !seg.syn && !payload.is_empty() {
                assert_eq!(seg.seq, Seq(CISN + 1 + *to_server));
                *to_server += payload.len() as u32;
            }
        }
    };
    let (r, t) = (&mut received, &mut to_server);
    feed(engine, syn(client_addr, service, CISN, None), &mut client, r, t);
    feed(engine, syn(backend, client_addr, SISN, Some(CISN + 1)), &mut client, r, t);
    feed(engine, data(client_addr, service, CISN + 1, SISN + 1, &[]), &mut client, r, t);
    if request {
        use std::io::Write;
        client.writer().write_all(REQUEST).unwrap();
    }
    while client.is_handshaking() || client.wants_write() {
        for chunk in client_output(&mut client).chunks(1460) {
            let p = data(client_addr, service, CISN + 1 + sent, SISN + 1 + *r, chunk);
            sent += chunk.len() as u32;
            feed(engine, p, &mut client, r, t);
        }
    }
    if request {
        assert_eq!(*t as usize, REQUEST.len(), "the request reached the server");
        // The server acknowledges it and answers; the client takes the answer.
        let answer = vec![0x61; ANSWER];
        let p = data(backend, client_addr, SISN + 1, CISN + 1 + *t, &answer);
        from_server += ANSWER as u32;
        feed(engine, p, &mut client, r, t);
        let mut body = vec![0; ANSWER];
        std::io::Read::read_exact(&mut client.reader(), &mut body).unwrap();
    }
    // The client acknowledges everything the engine sent (its flight, the ticket, the answer),
    // and the server everything it received.
    let ack = data(client_addr, service, CISN + 1 + sent, SISN + 1 + *r, &[]);
    feed(engine, ack, &mut client, r, t);
    let ack = data(backend, client_addr, SISN + 1 + from_server, CISN + 1 + *t, &[]);
    feed(engine, ack, &mut client, r, t);
}

/// This process's resident set (VmRSS), in bytes.
fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

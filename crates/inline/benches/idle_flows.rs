//! State per idle flow in the inline engine: `--flows N` (1000) TLS flows opened through
//! `Engine` on hand-built packets (SYN, SYN-ACK, the client's handshake, its ACK of the
//! engine's flight), then left idle. Prints the engine's own accounting (`Report::state_bytes`)
//! and the growth of this process's resident memory, both per flow:
//! `flows=1000 state_bytes_per_flow=… rss_bytes_per_flow=…`.
//!
//! The RSS figure is measured as bench/run.sh measures `tlsgate terminate` (VmRSS after − before,
//! over the flows, after a warm-up), so the two compare; bench/inline.sh prints them side by side.
//! Each flow's rustls client is dropped once its flow is idle, so the process holds one client
//! at a time and the growth is the engine's (heap, keys, flow table).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use rustls::pki_types::ServerName;
use rustls::ClientConnection;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tlsgate_inline::engine::{Config, Engine, Limits, Service};
use tlsgate_inline::packet;
use tlsgate_inline::seq::Seq;
use tlsgate_inline::tables::{FlowState, Mode, Release};

const SERVICE: &str = "10.0.0.2:443";
const BACKEND: &str = "10.0.0.2:80";
const CISN: u32 = 1_000_000;
const SISN: u32 = 7000;
const WARM_UP: usize = 50;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flows = args
        .iter()
        .position(|a| a == "--flows")
        .and_then(|i| args.get(i + 1))
        .map_or(1000, |s| s.parse::<usize>().expect("--flows takes a count"));
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
        limits: Limits::default(),
    });
    let mut now = Duration::ZERO;
    for i in 0..WARM_UP {
        open_idle_flow(&mut engine, &client_cfg, i, &mut now);
    }
    let (rss_before, state_before) = (rss_bytes(), engine.report().state_bytes());
    for i in WARM_UP..WARM_UP + flows {
        open_idle_flow(&mut engine, &client_cfg, i, &mut now);
    }
    let (rss_after, report) = (rss_bytes(), engine.report());
    assert_eq!(report.connections.len(), WARM_UP + flows);
    assert!(report.connections.iter().all(|c| c.state == FlowState::Established));
    println!(
        "flows={flows} state_bytes_per_flow={} rss_bytes_per_flow={}",
        (report.state_bytes() - state_before) / flows,
        (rss_after.saturating_sub(rss_before)) / flows
    );
}

/// One flow from SYN to idle: the handshake done and the engine's bytes all acknowledged.
fn open_idle_flow(engine: &mut Engine, client_cfg: &Arc<rustls::ClientConfig>, i: usize, now: &mut Duration) {
    let client_addr: SocketAddr = SocketAddr::new([10, 1, (i >> 8) as u8, i as u8].into(), 40000);
    let (service, backend): (SocketAddr, SocketAddr) = (SERVICE.parse().unwrap(), BACKEND.parse().unwrap());
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = ClientConnection::new(client_cfg.clone(), name).unwrap();
    let (mut sent, mut received) = (0u32, 0u32);
    let mut feed = |engine: &mut Engine, pkt: Vec<u8>, client: &mut ClientConnection, received: &mut u32| {
        *now += Duration::from_millis(1);
        let mut out = Vec::new();
        engine.handle_packet(*now, pkt, &mut out);
        for p in out {
            let seg = packet::parse(&p).unwrap();
            let payload = &p[seg.payload.clone()];
            // Only the client's bytes matter here, in order (nothing is lost in this harness).
            if seg.dst == client_addr && !seg.syn && !payload.is_empty() {
                assert_eq!(seg.seq, Seq(SISN + 1 + *received));
                client.read_tls(&mut &payload[..]).unwrap();
                client.process_new_packets().unwrap();
                *received += payload.len() as u32;
            }
        }
    };
    feed(engine, syn(client_addr, service, CISN, None), &mut client, &mut received);
    feed(engine, syn(backend, client_addr, SISN, Some(CISN + 1)), &mut client, &mut received);
    feed(engine, data(client_addr, service, CISN + 1, SISN + 1, &[]), &mut client, &mut received);
    while client.is_handshaking() || client.wants_write() {
        for chunk in client_output(&mut client).chunks(1460) {
            let p = data(client_addr, service, CISN + 1 + sent, SISN + 1 + received, chunk);
            sent += chunk.len() as u32;
            feed(engine, p, &mut client, &mut received);
        }
    }
    // The client acknowledges everything the engine sent (its flight and the ticket).
    let ack = data(client_addr, service, CISN + 1 + sent, SISN + 1 + received, &[]);
    feed(engine, ack, &mut client, &mut received);
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

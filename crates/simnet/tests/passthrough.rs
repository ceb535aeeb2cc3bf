//! The harness checks itself: TLS end to end through a middlebox that only forwards, under loss,
//! reordering and duplication, every byte verified both ways, the same result for the same seed.

use std::sync::Arc;

use tlsgate_simnet::{simulate, Impairments, PassThrough, SimConfig, SimPki};

fn tls() -> (Arc<rustls::ClientConfig>, Arc<rustls::ServerConfig>) {
    let pki = SimPki::new();
    (pki.client(rustls::DEFAULT_VERSIONS, None), Arc::new(pki.server()))
}

fn run(flows: u32, bytes: u64, seed: u64, loss: f64, reorder: f64, duplicate: f64) -> tlsgate_simnet::Report {
    let (client, server) = tls();
    let config = SimConfig {
        flows,
        bytes,
        seed,
        impairments: Impairments { loss, reorder, duplicate, ..Impairments::default() },
        ..SimConfig::default()
    };
    let report = simulate(&config, &mut PassThrough, client, Some(server));
    eprintln!("seed {seed}: {report}");
    report
}

#[test]
fn a_clean_link_carries_every_flow() {
    let r = run(20, 256 * 1024, 1, 0.0, 0.0, 0.0);
    assert!(r.ok(), "{r}");
    assert_eq!((r.bytes_up, r.bytes_down), (20 * 256 * 1024, 20 * 256 * 1024));
}

#[test]
fn loss_reordering_and_duplication_are_survived_and_seen() {
    for seed in [1, 7, 42] {
        let r = run(20, 128 * 1024, seed, 0.03, 0.05, 0.01);
        assert!(r.ok(), "{r}");
        assert!(r.retransmissions > 0 && r.links.dropped > 0 && r.links.reordered > 0, "{r}");
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let a = run(5, 64 * 1024, 9, 0.05, 0.05, 0.02);
    let b = run(5, 64 * 1024, 9, 0.05, 0.05, 0.02);
    assert_eq!(a.to_string(), b.to_string());
}

/// Flips one payload byte of the 20th server segment and fixes the TCP checksum, so only the
/// flows' own verification can notice.
struct Corrupt {
    seen: u32,
}

impl tlsgate_simnet::Middlebox for Corrupt {
    fn packet(
        &mut self,
        _now: std::time::Duration,
        from: tlsgate_simnet::Side,
        mut packet: Vec<u8>,
    ) -> Vec<(tlsgate_simnet::Side, Vec<u8>)> {
        use smoltcp::wire::{IpAddress, Ipv4Packet, TcpPacket};
        use tlsgate_simnet::Side;
        if from == Side::Server {
            let mut ip = Ipv4Packet::new_unchecked(&mut packet[..]);
            let (src, dst) = (IpAddress::Ipv4(ip.src_addr()), IpAddress::Ipv4(ip.dst_addr()));
            let mut tcp = TcpPacket::new_unchecked(ip.payload_mut());
            if !tcp.payload_mut().is_empty() {
                self.seen += 1;
                if self.seen == 20 {
                    tcp.payload_mut()[0] ^= 0x40;
                    tcp.fill_checksum(&src, &dst);
                }
            }
        }
        let to = if from == Side::Client { Side::Server } else { Side::Client };
        vec![(to, packet)]
    }

    fn poll_timeout(&self) -> Option<std::time::Duration> {
        None
    }

    fn timeout(&mut self, _now: std::time::Duration) -> Vec<(tlsgate_simnet::Side, Vec<u8>)> {
        Vec::new()
    }
}

#[test]
fn a_corrupted_byte_is_a_violation() {
    let (client, server) = tls();
    let config = SimConfig {
        flows: 2,
        bytes: 256 * 1024,
        deadline: std::time::Duration::from_secs(30),
        ..SimConfig::default()
    };
    let r = simulate(&config, &mut Corrupt { seen: 0 }, client, Some(server));
    assert!(!r.ok(), "{r}");
    assert!(r.violations.iter().any(|v| v.contains("TLS")), "{r}");
}

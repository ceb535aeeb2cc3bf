//! Loss recovery through `tlsgate inline run` beside plain TCP through a Linux bridge, on the
//! same impaired path: an impairing hop (testkit::impair: whole 64 KiB frames lost, reordered,
//! duplicated, seeded) between the client and the gate for uploads, between the gate and the
//! servers for downloads, segmentation offload on. What it shows is TCP's recovery, not
//! throughput: the transfer times and the sending stack's retransmission timeouts
//! (`TcpExtTCPTimeouts` of the sender's namespace). The bridge carries plain HTTP (no TLS, TCP
//! timestamps off as the gate has them): what the path allows TCP alone.
//!
//! `cargo bench -p tlsgate --bench inline_impaired -- [--seeds N] [--rounds N] [--mib N]
//! [--direction up|down|both] [--baseline PATH]` (root; curl, nginx, iproute2, ethtool). With
//! `--baseline`, an older tlsgate binary runs the same transfers in both release modes too.

use std::time::Instant;

use tlsgate_testkit::impair::Impairment;
use tlsgate_testkit::inline_net::{InlineNet, Site, SERVERS, SERVER_NAME, VIP};
use tlsgate_testkit::pki::Pki;
use tlsgate_testkit::process::Tlsgate;

const BIN: &str = env!("CARGO_BIN_EXE_tlsgate");
const SERVER: &str = SERVERS[0];

#[derive(Clone, Copy, PartialEq)]
enum Direction {
    Up,
    Down,
}

/// What carries the transfer: a tlsgate binary's gate in a release mode, or a Linux bridge in
/// its place.
#[derive(Clone)]
enum Carrier {
    Gate { bin: String, mode: &'static str, name: String },
    Bridge,
}

impl Carrier {
    fn name(&self) -> &str {
        match self {
            Carrier::Gate { name, .. } => name,
            Carrier::Bridge => "linux bridge",
        }
    }
}

struct Args {
    seeds: u64,
    rounds: usize,
    mib: usize,
    directions: Vec<Direction>,
    baseline: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        seeds: 8,
        rounds: 2,
        mib: 64,
        directions: vec![Direction::Up, Direction::Down],
        baseline: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--seeds" => a.seeds = value().parse().expect("--seeds N"),
            "--rounds" => a.rounds = value().parse().expect("--rounds N"),
            "--mib" => a.mib = value().parse().expect("--mib N"),
            "--baseline" => a.baseline = Some(value()),
            "--direction" => {
                a.directions = match value().as_str() {
                    "up" => vec![Direction::Up],
                    "down" => vec![Direction::Down],
                    "both" => vec![Direction::Up, Direction::Down],
                    other => panic!("--direction up|down|both, not {other}"),
                }
            }
            // cargo bench passes --bench.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// One seed's transfers over one carrier: their times in seconds, and the sender's timeouts.
fn run(dir: Direction, carrier: &Carrier, seed: u64, a: &Args) -> (Vec<f64>, u64) {
    let net = match dir {
        Direction::Up => InlineNet::impaired(1),
        Direction::Down => InlineNet::impaired_toward_servers(1),
    };
    let pki = Pki::new();
    let site = Site::start(&net.servers[0], "server1", a.mib << 20, None);
    net.offloads_on();
    let _hop = net.start_impairment(Impairment { loss: 0.02, reorder: 0.03, duplicate: 0.01, seed });
    let _gate = match carrier {
        Carrier::Gate { bin, mode, .. } => {
            let (cert, key) = pki.server("gate", &[SERVER_NAME, SERVER, VIP]);
            let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
            let service = format!("{SERVER}:443=80");
            let args = [
                "inline",
                "run",
                "--client-iface",
                &net.gate_client_if,
                "--server-iface",
                &net.gate_server_if,
                "--service",
                &service,
                "--mode",
                mode,
                "--cert",
                cert,
                "--key",
                key,
            ];
            let gate = Tlsgate::start_command(net.gate.command(bin, &args));
            gate.proc.wait_for(&["inline running"], std::time::Duration::from_secs(30));
            Some(gate)
        }
        Carrier::Bridge => {
            net.join_with_linux_bridge();
            for ns in [&net.client.ns, &net.servers[0].ns] {
                ns.must("sysctl", &["-qw", "net.ipv4.tcp_timestamps=0"]);
            }
            None
        }
    };
    let url = match carrier {
        Carrier::Gate { .. } => format!("https://{SERVER_NAME}"),
        Carrier::Bridge => format!("http://{SERVER}"),
    };
    let resolve = format!("{SERVER_NAME}:443:{SERVER}");
    let source = site.big_path();
    let mut times = Vec::new();
    for _ in 0..a.rounds {
        let mut curl =
            vec!["-sS", "--fail", "--max-time", "300", "--cacert", pki.ca(), "--resolve", &resolve];
        let target = match dir {
            Direction::Up => {
                curl.extend(["-T", source.to_str().unwrap()]);
                format!("{url}/up/big.bin")
            }
            Direction::Down => {
                curl.extend(["-o", "/dev/null", "-w", "%{size_download}"]);
                format!("{url}/big.bin")
            }
        };
        curl.push(&target);
        let t = Instant::now();
        let out = net.client.ns.run("curl", &curl);
        let took = t.elapsed().as_secs_f64();
        assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
        match dir {
            Direction::Up => assert_eq!(site.uploaded_sha256("big.bin"), site.big_sha256, "upload differs"),
            Direction::Down => assert_eq!(String::from_utf8_lossy(&out.stdout), (a.mib << 20).to_string()),
        }
        times.push(took);
    }
    let sender = match dir {
        Direction::Up => &net.client.ns,
        Direction::Down => &net.servers[0].ns,
    };
    (times, timeouts(&String::from_utf8_lossy(&sender.run("nstat", &["-a"]).stdout)))
}

/// `TcpExtTCPTimeouts` from `nstat -a` (absent when zero).
fn timeouts(nstat: &str) -> u64 {
    nstat
        .lines()
        .find_map(|l| l.strip_prefix("TcpExtTCPTimeouts"))
        .and_then(|rest| rest.split_whitespace().next())
        .map_or(0, |n| n.parse().expect("a count"))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let a = args();
    let mut carriers = Vec::new();
    let bins =
        std::iter::once((BIN.to_string(), "tlsgate")).chain(a.baseline.clone().map(|b| (b, "baseline")));
    for (bin, who) in bins {
        for mode in ["buffered", "cut-through"] {
            carriers.push(Carrier::Gate { bin: bin.clone(), mode, name: format!("{who} {mode}") });
        }
    }
    carriers.push(Carrier::Bridge);
    println!(
        "{} MiB per transfer, {} seeds x {} rounds, frames lost 2 %, reordered 3 %, duplicated 1 % each way",
        a.mib, a.seeds, a.rounds
    );
    println!("| direction | carrier | transfers | median s | max s | sender's timeouts | median / bridge |");
    println!("|---|---|---|---|---|---|---|");
    for &dir in &a.directions {
        // Every carrier over the same seeds, interleaved: a slower moment of the machine falls
        // on all of them alike.
        let mut rows: Vec<(Vec<f64>, u64)> = vec![(Vec::new(), 0); carriers.len()];
        for seed in 1..=a.seeds {
            for (i, c) in carriers.iter().enumerate() {
                let (times, to) = run(dir, c, seed, &a);
                rows[i].0.extend(times);
                rows[i].1 += to;
            }
        }
        let bridge = median(&mut rows[carriers.len() - 1].0.clone());
        for (c, (times, to)) in carriers.iter().zip(rows.iter_mut()) {
            let m = median(times);
            let max = times.iter().copied().fold(0.0, f64::max);
            let name = if dir == Direction::Up { "up" } else { "down" };
            println!(
                "| {name} | {} | {} | {m:.3} | {max:.3} | {to} | {:.2} |",
                c.name(),
                times.len(),
                m / bridge
            );
        }
    }
}

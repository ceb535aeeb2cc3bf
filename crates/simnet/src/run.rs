//! The simulation: hosts, links, middlebox and flows stepped in simulated time until every flow
//! finished or something went wrong; the result is one [`Report`].

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, TcpPacket};

use crate::flow::{End, FIRST_CLIENT_PORT};
use crate::host::Host;
use crate::link::{Impairments, Link, LinkStats};
use crate::middlebox::{Middlebox, Side};

pub const CLIENT_ADDR: IpAddress = IpAddress::v4(10, 0, 0, 1);
pub const SERVER_ADDR: IpAddress = IpAddress::v4(10, 0, 0, 2);

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub flows: u32,
    pub bytes: u64,
    pub seed: u64,
    pub impairments: Impairments,
    /// The port the client connects to, and the one the server listens on.
    pub client_port: u16,
    pub server_port: u16,
    /// The server speaks TLS (the middlebox passes TLS through) or plaintext (it terminates).
    pub server_tls: bool,
    /// Socket buffer sizes; a small client receive buffer means a window smaller than a record.
    pub client_rx_buffer: usize,
    pub buffer: usize,
    /// Simulated time after which an unfinished run is a violation.
    pub deadline: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            flows: 10,
            bytes: 64 * 1024,
            seed: 1,
            impairments: Impairments::default(),
            client_port: 443,
            server_port: 443,
            server_tls: true,
            client_rx_buffer: 64 * 1024,
            buffer: 64 * 1024,
            deadline: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub flows: u32,
    pub completed: u32,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// TCP segments seen on the wire with a sequence range already seen (per direction).
    pub retransmissions: u64,
    /// Segments toward the client whose bytes differ from what was first sent at that position.
    pub changed_on_retransmission: u64,
    pub links: LinkStats,
    pub sim_time: Duration,
    pub peak_state_bytes_per_flow: usize,
    pub violations: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty() && self.completed == self.flows
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "flows={} completed={} bytes_up_verified={} bytes_down_verified={} retransmissions={} \
             changed_on_retransmission={} dropped={} duplicated={} reordered={} sim_time={:.3}s peak_state_bytes_per_flow={} violations={}",
            self.flows,
            self.completed,
            self.bytes_up,
            self.bytes_down,
            self.retransmissions,
            self.changed_on_retransmission,
            self.links.dropped,
            self.links.duplicated,
            self.links.reordered,
            self.sim_time.as_secs_f64(),
            self.peak_state_bytes_per_flow,
            self.violations.len()
        )?;
        for v in self.violations.iter().take(3) {
            write!(f, " violation={v:?}")?;
        }
        Ok(())
    }
}

/// The four one-way hops: client -> middlebox -> server and back.
#[derive(Default)]
struct Links {
    client_out: Link,
    to_server: Link,
    server_out: Link,
    to_client: Link,
}

/// Counts segments whose sequence range was already seen in their direction.
#[derive(Default)]
struct RetransmitCounter {
    seen: HashSet<(bool, u16, u16, u32, usize)>,
    count: u64,
}

impl RetransmitCounter {
    fn observe(&mut self, from_client: bool, packet: &[u8]) {
        let Ok(ip) = Ipv4Packet::new_checked(packet) else { return };
        if ip.next_header() != IpProtocol::Tcp {
            return;
        }
        let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else { return };
        let len = tcp.payload().len();
        if len == 0 {
            return;
        }
        let key = (from_client, tcp.src_port(), tcp.dst_port(), tcp.seq_number().0 as u32, len);
        if !self.seen.insert(key) {
            self.count += 1;
        }
    }
}

/// Runs the simulation with `middlebox` between the hosts. `client_tls` makes a client
/// connection per flow, `server_tls` a server connection (used when `config.server_tls`).
pub fn simulate(
    config: &SimConfig,
    middlebox: &mut dyn Middlebox,
    client_tls: Arc<rustls::ClientConfig>,
    server_tls: Option<Arc<rustls::ServerConfig>>,
) -> Report {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let imp = config.impairments;
    let mut client = Host::new(CLIENT_ADDR, 24);
    let mut server = Host::new(SERVER_ADDR, 24);
    let mut ends: Vec<(bool, SocketHandle, End)> = Vec::new();
    let mut report = Report { flows: config.flows, ..Report::default() };
    let server_name: rustls::pki_types::ServerName<'static> =
        crate::pki::SERVER_NAME.try_into().expect("valid name");

    for i in 0..config.flows {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; config.buffer]),
            tcp::SocketBuffer::new(vec![0; config.buffer]),
        );
        s.listen(config.server_port).expect("listen");
        let tls = if config.server_tls {
            let cfg = server_tls.clone().expect("server TLS config for a TLS server");
            Some(rustls::Connection::Server(rustls::ServerConnection::new(cfg).expect("server conn")))
        } else {
            None
        };
        ends.push((false, server.sockets.add(s), End::new(None, false, tls, config.bytes)));

        let mut c = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; config.client_rx_buffer]),
            tcp::SocketBuffer::new(vec![0; config.buffer]),
        );
        let port = FIRST_CLIENT_PORT + i as u16;
        c.connect(client.iface.context(), (SERVER_ADDR, config.client_port), port).expect("connect");
        let conn =
            rustls::ClientConnection::new(client_tls.clone(), server_name.clone()).expect("client conn");
        let end = End::new(Some(i), true, Some(rustls::Connection::Client(conn)), config.bytes);
        ends.push((true, client.sockets.add(c), end));
    }

    let mut links = Links::default();
    let mut retransmits = RetransmitCounter::default();
    let mut consistency = crate::consistency::Consistency::default();
    let mut now = Duration::ZERO;
    let mut idle_rounds = 0;
    loop {
        // Deliver what is due on every hop.
        while let Some(p) = links.client_out.pop_due(now) {
            for (to, out) in middlebox.packet(now, Side::Client, p) {
                send_toward(&mut links, to, now, out, &imp, &mut rng);
            }
        }
        while let Some(p) = links.server_out.pop_due(now) {
            for (to, out) in middlebox.packet(now, Side::Server, p) {
                send_toward(&mut links, to, now, out, &imp, &mut rng);
            }
        }
        if middlebox.poll_timeout().is_some_and(|t| t <= now) {
            for (to, out) in middlebox.timeout(now) {
                send_toward(&mut links, to, now, out, &imp, &mut rng);
            }
        }
        while let Some(p) = links.to_server.pop_due(now) {
            server.deliver(p);
        }
        while let Some(p) = links.to_client.pop_due(now) {
            consistency.observe(&p);
            client.deliver(p);
        }

        // Hosts take their input, applications move data, hosts send.
        let mut sent = 0;
        for _ in 0..2 {
            // Retransmissions are counted as the hosts send them, before the link duplicates.
            for p in client.poll(now) {
                retransmits.observe(true, &p);
                links.client_out.send(now, p, &imp, &mut rng);
                sent += 1;
            }
            for p in server.poll(now) {
                retransmits.observe(false, &p);
                links.server_out.send(now, p, &imp, &mut rng);
                sent += 1;
            }
            for (is_client, h, end) in ends.iter_mut() {
                let host = if *is_client { &mut client } else { &mut server };
                end.step(host.sockets.get_mut::<tcp::Socket>(*h));
            }
        }

        let done = ends.iter().all(|(_, _, e)| e.done());
        if done || now > config.deadline {
            break;
        }
        let next = [
            links.client_out.next_due(),
            links.to_server.next_due(),
            links.server_out.next_due(),
            links.to_client.next_due(),
            middlebox.poll_timeout(),
            client.poll_at(now),
            server.poll_at(now),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(t) if t > now => {
                now = t;
                idle_rounds = 0;
            }
            Some(_) => {
                // Work due now: go round again, but never forever at one instant.
                idle_rounds += 1;
                if idle_rounds > 1000 && sent == 0 {
                    now += Duration::from_micros(100);
                    idle_rounds = 0;
                }
            }
            None => {
                report
                    .violations
                    .push(format!("stalled at {:.3}s with nothing scheduled", now.as_secs_f64()));
                break;
            }
        }
    }

    report.sim_time = now;
    report.retransmissions = retransmits.count;
    report.changed_on_retransmission = consistency.changed;
    report.violations.extend(consistency.first);
    report.peak_state_bytes_per_flow = middlebox.peak_state_bytes_per_flow();
    for l in [&links.client_out, &links.to_server, &links.server_out, &links.to_client] {
        report.links.sent += l.stats.sent;
        report.links.dropped += l.stats.dropped;
        report.links.duplicated += l.stats.duplicated;
        report.links.reordered += l.stats.reordered;
    }
    for (is_client, _, end) in &ends {
        if *is_client {
            report.bytes_down += end.received;
            if end.done() {
                report.completed += 1;
            }
        } else {
            report.bytes_up += end.received;
        }
        report.violations.extend(end.violations.iter().cloned());
        if !end.done() && now > config.deadline {
            report.violations.push(format!(
                "flow {:?} ({}) unfinished at the deadline: sent {} received {}",
                end.flow,
                if *is_client { "client" } else { "server" },
                end.sent,
                end.received
            ));
        }
    }
    report
}

fn send_toward(links: &mut Links, to: Side, now: Duration, p: Vec<u8>, imp: &Impairments, rng: &mut StdRng) {
    match to {
        Side::Server => links.to_server.send(now, p, imp, rng),
        Side::Client => links.to_client.send(now, p, imp, rng),
    }
}

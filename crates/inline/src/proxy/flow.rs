//! One full-proxy flow: two smoltcp TCP sockets on a private interface. The client's connection
//! ends in a socket listening as the service (its address and port); the server's connection
//! starts from a socket bound to the client's own address and port, so the server still sees
//! the client. Between them the TLS end ([`super::tls::TlsEnd`]) and bounded buffers: a side is
//! read only while what it produced has room, so back-pressure reaches both peers' windows.

use super::tls::{Status, TlsEnd, TlsError, MAX_PLAINTEXT};
use crate::packet;
use crate::queue_device::QueueDevice;
use crate::tables::Counters;
use rustls::ServerConfig;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Each socket's send and receive buffer: the window each peer sees (no scaling needed).
const SOCKET_BUFFER: usize = 65535;
/// Opened plaintext waiting for the server's socket, and sealed records waiting for the
/// client's, beyond which the other side is not read.
const PENDING_CAP: usize = 32 * 1024;
/// Client bytes held before they form a whole record (one maximum record and a header).
const INPUT_CAP: usize = 16384 + 2048 + 5;

/// Which side a flow failed on, for the counters and the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailedSide {
    Client,
    Backend,
}

/// How a flow ended, once it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Both connections closed in order.
    Closed,
    Failed(FailedSide, String),
}

fn instant(now: Duration) -> Instant {
    Instant::from_micros(now.as_micros() as i64)
}

fn endpoint(a: SocketAddr) -> IpEndpoint {
    IpEndpoint::new(IpAddress::from(a.ip()), a.port())
}

pub struct ProxyFlow {
    client_addr: SocketAddr,
    /// The interface's wire: packets the engine handed in, packets smoltcp sent.
    wire: QueueDevice,
    iface: Interface,
    sockets: SocketSet<'static>,
    client: SocketHandle,
    server: SocketHandle,
    tls: TlsEnd,
    /// Opened client plaintext for the server; sealed records (and handshake bytes) for the client.
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    /// The client sent close_notify or FIN: the server gets a FIN once `to_server` is out.
    client_done: bool,
    /// The server closed: close_notify sealed for the client, FIN after it.
    server_done: bool,
    end: Option<End>,
    /// The server's connection was established once (a later close is a reset, not a refusal).
    server_established: bool,
    connect_deadline: Duration,
    pub up: Counters,
    pub down: Counters,
    pub last_activity: Duration,
    now: Duration,
    /// smoltcp's next timer, found after each run.
    next_poll: Option<Duration>,
}

impl std::fmt::Debug for ProxyFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyFlow").field("tls", &self.tls).field("end", &self.end).finish()
    }
}

impl ProxyFlow {
    /// A flow for the client at `client` reaching the service at `service`, relayed to
    /// `backend`; the server's connection is opened at once and must be up within `connect`.
    /// `None` when the addresses cannot be served (mixed families).
    pub fn new(
        now: Duration,
        client: SocketAddr,
        service: SocketAddr,
        backend: SocketAddr,
        tls: Arc<ServerConfig>,
        mtu: usize,
        connect: Duration,
    ) -> Result<ProxyFlow, String> {
        if client.is_ipv4() != service.is_ipv4() || client.is_ipv4() != backend.is_ipv4() {
            return Err("internal: address families differ".into());
        }
        let tls = TlsEnd::new(tls).map_err(|e| format!("internal: {e}"))?;
        let mut wire = QueueDevice::new(mtu);
        let mut config = IfaceConfig::new(HardwareAddress::Ip);
        // Initial sequence numbers from the flow's addresses and time: smoltcp only wants a seed.
        config.random_seed = seed(now, client, backend);
        let mut iface = Interface::new(config, &mut wire, instant(now));
        let prefix = if client.is_ipv4() { 32 } else { 128 };
        iface.update_ip_addrs(|a| {
            // The service's address answers the client, the client's own opens to the server.
            let _ = a.push(IpCidr::new(service.ip().into(), prefix));
            if client.ip() != service.ip() {
                let _ = a.push(IpCidr::new(client.ip().into(), prefix));
            }
        });
        let mut sockets = SocketSet::new(Vec::new());
        let socket = || {
            let rx = tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]);
            let txb = tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]);
            let mut s = tcp::Socket::new(rx, txb);
            // Records and requests go out as they are ready.
            s.set_nagle_enabled(false);
            s
        };
        let mut c = socket();
        c.listen(endpoint(service)).map_err(|e| format!("internal: listen {service}: {e}"))?;
        let mut s = socket();
        s.connect(iface.context(), endpoint(backend), endpoint(client))
            .map_err(|e| format!("internal: connect {backend} from {client}: {e}"))?;
        let client_h = sockets.add(c);
        let server_h = sockets.add(s);
        Ok(ProxyFlow {
            client_addr: client,
            wire,
            iface,
            sockets,
            client: client_h,
            server: server_h,
            tls,
            to_server: Vec::new(),
            to_client: Vec::new(),
            client_done: false,
            server_done: false,
            end: None,
            server_established: false,
            connect_deadline: now + connect,
            up: Counters::default(),
            down: Counters::default(),
            last_activity: now,
            now,
            next_poll: None,
        })
    }

    /// A packet of this flow from either peer; appends the packets to send to `out`.
    pub fn packet(&mut self, now: Duration, pkt: Vec<u8>, out: &mut Vec<Vec<u8>>) {
        self.last_activity = now;
        self.wire.rx.push_back(pkt);
        self.run(now, out);
    }

    /// The timers of both sockets (retransmission, delayed ACK, TIME-WAIT) and the connect bound.
    pub fn timeout(&mut self, now: Duration, out: &mut Vec<Vec<u8>>) {
        self.run(now, out);
    }

    /// When [`ProxyFlow::timeout`] has work next.
    pub fn poll_at(&self) -> Option<Duration> {
        let client_up = self.sockets.get::<tcp::Socket>(self.client).state() != tcp::State::SynReceived;
        let connect =
            (!(self.server_up() && client_up) && self.end.is_none()).then_some(self.connect_deadline);
        self.next_poll.into_iter().chain(connect).min()
    }

    /// Resets both connections (the flow expired while its peers were silent).
    pub fn abort(&mut self, now: Duration, out: &mut Vec<Vec<u8>>) {
        self.fail(FailedSide::Client, "client: idle".into());
        self.run(now, out);
    }

    /// Resets both connections: the flow is being dropped after a panic in its processing.
    pub fn reset(&mut self, now: Duration, out: &mut Vec<Vec<u8>>) {
        self.fail(FailedSide::Client, "internal: the flow's processing panicked".into());
        self.run(now, out);
    }

    fn server_up(&self) -> bool {
        let s = self.sockets.get::<tcp::Socket>(self.server);
        !matches!(s.state(), tcp::State::SynSent | tcp::State::SynReceived)
    }

    pub fn end(&self) -> Option<&End> {
        self.end.as_ref()
    }

    /// Both connections are over (closed or reset) and nothing is left to send.
    pub fn finished(&self) -> bool {
        let over = |h| {
            matches!(self.sockets.get::<tcp::Socket>(h).state(), tcp::State::Closed | tcp::State::TimeWait)
        };
        self.end.is_some() && over(self.client) && over(self.server) && self.wire.tx.is_empty()
    }

    pub fn tls(&self) -> &TlsEnd {
        &self.tls
    }

    /// Bytes held: socket buffers, pending relays and the TLS end's input.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<ProxyFlow>()
            + 4 * SOCKET_BUFFER
            + self.to_client.capacity()
            + self.to_server.capacity()
            + self.tls.buffered()
    }

    fn run(&mut self, now: Duration, out: &mut Vec<Vec<u8>>) {
        self.now = now;
        let t = instant(now);
        // Bounded: each round either moves bytes or stops; a flow cannot spin.
        for _ in 0..64 {
            self.iface.poll(t, &mut self.wire, &mut self.sockets);
            if !self.relay(now) {
                break;
            }
        }
        self.iface.poll(t, &mut self.wire, &mut self.sockets);
        for mut p in self.wire.tx.drain(..) {
            push_to(self.client_addr, &mut p);
            out.push(p);
        }
        let at = self.iface.poll_at(t, &self.sockets);
        self.next_poll = at.map(|i| Duration::from_micros(i.total_micros().max(0) as u64));
    }

    /// Moves bytes between the sockets and the TLS end; true when anything moved.
    fn relay(&mut self, now: Duration) -> bool {
        if self.end.is_some() {
            return self.flush_client();
        }
        let mut moved = false;
        // Peers that went away.
        let client_state = self.sockets.get::<tcp::Socket>(self.client).state();
        let server_state = self.sockets.get::<tcp::Socket>(self.server).state();
        self.server_established |= server_state == tcp::State::Established;
        // A listening socket returns to `Listen` when the client resets its half-open connection.
        if matches!(client_state, tcp::State::Closed | tcp::State::Listen) {
            self.fail(FailedSide::Client, "client: connection reset".into());
            return true;
        }
        if server_state == tcp::State::Closed {
            let why = if self.server_established {
                "backend: connection reset"
            } else {
                "backend: connection refused"
            };
            self.fail(FailedSide::Backend, why.into());
            return true;
        }
        if server_state == tcp::State::SynSent && now >= self.connect_deadline {
            self.fail(FailedSide::Backend, "backend: no answer to the connection".into());
            return true;
        }
        // A client that never acknowledges the SYN-ACK (a spoofed or lost SYN) must not hold
        // a proxy entry until the idle timeout.
        if client_state == tcp::State::SynReceived && now >= self.connect_deadline {
            self.fail(FailedSide::Client, "client: no answer to the SYN-ACK".into());
            return true;
        }
        // Client → TLS end → server.
        let c = self.sockets.get_mut::<tcp::Socket>(self.client);
        while c.can_recv() && self.tls.buffered() < INPUT_CAP {
            let room = INPUT_CAP - self.tls.buffered();
            let tls = &mut self.tls;
            let up = &mut self.up;
            let n = c
                .recv(|b| {
                    let n = b.len().min(room);
                    tls.feed(&b[..n]);
                    up.outer_bytes += n as u64;
                    (n, n)
                })
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            moved = true;
        }
        let client_fin = fin_received(c.state()) && c.recv_queue() == 0;
        if !self.client_done {
            let before = self.to_server.len();
            match self.tls.process(&mut self.to_client, &mut self.to_server, PENDING_CAP) {
                Ok(Status::Open) => {}
                Ok(Status::Closed) => self.client_done = true,
                Err(e) => {
                    self.tls_failed(e);
                    return true;
                }
            }
            self.up.inner_bytes += (self.to_server.len() - before) as u64;
            // A FIN with a partial record pending: the record never completes.
            if client_fin && !self.client_done {
                self.client_done = true;
            }
        }
        moved |= self.flush_client();
        let s = self.sockets.get_mut::<tcp::Socket>(self.server);
        if s.may_send() && !self.to_server.is_empty() {
            let n = s.send_slice(&self.to_server).unwrap_or(0);
            self.to_server.drain(..n);
            moved |= n > 0;
        }
        if self.client_done && self.to_server.is_empty() && s.may_send() {
            s.close();
        }
        // Server → records → client.
        if self.tls.is_established() {
            while !self.server_done && s.can_recv() && self.to_client.len() < PENDING_CAP {
                let mut chunk = Vec::new();
                let _ = s.recv(|b| {
                    let n = b.len().min(MAX_PLAINTEXT);
                    chunk.extend_from_slice(&b[..n]);
                    (n, ())
                });
                if chunk.is_empty() {
                    break;
                }
                self.down.inner_bytes += chunk.len() as u64;
                self.down.records += 1;
                if let Err(e) = self.tls.seal(&chunk, &mut self.to_client) {
                    self.fail(FailedSide::Client, format!("internal: sealing: {e}"));
                    return true;
                }
                moved = true;
            }
            let s = self.sockets.get::<tcp::Socket>(self.server);
            if !self.server_done && fin_received(s.state()) && s.recv_queue() == 0 {
                self.server_done = true;
                self.tls.close_notify(&mut self.to_client);
                moved = true;
            }
        }
        moved |= self.flush_client();
        if self.server_done && self.to_client.is_empty() {
            self.sockets.get_mut::<tcp::Socket>(self.client).close();
        }
        if self.client_done && self.server_done {
            self.end = Some(End::Closed);
        }
        moved
    }

    /// Writes what waits for the client into its socket; true when anything moved.
    fn flush_client(&mut self) -> bool {
        let c = self.sockets.get_mut::<tcp::Socket>(self.client);
        if self.to_client.is_empty() || !c.may_send() {
            return false;
        }
        let n = c.send_slice(&self.to_client).unwrap_or(0);
        self.down.outer_bytes += n as u64;
        self.to_client.drain(..n);
        n > 0
    }

    /// A TLS failure on the client's side: its alert (if rustls chose one) goes out, then FIN;
    /// the server's connection is reset, so no plaintext of a broken session reaches it.
    fn tls_failed(&mut self, e: TlsError) {
        self.to_server.clear();
        self.sockets.get_mut::<tcp::Socket>(self.server).abort();
        self.flush_client();
        self.sockets.get_mut::<tcp::Socket>(self.client).close();
        self.end = Some(End::Failed(FailedSide::Client, e.to_string()));
    }

    /// Either peer failed: both connections are reset.
    fn fail(&mut self, side: FailedSide, why: String) {
        self.to_server.clear();
        self.to_client.clear();
        self.sockets.get_mut::<tcp::Socket>(self.client).abort();
        self.sockets.get_mut::<tcp::Socket>(self.server).abort();
        self.end = Some(End::Failed(side, why));
    }
}

/// Sets PSH on a data segment for the client. smoltcp pushes only the segment that empties its
/// send buffer; a client whose window holds less than two segments then never sees the two
/// full-sized segments after which Linux acknowledges at once, and answers each segment after
/// its delayed-ACK timer (40 ms: 300 bytes per 40 ms). With PSH, Linux acknowledges as soon as
/// its application has read the data (RFC 9293 §3.9.1: PSH delivers promptly).
fn push_to(client: SocketAddr, pkt: &mut [u8]) {
    let Some(seg) = packet::parse(pkt) else { return };
    if seg.dst == client && !seg.payload.is_empty() && !seg.fin && !seg.rst {
        packet::edit_tcp(pkt, &seg, |t| t.set_psh(true));
    }
}

/// The states a socket is in once its peer's FIN arrived.
fn fin_received(s: tcp::State) -> bool {
    matches!(s, tcp::State::CloseWait | tcp::State::LastAck | tcp::State::Closing | tcp::State::TimeWait)
}

/// A seed for smoltcp's initial sequence numbers: distinct per flow and per start.
fn seed(now: Duration, client: SocketAddr, backend: SocketAddr) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (now, client, backend).hash(&mut h);
    h.finish()
}

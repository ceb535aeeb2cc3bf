//! One full-proxy flow: two smoltcp TCP sockets on a private interface. The client's connection
//! ends in a socket listening as the service (its address and port); the server's connection
//! starts from a socket bound to the client's own address and port, so the server still sees
//! the client. Between them the TLS end ([`super::tls::TlsEnd`]) and bounded buffers: a side is
//! read only while what it produced has room, so back-pressure reaches both peers' windows.

use super::persist::Persist;
use super::tls::{Status, TlsEnd, TlsError, MAX_PLAINTEXT};
use crate::packet::{self, Build, Control};
use crate::queue_device::QueueDevice;
use crate::seq::Seq;
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

/// An end-to-end flow's client connection as it stands when the proxy takes it over: what the
/// client already knows, which the proxy's own stack must go on speaking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Adoption {
    pub client_isn: Seq,
    /// The server's ISN, which the client acknowledged.
    pub server_isn: Seq,
    /// The client's own MSS (before the clamp).
    pub mss: u16,
    /// The shifts the client's and the server's SYNs offered.
    pub client_wscale: Option<u8>,
    pub server_wscale: Option<u8>,
    /// The client's window field in its first data segment.
    pub window: u16,
}

/// Sequence and window translation between the proxy's stack and an adopted client connection.
#[derive(Clone, Copy, Debug)]
struct Adopted {
    service: SocketAddr,
    /// Client-known sequence number minus the stack's, for the stack's bytes.
    offset: u32,
    /// The stack's window shift, and the one the client applies to windows it receives.
    stack_shift: u8,
    client_shift: u8,
}

impl Adopted {
    /// A packet of the stack toward the client: its sequence number and window in the client's
    /// terms.
    fn toward_client(&self, pkt: &mut [u8]) {
        let Some(seg) = packet::parse(pkt) else { return };
        let window = (u32::from(seg.window) << self.stack_shift) >> self.client_shift;
        packet::edit_tcp(pkt, &seg, |t| {
            t.set_seq_number(smoltcp::wire::TcpSeqNumber(seg.seq.0.wrapping_add(self.offset) as i32));
            t.set_window_len(window.min(u32::from(u16::MAX)) as u16);
        });
    }

    /// A packet of the client toward the stack: its acknowledgment in the stack's terms (SACK
    /// blocks are left: the stack was not offered SACK and ignores them).
    fn toward_stack(&self, pkt: &mut [u8]) {
        let Some(seg) = packet::parse(pkt) else { return };
        if seg.dst != self.service {
            return;
        }
        if let Some(ack) = seg.ack {
            packet::edit_tcp(pkt, &seg, |t| {
                t.set_ack_number(smoltcp::wire::TcpSeqNumber(ack.0.wrapping_sub(self.offset) as i32))
            });
        }
    }
}

pub struct ProxyFlow {
    client_addr: SocketAddr,
    /// Set when the client's connection was adopted mid-stream.
    adopted: Option<Adopted>,
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
    /// How the connection to the server went (up, or refused / unanswered), not yet taken by
    /// [`ProxyFlow::take_connect`]: a balanced pool's member health counts it.
    connect: Option<bool>,
    connect_deadline: Duration,
    pub up: Counters,
    pub down: Counters,
    pub last_activity: Duration,
    now: Duration,
    /// smoltcp's next timer (or a persist timer), found after each run.
    next_poll: Option<Duration>,
    /// The persist timers smoltcp lacks, toward the client and toward the server.
    persist: [Persist; 2],
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
            adopted: None,
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
            connect: None,
            connect_deadline: now + connect,
            up: Counters::default(),
            down: Counters::default(),
            last_activity: now,
            now,
            next_poll: None,
            persist: [Persist::default(); 2],
        })
    }

    /// A flow taking over the client's connection as it stands (`a`): the stack's listening
    /// socket is fed a SYN and an ACK the client sent long ago, in effect (its ISN, MSS and
    /// window scale; never on the wire), its SYN-ACK is dropped, and from then on its sequence
    /// numbers and windows are translated into those the client knows (the server's ISN and
    /// shift). The server's connection is opened anew as for a flow switched at its SYN.
    #[allow(clippy::too_many_arguments)]
    pub fn adopt(
        now: Duration,
        client: SocketAddr,
        service: SocketAddr,
        backend: SocketAddr,
        tls: Arc<ServerConfig>,
        mtu: usize,
        connect: Duration,
        a: Adoption,
    ) -> Result<ProxyFlow, String> {
        let mut f = ProxyFlow::new(now, client, service, backend, tls, mtu, connect)?;
        // Scaling is in force only when both SYNs offered it.
        let both = a.client_wscale.is_some() && a.server_wscale.is_some();
        let client_shift = if both { a.client_wscale.unwrap_or(0) } else { 0 };
        let syn_window = (u32::from(a.window) << client_shift).min(u32::from(u16::MAX)) as u16;
        let syn = Build {
            src: client,
            dst: service,
            seq: a.client_isn,
            ack: None,
            control: Control::None,
            window: syn_window,
            payload: &[],
        }
        .emit_syn(a.mss, a.client_wscale.filter(|_| both))
        .ok_or("internal: address families differ")?;
        f.wire.rx.push_back(syn);
        f.iface.poll(instant(now), &mut f.wire, &mut f.sockets);
        let at = f
            .wire
            .tx
            .iter()
            .position(|p| packet::parse(p).is_some_and(|s| s.syn && s.ack.is_some() && s.dst == client));
        let synack = at.map(|i| f.wire.tx.remove(i)).ok_or("internal: no SYN-ACK to adopt")?;
        let s = packet::parse(&synack).ok_or("internal: no SYN-ACK to adopt")?;
        let stack_shift = packet::window_scale(&synack[s.tcp.start + 20..s.payload.start]).unwrap_or(0);
        let ack = Build {
            src: client,
            dst: service,
            seq: a.client_isn + 1,
            ack: Some(s.seq + 1),
            control: Control::None,
            window: a.window,
            payload: &[],
        }
        .emit()
        .ok_or("internal: address families differ")?;
        f.wire.rx.push_back(ack);
        f.adopted = Some(Adopted {
            service,
            offset: a.server_isn.0.wrapping_sub(s.seq.0),
            stack_shift: if both { stack_shift } else { 0 },
            client_shift: if both { a.server_wscale.unwrap_or(0) } else { 0 },
        });
        Ok(f)
    }

    /// A packet of this flow from either peer; appends the packets to send to `out`.
    pub fn packet(&mut self, now: Duration, mut pkt: Vec<u8>, out: &mut Vec<Vec<u8>>) {
        self.last_activity = now;
        if let Some(a) = &self.adopted {
            a.toward_stack(&mut pkt);
        }
        if let Some(seg) = packet::parse(&pkt) {
            self.persist[usize::from(seg.src != self.client_addr)].peer_sent(&seg);
        }
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

    /// Once: whether the connection to the server came up (true) or was refused or left
    /// unanswered until the connect bound (false); `None` while undecided or after it was taken.
    pub fn take_connect(&mut self) -> Option<bool> {
        self.connect.take()
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
        for p in &self.wire.tx {
            if let Some(seg) = packet::parse(p) {
                self.persist[usize::from(seg.dst != self.client_addr)].stack_sent(&seg);
            }
        }
        for (i, h) in [self.client, self.server].into_iter().enumerate() {
            let queued = self.sockets.get::<tcp::Socket>(h).send_queue() > 0;
            self.persist[i].update(now, queued);
            if let Some(probe) = self.persist[i].fire(now) {
                self.wire.tx.push(probe);
            }
        }
        for mut p in self.wire.tx.drain(..) {
            if let Some(a) =
                self.adopted.filter(|_| packet::parse(&p).is_some_and(|s| s.dst == self.client_addr))
            {
                a.toward_client(&mut p);
            }
            push_to(self.client_addr, &mut p);
            out.push(p);
        }
        let at = self.iface.poll_at(t, &self.sockets);
        let at = at.map(|i| Duration::from_micros(i.total_micros().max(0) as u64));
        self.next_poll = at.into_iter().chain(self.persist.iter().filter_map(Persist::deadline)).min();
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
        if server_state == tcp::State::Established && !self.server_established {
            self.server_established = true;
            self.connect = Some(true);
        }
        // A listening socket returns to `Listen` when the client resets its half-open connection.
        if matches!(client_state, tcp::State::Closed | tcp::State::Listen) {
            self.fail(FailedSide::Client, "client: connection reset".into());
            return true;
        }
        if server_state == tcp::State::Closed {
            let why = if self.server_established {
                "backend: connection reset"
            } else {
                self.connect = Some(false);
                "backend: connection refused"
            };
            self.fail(FailedSide::Backend, why.into());
            return true;
        }
        if server_state == tcp::State::SynSent && now >= self.connect_deadline {
            self.connect = Some(false);
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

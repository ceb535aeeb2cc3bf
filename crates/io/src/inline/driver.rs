//! The bridge thread: poll(2) on both rings and the wake pipe, frames through the bridge, what it
//! returns written out in one flush per ring. Time is the thread's monotonic clock since start,
//! the engine's timers bound the wait.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tlsgate_core::side::Side as Blame;
use tlsgate_inline::bridge::{Bridge, FrameSink, InFrame, Side};
use tlsgate_inline::engine::{Engine, Stats};
use tlsgate_inline::packet::TcpChecksum;
use tlsgate_inline::proxy::flow::{End, FailedSide};
use tlsgate_inline::proxy::ProxyEvent;

use super::ring::{Link, PacketRing, RingStats};
use super::{InlineSettings, InlineSnapshot, Request};

/// The longest wait without an engine timer: requests wake the thread at once anyway.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// Counters are compared with what was last logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Runs the bridge until asked to stop (`None`) or until it cannot go on: then the reason, already
/// logged.
pub(super) fn run(
    settings: InlineSettings,
    mut wake: io::PipeReader,
    inbox: mpsc::Receiver<Request>,
    opened: mpsc::SyncSender<io::Result<()>>,
) -> Option<String> {
    // The ring's error names the interface and, without permission, the capabilities.
    let open = |iface: &str| PacketRing::open(iface, &settings.ring);
    let (mut client, mut server) = match (open(&settings.client_iface), open(&settings.server_iface)) {
        (Ok(c), Ok(s)) => (c, s),
        (Err(e), _) | (_, Err(e)) => {
            let _ = opened.send(Err(e));
            return None;
        }
    };
    // The bridge answers ARP for virtual addresses on the client side with that interface's MAC.
    let mtu = client.mtu().min(server.mtu());
    let mut bridge = Bridge::new(Engine::new(settings.engine), client.mac(), mtu);
    // The rings send every TCP frame whose checksum field holds the pseudo-header sum with
    // checksum offload (`gso::plan`): the engine need not sum the bytes it sends, nor the
    // bridge those a sender left partial.
    bridge.set_tcp_checksum(TcpChecksum::Partial);
    // The rings send a packet larger than the MTU as a GSO frame: records leave whole, one
    // packet built and routed per record instead of one per segment.
    bridge.set_segmentation_offload(true);
    let _ = opened.send(Ok(()));

    let start = Instant::now();
    let mut out = Outbox::default();
    let mut logged = Logged { stats: Stats::default(), rings: [RingStats::default(); 2], at: start };
    let mut release = super::release::Release::new(settings.release_memory);
    // Per ring, client then server: its interface was down when last looked at. Looked at again
    // every round (at least once a second) until up: a removal reports no error of its own once
    // the interface went down first, and it does go down first.
    let mut down = [false; 2];
    loop {
        let now = start.elapsed();
        // Found once a round (it looks at every flow): frames handled below only add later
        // timers, which the next round's wait takes into account.
        let deadline = bridge.poll_timeout();
        let wait = deadline.map_or(IDLE_WAIT, |t| t.saturating_sub(now)).min(IDLE_WAIT);
        let woken = match wait_readable(&client, &server, &wake, wait) {
            Ok(woken) => woken,
            Err(e) => {
                tracing::error!(side = %Blame::Internal, error = %e, "inline: poll failed, stopping");
                return Some(format!("inline: poll failed: {e}"));
            }
        };
        let errors = [woken.client_error, woken.server_error];
        for (i, (ring, side)) in [(&client, Side::Client), (&server, Side::Server)].into_iter().enumerate() {
            if errors[i] || down[i] {
                match check_link(ring, side, down[i]) {
                    Ok(is_down) => down[i] = is_down,
                    Err(reason) => return Some(reason),
                }
            }
        }
        if woken.request {
            let _ = wake.read(&mut [0u8; 64]);
            for request in inbox.try_iter() {
                match request {
                    Request::Stop => return None,
                    Request::Reload(services, reply) => {
                        let _ = reply.send(bridge.engine_mut().reload_tls(&services));
                    }
                    Request::Snapshot(reply) => {
                        let _ = reply.send(snapshot(&bridge, client.stats(), server.stats()));
                    }
                }
            }
        }
        let now = start.elapsed();
        for (ring, from) in [(&mut client, Side::Client), (&mut server, Side::Server)] {
            ring.recv(|f| {
                let frame =
                    InFrame { from, data: f.data, csum_partial: f.csum_partial, gso_size: f.gso_size };
                bridge.handle_frame(now, frame, &mut out);
            });
        }
        if deadline.is_some_and(|t| t <= now) {
            bridge.handle_timeout(now, &mut out);
        }
        release.tick(Instant::now(), bridge.engine().parked_total());
        for (side, eth, frame, gso_size) in out.0.drain(..) {
            let ring = match side {
                Side::Client => &mut client,
                Side::Server => &mut server,
            };
            let queued = match eth {
                Some(eth) => ring.queue_packet(eth, frame, gso_size),
                None => ring.queue_segmented(frame, gso_size),
            };
            if let Err(e) = queued {
                tracing::warn!(side = %Blame::Internal, to = ?side, error = %e, "inline: frame not sent");
            }
        }
        for ring in [&mut client, &mut server] {
            if let Err(e) = ring.flush() {
                tracing::warn!(side = %Blame::Internal, error = %e, "inline: flush failed");
            }
        }
        // The engine's counters sum over every flow: read only when a log line may be due.
        let at = Instant::now();
        if logged.due(at) {
            logged.log_changes(bridge.engine().stats());
            logged.log_rings([(client.iface(), client.stats()), (server.iface(), server.stats())]);
            logged.at = at;
        }
        log_proxy_events(bridge.engine_mut().take_proxy_events());
        for key in bridge.engine_mut().take_panicked() {
            tracing::error!(
                side = %Blame::Internal,
                client = %key.client,
                server = %key.server,
                "inline: a flow's processing panicked; that flow was reset on both sides and dropped, the others go on"
            );
        }
    }
}

/// The bridge's frames of one round for the rings: side, the Ethernet header when kept apart
/// from the packet, the frame or packet, its segment size.
#[derive(Default)]
struct Outbox(Vec<(Side, Option<EthHeader>, Vec<u8>, u16)>);

type EthHeader = [u8; 14];

impl FrameSink for Outbox {
    fn frame(&mut self, side: Side, frame: Vec<u8>, gso_size: u16) {
        self.0.push((side, None, frame, gso_size));
    }

    fn packet(&mut self, side: Side, eth: [u8; 14], packet: Vec<u8>, gso_size: u16) {
        self.0.push((side, Some(eth), packet, gso_size));
    }
}

/// One line per flow switched to the full proxy (with why) and per full-proxy flow that ended
/// (with which side failed). The engine keeps at most a bounded number between two rounds.
fn log_proxy_events(events: Vec<ProxyEvent>) {
    for e in events {
        match e {
            ProxyEvent::Switched { key, reason } => tracing::info!(
                client = %key.client,
                server = %key.server,
                reason = reason.as_str(),
                "inline: flow switched to the full proxy"
            ),
            ProxyEvent::Ended { key, end: End::Closed } => {
                tracing::debug!(client = %key.client, server = %key.server, "inline: full-proxy flow closed")
            }
            ProxyEvent::Ended { key, end: End::Failed(side, why) } => {
                let side = match side {
                    FailedSide::Client => Blame::Client,
                    FailedSide::Backend => Blame::Backend,
                };
                tracing::info!(%side, client = %key.client, server = %key.server, error = %why, "inline: full-proxy flow failed")
            }
        }
    }
}

/// What ended a wait: a request, an error reported on a ring's socket.
#[derive(Default)]
struct Woken {
    request: bool,
    client_error: bool,
    server_error: bool,
}

/// Waits until a ring or the wake pipe is readable, a ring's socket has an error, or `wait`
/// passed.
fn wait_readable(
    client: &PacketRing,
    server: &PacketRing,
    wake: &io::PipeReader,
    wait: Duration,
) -> io::Result<Woken> {
    let mut fds = [
        PollFd::new(client.as_fd(), PollFlags::POLLIN),
        PollFd::new(server.as_fd(), PollFlags::POLLIN),
        PollFd::new(wake.as_fd(), PollFlags::POLLIN),
    ];
    let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(e.into()),
    }
    let error = |fd: &PollFd| fd.revents().is_some_and(|r| r.contains(PollFlags::POLLERR));
    Ok(Woken {
        request: fds[2].revents().is_some_and(|r| !r.is_empty()),
        client_error: error(&fds[0]),
        server_error: error(&fds[1]),
    })
}

/// After a ring's socket reported an error (read here, which clears it) or while its interface
/// is down: an interface that is down is waited for (the kernel delivers again once it is up),
/// one that is gone ends the bridge, since no frame will cross it again. Returns whether it is
/// down.
fn check_link(ring: &PacketRing, side: Side, was_down: bool) -> Result<bool, String> {
    let error = ring.take_error().map_or_else(|| "none".to_string(), |e| e.to_string());
    let iface = ring.iface();
    let which = match side {
        Side::Client => "client",
        Side::Server => "server",
    };
    match ring.link() {
        Link::Gone => {
            let reason = format!("inline: {which} interface {iface} is gone from this network namespace");
            tracing::error!(side = %Blame::Config, to = ?side, iface, %error, "{reason}; stopping");
            Err(reason)
        }
        Link::Down => {
            if !was_down {
                tracing::warn!(
                    side = %Blame::Config,
                    to = ?side,
                    iface,
                    %error,
                    "inline: interface went down; frames cross it again once it is up"
                );
            }
            Ok(true)
        }
        Link::Up if was_down => {
            tracing::info!(to = ?side, iface, "inline: interface is up again");
            Ok(false)
        }
        Link::Up => {
            tracing::warn!(side = %Blame::Internal, to = ?side, iface, %error, "inline: interface reported an error");
            Ok(false)
        }
    }
}

fn snapshot(bridge: &Bridge, client: RingStats, server: RingStats) -> InlineSnapshot {
    InlineSnapshot {
        report: bridge.engine().report(),
        engine: bridge.engine().stats(),
        bridge: bridge.stats(),
        client_ring: client,
        server_ring: server,
    }
}

/// The engine is sans-IO and logs nothing; the events an operator must hear about are its
/// counters moving, logged here at most once a second each.
struct Logged {
    stats: Stats,
    /// The client's ring's counters, then the server's.
    rings: [RingStats; 2],
    at: Instant,
}

impl Logged {
    fn due(&self, at: Instant) -> bool {
        at.duration_since(self.at) >= LOG_EVERY
    }

    fn log_changes(&mut self, now: Stats) {
        if now == self.stats {
            return;
        }
        let was = self.stats;
        let moved = |n: u64, w: u64| n.saturating_sub(w);
        if moved(now.syn_dropped, was.syn_dropped) > 0 {
            tracing::warn!(side = %Blame::Client, dropped = moved(now.syn_dropped, was.syn_dropped), total = now.syn_dropped, "inline: SYNs dropped, the flow table is full");
        }
        if moved(now.embryonic_evicted, was.embryonic_evicted) > 0 {
            tracing::warn!(side = %Blame::Client, evicted = moved(now.embryonic_evicted, was.embryonic_evicted), total = now.embryonic_evicted, "inline: flow table full, oldest half-open flows evicted (SYN flood?)");
        }
        if moved(now.members_taken_out, was.members_taken_out) > 0 {
            tracing::warn!(side = %Blame::Backend, failures = now.member_failures, "inline: a pool member refused or ignored connections and is skipped for a while");
        }
        if moved(now.orphan_server_data, was.orphan_server_data) > 0 {
            tracing::warn!(side = %Blame::Backend, segments = moved(now.orphan_server_data, was.orphan_server_data), "inline: server data on no known flow dropped and reset");
        }
        if moved(now.not_tls, was.not_tls) > 0 {
            tracing::info!(side = %Blame::Client, flows = moved(now.not_tls, was.not_tls), "inline: flows to a service that did not start with a TLS handshake passed through");
        }
        if moved(now.flows_reset, was.flows_reset) > 0 {
            tracing::info!(
                flows = moved(now.flows_reset, was.flows_reset),
                total = now.flows_reset,
                "inline: flows reset"
            );
        }
        if moved(now.midstream, was.midstream) > 0 {
            tracing::info!(
                segments = moved(now.midstream, was.midstream),
                "inline: segments of flows begun before the engine passed unchanged"
            );
        }
        self.stats = now;
    }

    /// Frames lost at the rings: the kernel's receive ring full (the bridge thread fell behind),
    /// a frame cut short (larger than a block), a send refused (the sending socket's buffer
    /// full, the interface down). Each is a loss its sender repairs, slowly if it goes on.
    fn log_rings(&mut self, now: [(&str, RingStats); 2]) {
        for (was, (iface, now)) in self.rings.iter_mut().zip(now) {
            let moved = |n: u64, w: u64| n.saturating_sub(w);
            if moved(now.kernel_drops, was.kernel_drops) > 0 {
                tracing::warn!(side = %Blame::Internal, iface, dropped = moved(now.kernel_drops, was.kernel_drops), total = now.kernel_drops, "inline: receive ring full, frames dropped by the kernel");
            }
            if moved(now.rx_truncated, was.rx_truncated) > 0 {
                tracing::warn!(side = %Blame::Internal, iface, dropped = moved(now.rx_truncated, was.rx_truncated), total = now.rx_truncated, "inline: frames larger than a ring block dropped");
            }
            if moved(now.tx_errors, was.tx_errors) > 0 {
                tracing::warn!(side = %Blame::Internal, iface, dropped = moved(now.tx_errors, was.tx_errors), total = now.tx_errors, "inline: frames the kernel refused to send dropped");
            }
            *was = now;
        }
    }
}

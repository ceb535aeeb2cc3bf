//! The connect gate's kernel splice (`--kernel-splice IFACE`): after the downgrade, the portal's
//! connection and the destination's become one TCP connection end to end, spliced below the
//! gate's sockets by a BPF program at tc ingress (`splice.bpf.c`), which rewrites each segment
//! of one connection into a segment of the other. The gate's process and its sockets leave
//! the data path: no system call, copy or TCP processing per byte on the gate.
//!
//! How the switch is made without losing or reordering a byte:
//! 1. before connecting, the destination leg holds the destination's data back (it
//!    retransmits) and learns its timestamp clock (`connect`);
//! 2. before the `200`, the portal leg learns the portal's clock and interface, and the gate
//!    reads where the portal's close_notify will start (`prepare`);
//! 3. with the `200` sent and its close_notify sealed but not sent, both legs go live
//!    (`splice`): the portal's stream after its close_notify continues the gate's (empty)
//!    stream to the destination, the destination's continues the gate's stream to the portal
//!    after its close_notify. The program reads the close_notify's length from its header;
//! 4. the close_notify leaves; once the portal has acknowledged it, the gate's socket to the
//!    portal is put in repair mode (it sends nothing more), the destination's at once. Both are
//!    kept, silent, while the spliced connection lives (the destination socket's port must not
//!    be reused) and close without a segment at its end.
//!
//! What this needs: Linux with TCX (6.6), CAP_BPF and CAP_NET_ADMIN, IPv4, and both
//! connections with timestamps and window scaling (Linux's defaults); other connections
//! are relayed by `splice` as before, the reason logged.

mod legs;
#[cfg(test)]
mod program_tests;
mod sockets;

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use aya::programs::{SchedClassifier, TcAttachType};
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

use legs::{Leg, LegKey, Plan};

/// Built from splice.bpf.c by build.sh (a test checks the two agree). The ELF parser reads
/// its fields in place: the bytes must be 8-byte aligned, which `include_bytes!` alone is not.
static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!("splice.bpf.o"));

#[repr(C, align(8))]
struct Aligned<B: ?Sized>(B);

// SAFETY: both are plain `repr(C)` integers and byte arrays without padding (the explicit
// `pad` byte keeps `Leg` free of implicit padding): any bytes are a valid value.
#[allow(unsafe_code)]
unsafe impl aya::Pod for LegKey {}
#[allow(unsafe_code)]
unsafe impl aya::Pod for Leg {}

/// After both FINs (or a RST) the legs stay this long for the last ACK and retransmissions.
const LINGER: Duration = Duration::from_secs(2);

/// Which of a spliced connection's legs an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Portal,
    Dest,
}

type Waiters = HashMap<LegKey, (Side, mpsc::UnboundedSender<(Side, u32)>)>;

/// The program attached to the gate's interfaces, its leg table and its event ring.
pub struct KernelSplice {
    legs: Mutex<BpfHashMap<MapData, LegKey, Leg>>,
    waiters: Arc<Mutex<Waiters>>,
    reader: tokio::task::JoinHandle<()>,
    // Dropping it detaches the program (the tests run it directly).
    #[cfg_attr(not(test), allow(dead_code))]
    bpf: Mutex<aya::Ebpf>,
}

impl Drop for KernelSplice {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl KernelSplice {
    /// Loads the program and attaches it at ingress of each interface the portals and the
    /// destinations are reached through.
    pub fn start(ifaces: &[String]) -> Result<Arc<KernelSplice>, String> {
        let needs = "(needs Linux 6.6 or later, CAP_BPF and CAP_NET_ADMIN)";
        let mut bpf =
            aya::Ebpf::load(&OBJECT.0).map_err(|e| format!("loading the BPF program: {e} {needs}"))?;
        let prog: &mut SchedClassifier = bpf
            .program_mut("connect_splice")
            .ok_or("the BPF object has no connect_splice")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        prog.load().map_err(|e| format!("verifying the BPF program: {e} {needs}"))?;
        for iface in ifaces {
            prog.attach(iface, TcAttachType::Ingress)
                .map_err(|e| format!("attaching the BPF program to {iface}: {e} {needs}"))?;
        }
        let legs = BpfHashMap::try_from(bpf.take_map("LEGS").ok_or("no LEGS map")?)
            .map_err(|e| format!("LEGS map: {e}"))?;
        let ring = RingBuf::try_from(bpf.take_map("EVENTS").ok_or("no EVENTS map")?)
            .map_err(|e| format!("EVENTS map: {e}"))?;
        // SAFETY: the ring owns its map's fd, and the AsyncFd owns the ring: the fd stays open
        // and the same for the AsyncFd's whole life.
        #[allow(unsafe_code)]
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| format!("EVENTS map: {e}"))?;
        let waiters = Arc::new(Mutex::new(Waiters::new()));
        let reader = tokio::spawn(read_events(ring, waiters.clone()));
        Ok(Arc::new(KernelSplice { legs: Mutex::new(legs), waiters, reader, bpf: Mutex::new(bpf) }))
    }

    fn put(&self, key: &LegKey, leg: Leg) -> io::Result<()> {
        self.legs.lock().unwrap().insert(key, leg, 0).map_err(|e| io::Error::other(format!("leg table: {e}")))
    }

    fn get(&self, key: &LegKey) -> Option<Leg> {
        self.legs.lock().unwrap().get(key, 0).ok()
    }

    fn remove(&self, keys: &[(LegKey, Side)]) {
        let mut waiters = self.waiters.lock().unwrap();
        let mut legs = self.legs.lock().unwrap();
        for (key, _) in keys {
            waiters.remove(key);
            let _ = legs.remove(key);
        }
    }

    /// Connects to the destination from a port the destination leg already watches, its data
    /// held back until the splice (or until the returned guard is dropped). With the leg table
    /// full, without a leg: the connection is then relayed in user space.
    pub async fn connect(
        self: &Arc<Self>,
        to: SocketAddrV4,
        timeout: Duration,
    ) -> io::Result<(TcpStream, Option<Spliced>)> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source_for(to)?.into(), 0))?;
        let SocketAddr::V4(local) = socket.local_addr()? else { unreachable!("bound to IPv4") };
        let (tx, rx) = mpsc::unbounded_channel();
        let mut spliced = Spliced {
            ks: self.clone(),
            keys: Vec::new(),
            events: rx,
            tx,
            dest_socket: None,
            portal_socket: None,
            live: false,
            fins: (false, false),
            ended: false,
        };
        let spliced = match spliced.add(LegKey::new(to, local), Side::Dest, legs::watching(legs::LEG_FREEZE))
        {
            Ok(()) => Some(spliced),
            Err(e) => {
                // The table full (or the map refusing the entry): worth a warning, not only a count.
                tracing::warn!(error = %e, "connect gate: the kernel splice's table refused an entry");
                NotSpliced::new("table", e).report();
                None
            }
        };
        let tcp = tokio::time::timeout(timeout, socket.connect(to.into()))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "timed out"))??;
        Ok((tcp, spliced))
    }
}

/// The local address the kernel would send from toward `to` (a UDP socket's connect only
/// looks up the route).
fn source_for(to: SocketAddrV4) -> io::Result<std::net::Ipv4Addr> {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0")?;
    probe.connect(to)?;
    match probe.local_addr()? {
        SocketAddr::V4(a) => Ok(*a.ip()),
        SocketAddr::V6(_) => Err(io::Error::other("IPv6 source for an IPv4 destination")),
    }
}

async fn read_events(mut ring: AsyncFd<RingBuf<MapData>>, waiters: Arc<Mutex<Waiters>>) {
    loop {
        let Ok(mut ready) = ring.readable_mut().await else { return };
        while let Some(item) = ready.get_inner_mut().next() {
            if item.len() < 16 {
                continue;
            }
            let mut key = LegKey::default();
            key.saddr.copy_from_slice(&item[0..4]);
            key.daddr.copy_from_slice(&item[4..8]);
            key.sport.copy_from_slice(&item[8..10]);
            key.dport.copy_from_slice(&item[10..12]);
            let kind = u32::from_ne_bytes(item[12..16].try_into().unwrap());
            if let Some((side, tx)) = waiters.lock().unwrap().get(&key) {
                let _ = tx.send((*side, kind));
            }
        }
        ready.clear_ready();
    }
}

/// Where the gate's bytes on `tcp` end now (everything written to it).
pub fn write_seq(tcp: &TcpStream) -> io::Result<u32> {
    sockets::write_seq(tcp.as_raw_fd())
}

/// What the gate reads before its `200`, for [`Spliced::splice`].
pub struct Prepared {
    plan: Plan,
}

/// Why a connection is relayed in user space instead: `reason`, a short name (the label of
/// `tlsgate_connect_kernel_splice_fallbacks_total`), and what happened, for the log.
pub struct NotSpliced {
    pub reason: &'static str,
    pub detail: String,
}

impl NotSpliced {
    pub fn new(reason: &'static str, detail: impl ToString) -> NotSpliced {
        NotSpliced { reason, detail: detail.to_string() }
    }

    /// Logged and counted: the tunnel goes on with the `splice` relay.
    pub fn report(&self) {
        tracing::info!(reason = %self.detail, "connect gate: not spliced in the kernel; relayed with splice");
        tlsgate_telemetry::metrics::metrics()
            .connect_kernel_splice_fallbacks
            .get_or_create(&tlsgate_telemetry::metrics::ReasonLabel { reason: self.reason.into() })
            .inc();
    }
}

/// One connection's legs (removed when dropped) and the gate's two sockets once silenced.
pub struct Spliced {
    ks: Arc<KernelSplice>,
    keys: Vec<(LegKey, Side)>,
    events: mpsc::UnboundedReceiver<(Side, u32)>,
    tx: mpsc::UnboundedSender<(Side, u32)>,
    dest_socket: Option<TcpStream>,
    portal_socket: Option<TcpStream>,
    /// The legs rewrite segments.
    live: bool,
    /// FINs seen (from the portal, from the destination).
    fins: (bool, bool),
    /// Both FINs or a RST went through.
    ended: bool,
}

impl Drop for Spliced {
    /// A tunnel that ended by FIN or RST loses its legs now, and the gate's sockets close
    /// without a segment. One the gate ends while it is live (a revoked portal, an error) resets
    /// both peers: its legs turn every segment into a RST toward the other peer, each silenced
    /// socket sends one window probe (an old sequence number, which the peer answers at once with
    /// an ACK: that ACK becomes the RST the other peer accepts), and the legs go after the linger.
    fn drop(&mut self) {
        let keys = std::mem::take(&mut self.keys);
        if !self.live || self.ended {
            self.ks.remove(&keys);
            return;
        }
        for (key, _) in &keys {
            if let Some(leg) = self.ks.get(key) {
                let _ = self.ks.put(key, Leg { state: legs::LEG_RESET, ..leg });
            }
        }
        for tcp in self.portal_socket.iter().chain(&self.dest_socket) {
            let _ = sockets::probe_then_silence(tcp.as_raw_fd());
        }
        let ks = self.ks.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LINGER).await;
            ks.remove(&keys);
        });
    }
}

impl Spliced {
    fn add(&mut self, key: LegKey, side: Side, leg: Leg) -> io::Result<()> {
        self.ks.waiters.lock().unwrap().insert(key, (side, self.tx.clone()));
        self.keys.push((key, side));
        self.ks.put(&key, leg)
    }

    fn key(&self, side: Side) -> LegKey {
        self.keys.iter().find(|(_, s)| *s == side).map(|(k, _)| *k).expect("leg added")
    }

    /// Before the `200`: whether the two connections can be spliced, and where the portal's
    /// close_notify will start. The portal leg starts watching.
    pub fn prepare(&mut self, portal: &TcpStream, dest: &TcpStream) -> Result<Prepared, NotSpliced> {
        let why = |e: io::Error| NotSpliced::new("socket", e);
        let (pi, di) = (
            sockets::tcp_info(portal.as_raw_fd()).map_err(why)?,
            sockets::tcp_info(dest.as_raw_fd()).map_err(why)?,
        );
        if let Some(m) = sockets::mismatch(&pi, &di) {
            return Err(m);
        }
        let plan = Plan {
            portal: sockets::view(portal, &pi).map_err(why)?,
            dest: sockets::view(dest, &di).map_err(why)?,
        };
        let key = LegKey::new(plan.portal.peer, plan.portal.local);
        self.add(key, Side::Portal, legs::watching(legs::LEG_WATCH))
            .map_err(|e| NotSpliced::new("table", e))?;
        Ok(Prepared { plan })
    }

    /// Both legs live. `portal_write_seq` is where the gate's bytes to the portal end, its
    /// close_notify (sealed, not yet sent) included.
    pub fn splice(&mut self, prepared: Prepared, portal_write_seq: u32) -> io::Result<()> {
        let mut plan = prepared.plan;
        plan.portal.write_seq = portal_write_seq;
        let (pk, dk) = (self.key(Side::Portal), self.key(Side::Dest));
        let learned = |k| self.ks.get(&k).ok_or_else(|| io::Error::other("a leg vanished"));
        let ((_, pl), (_, dl)) = legs::spliced(&plan, learned(pk)?, learned(dk)?);
        // The destination leg first: until the portal leg is live too, the program drops
        // what arrives on it, and retransmission brings it again.
        self.ks.put(&dk, dl)?;
        self.live = true;
        self.ks.put(&pk, pl)
    }

    /// The gate's socket to the destination, silenced and kept for the splice's life.
    pub fn keep_dest(&mut self, dest: TcpStream) -> io::Result<()> {
        sockets::silence(dest.as_raw_fd())?;
        self.dest_socket = Some(dest);
        Ok(())
    }

    /// Waits until the portal has acknowledged everything the gate sent it (its close_notify
    /// last), then silences the gate's socket to it (it would retransmit until then).
    pub async fn release_portal(&mut self, portal: TcpStream, timeout: Duration) -> io::Result<()> {
        self.portal_socket = Some(portal);
        let acked = async {
            while let Some((side, kind)) = self.events.recv().await {
                if (side, kind) == (Side::Portal, legs::EV_ACKED) {
                    return true;
                }
                if self.note_end(side, kind) {
                    return false;
                }
            }
            false
        };
        match tokio::time::timeout(timeout, acked).await {
            Ok(true) => {}
            Ok(false) => return Err(io::Error::other("reset before the portal acknowledged the downgrade")),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the portal did not acknowledge the downgrade answer in time (client side)",
                ))
            }
        }
        // Kept, silent, until the end: the peer-reset above needs it.
        if let Some(s) = &self.portal_socket {
            sockets::silence(s.as_raw_fd())?;
        }
        Ok(())
    }

    /// Records a FIN or RST; whether the spliced connection has ended (FIN both ways, or a RST).
    fn note_end(&mut self, side: Side, kind: u32) -> bool {
        match (side, kind) {
            (_, legs::EV_RST) => self.ended = true,
            (Side::Portal, legs::EV_FIN) => self.fins.0 = true,
            (Side::Dest, legs::EV_FIN) => self.fins.1 = true,
            _ => {}
        }
        self.ended |= self.fins == (true, true);
        self.ended
    }

    /// Until the spliced connection ends (FIN both ways, or a RST), then the linger.
    pub async fn finished(&mut self) {
        while !self.ended {
            let Some((side, kind)) = self.events.recv().await else { break };
            self.note_end(side, kind);
        }
        tokio::time::sleep(LINGER).await;
    }

    /// Payload bytes spliced (portal to destination, destination to portal).
    pub fn totals(&self) -> (u64, u64) {
        let bytes = |side| self.ks.get(&self.key(side)).map(|l| l.bytes).unwrap_or(0);
        (bytes(Side::Portal), bytes(Side::Dest))
    }
}

#[cfg(test)]
mod tests {
    /// The committed object is what build.sh makes of the source (skipped, and said so, where
    /// clang-14 is missing; .ci/run installs it).
    #[test]
    fn the_committed_object_is_built_from_the_source() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/connect/kernel_splice");
        if std::process::Command::new("clang-14").arg("--version").output().is_err() {
            eprintln!("SKIPPED: clang-14 not installed");
            return;
        }
        let out = tempfile::tempdir().unwrap();
        let built = out.path().join("splice.bpf.o");
        let status = std::process::Command::new(dir.join("build.sh")).arg(&built).status().unwrap();
        assert!(status.success(), "build.sh failed");
        assert!(
            std::fs::read(&built).unwrap() == super::OBJECT.0,
            "splice.bpf.o is not what build.sh makes of splice.bpf.c: run build.sh and commit it"
        );
    }
}

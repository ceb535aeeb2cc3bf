//! A test-only impairing hop: frames cross between two interfaces of one namespace with seeded
//! loss, reordering and duplication, as netem would add (this host's kernel has no netem). Put
//! in the path of real Linux TCP it shows what an L2 stage sees under impairment.

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, CloneFlags};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::os::fd::AsFd;
use tlsgate_io::inline::ring::{PacketRing, RingConfig};

use crate::netns::Netns;
use crate::window_clamp::WindowClamp;

#[derive(Clone, Copy, Debug)]
pub struct Impairment {
    pub loss: f64,
    pub reorder: f64,
    pub duplicate: f64,
    pub seed: u64,
}

/// What the hop did, both directions together.
#[derive(Clone, Copy, Debug, Default)]
pub struct HopStats {
    pub forwarded: u64,
    pub dropped: u64,
    pub reordered: u64,
    pub duplicated: u64,
    /// Client frames whose window was clamped.
    pub clamped: u64,
}

/// A frame held back is released after the next frame the same way, or after this long.
const HOLD: Duration = Duration::from_millis(3);

pub struct ImpairHop {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<HopStats>>,
    thread: Option<JoinHandle<()>>,
}

impl ImpairHop {
    /// Starts forwarding between `a` and `b` (interfaces inside `ns`); returns once both are open.
    pub fn start(ns: &Netns, a: &str, b: &str, impairment: Impairment) -> ImpairHop {
        ImpairHop::start_with(ns, a, b, impairment, None)
    }

    /// The same, frames from `a` (the client's side) also passed through `clamp`.
    pub fn start_with(
        ns: &Netns,
        a: &str,
        b: &str,
        impairment: Impairment,
        clamp: Option<WindowClamp>,
    ) -> ImpairHop {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(HopStats::default()));
        let (opened_tx, opened) = std::sync::mpsc::sync_channel(1);
        let path = format!("/var/run/netns/{}", ns.name);
        let (a, b) = (a.to_string(), b.to_string());
        let (stop2, stats2) = (stop.clone(), stats.clone());
        let thread = std::thread::spawn(move || {
            // Entering a network namespace changes only this thread; its sockets stay there.
            let netns = File::open(&path).expect("namespace file");
            setns(netns.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
            let rings = [a, b].map(|i| PacketRing::open(&i, &RingConfig::default()).expect("packet ring"));
            opened_tx.send(()).unwrap();
            forward(rings, impairment, clamp, &stop2, &stats2);
        });
        opened.recv().expect("the impairing hop opened its interfaces");
        ImpairHop { stop, stats, thread: Some(thread) }
    }

    pub fn stats(&self) -> HopStats {
        *self.stats.lock().unwrap()
    }
}

impl Drop for ImpairHop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A frame and its GSO segment size (0: as a wire carries it).
type Frame = (Vec<u8>, u16);

fn forward(
    mut rings: [PacketRing; 2],
    imp: Impairment,
    clamp: Option<WindowClamp>,
    stop: &AtomicBool,
    stats: &Mutex<HopStats>,
) {
    let mut rng = StdRng::seed_from_u64(imp.seed);
    // Per direction (index = the ring the frame leaves by): a frame held back (with its GSO
    // segment size), and since when.
    let mut held: [Option<(Frame, Instant)>; 2] = [None, None];
    while !stop.load(Ordering::Relaxed) {
        {
            let mut fds = rings.each_ref().map(|r| PollFd::new(r.as_fd(), PollFlags::POLLIN));
            let _ = poll(&mut fds, PollTimeout::from(1u16));
        }
        let mut out: [Vec<Frame>; 2] = [Vec::new(), Vec::new()];
        let mut s = stats.lock().unwrap();
        for (from, ring) in rings.iter_mut().enumerate() {
            let to = 1 - from;
            let mut frames = Vec::new();
            ring.recv(|f| frames.push((f.data.to_vec(), f.gso_size)));
            for mut frame in frames {
                if let (0, Some(c)) = (from, &clamp) {
                    if c.apply(&mut frame.0) {
                        s.clamped += 1;
                    }
                }
                if rng.random_bool(imp.loss) {
                    s.dropped += 1;
                    continue;
                }
                if held[to].is_none() && rng.random_bool(imp.reorder) {
                    s.reordered += 1;
                    held[to] = Some((frame, Instant::now()));
                    continue;
                }
                if rng.random_bool(imp.duplicate) {
                    s.duplicated += 1;
                    out[to].push(frame.clone());
                }
                out[to].push(frame);
                s.forwarded += 1;
                // The held frame now leaves after one that was sent behind it.
                if let Some((f, _)) = held[to].take() {
                    out[to].push(f);
                }
            }
        }
        for (to, h) in held.iter_mut().enumerate() {
            if h.as_ref().is_some_and(|(_, at)| at.elapsed() >= HOLD) {
                out[to].push(h.take().unwrap().0);
            }
        }
        drop(s);
        for (to, frames) in out.into_iter().enumerate() {
            // A GSO frame (offloads on: a host's 64 KiB TCP frame) leaves whole, as it came.
            for (f, gso_size) in frames {
                let _ = rings[to].queue_segmented(f, gso_size);
            }
            let _ = rings[to].flush();
        }
    }
}

//! `tlsgate inline run`: the inline engine between two interfaces. A thin shell: one thread reads
//! frames from both [`ring::PacketRing`]s, hands them to the sans-IO
//! [`tlsgate_inline::bridge::Bridge`] and writes what it returns; the engine's timers bound the
//! wait. The admin side asks the thread for snapshots of the tables; a reload swaps certificates.

mod acks;
mod driver;
mod gso;
pub mod release;
pub mod ring;

use std::io::{self, Write};
use std::sync::mpsc;
use std::thread::JoinHandle;
use tlsgate_inline::bridge::BridgeStats;
use tlsgate_inline::engine::{Config, Service, Stats};
use tlsgate_inline::tables::Report;

/// What to bridge.
#[derive(Debug, Clone)]
pub struct InlineSettings {
    pub client_iface: String,
    pub server_iface: String,
    pub engine: Config,
    pub ring: ring::RingConfig,
    /// Gives the memory allocators hold free back to the system (the binary's allocator is its
    /// business): run by the bridge thread after flows were parked, at most every
    /// [`release::EVERY`]. `None`: never.
    pub release_memory: Option<fn()>,
}

/// The tables and counters at one instant, for /status and /metrics.
#[derive(Debug, Clone, Default)]
pub struct InlineSnapshot {
    pub report: Report,
    pub engine: Stats,
    pub bridge: BridgeStats,
    pub client_ring: ring::RingStats,
    pub server_ring: ring::RingStats,
}

/// Requests to the bridge thread; each is followed by a byte on the wake pipe.
enum Request {
    Reload(Vec<Service>, mpsc::Sender<Result<(), String>>),
    Snapshot(mpsc::Sender<InlineSnapshot>),
    Stop,
}

/// The running bridge; dropping it stops the thread.
#[derive(Debug)]
pub struct InlineHandle {
    requests: mpsc::Sender<Request>,
    wake: io::PipeWriter,
    thread: Option<JoinHandle<()>>,
    /// Why the bridge thread stopped on its own (an interface gone, poll failing), once it has.
    ended: tokio::sync::watch::Receiver<Option<String>>,
}

impl InlineHandle {
    /// Opens both interfaces and starts the thread; returns once both are open. An error names
    /// the interface and, when permission is missing, the capabilities needed (CAP_NET_RAW,
    /// CAP_NET_ADMIN).
    pub fn start(settings: InlineSettings) -> io::Result<InlineHandle> {
        let (wake_rx, wake) = io::pipe()?;
        let (requests, inbox) = mpsc::channel();
        let (opened_tx, opened) = mpsc::sync_channel(1);
        let (ended_tx, ended) = tokio::sync::watch::channel(None);
        let thread = std::thread::Builder::new().name("inline-bridge".into()).spawn(move || {
            if let Some(reason) = driver::run(settings, wake_rx, inbox, opened_tx) {
                ended_tx.send_replace(Some(reason));
            }
        })?;
        match opened.recv() {
            Ok(Ok(())) => Ok(InlineHandle { requests, wake, thread: Some(thread), ended }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(io::Error::other("the inline bridge thread ended while opening its interfaces"))
            }
        }
    }

    fn ask(&self, request: Request) -> Result<(), String> {
        self.requests.send(request).map_err(|_| "the inline bridge thread has stopped".to_string())?;
        (&self.wake).write_all(&[1]).map_err(|e| format!("waking the inline bridge thread: {e}"))
    }

    /// New certificates for flows that begin from now on (see `Engine::reload_tls`).
    pub fn reload(&self, services: Vec<Service>) -> Result<(), String> {
        let (reply, answer) = mpsc::channel();
        self.ask(Request::Reload(services, reply))?;
        answer.recv().map_err(|_| "the inline bridge thread has stopped".to_string())?
    }

    /// The current tables and counters (empty when the thread has stopped).
    pub fn snapshot(&self) -> InlineSnapshot {
        let (reply, answer) = mpsc::channel();
        match self.ask(Request::Snapshot(reply)) {
            Ok(()) => answer.recv().unwrap_or_default(),
            Err(_) => InlineSnapshot::default(),
        }
    }

    /// Stops the thread and waits for it.
    /// Resolves once the bridge has stopped on its own, with why (already logged); never while
    /// it runs. Owns what it waits on: the handle stays free meanwhile.
    pub fn failed(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut ended = self.ended.clone();
        async move {
            let reason = ended.wait_for(Option::is_some).await.map(|r| r.clone());
            match reason {
                Ok(reason) => reason.unwrap_or_default(),
                // The sender is gone without a reason: the bridge was asked to stop.
                Err(_) => std::future::pending().await,
            }
        }
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.ask(Request::Stop);
            let _ = thread.join();
        }
    }
}

impl Drop for InlineHandle {
    fn drop(&mut self) {
        self.halt();
    }
}

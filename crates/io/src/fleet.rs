//! The fleet task: keeps this instance's TLS ticket keys in step with the fleet's through Redis
//! and serves the TLS 1.2 session store's remote lookups.
//!
//! Ticket keys: time is cut into periods of `ticket_rotation` (counted from the Unix epoch, so
//! every instance agrees on the boundaries without talking). The key of period `p` lives in
//! Redis under `tlsgate:fleet:v1:ticket:<rotation>:<p>`, wrapped with the fleet key; the first
//! instance to find none sets it (SET NX with an expiry of three periods) and everyone reads the
//! winner's. Each refresh makes sure of the current and the next period's key, and reads the
//! previous one too: tickets are issued under the current key and accepted under its
//! neighbours, so a rotation is seamless and the previous key still resumes for one period.
//!
//! When Redis does not answer, the instance keeps issuing with the keys it holds (or a key of its
//! own when it never got one), says so in a log line, `tlsgate_fleet_redis_up` and /status, and
//! never stops serving; on Redis's return it takes up the fleet's keys again.
//!
//! Session IDs (TLS 1.2): rustls's session store is synchronous and runs on a runtime worker, so
//! a lookup the local cache misses is sent here and waited for at most [`LOOKUP_BOUND`] (with
//! `block_in_place`, so the worker's other tasks move on meanwhile); a slow or absent Redis costs
//! a full handshake, never a stalled worker. Stores are queued and dropped when the queue is full.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use tlsgate_config::{FleetConfig, SecurityConfig};
use tlsgate_telemetry::fleet::{publish, FleetView};
use tlsgate_telemetry::metrics::{metrics, ResultLabel};
use tlsgate_tls::fleet::{
    random_key, FleetKey, FleetSessions, FleetTicketer, Observer, RemoteSessions, KEY_LEN,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ProxyError;

/// The longest a handshake waits for a session ID from Redis.
pub const LOOKUP_BOUND: Duration = Duration::from_millis(50);
/// Connecting to Redis, and any one request, give up after this.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// The longest between two refreshes of the keys: also how soon Redis leaving or returning is
/// noticed (three small reads each time).
const REFRESH_MAX: Duration = Duration::from_secs(2);
/// Session stores waiting for Redis; beyond it they are dropped (the session stays local).
const QUEUE: usize = 4096;

/// The fleet as the terminate listeners use it: one ticketer and one session store for every
/// listener of the process, kept across reloads.
pub struct Fleet {
    ticketer: Arc<FleetTicketer>,
    sessions: Arc<FleetSessions>,
    task: JoinHandle<()>,
    redis: String,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("redis", &self.redis).finish_non_exhaustive()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Cmd {
    Put { name: Vec<u8>, sealed: Vec<u8> },
    Get { name: Vec<u8>, reply: std::sync::mpsc::SyncSender<Option<Vec<u8>>> },
}

struct Remote {
    tx: mpsc::Sender<Cmd>,
    up: Arc<AtomicBool>,
}

impl RemoteSessions for Remote {
    fn put(&self, name: Vec<u8>, sealed: Vec<u8>) {
        if self.up.load(Ordering::Relaxed) {
            let _ = self.tx.try_send(Cmd::Put { name, sealed });
        }
    }

    fn get(&self, name: &[u8]) -> Option<Vec<u8>> {
        if !self.up.load(Ordering::Relaxed) {
            return None;
        }
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.tx.try_send(Cmd::Get { name: name.to_vec(), reply }).ok()?;
        let wait = || answer.recv_timeout(LOOKUP_BOUND).ok().flatten();
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            _ => wait(),
        }
    }
}

fn observer() -> Observer {
    Arc::new(|result: &'static str| {
        metrics().fleet_resumptions.get_or_create(&ResultLabel { result: result.into() }).inc();
    })
}

impl Fleet {
    /// Reads the fleet key and starts the fleet task. Redis need not answer yet.
    pub fn start(config: &FleetConfig, security: &SecurityConfig) -> Result<Arc<Fleet>, ProxyError> {
        let key = FleetKey::load(&config.key_file, security.allow_insecure_key_permissions)
            .map_err(|e| ProxyError::config(format!("[fleet]: {e}")))?;
        let client = match &config.redis_ca {
            None => redis::Client::open(config.redis.secret_url()),
            Some(ca) => {
                let pem = std::fs::read(ca)
                    .map_err(|e| ProxyError::config(format!("[fleet]: redis_ca {}: {e}", ca.display())))?;
                let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(pem) };
                redis::Client::build_with_tls(config.redis.secret_url(), certs)
            }
        }
        .map_err(|e| ProxyError::config(format!("[fleet]: redis {}: {e}", config.redis)))?;
        let key = Arc::new(key);
        let rotation = config.ticket_rotation;
        let ticketer = FleetTicketer::new(rotation, observer());
        let up = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel(QUEUE);
        let remote = Arc::new(Remote { tx, up: up.clone() });
        let sessions = FleetSessions::new(remote, key.clone(), rotation * 2, observer());
        // A key of our own before any handshake, whatever Redis does; the first refresh (at once)
        // replaces it with the fleet's.
        let rotation_secs = rotation.as_secs().max(1);
        let now = now_secs() / rotation_secs;
        let held = BTreeMap::from([(now, random_key())]);
        ticketer.set_keys(now, &held);
        let keeper = Keeper {
            client,
            redis: config.redis.to_string(),
            key,
            rotation: rotation_secs,
            ticketer: ticketer.clone(),
            up,
            held,
            shared: false,
            issuing: now,
            last_error: String::new(),
            reported_down: false,
        };
        let task = tokio::spawn(keeper.run(rx));
        tracing::info!(redis = %config.redis, rotation = ?rotation, "fleet: sharing TLS session resumption");
        Ok(Arc::new(Fleet { ticketer, sessions, task, redis: config.redis.to_string() }))
    }

    /// `config` with the fleet's ticketer and session store.
    pub fn apply(&self, config: &rustls::ServerConfig) -> rustls::ServerConfig {
        tlsgate_tls::fleet::with_fleet(config, self.ticketer.clone(), self.sessions.clone())
    }
}

struct Keeper {
    client: redis::Client,
    redis: String,
    key: Arc<FleetKey>,
    rotation: u64,
    ticketer: Arc<FleetTicketer>,
    up: Arc<AtomicBool>,
    /// Ticket keys by period, and whether the issuing one is the fleet's.
    held: BTreeMap<u64, [u8; KEY_LEN]>,
    shared: bool,
    issuing: u64,
    last_error: String,
    /// The warning for Redis not answering was logged (once per outage).
    reported_down: bool,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Keeper {
    fn name(&self, period: u64) -> String {
        format!("tlsgate:fleet:v1:ticket:{}:{period}", self.rotation)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        self.publish();
        let refresh =
            Duration::from_secs(self.rotation).div_f64(5.0).clamp(Duration::from_millis(250), REFRESH_MAX);
        let mut tick = tokio::time::interval(refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conn: Option<ConnectionManager> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if conn.is_none() {
                        conn = self.connect().await;
                    }
                    let result = match &mut conn {
                        Some(c) => self.sync(c).await,
                        None => Err(self.last_error.clone()),
                    };
                    if result.is_err() {
                        self.turn_without_redis();
                    }
                    self.settle(result);
                }
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { return };
                    match (&conn, cmd) {
                        (Some(c), cmd) => { tokio::spawn(serve(c.clone(), cmd, self.rotation * 2)); }
                        (None, Cmd::Get { reply, .. }) => { let _ = reply.try_send(None); }
                        (None, Cmd::Put { .. }) => {}
                    }
                }
            }
        }
    }

    async fn connect(&mut self) -> Option<ConnectionManager> {
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT)
            .set_number_of_retries(2)
            .set_max_delay(1000);
        let attempt = ConnectionManager::new_with_config(self.client.clone(), cfg);
        match tokio::time::timeout(REDIS_TIMEOUT * 4, attempt).await {
            Ok(Ok(c)) => Some(c),
            Ok(Err(e)) => {
                self.last_error = e.to_string();
                None
            }
            Err(_) => {
                self.last_error = "connect timed out".into();
                None
            }
        }
    }

    /// Makes sure of the previous, current and next period's keys in Redis and takes them.
    async fn sync(&mut self, conn: &mut ConnectionManager) -> Result<(), String> {
        let now = now_secs() / self.rotation;
        let periods = [now.saturating_sub(1), now, now + 1];
        let names: Vec<String> = periods.iter().map(|p| self.name(*p)).collect();
        let mut found: Vec<Option<Vec<u8>>> = bounded(conn.mget(&names)).await?;
        let ttl = self.rotation * 3;
        for (i, p) in periods.iter().enumerate().skip(1) {
            if found[i].is_some() {
                continue;
            }
            // Ours if we made one while Redis was away: our tickets under it keep resuming.
            let key = self.held.get(p).copied().unwrap_or_else(random_key);
            let sealed = self.key.wrap(names[i].as_bytes(), &key);
            let opts = redis::SetOptions::default()
                .conditional_set(redis::ExistenceCheck::NX)
                .with_expiration(redis::SetExpiry::EX(ttl));
            let _: Option<String> = bounded(conn.set_options(&names[i], sealed, opts)).await?;
            found[i] = bounded(conn.get(&names[i])).await?;
        }
        let mut keys = BTreeMap::new();
        for ((p, name), sealed) in periods.iter().zip(&names).zip(found) {
            let Some(sealed) = sealed else { continue };
            let plain = self.key.unwrap(name.as_bytes(), &sealed).ok_or_else(|| {
                format!("ticket key {name} in Redis does not open with this fleet key (another fleet's key file?)")
            })?;
            let key: [u8; KEY_LEN] = plain
                .as_slice()
                .try_into()
                .map_err(|_| format!("ticket key {name} in Redis has a bad length"))?;
            keys.insert(*p, key);
        }
        if !keys.contains_key(&now) {
            return Err("Redis lost the current ticket key between set and get".into());
        }
        let rotated = self.issuing != now;
        self.held = keys;
        self.issuing = now;
        self.shared = true;
        self.install();
        if rotated {
            tracing::info!(period = now, "fleet: ticket key rotated");
        }
        Ok(())
    }

    /// Without Redis, the period still turns to a key already held (the next period's is
    /// fetched ahead), so an outage shorter than a period changes nothing for the fleet.
    fn turn_without_redis(&mut self) {
        let now = now_secs() / self.rotation;
        if self.issuing != now && self.held.contains_key(&now) {
            self.issuing = now;
            self.install();
            tracing::info!(
                period = now,
                "fleet: ticket key rotated (to the key fetched ahead; Redis unreachable)"
            );
        }
    }

    /// Logs and publishes a change between Redis answering and not.
    fn settle(&mut self, result: Result<(), String>) {
        let was_up = self.up.load(Ordering::Relaxed);
        match result {
            Ok(()) => {
                self.last_error.clear();
                self.up.store(true, Ordering::Relaxed);
                metrics().fleet_redis_up.set(1);
                if !was_up {
                    self.reported_down = false;
                    tracing::info!(redis = %self.redis, period = self.issuing, "fleet: Redis reachable; ticket keys shared");
                }
            }
            Err(e) => {
                self.last_error = e.clone();
                self.up.store(false, Ordering::Relaxed);
                metrics().fleet_redis_up.set(0);
                // Without Redis the issuing key stays the last one held: issuing goes on.
                if was_up || !self.reported_down {
                    self.reported_down = true;
                    tracing::warn!(redis = %self.redis, error = %e, period = self.issuing,
                        "fleet: cannot reach Redis; issuing tickets with the last keys held");
                }
            }
        }
        self.publish();
    }

    fn install(&self) {
        self.ticketer.set_keys(self.issuing, &self.held);
        self.publish();
    }

    fn publish(&self) {
        publish(FleetView {
            redis: self.redis.clone(),
            reachable: self.up.load(Ordering::Relaxed),
            last_error: self.last_error.clone(),
            issuing_period: self.issuing,
            issuing_shared: self.shared && self.up.load(Ordering::Relaxed),
            periods_held: self.held.keys().copied().collect(),
        });
    }
}

async fn bounded<T>(f: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, String> {
    match tokio::time::timeout(REDIS_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("request timed out".into()),
    }
}

/// One session store or lookup.
async fn serve(mut conn: ConnectionManager, cmd: Cmd, ttl: u64) {
    match cmd {
        Cmd::Put { name, sealed } => {
            let r: Result<(), String> = bounded(conn.set_ex(name, sealed, ttl)).await;
            if let Err(e) = r {
                tracing::debug!(error = %e, "fleet: session not stored in Redis");
            }
        }
        Cmd::Get { name, reply } => {
            let found: Option<Vec<u8>> = bounded(conn.get(name)).await.unwrap_or(None);
            let _ = reply.try_send(found);
        }
    }
}

//! A fleet's shared resumption state, through rustls's own extension points: a
//! [`ProducesTickets`] whose keys are the fleet's (one per rotation period, the neighbours of
//! the issuing one still accepted) and a [`StoresServerSessions`] for TLS 1.2 session IDs with a
//! local cache in front of a bounded remote lookup.
//!
//! Both traits are synchronous and run inside the handshake, on a runtime worker: nothing here
//! waits on the network. Ticket keys are pushed in by the fleet task (crates/io), and a session
//! lookup the local cache misses goes through [`RemoteSessions::get`], which must return within
//! a small bound (it answers "miss" rather than wait).
//!
//! What goes to Redis is wrapped with the fleet key (AES-256-GCM, the Redis key name as
//! associated data), so a copy of Redis alone decrypts neither tickets nor sessions.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use rustls::server::{ProducesTickets, StoresServerSessions};

use crate::keys::check_key_permissions;
use crate::TlsError;

/// Bytes of a ticket key and of the fleet key.
pub const KEY_LEN: usize = 32;

/// Seals `plain` under `key` with a fresh random nonce: `nonce || ciphertext || tag`.
fn seal(key: &LessSafeKey, aad: &[u8], plain: &[u8]) -> Option<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).ok()?;
    let mut buf = plain.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf).ok()?;
    let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    Some(out)
}

fn open(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = ct.to_vec();
    let plain = key.open_in_place(nonce, Aad::from(aad), &mut buf).ok()?;
    Some(plain.to_vec())
}

fn aead_key(bytes: &[u8; KEY_LEN]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key"))
}

/// 32 random bytes, e.g. a new ticket key.
pub fn random_key() -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    aws_lc_rs::rand::fill(&mut k).expect("the system RNG works");
    k
}

/// The fleet key: wraps what the fleet keeps in Redis.
pub struct FleetKey(LessSafeKey);

impl std::fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetKey(..)")
    }
}

impl FleetKey {
    /// Reads a fleet key file: exactly 32 bytes, refused (like private keys) when group or
    /// others may read it.
    pub fn load(path: &Path, allow_insecure_key_permissions: bool) -> Result<FleetKey, TlsError> {
        if !allow_insecure_key_permissions {
            check_key_permissions(path)?;
        }
        let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
            what: "fleet key",
            path: path.to_path_buf(),
            source,
        })?;
        let bytes: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| TlsError::Material {
            what: "fleet key",
            path: path.to_path_buf(),
            problem: format!("must hold exactly {KEY_LEN} random bytes, has {}", bytes.len()),
        })?;
        Ok(FleetKey::from_bytes(&bytes))
    }

    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> FleetKey {
        FleetKey(aead_key(bytes))
    }

    /// `value` sealed for the Redis key `name`.
    pub fn wrap(&self, name: &[u8], value: &[u8]) -> Vec<u8> {
        seal(&self.0, name, value).expect("AES-GCM sealing does not fail")
    }

    /// The value sealed for `name`; `None` if it was sealed under another fleet key or name.
    pub fn unwrap(&self, name: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        open(&self.0, name, sealed)
    }
}

/// What the ticketer and the session store report, for the resumption metric.
pub type Observer = Arc<dyn Fn(&'static str) + Send + Sync>;

struct KeySet {
    issuing: u64,
    keys: BTreeMap<u64, LessSafeKey>,
}

/// TLS tickets under the fleet's period keys. A ticket is `period (8 bytes, big endian) ||
/// nonce || AES-256-GCM(state) || tag`, the period as associated data; it decrypts while its
/// period is the issuing one or a neighbour of it (one period back: the rotation's grace; one
/// ahead: an instance whose clock turned the period a moment earlier).
pub struct FleetTicketer {
    keys: RwLock<KeySet>,
    lifetime: u32,
    observe: Observer,
}

impl std::fmt::Debug for FleetTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetTicketer").field("lifetime", &self.lifetime).finish_non_exhaustive()
    }
}

impl FleetTicketer {
    /// `rotation`: the period length; tickets live two periods (the issuing one and the grace).
    pub fn new(rotation: Duration, observe: Observer) -> Arc<FleetTicketer> {
        let lifetime = u32::try_from(rotation.as_secs().saturating_mul(2)).unwrap_or(u32::MAX);
        Arc::new(FleetTicketer {
            keys: RwLock::new(KeySet { issuing: 0, keys: BTreeMap::new() }),
            lifetime,
            observe,
        })
    }

    /// Installs the keys held: issue under `issuing` (which must be among them).
    pub fn set_keys(&self, issuing: u64, keys: &BTreeMap<u64, [u8; KEY_LEN]>) {
        let keys = keys.iter().map(|(p, k)| (*p, aead_key(k))).collect();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = KeySet { issuing, keys };
    }
}

impl ProducesTickets for FleetTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.lifetime
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let set = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let key = set.keys.get(&set.issuing)?;
        let period = set.issuing.to_be_bytes();
        let sealed = seal(key, &period, plain)?;
        let mut out = Vec::with_capacity(8 + sealed.len());
        out.extend_from_slice(&period);
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let Some((period, sealed)) = cipher.split_first_chunk::<8>() else {
            (self.observe)("ticket_invalid");
            return None;
        };
        let p = u64::from_be_bytes(*period);
        let set = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let near = p + 1 >= set.issuing && p <= set.issuing + 1;
        let Some(key) = set.keys.get(&p).filter(|_| near) else {
            (self.observe)("ticket_unknown_key");
            return None;
        };
        let plain = open(key, period, sealed);
        (self.observe)(if plain.is_some() { "ticket_accepted" } else { "ticket_invalid" });
        plain
    }
}

/// Where sessions the local cache does not hold are kept (Redis, through the fleet task).
pub trait RemoteSessions: Send + Sync {
    /// Stores a sealed session; must not block (queue it, drop it when the queue is full).
    fn put(&self, name: Vec<u8>, sealed: Vec<u8>);
    /// The sealed session, or `None`; must return within a small bound whatever Redis does.
    fn get(&self, name: &[u8]) -> Option<Vec<u8>>;
}

/// Sessions held locally (most resumptions of a session ID come back to the same instance).
const LOCAL_SESSIONS: usize = 16 * 1024;

/// TLS 1.2 session IDs for the fleet: the local cache first, then the remote store.
pub struct FleetSessions {
    local: Mutex<Local>,
    remote: Arc<dyn RemoteSessions>,
    fleet_key: Arc<FleetKey>,
    lifetime: Duration,
    observe: Observer,
}

#[derive(Default)]
struct Local {
    map: HashMap<Vec<u8>, (Vec<u8>, Instant)>,
    order: VecDeque<Vec<u8>>,
}

impl Local {
    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>, until: Instant) {
        if self.map.insert(key.clone(), (value, until)).is_none() {
            self.order.push_back(key);
        }
        while self.map.len() > LOCAL_SESSIONS {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
    }
}

impl std::fmt::Debug for FleetSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetSessions").field("lifetime", &self.lifetime).finish_non_exhaustive()
    }
}

/// The Redis key name of a session ID.
pub fn session_name(id: &[u8]) -> Vec<u8> {
    let mut name = b"tlsgate:fleet:v1:session:".to_vec();
    for b in id {
        name.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    name
}

impl FleetSessions {
    pub fn new(
        remote: Arc<dyn RemoteSessions>,
        fleet_key: Arc<FleetKey>,
        lifetime: Duration,
        observe: Observer,
    ) -> Arc<FleetSessions> {
        Arc::new(FleetSessions { local: Mutex::default(), remote, fleet_key, lifetime, observe })
    }

    fn local(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StoresServerSessions for FleetSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let name = session_name(&key);
        self.remote.put(name.clone(), self.fleet_key.wrap(&name, &value));
        self.local().insert(key, value, Instant::now() + self.lifetime);
        true
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        if let Some((v, until)) = self.local().map.get(key) {
            if *until > Instant::now() {
                (self.observe)("session_local");
                return Some(v.clone());
            }
        }
        let name = session_name(key);
        let found = self.remote.get(&name).and_then(|sealed| self.fleet_key.unwrap(&name, &sealed));
        match found {
            Some(v) => {
                (self.observe)("session_redis");
                self.local().insert(key.to_vec(), v.clone(), Instant::now() + self.lifetime);
                Some(v)
            }
            None => {
                (self.observe)("session_miss");
                None
            }
        }
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        // Only TLS 1.3 without tickets takes (single use); a fleet always issues tickets there.
        let v = self.get(key);
        self.local().map.remove(key);
        v
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// A listener's config with the fleet's ticketer and session store in place of its own.
pub fn with_fleet(
    config: &rustls::ServerConfig,
    ticketer: Arc<FleetTicketer>,
    sessions: Arc<FleetSessions>,
) -> rustls::ServerConfig {
    let mut c = config.clone();
    c.ticketer = ticketer;
    c.session_storage = sessions;
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet() -> Observer {
        Arc::new(|_| {})
    }

    #[test]
    fn tickets_decrypt_in_their_period_and_the_next_but_not_two_later() {
        let t = FleetTicketer::new(Duration::from_secs(5), quiet());
        let mut keys = BTreeMap::new();
        keys.insert(10, random_key());
        keys.insert(11, random_key());
        t.set_keys(10, &keys);
        let ticket = t.encrypt(b"state").unwrap();
        assert_eq!(t.decrypt(&ticket).unwrap(), b"state");
        t.set_keys(11, &keys);
        assert_eq!(t.decrypt(&ticket).unwrap(), b"state", "previous period still accepted");
        keys.insert(12, random_key());
        t.set_keys(12, &keys);
        assert!(t.decrypt(&ticket).is_none(), "two periods back");
        let mut bad = t.encrypt(b"x").unwrap();
        *bad.last_mut().unwrap() ^= 1;
        assert!(t.decrypt(&bad).is_none());
    }

    #[test]
    fn wrapped_values_open_only_with_the_same_fleet_key_and_name() {
        let k = FleetKey::from_bytes(&random_key());
        let sealed = k.wrap(b"n1", b"secret");
        assert_eq!(k.unwrap(b"n1", &sealed).unwrap(), b"secret");
        assert!(k.unwrap(b"n2", &sealed).is_none());
        assert!(FleetKey::from_bytes(&random_key()).unwrap(b"n1", &sealed).is_none());
    }
}

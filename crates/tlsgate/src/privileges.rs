//! Giving up root once the listeners are bound: switch to `[process] user`/`group` (or
//! `--user`/`--group`) and keep only the capabilities the mode needs afterwards.
//!
//! Linux keeps credentials per thread. glibc applies setgroups/setresgid/setresuid to every
//! thread of the process, but capability sets and the keep-capabilities flag are per thread, so
//! they are set on the calling thread and on each tokio worker thread ([`on_every_thread`]). A
//! thread that took no part (a blocking-pool thread that existed before) loses every capability
//! at the user switch: the kernel clears them when a thread's ids all leave 0 without the
//! keep-capabilities flag.

use std::ffi::CString;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Group, Uid, User};
use tlsgate_config::{Config, ProcessConfig};

use crate::failure::Failure;

/// `--user`/`--group`, which override `[process]`.
static FLAGS: OnceLock<ProcessConfig> = OnceLock::new();

/// Records the command line's `--user`/`--group` (called once, before any mode starts).
pub fn set_flags(user: Option<String>, group: Option<String>) {
    let _ = FLAGS.set(ProcessConfig { user, group });
}

/// The user and group to run as.
#[derive(Debug, Clone)]
pub struct Target {
    pub user: String,
    pub uid: Uid,
    pub group: String,
    pub gid: Gid,
}

/// `[process]` with the flags over it, looked up in the user and group databases. `Ok(None)`
/// when no user is configured; an unknown user or group is a config error.
pub fn target(config: &Config) -> Result<Option<Target>, String> {
    let flags = FLAGS.get().cloned().unwrap_or_default();
    let Some(name) = flags.user.or_else(|| config.process.user.clone()) else {
        if flags.group.is_some() {
            return Err("--group needs --user (or [process] user)".into());
        }
        return Ok(None);
    };
    let user = User::from_name(&name)
        .map_err(|e| format!("[process] user {name:?}: cannot look it up: {e}"))?
        .ok_or_else(|| format!("[process] user {name:?}: no such user"))?;
    let (group, gid) = match flags.group.or_else(|| config.process.group.clone()) {
        Some(g) => {
            let found = Group::from_name(&g)
                .map_err(|e| format!("[process] group {g:?}: cannot look it up: {e}"))?
                .ok_or_else(|| format!("[process] group {g:?}: no such group"))?;
            (g, found.gid)
        }
        None => {
            let primary = Group::from_gid(user.gid).ok().flatten().map(|g| g.name);
            (primary.unwrap_or_else(|| user.gid.to_string()), user.gid)
        }
    };
    Ok(Some(Target { user: name, uid: user.uid, group, gid }))
}

/// What the config's modes keep: originate's (below), the inline bridge's CAP_NET_RAW and
/// CAP_NET_ADMIN (its packet sockets and promiscuous mode), and the connect gate's
/// CAP_NET_ADMIN with its kernel splice (each spliced connection's sockets are read and
/// silenced in TCP repair mode; the program is attached before).
pub fn mode_caps(config: &Config) -> Vec<Capability> {
    let mut keep = originate_caps(config);
    let mut add = |caps: &[Capability]| {
        for cap in caps {
            if !keep.contains(cap) {
                keep.push(*cap);
            }
        }
    };
    if config.inline.is_some() {
        add(&[Capability::CAP_NET_RAW, Capability::CAP_NET_ADMIN]);
    }
    let gate = config.connect.as_ref().and_then(|c| c.gate.as_ref());
    if gate.is_some_and(|g| !g.kernel_splice.is_empty()) {
        add(&[Capability::CAP_NET_ADMIN]);
    }
    keep
}

/// What originate keeps: CAP_NET_ADMIN when a transparent listener marks its outbound
/// connections (SO_MARK), nothing otherwise.
pub fn originate_caps(config: &Config) -> Vec<Capability> {
    let marks = config.originate.iter().flat_map(|o| &o.transparent).any(|t| t.outbound_mark.is_some());
    if marks {
        vec![Capability::CAP_NET_ADMIN]
    } else {
        Vec::new()
    }
}

/// Call once every listener of the mode is bound, from the thread that runs the runtime's
/// `block_on`. As root with a user configured: switch to it, keeping only `keep`. Already that
/// user (a service manager started it so): keep only `keep` of the capabilities it was given.
/// As root without a user: nothing changes.
pub async fn drop_after_bind(config: &Config, keep: &[Capability]) -> Result<(), Failure> {
    let target = target(config).map_err(Failure::config)?;
    let keep: Arc<CapsHashSet> = Arc::new(keep.iter().copied().collect());
    let root = Uid::effective().is_root();
    match &target {
        Some(t) if root && !t.uid.is_root() => {
            let k = keep.clone();
            on_every_thread(Arc::new(move || prepare_thread(&k))).await?;
            switch_ids(t)?;
        }
        Some(t) if Uid::effective() != t.uid || Gid::effective() != t.gid => {
            return Err(Failure::config(format!(
                "[process] user {:?} group {:?}: tlsgate runs as uid {} gid {} and, not being \
                 root, cannot switch",
                t.user,
                t.group,
                Uid::effective(),
                Gid::effective()
            )));
        }
        None if root => {
            tracing::warn!(
                "running as root: set [process] user (or --user) to drop privileges after binding"
            );
            return Ok(());
        }
        _ => {}
    }
    let k = keep.clone();
    on_every_thread(Arc::new(move || confine_thread(&k))).await?;
    let effective = caps::read(None, CapSet::Effective).map_err(|e| format!("capabilities: {e}"))?;
    let mut names: Vec<String> = effective.iter().map(|c| c.to_string()).collect();
    names.sort();
    tracing::info!(
        uid = %Uid::effective(),
        gid = %Gid::effective(),
        capabilities = %if names.is_empty() { "none".to_string() } else { names.join(",") },
        "privileges dropped"
    );
    Ok(())
}

/// Before the switch, as root: keep permitted capabilities across it, and take everything not
/// in `keep` out of the bounding set for good.
fn prepare_thread(keep: &CapsHashSet) -> Result<(), String> {
    let fail = |e: caps::errors::CapsError| format!("capabilities: {e}");
    caps::securebits::set_keepcaps(true).map_err(fail)?;
    for cap in caps::read(None, CapSet::Bounding).map_err(fail)? {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(fail)?;
        }
    }
    Ok(())
}

/// Supplementary groups (the user's, from the group database), then gid, then uid: in this
/// order, since changing groups needs the privileges the uid change gives up.
fn switch_ids(t: &Target) -> Result<(), String> {
    let fail = |what: &str, e: nix::Error| format!("cannot switch to {}: {what}: {e}", t.user);
    let name = CString::new(t.user.as_bytes()).map_err(|_| format!("user {:?}: NUL in name", t.user))?;
    nix::unistd::initgroups(&name, t.gid).map_err(|e| fail("initgroups", e))?;
    nix::unistd::setresgid(t.gid, t.gid, t.gid).map_err(|e| fail("setresgid", e))?;
    nix::unistd::setresuid(t.uid, t.uid, t.uid).map_err(|e| fail("setresuid", e))?;
    Ok(())
}

/// Permitted and effective down to `keep` (what the thread still has of it), nothing inheritable
/// or ambient, and the keep-capabilities flag off again.
fn confine_thread(keep: &CapsHashSet) -> Result<(), String> {
    let fail = |e: caps::errors::CapsError| format!("capabilities: {e}");
    let permitted = caps::read(None, CapSet::Permitted).map_err(fail)?;
    let kept: CapsHashSet = permitted.intersection(keep).copied().collect();
    // Effective first: it must stay a subset of permitted at every step.
    let effective = caps::read(None, CapSet::Effective).map_err(fail)?;
    caps::set(None, CapSet::Effective, &effective.intersection(&kept).copied().collect()).map_err(fail)?;
    caps::set(None, CapSet::Permitted, &kept).map_err(fail)?;
    caps::set(None, CapSet::Effective, &kept).map_err(fail)?;
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).map_err(fail)?;
    caps::clear(None, CapSet::Ambient).map_err(fail)?;
    caps::securebits::set_keepcaps(false).map_err(fail)?;
    if kept.len() < keep.len() {
        tracing::warn!(missing = ?keep.difference(&kept).collect::<Vec<_>>(), "capabilities the mode needs were not given to tlsgate");
    }
    Ok(())
}

type ThreadJob = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Runs `job` on this thread and then once on each worker thread of the current runtime: one
/// task per worker, each held at a gathering point until all have arrived, so no worker can run
/// two of them.
async fn on_every_thread(job: ThreadJob) -> Result<(), String> {
    job()?;
    let handle = tokio::runtime::Handle::current();
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Ok(());
    }
    let workers = handle.metrics().num_workers();
    let gathering = Arc::new(Gathering::new(workers));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (job, gathering) = (job.clone(), gathering.clone());
            tokio::spawn(async move {
                if !gathering.arrive_and_wait(Duration::from_secs(10)) {
                    return Err("not every worker thread could be reached to set its capabilities".into());
                }
                job()
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| format!("capability task: {e}"))??;
    }
    Ok(())
}

/// A barrier with a deadline (std's has none): a worker that never arrives must not hang start-up.
struct Gathering {
    arrived: Mutex<usize>,
    all: Condvar,
    expected: usize,
}

impl Gathering {
    fn new(expected: usize) -> Self {
        Gathering { arrived: Mutex::new(0), all: Condvar::new(), expected }
    }

    /// Whether everyone arrived within `timeout`.
    fn arrive_and_wait(&self, timeout: Duration) -> bool {
        let mut arrived = self.arrived.lock().unwrap_or_else(|e| e.into_inner());
        *arrived += 1;
        self.all.notify_all();
        let (arrived, result) = self
            .all
            .wait_timeout_while(arrived, timeout, |n| *n < self.expected)
            .unwrap_or_else(|e| e.into_inner());
        drop(arrived);
        !result.timed_out()
    }
}

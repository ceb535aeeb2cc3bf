//! `tlsgate keyd`: the private keys in a process of their own, signing over a Unix socket for the
//! uids allowed (SO_PEERCRED). The protocol and the keys' answers are in `tlsgate_tls::keyd`.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use nix::unistd::{Uid, User};
use tlsgate_config::{Config, LogConfig};
use tlsgate_tls::keyd::store::KeyStore;
use tlsgate_tls::keyd::wire::{frame, Framer, Reason, Response};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};

use crate::cli::{KeydArgs, LogArgs};
use crate::failure::Failure;
use crate::logging;

pub async fn run(args: KeydArgs, log: &LogArgs) -> Result<(), Failure> {
    logging::init(&LogConfig::default(), log);
    let mut signals = super::lifecycle::Signals::install()?;
    let allowed = Arc::new(allowed_uids(&args.allow_uid).map_err(Failure::config)?);
    // Read while still the user that started keyd (root, typically), before the switch below.
    let store = Arc::new(
        KeyStore::load(&args.key, args.allow_insecure_key_permissions)
            .map_err(|e| Failure::config(e.to_string()))?,
    );
    let listener = bind(&args.socket).map_err(Failure::config)?;
    crate::privileges::drop_after_bind(&Config::default(), &[]).await?;
    let names: Vec<&str> = store.names().collect();
    tracing::info!(socket = %args.socket.display(), keys = %names.join(","), allowed = ?allowed, "keyd listening");
    let serve = async {
        loop {
            match listener.accept().await {
                Ok((conn, _)) => {
                    tokio::spawn(serve_conn(conn, store.clone(), allowed.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "keyd: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    };
    tokio::select! {
        () = serve => Ok(()),
        _ = signals.stopped("keyd") => {
            let _ = std::fs::remove_file(&args.socket);
            Ok(())
        }
    }
}

/// `--allow-uid` values as uids; none given: the uid that started keyd.
fn allowed_uids(given: &[String]) -> Result<BTreeSet<u32>, String> {
    if given.is_empty() {
        return Ok(BTreeSet::from([Uid::current().as_raw()]));
    }
    given
        .iter()
        .map(|u| match u.parse::<u32>() {
            Ok(n) => Ok(n),
            Err(_) => User::from_name(u)
                .map_err(|e| format!("--allow-uid {u:?}: cannot look it up: {e}"))?
                .map(|user| user.uid.as_raw())
                .ok_or_else(|| format!("--allow-uid {u:?}: no such user")),
        })
        .collect()
}

/// Binds the socket, replacing a stale one (a socket nobody listens on), and opens it to every
/// local user: who may sign is decided by peer uid, not by the file's mode.
fn bind(path: &Path) -> Result<UnixListener, String> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(format!("--socket {}: exists and is not a socket", path.display()));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!("--socket {}: another keyd is listening there", path.display()));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("--socket {}: cannot remove the stale socket: {e}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).map_err(|e| format!("--socket {}: cannot bind: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("--socket {}: cannot set its mode: {e}", path.display()))?;
    Ok(listener)
}

/// Connections served at once; more are closed at once (the terminators' pools hold a few dozen).
const MAX_CONNECTIONS: usize = 512;

/// One client: its uid checked once, then request after request until it closes, on a thread of
/// its own with blocking reads and writes. A terminator keeps its connections open and sends one
/// request at a time, waiting for the answer, so a blocked thread per connection costs each
/// signature one read and one write, where the runtime's readiness loop added an epoll wait, a
/// read that finds nothing, and the wake-ups between its threads.
async fn serve_conn(conn: UnixStream, store: Arc<KeyStore>, allowed: Arc<BTreeSet<u32>>) {
    static OPEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let uid = match conn.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            tracing::warn!(error = %e, "keyd: no peer credentials, connection closed");
            return;
        }
    };
    let mut conn = conn;
    if !allowed.contains(&uid) {
        tracing::warn!(uid, "keyd: refused a client whose uid is not allowed");
        let refusal =
            Response::Refused { reason: Reason::NotAllowed, text: format!("uid {uid} is not allowed") };
        let _ = conn.write_all(&frame(&refusal.encode())).await;
        return;
    }
    if OPEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= MAX_CONNECTIONS {
        OPEN.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(uid, max = MAX_CONNECTIONS, "keyd: too many connections, this one closed");
        return;
    }
    let conn = match conn.into_std().and_then(|c| c.set_nonblocking(false).map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            OPEN.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(uid, error = %e, "keyd: cannot serve a connection");
            return;
        }
    };
    let spawned =
        std::thread::Builder::new().name("keyd-conn".into()).stack_size(256 * 1024).spawn(move || {
            serve_blocking(conn, &store, uid);
            OPEN.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    if let Err(e) = spawned {
        OPEN.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(uid, error = %e, "keyd: cannot start a thread for a connection");
    }
}

fn serve_blocking(mut conn: std::os::unix::net::UnixStream, store: &KeyStore, uid: u32) {
    use std::io::{Read, Write};
    let mut framer = Framer::default();
    let mut buf = vec![0u8; 8192];
    loop {
        loop {
            match framer.next_body() {
                Ok(Some(body)) => {
                    if conn.write_all(&frame(&store.answer(&body))).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(uid, error = %e, "keyd: malformed stream from a client, connection closed");
                    return;
                }
            }
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => framer.feed(&buf[..n]),
        }
    }
}

//! The control socket: a Unix stream socket, mode 0660, one JSON request per line, one answer
//! line each. Every directive is checked against its caller's credentials (SO_PEERCRED): the
//! connection it names must be a socket owned by the caller's uid (root may direct any), as the
//! kernel reports it ([`super::sock_diag`]), so one tenant can neither query nor steer another's.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tlsgate_core::side::Side;
use tlsgate_directive::{Answer, Lines, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use super::registry::{self, Steer, SteerOp};
use super::sock_diag;
use crate::ProxyError;

/// A running control socket; dropping it stops it and removes the socket file.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl ControlServer {
    /// Binds `path` (replacing a stale socket file, never another kind of file) with mode 0660.
    pub fn start(path: &Path) -> Result<ControlServer, ProxyError> {
        let what = format!("control socket {}", path.display());
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(ProxyError::config(format!("{what}: exists and is not a socket")));
            }
            std::fs::remove_file(path).map_err(|e| ProxyError::config(format!("{what}: {e}")))?;
        }
        let listener = UnixListener::bind(path).map_err(|e| ProxyError::bind(&what, &e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(|e| ProxyError::config(format!("{what}: {e}")))?;
        registry::enable();
        tracing::info!(path = %path.display(), "control socket listening");
        Ok(ControlServer { path: path.to_path_buf(), task: tokio::spawn(accept_loop(listener)) })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept_loop(listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream));
            }
            Err(e) => {
                tracing::error!(side = %Side::Internal, error = %e, "control socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// One caller: its requests in order, each answered before the next is read.
async fn serve(mut stream: UnixStream) {
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            tracing::warn!(side = %Side::Client, error = %e, "control caller without credentials, closed");
            return;
        }
    };
    let mut lines = Lines::default();
    let mut buf = [0u8; 4096];
    loop {
        let line = match lines.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    lines.push(&buf[..n]);
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!(side = %Side::Client, uid, error = %e, "control request refused, closed");
                let _ = stream.write_all(&Answer::Failed(e.to_string()).encode()).await;
                return;
            }
        };
        let answer = match Request::parse(&line) {
            Ok(request) => answer(&request, uid).await,
            Err(e) => {
                counted("invalid", "refused");
                tracing::warn!(side = %Side::Client, uid, error = %e, "control request refused");
                Answer::Failed(e.to_string())
            }
        };
        if stream.write_all(&answer.encode()).await.is_err() {
            return;
        }
    }
}

/// Checks the caller may direct the connection, then carries the directive out.
async fn answer(request: &Request, uid: u32) -> Answer {
    let (local, peer) = request.connection();
    let op = request.op();
    let result = match authorize(uid, local, peer) {
        Ok(()) => carry_out(request).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(answer) => {
            counted(op, "done");
            tracing::info!(op, uid, %local, %peer, "directive done");
            answer
        }
        Err(e) => {
            counted(op, "refused");
            tracing::warn!(side = %Side::Client, op, uid, %local, %peer, error = %e, "directive refused");
            Answer::Failed(e)
        }
    }
}

fn counted(op: &str, result: &str) {
    let labels = tlsgate_telemetry::metrics::DirectiveLabels { op: op.into(), result: result.into() };
    tlsgate_telemetry::metrics::metrics().directives.get_or_create(&labels).inc();
}

/// The caller's uid must own the application's socket; root may direct any connection.
fn authorize(uid: u32, local: std::net::SocketAddr, peer: std::net::SocketAddr) -> Result<(), String> {
    match sock_diag::socket_owner(local, peer) {
        Ok(Some(owner)) if owner == uid || uid == 0 => Ok(()),
        Ok(Some(owner)) => Err(format!(
            "permission denied: the socket {local} -> {peer} belongs to uid {owner}, not to the caller (uid {uid})"
        )),
        Ok(None) => Err(format!("unknown connection: no TCP socket {local} -> {peer} on this host")),
        Err(e) => Err(format!("cannot find the socket's owner: {e}")),
    }
}

async fn carry_out(request: &Request) -> Result<Answer, String> {
    let (local, peer) = request.connection();
    let entry = registry::lookup((local, peer)).ok_or_else(|| {
        format!("unknown connection: {local} -> {peer} is not a connection through tlsgate")
    })?;
    match request {
        Request::Peer { .. } => entry.facts().map(Answer::Peer).ok_or_else(|| {
            format!("{local} -> {peer} has no client TLS session (peer answers for terminate connections)")
        }),
        Request::StartTls { after, sni, alpn, client_cert, .. } => {
            let op = SteerOp::Start {
                after: *after,
                sni: sni.clone(),
                alpn: alpn.clone(),
                client_cert: client_cert.clone(),
            };
            steer(&entry, op).await
        }
        Request::StopTls { after, .. } => steer(&entry, SteerOp::Stop { after: *after }).await,
    }
}

/// Hands the directive to the connection's task and waits until it is carried out (TLS up or
/// down) or refused.
async fn steer(entry: &registry::Entry, op: SteerOp) -> Result<Answer, String> {
    let Some(tx) = &entry.steer else {
        return Err("the connection is not on a directed listener (--directed)".into());
    };
    let (done, outcome) = tokio::sync::oneshot::channel();
    tx.send(Steer { op, done }).await.map_err(|_| "the connection has ended".to_string())?;
    match outcome.await {
        Ok(Ok(())) => Ok(Answer::Done),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("the connection ended before the directive was carried out".into()),
    }
}

//! A directed originate connection (`directed = true`): a plain byte relay until the client
//! application says otherwise on the control socket. `start_tls` names the offset in the
//! application's outgoing stream where TLS begins: exactly that many bytes go out in the clear,
//! the rest waits unread in the socket while tlsgate runs the handshake toward the upstream
//! (as client), and everything after is sealed. `stop_tls` sends close_notify at its offset,
//! waits for the upstream's, and hands the raw socket back to the relay with whatever was read
//! past that close_notify (the record layer's downgrade, [`RecordStream::into_raw_parts`]).
//! A failed handshake closes both sides: nothing the application meant for TLS ever goes out
//! in the clear.

use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tlsgate_config::{KtlsMode, OriginateListener};
use tlsgate_core::side::Side;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::backend::connect_one;
use crate::control::registry::{self, Entry, Steer, SteerOp};
use crate::ktls::{self, ClientStream};
use crate::record_stream::{RawParts, RecordStream};
use crate::ProxyError;

/// The upstream side: plain TCP, or TLS on tlsgate's record layer.
enum Upstream {
    Clear(TcpStream),
    Tls(Box<RecordStream>),
    /// Moved into a handshake or a downgrade that failed: the connection is ending.
    Gone,
}

fn gone() -> std::io::Error {
    std::io::Error::other("the upstream connection was closed by a failed directive")
}

impl Upstream {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Upstream::Clear(t) => t.read(buf).await,
            Upstream::Tls(r) => r.read(buf).await,
            Upstream::Gone => Err(gone()),
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Upstream::Clear(t) => t.write_all(data).await,
            Upstream::Tls(r) => {
                r.write_all(data).await?;
                r.flush().await
            }
            Upstream::Gone => Err(gone()),
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Upstream::Clear(t) => t.shutdown().await,
            Upstream::Tls(r) => r.shutdown().await,
            Upstream::Gone => Ok(()),
        }
    }
}

/// Runs one directed connection until both directions ended or a directive failed.
pub(super) async fn handle(client: TcpStream, config: &OriginateListener, tls: Arc<ClientConfig>) {
    let started = Instant::now();
    let _ = client.set_nodelay(true);
    let mut failures = Vec::new();
    let mut connected = None;
    for upstream in &config.upstreams {
        match connect_one(upstream, config.connect_timeout).await {
            Ok(tcp) => {
                connected = Some((tcp, upstream));
                break;
            }
            Err(e) => {
                tracing::warn!(side = %Side::Backend, %upstream, error = %e, "upstream failed");
                failures.push(format!("{upstream}: {e}"));
            }
        }
    }
    let Some((tcp, upstream)) = connected else {
        tracing::warn!(side = %Side::Backend, error = %failures.join("; "), "no upstream, client connection closed");
        return;
    };
    let _ = tcp.set_nodelay(true);
    // The application names its connection from its own side: our peer is its local address.
    let (Ok(app_local), Ok(app_peer)) = (client.peer_addr(), client.local_addr()) else { return };
    let (tx, rx) = mpsc::channel(1);
    let _registered = registry::register(app_local, app_peer, Entry { facts: None, steer: Some(tx) });
    tracing::info!(%upstream, "directed connection open, in the clear");
    let default_sni = config.sni.clone().unwrap_or_else(|| upstream.host.clone());
    let mut conn = Directed { client, upstream: Upstream::Clear(tcp), sent: 0, received: 0 };
    match conn.run(rx, config, tls, &default_sni).await {
        Ok(()) => tracing::info!(
            upstream = %upstream, up = conn.sent, down = conn.received, duration = ?started.elapsed(),
            "connection closed"
        ),
        Err(e) => tracing::warn!(
            upstream = %upstream, side = %e.side, error = %e.context, up = conn.sent, down = conn.received,
            duration = ?started.elapsed(), "connection aborted"
        ),
    }
}

struct Directed {
    client: TcpStream,
    upstream: Upstream,
    /// Bytes of the application's outgoing stream relayed so far: the offsets directives name.
    sent: u64,
    received: u64,
}

impl Directed {
    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Steer>,
        config: &OriginateListener,
        tls: Arc<ClientConfig>,
        default_sni: &str,
    ) -> Result<(), ProxyError> {
        let mut pending: Option<Steer> = None;
        let (mut client_eof, mut upstream_eof) = (false, false);
        let mut cbuf = vec![0u8; 16 * 1024];
        let mut ubuf = vec![0u8; 16 * 1024];
        loop {
            if pending.as_ref().is_some_and(|s| s.op.after() == self.sent) {
                let Some(steer) = pending.take() else { continue };
                let outcome = match &steer.op {
                    SteerOp::Start { sni, alpn, .. } => {
                        let name = sni.as_deref().unwrap_or(default_sni);
                        self.start_tls(config, &tls, name, alpn).await
                    }
                    SteerOp::Stop { .. } => self.stop_tls(config, &mut ubuf).await,
                };
                match outcome {
                    Ok(what) => {
                        tracing::info!(at = self.sent, "{what}");
                        let _ = steer.done.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = steer.done.send(Err(e.context.clone()));
                        return Err(e);
                    }
                }
                continue;
            }
            if client_eof && upstream_eof {
                return Ok(());
            }
            // Up to a pending directive's offset and no further: the rest waits in the socket.
            let room = match &pending {
                Some(s) => (s.op.after() - self.sent).min(cbuf.len() as u64) as usize,
                None => cbuf.len(),
            };
            tokio::select! {
                read = self.client.read(&mut cbuf[..room]), if !client_eof => {
                    let n = read.map_err(|e| ProxyError::client(format!("read: {e}")))?;
                    if n == 0 {
                        client_eof = true;
                        if let Some(s) = pending.take() {
                            let _ = s.done.send(Err(format!(
                                "the application closed its connection at byte {}, before byte {}",
                                self.sent, s.op.after()
                            )));
                        }
                        let _ = self.upstream.shutdown().await;
                        continue;
                    }
                    self.upstream.write_all(&cbuf[..n]).await.map_err(|e| ProxyError::backend(format!("write: {e}")))?;
                    self.sent += n as u64;
                }
                read = self.upstream.read(&mut ubuf), if !upstream_eof => {
                    let n = read.map_err(|e| ProxyError::backend(format!("read: {e}")))?;
                    if n == 0 {
                        upstream_eof = true;
                        let _ = self.client.shutdown().await;
                        continue;
                    }
                    self.client.write_all(&ubuf[..n]).await.map_err(|e| ProxyError::client(format!("write: {e}")))?;
                    self.received += n as u64;
                }
                Some(steer) = rx.recv(), if pending.is_none() => {
                    match self.check(&steer.op) {
                        Ok(()) => pending = Some(steer),
                        Err(e) => {
                            tracing::warn!(side = %Side::Client, error = %e, "directive refused");
                            let _ = steer.done.send(Err(e));
                        }
                    }
                }
            }
        }
    }

    /// Whether a directive can be carried out here: the right state, an offset still ahead.
    fn check(&self, op: &SteerOp) -> Result<(), String> {
        let secured = matches!(self.upstream, Upstream::Tls(_));
        match op {
            SteerOp::Start { .. } if secured => {
                return Err("start_tls: the connection is already secured".into())
            }
            SteerOp::Stop { .. } if !secured => return Err("stop_tls: the connection is not secured".into()),
            _ => {}
        }
        if op.after() < self.sent {
            return Err(format!(
                "offset {} already passed: {} bytes of the application's stream were relayed",
                op.after(),
                self.sent
            ));
        }
        Ok(())
    }

    /// The handshake toward the upstream, as client, on the plain socket.
    async fn start_tls(
        &mut self,
        config: &OriginateListener,
        tls: &Arc<ClientConfig>,
        sni: &str,
        alpn: &[String],
    ) -> Result<String, ProxyError> {
        let server_name = ServerName::try_from(sni.to_string())
            .map_err(|e| ProxyError::client(format!("start_tls: bad server name {sni:?}: {e}")))?;
        let tls = if alpn.is_empty() {
            tls.clone()
        } else {
            let mut c = (**tls).clone();
            c.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
            Arc::new(c)
        };
        // The socket moves into the handshake; on failure it is dropped (closed) with it.
        let Upstream::Clear(tcp) = std::mem::replace(&mut self.upstream, Upstream::Gone) else {
            return Err(ProxyError::internal("start_tls on a secured connection"));
        };
        // The kernel cannot hand its record layer back: tlsgate's own, so stop_tls can.
        let handshake = ktls::client::connect(KtlsMode::Off, tls, server_name, tcp);
        let (stream, facts) = tokio::time::timeout(config.handshake_timeout, handshake)
            .await
            .map_err(|_| {
                ProxyError::backend(format!(
                    "start_tls: no TLS session within {:?}",
                    config.handshake_timeout
                ))
            })?
            .map_err(|e| ProxyError::backend(format!("start_tls: TLS handshake failed: {e} (SNI {sni})")))?;
        let ClientStream::Records(records) = stream else {
            return Err(ProxyError::internal("start_tls: the kernel took the record layer"));
        };
        self.upstream = Upstream::Tls(Box::new(records));
        Ok(format!("TLS started (SNI {sni}, {}, {})", facts.version, facts.suite))
    }

    /// close_notify both ways, then the raw socket again.
    async fn stop_tls(&mut self, config: &OriginateListener, buf: &mut [u8]) -> Result<String, ProxyError> {
        let Upstream::Tls(records) = &mut self.upstream else {
            return Err(ProxyError::internal("stop_tls on a plain connection"));
        };
        records
            .send_close_notify()
            .await
            .map_err(|e| ProxyError::backend(format!("stop_tls: sending close_notify: {e}")))?;
        // What the upstream still sends before its close_notify is the application's.
        let drained = async {
            loop {
                let n = records.read(buf).await.map_err(|e| ProxyError::backend(format!("stop_tls: {e}")))?;
                if n == 0 {
                    return Ok::<_, ProxyError>(());
                }
                self.client
                    .write_all(&buf[..n])
                    .await
                    .map_err(|e| ProxyError::client(format!("write: {e}")))?;
                self.received += n as u64;
            }
        };
        tokio::time::timeout(config.handshake_timeout, drained).await.map_err(|_| {
            ProxyError::backend(format!(
                "stop_tls: no close_notify from the upstream within {:?}",
                config.handshake_timeout
            ))
        })??;
        let Upstream::Tls(records) = std::mem::replace(&mut self.upstream, Upstream::Gone) else {
            return Err(ProxyError::internal("stop_tls on a plain connection"));
        };
        let RawParts { tcp, read_ahead } = records
            .into_raw_parts()
            .map_err(|_| ProxyError::backend("stop_tls: the upstream's TLS did not end cleanly"))?;
        if !read_ahead.is_empty() {
            self.client
                .write_all(&read_ahead)
                .await
                .map_err(|e| ProxyError::client(format!("write: {e}")))?;
            self.received += read_ahead.len() as u64;
        }
        self.upstream = Upstream::Clear(tcp);
        Ok("TLS stopped, in the clear again".into())
    }
}

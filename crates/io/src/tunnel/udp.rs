//! The portal's UDP forwards and DNS forwarder: one local socket, one tunnel session per local
//! client address (opened again on the next tunnel when one ends), ended after a quiet spell.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tlsgate_tunnel::wire::Protocol;
use tlsgate_tunnel::{Datagram, Target};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::TunnelWait;

/// A client address with no datagram either way for this long has its session ended.
const CLIENT_IDLE: Duration = Duration::from_secs(60);
/// Datagrams queued per client while its session opens, and from the tunnel toward it.
const QUEUE: usize = 64;
/// Local clients served at once by one forward.
const MAX_CLIENTS: usize = 1024;

/// Serves one UDP forward until the socket fails.
pub(crate) async fn forward(sock: UdpSocket, target: Target, tunnel: TunnelWait) {
    let sock = Arc::new(sock);
    let mut clients: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "tunnel portal: UDP receive failed");
                continue;
            }
        };
        let data = buf[..n].to_vec();
        if let Some(tx) = clients.get(&from) {
            match tx.try_send(data) {
                Ok(()) => continue,
                // Full: dropped, as UDP would. Closed: the client's session ended; start anew.
                Err(mpsc::error::TrySendError::Full(_)) => continue,
                Err(mpsc::error::TrySendError::Closed(d)) => {
                    clients.remove(&from);
                    start_client(&mut clients, &sock, &target, &tunnel, from, d);
                }
            }
        } else {
            clients.retain(|_, tx| !tx.is_closed());
            if clients.len() >= MAX_CLIENTS {
                tracing::warn!(client = %from, "tunnel portal: UDP forward has too many clients; datagram dropped");
                continue;
            }
            start_client(&mut clients, &sock, &target, &tunnel, from, data);
        }
    }
}

fn start_client(
    clients: &mut HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    sock: &Arc<UdpSocket>,
    target: &Target,
    tunnel: &TunnelWait,
    from: SocketAddr,
    first: Vec<u8>,
) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let _ = tx.try_send(first);
    clients.insert(from, tx);
    let (sock, target, tunnel) = (sock.clone(), target.clone(), tunnel.clone());
    tokio::spawn(client(sock, target, tunnel, from, rx));
}

/// One local client's association. It outlives the tunnel connection: UDP carries no end-to-end
/// state, so when the tunnel ends (its gate gone) the next datagram opens the session again on
/// whichever tunnel the portal has then, and replies keep coming to the same local address.
async fn client(
    sock: Arc<UdpSocket>,
    target: Target,
    tunnel: TunnelWait,
    from: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    let src = Target::ip(from.ip(), from.port());
    // A datagram taken from the queue when the tunnel had just ended: sent on the next one.
    let mut carried: Option<Vec<u8>> = None;
    loop {
        let first = match carried.take() {
            Some(d) => d,
            None => match tokio::time::timeout(CLIENT_IDLE, rx.recv()).await {
                Ok(Some(d)) => d,
                _ => return,
            },
        };
        // The datagrams queue (up to QUEUE) while the tunnel (re)connects.
        let Some(handle) = tunnel.handle().await else {
            tracing::debug!(client = %from, "tunnel portal: no tunnel; datagrams dropped");
            return;
        };
        let id = match handle.open(Protocol::UDP, target.clone()).await {
            Ok(id) => id,
            // That tunnel ended as the session opened: on to the next one, with the datagram.
            Err(_) if handle.is_closed() => {
                carried = Some(first);
                continue;
            }
            Err(f) => {
                tracing::info!(client = %from, %target, reason = %f, "tunnel portal: UDP forward refused");
                return;
            }
        };
        let (sink, mut replies) = mpsc::channel(QUEUE);
        handle.attach_udp(id, sink, false);
        let mut next = Some(first);
        loop {
            if let Some(data) = next.take() {
                if handle.is_closed() {
                    carried = Some(data);
                    break;
                }
                handle.send_datagram(id, Datagram { src: src.clone(), dst: target.clone(), data });
            }
            tokio::select! {
                d = rx.recv() => match d {
                    Some(d) => next = Some(d),
                    None => {
                        handle.end_session(id);
                        return;
                    }
                },
                r = replies.recv() => match r {
                    Some(d) => {
                        let _ = sock.send_to(&d.data, from).await;
                    }
                    // The tunnel ended, or the gate ended the session: opened again with the
                    // client's next datagram.
                    None => break,
                },
                _ = tokio::time::sleep(CLIENT_IDLE) => {
                    handle.end_session(id);
                    return;
                }
            }
        }
        tracing::debug!(client = %from, "tunnel portal: UDP session ended; the next datagram opens it again");
    }
}

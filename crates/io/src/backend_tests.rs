//! Connecting to a backend with the first bytes: sent inside the connect when the connection is
//! up as `connect` returns (loopback), nothing sent when it fails, and the usual wait (nothing
//! sent) when the handshake is still under way: real loopback TCP.

use std::future::{poll_fn, Future};
use std::io::Read;
use std::net::SocketAddr;
use std::task::Poll;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tlsgate_config::BackendAddr;
use tokio::io::AsyncWriteExt;

use super::connect_one_sending;

fn member(addr: SocketAddr) -> BackendAddr {
    BackendAddr { host: addr.ip().to_string(), port: addr.port() }
}

/// A listening socket on loopback with an accept queue of `backlog`.
fn listener(backlog: i32) -> (Socket, SocketAddr) {
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    l.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    l.listen(backlog).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    (l, addr)
}

#[tokio::test]
async fn the_first_bytes_go_with_the_connect_to_a_backend_on_this_host() {
    let (l, addr) = listener(16);
    let first = b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 443\r\nGET / HTTP/1.1\r\n\r\n";
    let (stream, sent) = connect_one_sending(&member(addr), Duration::from_secs(5), first).await.unwrap();
    assert_eq!(sent, first.len(), "loopback's handshake is done when connect returns: all sent at once");
    assert!(stream.nodelay().unwrap(), "TCP_NODELAY is set");
    let (accepted, _) = l.accept().unwrap();
    let mut got = vec![0u8; first.len()];
    std::net::TcpStream::from(accepted).read_exact(&mut got).unwrap();
    assert_eq!(&got[..], &first[..]);
}

#[tokio::test]
async fn a_refused_connect_fails_having_sent_nothing() {
    let (l, addr) = listener(16);
    drop(l);
    let e = connect_one_sending(&member(addr), Duration::from_secs(5), b"hello").await.unwrap_err();
    assert!(e.contains("refused"), "{e}");
}

/// Fills `l`'s accept queue (nothing accepts): the kernel then drops further SYNs, so a new
/// connection stays in SYN_SENT until its SYN is sent again (after one second) and finds room.
fn fill_accept_queue(addr: SocketAddr) -> Vec<Socket> {
    let mut queued = Vec::new();
    for _ in 0..64 {
        let s = Socket::new(Domain::IPV4, Type::STREAM.nonblocking(), None).unwrap();
        let _ = s.connect(&addr.into());
        if s.peer_addr().is_err() {
            // Not established inside connect: the queue is full.
            return queued;
        }
        queued.push(s);
    }
    panic!("the accept queue never filled");
}

#[tokio::test]
async fn a_handshake_under_way_is_waited_for_and_nothing_is_sent_before() {
    let (l, addr) = listener(1);
    let queued = fill_accept_queue(addr);
    // The connect times out: the SYN was dropped, and nothing reported it connected.
    let e = connect_one_sending(&member(addr), Duration::from_millis(300), b"early").await.unwrap_err();
    assert!(e.contains("timed out"), "{e}");

    // Started with the queue full, then the queue emptied: the SYN sent again connects it.
    let backend = member(addr);
    let mut connect = Box::pin(connect_one_sending(&backend, Duration::from_secs(10), b"late"));
    let pending = poll_fn(|cx| Poll::Ready(connect.as_mut().poll(cx).is_pending())).await;
    assert!(pending, "the handshake cannot have finished: the listener's queue is full");
    // The filling connections, accepted: room in the queue.
    for _ in &queued {
        l.accept().unwrap();
    }
    let (mut stream, sent) = connect.await.unwrap();
    assert_eq!(sent, 0, "nothing went before the connection was up");
    stream.write_all(b"late").await.unwrap();
    let (accepted, _) = l.accept().unwrap();
    let mut got = [0u8; 4];
    std::net::TcpStream::from(accepted).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"late");
}

//! Loopback ports and waiting for a server to accept.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago (for peers that cannot report a port they chose).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Two different free loopback ports: both are held while the second is picked, since the
/// kernel may hand a just-released port out again.
pub fn two_free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    (a.local_addr().unwrap().port(), b.local_addr().unwrap().port())
}

/// A loopback port where nothing listens: bound, then closed, so connects are refused.
pub fn dead_port() -> u16 {
    free_port()
}

/// Polls until `addr` accepts a TCP connection, for peers (nginx) that do not announce readiness.
pub fn wait_accepting(addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "{addr} did not start accepting within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Makes closing `stream` send RST instead of FIN (SO_LINGER 0): a peer that dies mid-stream.
pub fn reset_on_close(stream: &TcpStream) {
    socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO)).unwrap();
}

/// A loopback address whose SYNs go unanswered, so connects time out: a listener with a backlog
/// of 0 whose one queue slot is already taken (Linux drops SYNs to a full accept queue).
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _filler: TcpStream,
}

pub fn blackhole() -> Blackhole {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let filler = TcpStream::connect(addr).unwrap();
    // Prove it: the next connect must not complete.
    let probe = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
    assert!(probe.is_err(), "accept queue of {addr} did not fill");
    Blackhole { addr, _listener: listener, _filler: filler }
}

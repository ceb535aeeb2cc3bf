//! Opening a session's destination socket, on either side, with the refusal a failure earns.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tlsgate_tunnel::wire::OpenRc;
use tokio::net::TcpStream;

use super::OpenFailure;

/// Tries each address in turn within `timeout` each; the last failure decides the code.
pub(crate) async fn connect_any(
    addrs: &[IpAddr],
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, OpenFailure> {
    let mut last = OpenFailure { rc: OpenRc::HOST_UNREACHABLE, reason: "no address".into() };
    for ip in addrs {
        let sa = SocketAddr::new(*ip, port);
        match tokio::time::timeout(timeout, TcpStream::connect(sa)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = OpenFailure { rc: rc_for(&e), reason: format!("connect {sa}: {e}") },
            Err(_) => {
                last = OpenFailure { rc: OpenRc::TIMED_OUT, reason: format!("connect {sa}: timed out") }
            }
        }
    }
    Err(last)
}

fn rc_for(e: &std::io::Error) -> OpenRc {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => OpenRc::CONNECTION_REFUSED,
        NetworkUnreachable => OpenRc::NETWORK_UNREACHABLE,
        HostUnreachable => OpenRc::HOST_UNREACHABLE,
        TimedOut => OpenRc::TIMED_OUT,
        _ => OpenRc::GENERAL_FAILURE,
    }
}

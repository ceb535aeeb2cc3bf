//! The owner (uid) of a TCP socket named by its local and peer addresses, from the kernel's
//! socket diagnostics (NETLINK_SOCK_DIAG, `inet_diag_req_v2` with an exact socket id).
//!
//! Why this and not /proc/net/tcp plus a walk of /proc/*/fd: the kernel looks up the one socket
//! by its four-tuple (no scan of every socket of the machine), and its answer carries the uid
//! directly; the /proc walk needs the inode then every process's descriptors. The request and
//! answer layouts are the kernel's (linux/inet_diag.h, linux/netlink.h), built here as bytes.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
/// `inet_diag_req_v2`: family, protocol, ext, pad, states, then the socket id.
const REQ_LEN: usize = 56;
/// Offset of `idiag_uid` in `inet_diag_msg`: 4 bytes, the 48-byte id, expires, rqueue, wqueue.
const UID_AT: usize = 4 + 48 + 12;

/// The request for the socket whose local end is `local` and whose peer is `peer`.
pub fn request(local: SocketAddr, peer: SocketAddr, v6: bool) -> Vec<u8> {
    let mut m = Vec::with_capacity(NLMSG_HDR + REQ_LEN);
    m.extend_from_slice(&((NLMSG_HDR + REQ_LEN) as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    m.push(if v6 { libc::AF_INET6 as u8 } else { libc::AF_INET as u8 });
    m.push(libc::IPPROTO_TCP as u8);
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // any state
    m.extend_from_slice(&local.port().to_be_bytes());
    m.extend_from_slice(&peer.port().to_be_bytes());
    let bytes = |ip: IpAddr| -> [u8; 16] {
        let mut b = [0u8; 16];
        match ip {
            IpAddr::V4(v4) if !v6 => b[..4].copy_from_slice(&v4.octets()),
            IpAddr::V4(v4) => b = v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => b = v6.octets(),
        }
        b
    };
    m.extend_from_slice(&bytes(local.ip()));
    m.extend_from_slice(&bytes(peer.ip()));
    m.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // INET_DIAG_NOCOOKIE
    m.extend_from_slice(&u32::MAX.to_ne_bytes());
    m
}

/// The uid in the kernel's answer; `None` when it knows no such socket.
pub fn parse_answer(answer: &[u8]) -> Result<Option<u32>, String> {
    let field = |at: usize| -> Option<[u8; 4]> { answer.get(at..at + 4)?.try_into().ok() };
    let kind = answer.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    match kind {
        Some(SOCK_DIAG_BY_FAMILY) => field(NLMSG_HDR + UID_AT)
            .map(|b| Some(u32::from_ne_bytes(b)))
            .ok_or_else(|| format!("short sock_diag answer ({} bytes)", answer.len())),
        Some(NLMSG_ERROR) => {
            let errno = field(NLMSG_HDR).map(i32::from_ne_bytes).unwrap_or(0);
            if errno == -libc::ENOENT {
                Ok(None)
            } else {
                Err(format!("sock_diag: {}", std::io::Error::from_raw_os_error(-errno)))
            }
        }
        other => Err(format!("unexpected sock_diag answer type {other:?}")),
    }
}

/// The uid owning the TCP socket `local` → `peer` in this network namespace, if there is one.
/// IPv4 addresses are looked up as IPv4 sockets, then as a dual-stack socket's mapped ones.
pub fn socket_owner(local: SocketAddr, peer: SocketAddr) -> Result<Option<u32>, String> {
    let families: &[bool] = if local.is_ipv4() && peer.is_ipv4() { &[false, true] } else { &[true] };
    for &v6 in families {
        let sock = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::DGRAM,
            Some(Protocol::from(libc::NETLINK_SOCK_DIAG)),
        )
        .map_err(|e| format!("sock_diag socket: {e}"))?;
        (&sock).write_all(&request(local, peer, v6)).map_err(|e| format!("sock_diag request: {e}"))?;
        let mut answer = [0u8; 1024];
        let n = (&sock).read(&mut answer).map_err(|e| format!("sock_diag answer: {e}"))?;
        if let Some(uid) = parse_answer(&answer[..n])? {
            return Ok(Some(uid));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_of_a_loopback_socket_is_this_process_user() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (local, peer) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        let uid = nix::unistd::getuid().as_raw();
        assert_eq!(socket_owner(local, peer).unwrap(), Some(uid));
        // The accepted end, named from its side.
        assert_eq!(socket_owner(peer, local).unwrap(), Some(uid));
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(socket_owner(local, nobody).unwrap(), None);
    }

    #[test]
    fn a_dual_stack_socket_is_found_by_its_ipv4_addresses() {
        let Ok(listener) = std::net::TcpListener::bind("[::]:0") else { return };
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let local = SocketAddr::new(accepted.local_addr().unwrap().ip().to_canonical(), port);
        let peer = client.local_addr().unwrap();
        assert_eq!(socket_owner(local, peer).unwrap(), Some(nix::unistd::getuid().as_raw()));
    }
}

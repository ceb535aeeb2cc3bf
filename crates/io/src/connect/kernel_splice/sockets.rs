//! What the kernel splice reads from (and does to) the gate's own TCP sockets: their options,
//! sequence numbers and timestamp clock at the downgrade, and a close that sends nothing.

// Socket options the libc crate has no safe wrapper for.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

use super::legs::SocketView;
use super::NotSpliced;

// Not in libc: the queue a repair-mode socket's TCP_QUEUE_SEQ reads, and leaving repair mode
// without the window probe TCP_REPAIR_OFF sends.
const TCP_RECV_QUEUE: libc::c_int = 1;
const TCP_SEND_QUEUE: libc::c_int = 2;
const TCP_REPAIR_ON: libc::c_int = 1;
const TCP_REPAIR_OFF: libc::c_int = 0;
const TCP_REPAIR_OFF_NO_WP: libc::c_int = -1;
const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;
const TCPI_OPT_ECN: u8 = 8;
const TCPI_OPT_USEC_TS: u8 = 64;

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn set(fd: RawFd, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: a c_int option value of the right size.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
}

fn get<T: Copy>(fd: RawFd, name: libc::c_int, mut v: T) -> io::Result<T> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` is a plain value of `len` bytes the kernel writes at most.
    check(unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, name, (&mut v as *mut T).cast(), &mut len) })?;
    Ok(v)
}

pub fn tcp_info(fd: RawFd) -> io::Result<libc::tcp_info> {
    // SAFETY: tcp_info is plain integers; zero is a valid value.
    get(fd, libc::TCP_INFO, unsafe { std::mem::zeroed::<libc::tcp_info>() })
}

/// (write_seq, rcv_nxt): read in repair mode, which the socket enters and leaves without
/// sending anything (needs CAP_NET_ADMIN).
fn queue_seqs(fd: RawFd) -> io::Result<(u32, u32)> {
    set(fd, libc::TCP_REPAIR, TCP_REPAIR_ON)?;
    let read = (|| {
        set(fd, libc::TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)?;
        let w: u32 = get(fd, libc::TCP_QUEUE_SEQ, 0u32)?;
        set(fd, libc::TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)?;
        let r: u32 = get(fd, libc::TCP_QUEUE_SEQ, 0u32)?;
        Ok((w, r))
    })();
    set(fd, libc::TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)?;
    read
}

pub fn write_seq(fd: RawFd) -> io::Result<u32> {
    queue_seqs(fd).map(|(w, _)| w)
}

fn monotonic_ms() -> u32 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000) as u32
}

/// The socket's TSval offset from CLOCK_MONOTONIC in ms, what the BPF program adds to its own
/// reading of that clock (read until no millisecond boundary falls inside the read).
fn ts_offset(fd: RawFd) -> io::Result<u32> {
    for _ in 0..16 {
        let before = monotonic_ms();
        let ts: u32 = get(fd, libc::TCP_TIMESTAMP, 0u32)?;
        if monotonic_ms() == before {
            return Ok(ts.wrapping_sub(before));
        }
    }
    Err(io::Error::other("the monotonic clock moved across every TCP_TIMESTAMP read"))
}

/// Why two connections cannot be spliced into one, if they cannot: their options must agree
/// (nothing is added to or taken from a segment), and each side's segments must fit the
/// other's path.
pub fn mismatch(portal: &libc::tcp_info, dest: &libc::tcp_info) -> Option<NotSpliced> {
    let opts = |i: &libc::tcp_info| i.tcpi_options;
    let both = |bit: u8| opts(portal) & bit != 0 && opts(dest) & bit != 0;
    let (reason, why) = if !both(TCPI_OPT_TIMESTAMPS) {
        ("timestamps", "timestamps not on both connections")
    } else if !both(TCPI_OPT_WSCALE) {
        ("window_scaling", "window scaling not on both connections")
    } else if (opts(portal) ^ opts(dest)) & TCPI_OPT_SACK != 0 {
        ("sack", "SACK on one connection only")
    } else if (opts(portal) | opts(dest)) & (TCPI_OPT_ECN | TCPI_OPT_USEC_TS) != 0 {
        ("ecn_or_usec_timestamps", "ECN or microsecond timestamps negotiated")
    } else if portal.tcpi_advmss + 40 > dest.tcpi_pmtu || dest.tcpi_advmss + 40 > portal.tcpi_pmtu {
        ("mtu", "the paths' MTUs differ")
    } else {
        return None;
    };
    Some(NotSpliced::new(reason, why))
}

/// The socket's view at the downgrade.
pub fn view(tcp: &tokio::net::TcpStream, info: &libc::tcp_info) -> io::Result<SocketView> {
    use std::os::fd::AsRawFd;
    let v4 = |a: std::net::SocketAddr| match a {
        std::net::SocketAddr::V4(a) => Ok(a),
        std::net::SocketAddr::V6(_) => Err(io::Error::other("IPv6")),
    };
    let fd = tcp.as_raw_fd();
    let (write_seq, rcv_nxt) = queue_seqs(fd)?;
    Ok(SocketView {
        local: v4(tcp.local_addr()?)?,
        peer: v4(tcp.peer_addr()?)?,
        write_seq,
        rcv_nxt,
        ts_off: ts_offset(fd)?,
        snd_wscale: info.tcpi_snd_rcv_wscale & 0x0f,
        rcv_wscale: info.tcpi_snd_rcv_wscale >> 4,
    })
}

/// Leaves repair mode, which sends a window probe (a segment with an old sequence number: the
/// peer answers with an ACK), and enters it again at once, so that closing sends nothing more.
/// The answer never reaches the socket: the spliced connection's legs take it.
pub fn probe_then_silence(fd: RawFd) -> io::Result<()> {
    set(fd, libc::TCP_REPAIR, TCP_REPAIR_OFF)?;
    set(fd, libc::TCP_REPAIR, TCP_REPAIR_ON)
}

/// Puts the socket in repair mode for good: it sends nothing more, and closing it then sends
/// neither FIN nor RST. The spliced connection's segments never reach it.
pub fn silence(fd: RawFd) -> io::Result<()> {
    set(fd, libc::TCP_REPAIR, TCP_REPAIR_ON)
}

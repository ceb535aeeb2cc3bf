//! The kernel TLS system calls: the `tls` ULP, the key setsockopts, and records sent and received
//! with their content type in a control message (Documentation/networking/tls.rst).
//!
//! The only `unsafe` of the offload: the `tls12_crypto_info_*` structs passed by pointer, and
//! `sendmsg`/`recvmsg` with a control-message buffer. Structs and constants are the `libc`
//! crate's.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::RawFd;

use tlsgate_record::crypto::{Suite, Version};
use tlsgate_record::offload::DirectionKey;

/// Which key: the kernel's transmit or receive side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Tx,
    Rx,
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn setsockopt_bytes(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &[u8]) -> io::Result<()> {
    // SAFETY: `value` is a live slice of `value.len()` bytes for the duration of the call; the
    // kernel copies it and keeps no pointer.
    check(unsafe { libc::setsockopt(fd, level, name, value.as_ptr().cast(), value.len() as libc::socklen_t) })
}

/// Attaches the `tls` upper-layer protocol to a connected TCP socket (loading the module when
/// the kernel may). Until keys are set the socket behaves as before.
pub fn set_ulp(fd: RawFd) -> io::Result<()> {
    setsockopt_bytes(fd, libc::SOL_TCP, libc::TCP_ULP, b"tls")
}

/// Views a plain-old-data struct as its bytes.
fn pod_bytes<T>(v: &T) -> &[u8] {
    // SAFETY: `T` is one of libc's `repr(C)` crypto-info structs: integers and byte arrays with
    // no padding between them, all initialised (built from `zeroed()`), so every byte is
    // readable; the slice borrows `v` and cannot outlive it.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

/// Hands one direction's key to the kernel (TLS_TX or TLS_RX).
pub fn set_key(
    fd: RawFd,
    dir: Direction,
    version: Version,
    suite: Suite,
    k: &DirectionKey,
) -> io::Result<()> {
    let name = match dir {
        Direction::Tx => libc::TLS_TX,
        Direction::Rx => libc::TLS_RX,
    };
    let version = match version {
        Version::Tls12 => libc::TLS_1_2_VERSION,
        Version::Tls13 => libc::TLS_1_3_VERSION,
    };
    let seq = k.seq.to_be_bytes();
    // The 12-byte IV rustls holds splits into the kernel's salt and IV (AES-GCM: 4 + 8; TLS 1.3
    // nonces are salt||iv XOR the sequence number, TLS 1.2 ones salt||explicit nonce, which the
    // kernel starts at `iv`); ChaCha20-Poly1305 takes all 12 as its IV (RFC 7905, RFC 8446).
    macro_rules! gcm {
        ($ty:ty, $cipher:expr, $keylen:expr) => {{
            // SAFETY: a repr(C) struct of integers and byte arrays: all zeroes is a valid value.
            let mut info: $ty = unsafe { zeroed() };
            info.info.version = version;
            info.info.cipher_type = $cipher;
            if k.key.len() != $keylen {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "key length does not match the suite",
                ));
            }
            info.key.copy_from_slice(&k.key);
            info.salt.copy_from_slice(&k.iv[..4]);
            info.iv.copy_from_slice(&k.iv[4..]);
            info.rec_seq.copy_from_slice(&seq);
            let r = setsockopt_bytes(fd, libc::SOL_TLS, name, pod_bytes(&info));
            info.key.fill(0);
            r
        }};
    }
    match suite {
        Suite::Aes128Gcm => gcm!(libc::tls12_crypto_info_aes_gcm_128, libc::TLS_CIPHER_AES_GCM_128, 16),
        Suite::Aes256Gcm => gcm!(libc::tls12_crypto_info_aes_gcm_256, libc::TLS_CIPHER_AES_GCM_256, 32),
        Suite::Chacha20Poly1305 => {
            // SAFETY: as above.
            let mut info: libc::tls12_crypto_info_chacha20_poly1305 = unsafe { zeroed() };
            info.info.version = version;
            info.info.cipher_type = libc::TLS_CIPHER_CHACHA20_POLY1305;
            if k.key.len() != 32 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "key length does not match the suite",
                ));
            }
            info.key.copy_from_slice(&k.key);
            info.iv.copy_from_slice(&k.iv);
            info.rec_seq.copy_from_slice(&seq);
            let r = setsockopt_bytes(fd, libc::SOL_TLS, name, pod_bytes(&info));
            info.key.fill(0);
            r
        }
    }
}

/// The kernel's next transmit record sequence number: `getsockopt(SOL_TLS, TLS_TX)` returns the
/// crypto info the socket seals with, `rec_seq` live (its last 8 bytes in every suite's struct).
/// The struct holds the key too: the buffer is wiped before it is dropped.
pub fn tx_seq(fd: RawFd, suite: Suite) -> io::Result<u64> {
    let len = match suite {
        Suite::Aes128Gcm => size_of::<libc::tls12_crypto_info_aes_gcm_128>(),
        Suite::Aes256Gcm => size_of::<libc::tls12_crypto_info_aes_gcm_256>(),
        Suite::Chacha20Poly1305 => size_of::<libc::tls12_crypto_info_chacha20_poly1305>(),
    };
    let mut buf = [0u8; 64];
    let mut got = len as libc::socklen_t;
    // SAFETY: `buf` is live and writable for `len` (<= 64) bytes during the call; `got` is its
    // length, updated by the kernel; the kernel keeps no pointer.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_TLS, libc::TLS_TX, buf.as_mut_ptr().cast(), &mut got) };
    let result = check(rc).and_then(|()| {
        if got as usize != len {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "TLS_TX crypto info of another size"));
        }
        let seq: [u8; 8] = buf[len - 8..len].try_into().map_err(|_| io::ErrorKind::InvalidData)?;
        Ok(u64::from_be_bytes(seq))
    });
    buf.fill(0);
    result
}

/// Room for one `int`-sized control message (the record type is one byte, padded).
const CMSG_SPACE: usize = 32;

/// Aligned control-message buffer.
#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_SPACE]);

/// Receives plaintext from an offloaded socket: (bytes, record type). The kernel returns records
/// of one type per call; a non-data record comes alone. Non-blocking: `WouldBlock` when empty.
pub fn recv_record(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, u8)> {
    let mut cbuf = CmsgBuf([0; CMSG_SPACE]);
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: msghdr is plain data; all zeroes is valid (no name, no iovecs yet).
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    msg.msg_controllen = CMSG_SPACE as _;
    // SAFETY: `msg` points at `iov` (over `buf`) and `cbuf`, both live and writable for the
    // call and of the lengths given; nothing keeps the pointers after it returns.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut record_type = 23; // application_data: no control message was attached
                              // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, within
                              // `msg_controllen`; the data read is one byte inside a message of type TLS_GET_RECORD_TYPE.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_TLS && (*c).cmsg_type == libc::TLS_GET_RECORD_TYPE {
                record_type = *libc::CMSG_DATA(c);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, record_type))
}

/// Sends `data` as one record of `record_type` (alert 21, handshake 22) through the kernel's
/// record layer. Non-blocking.
pub fn send_record(fd: RawFd, record_type: u8, data: &[u8]) -> io::Result<usize> {
    let mut cbuf = CmsgBuf([0; CMSG_SPACE]);
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() };
    // SAFETY: as in `recv_record`.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE/CMSG_LEN compute sizes; CMSG_FIRSTHDR points into `cbuf`, which has
    // room for one header and one byte of data (CMSG_SPACE(1) <= 32).
    unsafe {
        msg.msg_controllen = libc::CMSG_SPACE(1) as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_TLS;
        (*c).cmsg_type = libc::TLS_SET_RECORD_TYPE;
        (*c).cmsg_len = libc::CMSG_LEN(1) as _;
        *libc::CMSG_DATA(c) = record_type;
    }
    // SAFETY: `msg` points at `iov` (over `data`, only read) and `cbuf`, live for the call.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// A pipe for `splice`, both ends non-blocking.
pub fn pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
    use std::os::fd::FromRawFd;
    // SAFETY: pipe2 succeeded: both are fresh descriptors owned by no one else.
    Ok(unsafe { (std::os::fd::OwnedFd::from_raw_fd(fds[0]), std::os::fd::OwnedFd::from_raw_fd(fds[1])) })
}

/// Moves up to `len` bytes from `from` to `to` without copying them to user space
/// (non-blocking, one of the two a pipe). 0: end of stream on `from`.
pub fn splice(from: RawFd, to: RawFd, len: usize, more: bool) -> io::Result<usize> {
    let flags = libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE | if more { libc::SPLICE_F_MORE } else { 0 };
    // SAFETY: null offsets (both are sockets or pipes); the descriptors are borrowed by the
    // caller for the call.
    let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

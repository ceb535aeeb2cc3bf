//! libtlsgate: the C library of application directives (see include/tlsgate.h). Each call
//! reads the addresses of the application's socket, sends one request line to the control
//! socket and reads one answer line; the messages are `tlsgate-directive`'s.

// A C ABI: raw pointers and descriptors from the caller cross this boundary.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::ptr;

use tlsgate_directive::{Answer, PeerFacts, Request, MAX_LINE};

/// Where the control socket is when `TLSGATE_CONTROL` is not set.
const DEFAULT_CONTROL: &str = "/run/tlsgate/control.sock";

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn fail(message: String) -> c_int {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
    -1
}

/// The socket's (local, peer) addresses.
fn addresses(fd: c_int) -> Result<(SocketAddr, SocketAddr), String> {
    if fd < 0 {
        return Err(format!("bad descriptor {fd}"));
    }
    // SAFETY: the caller passes a descriptor open for the duration of the call; it is only
    // borrowed for getsockname/getpeername.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&fd);
    let local = sock.local_addr().map_err(|e| format!("getsockname: {e}"))?;
    let peer = sock.peer_addr().map_err(|e| format!("getpeername: {e}"))?;
    match (local.as_socket(), peer.as_socket()) {
        (Some(l), Some(p)) => Ok((l, p)),
        _ => Err("not a TCP socket".into()),
    }
}

/// Sends `request`, reads the answer.
fn ask(request: &Request) -> Result<Answer, String> {
    let path = std::env::var_os("TLSGATE_CONTROL").unwrap_or_else(|| DEFAULT_CONTROL.into());
    let shown = std::path::Path::new(&path).display().to_string();
    let mut stream = UnixStream::connect(&path).map_err(|e| format!("control socket {shown}: {e}"))?;
    stream.write_all(&request.encode()).map_err(|e| format!("control socket {shown}: write: {e}"))?;
    let mut line = Vec::new();
    // At most one line's limit: a broken peer cannot make the caller buffer more.
    let mut reader = BufReader::new(std::io::Read::take(stream, MAX_LINE as u64 + 1));
    reader.read_until(b'\n', &mut line).map_err(|e| format!("control socket {shown}: read: {e}"))?;
    if line.pop() != Some(b'\n') {
        return Err(format!("control socket {shown}: closed without an answer"));
    }
    Answer::decode(&line).map_err(|e| format!("control socket {shown}: {e}"))
}

fn done(answer: Answer) -> c_int {
    match answer {
        Answer::Failed(e) => fail(e),
        _ => 0,
    }
}

/// A C string argument, NULL as `None`.
///
/// # Safety
/// `s` is NULL or a NUL-terminated string.
unsafe fn text(s: *const c_char, what: &str) -> Result<Option<String>, String> {
    if s.is_null() {
        return Ok(None);
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    let s = unsafe { CStr::from_ptr(s) };
    s.to_str().map(|s| Some(s.to_string())).map_err(|_| format!("{what} is not UTF-8"))
}

/// The C form of a `peer` answer.
#[repr(C)]
pub struct TlsgatePeer {
    subject: *mut c_char,
    identity: *mut c_char,
    version: *mut c_char,
    suite: *mut c_char,
    alpn: *mut c_char,
    sni: *mut c_char,
    cert_pem: *mut c_char,
    sans: *mut *mut c_char,
}

fn c_string(s: Option<String>) -> *mut c_char {
    s.and_then(|s| CString::new(s).ok()).map_or(ptr::null_mut(), CString::into_raw)
}

impl TlsgatePeer {
    fn from_facts(f: PeerFacts) -> TlsgatePeer {
        let mut sans: Vec<*mut c_char> = f.sans.into_iter().map(|s| c_string(Some(s))).collect();
        sans.push(ptr::null_mut());
        TlsgatePeer {
            subject: c_string(f.subject),
            identity: c_string(f.identity),
            version: c_string(Some(f.version)),
            suite: c_string(Some(f.suite)),
            alpn: c_string(f.alpn),
            sni: c_string(f.sni),
            cert_pem: c_string(f.cert_pem),
            sans: Box::into_raw(sans.into_boxed_slice()).cast(),
        }
    }
}

/// See include/tlsgate.h.
///
/// # Safety
/// `out` points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn tlsgate_peer(fd: c_int, out: *mut *mut TlsgatePeer) -> c_int {
    if out.is_null() {
        return fail("out is NULL".into());
    }
    let answer = addresses(fd).and_then(|(local, peer)| ask(&Request::Peer { local, peer }));
    match answer {
        Ok(Answer::Peer(facts)) => {
            // SAFETY: checked non-null; writable by the caller's contract.
            unsafe { *out = Box::into_raw(Box::new(TlsgatePeer::from_facts(facts))) };
            0
        }
        Ok(Answer::Failed(e)) | Err(e) => fail(e),
        Ok(Answer::Done) => fail("tlsgate answered without the session's facts".into()),
    }
}

/// See include/tlsgate.h.
///
/// # Safety
/// `peer` is NULL or was returned by `tlsgate_peer` and not freed yet.
#[no_mangle]
pub unsafe extern "C" fn tlsgate_peer_free(peer: *mut TlsgatePeer) {
    if peer.is_null() {
        return;
    }
    // SAFETY: allocated by tlsgate_peer as a Box, and every string by CString::into_raw.
    unsafe {
        let p = Box::from_raw(peer);
        for s in [p.subject, p.identity, p.version, p.suite, p.alpn, p.sni, p.cert_pem] {
            if !s.is_null() {
                drop(CString::from_raw(s));
            }
        }
        let mut n = 0;
        while !(*p.sans.add(n)).is_null() {
            drop(CString::from_raw(*p.sans.add(n)));
            n += 1;
        }
        drop(Box::from_raw(ptr::slice_from_raw_parts_mut(p.sans, n + 1)));
    }
}

/// See include/tlsgate.h.
///
/// # Safety
/// `sni` and `alpn` are NULL or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn tlsgate_start_tls(
    fd: c_int,
    written: u64,
    sni: *const c_char,
    alpn: *const c_char,
) -> c_int {
    // SAFETY: the caller's contract for both strings.
    let args = unsafe { text(sni, "sni").and_then(|s| Ok((s, text(alpn, "alpn")?))) };
    let result = args.and_then(|(sni, alpn)| {
        let alpn = alpn.map(|a| a.split(',').map(str::to_string).collect()).unwrap_or_default();
        start_tls(fd, written, sni, alpn, None)
    });
    result.map_or_else(fail, done)
}

fn start_tls(
    fd: c_int,
    after: u64,
    sni: Option<String>,
    alpn: Vec<String>,
    client_cert: Option<String>,
) -> Result<Answer, String> {
    let (local, peer) = addresses(fd)?;
    ask(&Request::StartTls { local, peer, after, sni, alpn, client_cert })
}

/// `struct tlsgate_tls_options`: `size` first, so that a caller built against an older header
/// (fewer fields) is read only as far as it wrote.
#[repr(C)]
pub struct TlsgateTlsOptions {
    size: usize,
    sni: *const c_char,
    alpn: *const *const c_char,
    client_cert: *const c_char,
}

/// `sni`, `alpn` and `client_cert`.
type Options = (Option<String>, Vec<String>, Option<String>);

/// `sni`, `alpn` and `client_cert` of a caller's options, reading no field past its `size`.
///
/// # Safety
/// `options` is NULL or points to a `tlsgate_tls_options` of `options->size` bytes whose strings
/// are NULL or NUL-terminated, `alpn` NULL-terminated.
unsafe fn read_options(options: *const TlsgateTlsOptions) -> Result<Options, String> {
    use std::mem::{offset_of, size_of};
    if options.is_null() {
        return Ok((None, Vec::new(), None));
    }
    // SAFETY: non-null; `size` comes first, and no other field is read unless `size` covers it.
    let size = unsafe { (*options).size };
    if size < size_of::<usize>() {
        return Err(format!("options.size {size} is too small"));
    }
    let covers = |offset: usize| size >= offset + size_of::<*const c_char>();
    let field = |offset: usize| -> *const c_char {
        if covers(offset) {
            // SAFETY: within the caller's `size` bytes; every field after `size` is a pointer.
            unsafe { *options.cast::<u8>().add(offset).cast::<*const c_char>() }
        } else {
            ptr::null()
        }
    };
    // SAFETY: each is NULL or a NUL-terminated string (the caller's contract).
    let sni = unsafe { text(field(offset_of!(TlsgateTlsOptions, sni)), "sni")? };
    // SAFETY: as above.
    let client_cert = unsafe { text(field(offset_of!(TlsgateTlsOptions, client_cert)), "client_cert")? };
    let mut alpn = Vec::new();
    let list = field(offset_of!(TlsgateTlsOptions, alpn)).cast::<*const c_char>();
    if !list.is_null() {
        for n in 0.. {
            // SAFETY: a NULL-terminated array of NUL-terminated strings (the caller's contract).
            match unsafe { text(*list.add(n), "alpn")? } {
                Some(proto) => alpn.push(proto),
                None => break,
            }
        }
    }
    Ok((sni, alpn, client_cert))
}

/// See include/tlsgate.h.
///
/// # Safety
/// As [`read_options`].
#[no_mangle]
pub unsafe extern "C" fn tlsgate_start_tls_with(
    fd: c_int,
    written: u64,
    options: *const TlsgateTlsOptions,
) -> c_int {
    // SAFETY: the caller's contract.
    let result = unsafe { read_options(options) }
        .and_then(|(sni, alpn, client_cert)| start_tls(fd, written, sni, alpn, client_cert));
    result.map_or_else(fail, done)
}

/// See include/tlsgate.h.
#[no_mangle]
pub extern "C" fn tlsgate_stop_tls(fd: c_int, written: u64) -> c_int {
    let result =
        addresses(fd).and_then(|(local, peer)| ask(&Request::StopTls { local, peer, after: written }));
    result.map_or_else(fail, done)
}

/// See include/tlsgate.h.
#[no_mangle]
pub extern "C" fn tlsgate_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read_no_further_than_their_size() {
        let (sni, proto, name) = (c"db.test", c"x-proto", c"alpha");
        let alpn = [proto.as_ptr(), ptr::null()];
        let mut o = TlsgateTlsOptions {
            size: size_of::<TlsgateTlsOptions>(),
            sni: sni.as_ptr(),
            alpn: alpn.as_ptr(),
            client_cert: name.as_ptr(),
        };
        // SAFETY: a valid struct of `size` bytes.
        let all = unsafe { read_options(&o) }.unwrap();
        assert_eq!(all, (Some("db.test".into()), vec!["x-proto".into()], Some("alpha".into())));
        // A caller built when the struct ended after `sni`: what lies beyond is not its own.
        o.size = std::mem::offset_of!(TlsgateTlsOptions, alpn);
        (o.alpn, o.client_cert) = (ptr::dangling(), ptr::dangling());
        // SAFETY: the fields past `size` are never dereferenced.
        let older = unsafe { read_options(&o) }.unwrap();
        assert_eq!(older, (Some("db.test".into()), Vec::new(), None));
        o.size = 3;
        // SAFETY: as above.
        assert!(unsafe { read_options(&o) }.unwrap_err().contains("too small"));
        // SAFETY: NULL is allowed.
        assert_eq!(unsafe { read_options(ptr::null()) }.unwrap(), (None, Vec::new(), None));
    }
}

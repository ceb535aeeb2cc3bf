//! terminate's side of keyd: a rustls signing key whose private half stays in keyd.
//!
//! rustls signs synchronously inside the handshake, on the runtime's worker thread, so each
//! signature is a blocking round trip over the Unix socket on that thread: about as long as the
//! signature itself plus two context switches. A slow or hung keyd therefore holds a worker for up
//! to [`TIMEOUT`]; the alternative, a separate pool of signing threads, would still block the
//! worker waiting for its answer (rustls cannot suspend a handshake) and add a hand-off per
//! signature. Idle connections are pooled so a signature costs no connect.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

use super::wire::{frame, Framer, Reason, Request, Response};
use crate::TlsError;

/// The longest a handshake waits for keyd (connect, request and answer).
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Idle connections kept per key; more concurrent handshakes open more and close the surplus.
const POOL: usize = 32;

/// `keyd:PATH#NAME`, split.
pub fn parse(source: &str) -> Option<Result<(PathBuf, String), String>> {
    let rest = source.strip_prefix("keyd:")?;
    Some(match rest.rsplit_once('#') {
        Some((path, name)) if !path.is_empty() && !name.is_empty() && name.len() <= super::wire::MAX_NAME => {
            Ok((PathBuf::from(path), name.to_string()))
        }
        _ => Err("expected keyd:SOCKET#NAME (a socket path and a key name)".into()),
    })
}

/// The key `name` held by the keyd listening on `socket`: asks it for the key's schemes and public
/// key, so a key that keyd lacks, or that does not match the certificate, stops the start.
pub fn connect(socket: &Path, name: &str) -> Result<Arc<dyn SigningKey>, TlsError> {
    let remote =
        Arc::new(Remote { socket: socket.to_path_buf(), name: name.to_string(), idle: Mutex::default() });
    let fail = |problem: String| TlsError::Remote { key: remote.describe(), problem };
    let mut conn = remote.open().map_err(|e| fail(e.to_string()))?;
    let (schemes, spki) =
        match exchange(&mut conn, &Request::Info { name: name.into() }).map_err(|e| fail(e.to_string()))? {
            Response::Info { schemes, spki } => (schemes, spki),
            Response::Refused { reason, text } => return Err(fail(refusal(reason, &text))),
            Response::Signature(_) => return Err(fail("keyd answered out of turn".into())),
        };
    remote.put_back(conn);
    let schemes: Vec<SignatureScheme> = schemes.into_iter().map(SignatureScheme::from).collect();
    let algorithm = match schemes.first() {
        Some(SignatureScheme::ECDSA_NISTP256_SHA256 | SignatureScheme::ECDSA_NISTP384_SHA384) => {
            SignatureAlgorithm::ECDSA
        }
        Some(SignatureScheme::ED25519) => SignatureAlgorithm::ED25519,
        Some(_) => SignatureAlgorithm::RSA,
        None => return Err(fail("keyd offers no signature scheme for it".into())),
    };
    Ok(Arc::new(KeydKey { remote, schemes, spki: SubjectPublicKeyInfoDer::from(spki), algorithm }))
}

fn refusal(reason: Reason, text: &str) -> String {
    match reason {
        Reason::NotAllowed => format!("keyd refused this process: {text}"),
        _ => format!("keyd refused: {text}"),
    }
}

#[derive(Debug)]
struct Remote {
    socket: PathBuf,
    name: String,
    idle: Mutex<Vec<UnixStream>>,
}

impl Remote {
    fn describe(&self) -> String {
        format!("keyd:{}#{}", self.socket.display(), self.name)
    }

    fn open(&self) -> std::io::Result<UnixStream> {
        let conn = UnixStream::connect(&self.socket).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot connect to keyd at {}: {e}", self.socket.display()))
        })?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        conn.set_write_timeout(Some(TIMEOUT))?;
        Ok(conn)
    }

    /// A pooled connection that keyd has not closed (a restarted keyd closed all of them), or a
    /// new one.
    fn checkout(&self) -> std::io::Result<UnixStream> {
        loop {
            let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match pooled {
                Some(conn) if still_open(&conn) => return Ok(conn),
                Some(_) => continue,
                None => return self.open(),
            }
        }
    }

    fn put_back(&self, conn: UnixStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < POOL {
            idle.push(conn);
        }
    }

    /// One signature; a pooled connection that fails is retried once on a new one (keyd may
    /// have restarted between the check and the request).
    fn sign(&self, mut conn: UnixStream, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, String> {
        let request =
            Request::Sign { name: self.name.clone(), scheme: u16::from(scheme), message: message.to_vec() };
        let answer = match exchange(&mut conn, &request) {
            Ok(a) => a,
            Err(_) => {
                conn = self.open().map_err(|e| e.to_string())?;
                exchange(&mut conn, &request)
                    .map_err(|e| format!("keyd at {}: {e}", self.socket.display()))?
            }
        };
        match answer {
            Response::Signature(sig) => {
                self.put_back(conn);
                Ok(sig)
            }
            Response::Refused { reason, text } => Err(refusal(reason, &text)),
            Response::Info { .. } => Err("keyd answered out of turn".into()),
        }
    }
}

/// Whether keyd still holds its end: a pending end-of-file (or stray bytes) means no. One
/// non-blocking peek, no change to the socket's mode.
fn still_open(conn: &UnixStream) -> bool {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    let peeked = socket2::SockRef::from(conn).recv_with_flags(&mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT);
    matches!(peeked, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Writes one request and reads one answer.
fn exchange(conn: &mut UnixStream, request: &Request) -> std::io::Result<Response> {
    match conn.write_all(&frame(&request.encode())) {
        Ok(()) => read_answer(conn),
        // keyd answers a process it does not allow as soon as it connects and closes without
        // reading: the request may then meet a closed socket while the refusal waits to be read.
        Err(e)
            if matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset) =>
        {
            read_answer(conn).map_err(|_| e)
        }
        Err(e) => Err(e),
    }
}

fn read_answer(conn: &mut UnixStream) -> std::io::Result<Response> {
    let mut framer = Framer::default();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(body) = framer.next_body().map_err(std::io::Error::other)? {
            return Response::decode(&body).map_err(std::io::Error::other);
        }
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "keyd closed the connection"));
        }
        framer.feed(&buf[..n]);
    }
}

#[derive(Debug)]
struct KeydKey {
    remote: Arc<Remote>,
    schemes: Vec<SignatureScheme>,
    spki: SubjectPublicKeyInfoDer<'static>,
    algorithm: SignatureAlgorithm,
}

impl SigningKey for KeydKey {
    /// Takes a connection to keyd here, before anything is signed: when keyd is down the
    /// handshake fails at this point, which rustls answers with a handshake_failure alert under
    /// TLS 1.3 (a failed signature would close without one).
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = *self.schemes.iter().find(|s| offered.contains(s))?;
        match self.remote.checkout() {
            Ok(conn) => Some(Box::new(KeydSigner {
                remote: self.remote.clone(),
                conn: Mutex::new(Some(conn)),
                scheme,
            })),
            Err(e) => {
                tracing::warn!(key = %self.remote.describe(), error = %e, "keyd unreachable, handshake refused");
                None
            }
        }
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(self.spki.clone())
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }
}

#[derive(Debug)]
struct KeydSigner {
    remote: Arc<Remote>,
    /// `Signer::sign` takes `&self`; the connection is used once.
    conn: Mutex<Option<UnixStream>>,
    scheme: SignatureScheme,
}

impl Signer for KeydSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner()).take();
        let conn = match conn {
            Some(c) => Ok(c),
            None => self.remote.open().map_err(|e| e.to_string()),
        };
        conn.and_then(|c| self.remote.sign(c, self.scheme, message)).map_err(|e| {
            tracing::warn!(key = %self.remote.describe(), error = %e, "keyd signature failed, handshake refused");
            rustls::Error::General(format!("{}: {e}", self.remote.describe()))
        })
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

impl Drop for KeydSigner {
    /// A handshake that ended before signing gives its connection back.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            self.remote.put_back(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keyd_sources() {
        assert_eq!(parse("/etc/k.pem"), None);
        assert_eq!(parse("keyd:/run/keyd.sock#web"), Some(Ok(("/run/keyd.sock".into(), "web".into()))));
        assert!(matches!(parse("keyd:/run/keyd.sock"), Some(Err(_))));
        assert!(matches!(parse("keyd:#web"), Some(Err(_))));
    }

    /// keyd refused and closed before the request was written: the write fails, the refusal is
    /// still what the caller gets.
    #[test]
    fn a_refusal_sent_before_the_request_is_read_after_a_failed_write() {
        let (mut ours, mut keyd) = UnixStream::pair().unwrap();
        let refusal = Response::Refused { reason: Reason::NotAllowed, text: "uid 0 is not allowed".into() };
        keyd.write_all(&frame(&refusal.encode())).unwrap();
        drop(keyd);
        let request = Request::Info { name: "web".into() };
        assert!(ours.write_all(&frame(&request.encode())).is_err(), "the write meets a closed socket");
        match exchange(&mut ours, &request).unwrap() {
            Response::Refused { reason: Reason::NotAllowed, text } => {
                assert_eq!(text, "uid 0 is not allowed")
            }
            other => panic!("expected the refusal, got {other:?}"),
        }
    }
}

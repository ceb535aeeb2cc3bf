//! A terminated connection whose record layer is the kernel's: plaintext in and out of the
//! socket, the record crypto done by the `tls` ULP, the rules after the handshake still
//! [`tlsgate_record::session`]'s.
//!
//! Reads use `recvmsg` with the record type in a control message: data records are delivered
//! as they are; an alert or a handshake record goes to the session, which says what it means
//! (close_notify ends the stream, a fatal alert or a broken rule ends the connection naming the
//! client, a TLS 1.2 renegotiation is refused). A decryption failure (EBADMSG) or an oversized
//! record (EMSGSIZE) reported by the kernel ends the connection the same way. What the session
//! sends (close_notify, a fatal alert, a no_renegotiation warning) goes out as a record of its
//! type with `TLS_SET_RECORD_TYPE`.
//!
//! A client KeyUpdate: the kernel would need the next receive key, which only kernels with
//! TLS 1.3 rekey support take; this driver does not install keys after the handshake, so the
//! connection ends cleanly (our close_notify, then FIN) with an error naming the reason.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tlsgate_record::crypto::Suite;
use tlsgate_record::frame::{ContentType, Header, HEADER_LEN};
use tlsgate_record::session::{alert, Fatal, Reason, Received, Session, OFFLOAD_TX_CHECK_BYTES};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::sys;

/// See the module docs.
pub struct KtlsStream {
    tcp: TcpStream,
    session: Box<Session>,
    /// Plaintext opened in software before the offload (records that came with the handshake),
    /// from `plain_at`. Empty once given out.
    plain: Vec<u8>,
    plain_at: usize,
    /// Plaintext records the session asked to send, for the kernel to seal, from `out_at`.
    out: Vec<u8>,
    out_at: usize,
    /// The relay's next writes are the last before shutdown.
    closing: bool,
    failed: Option<String>,
    /// The suite the kernel seals with (the size of its crypto info).
    suite: Suite,
    /// Plaintext bytes written to the kernel through this stream.
    tx_total: u64,
    /// The byte total at the last read of the kernel's transmit sequence number.
    tx_checked: u64,
}

impl std::fmt::Debug for KtlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KtlsStream").field("session", &self.session).finish_non_exhaustive()
    }
}

impl KtlsStream {
    /// `tcp` has both keys installed; `session` is offloaded; `plain` is what was opened in
    /// software before (delivered first).
    pub(crate) fn new(tcp: TcpStream, mut session: Box<Session>, plain: Vec<u8>, suite: Suite) -> KtlsStream {
        test_tx_key_records(&mut session);
        KtlsStream {
            tcp,
            session,
            plain,
            plain_at: 0,
            out: Vec::new(),
            out_at: 0,
            closing: false,
            failed: None,
            suite,
            tx_total: 0,
            tx_checked: 0,
        }
    }

    /// The per-key record limit under the offload (RFC 8446 §5.5): `total` plaintext bytes
    /// have gone to the kernel (through this stream or spliced); every
    /// [`OFFLOAD_TX_CHECK_BYTES`] the kernel's transmit sequence number is read, and once the
    /// session says the key is used up the connection ends cleanly (close_notify, FIN) with an
    /// error saying why. Reading the number failing ends it too: the limit cannot be watched.
    pub(crate) fn tx_check(&mut self, total: u64) -> io::Result<()> {
        if total.saturating_sub(self.tx_checked) < OFFLOAD_TX_CHECK_BYTES {
            return Ok(());
        }
        self.tx_checked = total;
        let seq = match sys::tx_seq(self.tcp.as_raw_fd(), self.suite) {
            Ok(seq) => seq,
            Err(e) => {
                return Err(self.fail_silent(format!("kernel TLS transmit sequence number unreadable: {e}")))
            }
        };
        if !self.session.offloaded_tx_used_up(seq) {
            return Ok(());
        }
        let mut record = Vec::new();
        if self.session.close(&mut record).is_ok() && record.len() > HEADER_LEN {
            let _ = sys::send_record(self.tcp.as_raw_fd(), ContentType::ALERT.0, &record[HEADER_LEN..]);
        }
        let _ = socket2::SockRef::from(&self.tcp).shutdown(std::net::Shutdown::Write);
        let limit = self.session.tx_key_records();
        Err(self.fail_silent(format!(
            "the transmit key reached its record limit ({seq} records sealed, limit {limit}; RFC 8446 \
             §5.5) and this kernel's TLS offload cannot replace it; sent close_notify and closed the \
             connection"
        )))
    }

    /// Refuses the client before any application data: a fatal alert, then FIN.
    pub async fn refuse(mut self, description: u8) {
        use tokio::io::AsyncWriteExt;
        self.session.refuse(description);
        let mut record = Vec::new();
        if self.session.send_alert(&mut record).is_some() && record.len() > HEADER_LEN {
            let _ = sys::send_record(self.tcp.as_raw_fd(), ContentType::ALERT.0, &record[HEADER_LEN..]);
        }
        let _ = self.tcp.shutdown().await;
    }

    pub fn last_writes(&mut self) {
        self.closing = true;
    }

    pub fn held(&self) -> usize {
        (self.plain.len() - self.plain_at) + (self.out.len() - self.out_at)
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Plaintext opened before the offload and not read yet (the zero-copy relay writes it on
    /// before it splices).
    pub(crate) fn take_plain(&mut self) -> Vec<u8> {
        let mut plain = std::mem::take(&mut self.plain);
        plain.drain(..self.plain_at);
        self.plain_at = 0;
        plain
    }

    /// Sends the control records the session queued (before the zero-copy relay starts).
    pub(crate) async fn flush_control(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_send_control(cx)).await
    }

    /// Sends the queued control records, one `sendmsg` per record with its type.
    fn poll_send_control(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_at + HEADER_LEN <= self.out.len() {
            let h: [u8; HEADER_LEN] =
                self.out[self.out_at..self.out_at + HEADER_LEN].try_into().unwrap_or([0; 5]);
            let header = Header::parse(&h);
            let body = self.out_at + HEADER_LEN..self.out_at + HEADER_LEN + header.len as usize;
            ready!(self.tcp.poll_write_ready(cx))?;
            let (fd, data) = (self.tcp.as_raw_fd(), &self.out[body.clone()]);
            match self.tcp.try_io(Interest::WRITABLE, || sys::send_record(fd, header.content_type.0, data)) {
                Ok(n) if n == data.len() => self.out_at = body.end,
                Ok(n) => {
                    // Part of a record (never seen for a record of a few bytes): the rest goes as
                    // another record of the same type.
                    let rest = header.len as usize - n;
                    let at = body.start + n - HEADER_LEN;
                    let h = Header {
                        content_type: header.content_type,
                        version: header.version,
                        len: rest as u16,
                    };
                    self.out[at..at + HEADER_LEN].copy_from_slice(&h.encode());
                    self.out_at = at;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.out = Vec::new();
        self.out_at = 0;
        Poll::Ready(Ok(()))
    }

    /// Ends the stream after a broken rule: the fatal alert the session chose goes out as far
    /// as the socket takes it now.
    fn fail(&mut self, fatal: Fatal) -> io::Error {
        let mut record = Vec::new();
        let sent = self.session.send_alert(&mut record);
        if sent.is_some() && record.len() > HEADER_LEN {
            let _ = sys::send_record(self.tcp.as_raw_fd(), ContentType::ALERT.0, &record[HEADER_LEN..]);
        }
        let what = match sent {
            Some(d) => format!("{}; sent alert {}", self.session.describe(&fatal), alert::name(d)),
            None => self.session.describe(&fatal),
        };
        self.fail_silent(what)
    }

    fn fail_silent(&mut self, what: String) -> io::Error {
        self.out = Vec::new();
        self.out_at = 0;
        self.plain = Vec::new();
        self.plain_at = 0;
        self.failed = Some(what.clone());
        io::Error::new(io::ErrorKind::InvalidData, what)
    }

    /// The client's KeyUpdate cannot be followed (see the module docs): close_notify and FIN.
    fn end_on_key_update(&mut self) -> io::Error {
        let mut record = Vec::new();
        if self.session.close(&mut record).is_ok() && record.len() > HEADER_LEN {
            let _ = sys::send_record(self.tcp.as_raw_fd(), ContentType::ALERT.0, &record[HEADER_LEN..]);
        }
        let _ = socket2::SockRef::from(&self.tcp).shutdown(std::net::Shutdown::Write);
        let peer = self.session.peer();
        self.fail_silent(format!(
            "{peer} sent a TLS 1.3 KeyUpdate, and this kernel's TLS offload cannot take the new receive \
             key; sent close_notify and closed the connection"
        ))
    }

    /// A kernel error on receive, in the session's terms.
    fn kernel_error(&mut self, e: io::Error) -> io::Error {
        let reason = match e.raw_os_error() {
            // The kernel's tag check failed (RFC 8446 §5.2).
            Some(libc::EBADMSG) => Reason::BadRecordMac,
            Some(libc::EMSGSIZE) => {
                let limit = self.session.ciphertext_limit();
                Reason::RecordOverflow { len: limit + 1, limit }
            }
            _ => return self.fail_silent(format!("{} read failed (kernel TLS): {e}", self.session.peer())),
        };
        let fatal = self.session.fail_with(reason);
        self.fail(fatal)
    }

    /// A receive error the zero-copy relay got from `splice`, handled as [`Self::poll_read`]
    /// would (the alert it calls for is sent).
    pub(crate) fn kernel_failure(&mut self, e: io::Error) -> io::Error {
        self.kernel_error(e)
    }

    /// One `recvmsg` into `buf`: Ok(true) when the caller got data or the stream ended.
    fn recv_once(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<bool> {
        let fd = self.tcp.as_raw_fd();
        let area = buf.initialize_unfilled();
        let got = self.tcp.try_io(Interest::READABLE, || sys::recv_record(fd, area));
        let (n, record_type) = match got {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
            Err(e) => return Err(self.kernel_error(e)),
        };
        if n == 0 && record_type == ContentType::APPLICATION_DATA.0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} closed the connection without close_notify", self.session.peer()),
            ));
        }
        let ct = ContentType(record_type);
        if ct == ContentType::APPLICATION_DATA {
            // The rules see the data records too (say, data in the middle of a handshake
            // message), without their bytes: the kernel may have joined several.
            match self.session.opened(ct, &[], &mut self.out) {
                Ok(Received::Closed) => return Ok(true),
                Ok(_) => {}
                Err(f) => return Err(self.fail(f)),
            }
            buf.advance(n);
            return Ok(true);
        }
        let content = area[..n].to_vec();
        match self.session.opened(ct, &content, &mut self.out) {
            Ok(Received::Closed) => Ok(true),
            Ok(_) if self.session.rx_rekey_pending() => Err(self.end_on_key_update()),
            Ok(_) => Ok(false),
            Err(f) => Err(self.fail(f)),
        }
    }
}

impl AsyncRead for KtlsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(w) = &this.failed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("stream failed: {w}"),
            )));
        }
        if !this.closing {
            if let Poll::Ready(Err(e)) = this.poll_send_control(cx) {
                return Poll::Ready(Err(e));
            }
        }
        if this.plain_at < this.plain.len() {
            let n = buf.remaining().min(this.plain.len() - this.plain_at);
            buf.put_slice(&this.plain[this.plain_at..this.plain_at + n]);
            this.plain_at += n;
            if this.plain_at == this.plain.len() {
                this.plain = Vec::new();
                this.plain_at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        while !this.session.peer_closed() && buf.remaining() > 0 {
            ready!(this.tcp.poll_read_ready(cx))?;
            match this.recv_once(buf) {
                Ok(true) => break,
                Ok(false) => {
                    if !this.closing {
                        if let Poll::Ready(Err(e)) = this.poll_send_control(cx) {
                            return Poll::Ready(Err(e));
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for KtlsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(w) = &this.failed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("stream failed: {w}"),
            )));
        }
        if this.session.close_sent() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "write after close_notify")));
        }
        ready!(this.poll_send_control(cx))?;
        if this.closing {
            // MSG_MORE: the kernel keeps the record open until close_notify pushes it, so the
            // reply and close_notify leave together.
            loop {
                ready!(this.tcp.poll_write_ready(cx))?;
                let tcp = &this.tcp;
                let sent = tcp.try_io(Interest::WRITABLE, || {
                    socket2::SockRef::from(tcp).send_with_flags(data, libc::MSG_MORE | libc::MSG_NOSIGNAL)
                });
                match sent {
                    Ok(n) => {
                        this.tx_total += n as u64;
                        this.tx_check(this.tx_total)?;
                        return Poll::Ready(Ok(n));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }
        let n = ready!(Pin::new(&mut this.tcp).poll_write(cx, data))?;
        this.tx_total += n as u64;
        this.tx_check(this.tx_total)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_control(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.failed.is_none() {
            this.session.close(&mut this.out).map_err(|f| io::Error::other(format!("close_notify: {f}")))?;
            ready!(this.poll_send_control(cx))?;
        }
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

/// Tests of the record limit in a VM, which cannot seal 2^24 records: a debug build takes a
/// lower limit from `TLSGATE_TEST_KTLS_TX_RECORDS`. Not in release builds.
#[cfg(debug_assertions)]
fn test_tx_key_records(session: &mut Session) {
    if let Some(n) = std::env::var("TLSGATE_TEST_KTLS_TX_RECORDS").ok().and_then(|v| v.parse().ok()) {
        session.set_tx_key_records(n);
    }
}

#[cfg(not(debug_assertions))]
fn test_tx_key_records(_: &mut Session) {}

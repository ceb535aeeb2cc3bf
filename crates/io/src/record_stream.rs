//! A terminated client connection after the handshake: TLS records read and written by tlsgate's
//! own record layer (`tlsgate-record`) over the TCP socket, as an `AsyncRead + AsyncWrite` of
//! plaintext.
//!
//! Memory: an idle stream holds no buffer, only the socket, the two record keys and rustls's key
//! schedule. Reads go straight into the caller's buffer when it can hold a whole record (the
//! relay's per-thread scratch), else into a per-thread scratch of this module; records are opened
//! in place and their plaintexts moved together at the front. Only the bytes of a record that
//! has not fully arrived are copied into a buffer of the connection's own, and only plaintext the
//! caller had no room for; both are freed once used. Writes are sealed into a per-thread scratch
//! and written at once; only what the socket did not take is kept, until it does.
//!
//! Protocol: every rule after the handshake is [`tlsgate_record::session`]'s (KeyUpdates
//! followed and answered, alerts, record limits, renegotiation refused, the transmit key
//! replaced after 2^24 records); this module is its I/O shell. What the session asks to send
//! (a KeyUpdate answer, a no_renegotiation warning) goes out before any further data; close_notify
//! from the client is end of stream; a rule broken ends the stream with the fatal alert the session
//! chose, sent as far as the socket takes it, and an error naming the client. Shutdown sends
//! close_notify, then FIN, in one segment; told that the next writes are the last
//! ([`RecordStream::last_writes`]), it holds their records back and sends them in that segment
//! too (a reply, close_notify and FIN: one packet to the client, not three). Records the
//! handshake sealed last (a TLS 1.3 server's session ticket) can be handed over to leave with
//! the first write ([`RecordStream::send_with_first_write`]).
//!
//! Downgrade (the connect gate): [`RecordStream::send_close_notify`] ends our half without a
//! FIN; records are opened only up to the client's close_notify, and whatever the same read
//! brought behind it is kept unopened; [`RecordStream::into_raw_parts`] then returns the socket
//! with those bytes.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use socket2::SockRef;
use tlsgate_record::crypto::RecordLayer;
use tlsgate_record::frame::{Header, HEADER_LEN, MAX_CIPHERTEXT_TLS12, MAX_PLAINTEXT};
use tlsgate_record::session::{alert, Fatal, Received, Session};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The largest record on the wire (TLS 1.2's ciphertext limit is the larger).
const MAX_RECORD: usize = HEADER_LEN + MAX_CIPHERTEXT_TLS12;
/// The per-thread read area used when the caller's buffer cannot hold a whole record.
const READ_AREA: usize = 64 * 1024;
/// The most read from the socket at once into a caller's buffer: eight full records (the
/// tunnel's reads, and the relay's first ones).
const READ_MAX: usize = 8 * (MAX_PLAINTEXT + 22);
/// Plaintext sealed per write call: up to 32 full records, one write to the socket (the relay
/// offers up to 512 KiB at once, 128 KiB unless the socket has kept up; the tunnel driver gathers
/// eight records).
const WRITE_BATCH: usize = 32 * MAX_PLAINTEXT;

thread_local! {
    static READ_SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; READ_AREA].into_boxed_slice());
    static WRITE_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A [`RecordStream`] after a downgrade: the plain TCP connection, and what was already read
/// of it past the client's close_notify (to be used before any further read).
#[derive(Debug)]
pub struct RawParts {
    pub tcp: TcpStream,
    pub read_ahead: Vec<u8>,
}

/// See the module docs.
pub struct RecordStream {
    tcp: TcpStream,
    /// Boxed: keys and key schedule stay put while the stream moves between owners.
    session: Box<Session>,
    /// Received bytes of a record not complete yet, header included. Empty while idle.
    partial: Vec<u8>,
    /// Opened plaintext the caller had no room for, from `plain_at`. Empty while idle.
    plain: Vec<u8>,
    plain_at: usize,
    /// Sealed bytes the socket has not taken, from `out_at`. Empty while idle.
    out: Vec<u8>,
    out_at: usize,
    /// The relay's next writes are the last before shutdown: sealed into `out`, sent with it.
    closing: bool,
    /// The first `held` bytes of `out` (the handshake's session ticket) wait for the first
    /// write, to leave in its segment; anything else queued behind them sends them at once.
    held: u32,
    /// A bad record, an alert or the socket ended the stream; what to say to further calls.
    failed: Option<String>,
    /// Bytes read past the client's close_notify, never opened: after a downgrade
    /// ([`RecordStream::into_raw_parts`]) they are the raw stream's first. Bounded by one read.
    after_close: Vec<u8>,
}

impl std::fmt::Debug for RecordStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordStream")
            .field("session", &self.session)
            .field("partial", &self.partial.len())
            .field("plain", &(self.plain.len() - self.plain_at))
            .field("out", &(self.out.len() - self.out_at))
            .finish()
    }
}

impl RecordStream {
    /// Takes over `tcp` after the handshake; `received` holds client bytes read past the last
    /// handshake record (the start of its first application records).
    pub fn new(tcp: TcpStream, layer: RecordLayer, received: &[u8]) -> io::Result<RecordStream> {
        let mut s = RecordStream {
            tcp,
            session: Box::new(Session::new(layer)),
            partial: Vec::new(),
            plain: Vec::new(),
            plain_at: 0,
            out: Vec::new(),
            out_at: 0,
            closing: false,
            held: 0,
            failed: None,
            after_close: Vec::new(),
        };
        if !received.is_empty() {
            // Opened now, so that later reads start from a clean state.
            let mut area = received.to_vec();
            let n = s.open_records(&mut area)?;
            if n > 0 {
                area.truncate(n);
                s.plain = area;
            }
        }
        Ok(s)
    }

    /// Takes over `tcp` with a session that already opened the client's first records:
    /// `plain` is their plaintext, `out` what the session sealed in answer (sent first).
    pub fn from_session(tcp: TcpStream, session: Box<Session>, plain: Vec<u8>, out: Vec<u8>) -> RecordStream {
        RecordStream {
            tcp,
            session,
            partial: Vec::new(),
            plain,
            plain_at: 0,
            out,
            out_at: 0,
            closing: false,
            held: 0,
            failed: None,
            after_close: Vec::new(),
        }
    }

    /// Sends `records`, sealed by the handshake before this stream's first record, in front of
    /// the first write instead of on their own (a TLS 1.3 server's session ticket: no client
    /// waits for it). Queued replies already waiting go behind them, and then all at once.
    pub fn send_with_first_write(&mut self, mut records: Vec<u8>) {
        let queued = &self.out[self.out_at..];
        self.held = if queued.is_empty() { u32::try_from(records.len()).unwrap_or(0) } else { 0 };
        records.extend_from_slice(queued);
        // The handshake's whole flight passed through this buffer: an idle connection keeps
        // only the ticket's bytes until it writes.
        records.shrink_to_fit();
        self.out = records;
        self.out_at = 0;
    }

    /// Replaces the transmit key after `records` records instead of 2^24: for tests, which
    /// cannot send 2^24 records.
    pub fn with_tx_key_records(mut self, records: u64) -> RecordStream {
        self.session.set_tx_key_records(records);
        self
    }

    /// Refuses the client before any application data: a fatal alert, then the connection
    /// closes (for a choice that can only be made once the handshake is done).
    pub async fn refuse(mut self, description: u8) {
        use tokio::io::AsyncWriteExt;
        // Behind whatever is queued (a held session ticket), whose sequence numbers come first.
        let mut record = std::mem::take(&mut self.out);
        record.drain(..self.out_at);
        self.session.refuse(description);
        if self.session.send_alert(&mut record).is_some() {
            let _ = self.tcp.write_all(&record).await;
        }
        let _ = self.tcp.shutdown().await;
    }

    /// The next writes are the last before shutdown: their records wait for close_notify and
    /// leave with it and the FIN. The relay says so only for bytes it already holds (at most
    /// its read buffer), so what waits here is bounded.
    pub fn last_writes(&mut self) {
        self.closing = true;
    }

    /// Seals close_notify and sends it with whatever is queued, without shutting the socket
    /// down: the first half of a downgrade ([`RecordStream::into_raw_parts`]).
    pub async fn send_close_notify(&mut self) -> io::Result<()> {
        self.seal_close_notify()?;
        self.send_queued().await
    }

    /// Seals close_notify behind what is queued and sends nothing yet; returns the bytes
    /// queued now (what the socket is still to be given). The kernel splice reads where the
    /// gate's bytes end before they leave.
    pub fn seal_close_notify(&mut self) -> io::Result<usize> {
        if let Some(e) = self.failed_error() {
            return Err(e);
        }
        self.session
            .close(&mut self.out)
            .map_err(|f| io::Error::other(format!("sealing close_notify: {f}")))?;
        Ok(self.out.len() - self.out_at)
    }

    /// Sends every queued record.
    pub async fn send_queued(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_drain(cx)).await
    }

    /// The socket, for reading its TCP state.
    pub fn socket(&self) -> &TcpStream {
        &self.tcp
    }

    /// The socket, once everything queued is sent: the kernel splice carries the stream from
    /// here, whatever the peer sends after (its close_notify included) never reaches this
    /// record layer.
    pub fn into_tcp(self) -> Result<TcpStream, Box<RecordStream>> {
        if self.out_at < self.out.len() {
            return Err(Box::new(self));
        }
        Ok(self.tcp)
    }

    /// Ends the record layer once both sides sent close_notify: the socket and the bytes read
    /// past the client's close_notify, which are the raw stream's first. Nothing is lost across
    /// the switch and nothing after close_notify was ever opened. Refused (the stream is
    /// returned) while plaintext is unread, records are unsent, or either close_notify is
    /// missing.
    pub fn into_raw_parts(self) -> Result<RawParts, Box<RecordStream>> {
        let ready = self.failed.is_none()
            && self.session.downgraded()
            && self.plain_at == self.plain.len()
            && self.out_at == self.out.len()
            && self.partial.is_empty();
        if !ready {
            return Err(Box::new(self));
        }
        Ok(RawParts { tcp: self.tcp, read_ahead: self.after_close })
    }

    /// Bytes held for this connection right now (partial record, unread plaintext, unsent
    /// records): zero while idle.
    pub fn held(&self) -> usize {
        self.partial.len()
            + (self.plain.len() - self.plain_at)
            + (self.out.len() - self.out_at)
            + self.after_close.len()
    }

    /// Takes out the plaintext opened and not read yet: the client's first records, which mostly
    /// arrive with its Finished (its request), for a caller that sends them on itself.
    pub fn take_plain_ahead(&mut self) -> Vec<u8> {
        let mut plain = std::mem::take(&mut self.plain);
        plain.drain(..self.plain_at);
        self.plain_at = 0;
        plain
    }

    /// Whether sealed records wait for the socket (or for the first write): while they do, a
    /// read may write them, and needs the socket's write readiness.
    pub fn queued(&self) -> bool {
        self.out_at < self.out.len()
    }

    /// Reads from the socket into `area` after the partial record, which is then copied in
    /// front; returns the number of bytes in `area`. Ready(Ok(0)) is a clean end of stream.
    fn fill(&mut self, cx: &mut Context<'_>, area: &mut [u8]) -> Poll<io::Result<usize>> {
        let p = self.partial.len();
        let mut rb = ReadBuf::new(&mut area[p..]);
        ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        if n == 0 {
            if p > 0 {
                return Poll::Ready(Err(self.fail_silent(format!(
                    "client closed the connection in the middle of a record ({p} bytes of it received)"
                ))));
            }
            // No close_notify: the relay treats this as the end of the client's stream.
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "client closed the connection without close_notify",
            )));
        }
        area[..p].copy_from_slice(&self.partial);
        self.partial = Vec::new();
        Poll::Ready(Ok(p + n))
    }

    /// Opens every complete record in `area` in place and moves their plaintexts together at
    /// its front; keeps an incomplete last record in `partial`. Returns the plaintext length.
    /// What the session asks to send is queued in `out`.
    fn open_records(&mut self, area: &mut [u8]) -> io::Result<usize> {
        let len = area.len();
        let (mut rd, mut wr) = (0, 0);
        while !self.session.peer_closed() && len - rd >= HEADER_LEN {
            let mut h = [0u8; HEADER_LEN];
            h.copy_from_slice(&area[rd..rd + HEADER_LEN]);
            let header = Header::parse(&h);
            // Checked before the body is awaited: an oversized or unknown record fails now.
            self.session.header(header).map_err(|f| self.fail(f))?;
            let end = rd + HEADER_LEN + header.len as usize;
            if end > len {
                break;
            }
            let body = &mut area[rd + HEADER_LEN..end];
            match self.session.open(header, body, &mut self.out) {
                Ok(Received::Data(r)) => {
                    let start = rd + HEADER_LEN + r.start;
                    area.copy_within(start..start + r.len(), wr);
                    wr += r.len();
                }
                Ok(Received::Nothing | Received::Closed) => {}
                Err(f) => return Err(self.fail(f)),
            }
            rd = end;
        }
        if rd < len {
            if self.session.peer_closed() {
                // Not records of this session any more: kept raw for a downgrade.
                self.after_close.extend_from_slice(&area[rd..]);
            } else {
                self.partial = area[rd..].to_vec();
            }
        }
        Ok(wr)
    }

    /// Fails the stream with the fatal alert the session chose, sent as far as the socket
    /// takes it now (the connection is closed right after).
    fn fail(&mut self, fatal: Fatal) -> io::Error {
        let mut record = Vec::new();
        let sent = self.session.send_alert(&mut record);
        if sent.is_some() {
            let pending = self.out.len() - self.out_at;
            // Behind any records still queued, which the client may as well get.
            if pending == 0 {
                let _ = self.tcp.try_write(&record);
            } else {
                self.out.extend_from_slice(&record);
                let _ = self.tcp.try_write(&self.out[self.out_at..]);
            }
        }
        match sent {
            Some(d) => self.fail_silent(format!("{fatal}; sent alert {}", alert::name(d))),
            None => self.fail_silent(fatal.to_string()),
        }
    }

    fn fail_silent(&mut self, what: String) -> io::Error {
        self.partial = Vec::new();
        self.out = Vec::new();
        self.out_at = 0;
        self.held = 0;
        self.failed = Some(what.clone());
        io::Error::new(io::ErrorKind::InvalidData, what)
    }

    fn failed_error(&self) -> Option<io::Error> {
        self.failed.as_ref().map(|w| io::Error::new(io::ErrorKind::BrokenPipe, format!("stream failed: {w}")))
    }

    /// Seals `data` as records appended to `out` (the session replaces a used-up key).
    fn seal_into(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        self.session.seal(data, out).map_err(|f| self.fail_silent(f.to_string()))
    }

    /// Writes the queued records until the socket takes no more.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_at < self.out.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.out[self.out_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_at += n;
        }
        if self.out_at > 0 || self.out.capacity() > 0 {
            self.out = Vec::new();
            self.out_at = 0;
        }
        self.held = 0;
        Poll::Ready(Ok(()))
    }

    /// As [`Self::poll_drain`] for the stream's last bytes, which end in close_notify: sent
    /// with MSG_MORE, so the kernel keeps their last segment back until the shutdown that
    /// follows adds the FIN to it, instead of sending the FIN in a packet of its own.
    fn poll_drain_last(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_at < self.out.len() {
            ready!(self.tcp.poll_write_ready(cx))?;
            let bytes = &self.out[self.out_at..];
            let tcp = &self.tcp;
            let sent = tcp.try_io(Interest::WRITABLE, || {
                SockRef::from(tcp).send_with_flags(bytes, libc::MSG_MORE | libc::MSG_NOSIGNAL)
            });
            match sent {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.out_at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.out = Vec::new();
        self.out_at = 0;
        self.held = 0;
        Poll::Ready(Ok(()))
    }

    /// Writes what the session queued while opening records, as far as the socket takes it;
    /// its write readiness wakes this task for the rest. Not while the last writes are held
    /// back to leave with close_notify.
    fn send_replies(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let waiting = self.out.len() - self.out_at;
        if waiting > self.held as usize && !self.closing {
            self.held = 0;
            if let Poll::Ready(Err(e)) = self.poll_drain(cx) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Gives the caller what was opened before and did not fit.
    fn take_plain(&mut self, buf: &mut ReadBuf<'_>) {
        let n = buf.remaining().min(self.plain.len() - self.plain_at);
        buf.put_slice(&self.plain[self.plain_at..self.plain_at + n]);
        self.plain_at += n;
        if self.plain_at == self.plain.len() {
            self.plain = Vec::new();
            self.plain_at = 0;
        }
    }

    /// One socket read and the records it completed, in the caller's buffer when a whole
    /// record fits there. Ready(Ok(0)) means nothing for the caller yet (or end of stream).
    fn read_once(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<usize>> {
        if buf.remaining() >= MAX_RECORD {
            let area = buf.initialize_unfilled_to(buf.remaining().min(READ_MAX));
            let n = ready!(self.fill(cx, area))?;
            let produced = self.open_records(&mut area[..n])?;
            buf.advance(produced);
            return Poll::Ready(Ok(produced));
        }
        READ_SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let n = ready!(self.fill(cx, &mut scratch[..]))?;
            let produced = self.open_records(&mut scratch[..n])?;
            let direct = produced.min(buf.remaining());
            buf.put_slice(&scratch[..direct]);
            if direct < produced {
                self.plain = scratch[direct..produced].to_vec();
                self.plain_at = 0;
            }
            Poll::Ready(Ok(produced))
        })
    }
}

impl AsyncRead for RecordStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.failed_error() {
            return Poll::Ready(Err(e));
        }
        // Records the session sealed while opening (a KeyUpdate answer) go out now, whether or
        // not the caller writes soon: also those of the records that arrived with the handshake
        // and were opened in `new`, which the client may be waiting for before it sends more.
        this.send_replies(cx)?;
        if this.plain_at < this.plain.len() {
            this.take_plain(buf);
            return Poll::Ready(Ok(()));
        }
        while !this.session.peer_closed() && buf.remaining() > 0 {
            let produced = ready!(this.read_once(cx, buf))?;
            this.send_replies(cx)?;
            if produced > 0 {
                break;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for RecordStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.failed_error() {
            return Poll::Ready(Err(e));
        }
        if this.session.close_sent() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "write after close_notify")));
        }
        if this.closing {
            // Queued behind what the socket has not taken; shutdown sends it all.
            let take = data.len().min(WRITE_BATCH);
            let mut out = std::mem::take(&mut this.out);
            let sealed = this.seal_into(&data[..take], &mut out);
            this.out = out;
            sealed?;
            return Poll::Ready(Ok(take));
        }
        // A held session ticket is all `out` holds: it goes in front of these records, in the
        // same write.
        if this.held == 0 || data.is_empty() {
            ready!(this.poll_drain(cx))?;
            if data.is_empty() {
                return Poll::Ready(Ok(0));
            }
        }
        // Sealed only once the socket can take it, so at most one batch waits here.
        ready!(this.tcp.poll_write_ready(cx))?;
        let take = data.len().min(WRITE_BATCH);
        WRITE_SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let len = if this.held > 0 {
                // The first write after a held session ticket: the ticket, then these records.
                scratch.clear();
                scratch.extend_from_slice(&this.out[this.out_at..]);
                this.out = Vec::new();
                this.out_at = 0;
                this.held = 0;
                this.seal_into(&data[..take], &mut scratch)?;
                scratch.len()
            } else {
                // Sealed over what the scratch held from the last batch: no pass zeroing it first.
                this.session
                    .seal_batch_over(&data[..take], &mut scratch)
                    .map_err(|f| this.fail_silent(f.to_string()))?
            };
            let sealed = &scratch[..len];
            let mut at = 0;
            while at < sealed.len() {
                match this.tcp.try_write(&sealed[at..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => at += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if at < sealed.len() {
                this.out = sealed[at..].to_vec();
                this.out_at = 0;
            }
            Ok(())
        })?;
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.failed.is_none() {
            // Behind whatever is still queued, so it all leaves together (sealed once).
            this.session
                .close(&mut this.out)
                .map_err(|f| io::Error::other(format!("sealing close_notify: {f}")))?;
            ready!(this.poll_drain_last(cx))?;
        }
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

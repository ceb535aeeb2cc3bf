//! Kernel TLS offload: after tlsgate's handshake, the kernel's `tls` upper-layer protocol takes
//! the connection's record layer (TLS_TX and TLS_RX set with the traffic keys and sequence
//! numbers rustls extracted), and the relay moves plaintext through the socket, with `splice`
//! when both sides are sockets ([`splice`]).
//!
//! `ktls = "auto"`: offload when the kernel has the ULP and takes the suite; otherwise, or on any
//! setsockopt error before the receive key is set, the connection stays in tlsgate's own record
//! layer. Each decision is one log line and a count in `tlsgate_ktls_connections_total{result}`
//! (`offloaded`, `no_ulp`, `cipher`, `error`). `on`: a kernel without the ULP is a start-up
//! error, and a connection that cannot be offloaded is closed. See docs/ktls.md.

pub mod client;
pub mod splice;
mod stream;
mod sys;

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use rustls::ExtractedSecrets;
use tlsgate_config::KtlsMode;
use tlsgate_core::side::Side;
use tlsgate_record::crypto::{KeySchedule, RecordLayer, Suite, Version};
use tlsgate_record::frame::{Header, HEADER_LEN};
use tlsgate_record::offload::kernel_keys;
use tlsgate_record::session::{alert, Received, Session};
use tlsgate_telemetry::metrics::{metrics, KtlsLabels};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

pub use stream::KtlsStream;

use crate::record_stream::RecordStream;
use crate::relay::LastWrites;
use crate::ProxyError;

/// Whether this kernel has the `tls` ULP (loading the module if the kernel may): checked once.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(probe)
}

/// The kernel lists the ULPs it has loaded; a module not loaded yet is loaded by the first
/// socket that asks for it, so a loopback connection asks.
fn probe() -> bool {
    let listed = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp").unwrap_or_default();
    if listed.split_whitespace().any(|u| u == "tls") {
        return true;
    }
    let try_loopback = || -> io::Result<()> {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let c = std::net::TcpStream::connect(l.local_addr()?)?;
        let _accepted = l.accept()?;
        sys::set_ulp(std::os::fd::AsRawFd::as_raw_fd(&c))
    };
    try_loopback().is_ok()
}

/// The start-up check of `ktls = "on"`.
pub fn require() -> Result<(), String> {
    if available() {
        Ok(())
    } else {
        Err("ktls = \"on\" (--ktls on), but this kernel has no kernel TLS: the tls ULP is not available \
             (a kernel built without CONFIG_TLS, or the tls module cannot be loaded)"
            .into())
    }
}

fn count(result: &str) {
    metrics().ktls_connections.get_or_create(&KtlsLabels { result: result.into() }).inc();
}

/// A TLS connection after the handshake (a terminated client's, or originate's to its upstream):
/// records in tlsgate or in the kernel.
#[derive(Debug)]
pub enum ClientStream {
    Records(RecordStream),
    Kernel(KtlsStream),
}

impl ClientStream {
    /// `kernel` or `tlsgate`: who runs the record layer, for the status page.
    pub fn record_layer(&self) -> &'static str {
        match self {
            ClientStream::Records(_) => "tlsgate",
            ClientStream::Kernel(_) => "kernel",
        }
    }

    pub fn held(&self) -> usize {
        match self {
            ClientStream::Records(s) => s.held(),
            ClientStream::Kernel(s) => s.held(),
        }
    }

    /// The client's plaintext already opened and not read yet, taken out of the stream
    /// ([`RecordStream::take_plain_ahead`]); none from the kernel's record layer, whose reads
    /// hand it over as usual.
    pub fn take_plain_ahead(&mut self) -> Vec<u8> {
        match self {
            ClientStream::Records(s) => s.take_plain_ahead(),
            ClientStream::Kernel(_) => Vec::new(),
        }
    }

    /// Refuses the client before any application data (see [`RecordStream::refuse`]).
    pub async fn refuse(self, description: u8) {
        match self {
            ClientStream::Records(s) => s.refuse(description).await,
            ClientStream::Kernel(s) => s.refuse(description).await,
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Records(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Kernel(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Records(s) => Pin::new(s).poll_write(cx, data),
            ClientStream::Kernel(s) => Pin::new(s).poll_write(cx, data),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Records(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Kernel(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Records(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Kernel(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl LastWrites for ClientStream {
    fn last_writes(&mut self) {
        match self {
            ClientStream::Records(s) => s.last_writes(),
            ClientStream::Kernel(s) => s.last_writes(),
        }
    }
    fn reads_may_write(&self) -> bool {
        match self {
            ClientStream::Records(s) => s.reads_may_write(),
            ClientStream::Kernel(s) => s.reads_may_write(),
        }
    }
}

/// A connection the kernel does not take (`result`: the metric's label): one count and one log
/// line; `Err` (the connection is closed) under `ktls = "on"`.
fn not_offloaded(mode: KtlsMode, result: &str, why: String) -> Result<(), ProxyError> {
    count(result);
    if mode == KtlsMode::On {
        tracing::warn!(ktls = result, reason = %why, "kernel TLS offload failed; ktls = \"on\": connection closed");
        return Err(ProxyError::internal(format!("kernel TLS offload failed ({result}): {why}")));
    }
    tracing::info!(ktls = result, reason = %why, "kernel TLS offload not used: record layer in tlsgate");
    Ok(())
}

/// The record layer of a connection whose handshake just finished: the kernel's when `mode`
/// and the kernel allow, else tlsgate's. `received`: the peer's bytes read past the handshake.
/// `kernel` is a server's key schedule (terminate: the peer is the client) or a client's
/// (originate: the peer is the upstream server); errors name that side.
pub async fn establish(
    mode: KtlsMode,
    mut tcp: TcpStream,
    secrets: ExtractedSecrets,
    kernel: impl Into<KeySchedule>,
    mut received: Vec<u8>,
) -> Result<ClientStream, ProxyError> {
    let kernel: KeySchedule = kernel.into();
    let side = if kernel.is_client() { Side::Backend } else { Side::Client };
    let peer = move |context: String| ProxyError { side, context };
    let software = |tcp, secrets, kernel: KeySchedule, received: &[u8]| -> Result<ClientStream, ProxyError> {
        let layer = RecordLayer::new(secrets, kernel)
            .map_err(|e| ProxyError::internal(format!("record layer: {e}")))?;
        Ok(ClientStream::Records(RecordStream::new(tcp, layer, received).map_err(|e| peer(e.to_string()))?))
    };
    let fallback = |result: &str, why: String| not_offloaded(mode, result, why);
    if mode == KtlsMode::Off {
        return software(tcp, secrets, kernel, &received);
    }
    if !available() {
        fallback("no_ulp", "the kernel has no tls ULP".into())?;
        return software(tcp, secrets, kernel, &received);
    }
    let version = match Version::from_rustls(kernel.protocol_version()) {
        Ok(v) => v,
        Err(e) => {
            fallback("cipher", e.to_string())?;
            return software(tcp, secrets, kernel, &received);
        }
    };
    let keys = match kernel_keys(version, &secrets) {
        Ok(k) => k,
        Err(e) => {
            fallback("cipher", e.to_string())?;
            return software(tcp, secrets, kernel, &received);
        }
    };
    let layer =
        RecordLayer::new(secrets, kernel).map_err(|e| ProxyError::internal(format!("record layer: {e}")))?;
    let mut session = Box::new(Session::new(layer));

    // Records that came with the handshake were read already: they are opened here (a TLS 1.3
    // server's session tickets among them), the last
    // one completed from the socket first, so the kernel starts on a record boundary.
    while let Some(missing) = partial_tail(&received) {
        let at = received.len();
        received.resize(at + missing, 0);
        tcp.read_exact(&mut received[at..])
            .await
            .map_err(|e| peer(format!("read of the first record after the handshake: {e}")))?;
    }
    let (mut rx, mut tx) = (keys.rx, keys.tx);
    let (plain, out, records) = match open_all(&mut session, &mut received) {
        Ok(r) => r,
        Err(what) => {
            let mut alert = Vec::new();
            if session.send_alert(&mut alert).is_some() {
                let _ = tcp.write_all(&alert).await;
            }
            return Err(peer(what));
        }
    };
    let (rx_seq, tx_seq) = session.seqs();
    // A control record among them (a KeyUpdate moved the keys, a reply was sealed, the peer
    // closed; a session ticket is no such record, it moves nothing): the session goes on in
    // software where it started.
    if rx_seq != rx.seq + records
        || tx_seq != tx.seq
        || !out.is_empty()
        || session.peer_closed()
        || session.held() > 0
    {
        fallback("error", "a control record arrived with the handshake's last flight".into())?;
        return Ok(ClientStream::Records(RecordStream::from_session(tcp, session, plain, out)));
    }
    rx.seq = rx_seq;
    tx.seq = tx_seq;

    let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
    if let Err(e) = sys::set_ulp(fd) {
        fallback("error", format!("setsockopt TCP_ULP tls: {e}"))?;
        return Ok(ClientStream::Records(RecordStream::from_session(tcp, session, plain, out)));
    }
    // TX first: until TLS_RX is set too, the socket can still go on in software.
    if let Err(e) = sys::set_key(fd, sys::Direction::Tx, version, keys.suite, &tx) {
        let result = match e.raw_os_error() {
            Some(libc::EINVAL | libc::ENOENT | libc::ENOPKG | libc::EOPNOTSUPP) => "cipher",
            _ => "error",
        };
        fallback(result, format!("setsockopt TLS_TX ({}): {e}", suite_name(version, keys.suite)))?;
        return Ok(ClientStream::Records(RecordStream::from_session(tcp, session, plain, out)));
    }
    if let Err(e) = sys::set_key(fd, sys::Direction::Rx, version, keys.suite, &rx) {
        // The kernel seals already: no way back to software for this connection.
        count("error");
        tracing::warn!(ktls = "error", reason = %e, "setsockopt TLS_RX failed after TLS_TX; connection closed");
        return Err(ProxyError::internal(format!(
            "kernel TLS receive key ({}): {e}",
            suite_name(version, keys.suite)
        )));
    }
    count("offloaded");
    tracing::info!(
        ktls = "offloaded",
        suite = suite_name(version, keys.suite),
        "record layer offloaded to the kernel"
    );
    session.offload();
    Ok(ClientStream::Kernel(KtlsStream::new(tcp, session, plain, keys.suite)))
}

fn suite_name(v: Version, s: Suite) -> String {
    format!("{v:?} {s:?}")
}

/// How many bytes the last record in `buf` still lacks, when it is incomplete.
fn partial_tail(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let rest = buf.len() - at;
        if rest == 0 {
            return None;
        }
        if rest < HEADER_LEN {
            // Only the start of a header: the rest of the header first, then the body.
            return Some(HEADER_LEN - rest);
        }
        let h: [u8; HEADER_LEN] = buf[at..at + HEADER_LEN].try_into().ok()?;
        let end = at + HEADER_LEN + Header::parse(&h).len as usize;
        if end > buf.len() {
            return Some(end - buf.len());
        }
        at = end;
    }
}

/// Opens every record in `buf` (a whole number of them, unless a header was cut: see
/// [`partial_tail`], the caller loops) in software: plaintext, what the session sealed, count.
fn open_all(session: &mut Session, buf: &mut [u8]) -> Result<(Vec<u8>, Vec<u8>, u64), String> {
    let (mut plain, mut out, mut records) = (Vec::new(), Vec::new(), 0);
    let mut at = 0;
    while buf.len() - at >= HEADER_LEN {
        let h: [u8; HEADER_LEN] = buf[at..at + HEADER_LEN].try_into().unwrap_or([0; HEADER_LEN]);
        let header = Header::parse(&h);
        session.header(header).map_err(|f| describe(session, f))?;
        let end = at + HEADER_LEN + header.len as usize;
        if end > buf.len() {
            return Err(format!("{} record cut short before the offload", session.peer()));
        }
        match session.open(header, &mut buf[at + HEADER_LEN..end], &mut out) {
            Ok(Received::Data(r)) => {
                plain.extend_from_slice(&buf[at + HEADER_LEN + r.start..at + HEADER_LEN + r.end])
            }
            Ok(_) => {}
            Err(f) => return Err(describe(session, f)),
        }
        records += 1;
        at = end;
    }
    Ok((plain, out, records))
}

fn describe(session: &Session, f: tlsgate_record::session::Fatal) -> String {
    match session.failed().and_then(|f| f.alert) {
        Some(d) => format!("{}; alert {}", session.describe(&f), alert::name(d)),
        None => session.describe(&f),
    }
}

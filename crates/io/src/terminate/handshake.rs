//! The TLS handshake of one client connection, over its socket.
//!
//! The ClientHello is read first, so that a name with no certificate or no route is refused with
//! an `unrecognized_name` alert before any key exchange is spent on it. Routes that differ by
//! ALPN are told apart once the handshake has negotiated the protocol. rustls then runs the
//! handshake (`tlsgate_tls::server_handshake`, its unbuffered API) on whole records read here;
//! at completion its keys go to tlsgate's record layer and the connection continues as a
//! [`ClientStream`] (tlsgate's record layer, or the kernel's: [`crate::ktls`]): no rustls buffer or connection state outlives the handshake.

use std::sync::Arc;

use rustls::AlertDescription;
use tlsgate_config::KtlsMode;
use tlsgate_core::identity::PeerIdentity;
use tlsgate_core::proxy_protocol::tls::TlsInfo;
use tlsgate_core::side::Side;
use tlsgate_record::frame::{Header, HEADER_LEN, MAX_CIPHERTEXT_TLS12};
use tlsgate_tls::client_handshake::ClientHandshake;
use tlsgate_tls::describe::{self, Peer};
use tlsgate_tls::server::ListenerTls;
use tlsgate_tls::server_handshake::{HelloReader, Progress, ServerHandshake, SessionFacts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::plain_http;
use super::routes::{Route, Routes};
use crate::ktls::{self, ClientStream};
use crate::ProxyError;

/// Why a handshake did not finish.
#[derive(Debug)]
pub enum HandshakeFailure {
    /// The SNI has no certificate or no route, or no route takes the negotiated ALPN: refused by
    /// the configuration.
    Refused(ProxyError),
    /// Anything else: garbage, a TLS error, a connection closed early.
    Failed(ProxyError),
    /// An ACME server's TLS-ALPN-01 validation handshake, answered; the connection ends there.
    /// What it validated, for the log.
    AcmeValidated(ProxyError),
}

impl HandshakeFailure {
    pub fn error(&self) -> &ProxyError {
        match self {
            HandshakeFailure::Refused(e)
            | HandshakeFailure::Failed(e)
            | HandshakeFailure::AcmeValidated(e) => e,
        }
    }
}

/// A finished handshake and the route its SNI and negotiated ALPN chose.
#[derive(Debug)]
pub struct Established {
    /// Boxed: the connection task's future moves the stream between its states, and each move
    /// would otherwise be a copy of it laid out in the task for the connection's whole life.
    pub stream: Box<ClientStream>,
    pub sni: Option<String>,
    pub route: Arc<Route>,
    /// Version, suite, ALPN and the client certificate's identity (mutual TLS).
    pub facts: SessionFacts,
}

impl Established {
    /// The client certificate's identity, when the client presented one.
    pub fn peer(&self) -> Option<&PeerIdentity> {
        self.facts.peer.as_ref()
    }

    /// What a PROXY v2 header tells the backend about this session.
    pub fn tls_info(&self) -> TlsInfo {
        let version = match self.facts.version {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
            other => format!("{other:?}"),
        };
        // IANA names: rustls spells the TLS 1.3 ones `TLS13_…`.
        let cipher = format!("{:?}", self.facts.suite.suite()).replacen("TLS13_", "TLS_", 1);
        TlsInfo {
            sni: self.sni.clone(),
            alpn: self.facts.alpn.clone(),
            version,
            cipher,
            client_cert: self.facts.peer.clone(),
        }
    }

    /// What a `peer` directive answers about this session (docs/directives.md).
    pub fn peer_facts(&self) -> tlsgate_directive::PeerFacts {
        let info = self.tls_info();
        let peer = self.facts.peer.as_ref();
        let sans = peer
            .map(|p| {
                let dns = p.dns.iter().map(|d| format!("DNS:{d}"));
                let uri = p.uri.iter().map(|u| format!("URI:{u}"));
                dns.chain(uri).chain(p.ip.iter().map(|i| format!("IP:{i}"))).collect()
            })
            .unwrap_or_default();
        tlsgate_directive::PeerFacts {
            subject: peer.map(|p| p.subject.clone()),
            sans,
            identity: peer.map(|p| p.summary()),
            version: info.version,
            suite: info.cipher,
            alpn: info.alpn.map(|a| String::from_utf8_lossy(&a).into_owned()),
            sni: info.sni,
            cert_pem: self.facts.peer_cert.as_ref().map(|c| crate::control::registry::pem(c)),
        }
    }

    /// `TLSv1_3`, `TLS13_AES_128_GCM_SHA256`, ALPN as text: for the connection's log line.
    pub fn describe(&self) -> (String, String, String) {
        let version = format!("{:?}", self.facts.version);
        let suite = format!("{:?}", self.facts.suite.suite());
        let alpn =
            self.facts.alpn.as_deref().map(|a| String::from_utf8_lossy(a).into_owned()).unwrap_or_default();
        (version, suite, alpn)
    }
}

/// Runs the handshake on `tcp`; `initial` holds bytes already read from it (after a PROXY
/// header), which come first. With `answer_plain_http`, a plain HTTP request instead of a
/// ClientHello is answered with a 400 saying so.
pub async fn accept(
    mut tcp: TcpStream,
    initial: Vec<u8>,
    tls: &ListenerTls,
    routes: &Routes,
    listener: &str,
    answer_plain_http: bool,
    ktls_mode: KtlsMode,
) -> Result<Established, HandshakeFailure> {
    // Everything the client sent, from its first byte; handshake records are drained as fed.
    let mut input = initial;
    let (sni, acme_tls) = match read_client_hello(&mut tcp, &mut input, answer_plain_http).await {
        Ok(hello) => hello,
        Err(e) => {
            linger(&mut tcp).await;
            return Err(HandshakeFailure::Failed(e));
        }
    };
    if let (true, Some(acme)) = (acme_tls, &tls.acme) {
        return answer_acme(tcp, input, &acme.challenge_config, sni).await;
    }
    if tls.certs.lookup(sni.as_deref()).is_none() {
        send_alert(&mut tcp, AlertDescription::UnrecognisedName).await;
        return Err(HandshakeFailure::Refused(ProxyError::client(unserved(
            sni.as_deref(),
            Unserved::Certificate,
            listener,
        ))));
    }
    if !routes.serves(sni.as_deref()) {
        send_alert(&mut tcp, AlertDescription::UnrecognisedName).await;
        return Err(HandshakeFailure::Refused(ProxyError::client(unserved(
            sni.as_deref(),
            Unserved::Route,
            listener,
        ))));
    }
    let asked = describe::requested_name(sni.as_deref());
    let failed = |e: String| {
        HandshakeFailure::Failed(ProxyError::client(format!("TLS handshake failed: {e} ({asked})")))
    };
    let tls_failed = |e: rustls::Error| failed(describe::tls_error(&e, Peer::Client));
    let mut hs = ServerHandshake::new(tls.config.clone()).map_err(tls_failed)?;
    let stop = |stop: HandshakeStop| match stop {
        HandshakeStop::Tls(e) => tls_failed(e),
        HandshakeStop::Write(e) => failed(format!("write: {e}")),
        HandshakeStop::Read(e) => HandshakeFailure::Failed(e),
    };
    let last = match drive_holding_last(&mut tcp, &mut hs, &mut input).await {
        Ok(last) => last,
        // rustls's alert is out: the client may still be writing (see `linger`).
        Err(e @ HandshakeStop::Tls(_)) => {
            linger(&mut tcp).await;
            return Err(stop(e));
        }
        Err(e) => return Err(stop(e)),
    };
    let finished = hs.finish().map_err(tls_failed)?;
    // A TLS 1.3 server's last flight is its session ticket, which no client waits for: it goes
    // out with the first record our record layer sends (one segment and one wake-up of the
    // client fewer per connection). A TLS 1.2 server's is its Finished, and kernel TLS would
    // encrypt what is written after it takes over: those are sent now.
    let software = ktls_mode == KtlsMode::Off || (ktls_mode == KtlsMode::Auto && !ktls::available());
    let hold = software && finished.facts.version == rustls::ProtocolVersion::TLSv1_3;
    if !hold && !last.is_empty() {
        tcp.write_all(&last).await.map_err(|e| stop(HandshakeStop::Write(e)))?;
    }
    if hold && input.is_empty() {
        // Nothing goes back to the client now, so the kernel would hold its ACK of the client's
        // Finished for the delayed-ACK timeout (40 ms), and a client with Nagle's algorithm on
        // (no TCP_NODELAY) holds its request, written after the Finished, until that ACK: its
        // first request took 40 ms more. The ACK goes now; the ticket still waits for our first
        // record. A request already here needs no ACK of its own: the reply carries it.
        let _ = socket2::SockRef::from(&tcp).set_tcp_quickack(true);
    }
    // Client records that arrived with its last handshake record are the stream's first. The
    // record layer is the kernel's when `ktls_mode` and the kernel allow.
    let mut stream = Box::new(
        ktls::establish(ktls_mode, tcp, finished.secrets, finished.kernel, input)
            .await
            .map_err(HandshakeFailure::Failed)?,
    );
    if hold && !last.is_empty() {
        match &mut *stream {
            ClientStream::Records(records) => records.send_with_first_write(last),
            ClientStream::Kernel(_) => {
                return Err(HandshakeFailure::Failed(ProxyError::internal(
                    "kernel TLS took over with the session ticket unsent".to_string(),
                )))
            }
        }
    }
    // The protocol is known only now: routes for this name may each take different ones.
    let alpn = finished.facts.alpn.as_deref();
    let Some(route) = routes.lookup(sni.as_deref(), alpn).cloned() else {
        let alpn = alpn.map(String::from_utf8_lossy);
        // RFC 7301's alert for "none of your protocols": here, none with a route for this name.
        stream.refuse(u8::from(AlertDescription::NoApplicationProtocol)).await;
        return Err(HandshakeFailure::Refused(ProxyError::client(format!(
            "refused: SNI {sni:?} with ALPN {alpn:?} matches no route and there is no default route"
        ))));
    };
    Ok(Established { stream, sni, route, facts: finished.facts })
}

/// RFC 8737: the handshake with the challenge certificate for the name, then nothing (the ACME
/// server closes after checking the certificate).
async fn answer_acme(
    mut tcp: TcpStream,
    mut input: Vec<u8>,
    config: &Arc<rustls::ServerConfig>,
    sni: Option<String>,
) -> Result<Established, HandshakeFailure> {
    let failed = |e: String| {
        HandshakeFailure::Failed(ProxyError::client(format!("TLS-ALPN-01 handshake for {sni:?} failed: {e}")))
    };
    let tls_failed = |e: rustls::Error| failed(describe::tls_error(&e, Peer::Client));
    let mut hs = ServerHandshake::new(config.clone()).map_err(tls_failed)?;
    drive(&mut tcp, &mut hs, &mut input).await.map_err(|stop| match stop {
        HandshakeStop::Tls(e) => tls_failed(e),
        HandshakeStop::Write(e) => failed(format!("write: {e}")),
        HandshakeStop::Read(e) => HandshakeFailure::Failed(e),
    })?;
    hs.finish().map_err(tls_failed)?;
    let _ = tcp.shutdown().await;
    Err(HandshakeFailure::AcmeValidated(ProxyError::client(format!(
        "answered an ACME TLS-ALPN-01 validation handshake for {sni:?}"
    ))))
}

/// What no part of a listener's configuration serves for a refused name.
#[derive(Clone, Copy)]
enum Unserved {
    Certificate,
    Route,
}

/// Why a name was refused, in the client's words, and the setting that would serve it.
fn unserved(sni: Option<&str>, what: Unserved, listener: &str) -> String {
    let (noun, fix) = match what {
        Unserved::Certificate => {
            ("certificate", "set `default = true` on one of its [[terminate.listener.certificate]]")
        }
        Unserved::Route => ("route", "add a [[terminate.listener.route]] without `sni`"),
    };
    match (sni, what) {
        (None, _) => format!(
            "refused: client sent no SNI, and no default {noun} is set on listener {listener}; {fix} to \
             serve such clients"
        ),
        (Some(name), Unserved::Certificate) => format!(
            "refused: client asked for name {name}, which no certificate serves (and no default \
             certificate is set) on listener {listener}; add the name to a certificate's `names` or \
             {fix} to serve it"
        ),
        (Some(name), Unserved::Route) => format!(
            "refused: client asked for name {name}, which no route serves (and no default route is \
             set) on listener {listener}; {fix} to serve it"
        ),
    }
}

/// Why [`drive`] stopped before the handshake completed.
pub(crate) enum HandshakeStop {
    /// rustls refused the client's bytes (its alert, if any, was sent).
    Tls(rustls::Error),
    /// Writing the handshake's answer failed.
    Write(std::io::Error),
    /// Reading failed or the peer closed (named by its side).
    Read(ProxyError),
}

impl HandshakeStop {
    /// One line for the log; rustls's error described as `peer`'s doing.
    pub(crate) fn message(self, peer: tlsgate_tls::describe::Peer) -> String {
        match self {
            HandshakeStop::Tls(e) => tlsgate_tls::describe::tls_error(&e, peer),
            HandshakeStop::Write(e) => format!("write: {e}"),
            HandshakeStop::Read(e) => e.context,
        }
    }
}

/// A handshake fed the peer's records one at a time: the server's (terminate, the connect gate)
/// or the client's (originate).
pub(crate) trait FedRecords {
    /// Whose records are fed: named when reading them fails.
    const PEER: Side;
    fn record(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<Progress, rustls::Error>;
}

impl FedRecords for ServerHandshake {
    const PEER: Side = Side::Client;
    fn record(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<Progress, rustls::Error> {
        ServerHandshake::record(self, record, out)
    }
}

impl FedRecords for ClientHandshake {
    const PEER: Side = Side::Backend;
    fn record(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<Progress, rustls::Error> {
        ClientHandshake::record(self, record, out)
    }
}

/// Feeds the peer's records to `hs` one at a time, sends its answers and reads more as
/// needed, until the handshake is complete. `input` starts with what was already read and ends
/// with the peer's bytes after its last handshake record (its first application records).
pub(crate) async fn drive<H: FedRecords>(
    tcp: &mut TcpStream,
    hs: &mut H,
    input: &mut Vec<u8>,
) -> Result<(), HandshakeStop> {
    let last = drive_holding_last(tcp, hs, input).await?;
    if !last.is_empty() {
        tcp.write_all(&last).await.map_err(HandshakeStop::Write)?;
    }
    Ok(())
}

/// As [`drive`], but what `hs` answered to the records that completed the handshake is
/// returned unsent. For a TLS 1.3 server that is only its session tickets (RFC 8446 §4.6.1:
/// sent after the client's Finished, which needs no answer), which can then leave in the
/// segment of the first reply instead of one of their own.
pub(crate) async fn drive_holding_last<H: FedRecords>(
    tcp: &mut TcpStream,
    hs: &mut H,
    input: &mut Vec<u8>,
) -> Result<Vec<u8>, HandshakeStop> {
    let mut out = Vec::new();
    loop {
        let mut at = 0;
        let mut progress = Progress::NeedMore;
        while progress == Progress::NeedMore {
            let Some(end) = record_end(&input[at..]) else { break };
            // A malformed header goes to rustls whole: it names the problem and picks the alert.
            let record = &input[at..at.saturating_add(end).min(input.len())];
            let result = hs.record(record, &mut out);
            at += record.len();
            match result {
                Ok(p) => progress = p,
                Err(e) => {
                    let _ = tcp.write_all(&out).await;
                    return Err(HandshakeStop::Tls(e));
                }
            }
        }
        input.drain(..at);
        if progress == Progress::Complete {
            return Ok(out);
        }
        if !out.is_empty() {
            tcp.write_all(&out).await.map_err(HandshakeStop::Write)?;
            out.clear();
        }
        read_more(tcp, input, "during the handshake", H::PEER).await.map_err(HandshakeStop::Read)?;
    }
}

/// The length of the record at the start of `bytes` when it is all there; a header that cannot
/// start a TLS record counts as complete with its whole length, so rustls rejects it at once.
fn record_end(bytes: &[u8]) -> Option<usize> {
    let h: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
    let header = Header::parse(h);
    if !header.content_type.is_known()
        || header.version >> 8 != 3
        || header.len as usize > MAX_CIPHERTEXT_TLS12
    {
        return Some(usize::MAX);
    }
    let end = HEADER_LEN + header.len as usize;
    (bytes.len() >= end).then_some(end)
}

/// Reads until `input` holds a whole ClientHello; returns its SNI and whether it offered ALPN
/// `acme-tls/1`. Anything that is not one is
/// answered with the alert rustls chose (or, for a plain HTTP request when allowed, a 400) and
/// an error naming the client.
async fn read_client_hello(
    tcp: &mut TcpStream,
    input: &mut Vec<u8>,
    answer_plain_http: bool,
) -> Result<(Option<String>, bool), ProxyError> {
    let mut hello = HelloReader::default();
    let mut fed = 0;
    loop {
        match hello.feed(&input[fed..]) {
            Ok(Some(sni)) => return Ok((sni, hello.offered_acme_tls())),
            Ok(None) => {}
            Err(_) if answer_plain_http && plain_http::looks_like_request(input) => {
                plain_http::answer(tcp).await;
                return Err(ProxyError::client(plain_http::LOGGED));
            }
            Err(e) => {
                let _ = tcp.write_all(&e.alert).await;
                return Err(ProxyError::client(e.message));
            }
        }
        fed = input.len();
        read_more(tcp, input, "before a complete ClientHello", Side::Client).await?;
    }
}

/// Appends one read from the peer (`side`) to `input`.
async fn read_more(
    tcp: &mut TcpStream,
    input: &mut Vec<u8>,
    when: &str,
    side: Side,
) -> Result<(), ProxyError> {
    input.reserve(4096);
    let n =
        tcp.read_buf(input).await.map_err(|e| ProxyError { side, context: format!("read {when}: {e}") })?;
    if n == 0 {
        return Err(ProxyError { side, context: format!("closed the connection {when}") });
    }
    Ok(())
}

/// A fatal alert in a plaintext record: what a server sends before ServerHello.
async fn send_alert(tcp: &mut TcpStream, description: AlertDescription) {
    let record = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, u8::from(description)];
    let _ = tcp.write_all(&record).await;
    linger(tcp).await;
}

/// How long, and for how many bytes, a refused client is read after its alert: a handshake
/// message may be 2^24 bytes (RFC 8446 §4), so a client may still be sending one.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: usize = (1 << 24) + (1 << 16);

/// After the handshake failed and its alert went out: FIN, then whatever the client still sends
/// read and dropped until it closes (or `LINGER`, `LINGER_BYTES`). A socket closed with bytes
/// unread answers with RST (RFC 2525 §2.17), which can reach a client still writing its hello
/// before it has read the alert, and then its write fails instead.
async fn linger(tcp: &mut TcpStream) {
    let _ = tcp.shutdown().await;
    let mut buf = vec![0; 16 * 1024];
    let drain = async {
        let mut read = 0;
        while read < LINGER_BYTES {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

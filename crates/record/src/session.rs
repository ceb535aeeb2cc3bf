//! The TLS session after the handshake, sans-IO: one state machine that every driver of the
//! record layer (terminate's stream, the inline engine in both release modes, a kernel TLS
//! offload later) feeds the client's records and asks to seal its own.
//!
//! In: record headers (checked before their body is awaited), whole records or the end of one
//! opened piece by piece ([`Session::stream_end`]). Out: plaintext to deliver (a range of the
//! caller's buffer), bytes to send (our KeyUpdate answer, a no_renegotiation warning, sealed
//! data, close_notify), the peer's close, or a [`Fatal`] naming the side at fault and the alert
//! that answers it, which [`Session::send_alert`] seals once.
//!
//! The rules themselves are in [`rules`] (no crypto: also what the fuzzer drives); this module
//! adds the keys: it follows the client's KeyUpdates, answers a requested one (once per run of
//! requests: RFC 8446 §4.6.3 lets a reply cover every request before it), replaces its transmit
//! key after [`TX_KEY_RECORDS`] records, and refuses to seal after close_notify or a failure.

pub mod alert;
#[cfg(test)]
mod client_rules_tests;
#[cfg(test)]
mod offload_tests;
pub mod rules;
#[cfg(test)]
mod tests;

use crate::crypto::{CompactLayer, CryptoError, RecordLayer, Version};
use crate::frame::{ContentType, FrameError, Header, MAX_PLAINTEXT};
use crate::stream::StreamOpener;
pub use rules::{Outcome, Reason, Role, Rules, Side};
use std::ops::Range;

/// Records sealed under one transmit key before it is replaced: below AES-GCM's limit of
/// 2^24.5 full-size records (RFC 8446 §5.5), as rustls does before the keys are handed over.
pub const TX_KEY_RECORDS: u64 = 1 << 24;

/// Offloaded: plaintext bytes handed to the kernel between two reads of its transmit sequence
/// number ([`Session::offloaded_tx_used_up`]). Every record holds at least one byte, so at most
/// 2^20 records go out between reads: [`TX_KEY_RECORDS`] plus that stays below AES-GCM's
/// 2^24.5 (RFC 8446 §5.5).
pub const OFFLOAD_TX_CHECK_BYTES: u64 = 1 << 20;

/// The end of a session by a rule: who broke it, why, and the alert that answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fatal {
    pub side: Side,
    /// The fatal alert description owed to the client (sealed by [`Session::send_alert`]).
    pub alert: Option<u8>,
    pub reason: Reason,
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The alert is the driver's to mention: it knows whether it went out.
        match self.side {
            Side::Client => write!(f, "client {}", self.reason),
            Side::Internal => write!(f, "session {}", self.reason),
        }
    }
}

impl std::error::Error for Fatal {}

impl From<Reason> for Fatal {
    fn from(reason: Reason) -> Fatal {
        Fatal { side: reason.side(), alert: reason.alert(), reason }
    }
}

/// What a client record meant, once the session acted on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// Application data to deliver: where it lies in the buffer given (possibly empty).
    Data(Range<usize>),
    /// Consumed by the session: a KeyUpdate, part of one, an ignored warning, a refused
    /// renegotiation. What it called for is in `out`.
    Nothing,
    /// The client sent close_notify (now or before): its stream has ended.
    Closed,
}

/// An idle server session reduced to what resumes it ([`Session::compact`]): the record layer's
/// compact form and the transmit key's record count. About 40 bytes beside the secrets (or TLS
/// 1.2's keys), where a session is some 340.
#[derive(Debug)]
pub struct CompactSession {
    layer: CompactLayer,
    tx_key_records: u64,
    updated_last: bool,
}

impl CompactSession {
    /// Next record sequence numbers (receive, transmit).
    pub fn seqs(&self) -> (u64, u64) {
        self.layer.seqs()
    }

    /// Heap bytes this form holds beyond its own size (the secrets or keys).
    pub fn heap_bytes(&self) -> usize {
        self.layer.heap_bytes()
    }

    /// The session again, as it was when compacted (its AEAD contexts built on the next
    /// record, as after [`Session::park`]).
    pub fn resume(self) -> Result<Session, Fatal> {
        let CompactSession { layer, tx_key_records, updated_last } = self;
        let layer = layer.resume().map_err(|e| Fatal::from(Reason::KeySchedule(e.to_string())))?;
        let mut s = Session::new(layer);
        s.tx_key_records = tx_key_records;
        s.updated_last = updated_last;
        Ok(s)
    }
}

/// One connection's session after the handshake. See the module docs.
#[derive(Debug)]
pub struct Session {
    layer: RecordLayer,
    rules: Rules,
    tx_key_records: u64,
    /// The last record sealed was our KeyUpdate: a requested update is answered by it already.
    updated_last: bool,
    close_sent: bool,
    failed: Option<Fatal>,
    alert_sent: bool,
    /// The kernel does the record crypto ([`Session::offload`]).
    offloaded: bool,
    /// Offloaded: the client's KeyUpdate arrived and the kernel still has the old receive key.
    rx_rekey: bool,
}

impl Session {
    pub fn new(layer: RecordLayer) -> Session {
        let role = if layer.is_client() { Role::Client } else { Role::Server };
        Session {
            rules: Rules::with_role(layer.version(), role),
            layer,
            tx_key_records: TX_KEY_RECORDS,
            updated_last: false,
            close_sent: false,
            failed: None,
            alert_sent: false,
            offloaded: false,
            rx_rekey: false,
        }
    }

    /// Which end this session is.
    pub fn role(&self) -> Role {
        self.rules.role()
    }

    /// The peer, for messages: `client` (this end is the server) or `server`.
    pub fn peer(&self) -> &'static str {
        match self.role() {
            Role::Server => "client",
            Role::Client => "server",
        }
    }

    /// A failure in words naming the peer as it is ([`Fatal`]'s own display says `client`).
    pub fn describe(&self, f: &Fatal) -> String {
        match f.side {
            Side::Client => format!("{} {}", self.peer(), f.reason),
            Side::Internal => f.to_string(),
        }
    }

    /// Kernel TLS: from now on the kernel opens and seals the records. What the session sends
    /// is appended to `out` as *plaintext* records (the header names the real content type),
    /// for the driver to hand to the kernel with that type; client records reach the rules
    /// through [`Session::opened`]. A client KeyUpdate is not followed here: it is flagged
    /// ([`Session::rx_rekey_pending`]) for the driver, which owns the kernel's keys.
    pub fn offload(&mut self) {
        self.offloaded = true;
    }

    /// Offloaded: a client KeyUpdate was received; its records from now on use a key the
    /// kernel does not have until the driver installs it.
    pub fn rx_rekey_pending(&self) -> bool {
        self.rx_rekey
    }

    /// Offloaded: whether the transmit key is used up at the kernel's next sequence number
    /// `kernel_seq` (read every [`OFFLOAD_TX_CHECK_BYTES`]). The kernel cannot replace its
    /// key (no TLS 1.3 rekey before Linux 6.14, none in TLS 1.2), so the driver ends the
    /// connection cleanly (close_notify and FIN, still well under the limit) rather than seal
    /// past it: the offloaded counterpart of [`Session::seal`]'s key refresh.
    pub fn offloaded_tx_used_up(&self, kernel_seq: u64) -> bool {
        self.offloaded && kernel_seq >= self.tx_key_records
    }

    /// The transmit key's record limit ([`TX_KEY_RECORDS`] unless a test lowered it).
    pub fn tx_key_records(&self) -> u64 {
        self.tx_key_records
    }

    /// Offloaded: a client record the kernel opened, `ct` its real content type, `plain` its
    /// content (padding removed). The same rules as [`Session::open`].
    pub fn opened(&mut self, ct: ContentType, plain: &[u8], out: &mut Vec<u8>) -> Result<Received, Fatal> {
        self.check()?;
        if self.rules.peer_closed() {
            return Ok(Received::Closed);
        }
        let outcome = match self.version() {
            // The rules read TLS 1.3's TLSInnerPlaintext: content, then the type.
            Version::Tls13 => {
                let mut inner = Vec::with_capacity(plain.len() + 1);
                inner.extend_from_slice(plain);
                inner.push(ct.0);
                self.rules.record(ContentType::APPLICATION_DATA, &inner, 0)
            }
            Version::Tls12 => self.rules.record(ct, plain, 0),
        };
        let outcome = outcome.map_err(|r| self.fail(r))?;
        self.act(&outcome, out)
    }

    /// A driver whose record layer is elsewhere (the kernel) reports what it found wrong.
    pub fn fail_with(&mut self, reason: Reason) -> Fatal {
        match &self.failed {
            Some(f) => f.clone(),
            None => self.fail(reason),
        }
    }

    /// The session of a handshake rustls completed: its traffic keys and key schedule.
    pub fn from_keys(
        secrets: rustls::ExtractedSecrets,
        kernel: impl Into<crate::crypto::KeySchedule>,
    ) -> Result<Session, Fatal> {
        let layer =
            RecordLayer::new(secrets, kernel).map_err(|e| Fatal::from(Reason::KeySchedule(e.to_string())))?;
        Ok(Session::new(layer))
    }

    /// Replaces the transmit key after `records` records instead of [`TX_KEY_RECORDS`]: for
    /// tests, which cannot seal 2^24 records.
    pub fn set_tx_key_records(&mut self, records: u64) {
        self.tx_key_records = records;
    }

    #[inline]
    pub fn version(&self) -> Version {
        self.layer.version()
    }

    /// Outer bytes before a record's first plaintext byte (header, TLS 1.2 AES-GCM's explicit
    /// nonce).
    #[inline]
    pub fn head(&self) -> usize {
        self.layer.head()
    }

    /// Total expansion of one record sealed or opened in this session.
    #[inline]
    pub fn overhead(&self) -> usize {
        self.layer.overhead()
    }

    /// Next record sequence numbers (receive, transmit).
    #[inline]
    pub fn seqs(&self) -> (u64, u64) {
        self.layer.seqs()
    }

    /// Drops the AEAD contexts until the next record, keeping the raw keys: an idle connection
    /// then holds some hundred bytes of keys instead of two expanded contexts. Rebuilding them
    /// costs a key expansion per direction, so drivers park only connections idle for a while.
    pub fn park(&mut self) {
        self.layer.park();
    }

    pub fn parked(&self) -> bool {
        self.layer.parked()
    }

    /// Whether [`Session::compact`] would succeed.
    pub fn is_compactable(&self) -> bool {
        self.failed.is_none()
            && !self.alert_sent
            && !self.close_sent
            && !self.offloaded
            && !self.rx_rekey
            && self.rules.is_fresh()
            && self.role() == Role::Server
            && self.layer.is_compactable()
    }

    /// The compact form of an idle server session ([`CompactSession`]): only when nothing is in
    /// progress — no failure, no alert or close_notify sent, no post-handshake message half
    /// read, the client's stream open, not offloaded — and the key schedule has a compact
    /// form; the session itself back otherwise.
    pub fn compact(self: Box<Session>) -> Result<CompactSession, Box<Session>> {
        if !self.is_compactable() {
            return Err(self);
        }
        let Session { layer, tx_key_records, updated_last, .. } = *self;
        let Ok(layer) = layer.compact() else { unreachable!("is_compactable checked the key schedule") };
        Ok(CompactSession { layer, tx_key_records, updated_last })
    }

    /// Whether rustls's key schedule is kept (not the compact one of [`crate::traffic`]).
    pub fn keeps_rustls_schedule(&self) -> bool {
        self.layer.keeps_rustls_schedule()
    }

    /// Bytes this session holds, its own size included (for a driver's per-connection
    /// accounting).
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Session>() + self.layer.heap_bytes()
    }

    /// The client sent close_notify.
    pub fn peer_closed(&self) -> bool {
        self.rules.peer_closed()
    }

    /// Our close_notify is sealed.
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// Both close_notify alerts are through (the peer's received, ours sealed) and nothing
    /// failed: from the next byte on either direction the connection is no longer this session's
    /// (a downgrade to the raw stream; the caller keeps the bytes it read past the peer's alert).
    pub fn downgraded(&self) -> bool {
        self.failed.is_none() && self.rules.peer_closed() && self.close_sent
    }

    pub fn failed(&self) -> Option<&Fatal> {
        self.failed.as_ref()
    }

    /// The largest record body accepted.
    pub fn ciphertext_limit(&self) -> usize {
        self.rules.ciphertext_limit()
    }

    /// Bytes of a handshake message held between records (at most 4, or a NewSessionTicket's).
    pub fn held(&self) -> usize {
        self.rules.held()
    }

    fn fail(&mut self, reason: Reason) -> Fatal {
        let fatal = Fatal::from(reason);
        self.failed = Some(fatal.clone());
        fatal
    }

    fn check(&self) -> Result<(), Fatal> {
        match &self.failed {
            Some(f) => Err(f.clone()),
            None => Ok(()),
        }
    }

    /// A client record header, before its body is awaited.
    pub fn header(&mut self, h: Header) -> Result<(), Fatal> {
        self.check()?;
        self.rules.header(h).map_err(|r| self.fail(r))
    }

    /// A framer that stopped on a header: the same answers as [`Session::header`].
    pub fn frame_error(&mut self, e: FrameError) -> Fatal {
        if let Some(f) = &self.failed {
            return f.clone();
        }
        let reason = match e {
            FrameError::Oversized { len, limit } => Reason::RecordOverflow { len, limit },
            FrameError::ContentType(t) => Reason::UnexpectedType(t),
            FrameError::Version(v) => Reason::RecordVersion(v),
            FrameError::Failed => Reason::UnexpectedType(0),
        };
        self.fail(reason)
    }

    fn crypto(&mut self, e: CryptoError) -> Fatal {
        self.fail(match e {
            // RFC 8446 §5.2: a record that does not decrypt, too short for its tag included.
            CryptoError::BadRecordMac | CryptoError::Short(_) => Reason::BadRecordMac,
            CryptoError::OuterType(t) => Reason::UnexpectedType(t),
            CryptoError::NoContentType => Reason::NoContentType,
            // RFC 8446 §5.3: a sequence number would wrap; the client never updated its key.
            CryptoError::SeqExhausted => Reason::SeqExhausted,
            CryptoError::PostHandshake(t) => Reason::UnexpectedHandshake(t),
            e @ (CryptoError::TooLarge(_) | CryptoError::Unsupported | CryptoError::KeySchedule(_)) => {
                Reason::KeySchedule(e.to_string())
            }
        })
    }

    /// A whole client record, opened in place in `body`. Bytes to send are appended to `out`.
    /// Inline (as are the framer's `next` and the key's `decrypt`): thin LTO left them calls from
    /// the inline engine's client path, where inlined they open whole records 8–10 % faster.
    #[inline]
    pub fn open(&mut self, header: Header, body: &mut [u8], out: &mut Vec<u8>) -> Result<Received, Fatal> {
        self.check()?;
        // RFC 8446 §6.1: ignored after close_notify (not even decrypted).
        if self.rules.peer_closed() {
            return Ok(Received::Closed);
        }
        self.header(header)?;
        let (plain, _) = self.layer.decrypt(header, body).map_err(|e| self.crypto(e))?;
        let outcome =
            self.rules.record(header.content_type, &body[plain.clone()], 0).map_err(|r| self.fail(r))?;
        Ok(match self.act(&outcome, out)? {
            Received::Data(r) => Received::Data(plain.start + r.start..plain.start + r.end),
            other => other,
        })
    }

    /// Starts opening a client record piece by piece (cut-through release).
    pub fn open_stream(&mut self, header: Header) -> Result<StreamOpener, Fatal> {
        self.header(header)?;
        self.layer.open_stream(header).map_err(|e| self.crypto(e))
    }

    /// Checks the tag of a record opened piece by piece (its verdict is for
    /// [`Session::stream_end`]); the opener's context is kept for the next record.
    pub fn finish_stream(&mut self, opener: StreamOpener) -> Result<(), CryptoError> {
        self.layer.finish_stream(opener)
    }

    /// The end of a record opened piece by piece: `tag` is [`StreamOpener::finish`]'s verdict,
    /// `plain` the decrypted plaintext not handed out, after `released` bytes that were (as
    /// application data). A data range returned is within `plain`.
    pub fn stream_end(
        &mut self,
        header: Header,
        tag: Result<(), CryptoError>,
        plain: &[u8],
        released: usize,
        out: &mut Vec<u8>,
    ) -> Result<Received, Fatal> {
        self.check()?;
        tag.map_err(|e| self.crypto(e))?;
        let outcome = self.rules.record(header.content_type, plain, released).map_err(|r| self.fail(r))?;
        self.act(&outcome, out)
    }

    /// Carries out what a record asked for.
    fn act(&mut self, o: &Outcome, out: &mut Vec<u8>) -> Result<Received, Fatal> {
        // rustls keeps the ticket store: under offload too, the key schedule stays here.
        for ticket in &o.tickets {
            self.layer.new_session_ticket(ticket).map_err(|e| self.fail(Reason::BadTicket(e.to_string())))?;
        }
        if o.key_update.is_some() && self.offloaded {
            self.rx_rekey = true;
        } else if let Some(requested) = o.key_update {
            self.layer.update_rx().map_err(|e| self.crypto(e))?;
            if requested && !self.updated_last && !self.close_sent {
                self.send_key_update(out)?;
            }
        }
        // RFC 5246 §7.2.2, RFC 5746 §4.4: a server that does not renegotiate answers a
        // ClientHello with a warning no_renegotiation and carries on with the session it has.
        // (A fatal handshake_failure is also allowed; the warning keeps a client that merely
        // tried a working connection, as OpenSSL and HAProxy do.)
        // Nothing is sealed after our close_notify (RFC 8446 §6.1, RFC 5246 §7.2.1).
        for _ in 0..o.renegotiations * u32::from(!self.close_sent) {
            self.seal_record(ContentType::ALERT, &[alert::WARNING, alert::NO_RENEGOTIATION], out)?;
        }
        Ok(match (&o.data, o.closed) {
            (_, true) => Received::Closed,
            (Some(r), _) => Received::Data(r.clone()),
            (None, _) => Received::Nothing,
        })
    }

    /// TLS 1.3: seals a KeyUpdate (update_not_requested) and moves the transmit key on.
    pub fn send_key_update(&mut self, out: &mut Vec<u8>) -> Result<(), Fatal> {
        self.layer.send_key_update(out).map_err(|e| self.fail(Reason::KeySchedule(e.to_string())))?;
        self.updated_last = true;
        Ok(())
    }

    fn seal_record(&mut self, ct: ContentType, data: &[u8], out: &mut Vec<u8>) -> Result<(), Fatal> {
        if self.offloaded {
            plain_record(ct, data, out);
            return Ok(());
        }
        self.refresh_tx_key(out)?;
        let sealed = if ct == ContentType::ALERT {
            self.layer.seal_alert([data[0], data[1]], out)
        } else {
            self.layer.seal(data, out)
        };
        sealed.map_err(|e| self.fail(Reason::Seal(e.to_string())))?;
        self.updated_last = false;
        Ok(())
    }

    /// Keeps the transmit key under its confidentiality limit: TLS 1.3 moves to the next key
    /// with a KeyUpdate (RFC 8446 §5.5), TLS 1.2 cannot (renegotiation is refused) and ends.
    fn refresh_tx_key(&mut self, out: &mut Vec<u8>) -> Result<(), Fatal> {
        if self.layer.seqs().1 < self.tx_key_records {
            return Ok(());
        }
        match self.version() {
            Version::Tls13 => self.send_key_update(out),
            Version::Tls12 => Err(self.fail(Reason::TxKeyUsedUp(self.tx_key_records))),
        }
    }

    /// Seals `data` as application-data records of at most 2^14 bytes, appended to `out`.
    /// Nothing is sealed for empty data.
    pub fn seal(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), Fatal> {
        self.check()?;
        if self.close_sent {
            return Err(Fatal::from(Reason::WriteAfterClose));
        }
        for chunk in data.chunks(MAX_PLAINTEXT) {
            self.seal_record(ContentType::APPLICATION_DATA, chunk, out)?;
        }
        Ok(())
    }

    /// As [`Session::seal`] for at most one record's plaintext, into `out` from its start over
    /// the bytes it holds (a reused record buffer: only bytes beyond them are zeroed before the
    /// AEAD writes them); `out` then holds the record, after a KeyUpdate record when the
    /// transmit key was used up.
    pub fn seal_over(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), Fatal> {
        if self.offloaded || data.len() > MAX_PLAINTEXT || self.layer.seqs().1 >= self.tx_key_records {
            // The rare cases, appended to an emptied buffer as `seal` does.
            out.clear();
            return self.seal(data, out);
        }
        self.check()?;
        if self.close_sent {
            return Err(Fatal::from(Reason::WriteAfterClose));
        }
        self.layer.seal_over(data, out).map_err(|e| self.fail(Reason::Seal(e.to_string())))?;
        self.updated_last = false;
        Ok(())
    }

    /// As [`Session::seal`] into a reused batch buffer: the records are written from the start
    /// of `out` over the bytes it holds, and bytes beyond them stay; returns the records' length
    /// (`out[..n]`). Appending to an emptied buffer zeroed every byte before the AEAD wrote it,
    /// a pass over each batch that this skips once the buffer has grown to a batch.
    pub fn seal_batch_over(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<usize, Fatal> {
        let records = data.len().div_ceil(MAX_PLAINTEXT) as u64;
        if self.offloaded || self.layer.seqs().1.saturating_add(records) > self.tx_key_records {
            // The rare cases (a KeyUpdate due within the batch), appended to an emptied buffer.
            out.clear();
            self.seal(data, out)?;
            return Ok(out.len());
        }
        self.check()?;
        if self.close_sent {
            return Err(Fatal::from(Reason::WriteAfterClose));
        }
        let mut end = 0;
        for chunk in data.chunks(MAX_PLAINTEXT) {
            end = self
                .layer
                .seal_within(chunk, out, end)
                .map_err(|e| self.fail(Reason::Seal(e.to_string())))?;
            self.updated_last = false;
        }
        Ok(end)
    }

    /// Seals close_notify (once): nothing is sealed after it (RFC 8446 §6.1).
    pub fn close(&mut self, out: &mut Vec<u8>) -> Result<(), Fatal> {
        self.check()?;
        if !self.close_sent {
            self.seal_record(ContentType::ALERT, &[alert::WARNING, alert::CLOSE_NOTIFY], out)?;
            self.close_sent = true;
        }
        Ok(())
    }

    /// Ends the session by a choice of the caller made after the handshake (say, no ALPN
    /// protocol matched): `description` is sent as a fatal alert by [`Session::send_alert`].
    pub fn refuse(&mut self, description: u8) -> Fatal {
        let fatal =
            Fatal { side: Side::Internal, alert: Some(description), reason: Reason::Refused(description) };
        if self.failed.is_none() {
            self.failed = Some(fatal.clone());
        }
        fatal
    }

    /// After a failure: seals the fatal alert owed to the client into `out`, once. Returns its
    /// description when one was sealed.
    pub fn send_alert(&mut self, out: &mut Vec<u8>) -> Option<u8> {
        let d = self.failed.as_ref()?.alert?;
        // Once, and never after our close_notify (RFC 8446 §6.1).
        if self.alert_sent || self.close_sent {
            return None;
        }
        self.alert_sent = true;
        if self.offloaded {
            plain_record(ContentType::ALERT, &[alert::FATAL, d], out);
        } else {
            self.layer.seal_alert([alert::FATAL, d], out).ok()?;
        }
        Some(d)
    }
}

/// Offloaded: a record for the kernel to seal, as header and plaintext.
fn plain_record(ct: ContentType, data: &[u8], out: &mut Vec<u8>) {
    let header = crate::frame::Header { content_type: ct, version: 0x0303, len: data.len() as u16 };
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(data);
}

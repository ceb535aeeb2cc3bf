//! One client record opened in cut-through release: its body decrypted as it arrives, the
//! plaintext that is certainly application data handed out at once, the tag checked at its end.
//!
//! What may leave before the tag (the release rule):
//! - TLS 1.2: the content type is in the header; an application_data record's plaintext leaves as
//!   it is decrypted, any other record is held whole (alerts are 2 bytes).
//! - TLS 1.3: the real type is the last non-zero byte of the plaintext, padding zeros after it, so
//!   the suffix from the last non-zero byte seen so far is held: it may still turn out to be type
//!   and padding. Nothing at all leaves until more than [`HOLD_FIRST`] bytes are decrypted, so a
//!   short record (an unpadded alert or KeyUpdate, as rustls writes them) is judged whole. A
//!   record that turns out to be an alert or handshake after some of it left (only a padded
//!   control record can) fails the flow (the session's `ControlAfterRelease`).
//!
//! What a record means once its tag verified, and which alert a violation gets, is the
//! session's ([`Session::stream_end`]), as for a record opened whole.
//!
//! The piece of a segment that completes a record releases nothing before the tag, so a record
//! whose bytes all arrive in one segment is as safe as in buffered mode. Bytes released earlier
//! are unauthenticated until [`CutRecord::end`]; on a bad tag the engine resets the server, which
//! then holds bytes nobody vouched for — the weaker guarantee of this mode.

use tlsgate_record::crypto::Version;
use tlsgate_record::frame::{ContentType, Header, HEADER_LEN};
use tlsgate_record::session::{Fatal, Received, Session};
use tlsgate_record::stream::StreamOpener;

/// Plaintext bytes a TLS 1.3 record must exceed before any of it is released.
pub const HOLD_FIRST: usize = 32;

/// How a record ended, once its tag verified.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// Application data: the plaintext still held, to release now (after what left already).
    Data(Vec<u8>),
    /// Consumed by the session (a KeyUpdate, a warning); what it sealed in reply is in `reply`.
    Control,
    /// close_notify.
    Closed,
}

#[derive(Debug)]
pub struct CutRecord {
    header: Header,
    /// Outer offset of the record's header.
    outer: u64,
    version: Version,
    /// Outer bytes before the first plaintext byte (header, TLS 1.2 AES-GCM explicit nonce).
    head: u8,
    opener: StreamOpener,
    /// Decrypted and not released (see the module docs). At most one record's plaintext.
    held: Vec<u8>,
    released: usize,
}

impl CutRecord {
    pub fn begin(session: &mut Session, header: Header, outer: u64) -> Result<CutRecord, Fatal> {
        let opener = session.open_stream(header)?;
        let (version, head) = (session.version(), session.head() as u8);
        Ok(CutRecord { header, outer, version, head, opener, held: Vec::new(), released: 0 })
    }

    pub fn outer(&self) -> u64 {
        self.outer
    }

    /// Outer bytes before the first plaintext byte (header, TLS 1.2 explicit nonce).
    pub fn head(&self) -> u64 {
        u64::from(self.head)
    }

    /// Plaintext bytes released so far.
    pub fn released(&self) -> usize {
        self.released
    }

    /// Body bytes received so far.
    pub fn received(&self) -> usize {
        self.header.len as usize - self.opener.remaining()
    }

    pub fn state_bytes(&self) -> usize {
        self.held.len() + self.opener.state_bytes()
    }

    /// Decrypts the next body bytes; returns the plaintext that may leave now. The piece that
    /// completes the record releases nothing: its tag is checked next, in the same segment.
    pub fn body(&mut self, data: &[u8]) -> Vec<u8> {
        self.opener.update(data, &mut self.held);
        if self.opener.remaining() == 0 {
            return Vec::new();
        }
        let n = self.releasable();
        if n == 0 {
            return Vec::new();
        }
        self.released += n;
        // The released bytes keep the buffer they were decrypted into; only the held-back tail
        // (TLS 1.3: from the last non-zero byte, usually one byte) moves to a new one.
        let tail = self.held.split_off(n);
        std::mem::replace(&mut self.held, tail)
    }

    fn releasable(&self) -> usize {
        match self.version {
            Version::Tls12 if self.header.content_type == ContentType::APPLICATION_DATA => self.held.len(),
            Version::Tls12 => 0,
            Version::Tls13 if self.released + self.held.len() <= HOLD_FIRST => 0,
            Version::Tls13 => self.held.iter().rposition(|&b| b != 0).unwrap_or(0),
        }
    }

    /// The record's last byte arrived: checks the tag and says what the record was; what the
    /// session sends in answer is appended to `reply`.
    pub fn end(self, session: &mut Session, reply: &mut Vec<u8>) -> Result<Ending, Fatal> {
        let tag = session.finish_stream(self.opener);
        Ok(match session.stream_end(self.header, tag, &self.held, self.released, reply)? {
            Received::Data(r) => Ending::Data(self.held[r].to_vec()),
            Received::Nothing => Ending::Control,
            Received::Closed => Ending::Closed,
        })
    }

    /// The record's whole outer length, for its pair entry.
    pub fn outer_len(&self) -> u32 {
        (HEADER_LEN + self.header.len as usize) as u32
    }
}

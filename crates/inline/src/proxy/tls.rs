//! The TLS end of a full-proxy flow, sans-IO over the client's byte stream: the same rustls
//! handshake driver as the end-to-end path ([`crate::handshake`]), then the records through the
//! same session machine ([`tlsgate_record::session::Session`]: every rule after the handshake and
//! the alert answering it). Bytes from the client go in,
//! bytes for the client and plaintext for the server come out; the caller bounds both.

use crate::handshake::{Handshake, HandshakeError, Progress};
use crate::tls_flow::SessionInfo;
use rustls::ServerConfig;
use std::sync::Arc;
use thiserror::Error;
use tlsgate_record::crypto::CryptoError;
use tlsgate_record::frame::{ContentType, Header, HEADER_LEN};
use tlsgate_record::session::{Fatal, Received, Session};

/// The largest record body accepted from the client (TLS 1.2's ciphertext limit, RFC 5246 §6.2.3).
const RECORD_LIMIT: usize = 16384 + 2048;
/// The most plaintext sealed into one record (RFC 8446 §5.1).
pub const MAX_PLAINTEXT: usize = 16384;

/// Why the client's side of a full-proxy flow failed.
#[derive(Debug, Error, PartialEq)]
pub enum TlsError {
    #[error("client: not a TLS handshake (first byte {0:#04x})")]
    NotTls(u8),
    #[error("client: bad record header (type {0}, length {1})")]
    BadRecord(u8, usize),
    #[error("client: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("client: {0}")]
    Crypto(#[from] CryptoError),
    /// A rule of the session after the handshake (the alert owed was sent); names its side.
    #[error("{0}")]
    Session(#[from] Fatal),
}

enum State {
    Handshake(Box<Handshake>),
    Records(Box<Session>),
    /// After an error or close_notify: nothing more is read.
    Done,
}

/// What [`TlsEnd::process`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// More client bytes may come.
    Open,
    /// The client sent close_notify: no more plaintext from it.
    Closed,
}

pub struct TlsEnd {
    state: State,
    /// Client bytes not yet taken as whole records.
    input: Vec<u8>,
    /// The first client byte was seen (and was a handshake record's).
    started: bool,
    /// The client sent close_notify: its input is over.
    closed: bool,
    session: Option<SessionInfo>,
}

impl std::fmt::Debug for TlsEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsEnd").field("input", &self.input.len()).field("session", &self.session).finish()
    }
}

impl TlsEnd {
    pub fn new(config: Arc<ServerConfig>) -> Result<TlsEnd, TlsError> {
        Ok(TlsEnd {
            state: State::Handshake(Box::new(Handshake::new(config)?)),
            input: Vec::new(),
            started: false,
            closed: false,
            session: None,
        })
    }

    /// Client bytes held, not yet a whole record: the caller reads more only below its bound.
    pub fn buffered(&self) -> usize {
        self.input.len()
    }

    pub fn feed(&mut self, data: &[u8]) {
        if !matches!(self.state, State::Done) && !self.closed {
            self.input.extend_from_slice(data);
        }
    }

    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Records(_))
    }

    /// The handshake's version, suite and SNI once established, for the session table.
    pub fn session(&self) -> Option<&SessionInfo> {
        self.session.as_ref()
    }

    /// Next record sequence numbers (receive, transmit) once established.
    pub fn record_seqs(&self) -> Option<(u64, u64)> {
        match &self.state {
            State::Records(r) => Some(r.seqs()),
            _ => None,
        }
    }

    /// Takes whole records from the input while `plain` holds less than `plain_cap` bytes:
    /// handshake records to rustls (its answers to `to_client`), then application data opened
    /// into `plain`. On `Err` `to_client` may hold an alert for the client; the end is done.
    pub fn process(
        &mut self,
        to_client: &mut Vec<u8>,
        plain: &mut Vec<u8>,
        plain_cap: usize,
    ) -> Result<Status, TlsError> {
        if self.closed {
            return Ok(Status::Closed);
        }
        let r = self.records(to_client, plain, plain_cap);
        match r {
            Ok(Status::Open) => {}
            // The client will send nothing more; the record layer stays to seal the server's
            // last data and its close_notify.
            Ok(Status::Closed) => {
                self.closed = true;
                self.input = Vec::new();
            }
            Err(_) => {
                self.state = State::Done;
                self.input = Vec::new();
            }
        }
        r
    }

    fn records(
        &mut self,
        to_client: &mut Vec<u8>,
        plain: &mut Vec<u8>,
        plain_cap: usize,
    ) -> Result<Status, TlsError> {
        let mut at = 0;
        let result = loop {
            if matches!(self.state, State::Done) {
                break Ok(Status::Closed);
            }
            // The first record must open a handshake (a ChangeCipherSpec may follow later).
            if let (false, Some(&first)) = (self.started, self.input.first()) {
                if first != ContentType::HANDSHAKE.0 {
                    break Err(TlsError::NotTls(first));
                }
                self.started = true;
            }
            if plain.len() >= plain_cap || self.input.len() - at < HEADER_LEN {
                break Ok(Status::Open);
            }
            let head: [u8; HEADER_LEN] = self.input[at..at + HEADER_LEN].try_into().unwrap();
            let header = Header::parse(&head);
            let len = header.len as usize;
            if !header.content_type.is_known() || header.version >> 8 != 3 || len > RECORD_LIMIT {
                break Err(TlsError::BadRecord(header.content_type.0, len));
            }
            let end = at + HEADER_LEN + len;
            if self.input.len() < end {
                break Ok(Status::Open);
            }
            let step = match &mut self.state {
                State::Handshake(hs) => handshake_record(hs, &self.input[at..end], to_client),
                State::Records(session) => {
                    open_record(session, header, &mut self.input[at + HEADER_LEN..end], to_client, plain)
                }
                State::Done => unreachable!("checked above"),
            };
            at = end;
            match step {
                Ok(Step::Next) => {}
                Ok(Step::Complete) => {
                    if let Err(e) = self.establish() {
                        break Err(e);
                    }
                }
                Ok(Step::Closed) => break Ok(Status::Closed),
                Err(e) => break Err(e),
            }
        };
        self.input.drain(..at.min(self.input.len()));
        result
    }

    fn establish(&mut self) -> Result<(), TlsError> {
        let State::Handshake(hs) = std::mem::replace(&mut self.state, State::Done) else {
            return Ok(());
        };
        // Named as the end-to-end path names them (`TlsFlow`).
        self.session = Some(SessionInfo::of(&hs));
        let (secrets, kernel) = hs.into_keys()?;
        self.state = State::Records(Box::new(Session::from_keys(secrets, kernel)?));
        Ok(())
    }

    /// Seals server plaintext (at most [`MAX_PLAINTEXT`]) as one record for the client.
    pub fn seal(&mut self, plaintext: &[u8], to_client: &mut Vec<u8>) -> Result<(), TlsError> {
        match &mut self.state {
            State::Records(session) => Ok(session.seal(plaintext, to_client)?),
            _ => Ok(()),
        }
    }

    /// Seals close_notify for the client (once the server closed); nothing before the keys exist.
    pub fn close_notify(&mut self, to_client: &mut Vec<u8>) {
        if let State::Records(session) = &mut self.state {
            let _ = session.close(to_client);
        }
    }
}

enum Step {
    Next,
    Complete,
    Closed,
}

fn handshake_record(hs: &mut Handshake, record: &[u8], to_client: &mut Vec<u8>) -> Result<Step, TlsError> {
    match hs.record(record, to_client)? {
        Progress::NeedMore => Ok(Step::Next),
        Progress::Complete => Ok(Step::Complete),
    }
}

fn open_record(
    session: &mut Session,
    header: Header,
    body: &mut [u8],
    to_client: &mut Vec<u8>,
    plain: &mut Vec<u8>,
) -> Result<Step, TlsError> {
    match session.open(header, body, to_client) {
        Ok(Received::Data(r)) => {
            plain.extend_from_slice(&body[r]);
            Ok(Step::Next)
        }
        Ok(Received::Nothing) => Ok(Step::Next),
        Ok(Received::Closed) => Ok(Step::Closed),
        Err(fatal) => {
            session.send_alert(to_client);
            Err(TlsError::Session(fatal))
        }
    }
}

//! What an authenticated record from the peer means after the handshake, and what answers a
//! violation: the post-handshake rules of RFC 8446 (TLS 1.3) and RFC 5246 (TLS 1.2), with no
//! crypto and no I/O, so that every driver (terminate's stream, the inline engine's buffered and
//! cut-through paths) and the fuzzer apply the same ones.
//!
//! The input is a record's outer content type and its decrypted plaintext (TLS 1.3: the whole
//! TLSInnerPlaintext, content type and padding included). The state kept between records is a
//! partial post-handshake message (at most its 4-byte header: the only message followed is the
//! 5-byte KeyUpdate, and a TLS 1.2 ClientHello is discarded as it arrives, counted down; a
//! client also collects a server's NewSessionTicket, for rustls's session cache) and whether the
//! peer sent close_notify. Which messages the peer may send depends on its [`Role`].

use super::alert;
use crate::crypto::Version;
use crate::frame::{ContentType, Header, MAX_CIPHERTEXT_TLS12, MAX_CIPHERTEXT_TLS13, MAX_PLAINTEXT};
use thiserror::Error;

const HS_HELLO_REQUEST: u8 = 0;
const HS_CLIENT_HELLO: u8 = 1;
const HS_NEW_SESSION_TICKET: u8 = 4;
const HS_KEY_UPDATE: u8 = 24;
const HS_HEADER: usize = 4;
/// The longest NewSessionTicket body taken (RFC 8446 §4.6.1: lifetime, age_add, a nonce of up
/// to 255 bytes, a ticket and extensions of up to 2^16-1 each): longer ones are malformed.
const MAX_TICKET: u32 = 4 + 4 + 1 + 255 + 2 + 0xffff + 2 + 0xffff;

/// Which side a failure is down to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The peer (the TLS client) broke a rule or ended the connection with an alert.
    Client,
    /// tlsgate itself (a key schedule failure, a limit of its own).
    Internal,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Internal => "internal",
        })
    }
}

/// Why a session ended. Each names the alert it is answered with ([`Reason::alert`]).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum Reason {
    #[error("sent a record of {len} bytes, over the limit of {limit}")]
    RecordOverflow { len: usize, limit: usize },
    #[error("sent a record of content type {0} after the handshake")]
    UnexpectedType(u8),
    #[error("sent record version {0:#06x}")]
    RecordVersion(u16),
    #[error("sent a record whose tag did not verify (bad record MAC)")]
    BadRecordMac,
    #[error("sent a TLS 1.3 record with no content type (all padding)")]
    NoContentType,
    #[error("sent a zero-length {0} record")]
    Empty(&'static str),
    #[error("sent an alert of {0} bytes")]
    AlertLength(usize),
    #[error("sent an alert of level {0}")]
    AlertLevel(u8),
    #[error("sent fatal alert {}", alert::name(*.0))]
    PeerAlert(u8),
    #[error("sent handshake message type {0} after the handshake")]
    UnexpectedHandshake(u8),
    #[error("sent a KeyUpdate of {0} bytes")]
    KeyUpdateLength(usize),
    #[error("sent a NewSessionTicket of {0} bytes")]
    TicketLength(usize),
    #[error("sent a NewSessionTicket that was refused: {0}")]
    BadTicket(String),
    #[error("sent a KeyUpdate with request_update {0}")]
    KeyUpdateRequest(u8),
    #[error("sent more after a KeyUpdate in the same record")]
    AfterKeyUpdate,
    #[error("sent a record of content type {0} in the middle of a handshake message")]
    Interleaved(u8),
    #[error("sent a record of content type {0} of which part was already released")]
    ControlAfterRelease(u8),
    #[error("exhausted the record sequence number")]
    SeqExhausted,
    #[error("has no more records under its TLS 1.2 key ({0})")]
    TxKeyUsedUp(u64),
    #[error("key schedule: {0}")]
    KeySchedule(String),
    #[error("cannot seal: {0}")]
    Seal(String),
    #[error("wrote after close_notify")]
    WriteAfterClose,
    #[error("refused by tlsgate with alert {}", alert::name(*.0))]
    Refused(u8),
}

impl Reason {
    /// The fatal alert that answers it, if any: none to a peer's own fatal alert (RFC 8446
    /// §6.2: the connection is closed, nothing more is sent), nor when our own sealing failed.
    pub fn alert(&self) -> Option<u8> {
        use alert::*;
        Some(match self {
            // RFC 8446 §5.1, §5.2, §5.4; RFC 5246 §6.2.1–6.2.3.
            Reason::RecordOverflow { .. } => RECORD_OVERFLOW,
            // RFC 8446 §5: an unexpected record type; §5.4: no non-zero octet; §5.1: zero-length
            // Handshake or Alert, interleaving, a message spanning a key change; §4.6.3 and
            // §4: a handshake message a server must not receive after the handshake.
            Reason::UnexpectedType(_)
            | Reason::NoContentType
            | Reason::Empty(_)
            | Reason::UnexpectedHandshake(_)
            | Reason::AfterKeyUpdate
            | Reason::Interleaved(_) => UNEXPECTED_MESSAGE,
            Reason::RecordVersion(_)
            | Reason::AlertLength(_)
            | Reason::KeyUpdateLength(_)
            | Reason::TicketLength(_)
            | Reason::BadTicket(_) => DECODE_ERROR,
            // RFC 8446 §4.6.3: request_update other than 0 or 1.
            Reason::KeyUpdateRequest(_) | Reason::AlertLevel(_) => ILLEGAL_PARAMETER,
            // RFC 8446 §5.2.
            Reason::BadRecordMac => BAD_RECORD_MAC,
            Reason::ControlAfterRelease(_) | Reason::SeqExhausted | Reason::KeySchedule(_) => INTERNAL_ERROR,
            Reason::Refused(d) => *d,
            Reason::PeerAlert(_) | Reason::TxKeyUsedUp(_) | Reason::Seal(_) | Reason::WriteAfterClose => {
                return None
            }
        })
    }

    /// Whose fault it is.
    pub fn side(&self) -> Side {
        match self {
            Reason::ControlAfterRelease(_)
            | Reason::TxKeyUsedUp(_)
            | Reason::KeySchedule(_)
            | Reason::Seal(_)
            | Reason::WriteAfterClose
            | Reason::Refused(_) => Side::Internal,
            _ => Side::Client,
        }
    }
}

/// What one record asked of the session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Application data (possibly empty, RFC 8446 §5.1): where it lies in the plaintext given.
    pub data: Option<std::ops::Range<usize>>,
    /// A KeyUpdate ended in this record (RFC 8446 §4.6.3): the receive key moves on after it;
    /// `Some(true)` when the peer requested ours in return.
    pub key_update: Option<bool>,
    /// TLS 1.2 ClientHellos (or, from a server, HelloRequests: renegotiation attempts) that
    /// ended in this record, each to be answered with a warning no_renegotiation.
    pub renegotiations: u32,
    /// From a TLS 1.3 server: the bodies of the NewSessionTickets that ended in this record.
    pub tickets: Vec<Vec<u8>>,
    /// The peer sent close_notify now or earlier: nothing more from it counts.
    pub closed: bool,
    /// A warning alert that was ignored (TLS 1.2 warnings, user_canceled), for the log.
    pub warning: Option<u8>,
}

/// A post-handshake handshake message in progress across records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Message {
    /// Between messages.
    Idle,
    /// Part of a message header.
    Header { buf: [u8; HS_HEADER], have: usize },
    /// A KeyUpdate's header was read: its 1-byte body is due.
    KeyUpdateBody,
    /// TLS 1.2: the rest of a ClientHello being discarded.
    Skip(u32),
    /// TLS 1.3, from a server: the rest of a NewSessionTicket being collected.
    Ticket(u32),
}

/// Which end of the connection tlsgate is: the messages the peer may send differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The peer is a TLS client (terminate, the inline engine).
    Server,
    /// The peer is a TLS server (originate).
    Client,
}

/// The rules' state for one connection. See the module docs.
#[derive(Clone, Debug)]
pub struct Rules {
    version: Version,
    role: Role,
    message: Message,
    /// A NewSessionTicket's body so far.
    ticket: Vec<u8>,
    peer_closed: bool,
}

impl Rules {
    /// The rules of a server: the peer is a client.
    pub fn new(version: Version) -> Rules {
        Rules::with_role(version, Role::Server)
    }

    pub fn with_role(version: Version, role: Role) -> Rules {
        Rules { version, role, message: Message::Idle, ticket: Vec::new(), peer_closed: false }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Between messages, nothing collected, the peer's stream open: the state
    /// [`Rules::with_role`] starts in, so a parked session can be rebuilt with it.
    pub fn is_fresh(&self) -> bool {
        self.message == Message::Idle && self.ticket.is_empty() && !self.peer_closed
    }

    /// The largest record body accepted (RFC 8446 §5.2: 2^14 + 256; RFC 5246 §6.2.3: 2^14 +
    /// 2048).
    pub fn ciphertext_limit(&self) -> usize {
        match self.version {
            Version::Tls13 => MAX_CIPHERTEXT_TLS13,
            Version::Tls12 => MAX_CIPHERTEXT_TLS12,
        }
    }

    /// A record header, before its body is awaited.
    pub fn header(&self, h: Header) -> Result<(), Reason> {
        let ct = h.content_type;
        let expected = match self.version {
            // RFC 8446 §5: after the handshake every record is protected, outer type
            // application_data; a change_cipher_spec is only tolerated before the peer's
            // Finished, a plaintext alert or handshake never.
            Version::Tls13 => ct == ContentType::APPLICATION_DATA,
            // RFC 5246 §6.2.1; a change_cipher_spec would start a renegotiated session, which
            // is never agreed; heartbeat is never negotiated.
            Version::Tls12 => {
                matches!(ct, ContentType::ALERT | ContentType::HANDSHAKE | ContentType::APPLICATION_DATA)
            }
        };
        if !expected {
            return Err(Reason::UnexpectedType(ct.0));
        }
        // SSL 3.0 and every TLS write major version 3; the exact value is authenticated (it is
        // in the AAD), so a wrong minor fails the tag.
        if h.version >> 8 != 3 {
            return Err(Reason::RecordVersion(h.version));
        }
        if h.len as usize > self.ciphertext_limit() {
            return Err(Reason::RecordOverflow { len: h.len as usize, limit: self.ciphertext_limit() });
        }
        Ok(())
    }

    /// An authenticated record: `outer` is its header's content type, `plain` its decrypted
    /// plaintext (TLS 1.3: TLSInnerPlaintext), less `released` bytes at its start that a
    /// cut-through driver already handed out as application data.
    pub fn record(&mut self, outer: ContentType, plain: &[u8], released: usize) -> Result<Outcome, Reason> {
        // RFC 8446 §6.1: data received after a closure alert is ignored.
        if self.peer_closed {
            return Ok(Outcome { closed: true, ..Outcome::default() });
        }
        let total = released + plain.len();
        let (ct, end) = match self.version {
            Version::Tls13 => {
                // RFC 8446 §5.4: TLSInnerPlaintext of at most 2^14 + 1 octets.
                if total > MAX_PLAINTEXT + 1 {
                    return Err(Reason::RecordOverflow { len: total, limit: MAX_PLAINTEXT + 1 });
                }
                let end = plain.iter().rposition(|&b| b != 0).ok_or(Reason::NoContentType)?;
                (ContentType(plain[end]), end)
            }
            Version::Tls12 => {
                // RFC 5246 §6.2.1 (no compression: TLSCompressed is TLSPlaintext).
                if total > MAX_PLAINTEXT {
                    return Err(Reason::RecordOverflow { len: total, limit: MAX_PLAINTEXT });
                }
                (outer, plain.len())
            }
        };
        let content = &plain[..end];
        if released > 0 && ct != ContentType::APPLICATION_DATA {
            return Err(Reason::ControlAfterRelease(ct.0));
        }
        // RFC 8446 §5.1: handshake messages MUST NOT be interleaved with other record types.
        // (TLS 1.2 allows it, RFC 5246 §6.2.1.)
        if self.version == Version::Tls13 && self.message != Message::Idle && ct != ContentType::HANDSHAKE {
            return Err(Reason::Interleaved(ct.0));
        }
        match ct {
            ContentType::APPLICATION_DATA => Ok(Outcome { data: Some(0..end), ..Outcome::default() }),
            ContentType::ALERT => self.alert(content),
            // RFC 8446 §5.1, RFC 5246 §6.2.1: no zero-length Handshake fragments.
            ContentType::HANDSHAKE if content.is_empty() => Err(Reason::Empty("handshake")),
            ContentType::HANDSHAKE => self.handshake(content),
            other => Err(Reason::UnexpectedType(other.0)),
        }
    }

    fn alert(&mut self, content: &[u8]) -> Result<Outcome, Reason> {
        let [level, description] = match content {
            // RFC 8446 §5.1: Alert records MUST NOT be zero-length.
            [] => return Err(Reason::Empty("alert")),
            [l, d] => [*l, *d],
            // Exactly one two-byte alert per record (RFC 8446 §5.1).
            other => return Err(Reason::AlertLength(other.len())),
        };
        let closed = Outcome { closed: true, ..Outcome::default() };
        let ignored = Outcome { warning: Some(description), ..Outcome::default() };
        match self.version {
            // RFC 8446 §6: the level is ignored; close_notify and user_canceled are closure
            // alerts (§6.1: user_canceled is followed by close_notify), every other alert,
            // unknown ones included, is an error alert.
            Version::Tls13 => match description {
                alert::CLOSE_NOTIFY => {
                    self.peer_closed = true;
                    Ok(closed)
                }
                alert::USER_CANCELED => Ok(ignored),
                d => Err(Reason::PeerAlert(d)),
            },
            // RFC 5246 §7.2: close_notify ends the peer's stream, other warnings carry nothing
            // a relay acts on, fatal alerts end the connection.
            Version::Tls12 => match (level, description) {
                (alert::WARNING | alert::FATAL, alert::CLOSE_NOTIFY) => {
                    self.peer_closed = true;
                    Ok(closed)
                }
                (alert::WARNING, _) => Ok(ignored),
                (alert::FATAL, d) => Err(Reason::PeerAlert(d)),
                (l, _) => Err(Reason::AlertLevel(l)),
            },
        }
    }

    /// Handshake content: messages may be coalesced in a record or fragmented across records
    /// (RFC 8446 §5.1, RFC 5246 §6.2.1), so the message header is assembled byte by byte.
    fn handshake(&mut self, mut rest: &[u8]) -> Result<Outcome, Reason> {
        let mut out = Outcome::default();
        while let Some((&first, tail)) = rest.split_first() {
            match self.message {
                Message::Skip(n) => {
                    let take = (n as usize).min(rest.len());
                    rest = &rest[take..];
                    self.message = match n - take as u32 {
                        0 => {
                            out.renegotiations += 1;
                            Message::Idle
                        }
                        left => Message::Skip(left),
                    };
                }
                Message::Ticket(n) => {
                    let take = (n as usize).min(rest.len());
                    self.ticket.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    self.message = match n - take as u32 {
                        0 => {
                            out.tickets.push(std::mem::take(&mut self.ticket));
                            Message::Idle
                        }
                        left => Message::Ticket(left),
                    };
                }
                Message::KeyUpdateBody => {
                    // RFC 8446 §4.6.3: update_not_requested(0) or update_requested(1).
                    if first > 1 {
                        return Err(Reason::KeyUpdateRequest(first));
                    }
                    // RFC 8446 §5.1: a message preceding a key change must end its record.
                    if !tail.is_empty() {
                        return Err(Reason::AfterKeyUpdate);
                    }
                    self.message = Message::Idle;
                    out.key_update = Some(first == 1);
                    rest = tail;
                }
                Message::Idle | Message::Header { .. } => {
                    let (mut buf, mut have) = match self.message {
                        Message::Header { buf, have } => (buf, have),
                        _ => ([0; HS_HEADER], 0),
                    };
                    let take = (HS_HEADER - have).min(rest.len());
                    buf[have..have + take].copy_from_slice(&rest[..take]);
                    have += take;
                    rest = &rest[take..];
                    self.check_type(buf[0])?;
                    if have < HS_HEADER {
                        self.message = Message::Header { buf, have };
                        continue;
                    }
                    let len = u32::from_be_bytes([0, buf[1], buf[2], buf[3]]);
                    self.message = match buf[0] {
                        HS_KEY_UPDATE if len != 1 => return Err(Reason::KeyUpdateLength(len as usize)),
                        HS_KEY_UPDATE => Message::KeyUpdateBody,
                        HS_NEW_SESSION_TICKET if len > MAX_TICKET => {
                            return Err(Reason::TicketLength(len as usize))
                        }
                        HS_NEW_SESSION_TICKET if len == 0 => {
                            out.tickets.push(Vec::new());
                            Message::Idle
                        }
                        HS_NEW_SESSION_TICKET => Message::Ticket(len),
                        // A ClientHello with no body is malformed, but it is refused anyway.
                        _ if len == 0 => {
                            out.renegotiations += 1;
                            Message::Idle
                        }
                        _ => Message::Skip(len),
                    };
                }
            }
        }
        Ok(out)
    }

    /// The only handshake messages a server accepts after the handshake: TLS 1.3 KeyUpdate (a
    /// client's Certificate, CertificateVerify and Finished only answer a post-handshake
    /// CertificateRequest, which is never sent; RFC 8446 §4.6.2), and in TLS 1.2 a ClientHello,
    /// refused ([`Outcome::renegotiations`]). Anything else, a second TLS 1.3 ClientHello, a
    /// NewSessionTicket or a HelloRequest from the client, is unexpected_message.
    ///
    /// A client accepts from a server: TLS 1.3 KeyUpdate and NewSessionTicket (RFC 8446 §4.6.1;
    /// a post-handshake CertificateRequest only answers the client's post_handshake_auth, never
    /// offered), and in TLS 1.2 a HelloRequest, refused with the same warning (RFC 5246
    /// §7.4.1.1).
    fn check_type(&self, t: u8) -> Result<(), Reason> {
        match (self.role, self.version, t) {
            (_, Version::Tls13, HS_KEY_UPDATE)
            | (Role::Server, Version::Tls12, HS_CLIENT_HELLO)
            | (Role::Client, Version::Tls13, HS_NEW_SESSION_TICKET)
            | (Role::Client, Version::Tls12, HS_HELLO_REQUEST) => Ok(()),
            (_, _, t) => Err(Reason::UnexpectedHandshake(t)),
        }
    }

    /// Bytes of a handshake message held (its header, at most 4).
    pub fn held(&self) -> usize {
        match self.message {
            Message::Header { have, .. } => have,
            Message::Ticket(_) => HS_HEADER + self.ticket.len(),
            _ => 0,
        }
    }
}

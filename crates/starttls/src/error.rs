//! Prologue failures, with the side that misbehaved.

use tlsgate_core::side::Side;

/// A prologue that cannot go on. `side` is the peer at fault: the client for [`crate::ServerSide`]
/// and [`crate::PostgresClientFilter`], the backend (upstream) for [`crate::ClientSide`] and
/// [`crate::GreetingSkip`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{side} {kind}")]
pub struct Error {
    pub side: Side,
    pub kind: ErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("sent TLS before STARTTLS")]
    TlsBeforeStartTls,
    #[error("sent TLS to a plaintext listener")]
    TlsOnPlaintext,
    #[error("sent {0} bytes of plaintext after the STARTTLS exchange (pipelined or injected)")]
    DataAfterStartTls(usize),
    #[error("sent {0} bytes before tlsgate's command (pipelined or injected)")]
    Unsolicited(usize),
    #[error("sent a line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("sent a message of {0} bytes, more than {1}")]
    MessageTooLong(usize, usize),
    #[error("sent {0} commands without STARTTLS, giving up")]
    TooManyBadCommands(usize),
    #[error("sent a malformed prologue: {0}")]
    Malformed(String),
    #[error("refused STARTTLS: {0}")]
    Refused(String),
}

impl Error {
    pub(crate) fn client(kind: ErrorKind) -> Self {
        Error { side: Side::Client, kind }
    }
    pub(crate) fn backend(kind: ErrorKind) -> Self {
        Error { side: Side::Backend, kind }
    }
}

/// A peer's line as printable text for an error message, cut to a sane length.
pub(crate) fn printable(bytes: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    text.trim().to_string()
}

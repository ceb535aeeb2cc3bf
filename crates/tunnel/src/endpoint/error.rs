//! Why a connection ended.

use crate::wire::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    /// The peer broke the protocol; we sent GoAway with `code`.
    #[error("peer broke the tunnel protocol ({code:?}): {what}")]
    Protocol { code: ErrorCode, what: String },
    /// The peer sent GoAway.
    #[error("peer closed the tunnel ({code:?}): {reason}")]
    PeerGoAway { code: ErrorCode, reason: String },
    #[error("no protocol version in common (peer speaks {peer_min}..={peer_max})")]
    VersionMismatch { peer_min: u16, peer_max: u16 },
    /// Nothing heard from the peer for the idle timeout, keepalive pings included.
    #[error("peer silent past the idle timeout")]
    TimedOut,
    /// `Endpoint::close` was called.
    #[error("closed locally ({code:?})")]
    Local { code: ErrorCode },
}

impl ConnectionError {
    pub(crate) fn protocol(code: ErrorCode, what: impl Into<String>) -> Self {
        ConnectionError::Protocol { code, what: what.into() }
    }

    /// The GoAway code we send for it (None: the peer already left).
    pub(crate) fn goaway_code(&self) -> Option<ErrorCode> {
        match self {
            ConnectionError::Protocol { code, .. } => Some(*code),
            ConnectionError::PeerGoAway { .. } => None,
            ConnectionError::VersionMismatch { .. } => Some(ErrorCode::VERSION_MISMATCH),
            ConnectionError::TimedOut => Some(ErrorCode::IDLE_TIMEOUT),
            ConnectionError::Local { code } => Some(*code),
        }
    }
}

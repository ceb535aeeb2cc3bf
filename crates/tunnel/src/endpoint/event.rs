//! What the endpoint tells its driver, one at a time through `poll_event`.

use super::ConnectionError;
use crate::session::SessionId;
use crate::wire::{OpenRc, Protocol, ResetCode};
use crate::Target;

/// Readable and Writable are edge-triggered and coalesced (at most one outstanding per session),
/// so the queue stays bounded by the number of sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The peer's Hello was accepted; `version` is the negotiated protocol version.
    Connected { version: u16 },
    /// The peer asks to open a session: answer with `accept` or `refuse` (gate policy goes here).
    OpenRequest { id: SessionId, protocol: Protocol, target: Target },
    /// Our Open was accepted; data may flow.
    Opened { id: SessionId },
    /// Our Open was refused.
    OpenFailed { id: SessionId, rc: OpenRc, reason: String },
    /// Data arrived on a session whose receive buffer was empty: read until `WouldBlock`.
    Readable { id: SessionId },
    /// Room opened in a send buffer after a write was cut short.
    Writable { id: SessionId },
    /// The peer will send no more data (Close write); `read` returns 0 once the buffer drains.
    PeerFinished { id: SessionId },
    /// The peer stopped reading (Close read): our unsent data was dropped, stop writing.
    WriteStopped { id: SessionId },
    /// The session ended abruptly (End, Reset, abortive Close both, or reaped when idle).
    Reset { id: SessionId, code: ResetCode, reason: String, remote: bool },
    /// A datagram arrived on a UDP session whose queue was empty.
    DatagramReadable { id: SessionId },
    /// The session is gone from both ends; its id may be reused by its opener.
    Released { id: SessionId },
    /// The connection is over; nothing more will happen. Sent once.
    ConnectionClosed { error: ConnectionError },
}

//! The tunnel's records on the byte stream: an 8-byte header (length, type, session, all
//! big-endian, network order) followed by a type-specific payload.
//!
//! [`Header`] is a zero-copy view with named field ranges; [`Frame`] is the parsed form, which
//! borrows data from the input; [`decode`] parses one frame from the front of a buffer and says
//! `Incomplete` when more bytes are needed. Wire enums are open newtypes so unknown values parse.

mod codes;
mod decode;
mod frame;
mod header;
mod reader;

pub use codes::{Direction, ErrorCode, FrameType, OpenRc, Protocol, ResetCode};
pub use decode::{decode, DecodeError};
pub use frame::{reason_text, Frame, Hello, Malformed, MAX_REASON_LEN};
pub use header::{Header, HEADER_LEN};

/// Version of the tunnel protocol this crate speaks (negotiated by Hello).
pub const VERSION: u16 = 1;
/// First four bytes of every Hello payload, so a stray peer (plain HTTP, another protocol) is
/// rejected on its first record instead of being misread.
pub const HELLO_MAGIC: [u8; 4] = *b"TLGT";
/// Default largest payload a frame may carry; the peer announces its own in Hello.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 64 * 1024;
/// Smallest max-frame-length a peer may announce (room for the largest control frame).
pub const MIN_MAX_FRAME_LEN: u32 = 1024;
/// Session 0 carries connection-level frames (Hello, Ping, Pong, GoAway).
pub const CONNECTION_SESSION: u16 = 0;

//! Parsed records and their encoding. Payload layouts are in docs/tunnel-protocol.md.

use super::reader::{put_target, Reader};
use super::{Direction, ErrorCode, FrameType, Header, OpenRc, Protocol, ResetCode, HEADER_LEN};
use super::{CONNECTION_SESSION, HELLO_MAGIC};
use crate::Target;

/// Longest reason we put in a record; longer ones are cut (readers decode lossily, so a cut
/// inside a UTF-8 sequence shows as U+FFFD).
pub const MAX_REASON_LEN: usize = 256;

/// The first record each side sends: version range, role and the largest payload it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub min_version: u16,
    pub max_version: u16,
    /// 0 = portal, 1 = gate; two ends with the same role would allocate colliding session ids.
    pub role: u8,
    /// Largest payload (bytes after the header) the sender accepts.
    pub max_frame_len: u32,
}

/// One record. Data, reasons and unknown payloads borrow from the decoded buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    Hello(Hello),
    Ping {
        payload: u64,
    },
    Pong {
        payload: u64,
    },
    GoAway {
        code: ErrorCode,
        reason: &'a [u8],
    },
    Open {
        session: u16,
        protocol: Protocol,
        window: u32,
        target: Target,
    },
    OpenReply {
        session: u16,
        rc: OpenRc,
        window: u32,
        reason: &'a [u8],
    },
    Send {
        session: u16,
        data: &'a [u8],
    },
    Close {
        session: u16,
        direction: Direction,
    },
    SendUdp {
        session: u16,
        src: Target,
        dst: Target,
        data: &'a [u8],
    },
    Ack {
        session: u16,
        size: u32,
    },
    End {
        session: u16,
        code: ResetCode,
        reason: &'a [u8],
    },
    Reset {
        session: u16,
        code: ResetCode,
        reason: &'a [u8],
    },
    /// A type this version does not know; skipped by the endpoint (room for extensions).
    Unknown {
        ty: FrameType,
        session: u16,
        payload: &'a [u8],
    },
}

/// Why a payload did not parse: names the record type and what was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed {
    pub ty: FrameType,
    pub what: &'static str,
}

impl<'a> Frame<'a> {
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Hello(_) => FrameType::HELLO,
            Frame::Ping { .. } => FrameType::PING,
            Frame::Pong { .. } => FrameType::PONG,
            Frame::GoAway { .. } => FrameType::GOAWAY,
            Frame::Open { .. } => FrameType::OPEN,
            Frame::OpenReply { .. } => FrameType::OPEN_REPLY,
            Frame::Send { .. } => FrameType::SEND,
            Frame::Close { .. } => FrameType::CLOSE,
            Frame::SendUdp { .. } => FrameType::SEND_UDP,
            Frame::Ack { .. } => FrameType::ACK,
            Frame::End { .. } => FrameType::END,
            Frame::Reset { .. } => FrameType::RESET,
            Frame::Unknown { ty, .. } => *ty,
        }
    }

    pub fn session(&self) -> u16 {
        match self {
            Frame::Hello(_) | Frame::Ping { .. } | Frame::Pong { .. } | Frame::GoAway { .. } => {
                CONNECTION_SESSION
            }
            Frame::Open { session, .. }
            | Frame::OpenReply { session, .. }
            | Frame::Send { session, .. }
            | Frame::Close { session, .. }
            | Frame::SendUdp { session, .. }
            | Frame::Ack { session, .. }
            | Frame::End { session, .. }
            | Frame::Reset { session, .. }
            | Frame::Unknown { session, .. } => *session,
        }
    }

    /// Parses a payload of type `ty` on `session`. Trailing bytes after the fixed fields of
    /// Hello are ignored (room to grow); everywhere else the layout must match exactly.
    pub fn parse(ty: FrameType, session: u16, payload: &'a [u8]) -> Result<Self, Malformed> {
        let bad = |what| Malformed { ty, what };
        let connection_level =
            matches!(ty, FrameType::HELLO | FrameType::PING | FrameType::PONG | FrameType::GOAWAY);
        let known = connection_level || ty.name().is_some();
        if known && connection_level != (session == CONNECTION_SESSION) {
            return Err(bad(if connection_level {
                "connection-level record on a session id"
            } else {
                "session record on session 0"
            }));
        }
        let mut r = Reader::new(payload);
        let frame = match ty {
            FrameType::HELLO => {
                let magic = r.array::<4>().ok_or(bad("short"))?;
                if magic != HELLO_MAGIC {
                    return Err(bad("bad magic"));
                }
                let hello = Hello {
                    min_version: r.u16().ok_or(bad("short"))?,
                    max_version: r.u16().ok_or(bad("short"))?,
                    role: r.u8().ok_or(bad("short"))?,
                    max_frame_len: r.u32().ok_or(bad("short"))?,
                };
                r.rest();
                Frame::Hello(hello)
            }
            FrameType::PING => Frame::Ping { payload: r.u64().ok_or(bad("short"))? },
            FrameType::PONG => Frame::Pong { payload: r.u64().ok_or(bad("short"))? },
            FrameType::GOAWAY => {
                Frame::GoAway { code: ErrorCode(r.u16().ok_or(bad("short"))?), reason: r.rest() }
            }
            FrameType::OPEN => Frame::Open {
                session,
                protocol: Protocol(r.u16().ok_or(bad("short"))?),
                window: r.u32().ok_or(bad("short"))?,
                target: r.target().ok_or(bad("bad target"))?,
            },
            FrameType::OPEN_REPLY => Frame::OpenReply {
                session,
                rc: OpenRc(r.u16().ok_or(bad("short"))?),
                window: r.u32().ok_or(bad("short"))?,
                reason: r.rest(),
            },
            FrameType::SEND => Frame::Send { session, data: r.rest() },
            FrameType::CLOSE => Frame::Close { session, direction: Direction(r.u16().ok_or(bad("short"))?) },
            FrameType::SEND_UDP => Frame::SendUdp {
                session,
                src: r.target().ok_or(bad("bad source"))?,
                dst: r.target().ok_or(bad("bad destination"))?,
                data: r.rest(),
            },
            FrameType::ACK => Frame::Ack { session, size: r.u32().ok_or(bad("short"))? },
            FrameType::END | FrameType::RESET => {
                let code = ResetCode(r.u16().ok_or(bad("short"))?);
                let reason = r.rest();
                if ty == FrameType::END {
                    Frame::End { session, code, reason }
                } else {
                    Frame::Reset { session, code, reason }
                }
            }
            _ => Frame::Unknown { ty, session, payload: r.rest() },
        };
        if !r.rest().is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(frame)
    }

    /// Appends header and payload to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0u8; HEADER_LEN]);
        self.encode_payload(out);
        let len = (out.len() - start - HEADER_LEN) as u32;
        let mut h =
            Header::new_checked(&mut out[start..start + HEADER_LEN]).expect("header room reserved above");
        h.set_length(len);
        h.set_frame_type(self.frame_type());
        h.set_session(self.session());
    }

    fn encode_payload(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Hello(h) => {
                out.extend_from_slice(&HELLO_MAGIC);
                out.extend_from_slice(&h.min_version.to_be_bytes());
                out.extend_from_slice(&h.max_version.to_be_bytes());
                out.push(h.role);
                out.extend_from_slice(&h.max_frame_len.to_be_bytes());
            }
            Frame::Ping { payload } | Frame::Pong { payload } => {
                out.extend_from_slice(&payload.to_be_bytes())
            }
            Frame::GoAway { code, reason } => {
                out.extend_from_slice(&code.0.to_be_bytes());
                put_reason(out, reason);
            }
            Frame::Open { protocol, window, target, .. } => {
                out.extend_from_slice(&protocol.0.to_be_bytes());
                out.extend_from_slice(&window.to_be_bytes());
                put_target(out, target);
            }
            Frame::OpenReply { rc, window, reason, .. } => {
                out.extend_from_slice(&rc.0.to_be_bytes());
                out.extend_from_slice(&window.to_be_bytes());
                put_reason(out, reason);
            }
            Frame::Send { data, .. } => out.extend_from_slice(data),
            Frame::Close { direction, .. } => out.extend_from_slice(&direction.0.to_be_bytes()),
            Frame::SendUdp { src, dst, data, .. } => {
                put_target(out, src);
                put_target(out, dst);
                out.extend_from_slice(data);
            }
            Frame::Ack { size, .. } => out.extend_from_slice(&size.to_be_bytes()),
            Frame::End { code, reason, .. } | Frame::Reset { code, reason, .. } => {
                out.extend_from_slice(&code.0.to_be_bytes());
                put_reason(out, reason);
            }
            Frame::Unknown { payload, .. } => out.extend_from_slice(payload),
        }
    }
}

fn put_reason(out: &mut Vec<u8>, reason: &[u8]) {
    out.extend_from_slice(&reason[..reason.len().min(MAX_REASON_LEN)]);
}

/// A reason field as text for logs and events: lossy UTF-8, cut to [`MAX_REASON_LEN`].
pub fn reason_text(reason: &[u8]) -> String {
    String::from_utf8_lossy(&reason[..reason.len().min(MAX_REASON_LEN)]).into_owned()
}

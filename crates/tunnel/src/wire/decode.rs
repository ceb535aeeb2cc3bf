//! Incremental decoding: one frame from the front of a buffer, or how many bytes are missing.

use super::frame::Malformed;
use super::{Frame, FrameType, Header, HEADER_LEN};

/// Why [`decode`] returned no frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not an error: the buffer ends inside a frame; `needed` more bytes complete it.
    #[error("incomplete frame: {needed} more bytes needed")]
    Incomplete { needed: usize },
    /// The header announces a payload longer than the receiver accepts.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLong { len: u32, max: u32 },
    /// The payload does not have the layout of its type.
    #[error("malformed {:?} record: {}", .0.ty, .0.what)]
    Malformed(Malformed),
}

/// Parses the frame at the start of `buf`, returning it and the bytes it used.
///
/// The length is checked against `max_len` as soon as the header is in, so a peer cannot make us
/// buffer a huge frame before refusing it.
pub fn decode(buf: &[u8], max_len: u32) -> Result<(Frame<'_>, usize), DecodeError> {
    let header =
        Header::new_checked(buf).ok_or_else(|| DecodeError::Incomplete { needed: HEADER_LEN - buf.len() })?;
    let len = header.length();
    if len > max_len {
        return Err(DecodeError::TooLong { len, max: max_len });
    }
    let total = HEADER_LEN + len as usize;
    if buf.len() < total {
        return Err(DecodeError::Incomplete { needed: total - buf.len() });
    }
    let ty: FrameType = header.frame_type();
    let frame =
        Frame::parse(ty, header.session(), &buf[HEADER_LEN..total]).map_err(DecodeError::Malformed)?;
    Ok((frame, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Direction, ErrorCode, Hello, OpenRc, Protocol, ResetCode};
    use crate::Target;

    fn all_frames() -> Vec<Frame<'static>> {
        vec![
            Frame::Hello(Hello { min_version: 1, max_version: 3, role: 1, max_frame_len: 4096 }),
            Frame::Ping { payload: 7 },
            Frame::Pong { payload: u64::MAX },
            Frame::GoAway { code: ErrorCode::FLOW_CONTROL, reason: b"too much" },
            Frame::Open {
                session: 1,
                protocol: Protocol::TCP,
                window: 65536,
                target: Target::name("db.corp.example", 5432).unwrap(),
            },
            Frame::Open {
                session: 3,
                protocol: Protocol::UDP,
                window: 0,
                target: Target::ip("2001:db8::1".parse::<std::net::IpAddr>().unwrap(), 53),
            },
            Frame::OpenReply { session: 1, rc: OpenRc::REFUSED_BY_POLICY, window: 0, reason: b"no" },
            Frame::Send { session: 2, data: b"hello" },
            Frame::Send { session: 2, data: b"" },
            Frame::Close { session: 2, direction: Direction::WRITE },
            Frame::SendUdp {
                session: 5,
                src: Target::ip([127, 0, 0, 1], 5353),
                dst: Target::name("ns.example", 53).unwrap(),
                data: b"\x12\x34query",
            },
            Frame::Ack { session: 9, size: 123_456 },
            Frame::End { session: 9, code: ResetCode::NONE, reason: b"bye" },
            Frame::Reset { session: 9, code: ResetCode::IO_ERROR, reason: b"" },
            Frame::Unknown { ty: FrameType(0x4242), session: 4, payload: b"future" },
        ]
    }

    #[test]
    fn every_frame_round_trips_and_concatenates() {
        let frames = all_frames();
        let mut buf = Vec::new();
        for f in &frames {
            f.encode(&mut buf);
        }
        let mut rest = &buf[..];
        for f in &frames {
            let (got, used) = decode(rest, 1 << 20).unwrap();
            assert_eq!(&got, f);
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn every_prefix_is_incomplete_with_the_exact_shortfall() {
        let mut buf = Vec::new();
        Frame::Send { session: 2, data: b"0123456789" }.encode(&mut buf);
        for cut in 0..buf.len() {
            let needed = if cut < HEADER_LEN { HEADER_LEN - cut } else { buf.len() - cut };
            assert_eq!(decode(&buf[..cut], 100), Err(DecodeError::Incomplete { needed }));
        }
    }

    #[test]
    fn oversized_is_refused_from_the_header_alone() {
        let header = [0, 1, 0, 1, 0, 3, 0, 1]; // 65537-byte Send, no payload present yet
        assert_eq!(decode(&header, 65536), Err(DecodeError::TooLong { len: 65537, max: 65536 }));
    }

    #[test]
    fn malformed_payloads_name_the_problem() {
        let cases: &[(&[u8], &str)] = &[
            (&[0, 0, 0, 1, 0, 5, 0, 1, 0], "short"), // Ack with 1 byte
            (&[0, 0, 0, 2, 0, 3, 0, 0, 1, 2], "session record on session 0"),
            (&[0, 0, 0, 8, 1, 1, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0], "connection-level record on a session id"),
            (&[0, 0, 0, 3, 0, 2, 0, 1, 0, 1, 9], "trailing bytes"),
            (&[0, 0, 0, 9, 0, 1, 0, 1, 0, 6, 0, 0, 0, 0, 9, 0, 0], "bad target"),
            (&[0, 0, 0, 4, 1, 0, 0, 0, b'H', b'T', b'T', b'P'], "bad magic"),
        ];
        for (raw, what) in cases {
            match decode(raw, 1024) {
                Err(DecodeError::Malformed(m)) => assert_eq!(m.what, *what, "{raw:?}"),
                other => panic!("{raw:?}: expected Malformed({what}), got {other:?}"),
            }
        }
    }
}

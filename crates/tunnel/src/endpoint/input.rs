//! Bytes from the peer: framing, Hello, Open, and records dispatched to their sessions.

use super::{violation, ConnectionError, Endpoint, Event, Peer};
use crate::session::{Datagram, Session, SessionId, Violation};
use crate::wire::{self, decode, reason_text, DecodeError, ErrorCode, Frame, Hello, OpenRc, Protocol};
use crate::Target;
use std::collections::VecDeque;
use std::time::Instant;

impl Endpoint {
    /// Feeds bytes received from the peer. On a protocol breach the connection is closed (a
    /// GoAway is queued for `poll_transmit`) and the error returned; later calls return it again.
    pub fn handle_input(&mut self, now: Instant, mut data: &[u8]) -> Result<(), ConnectionError> {
        if let Some(e) = &self.closed {
            return Err(e.clone());
        }
        if !data.is_empty() {
            self.last_rx = now;
            self.ping_outstanding = false;
        }
        // Frames are decoded where they lie in `data`; only a frame cut by the end of a call is
        // copied, into `rx`, which holds at most one maximal frame (the header's length is
        // checked before its body is awaited), so input size never drives memory.
        let mut rx = std::mem::take(&mut self.rx);
        let result: Result<(), ConnectionError> = (|| {
            while !rx.is_empty() {
                let (used, needed) = self.frames(now, &rx)?;
                if used > 0 {
                    // The held frame is complete: it was topped up with exactly what it needed.
                    rx.clear();
                    break;
                }
                if data.is_empty() || self.closed.is_some() {
                    return Ok(());
                }
                let take = needed.min(data.len());
                rx.extend_from_slice(&data[..take]);
                data = &data[take..];
            }
            if self.closed.is_some() {
                return Ok(());
            }
            let (used, _) = self.frames(now, data)?;
            if self.closed.is_none() {
                rx.extend_from_slice(&data[used..]);
            }
            Ok(())
        })();
        self.rx = rx;
        if let Err(e) = result {
            self.fail(e.clone());
            return Err(e);
        }
        match &self.closed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Handles the whole frames at the start of `buf`. Stops at an incomplete frame, a breach or
    /// the connection's close; returns the bytes the frames took and the bytes the incomplete
    /// frame still needs (0 when closed).
    fn frames(&mut self, now: Instant, buf: &[u8]) -> Result<(usize, usize), ConnectionError> {
        let mut used = 0;
        while self.closed.is_none() {
            match decode(&buf[used..], self.config.max_frame_len) {
                Ok((frame, n)) => {
                    used += n;
                    self.stats.frames_in += 1;
                    self.handle_frame(now, frame)?;
                }
                Err(DecodeError::Incomplete { needed }) => return Ok((used, needed)),
                Err(DecodeError::TooLong { len, max }) => {
                    return Err(ConnectionError::protocol(
                        ErrorCode::FRAME_TOO_LARGE,
                        format!("record of {len} bytes, limit {max}"),
                    ))
                }
                Err(e @ DecodeError::Malformed(_)) => {
                    return Err(ConnectionError::protocol(ErrorCode::PROTOCOL_ERROR, e.to_string()))
                }
            }
        }
        Ok((used, 0))
    }

    fn handle_frame(&mut self, now: Instant, frame: Frame<'_>) -> Result<(), ConnectionError> {
        let Some(_) = self.peer else {
            return match frame {
                Frame::Hello(h) => self.on_hello(h),
                other => Err(ConnectionError::protocol(
                    ErrorCode::PROTOCOL_ERROR,
                    format!("first record must be Hello, got {:?}", other.frame_type()),
                )),
            };
        };
        let id = frame.session();
        let mut ev = std::mem::take(&mut self.events);
        let result = match frame {
            Frame::Hello(_) => Err(violation("second Hello")),
            Frame::Ping { payload } => {
                self.pong_to_send = Some(payload);
                Ok(())
            }
            Frame::Pong { .. } => Ok(()),
            Frame::GoAway { code, reason } => {
                self.fail(ConnectionError::PeerGoAway { code, reason: reason_text(reason) });
                Ok(())
            }
            Frame::Open { session, protocol, window, target } => {
                self.on_open(now, session, protocol, window, target, &mut ev)
            }
            Frame::Unknown { .. } => {
                self.stats.ignored += 1;
                Ok(())
            }
            frame => self.on_session_frame(now, frame, &mut ev),
        };
        ev.append(&mut self.events);
        self.events = ev;
        if result.is_ok() {
            self.release_if_done(id);
        }
        result
    }

    fn on_hello(&mut self, h: Hello) -> Result<(), ConnectionError> {
        if h.role > 1 {
            return Err(violation("unknown role in Hello"));
        }
        if h.role == self.config.role.wire() {
            return Err(violation("both ends claim the same role"));
        }
        if h.min_version > wire::VERSION || h.max_version < wire::VERSION {
            return Err(ConnectionError::VersionMismatch {
                peer_min: h.min_version,
                peer_max: h.max_version,
            });
        }
        if h.max_frame_len < wire::MIN_MAX_FRAME_LEN {
            return Err(violation("peer's max frame length is below the minimum"));
        }
        self.peer = Some(Peer { max_frame_len: h.max_frame_len });
        self.version = wire::VERSION;
        self.events.push_back(Event::Connected { version: self.version });
        Ok(())
    }

    fn on_open(
        &mut self,
        now: Instant,
        id: SessionId,
        protocol: Protocol,
        window: u32,
        target: Target,
        ev: &mut VecDeque<Event>,
    ) -> Result<(), ConnectionError> {
        if id % 2 == self.config.role.id_parity() {
            return Err(violation("Open with an id from our half of the id space"));
        }
        if self.sessions.contains_key(&id) {
            return Err(violation("Open for a session id still in use"));
        }
        let refusal = if protocol != Protocol::TCP && protocol != Protocol::UDP {
            Some((OpenRc::UNSUPPORTED, "unsupported protocol"))
        } else if self.sessions.len() >= self.config.max_sessions {
            Some((OpenRc::TOO_MANY_SESSIONS, "session limit reached"))
        } else {
            None
        };
        if let Some((rc, why)) = refusal {
            if self.refusals.len() >= self.config.max_sessions {
                return Err(violation("Open flood: refusals not being read"));
            }
            self.stats.opens_refused += 1;
            self.refusals.push_back((id, rc, why));
            return Ok(());
        }
        let limits = self.limits();
        self.sessions.insert(id, Session::incoming(id, protocol, window, limits, now));
        ev.push_back(Event::OpenRequest { id, protocol, target });
        Ok(())
    }

    fn on_session_frame(
        &mut self,
        now: Instant,
        frame: Frame<'_>,
        ev: &mut VecDeque<Event>,
    ) -> Result<(), ConnectionError> {
        let id = frame.session();
        let Some(s) = self.sessions.get_mut(&id) else {
            // Terminals for a session we refused or already released are harmless leftovers;
            // anything else names a session that never existed.
            return match frame {
                Frame::Close { .. } | Frame::End { .. } | Frame::Reset { .. } => {
                    self.stats.ignored += 1;
                    Ok(())
                }
                other => Err(violation(&format!("{:?} for unknown session {id}", other.frame_type()))),
            };
        };
        s.last_activity = now;
        let r: Result<(), Violation> = match frame {
            Frame::OpenReply { rc, window, reason, .. } => s.on_open_reply(rc, window, reason, ev),
            Frame::Send { data, .. } => s.on_send(data, ev, &mut self.spent),
            Frame::Close { direction, .. } => s.on_close(direction, ev),
            Frame::SendUdp { src, dst, data, .. } => {
                s.on_send_udp(Datagram { src, dst, data: data.to_vec() }, ev)
            }
            Frame::Ack { size, .. } => s.on_ack(size),
            Frame::End { code, reason, .. } => s.on_end_or_reset(true, code, reason, ev),
            Frame::Reset { code, reason, .. } => s.on_end_or_reset(false, code, reason, ev),
            _ => Ok(()),
        };
        r.map_err(|v| ConnectionError::protocol(v.code, format!("session {id}: {}", v.what)))
    }
}

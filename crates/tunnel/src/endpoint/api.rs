//! Calls from the application: open, accept/refuse, read/write, half-close, reset, datagrams.

use super::Endpoint;
use crate::session::{Datagram, Session, SessionError, SessionId};
use crate::wire::{self, ErrorCode, OpenRc, Protocol, ResetCode};
use crate::{ConnectionError, Target};
use std::time::Instant;

impl Endpoint {
    /// Opens a session to `target`; `Event::Opened` or `Event::OpenFailed` follows.
    pub fn open(
        &mut self,
        now: Instant,
        protocol: Protocol,
        target: Target,
    ) -> Result<SessionId, SessionError> {
        if self.closed.is_some() {
            return Err(SessionError::ConnectionClosed);
        }
        if protocol != Protocol::TCP && protocol != Protocol::UDP {
            return Err(SessionError::WrongProtocol);
        }
        if self.sessions.len() >= self.config.max_sessions {
            return Err(SessionError::TooManySessions);
        }
        let id = self.allocate_id()?;
        let limits = self.limits();
        self.sessions.insert(id, Session::outgoing(id, protocol, target, limits, now));
        Ok(id)
    }

    /// Next free id of our parity, never 0; ids return to the pool only when released.
    fn allocate_id(&mut self) -> Result<SessionId, SessionError> {
        for _ in 0..=u16::MAX / 2 {
            let id = self.next_id;
            self.next_id = match id.checked_add(2) {
                Some(n) => n,
                None => 2 - self.config.role.id_parity(),
            };
            if id != 0 && !self.sessions.contains_key(&id) {
                return Ok(id);
            }
        }
        Err(SessionError::IdsExhausted)
    }

    fn session(&mut self, now: Instant, id: SessionId) -> Result<&mut Session, SessionError> {
        if self.closed.is_some() {
            return Err(SessionError::ConnectionClosed);
        }
        let s = self.sessions.get_mut(&id).ok_or(SessionError::UnknownSession)?;
        s.last_activity = now;
        Ok(s)
    }

    /// Accepts a session announced by `Event::OpenRequest`.
    pub fn accept(&mut self, now: Instant, id: SessionId) -> Result<(), SessionError> {
        self.session(now, id)?.accept()
    }

    /// Refuses a session announced by `Event::OpenRequest` (policy, failed connect, ...).
    pub fn refuse(
        &mut self,
        now: Instant,
        id: SessionId,
        rc: OpenRc,
        reason: &str,
    ) -> Result<(), SessionError> {
        self.session(now, id)?.refuse(rc, reason)
    }

    /// Queues bytes; returns how many fit (`WouldBlock` if none did; `Writable` follows).
    pub fn write(&mut self, now: Instant, id: SessionId, data: &[u8]) -> Result<usize, SessionError> {
        self.session(now, id)?.write(data)
    }

    /// As [`Endpoint::write`] for a buffer the caller gives up: taken whole (not copied) when all
    /// of it fits; what was not taken stays in `data`.
    pub fn write_vec(
        &mut self,
        now: Instant,
        id: SessionId,
        data: &mut Vec<u8>,
    ) -> Result<usize, SessionError> {
        self.session(now, id)?.write_vec(data)
    }

    /// Reads buffered bytes; `Ok(0)` for a non-empty `buf` is end of stream.
    pub fn read(&mut self, now: Instant, id: SessionId, buf: &mut [u8]) -> Result<usize, SessionError> {
        self.session(now, id)?.read(buf)
    }

    /// As [`Endpoint::read`], appending up to `max` bytes to `out`: an empty `out` is swapped
    /// for the session's first receive buffer when that holds no more than `max` (no copy),
    /// else the bytes are copied.
    pub fn read_vec(
        &mut self,
        now: Instant,
        id: SessionId,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<usize, SessionError> {
        if self.closed.is_some() {
            return Err(SessionError::ConnectionClosed);
        }
        let s = self.sessions.get_mut(&id).ok_or(SessionError::UnknownSession)?;
        s.last_activity = now;
        // The buffer `out` held, when it took one of the session's whole, is kept for the
        // driver (`take_spent_buffer`) or the next received bytes.
        s.read_vec(max, out, &mut self.spent)
    }

    /// Half-close: no more data from us (Close write after what is buffered).
    pub fn finish(&mut self, now: Instant, id: SessionId) -> Result<(), SessionError> {
        self.session(now, id)?.finish()
    }

    /// We will not read this session any more (Close read); the peer stops writing.
    pub fn stop_reading(&mut self, now: Instant, id: SessionId) -> Result<(), SessionError> {
        self.session(now, id)?.stop_reading()
    }

    /// Abortive close with Reset: queued data in both directions is dropped.
    pub fn reset(
        &mut self,
        now: Instant,
        id: SessionId,
        code: ResetCode,
        reason: &str,
    ) -> Result<(), SessionError> {
        self.session(now, id)?;
        self.abort(id, code, reason, false);
        Ok(())
    }

    /// Abortive close with End: both directions at once, with a reason.
    pub fn end(
        &mut self,
        now: Instant,
        id: SessionId,
        code: ResetCode,
        reason: &str,
    ) -> Result<(), SessionError> {
        self.session(now, id)?;
        self.abort(id, code, reason, true);
        Ok(())
    }

    pub fn send_datagram(
        &mut self,
        now: Instant,
        id: SessionId,
        src: Target,
        dst: Target,
        data: &[u8],
    ) -> Result<(), SessionError> {
        let max = self.peer.map_or(wire::MIN_MAX_FRAME_LEN, |p| p.max_frame_len) as usize;
        self.session(now, id)?.send_datagram(Datagram { src, dst, data: data.to_vec() }, max)
    }

    pub fn recv_datagram(&mut self, now: Instant, id: SessionId) -> Result<Option<Datagram>, SessionError> {
        Ok(self.session(now, id)?.recv_datagram())
    }

    /// Closes the whole connection with GoAway.
    pub fn close(&mut self, code: ErrorCode) {
        self.fail(ConnectionError::Local { code });
    }
}

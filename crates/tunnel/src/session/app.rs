//! Calls from the application: accept or refuse, read, write, half-close, reset, datagrams.

use super::{Datagram, ReadSide, Session, SessionError, Terminal, WriteSide};
use crate::wire::{OpenRc, Protocol, ResetCode};

impl Session {
    pub fn accept(&mut self) -> Result<(), SessionError> {
        if !self.awaiting_decision {
            return Err(SessionError::NotOpen);
        }
        self.awaiting_decision = false;
        self.established = true;
        self.reply_to_send = true;
        Ok(())
    }

    pub fn refuse(&mut self, rc: OpenRc, reason: &str) -> Result<(), SessionError> {
        if !self.awaiting_decision {
            return Err(SessionError::NotOpen);
        }
        self.awaiting_decision = false;
        // A refusal ends the session for both ends: the opener sends no terminal in return.
        self.refused = true;
        self.terminal_to_send = Some(Terminal::Refuse(rc, reason.to_string()));
        Ok(())
    }

    pub fn write(&mut self, data: &[u8]) -> Result<usize, SessionError> {
        self.check_stream()?;
        if self.write != WriteSide::Open || self.terminal_sent || self.terminal_to_send.is_some() {
            return Err(SessionError::Closed);
        }
        let n = self.send.write(data);
        if n < data.len() {
            self.want_writable = true;
            self.want_room = 1;
        }
        if n == 0 && !data.is_empty() {
            return Err(SessionError::WouldBlock);
        }
        Ok(n)
    }

    /// As `write`, taking `data`'s buffer when all of it fits; the rest stays in `data`.
    pub fn write_vec(&mut self, data: &mut Vec<u8>) -> Result<usize, SessionError> {
        self.check_stream()?;
        if self.write != WriteSide::Open || self.terminal_sent || self.terminal_to_send.is_some() {
            return Err(SessionError::Closed);
        }
        let len = data.len();
        let n = self.send.write_vec(data);
        if n < len {
            self.want_writable = true;
            // A buffer refused whole is worth retrying only once it fits.
            self.want_room = if n == 0 { len.min(self.send.cap()) } else { 1 };
        }
        if n == 0 && len > 0 {
            return Err(SessionError::WouldBlock);
        }
        Ok(n)
    }

    /// Ok(0) for a non-empty `buf` means end of stream.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, SessionError> {
        self.check_stream()?;
        if self.recv.is_empty() {
            return match self.read {
                ReadSide::Open if !self.terminal_received => Err(SessionError::WouldBlock),
                ReadSide::Open | ReadSide::Finished => Ok(0),
                ReadSide::Stopped => Err(SessionError::Closed),
            };
        }
        Ok(self.recv.read(buf))
    }

    /// As `read`, appending up to `max` bytes to `out`.
    /// A buffer `out` gave up (it took one of ours whole) goes to `spare`.
    pub fn read_vec(
        &mut self,
        max: usize,
        out: &mut Vec<u8>,
        spare: &mut Vec<Vec<u8>>,
    ) -> Result<usize, SessionError> {
        if self.recv.is_empty() {
            return self.read(&mut []);
        }
        Ok(self.recv.read_vec(max, out, spare))
    }

    /// Local end of stream: Close(write) follows the data already written.
    pub fn finish(&mut self) -> Result<(), SessionError> {
        match self.write {
            WriteSide::Open => {
                self.write = WriteSide::Finishing;
                Ok(())
            }
            WriteSide::Finishing | WriteSide::Finished => Ok(()),
            WriteSide::Stopped => Err(SessionError::Closed),
        }
    }

    /// We will read no more: buffered input is dropped and the peer is told to stop writing.
    pub fn stop_reading(&mut self) -> Result<(), SessionError> {
        self.check_stream()?;
        if self.read == ReadSide::Open {
            self.read = ReadSide::Stopped;
            self.close_read_to_send = true;
        }
        self.recv.clear();
        Ok(())
    }

    /// Abortive close (Reset, or End when `end`); a session not yet accepted is refused instead.
    pub fn reset(&mut self, code: ResetCode, reason: &str, end: bool) {
        if self.terminal_sent || self.terminal_to_send.is_some() {
            return;
        }
        self.discard();
        self.terminal_to_send = Some(if self.awaiting_decision {
            self.awaiting_decision = false;
            self.refused = true;
            Terminal::Refuse(OpenRc::CANCELLED, reason.to_string())
        } else if end {
            Terminal::End(code, reason.to_string())
        } else {
            Terminal::Reset(code, reason.to_string())
        });
    }

    pub fn send_datagram(&mut self, d: Datagram, max_payload: usize) -> Result<(), SessionError> {
        if self.protocol != Protocol::UDP {
            return Err(SessionError::WrongProtocol);
        }
        if !self.established {
            return Err(SessionError::NotOpen);
        }
        if self.write != WriteSide::Open || self.terminal_sent || self.terminal_to_send.is_some() {
            return Err(SessionError::Closed);
        }
        if d.encoded_len() > max_payload {
            return Err(SessionError::TooLarge);
        }
        self.dgrams_out.push(d).map_err(|_| SessionError::QueueFull)
    }

    pub fn recv_datagram(&mut self) -> Option<Datagram> {
        self.dgrams_in.pop()
    }
}

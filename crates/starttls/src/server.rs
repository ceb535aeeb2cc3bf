//! [`ServerSide`]: tlsgate answers a client's plaintext prologue itself, in front of a plaintext
//! backend, until the client asks for TLS. Fail-closed: no command is ever passed to the backend.

mod binary;
mod text;

use crate::lines::LineBuf;
use crate::{Error, ErrorKind, Protocol, Step, MAX_BAD_COMMANDS};

/// What one command came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Answered; wait for the next command.
    Answered,
    /// Refused (TLS first, unknown, malformed): counts toward [`MAX_BAD_COMMANDS`].
    Refused,
    StartTls,
    Close,
}

/// The server part of a STARTTLS prologue. See the crate documentation for the calling pattern.
#[derive(Debug)]
pub struct ServerSide {
    protocol: Protocol,
    host: String,
    lines: LineBuf,
    /// PostgreSQL and LDAP: bytes of an incomplete message.
    message: Vec<u8>,
    output: Vec<u8>,
    step: Step,
    bad: usize,
}

impl ServerSide {
    /// Starts a prologue; for protocols where the server speaks first, the greeting naming
    /// `host_name` is already in the output.
    pub fn new(protocol: Protocol, host_name: &str) -> Self {
        // The name goes into replies verbatim: nothing that could end a line or a field.
        let host: String = host_name.chars().filter(char::is_ascii_graphic).take(255).collect();
        let host = if host.is_empty() { "localhost".to_string() } else { host };
        let mut output = Vec::new();
        text::greeting(protocol, &host, &mut output);
        ServerSide {
            protocol,
            host,
            lines: LineBuf::new(protocol.max_line()),
            message: Vec::new(),
            output,
            step: Step::NeedInput,
            bad: 0,
        }
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn state(&self) -> Step {
        self.step
    }

    /// What to send to the client now.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Takes the client's bytes and answers every whole command in them. After `StartTls`, any
    /// byte still unread is an error: plaintext sent before the TLS handshake must never be taken
    /// as having come over TLS.
    pub fn receive(&mut self, data: &[u8]) -> Result<(), Error> {
        match self.step {
            Step::NeedInput => {}
            _ if data.is_empty() => return Ok(()),
            Step::StartTls => return Err(Error::client(ErrorKind::DataAfterStartTls(data.len()))),
            Step::Close => {
                return Err(Error::client(ErrorKind::Malformed("data after the prologue was closed".into())))
            }
        }
        let outcome = match self.protocol {
            Protocol::Postgres | Protocol::Ldap => {
                self.message.extend_from_slice(data);
                self.binary()?
            }
            _ => {
                self.lines.push(data);
                self.text()?
            }
        };
        if outcome == Outcome::StartTls {
            let left = self.lines.pending().len() + self.message.len();
            if left > 0 {
                return Err(Error::client(ErrorKind::DataAfterStartTls(left)));
            }
        }
        Ok(())
    }

    fn text(&mut self) -> Result<Outcome, Error> {
        loop {
            if self.lines.pending().first() == Some(&0x16) {
                return Err(Error::client(ErrorKind::TlsBeforeStartTls));
            }
            let Some(line) = self.lines.next_line().map_err(Error::client)? else {
                return Ok(Outcome::Answered);
            };
            let outcome = text::answer(self.protocol, &self.host, &line, &mut self.output);
            if let Some(end) = self.settle(outcome)? {
                return Ok(end);
            }
        }
    }

    fn binary(&mut self) -> Result<Outcome, Error> {
        loop {
            if self.message.first() == Some(&0x16) {
                return Err(Error::client(ErrorKind::TlsBeforeStartTls));
            }
            let outcome = match self.protocol {
                Protocol::Postgres => binary::postgres(&mut self.message, &mut self.output),
                _ => binary::ldap(&mut self.message, &mut self.output),
            };
            let Some(outcome) = outcome.map_err(Error::client)? else {
                return Ok(Outcome::Answered);
            };
            if let Some(end) = self.settle(outcome)? {
                return Ok(end);
            }
        }
    }

    /// Applies one command's outcome; `Some` when the prologue is over.
    fn settle(&mut self, outcome: Outcome) -> Result<Option<Outcome>, Error> {
        match outcome {
            Outcome::Answered => Ok(None),
            Outcome::Refused => {
                self.bad += 1;
                if self.bad >= MAX_BAD_COMMANDS {
                    return Err(Error::client(ErrorKind::TooManyBadCommands(self.bad)));
                }
                Ok(None)
            }
            Outcome::StartTls => {
                self.step = Step::StartTls;
                Ok(Some(outcome))
            }
            Outcome::Close => {
                self.step = Step::Close;
                self.lines.clear();
                self.message.clear();
                Ok(Some(outcome))
            }
        }
    }
}

//! [`ClientSide`]: tlsgate accepts a plaintext client and speaks the client part of the STARTTLS
//! prologue to the upstream, which must agree to TLS before any of the client's bytes are sent.

mod binary;
mod text;

use crate::greeting::Reply;
use crate::lines::LineBuf;
use crate::{Error, ErrorKind, Protocol, Step};

/// Where the prologue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading the upstream's greeting.
    Greeting,
    /// SMTP: EHLO sent, reading its reply.
    Ehlo,
    /// The upgrade command sent, reading its answer.
    Upgrade,
    Done,
}

/// The client part of a STARTTLS prologue. See the crate documentation for the calling pattern.
#[derive(Debug)]
pub struct ClientSide {
    protocol: Protocol,
    /// What SMTP's EHLO names as the client.
    name: String,
    lines: LineBuf,
    /// PostgreSQL and LDAP: the upstream's bytes of an incomplete answer.
    message: Vec<u8>,
    reply: Reply,
    phase: Phase,
    output: Vec<u8>,
    greeting: Vec<u8>,
    /// IMAP: untagged lines seen while waiting for the tagged answer.
    untagged: usize,
}

impl ClientSide {
    /// Starts a prologue toward an upstream; `client_name` is the EHLO argument for SMTP. For
    /// protocols where the client opens (PostgreSQL, LDAP), the request is already in the output.
    pub fn new(protocol: Protocol, client_name: &str) -> Self {
        let name: String = client_name.chars().filter(char::is_ascii_graphic).take(255).collect();
        let mut side = ClientSide {
            protocol,
            name: if name.is_empty() { "localhost".into() } else { name },
            lines: LineBuf::new(protocol.max_line()),
            message: Vec::new(),
            reply: Reply::new(protocol),
            phase: Phase::Greeting,
            output: Vec::new(),
            greeting: Vec::new(),
            untagged: 0,
        };
        if !protocol.server_speaks_first() {
            binary::open(&mut side);
        }
        side
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn state(&self) -> Step {
        if self.phase == Phase::Done {
            Step::StartTls
        } else {
            Step::NeedInput
        }
    }

    /// What to send to the upstream now.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// What the plaintext client gets first once TLS is up: the upstream's greeting (for IMAP
    /// without a `[CAPABILITY …]` code, stale after TLS). Empty for PostgreSQL and LDAP.
    pub fn greeting_for_client(&self) -> &[u8] {
        &self.greeting
    }

    /// Takes the upstream's bytes. A server that answers before being asked, or sends anything
    /// after agreeing to TLS, is an error (the bytes could only be injected).
    pub fn receive(&mut self, data: &[u8]) -> Result<(), Error> {
        if self.phase == Phase::Done {
            return match data.len() {
                0 => Ok(()),
                n => Err(Error::backend(ErrorKind::DataAfterStartTls(n))),
            };
        }
        let (done, left) = if self.protocol.server_speaks_first() {
            self.lines.push(data);
            (self.text()?, self.lines.pending().len())
        } else {
            self.message.extend_from_slice(data);
            (binary::answer(self)?, self.message.len())
        };
        match (done, left) {
            (_, 0) => Ok(()),
            (true, n) => Err(Error::backend(ErrorKind::DataAfterStartTls(n))),
            (false, n) if !self.output.is_empty() => Err(Error::backend(ErrorKind::Unsolicited(n))),
            (false, _) => Ok(()),
        }
    }

    /// Every whole line; `true` once the upgrade is agreed.
    fn text(&mut self) -> Result<bool, Error> {
        while let Some(line) = self.lines.next_line().map_err(Error::backend)? {
            if !self.output.is_empty() {
                // A command of ours is still unsent: this line cannot be its answer.
                let n = line.len() + self.lines.pending().len();
                return Err(Error::backend(ErrorKind::Unsolicited(n)));
            }
            text::line(self, &line).map_err(Error::backend)?;
            if self.phase == Phase::Done {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

//! A server's greeting: read by [`crate::ClientSide`] before it asks for TLS, and skipped by
//! [`GreetingSkip`] on the backend of a [`crate::ServerSide`] connection.

use crate::error::printable;
use crate::lines::LineBuf;
use crate::{Error, ErrorKind, Protocol};

/// Lines in one multi-line reply before the server is taken to be babbling.
pub(crate) const MAX_REPLY_LINES: usize = 100;

/// One reply of a text protocol, line by line: SMTP and FTP replies (`220-…` continued until
/// `220 …`; FTP's continuation lines may be any text), or the one-line IMAP and POP3 answers.
#[derive(Debug)]
pub(crate) struct Reply {
    protocol: Protocol,
    code: Option<[u8; 3]>,
    lines: usize,
    /// Every line of the reply with CRLF, as received.
    pub(crate) text: Vec<u8>,
}

impl Reply {
    pub(crate) fn new(protocol: Protocol) -> Self {
        Reply { protocol, code: None, lines: 0, text: Vec::new() }
    }

    /// Takes one line (without its line end); `Ok(true)` when it was the reply's last.
    pub(crate) fn line(&mut self, line: &[u8]) -> Result<bool, ErrorKind> {
        self.lines += 1;
        if self.lines > MAX_REPLY_LINES {
            return Err(ErrorKind::Malformed(format!("reply longer than {MAX_REPLY_LINES} lines")));
        }
        self.text.extend_from_slice(line);
        self.text.extend_from_slice(b"\r\n");
        if !matches!(self.protocol, Protocol::Smtp | Protocol::Ftp) {
            return Ok(true);
        }
        match self.code {
            None => {
                let code: [u8; 3] = match line.get(..3) {
                    Some(c) if c.iter().all(u8::is_ascii_digit) => [c[0], c[1], c[2]],
                    _ => return Err(ErrorKind::Malformed(format!("not a reply: {:?}", printable(line)))),
                };
                match line.get(3) {
                    None | Some(b' ') => Ok(true),
                    Some(b'-') => {
                        self.code = Some(code);
                        Ok(false)
                    }
                    Some(_) => Err(ErrorKind::Malformed(format!("not a reply: {:?}", printable(line)))),
                }
            }
            Some(code) => {
                let last = line.starts_with(&code) && matches!(line.get(3), None | Some(b' '));
                if self.protocol == Protocol::Smtp
                    && !last
                    && !(line.starts_with(&code) && line.get(3) == Some(&b'-'))
                {
                    return Err(ErrorKind::Malformed(format!(
                        "broken multi-line reply: {:?}",
                        printable(line)
                    )));
                }
                Ok(last)
            }
        }
    }

    /// The reply's three-digit code (SMTP, FTP).
    pub(crate) fn code(&self) -> &[u8] {
        self.text.get(..3).unwrap_or(b"")
    }

    /// The whole reply on one line, for error messages.
    pub(crate) fn printable(&self) -> String {
        printable(&self.text)
    }

    /// Whether this complete reply is a greeting that lets the session go on.
    pub(crate) fn greeting_ok(&self) -> bool {
        let upper = self.text.to_ascii_uppercase();
        match self.protocol {
            Protocol::Smtp | Protocol::Ftp => self.code() == b"220",
            Protocol::Imap => upper.starts_with(b"* OK"),
            Protocol::Pop3 => upper.starts_with(b"+OK"),
            Protocol::Postgres | Protocol::Ldap => true,
        }
    }
}

/// Consumes exactly the backend's greeting after TLS is up with the client, which already had
/// tlsgate's own. PostgreSQL and LDAP servers send none; those skips are done from the start.
#[derive(Debug)]
pub struct GreetingSkip {
    lines: LineBuf,
    reply: Option<Reply>,
}

impl GreetingSkip {
    pub fn new(protocol: Protocol) -> Self {
        let reply = protocol.server_speaks_first().then(|| Reply::new(protocol));
        GreetingSkip { lines: LineBuf::new(protocol.max_line()), reply }
    }

    pub fn is_done(&self) -> bool {
        self.reply.is_none()
    }

    /// Takes the backend's bytes. `Some(n)` once the greeting is complete: `data[..n]` was its end
    /// and `data[n..]` belongs to the session, to be relayed. A greeting that is not a welcome
    /// (SMTP 421, IMAP `* BYE`, POP3 `-ERR`) is an error carrying its text.
    pub fn receive(&mut self, data: &[u8]) -> Result<Option<usize>, Error> {
        let Some(reply) = &mut self.reply else {
            return Ok(Some(0));
        };
        self.lines.push(data);
        while let Some(line) = self.lines.next_line().map_err(Error::backend)? {
            if reply.line(&line).map_err(Error::backend)? {
                if !reply.greeting_ok() {
                    return Err(Error::backend(ErrorKind::Malformed(format!(
                        "greeting is not a welcome: {:?}",
                        reply.printable()
                    ))));
                }
                let rest = self.lines.pending().len();
                self.lines.clear();
                self.reply = None;
                return Ok(Some(data.len() - rest));
            }
        }
        Ok(None)
    }
}

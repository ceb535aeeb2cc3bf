//! PostgreSQL's TLS negotiation: the 8-byte SSLRequest answered by one byte, `S` or `N`.

use crate::{Error, ErrorKind};

pub(crate) const SSL_REQUEST: u32 = 80877103;
pub(crate) const GSSENC_REQUEST: u32 = 80877104;
pub(crate) const CANCEL_REQUEST: u32 = 80877102;
/// PostgreSQL's own limit on a startup packet (MAX_STARTUP_PACKET_LENGTH).
pub(crate) const MAX_STARTUP: usize = 10_000;

pub(crate) fn ssl_request() -> [u8; 8] {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&8u32.to_be_bytes());
    msg[4..].copy_from_slice(&SSL_REQUEST.to_be_bytes());
    msg
}

/// The length and request code at the start of `buf`, once 8 bytes have arrived.
pub(crate) fn header(buf: &[u8]) -> Option<(usize, u32)> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let code = u32::from_be_bytes(buf.get(4..8)?.try_into().ok()?);
    Some((len, code))
}

/// A FATAL ErrorResponse, what a server with `hostssl`-only rules says to a plaintext startup.
pub(crate) fn fatal(sqlstate: &str, message: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (code, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', sqlstate), (b'M', message)] {
        fields.push(code);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut msg = vec![b'E'];
    msg.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    msg.extend(fields);
    msg
}

/// Stands between a plaintext PostgreSQL client and a TLS upstream (originate): the client's own
/// SSLRequest or GSSENCRequest (psql's default `sslmode=prefer` sends one) is answered `N` here,
/// since the client's leg is plaintext by design, and is not forwarded; from the first other
/// message on, everything is.
#[derive(Debug, Default)]
pub struct PostgresClientFilter {
    buf: Vec<u8>,
    reply: Vec<u8>,
    requests: usize,
    done: bool,
}

impl PostgresClientFilter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the client's bytes; `Some(bytes)` to forward once the negotiation requests are
    /// behind (from then on the caller relays directly). Answers are in [`Self::take_reply`].
    pub fn receive(&mut self, data: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if self.done {
            return Ok(Some(data.to_vec()));
        }
        self.buf.extend_from_slice(data);
        loop {
            if self.buf.first() == Some(&0x16) {
                return Err(Error::client(ErrorKind::TlsOnPlaintext));
            }
            let Some((len, code)) = header(&self.buf) else {
                // A length other than 8 already rules out a negotiation request.
                match self.buf.get(..4) {
                    Some(len) if len != 8u32.to_be_bytes() => break,
                    _ => return Ok(None),
                }
            };
            if len != 8 || (code != SSL_REQUEST && code != GSSENC_REQUEST) {
                break;
            }
            self.requests += 1;
            if self.requests > 2 {
                return Err(Error::client(ErrorKind::Malformed("repeated SSLRequest/GSSENCRequest".into())));
            }
            self.reply.push(b'N');
            self.buf.drain(..8);
            if self.buf.is_empty() {
                return Ok(None);
            }
        }
        self.done = true;
        Ok(Some(std::mem::take(&mut self.buf)))
    }

    /// The `N` answers owed to the client.
    pub fn take_reply(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.reply)
    }
}

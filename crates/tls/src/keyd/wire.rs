//! keyd's messages on the wire (docs/keyd.md): a 4-byte big-endian length, then the body. Sans-IO:
//! bytes in, messages out, and back.

/// Largest body either side accepts; a TLS 1.3 CertificateVerify input is 130 bytes, a TLS 1.2
/// ServerKeyExchange's a few hundred, an RSA-4096 signature 512.
pub const MAX_BODY: usize = 16 * 1024;
/// Key names are short labels from the command line.
pub const MAX_NAME: usize = 64;

const OP_INFO: u8 = 1;
const OP_SIGN: u8 = 2;
const TAG_INFO: u8 = 1;
const TAG_SIGNATURE: u8 = 2;
const TAG_REFUSED: u8 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The key's signature schemes and public key (SubjectPublicKeyInfo, DER).
    Info { name: String },
    /// Sign `message` with `scheme` (a TLS SignatureScheme code point).
    Sign { name: String, scheme: u16, message: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Info { schemes: Vec<u16>, spki: Vec<u8> },
    Signature(Vec<u8>),
    Refused { reason: Reason, text: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    UnknownKey,
    UnsupportedScheme,
    SigningFailed,
    Malformed,
    /// The connecting process's uid is not on keyd's allow list.
    NotAllowed,
    Other(u8),
}

impl Reason {
    fn code(self) -> u8 {
        match self {
            Reason::UnknownKey => 1,
            Reason::UnsupportedScheme => 2,
            Reason::SigningFailed => 3,
            Reason::Malformed => 4,
            Reason::NotAllowed => 5,
            Reason::Other(c) => c,
        }
    }

    fn from_code(c: u8) -> Reason {
        match c {
            1 => Reason::UnknownKey,
            2 => Reason::UnsupportedScheme,
            3 => Reason::SigningFailed,
            4 => Reason::Malformed,
            5 => Reason::NotAllowed,
            c => Reason::Other(c),
        }
    }
}

/// Why bytes are not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes (at most {MAX_BODY})")]
    TooLong(usize),
    #[error("empty frame")]
    Empty,
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("truncated message")]
    Truncated,
    #[error("key name empty, longer than {MAX_NAME} bytes or not UTF-8")]
    BadName,
    #[error("{0} bytes after the message")]
    Trailing(usize),
}

/// Cuts complete frames out of a byte stream.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete body, `Ok(None)` until one is in; an oversized length is an error that
    /// ends the stream (nothing after it can be framed).
    pub fn next_body(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        let Some(head) = self.buf.get(..4) else { return Ok(None) };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len > MAX_BODY {
            return Err(WireError::TooLong(len));
        }
        if len == 0 {
            return Err(WireError::Empty);
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let body = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(body))
    }
}

/// `body` with its length prefix.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, WireError> {
        let (&b, rest) = self.0.split_first().ok_or(WireError::Truncated)?;
        self.0 = rest;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }

    fn name(&mut self) -> Result<String, WireError> {
        let len = usize::from(self.u8()?);
        if len == 0 || len > MAX_NAME {
            return Err(WireError::BadName);
        }
        let bytes = self.take(len).map_err(|_| WireError::Truncated)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError::BadName)
    }

    fn end(&self) -> Result<(), WireError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    // Names are checked when keyd starts and when a key source is parsed; cut rather than wrap.
    let bytes = &name.as_bytes()[..name.len().min(MAX_NAME)];
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Request::Info { name } => {
                out.push(OP_INFO);
                put_name(&mut out, name);
            }
            Request::Sign { name, scheme, message } => {
                out.push(OP_SIGN);
                put_name(&mut out, name);
                out.extend_from_slice(&scheme.to_be_bytes());
                out.extend_from_slice(message);
            }
        }
        out
    }

    pub fn decode(body: &[u8]) -> Result<Request, WireError> {
        let mut r = Reader(body);
        match r.u8()? {
            OP_INFO => {
                let name = r.name()?;
                r.end()?;
                Ok(Request::Info { name })
            }
            OP_SIGN => {
                let name = r.name()?;
                let scheme = r.u16()?;
                Ok(Request::Sign { name, scheme, message: r.rest().to_vec() })
            }
            t => Err(WireError::UnknownType(t)),
        }
    }
}

impl Response {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Response::Info { schemes, spki } => {
                out.push(TAG_INFO);
                out.push(schemes.len().min(255) as u8);
                for s in schemes.iter().take(255) {
                    out.extend_from_slice(&s.to_be_bytes());
                }
                out.extend_from_slice(spki);
            }
            Response::Signature(sig) => {
                out.push(TAG_SIGNATURE);
                out.extend_from_slice(sig);
            }
            Response::Refused { reason, text } => {
                out.push(TAG_REFUSED);
                out.push(reason.code());
                out.extend_from_slice(text.as_bytes());
            }
        }
        out
    }

    pub fn decode(body: &[u8]) -> Result<Response, WireError> {
        let mut r = Reader(body);
        match r.u8()? {
            TAG_INFO => {
                let n = usize::from(r.u8()?);
                let schemes = (0..n).map(|_| r.u16()).collect::<Result<Vec<_>, _>>()?;
                Ok(Response::Info { schemes, spki: r.rest().to_vec() })
            }
            TAG_SIGNATURE => Ok(Response::Signature(r.rest().to_vec())),
            TAG_REFUSED => {
                let reason = Reason::from_code(r.u8()?);
                Ok(Response::Refused { reason, text: String::from_utf8_lossy(r.rest()).into_owned() })
            }
            t => Err(WireError::UnknownType(t)),
        }
    }
}

/// Fuzzing: any bytes through the framer and both decoders; whatever decodes re-encodes to the
/// same body.
pub fn fuzz_check(data: &[u8]) {
    let mut framer = Framer::default();
    framer.feed(data);
    while let Ok(Some(body)) = framer.next_body() {
        assert!(!body.is_empty() && body.len() <= MAX_BODY);
        if let Ok(req) = Request::decode(&body) {
            assert_eq!(req.encode(), body);
        }
        if let Ok(resp) = Response::decode(&body) {
            let again = Response::decode(&resp.encode()).expect("an encoded response decodes");
            assert_eq!(again, resp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_round_trip_through_frames() {
        let req = Request::Sign { name: "web".into(), scheme: 0x0403, message: vec![7; 130] };
        let resp = Response::Info { schemes: vec![0x0804, 0x0805], spki: vec![1, 2, 3] };
        let mut framer = Framer::default();
        let mut stream = frame(&req.encode());
        stream.extend(frame(&resp.encode()));
        // Byte by byte: frames complete only when their last byte is in.
        let mut bodies = Vec::new();
        for b in stream {
            framer.feed(&[b]);
            while let Some(body) = framer.next_body().unwrap() {
                bodies.push(body);
            }
        }
        assert_eq!(Request::decode(&bodies[0]).unwrap(), req);
        assert_eq!(Response::decode(&bodies[1]).unwrap(), resp);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut framer = Framer::default();
        framer.feed(&(MAX_BODY as u32 + 1).to_be_bytes());
        assert_eq!(framer.next_body(), Err(WireError::TooLong(MAX_BODY + 1)));
        assert_eq!(Request::decode(&[9]), Err(WireError::UnknownType(9)));
        assert_eq!(Request::decode(&[OP_INFO, 0]), Err(WireError::BadName));
        assert_eq!(Request::decode(&[OP_INFO, 3, b'a']), Err(WireError::Truncated));
        assert_eq!(Request::decode(&[OP_INFO, 1, b'a', 0]), Err(WireError::Trailing(1)));
        assert_eq!(Request::decode(&[OP_SIGN, 1, b'a', 4]), Err(WireError::Truncated));
        fuzz_check(&[0, 0, 0, 3, OP_INFO, 1, b'k', 0, 0, 0, 1, 0xff]);
    }
}

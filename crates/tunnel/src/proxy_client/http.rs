//! HTTP CONNECT (RFC 9110 section 9.3.6), client side.

use super::{ClientProgress, ProxyError, MAX_RESPONSE_HEAD};
use crate::Target;

#[derive(Debug)]
pub struct HttpConnectClient {
    out: Vec<u8>,
    buf: Vec<u8>,
    done: bool,
    failed: bool,
}

impl HttpConnectClient {
    /// Queues `CONNECT host:port`, with Basic proxy credentials if given.
    pub fn new(gate: &Target, basic_auth: Option<(&str, &str)>) -> Self {
        let authority = gate.to_string();
        let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some((user, pass)) = basic_auth {
            let token = base64(format!("{user}:{pass}").as_bytes());
            req.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
        }
        req.push_str("\r\n");
        HttpConnectClient { out: req.into_bytes(), buf: Vec::new(), done: false, failed: false }
    }

    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    pub fn handle_input(&mut self, data: &[u8]) -> Result<ClientProgress, ProxyError> {
        if self.failed || self.done {
            // After the answer, the stream belongs to TLS.
            return Err(ProxyError::WrongState);
        }
        // Search only where the terminator can newly appear.
        let from = self.buf.len().saturating_sub(3);
        self.buf.extend_from_slice(data);
        let Some(pos) = find(&self.buf[from..], b"\r\n\r\n").map(|p| p + from) else {
            if self.buf.len() > MAX_RESPONSE_HEAD {
                return self.fail(ProxyError::TooLong);
            }
            return Ok(ClientProgress::NeedMore);
        };
        if pos + 4 > MAX_RESPONSE_HEAD {
            return self.fail(ProxyError::TooLong);
        }
        let head = self.buf[..pos].to_vec();
        self.buf.drain(..pos + 4);
        let status_line = head.split(|b| *b == b'\n').next().unwrap_or(&[]);
        let status_line = String::from_utf8_lossy(status_line).trim_end().to_string();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return self.fail(ProxyError::Malformed("not an HTTP/1.x status line"));
        }
        let status: u16 = match parts.next().and_then(|s| s.parse().ok()) {
            Some(s) if (100..1000).contains(&s) => s,
            _ => return self.fail(ProxyError::Malformed("bad status code")),
        };
        if !(200..300).contains(&status) {
            let reason = parts.next().unwrap_or("").to_string();
            return self.fail(ProxyError::HttpStatus { status, reason });
        }
        self.done = true;
        Ok(ClientProgress::Established { bound: None })
    }

    /// Bytes after the response head: the gate's first TLS bytes.
    pub fn take_leftover(&mut self) -> Vec<u8> {
        if self.done {
            std::mem::take(&mut self.buf)
        } else {
            Vec::new()
        }
    }

    fn fail(&mut self, e: ProxyError) -> Result<ClientProgress, ProxyError> {
        self.failed = true;
        self.buf = Vec::new();
        Err(e)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Standard base64 with padding (RFC 4648), for the Basic credentials.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn request_then_2xx_split_anywhere_with_leftover() {
        let gate = Target::name("gate.example", 8443).unwrap();
        let c = HttpConnectClient::new(&gate, Some(("alice", "s3cret")));
        let req = String::from_utf8(c.out.clone()).unwrap();
        assert_eq!(
            req,
            "CONNECT gate.example:8443 HTTP/1.1\r\nHost: gate.example:8443\r\n\
             Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n\r\n"
        );
        let resp = b"HTTP/1.1 200 Connection established\r\nVia: proxy\r\n\r\n\x16\x03\x03";
        let head_len = resp.len() - 3;
        for cut in 0..resp.len() {
            let mut c = HttpConnectClient::new(&gate, None);
            let first = c.handle_input(&resp[..cut]).unwrap();
            assert_eq!(first == ClientProgress::NeedMore, cut < head_len, "cut at {cut}");
            let mut leftover = Vec::new();
            if first == ClientProgress::NeedMore {
                assert_eq!(
                    c.handle_input(&resp[cut..]).unwrap(),
                    ClientProgress::Established { bound: None }
                );
                leftover = c.take_leftover();
            } else {
                // Established already: the rest of the stream goes straight to TLS.
                leftover.extend(c.take_leftover());
                leftover.extend_from_slice(&resp[cut..]);
                assert_eq!(c.handle_input(b"x"), Err(ProxyError::WrongState));
            }
            assert_eq!(leftover, b"\x16\x03\x03", "cut at {cut}");
        }
    }

    #[test]
    fn ipv6_authority_is_bracketed() {
        let gate = Target::ip("2001:db8::1".parse::<std::net::IpAddr>().unwrap(), 443);
        let mut c = HttpConnectClient::new(&gate, None);
        assert!(c.take_output().starts_with(b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\n"));
    }

    #[test]
    fn refusals_and_garbage() {
        let gate = Target::ip([192, 0, 2, 1], 443);
        let mut c = HttpConnectClient::new(&gate, None);
        assert_eq!(
            c.handle_input(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"),
            Err(ProxyError::HttpStatus { status: 407, reason: "Proxy Authentication Required".into() })
        );
        let mut c = HttpConnectClient::new(&gate, None);
        assert_eq!(
            c.handle_input(b"SSH-2.0-x\r\n\r\n"),
            Err(ProxyError::Malformed("not an HTTP/1.x status line"))
        );
        let mut c = HttpConnectClient::new(&gate, None);
        assert_eq!(c.handle_input(&vec![b'a'; MAX_RESPONSE_HEAD + 1]), Err(ProxyError::TooLong));
        assert_eq!(c.handle_input(b"x"), Err(ProxyError::WrongState));
    }
}

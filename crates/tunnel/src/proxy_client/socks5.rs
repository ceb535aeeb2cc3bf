//! SOCKS5 CONNECT (RFC 1928, RFC 1929), client side.

use super::{ClientProgress, ProxyError, MAX_RESPONSE_HEAD};
use crate::socks5::{put_addr, read_addr, METHOD_NONE, METHOD_USER_PASS, VERSION};
use crate::Target;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Method,
    Auth,
    Reply,
    Done,
    Failed,
}

#[derive(Debug)]
pub struct Socks5Client {
    st: St,
    target: Target,
    auth: Option<(Vec<u8>, Vec<u8>)>,
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl Socks5Client {
    /// Queues the greeting; offers username/password only when credentials are given. RFC 1929
    /// fields are at most 255 bytes; longer credentials are cut.
    pub fn new(gate: Target, auth: Option<(&[u8], &[u8])>) -> Self {
        let out = match auth {
            Some(_) => vec![VERSION, 2, METHOD_NONE, METHOD_USER_PASS],
            None => vec![VERSION, 1, METHOD_NONE],
        };
        let cut = |b: &[u8]| b[..b.len().min(255)].to_vec();
        Socks5Client {
            st: St::Method,
            target: gate,
            auth: auth.map(|(u, p)| (cut(u), cut(p))),
            out,
            buf: Vec::new(),
        }
    }

    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    pub fn handle_input(&mut self, data: &[u8]) -> Result<ClientProgress, ProxyError> {
        if self.st == St::Failed {
            return Err(ProxyError::WrongState);
        }
        self.buf.extend_from_slice(data);
        if self.st != St::Done && self.buf.len() > MAX_RESPONSE_HEAD {
            return self.fail(ProxyError::TooLong);
        }
        loop {
            match self.st {
                St::Method => {
                    let [ver, method, ..] = self.buf[..] else {
                        return Ok(ClientProgress::NeedMore);
                    };
                    if ver != VERSION {
                        return self.fail(ProxyError::Malformed("not a SOCKS5 method reply"));
                    }
                    self.buf.drain(..2);
                    match (method, &self.auth) {
                        (METHOD_NONE, _) => self.send_request(),
                        (METHOD_USER_PASS, Some((u, p))) => {
                            self.out.extend_from_slice(&[1, u.len() as u8]);
                            self.out.extend_from_slice(u);
                            self.out.push(p.len() as u8);
                            self.out.extend_from_slice(p);
                            self.st = St::Auth;
                        }
                        _ => return self.fail(ProxyError::NoAcceptableMethod),
                    }
                }
                St::Auth => {
                    let [_, status, ..] = self.buf[..] else {
                        return Ok(ClientProgress::NeedMore);
                    };
                    self.buf.drain(..2);
                    if status != 0 {
                        return self.fail(ProxyError::AuthRejected);
                    }
                    self.send_request();
                }
                St::Reply => {
                    let [ver, rep, _rsv, ..] = self.buf[..] else {
                        return Ok(ClientProgress::NeedMore);
                    };
                    if ver != VERSION {
                        return self.fail(ProxyError::Malformed("not a SOCKS5 reply"));
                    }
                    if rep != 0 {
                        return self.fail(ProxyError::SocksReply(rep));
                    }
                    let (bound, used) = match read_addr(&self.buf[3..]) {
                        Ok(Some(x)) => x,
                        Ok(None) => return Ok(ClientProgress::NeedMore),
                        Err(_) => return self.fail(ProxyError::Malformed("bad bound address")),
                    };
                    self.buf.drain(..3 + used);
                    self.st = St::Done;
                    return Ok(ClientProgress::Established { bound: Some(bound) });
                }
                St::Done => return Err(ProxyError::WrongState),
                St::Failed => return Err(ProxyError::WrongState),
            }
        }
    }

    /// Bytes after the proxy's reply: the gate's first TLS bytes.
    pub fn take_leftover(&mut self) -> Vec<u8> {
        if self.st == St::Done {
            std::mem::take(&mut self.buf)
        } else {
            Vec::new()
        }
    }

    fn send_request(&mut self) {
        self.out.extend_from_slice(&[VERSION, 1, 0]);
        put_addr(&mut self.out, &self.target);
        self.st = St::Reply;
    }

    fn fail(&mut self, e: ProxyError) -> Result<ClientProgress, ProxyError> {
        self.st = St::Failed;
        self.buf = Vec::new();
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socks5::{Progress, Reply, Server, ServerConfig};

    /// Our client against our server, bytes passed one way at a time.
    #[test]
    fn client_and_server_agree_with_credentials() {
        let gate = Target::name("gate.example", 8443).unwrap();
        let mut c = Socks5Client::new(gate.clone(), Some((b"alice", b"pw")));
        let mut s = Server::new(ServerConfig { require_auth: true });
        let p = s.handle_input(&c.take_output()).unwrap();
        assert_eq!(p, Progress::NeedMore);
        assert_eq!(c.handle_input(&s.take_output()).unwrap(), ClientProgress::NeedMore);
        let p = s.handle_input(&c.take_output()).unwrap();
        assert_eq!(p, Progress::Authenticate { username: b"alice".to_vec(), password: b"pw".to_vec() });
        s.authenticated(true).unwrap();
        assert_eq!(c.handle_input(&s.take_output()).unwrap(), ClientProgress::NeedMore);
        let p = s.handle_input(&c.take_output()).unwrap();
        assert!(matches!(p, Progress::Request(r) if r.target == gate));
        s.reply(Reply::SUCCEEDED, &Target::ip([10, 0, 0, 9], 1080)).unwrap();
        let mut reply = s.take_output();
        reply.extend_from_slice(b"\x16\x03\x03tls");
        assert_eq!(
            c.handle_input(&reply).unwrap(),
            ClientProgress::Established { bound: Some(Target::ip([10, 0, 0, 9], 1080)) }
        );
        assert_eq!(c.take_leftover(), b"\x16\x03\x03tls");
    }

    #[test]
    fn reply_split_byte_by_byte() {
        let mut c = Socks5Client::new(Target::ip([1, 2, 3, 4], 443), None);
        assert_eq!(c.take_output(), vec![5, 1, 0]);
        let input = [5, 0, 5, 0, 0, 3, 4, b'p', b'r', b'x', b'y', 0, 80];
        let mut last = ClientProgress::NeedMore;
        for (i, b) in input.iter().enumerate() {
            last = c.handle_input(std::slice::from_ref(b)).unwrap();
            if i + 1 < input.len() {
                assert_eq!(last, ClientProgress::NeedMore);
            }
        }
        assert_eq!(last, ClientProgress::Established { bound: Some(Target::name("prxy", 80).unwrap()) });
        assert_eq!(c.take_output(), vec![5, 1, 0, 1, 1, 2, 3, 4, 1, 0xbb]);
    }

    #[test]
    fn refusals() {
        let t = Target::ip([1, 2, 3, 4], 443);
        let mut c = Socks5Client::new(t.clone(), None);
        assert_eq!(c.handle_input(&[5, 0xFF]), Err(ProxyError::NoAcceptableMethod));
        let mut c = Socks5Client::new(t.clone(), Some((b"u", b"p")));
        assert_eq!(c.handle_input(&[5, 2, 1, 1]), Err(ProxyError::AuthRejected));
        let mut c = Socks5Client::new(t.clone(), None);
        assert_eq!(c.handle_input(&[5, 0, 5, 2, 0, 1, 0, 0, 0, 0, 0, 0]), Err(ProxyError::SocksReply(2)));
        let mut c = Socks5Client::new(t, None);
        assert_eq!(c.handle_input(b"HTTP/1.1 400"), Err(ProxyError::Malformed("not a SOCKS5 method reply")));
    }
}

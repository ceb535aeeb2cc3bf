//! The SOCKS5 server handshake as a state machine over bytes.
//!
//! Feed client bytes to [`Server::handle_input`]; send [`Server::take_output`] to the client.
//! When it returns [`Progress::Authenticate`], answer with [`Server::authenticated`]; when it
//! returns [`Progress::Request`], open the tunnel session and answer with [`Server::reply`].
//! After a successful reply, [`Server::take_leftover`] holds any bytes the client sent early.

use super::{
    put_addr, read_addr, AddrError, Reply, Socks5Error, METHOD_NONE, METHOD_NO_ACCEPTABLE, METHOD_USER_PASS,
    VERSION,
};
use crate::Target;

/// Bytes buffered before the reply; the longest handshake message is 513 bytes (RFC 1929).
pub const MAX_BUFFERED: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, Default)]
pub struct ServerConfig {
    /// Require RFC 1929 username/password; otherwise only "no authentication" is accepted.
    pub require_auth: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect,
    UdpAssociate,
}

/// A parsed request. For UDP ASSOCIATE the target is where the client will send from (often
/// 0.0.0.0:0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    NeedMore,
    /// Check these credentials, then call `authenticated`.
    Authenticate {
        username: Vec<u8>,
        password: Vec<u8>,
    },
    /// Act on the request, then call `reply`.
    Request(Request),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Greeting,
    Credentials,
    AuthDecision,
    Request,
    AwaitReply,
    Established,
    Failed,
}

#[derive(Debug)]
pub struct Server {
    st: St,
    require_auth: bool,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl Server {
    pub fn new(config: ServerConfig) -> Self {
        Server { st: St::Greeting, require_auth: config.require_auth, buf: Vec::new(), out: Vec::new() }
    }

    pub fn handle_input(&mut self, data: &[u8]) -> Result<Progress, Socks5Error> {
        if self.st == St::Failed {
            return Err(Socks5Error::WrongState);
        }
        if self.buf.len() + data.len() > MAX_BUFFERED {
            return self.fail(Socks5Error::TooMuchInput);
        }
        self.buf.extend_from_slice(data);
        self.advance()
    }

    /// Answers `Progress::Authenticate`.
    pub fn authenticated(&mut self, ok: bool) -> Result<Progress, Socks5Error> {
        if self.st != St::AuthDecision {
            return Err(Socks5Error::WrongState);
        }
        self.out.extend_from_slice(&[1, if ok { 0 } else { 1 }]);
        if !ok {
            return self.fail(Socks5Error::AuthFailed);
        }
        self.st = St::Request;
        self.advance()
    }

    /// Answers `Progress::Request`; `bound` is BND.ADDR/BND.PORT (for UDP ASSOCIATE, the
    /// portal's relay socket).
    pub fn reply(&mut self, reply: Reply, bound: &Target) -> Result<(), Socks5Error> {
        if self.st != St::AwaitReply {
            return Err(Socks5Error::WrongState);
        }
        self.out.extend_from_slice(&[VERSION, reply.0, 0]);
        put_addr(&mut self.out, bound);
        self.st = if reply == Reply::SUCCEEDED { St::Established } else { St::Failed };
        Ok(())
    }

    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Bytes the client sent after its request (early data for the destination).
    pub fn take_leftover(&mut self) -> Vec<u8> {
        if self.st == St::Established {
            std::mem::take(&mut self.buf)
        } else {
            Vec::new()
        }
    }

    pub fn is_established(&self) -> bool {
        self.st == St::Established
    }

    fn fail(&mut self, e: Socks5Error) -> Result<Progress, Socks5Error> {
        self.st = St::Failed;
        self.buf = Vec::new();
        Err(e)
    }

    /// A failure the client is told about with a reply before we close.
    fn fail_with_reply(&mut self, reply: Reply, e: Socks5Error) -> Result<Progress, Socks5Error> {
        self.out.extend_from_slice(&[VERSION, reply.0, 0]);
        put_addr(&mut self.out, &Target::ip([0, 0, 0, 0], 0));
        self.fail(e)
    }

    fn advance(&mut self) -> Result<Progress, Socks5Error> {
        loop {
            match self.st {
                St::Greeting => {
                    let [ver, n, ..] = self.buf[..] else {
                        return Ok(Progress::NeedMore);
                    };
                    if ver != VERSION {
                        return self.fail(Socks5Error::BadVersion(ver));
                    }
                    let end = 2 + n as usize;
                    if self.buf.len() < end {
                        return Ok(Progress::NeedMore);
                    }
                    let offered = &self.buf[2..end];
                    let wanted = if self.require_auth { METHOD_USER_PASS } else { METHOD_NONE };
                    let chosen = if offered.contains(&wanted) { wanted } else { METHOD_NO_ACCEPTABLE };
                    self.buf.drain(..end);
                    self.out.extend_from_slice(&[VERSION, chosen]);
                    if chosen == METHOD_NO_ACCEPTABLE {
                        return self.fail(Socks5Error::NoAcceptableMethod);
                    }
                    self.st = if self.require_auth { St::Credentials } else { St::Request };
                }
                St::Credentials => {
                    // VER(1) ULEN(1) UNAME PLEN(1) PASSWD
                    let [ver, ulen, ..] = self.buf[..] else {
                        return Ok(Progress::NeedMore);
                    };
                    if ver != 1 {
                        return self.fail(Socks5Error::BadAuthVersion(ver));
                    }
                    let ulen = ulen as usize;
                    let Some(&plen) = self.buf.get(2 + ulen) else {
                        return Ok(Progress::NeedMore);
                    };
                    let end = 3 + ulen + plen as usize;
                    if self.buf.len() < end {
                        return Ok(Progress::NeedMore);
                    }
                    let username = self.buf[2..2 + ulen].to_vec();
                    let password = self.buf[3 + ulen..end].to_vec();
                    self.buf.drain(..end);
                    self.st = St::AuthDecision;
                    return Ok(Progress::Authenticate { username, password });
                }
                St::AuthDecision | St::AwaitReply | St::Established => return Ok(Progress::NeedMore),
                St::Request => {
                    // VER CMD RSV ATYP DST.ADDR DST.PORT
                    let [ver, cmd, rsv, ..] = self.buf[..] else {
                        return Ok(Progress::NeedMore);
                    };
                    if ver != VERSION {
                        return self.fail(Socks5Error::BadVersion(ver));
                    }
                    if rsv != 0 {
                        return self.fail_with_reply(Reply::GENERAL_FAILURE, Socks5Error::BadReserved);
                    }
                    let (target, used) = match read_addr(&self.buf[3..]) {
                        Ok(Some(x)) => x,
                        Ok(None) => return Ok(Progress::NeedMore),
                        Err(AddrError::UnknownType(t)) => {
                            return self.fail_with_reply(
                                Reply::ADDRESS_TYPE_NOT_SUPPORTED,
                                Socks5Error::AddressTypeNotSupported(t),
                            )
                        }
                        Err(AddrError::BadName) => {
                            return self.fail_with_reply(Reply::GENERAL_FAILURE, Socks5Error::BadHostName)
                        }
                    };
                    let command = match cmd {
                        1 => Command::Connect,
                        3 => Command::UdpAssociate,
                        other => {
                            return self.fail_with_reply(
                                Reply::COMMAND_NOT_SUPPORTED,
                                Socks5Error::CommandNotSupported(other),
                            )
                        }
                    };
                    self.buf.drain(..3 + used);
                    self.st = St::AwaitReply;
                    return Ok(Progress::Request(Request { command, target }));
                }
                St::Failed => return Err(Socks5Error::WrongState),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_req(atyp_addr: &[u8], port: u16) -> Vec<u8> {
        let mut r = vec![5, 1, 0];
        r.extend_from_slice(atyp_addr);
        r.extend_from_slice(&port.to_be_bytes());
        r
    }

    #[test]
    fn connect_with_domain_stays_unresolved_and_keeps_early_data() {
        let mut s = Server::new(ServerConfig::default());
        let mut input = vec![5, 2, 0, 2]; // offers none and user/pass
        input.extend(connect_req(
            &[3, 11, b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.', b'c', b'o', b'm'],
            443,
        ));
        input.extend_from_slice(b"\x16\x03\x01early");
        // Byte at a time: every prefix is NeedMore until the request completes.
        let mut progress = Progress::NeedMore;
        for b in &input {
            if progress == Progress::NeedMore {
                progress = s.handle_input(std::slice::from_ref(b)).unwrap();
            } else {
                s.handle_input(std::slice::from_ref(b)).unwrap();
            }
        }
        assert_eq!(
            progress,
            Progress::Request(Request {
                command: Command::Connect,
                target: Target::name("example.com", 443).unwrap()
            })
        );
        assert_eq!(s.take_output(), vec![5, 0]);
        s.reply(Reply::SUCCEEDED, &Target::ip([10, 0, 0, 1], 40000)).unwrap();
        assert_eq!(s.take_output(), vec![5, 0, 0, 1, 10, 0, 0, 1, 0x9c, 0x40]);
        assert_eq!(s.take_leftover(), b"\x16\x03\x01early");
        assert!(s.is_established());
    }

    #[test]
    fn username_password_accepted_and_rejected() {
        let mut s = Server::new(ServerConfig { require_auth: true });
        assert_eq!(s.handle_input(&[5, 1, 2]).unwrap(), Progress::NeedMore);
        assert_eq!(s.take_output(), vec![5, 2]);
        let p = s.handle_input(&[1, 3, b'b', b'o', b'b', 2, b'p', b'w']).unwrap();
        assert_eq!(p, Progress::Authenticate { username: b"bob".to_vec(), password: b"pw".to_vec() });
        // A request pipelined behind the credentials waits for the decision.
        assert_eq!(s.handle_input(&connect_req(&[1, 192, 0, 2, 1], 22)).unwrap(), Progress::NeedMore);
        let p = s.authenticated(true).unwrap();
        assert_eq!(
            p,
            Progress::Request(Request { command: Command::Connect, target: Target::ip([192, 0, 2, 1], 22) })
        );
        assert_eq!(s.take_output(), vec![1, 0]);

        let mut s = Server::new(ServerConfig { require_auth: true });
        s.handle_input(&[5, 1, 2, 1, 1, b'x', 1, b'y']).unwrap();
        assert_eq!(s.authenticated(false), Err(Socks5Error::AuthFailed));
        assert_eq!(s.take_output(), vec![5, 2, 1, 1]);
    }

    #[test]
    fn credential_comparison() {
        use super::super::constant_time_eq;
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn no_acceptable_method_is_answered_then_refused() {
        let mut s = Server::new(ServerConfig { require_auth: true });
        assert_eq!(s.handle_input(&[5, 1, 0]), Err(Socks5Error::NoAcceptableMethod));
        assert_eq!(s.take_output(), vec![5, 0xFF]);
        assert_eq!(s.handle_input(&[5]), Err(Socks5Error::WrongState));
    }

    #[test]
    fn udp_associate_and_ipv6() {
        let mut s = Server::new(ServerConfig::default());
        let mut req = vec![5, 1, 0, 5, 3, 0, 4];
        req.extend_from_slice(&[0u8; 16]);
        req.extend_from_slice(&[0, 0]);
        let p = s.handle_input(&req).unwrap();
        let unspecified: std::net::IpAddr = "::".parse().unwrap();
        assert_eq!(
            p,
            Progress::Request(Request { command: Command::UdpAssociate, target: Target::ip(unspecified, 0) })
        );
    }

    #[test]
    fn bad_requests_get_the_matching_reply_code() {
        let cases: &[(&[u8], Socks5Error, u8)] = &[
            (&[5, 2, 0, 1, 1, 2, 3, 4, 0, 80], Socks5Error::CommandNotSupported(2), 7),
            (&[5, 1, 0, 9, 1, 2, 3, 4, 0, 80], Socks5Error::AddressTypeNotSupported(9), 8),
            (&[5, 1, 0, 3, 0, 0, 80], Socks5Error::BadHostName, 1),
            (&[5, 1, 1, 1, 1, 2, 3, 4, 0, 80], Socks5Error::BadReserved, 1),
        ];
        for (req, err, code) in cases {
            let mut s = Server::new(ServerConfig::default());
            s.handle_input(&[5, 1, 0]).unwrap();
            s.take_output();
            assert_eq!(s.handle_input(req), Err(*err));
            assert_eq!(s.take_output()[..2], [5, *code]);
        }
        let mut s = Server::new(ServerConfig::default());
        assert_eq!(s.handle_input(b"GET / HTTP/1.1\r\n"), Err(Socks5Error::BadVersion(b'G')));
    }

    #[test]
    fn input_is_bounded() {
        let mut s = Server::new(ServerConfig::default());
        s.handle_input(&[5, 1, 0]).unwrap();
        s.handle_input(&connect_req(&[1, 1, 1, 1, 1], 1)).unwrap();
        assert_eq!(s.handle_input(&vec![0u8; MAX_BUFFERED + 1]), Err(Socks5Error::TooMuchInput));
    }
}

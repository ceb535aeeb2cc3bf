//! One end of one flow: sends its known byte pattern, verifies every byte it receives, over TLS
//! (rustls) or plaintext, on a smoltcp TCP socket.

use std::io::{Read, Write};

use smoltcp::socket::tcp;

/// Client flows use local ports from here, so the server knows a flow by its peer's port.
pub const FIRST_CLIENT_PORT: u16 = 20000;
/// TLS bytes rustls may buffer ahead of the socket.
const TLS_BUFFER: usize = 64 * 1024;

/// The byte at `offset` of the stream `flow` sends in direction `dir` (0 up, 1 down).
pub fn pattern(flow: u32, dir: u8, offset: u64) -> u8 {
    let x = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((flow as u64) << 32) ^ (dir as u64) << 60;
    (x ^ (x >> 29) ^ (x >> 47)) as u8
}

/// One end of a flow.
pub struct End {
    pub flow: Option<u32>,
    /// 0 when this end is the client (it sends "up"), 1 for the server.
    dir: u8,
    /// None: plaintext.
    tls: Option<rustls::Connection>,
    close_notify_sent: bool,
    total: u64,
    pub sent: u64,
    pub received: u64,
    closed: bool,
    pub peer_closed: bool,
    pub violations: Vec<String>,
}

/// `io::Write` onto a smoltcp socket; a full send buffer is `WouldBlock`.
struct SockWriter<'a>(&'a mut tcp::Socket<'static>);

impl Write for SockWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.send_slice(buf) {
            Ok(0) => Err(std::io::ErrorKind::WouldBlock.into()),
            Ok(n) => Ok(n),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl End {
    pub fn new(flow: Option<u32>, client: bool, mut tls: Option<rustls::Connection>, total: u64) -> End {
        if let Some(c) = &mut tls {
            c.set_buffer_limit(Some(TLS_BUFFER));
        }
        End {
            flow,
            dir: if client { 0 } else { 1 },
            tls,
            close_notify_sent: false,
            total,
            sent: 0,
            received: 0,
            closed: false,
            peer_closed: false,
            violations: Vec::new(),
        }
    }

    /// Both ways complete: everything sent and closed, everything received and the peer closed.
    pub fn done(&self) -> bool {
        self.closed && self.received == self.total && self.peer_closed
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < 4 {
            self.violations.push(what);
        }
    }

    fn verify(&mut self, data: &[u8]) {
        let Some(flow) = self.flow else { return };
        let peer_dir = 1 - self.dir;
        for (i, b) in data.iter().enumerate() {
            let at = self.received + i as u64;
            if at >= self.total {
                self.violation(format!("flow {flow}: {} bytes past the end", data.len() - i));
                break;
            }
            if *b != pattern(flow, peer_dir, at) {
                self.violation(format!("flow {flow} dir {peer_dir}: wrong byte at offset {at}"));
                break;
            }
        }
        self.received += data.len() as u64;
    }

    /// Moves bytes between the application, TLS and the socket as far as they go now.
    pub fn step(&mut self, sock: &mut tcp::Socket<'static>) {
        if !self.violations.is_empty() {
            // A broken end stays broken; rustls must not be driven after a fatal alert.
            return;
        }
        if self.flow.is_none() {
            if !sock.is_active() || sock.state() == tcp::State::SynReceived {
                return;
            }
            // The server learns which flow this is from the client's port.
            let port = sock.remote_endpoint().map_or(0, |e| e.port);
            self.flow = Some(port.wrapping_sub(FIRST_CLIENT_PORT) as u32);
        }
        let mut buf = [0u8; 16 * 1024];
        match self.tls.take() {
            None => self.step_plain(sock, &mut buf),
            Some(mut conn) => {
                self.step_tls(&mut conn, sock, &mut buf);
                self.tls = Some(conn);
            }
        }
    }

    fn step_plain(&mut self, sock: &mut tcp::Socket<'static>, buf: &mut [u8]) {
        while sock.can_recv() {
            let n = sock.recv_slice(buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            self.verify(&buf[..n]);
        }
        if !sock.may_recv() && sock.state() != tcp::State::SynSent {
            self.peer_closed = true;
        }
        let flow = self.flow.expect("known by now");
        while self.sent < self.total && sock.can_send() {
            let n = ((self.total - self.sent) as usize).min(buf.len());
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern(flow, self.dir, self.sent + i as u64);
            }
            let w = sock.send_slice(&buf[..n]).unwrap_or(0);
            if w == 0 {
                break;
            }
            self.sent += w as u64;
        }
        if self.sent == self.total && !self.closed && sock.may_send() {
            sock.close();
            self.closed = true;
        }
    }

    fn drain_plaintext(&mut self, conn: &mut rustls::Connection, flow: u32, buf: &mut [u8]) {
        loop {
            match conn.reader().read(buf) {
                Ok(0) => {
                    self.peer_closed = true;
                    return;
                }
                Ok(n) => {
                    let data = buf[..n].to_vec();
                    self.verify(&data);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // The peer closed TCP without close_notify: a truncation.
                    self.violation(format!("flow {flow}: {e}"));
                    self.peer_closed = true;
                    return;
                }
            }
        }
    }

    fn step_tls(&mut self, conn: &mut rustls::Connection, sock: &mut tcp::Socket<'static>, buf: &mut [u8]) {
        let flow = self.flow.expect("known by now");
        // Ciphertext in, plaintext out after each batch (rustls holds little received plaintext).
        self.drain_plaintext(conn, flow, buf);
        while sock.can_recv() && !self.peer_closed {
            let n = sock.recv_slice(buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            let mut input = &buf[..n];
            while !input.is_empty() {
                if let Err(e) = conn.read_tls(&mut input) {
                    self.violation(format!("flow {flow}: TLS input: {e}"));
                    return;
                }
                if let Err(e) = conn.process_new_packets() {
                    self.violation(format!("flow {flow}: TLS: {e}"));
                    return;
                }
                let mut plain = [0u8; 16 * 1024];
                self.drain_plaintext(conn, flow, &mut plain);
            }
        }
        // Our pattern into TLS, while rustls has room.
        while self.sent < self.total && !conn.is_handshaking() {
            let n = ((self.total - self.sent) as usize).min(buf.len());
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern(flow, self.dir, self.sent + i as u64);
            }
            match conn.writer().write(&buf[..n]) {
                Ok(0) | Err(_) => break,
                Ok(w) => self.sent += w as u64,
            }
        }
        if self.sent == self.total && !self.close_notify_sent && !conn.is_handshaking() {
            conn.send_close_notify();
            self.close_notify_sent = true;
        }
        // TLS records onto the socket.
        while conn.wants_write() && sock.can_send() {
            if conn.write_tls(&mut SockWriter(sock)).is_err() {
                break;
            }
        }
        if self.close_notify_sent && !conn.wants_write() && !self.closed && sock.may_send() {
            sock.close();
            self.closed = true;
        }
    }
}

//! The portal's outer TLS connection to the gate, fed to rustls one whole record at a time so
//! that it can stop exactly after the gate's close_notify: the bytes behind it never reach
//! rustls and are handed back raw by [`OuterClient::downgrade`].

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use tlsgate_record::frame::{Header, HEADER_LEN, MAX_CIPHERTEXT_TLS12};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// See the module docs.
pub struct OuterClient {
    tcp: TcpStream,
    conn: ClientConnection,
    /// Bytes read from the gate and not fed to rustls yet (whole records are fed, no more).
    inbuf: Vec<u8>,
    /// The gate's close_notify was processed.
    closed: bool,
}

impl std::fmt::Debug for OuterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OuterClient").field("inbuf", &self.inbuf.len()).finish_non_exhaustive()
    }
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        tlsgate_tls::describe::tls_error(&e, tlsgate_tls::describe::Peer::Server),
    )
}

/// The end of the whole record at the start of `buf`, if it is all there.
fn record_end(buf: &[u8]) -> io::Result<Option<usize>> {
    let Some(h) = buf.get(..HEADER_LEN) else { return Ok(None) };
    let header = Header::parse(h.try_into().expect("5 bytes"));
    if header.len as usize > MAX_CIPHERTEXT_TLS12 || header.version >> 8 != 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "gate sent something that is not a TLS record",
        ));
    }
    let end = HEADER_LEN + header.len as usize;
    Ok((buf.len() >= end).then_some(end))
}

impl OuterClient {
    /// Runs the handshake on `tcp`.
    pub async fn connect(
        tcp: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<OuterClient> {
        let conn = ClientConnection::new(config, name).map_err(tls_err)?;
        let mut c = OuterClient { tcp, conn, inbuf: Vec::new(), closed: false };
        c.flush().await?;
        while c.conn.is_handshaking() {
            let mut plain = Vec::new();
            c.read_records(&mut plain).await?;
            c.flush().await?;
            if c.conn.is_handshaking() && c.peer_closed() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "gate closed during the handshake"));
            }
        }
        Ok(c)
    }

    /// Sends everything rustls has queued.
    async fn flush(&mut self) -> io::Result<()> {
        let mut out = Vec::new();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut out)?;
        }
        if !out.is_empty() {
            self.tcp.write_all(&out).await?;
        }
        Ok(())
    }

    /// Seals and sends `data`.
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.conn.writer().write_all(data)?;
        self.flush().await
    }

    /// The gate's close_notify was read.
    pub fn peer_closed(&self) -> bool {
        self.closed
    }

    /// Reads until at least one record was processed (or the gate's close_notify was); its
    /// plaintext is appended to `plain`. Never feeds rustls a byte past the close_notify.
    pub async fn read_records(&mut self, plain: &mut Vec<u8>) -> io::Result<()> {
        loop {
            let mut progressed = false;
            while !self.peer_closed() {
                let Some(end) = record_end(&self.inbuf)? else { break };
                let mut record = &self.inbuf[..end];
                while !record.is_empty() {
                    self.conn.read_tls(&mut record)?;
                }
                self.inbuf.drain(..end);
                let state = match self.conn.process_new_packets() {
                    Ok(s) => s,
                    Err(e) => {
                        // The alert rustls queued, as far as the socket takes it.
                        let _ = self.flush().await;
                        return Err(tls_err(e));
                    }
                };
                self.closed = state.peer_has_closed();
                let n = state.plaintext_bytes_to_read();
                let at = plain.len();
                plain.resize(at + n, 0);
                self.conn.reader().read_exact(&mut plain[at..])?;
                progressed = true;
            }
            if progressed || self.peer_closed() {
                return Ok(());
            }
            self.inbuf.reserve(16 * 1024);
            if self.tcp.read_buf(&mut self.inbuf).await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "gate closed the connection"));
            }
        }
    }

    /// After the gate's close_notify: sends ours and ends the TLS session. Returns the socket and
    /// the raw bytes already read past the gate's close_notify.
    pub async fn downgrade(mut self) -> io::Result<(TcpStream, Vec<u8>)> {
        if !self.peer_closed() {
            return Err(io::Error::other("downgrade before the gate's close_notify"));
        }
        self.conn.send_close_notify();
        self.flush().await?;
        Ok((self.tcp, self.inbuf))
    }

    /// Ends the session: close_notify, then FIN.
    pub async fn close(mut self) {
        self.conn.send_close_notify();
        let _ = self.flush().await;
        let _ = self.tcp.shutdown().await;
    }
}

//! The server name a ClientHello asks for, read from the first handshake record.
//!
//! rustls's unbuffered server connection does not expose the SNI, and the session table wants
//! it; this reads it from the record the engine hands to rustls anyway. A ClientHello split
//! over several records (rare: it needs over 16 KiB) yields `None`, as does anything malformed.

/// A bounds-checked reader: every read past the end yields `None`.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3).map(|b| (b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize)
    }
}

const CLIENT_HELLO: usize = 1;
const EXT_SERVER_NAME: usize = 0;
const HOST_NAME: usize = 0;

/// The SNI host name in a handshake record's body holding a ClientHello.
pub fn client_hello_sni(body: &[u8]) -> Option<String> {
    let mut c = Cursor(body);
    if c.u8()? != CLIENT_HELLO {
        return None;
    }
    let n = c.u24()?;
    let mut hello = Cursor(c.take(n)?);
    hello.take(2 + 32)?; // legacy_version, random
    let n = hello.u8()?;
    hello.take(n)?; // legacy_session_id
    let n = hello.u16()?;
    hello.take(n)?; // cipher_suites
    let n = hello.u8()?;
    hello.take(n)?; // legacy_compression_methods
    let n = hello.u16()?;
    let mut exts = Cursor(hello.take(n)?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let n = exts.u16()?;
        let data = exts.take(n)?;
        if kind != EXT_SERVER_NAME {
            continue;
        }
        let mut list = Cursor(data);
        let n = list.u16()?;
        let mut names = Cursor(list.take(n)?);
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let n = names.u16()?;
            let name = names.take(n)?;
            if name_type == HOST_NAME {
                return std::str::from_utf8(name).ok().map(str::to_owned);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello body with the given extensions block.
    fn hello(exts: &[u8]) -> Vec<u8> {
        let mut h = vec![3, 3];
        h.extend_from_slice(&[7; 32]);
        h.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        h.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        h.extend_from_slice(exts);
        let mut m = vec![1];
        m.extend_from_slice(&(h.len() as u32).to_be_bytes()[1..]);
        m.extend_from_slice(&h);
        m
    }

    fn sni_ext(name: &[u8]) -> Vec<u8> {
        let mut entry = vec![0];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name);
        let mut data = (entry.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&entry);
        let mut e = vec![0, 0];
        e.extend_from_slice(&(data.len() as u16).to_be_bytes());
        e.extend_from_slice(&data);
        e
    }

    #[test]
    fn finds_the_name_after_other_extensions() {
        let mut exts = vec![0, 23, 0, 0]; // extended_master_secret, empty
        exts.extend(sni_ext(b"example.com"));
        assert_eq!(client_hello_sni(&hello(&exts)).as_deref(), Some("example.com"));
    }

    #[test]
    fn none_without_sni_or_when_malformed() {
        assert_eq!(client_hello_sni(&hello(&[0, 23, 0, 0])), None);
        let full = hello(&sni_ext(b"example.com"));
        for cut in 0..full.len() {
            assert_eq!(client_hello_sni(&full[..cut]), None, "cut at {cut}");
        }
        assert_eq!(client_hello_sni(&[2, 0, 0, 0]), None, "not a ClientHello");
        assert_eq!(client_hello_sni(&hello(&sni_ext(&[0xff, 0xfe]))), None, "not UTF-8");
    }
}

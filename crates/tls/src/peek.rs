//! Reading the server name of a ClientHello without answering it, to decide where a connection
//! goes before anything is sent on (transparent policy).

use rustls::server::Acceptor;

/// What the bytes read so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// Could still become a whole ClientHello.
    NeedMore,
    /// Not a TLS ClientHello (plaintext, or garbage).
    NotTls,
    /// A complete ClientHello, with its SNI if it sent one.
    Hello(Option<String>),
}

/// Looks at the first bytes of a connection. Pure: call again with more bytes when `NeedMore`.
pub fn client_hello_sni(bytes: &[u8]) -> Peek {
    // A handshake record of TLS 1.0-1.3 framing: 0x16 0x03 0x0?.
    match bytes {
        [] => return Peek::NeedMore,
        [0x16] | [0x16, 0x03] => return Peek::NeedMore,
        [0x16, 0x03, ..] => {}
        _ => return Peek::NotTls,
    }
    let mut acceptor = Acceptor::default();
    let mut input = bytes;
    while !input.is_empty() {
        match acceptor.read_tls(&mut input) {
            Ok(0) | Err(_) => return Peek::NotTls,
            Ok(_) => {}
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => Peek::Hello(accepted.client_hello().server_name().map(str::to_owned)),
        Ok(None) => Peek::NeedMore,
        Err(_) => Peek::NotTls,
    }
}

/// The fuzz target's check: no input panics, and once the bytes are known not to be TLS, or to
/// hold a whole ClientHello, more bytes never change that verdict.
pub fn fuzz_check(data: &[u8]) {
    let whole = client_hello_sni(data);
    if let Some(split) = data.first().map(|b| usize::from(*b) % (data.len() + 1)) {
        let prefix = client_hello_sni(&data[..split]);
        if prefix != Peek::NeedMore {
            assert_eq!(prefix, whole, "a verdict on {split} bytes changed with more");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(name: &str) -> Vec<u8> {
        let config = rustls::ClientConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let mut c =
            rustls::ClientConnection::new(std::sync::Arc::new(config), name.to_string().try_into().unwrap())
                .unwrap();
        let mut out = Vec::new();
        c.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn sni_of_a_whole_hello_and_need_more_before() {
        let h = hello("a.example.test");
        for cut in 0..h.len() {
            assert_eq!(client_hello_sni(&h[..cut]), Peek::NeedMore, "at {cut}");
        }
        assert_eq!(client_hello_sni(&h), Peek::Hello(Some("a.example.test".into())));
    }

    #[test]
    fn plaintext_and_garbage_are_not_tls() {
        assert_eq!(client_hello_sni(b"GET / HTTP/1.1\r\n"), Peek::NotTls);
        assert_eq!(
            client_hello_sni(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Peek::NotTls
        );
    }
}

//! The record stream holds no buffer while idle but for the TLS 1.3 session ticket waiting for the
//! first write: after the handshake, after a read too small for what arrived (the rest held,
//! then given out and freed), after a large write. A used-up transmit key is replaced with a
//! KeyUpdate the client follows.

use std::io::{Read, Write};
use std::net::TcpStream as StdTcp;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tlsgate_config::{Config, KtlsMode};
use tlsgate_io::ktls::ClientStream;
use tlsgate_io::terminate::handshake::accept;
use tlsgate_io::terminate::routes::Routes;
use tlsgate_tls::pki::TestCa;
use tlsgate_tls::server::listener_tls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIG: usize = 100_000;

/// A blocking rustls client: sends 3000 bytes, reads `BIG` bytes back, then waits for the
/// server's close.
fn client(addr: std::net::SocketAddr, ca_pem: String) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap()).unwrap();
        let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let conn = rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
        let mut s = rustls::StreamOwned::new(conn, StdTcp::connect(addr).unwrap());
        s.write_all(&[7u8; 3000]).unwrap();
        let mut got = vec![0u8; BIG];
        s.read_exact(&mut got).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        got
    })
}

#[tokio::test]
async fn nothing_is_held_between_reads_and_writes() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test ca").unwrap();
    let (cert, key) = ca.issue_server(&["localhost"]).unwrap().write(dir.path(), "server").unwrap();
    let config = Config::from_toml(&format!(
        r#"
[[terminate.listener]]
listen = "127.0.0.1:0"
  [[terminate.listener.certificate]]
  cert = "{}"
  key = "{}"
  default = true
  [[terminate.listener.route]]
  backends = ["127.0.0.1:9"]
"#,
        cert.display(),
        key.display()
    ))
    .unwrap();
    let listener = &config.terminate.as_ref().unwrap().listener[0];
    let tls = listener_tls(listener, false).unwrap();
    let routes = Routes::from_config(listener).unwrap();

    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = client(socket.local_addr().unwrap(), ca.cert_pem().to_string());
    let (tcp, _) = socket.accept().await.unwrap();
    // tlsgate's own record layer, which this test is about (the kernel's: tests/ktls-vm).
    let est = accept(tcp, Vec::new(), &tls, &routes, "test", true, KtlsMode::Off).await.unwrap();
    // A new transmit key every 3 records: the 100 000-byte write below (7 records) crosses two
    // KeyUpdates, which the client must follow to read it all.
    let ClientStream::Records(stream) = *est.stream else { panic!("ktls off: tlsgate's record layer") };
    let mut stream = stream.with_tx_key_records(3);
    let s = &mut stream;

    // The TLS 1.3 session ticket waits to leave with the first write: only its own bytes.
    let ticket = s.held();
    assert!(ticket > 0 && ticket < 1024, "{s:?}");
    // A 100-byte read of a 3000-byte record: the rest is held, then handed out and freed.
    let mut small = [0u8; 100];
    s.read_exact(&mut small).await.unwrap();
    assert_eq!(s.held(), 2900 + ticket, "{s:?}");
    let mut rest = vec![0u8; 2900];
    s.read_exact(&mut rest).await.unwrap();
    assert!(small.iter().chain(&rest).all(|&b| b == 7));
    assert_eq!(s.held(), ticket, "{s:?}");

    // A large write, the ticket in front: sealed in the thread's scratch; once flushed nothing
    // stays.
    let data: Vec<u8> = (0..BIG).map(|i| (i % 253) as u8).collect();
    s.write_all(&data).await.unwrap();
    s.flush().await.unwrap();
    assert_eq!(s.held(), 0, "{s:?}");
    s.shutdown().await.unwrap();
    assert_eq!(peer.join().unwrap(), data);
}

/// The downgrade: both sides send close_notify and the connection goes on raw. Bytes the client
/// sent right behind its close_notify arrive in the same read as the alert; the stream opens
/// none of them and hands them back, in order, with the socket.
#[tokio::test]
async fn into_raw_parts_hands_back_the_bytes_read_past_close_notify() {
    use tlsgate_io::connect::outer_client::OuterClient;

    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test ca").unwrap();
    let (cert, key) = ca.issue_server(&["localhost"]).unwrap().write(dir.path(), "server").unwrap();
    let config = Config::from_toml(&format!(
        "[[terminate.listener]]\nlisten = \"127.0.0.1:0\"\n  [[terminate.listener.certificate]]\n  cert = \"{}\"\n  \
         key = \"{}\"\n  default = true\n  [[terminate.listener.route]]\n  backends = [\"127.0.0.1:9\"]\n",
        cert.display(),
        key.display()
    ))
    .unwrap();
    let listener = &config.terminate.as_ref().unwrap().listener[0];
    let tls = listener_tls(listener, false).unwrap();
    let routes = Routes::from_config(listener).unwrap();
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap()).unwrap();
    let client_config =
        Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth());
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
    let client = tokio::spawn(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut outer =
            OuterClient::connect(tcp, client_config, "localhost".try_into().unwrap()).await.unwrap();
        outer.write_all(b"before").await.unwrap();
        let mut plain = Vec::new();
        while !outer.peer_closed() {
            outer.read_records(&mut plain).await.unwrap();
        }
        assert_eq!(plain, b"answer");
        let (mut tcp, mut raw) = outer.downgrade().await.unwrap();
        // Raw bytes right behind our close_notify; the server reads only once both are there.
        tcp.write_all(b"raw from the client").await.unwrap();
        sent_tx.send(()).unwrap();
        tcp.shutdown().await.unwrap();
        tcp.read_to_end(&mut raw).await.unwrap();
        raw
    });

    let (tcp, _) = socket.accept().await.unwrap();
    let est = accept(tcp, Vec::new(), &tls, &routes, "test", false, KtlsMode::Off).await.unwrap();
    let ClientStream::Records(mut stream) = *est.stream else { panic!("ktls off: tlsgate's record layer") };
    let mut got = [0u8; 6];
    stream.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"before");
    stream.write_all(b"answer").await.unwrap();
    stream.send_close_notify().await.unwrap();
    // Not before the client's close_notify: the stream is refused and given back.
    let mut stream = stream.into_raw_parts().unwrap_err();
    sent_rx.await.unwrap();
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).await.unwrap(), 0, "nothing inside TLS after the answer");
    let parts = stream.into_raw_parts().unwrap();
    assert_eq!(parts.read_ahead, b"raw from the client", "read with the close_notify, never opened");
    let mut tcp = parts.tcp;
    tcp.write_all(b"raw from the server").await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut tail = Vec::new();
    tcp.read_to_end(&mut tail).await.unwrap();
    assert!(tail.is_empty());
    assert_eq!(client.await.unwrap(), b"raw from the server");
}

//! The full proxy's TLS end (`proxy::tls::TlsEnd`) on a real rustls client in memory: the
//! handshake and records both ways for every suite, byte by byte, a key update, close_notify,
//! and the client's bad input each ending the end with a client-side error.

mod common;

use common::*;
use rustls::pki_types::ServerName;
use rustls::ClientConnection;
use std::io::{Read, Write};
use tlsgate_inline::proxy::tls::{Status, TlsEnd, TlsError};

/// A client and the proxy's end, handshake done; returns what the client already sent after it.
fn connected(suite: rustls::SupportedCipherSuite) -> (ClientConnection, TlsEnd) {
    let (server, client) = configs(suite);
    let mut c = ClientConnection::new(client, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut end = TlsEnd::new(server).unwrap();
    let (mut to_client, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let mut wire = Vec::new();
        c.write_tls(&mut wire).unwrap();
        end.feed(&wire);
        assert_eq!(end.process(&mut to_client, &mut plain, 1 << 20), Ok(Status::Open));
        c.read_tls(&mut &to_client[..]).unwrap();
        to_client.clear();
        c.process_new_packets().unwrap();
        if !c.is_handshaking() && end.is_established() {
            break;
        }
    }
    assert!(end.is_established() && !c.is_handshaking());
    assert!(plain.is_empty());
    (c, end)
}

#[test]
fn records_both_ways_for_every_suite_fed_byte_by_byte() {
    for suite in all_suites() {
        let (mut c, mut end) = connected(suite);
        let request: Vec<u8> = (0..40_000u32).map(|i| (i * 7) as u8).collect();
        c.writer().write_all(&request).unwrap();
        let mut wire = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        let (mut to_client, mut plain) = (Vec::new(), Vec::new());
        for b in &wire {
            end.feed(std::slice::from_ref(b));
            assert_eq!(end.process(&mut to_client, &mut plain, 1 << 20), Ok(Status::Open));
        }
        assert_eq!(plain, request, "{suite:?}");
        assert_eq!(end.buffered(), 0);
        // Server plaintext sealed in pieces reaches the client intact.
        let answer: Vec<u8> = (0..50_000u32).map(|i| (i * 13) as u8).collect();
        for piece in answer.chunks(16384) {
            end.seal(piece, &mut to_client).unwrap();
        }
        end.close_notify(&mut to_client);
        let mut got = Vec::new();
        let mut rd = &to_client[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets().unwrap();
            let _ = c.reader().read_to_end(&mut got);
        }
        assert_eq!(got, answer, "{suite:?}");
        let s = end.session().unwrap();
        assert_eq!(s.sni.as_deref(), Some("localhost"));
    }
}

#[test]
fn a_backpressured_end_takes_records_only_below_its_bound() {
    let (mut c, mut end) = connected(TLS13[0]);
    c.writer().write_all(&[7u8; 30_000]).unwrap();
    let mut wire = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut wire).unwrap();
    }
    end.feed(&wire);
    let (mut to_client, mut plain) = (Vec::new(), Vec::new());
    // Bound 1: one record at most is taken, the rest waits in the end.
    end.process(&mut to_client, &mut plain, 1).unwrap();
    assert!(!plain.is_empty() && plain.len() < 30_000 && end.buffered() > 0);
    plain.clear();
    end.process(&mut to_client, &mut plain, 1 << 20).unwrap();
    assert_eq!(end.buffered(), 0);
}

#[test]
fn a_key_update_requested_by_the_client_is_answered() {
    let (mut c, mut end) = connected(TLS13[2]);
    c.refresh_traffic_keys().unwrap();
    c.writer().write_all(b"after the update").unwrap();
    let mut wire = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut wire).unwrap();
    }
    end.feed(&wire);
    let (mut to_client, mut plain) = (Vec::new(), Vec::new());
    assert_eq!(end.process(&mut to_client, &mut plain, 1 << 20), Ok(Status::Open));
    assert_eq!(plain, b"after the update");
    // rustls's refresh requests an update in return: the end's own KeyUpdate, then data under
    // the new key.
    assert!(!to_client.is_empty());
    end.seal(b"answer", &mut to_client).unwrap();
    c.read_tls(&mut &to_client[..]).unwrap();
    c.process_new_packets().unwrap();
    let mut got = Vec::new();
    let _ = c.reader().read_to_end(&mut got);
    assert_eq!(got, b"answer");
}

#[test]
fn close_notify_from_the_client_closes_the_end() {
    let (mut c, mut end) = connected(TLS12[0]);
    c.writer().write_all(b"last words").unwrap();
    c.send_close_notify();
    let mut wire = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut wire).unwrap();
    }
    end.feed(&wire);
    let (mut to_client, mut plain) = (Vec::new(), Vec::new());
    assert_eq!(end.process(&mut to_client, &mut plain, 1 << 20), Ok(Status::Closed));
    assert_eq!(plain, b"last words");
    // Nothing more is taken from the client, but the server's last words are still sealed.
    end.feed(b"after close_notify");
    assert_eq!(end.buffered(), 0);
    end.seal(b"goodbye", &mut to_client).unwrap();
    end.close_notify(&mut to_client);
    c.read_tls(&mut &to_client[..]).unwrap();
    c.process_new_packets().unwrap();
    let mut got = Vec::new();
    let _ = c.reader().read_to_end(&mut got);
    assert_eq!(got, b"goodbye");
}

#[test]
fn bad_client_input_fails_the_end_on_the_client_side() {
    let (server, _) = configs(TLS13[0]);
    // Not TLS at all.
    let mut end = TlsEnd::new(server.clone()).unwrap();
    end.feed(b"GET / HTTP/1.1\r\n\r\n");
    let r = end.process(&mut Vec::new(), &mut Vec::new(), 1 << 20);
    assert_eq!(r, Err(TlsError::NotTls(b'G')));
    assert!(r.unwrap_err().to_string().starts_with("client:"));
    // A handshake record longer than any record may be.
    let mut end = TlsEnd::new(server.clone()).unwrap();
    end.feed(&[22, 3, 1, 0xff, 0xff]);
    assert_eq!(end.process(&mut Vec::new(), &mut Vec::new(), 1 << 20), Err(TlsError::BadRecord(22, 65535)));
    // A handshake record that is not a ClientHello: rustls's alert goes to the client.
    let mut end = TlsEnd::new(server).unwrap();
    end.feed(&[22, 3, 1, 0, 4, 99, 0, 0, 0]);
    let mut to_client = Vec::new();
    assert!(matches!(end.process(&mut to_client, &mut Vec::new(), 1 << 20), Err(TlsError::Handshake(_))));
    assert_eq!(to_client.first(), Some(&21), "an alert record for the client");
    // After an error the end takes nothing more.
    end.feed(b"more");
    assert_eq!(end.buffered(), 0);
    // A tampered record after the handshake.
    let (mut c, mut end) = connected(TLS13[1]);
    c.writer().write_all(b"secret").unwrap();
    let mut wire = Vec::new();
    c.write_tls(&mut wire).unwrap();
    let last = wire.len() - 1;
    wire[last] ^= 1;
    end.feed(&wire);
    let mut plain = Vec::new();
    assert!(matches!(end.process(&mut Vec::new(), &mut plain, 1 << 20), Err(TlsError::Session(_))));
    assert!(plain.is_empty(), "nothing of a record failing its tag");
}

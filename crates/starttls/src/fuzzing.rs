//! Entry points for the fuzz targets in `fuzz/`; each checks invariants beyond "no panic".

use crate::{ClientSide, GreetingSkip, PostgresClientFilter, Protocol, ServerSide, Step};

/// The first byte picks the protocol, the second how the rest is cut into reads.
fn split(data: &[u8]) -> Option<(Protocol, Vec<&[u8]>)> {
    let (&p, rest) = data.split_first()?;
    let (&cut, rest) = rest.split_first()?;
    let protocol = Protocol::ALL[p as usize % Protocol::ALL.len()];
    let size = (cut as usize % 64) + 1;
    Some((protocol, rest.chunks(size).collect()))
}

/// A client's arbitrary bytes against the server side: replies stay bounded, nothing is accepted
/// after the prologue ended, and the upgrade never leaves unread plaintext behind.
pub fn server_side(data: &[u8]) {
    let Some((protocol, chunks)) = split(data) else { return };
    let mut server = ServerSide::new(protocol, "mx.example");
    let mut sent = server.take_output().len();
    for chunk in chunks {
        let result = server.receive(chunk);
        sent += server.take_output().len();
        assert!(sent <= 64 * 1024, "{sent} bytes of replies");
        if result.is_err() {
            return;
        }
        match server.state() {
            Step::NeedInput => {}
            Step::StartTls | Step::Close => {
                assert!(server.receive(b"x").is_err() || server.state() == Step::Close);
                return;
            }
        }
    }
}

/// An upstream's arbitrary bytes against the client side (and the greeting skip and the
/// PostgreSQL filter on the same bytes): the client's greeting is bounded, and the upgrade is
/// only reported with no upstream byte left over.
pub fn client_side(data: &[u8]) {
    let Some((protocol, chunks)) = split(data) else { return };
    let mut client = ClientSide::new(protocol, "gate.example");
    let mut skip = GreetingSkip::new(protocol);
    let mut filter = PostgresClientFilter::new();
    let _ = client.take_output();
    let mut client_alive = true;
    let mut skip_alive = true;
    for chunk in chunks {
        if client_alive {
            match client.receive(chunk) {
                Ok(()) => {
                    let _ = client.take_output();
                    if client.state() == Step::StartTls {
                        assert!(client.greeting_for_client().len() <= 100 * 8192 * 2);
                        assert!(client.receive(b"x").is_err());
                        client_alive = false;
                    }
                }
                Err(_) => client_alive = false,
            }
        }
        if skip_alive && !skip.is_done() {
            match skip.receive(chunk) {
                Ok(Some(n)) => assert!(n <= chunk.len()),
                Ok(None) => {}
                Err(_) => skip_alive = false,
            }
        }
        if filter.receive(chunk).is_ok() {
            assert!(filter.take_reply().len() <= 2, "more than two negotiation requests answered");
        }
    }
}

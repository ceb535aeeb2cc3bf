//! Entry points for the fuzz targets in `fuzz/`; each checks invariants beyond "no panic".

use crate::endpoint::{Config, Endpoint, Role};
use crate::proxy_client::{HttpConnectClient, Socks5Client};
use crate::socks5::{udp, Progress, Reply, Server, ServerConfig};
use crate::wire::{decode, DecodeError, Frame, Hello};
use crate::Target;
use std::time::{Duration, Instant};

/// Decodes frames back to back. Each decoded frame re-encodes to bytes that decode to a frame
/// encoding identically (decoding normalises: names lower-cased, IP-literal names become
/// addresses, long reasons cut, Hello extensions dropped — once, then it is stable).
pub fn wire_decode(mut data: &[u8]) {
    loop {
        match decode(data, 1 << 16) {
            Ok((frame, used)) => {
                let mut once = Vec::new();
                frame.encode(&mut once);
                let (again, n) = decode(&once, 1 << 16).expect("our own encoding decodes");
                assert_eq!(n, once.len());
                let mut twice = Vec::new();
                again.encode(&mut twice);
                assert_eq!(once, twice, "encoding not stable for {frame:?}");
                data = &data[used..];
            }
            Err(DecodeError::Incomplete { needed }) => {
                assert!(needed > 0);
                return;
            }
            Err(_) => return,
        }
    }
}

/// An endpoint that has seen a valid Hello — a gate, or (first byte odd) a portal with a few
/// sessions already opened so OpenReply and data for them are meaningful — fed arbitrary records
/// in arbitrary cuts, with the application accepting everything, reading everything and writing
/// back, and time passing.
pub fn endpoint_input(data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let mut now = Instant::now();
    let role = if mode & 1 == 1 { Role::Portal } else { Role::Gate };
    let mut ep = Endpoint::new(Config::new(role), now);
    let mut hello = Vec::new();
    let peer_role = if role == Role::Portal { 1 } else { 0 };
    Frame::Hello(Hello { min_version: 1, max_version: 1, role: peer_role, max_frame_len: 1 << 16 })
        .encode(&mut hello);
    ep.handle_input(now, &hello).expect("valid hello");
    if role == Role::Portal {
        for i in 0..4u8 {
            let protocol = if i == 3 { crate::wire::Protocol::UDP } else { crate::wire::Protocol::TCP };
            ep.open(now, protocol, Target::ip([10, 0, 0, i], 80)).expect("room for sessions");
        }
    }
    let mut out = Vec::new();
    while ep.poll_transmit(now, &mut out) {}
    let mut buf = [0u8; 4096];
    // The first byte of each chunk picks the chunk length, so cuts land everywhere.
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let (chunk, tail) = tail.split_at((len as usize).min(tail.len()));
        rest = tail;
        let _ = ep.handle_input(now, chunk);
        while let Some(ev) = ep.poll_event() {
            if let crate::Event::OpenRequest { id, .. } = ev {
                let _ = ep.accept(now, id);
                let _ = ep.write(now, id, b"reply");
            } else if let crate::Event::Readable { id } = ev {
                while let Ok(n) = ep.read(now, id, &mut buf) {
                    if n == 0 {
                        let _ = ep.finish(now, id);
                        break;
                    }
                }
            }
        }
        out.clear();
        while ep.poll_transmit(now, &mut out) {
            assert!(out.len() < 1 << 24, "transmit must terminate");
        }
        now += Duration::from_secs(len as u64);
        ep.handle_timeout(now);
        assert!(ep.session_count() <= ep.config().max_sessions);
    }
}

/// The SOCKS5 server (with and without auth), the UDP header, and both proxy clients.
pub fn socks5(data: &[u8]) {
    for require_auth in [false, true] {
        let mut s = Server::new(ServerConfig { require_auth });
        for chunk in data.chunks(7) {
            match s.handle_input(chunk) {
                Ok(Progress::Authenticate { .. }) => {
                    let _ = s.authenticated(true);
                }
                Ok(Progress::Request(_)) => {
                    let _ = s.reply(Reply::SUCCEEDED, &Target::ip([127, 0, 0, 1], 1080));
                }
                Ok(Progress::NeedMore) => {}
                Err(_) => break,
            }
            assert!(s.take_output().len() < 1024);
        }
    }
    if let Ok((target, payload)) = udp::decode(data) {
        let mut again = Vec::new();
        udp::encode(&target, payload, &mut again);
        assert_eq!(udp::decode(&again), Ok((target, payload)));
    }
    let gate = Target::ip([192, 0, 2, 1], 443);
    let _ = HttpConnectClient::new(&gate, None).handle_input(data);
    let mut c = Socks5Client::new(gate, Some((b"u", b"p")));
    for chunk in data.chunks(5) {
        if c.handle_input(chunk).is_err() {
            break;
        }
    }
}

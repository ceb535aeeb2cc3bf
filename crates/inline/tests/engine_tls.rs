//! The engine end to end on packets: a rustls client's bytes in TCP segments built by hand, a
//! scripted plaintext server, the engine between. The server sees plaintext at the client's own
//! sequence numbers; the client sees records after the engine's handshake bytes.

mod common;

use common::*;
use rustls::pki_types::ServerName;
use rustls::ClientConnection;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;
use tlsgate_inline::engine::{Config, Engine, Limits, Service};
use tlsgate_inline::packet::{self, Build, Control};
use tlsgate_inline::seq::Seq;
use tlsgate_inline::tables::{FlowKey, FlowState, Mode, Release};
use tlsgate_inline::tls_flow::{FAILED_LINGER, PARK_AFTER};
use tlsgate_record::crypto::AEAD_CONTEXT_BYTES;

const CLIENT: &str = "10.0.0.1:40000";
const SERVICE: &str = "10.0.0.2:443";
const BACKEND: &str = "10.0.0.2:80";
/// Client ISN just below the wrap: its stream crosses 2^32 during the handshake.
const CISN: u32 = u32::MAX - 100;
const SISN: u32 = 7000;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The test's two ends: a rustls client on hand-built segments and a scripted server.
struct Net {
    engine: Engine,
    client: ClientConnection,
    /// Bytes the client sent and received (stream offsets less one).
    c_sent: u32,
    c_recv: u32,
    /// Packets the engine sent to the server not yet looked at, and every segment it sent the
    /// client.
    to_server: Vec<Vec<u8>>,
    to_client: Vec<packet::Segment>,
    /// The same segments as sent (their options).
    raw_to_client: Vec<Vec<u8>>,
    now: Duration,
    /// The client's SYN offers SACK.
    sack: bool,
    /// The server's SYN-ACK accepts SACK (when offered).
    server_sack: bool,
}

impl Net {
    fn new(suite: rustls::SupportedCipherSuite) -> Net {
        Net::with_release(suite, Release::Buffered)
    }

    fn with_release(suite: rustls::SupportedCipherSuite, release: Release) -> Net {
        Net::with_limits(suite, release, Limits::default())
    }

    fn with_limits(suite: rustls::SupportedCipherSuite, release: Release, limits: Limits) -> Net {
        Net::with_client(suite, release, limits, |_| {})
    }

    /// [`Net::with_limits`] with the client's configuration changed by `client`.
    fn with_client(
        suite: rustls::SupportedCipherSuite,
        release: Release,
        limits: Limits,
        client: impl FnOnce(&mut rustls::ClientConfig),
    ) -> Net {
        let (server_cfg, client_cfg) = configs(suite);
        let engine = Engine::new(Config {
            services: vec![Service {
                addr: sa(SERVICE),
                server_port: Some(80),
                mode: Mode::Direct,
                release,
                tls: server_cfg,
                pool: Vec::new(),
            }],
            limits,
        });
        // Secret extraction: a test may take the client's keys to write what rustls never writes.
        let mut client_cfg = (*client_cfg).clone();
        client_cfg.enable_secret_extraction = true;
        client(&mut client_cfg);
        let client = ClientConnection::new(
            std::sync::Arc::new(client_cfg),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        Net {
            engine,
            client,
            c_sent: 0,
            c_recv: 0,
            to_server: Vec::new(),
            to_client: Vec::new(),
            raw_to_client: Vec::new(),
            now: Duration::ZERO,
            sack: false,
            server_sack: false,
        }
    }

    /// Feeds a packet; packets for the client go to the rustls client at once (checked in
    /// order), those for the server are kept.
    fn feed(&mut self, pkt: Vec<u8>) {
        self.now += Duration::from_millis(1);
        let mut out = Vec::new();
        self.engine.handle_packet(self.now, pkt, &mut out);
        self.take(out);
    }

    /// [`Net::feed`] through `Engine::handle_whole` (a GSO frame read where it lies).
    fn feed_whole(&mut self, pkt: &[u8]) {
        self.now += Duration::from_millis(1);
        let mut out = Vec::new();
        self.engine.handle_whole(self.now, pkt, &mut out);
        self.take(out);
    }

    fn take(&mut self, out: Vec<Vec<u8>>) {
        for p in out {
            assert!(packet::checksum_ok(&p));
            let seg = packet::parse(&p).unwrap();
            if seg.dst == sa(CLIENT) {
                assert_eq!(seg.src, sa(SERVICE));
                let payload = &p[seg.payload.clone()];
                if !payload.is_empty() && !seg.syn {
                    assert_eq!(seg.seq, Seq(SISN + 1 + self.c_recv), "records in order to the client");
                    self.client.read_tls(&mut &payload[..]).unwrap();
                    self.client.process_new_packets().unwrap();
                    self.c_recv += payload.len() as u32;
                }
                self.to_client.push(seg);
                self.raw_to_client.push(p);
            } else {
                assert_eq!(seg.dst, sa(BACKEND));
                self.to_server.push(p);
            }
        }
    }

    /// Whatever the client wants to send, in segments of at most 1460 bytes.
    fn client_sends(&mut self) -> usize {
        let bytes = client_output(&mut self.client);
        for chunk in bytes.chunks(1460) {
            let p = data(
                sa(CLIENT),
                sa(SERVICE),
                CISN.wrapping_add(1 + self.c_sent),
                SISN + 1 + self.c_recv,
                chunk,
            );
            self.c_sent += chunk.len() as u32;
            self.feed(p);
        }
        bytes.len()
    }
}

fn open_connection(n: &mut Net) {
    n.feed(syn_with_sack(sa(CLIENT), sa(SERVICE), CISN, None, n.sack));
    let s = n.to_server.pop().unwrap();
    assert_eq!(packet::parse(&s).unwrap().dst, sa(BACKEND));
    assert_eq!(offers_sack(&s), n.sack, "the server is offered SACK when the client offered it");
    n.feed(syn_with_sack(sa(BACKEND), sa(CLIENT), SISN, Some(CISN + 1), n.sack && n.server_sack));
    n.feed(data(sa(CLIENT), sa(SERVICE), CISN + 1, SISN + 1, &[]));
    // The client's ACK of the SYN-ACK reaches the server: its handshake completes.
    let ack = packet::parse(&n.to_server.pop().unwrap()).unwrap();
    assert_eq!((ack.seq, ack.ack), (Seq(CISN.wrapping_add(1)), Some(Seq(SISN + 1))));
    for _ in 0..10 {
        if !n.client.is_handshaking() && !n.client.wants_write() {
            break;
        }
        n.client_sends();
    }
    assert!(!n.client.is_handshaking());
    // The server saw nothing of the handshake but ACKs.
    for p in n.to_server.drain(..) {
        let seg = packet::parse(&p).unwrap();
        assert!(seg.payload.is_empty(), "handshake bytes leaked to the server");
    }
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";

fn fin(src: SocketAddr, dst: SocketAddr, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    Build { src, dst, seq: Seq(seq), ack: Some(Seq(ack)), control: Control::Fin, window: 502, payload }
        .emit()
        .unwrap()
}

#[test]
fn fins_are_translated_both_ways_with_close_notify_first() {
    for &suite in [TLS13[0], TLS12[0]].iter() {
        let mut n = Net::new(suite);
        open_connection(&mut n);
        n.client.writer().write_all(REQUEST).unwrap();
        n.client_sends();
        n.to_server.clear();
        let r = REQUEST.len() as u32;
        n.feed(data(sa(BACKEND), sa(CLIENT), SISN + 1, CISN.wrapping_add(1 + r), RESPONSE));
        // The server closes: the client gets close_notify, then the FIN right after it.
        let s_fin = SISN + 1 + RESPONSE.len() as u32;
        n.to_client.clear();
        n.feed(fin(sa(BACKEND), sa(CLIENT), s_fin, CISN.wrapping_add(1 + r), &[]));
        let f = n.to_client.iter().find(|s| s.fin).expect("FIN to the client");
        assert_eq!(f.seq, Seq(SISN + 1 + n.c_recv), "FIN after the close_notify record");
        assert!(n.client.process_new_packets().unwrap().peer_has_closed(), "close_notify first");
        // The client acknowledges the FIN: the server sees its own FIN acknowledged.
        let ack_fin = SISN + 1 + n.c_recv + 1;
        n.feed(data(sa(CLIENT), sa(SERVICE), CISN.wrapping_add(1 + n.c_sent), ack_fin, &[]));
        let a = packet::parse(&n.to_server.pop().expect("ACK to the server")).unwrap();
        assert_eq!(a.ack, Some(Seq(s_fin + 1)));
        // The client closes too: close_notify and FIN in one segment; the server gets a FIN
        // right after the request's plaintext, and its ACK of it reaches the client translated.
        n.client.send_close_notify();
        let bytes = client_output(&mut n.client);
        let seq = CISN.wrapping_add(1 + n.c_sent);
        n.c_sent += bytes.len() as u32;
        n.feed(fin(sa(CLIENT), sa(SERVICE), seq, ack_fin, &bytes));
        let f = packet::parse(&n.to_server.pop().expect("FIN to the server")).unwrap();
        assert!(f.fin);
        assert_eq!(f.seq, Seq(CISN.wrapping_add(1 + r)));
        n.to_client.clear();
        n.feed(data(sa(BACKEND), sa(CLIENT), s_fin + 1, CISN.wrapping_add(1 + r + 1), &[]));
        let a = n.to_client.last().expect("ACK to the client");
        assert_eq!(a.ack, Some(Seq(CISN.wrapping_add(1 + n.c_sent + 1))), "{suite:?}");
        // Past the engine's FIN: at the FIN's own number the client would drop it unread.
        assert_eq!(a.seq, Seq(SISN + 1 + n.c_recv + 1), "{suite:?}");
    }
}

/// The client closes first (close_notify and FIN), then the server answers and closes: every
/// segment the engine sends after a FIN stands past it, toward the server (its ACK of the
/// response) and toward the client (its ACK of the client's FIN): an ACK at the FIN's own number
/// lies left of the receiver's window and Linux drops it unread (RFC 9293 §3.10.7.4), and the
/// peer retransmits what it never saw acknowledged.
#[test]
fn segments_after_a_fin_stand_past_it_both_ways() {
    for &suite in [TLS13[0], TLS12[0]].iter() {
        let mut n = Net::new(suite);
        open_connection(&mut n);
        n.client.writer().write_all(REQUEST).unwrap();
        n.client.send_close_notify();
        let bytes = client_output(&mut n.client);
        let seq = CISN.wrapping_add(1 + n.c_sent);
        n.c_sent += bytes.len() as u32;
        n.feed(fin(sa(CLIENT), sa(SERVICE), seq, SISN + 1 + n.c_recv, &bytes));
        let r = REQUEST.len() as u32;
        let f = packet::parse(n.to_server.last().expect("FIN to the server")).unwrap();
        assert!(f.fin && f.seq == Seq(CISN.wrapping_add(1 + r)), "{suite:?}: {f:?}");
        // The server's response, acknowledging the request and the FIN; the client's ACK of
        // its records goes on to the server.
        n.to_server.clear();
        n.feed(data(sa(BACKEND), sa(CLIENT), SISN + 1, CISN.wrapping_add(1 + r + 1), RESPONSE));
        n.feed(data(
            sa(CLIENT),
            sa(SERVICE),
            seq.wrapping_add(bytes.len() as u32 + 1),
            SISN + 1 + n.c_recv,
            &[],
        ));
        let acks: Vec<_> = n.to_server.iter().map(|p| packet::parse(p).unwrap()).collect();
        assert!(!acks.is_empty(), "{suite:?}: the response is acknowledged to the server");
        for a in &acks {
            assert_eq!(a.seq, Seq(CISN.wrapping_add(1 + r + 1)), "{suite:?}: past the FIN: {a:?}");
        }
        // The server closes; its FIN reaches the client after close_notify, and the client's
        // ACK of it brings the server's FIN acknowledged.
        let s_fin = SISN + 1 + RESPONSE.len() as u32;
        n.to_client.clear();
        n.feed(fin(sa(BACKEND), sa(CLIENT), s_fin, CISN.wrapping_add(1 + r + 1), &[]));
        let f = n.to_client.iter().find(|s| s.fin).expect("FIN to the client").clone();
        n.to_client.clear();
        // The client's FIN again (its retransmission): the engine's ACK stands past its own FIN.
        n.feed(fin(sa(CLIENT), sa(SERVICE), seq, f.seq.0.wrapping_add(1), &bytes));
        for a in n.to_client.iter().filter(|s| !s.rst) {
            assert_eq!(a.seq, Seq(f.seq.0.wrapping_add(1)), "{suite:?}: past the FIN: {a:?}");
        }
    }
}

#[test]
fn a_request_and_response_cross_the_engine() {
    for &suite in TLS13.iter().chain(TLS12) {
        let mut n = Net::new(suite);
        open_connection(&mut n);
        let key = FlowKey { client: sa(CLIENT), server: sa(SERVICE) };
        let report = n.engine.report();
        assert_eq!(report.connection(&key).unwrap().state, FlowState::Established);
        assert_eq!(report.sessions.len(), 1, "{suite:?}");
        assert_eq!(report.sessions[0].sni.as_deref(), Some("localhost"));
        let version = if TLS13.contains(&suite) { "TLSv1_3" } else { "TLSv1_2" };
        assert_eq!(report.sessions[0].version, version);
        assert_eq!(Some(report.sessions[0].suite.as_str()), suite.suite().as_str());

        // The request: the server gets plaintext at the client's own first sequence number.
        let request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
        n.client.writer().write_all(request).unwrap();
        let handshake_sent = n.c_sent;
        n.client_sends();
        let p = n.to_server.pop().expect("plaintext to the server");
        let seg = packet::parse(&p).unwrap();
        assert_eq!(&p[seg.payload.clone()], request);
        assert_eq!(seg.seq, Seq(CISN.wrapping_add(1)), "the server sees the client's ISN + 1");
        assert_eq!(seg.dst.port(), 80);
        assert!(handshake_sent > 0);

        // The response: one server segment, one record, after the engine's handshake bytes.
        let response = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        let r = request.len() as u32;
        n.feed(data(sa(BACKEND), sa(CLIENT), SISN + 1, CISN.wrapping_add(1 + r), response));
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(k) = std::io::Read::read(&mut n.client.reader(), &mut buf) {
            if k == 0 {
                break;
            }
            got.extend_from_slice(&buf[..k]);
        }
        assert_eq!(got, response);
        // The server's ACK of the request, translated, acknowledges all the client sent.
        let report = n.engine.report();
        let row = report.connection(&key).unwrap();
        assert!(row.record_seqs.is_some());
        assert!(!row.pairs_down.is_empty());
        assert_eq!(row.up.inner_bytes, request.len() as u64, "plaintext to the server");
        assert_eq!(row.up.outer_bytes, n.c_sent as u64, "everything the client sent, in order");
        assert_eq!(row.down.inner_bytes, response.len() as u64);
        assert_eq!(row.down.outer_bytes, n.c_recv as u64, "everything the client received");
        assert_eq!(row.down.records, 1, "one record for the one server segment");
        // The engine's totals count the live flow's records and bytes.
        let stats = n.engine.stats();
        assert_eq!((stats.up, stats.down), (row.up, row.down), "{suite:?}");
        assert_eq!(stats.mac_failures, 0);
    }
}

/// The client's next record, "do not deliver", with a byte of its tag flipped.
fn tampered_record(n: &mut Net) -> Vec<u8> {
    n.client.writer().write_all(b"do not deliver").unwrap();
    let mut bytes = client_output(&mut n.client);
    let last = bytes.len() - 3;
    bytes[last] ^= 1;
    bytes
}

#[test]
fn a_tampered_record_resets_the_server_and_alerts_the_client() {
    let mut n = Net::new(TLS13[0]);
    open_connection(&mut n);
    let bytes = tampered_record(&mut n);
    let p = data(sa(CLIENT), sa(SERVICE), CISN.wrapping_add(1 + n.c_sent), SISN + 1 + n.c_recv, &bytes);
    let mut out = Vec::new();
    n.engine.handle_packet(Duration::from_secs(1), p, &mut out);
    let segs: Vec<_> = out.iter().map(|p| (packet::parse(p).unwrap(), p.clone())).collect();
    let to_server: Vec<_> = segs.iter().filter(|(s, _)| s.dst == sa(BACKEND)).collect();
    assert_eq!(to_server.len(), 1);
    assert!(to_server[0].0.rst, "RST to the server");
    assert!(to_server[0].0.payload.is_empty(), "no byte of the record reached the server");
    let to_client: Vec<_> = segs.iter().filter(|(s, _)| s.dst == sa(CLIENT)).collect();
    assert_eq!(to_client.len(), 1);
    let next = CISN.wrapping_add(1 + n.c_sent + bytes.len() as u32);
    let alert = failed_flow_ends_at_the_clients_next_data(&mut n, to_client[0], next);
    n.client.read_tls(&mut &alert[..]).unwrap();
    let err = n.client.process_new_packets().unwrap_err();
    assert!(format!("{err:?}").contains("BadRecordMac"), "{err:?}");
    // The ended flow stays in the totals, its failure counted once.
    let stats = n.engine.stats();
    assert_eq!(stats.mac_failures, 1);
    assert_eq!(stats.flows_reset, 1);
    assert!(stats.up.outer_bytes >= n.c_sent as u64 && stats.down.outer_bytes == n.c_recv as u64);
}

/// What a failed flow sent the client (`alert`: the alert record, and nothing else to the client)
/// and what follows: the alert goes with a FIN, and the flow waits, marked reset. Data the client
/// wrote before the alert reached it (`client_seq`, its ACK short of the alert) is dropped without
/// an answer, and so is its ACK of the alert and FIN; the same data again, now with that ACK, gets
/// RST there and ends the flow. Returns the alert record.
fn failed_flow_ends_at_the_clients_next_data(
    n: &mut Net,
    (alert, raw): &(packet::Segment, Vec<u8>),
    client_seq: u32,
) -> Vec<u8> {
    assert!(alert.fin && !alert.rst, "the alert goes with a FIN");
    let record = raw[alert.payload.clone()].to_vec();
    let after = alert.seq.0.wrapping_add(record.len() as u32 + 1);
    assert_eq!(n.engine.flow_count(), 1, "the flow waits for the client");
    assert_eq!(n.engine.report().connections[0].state, FlowState::Reset);
    let mut out = Vec::new();
    n.engine.handle_packet(n.now, data(sa(CLIENT), sa(SERVICE), client_seq, alert.seq.0, b"more"), &mut out);
    assert!(out.is_empty(), "no RST before the client has the alert: {out:?}");
    n.engine.handle_packet(n.now, data(sa(CLIENT), sa(SERVICE), client_seq, after, &[]), &mut out);
    assert!(out.is_empty(), "the client's ACK of the alert and FIN is taken in: {out:?}");
    n.engine.handle_packet(n.now, data(sa(CLIENT), sa(SERVICE), client_seq, after, b"more"), &mut out);
    assert_eq!(out.len(), 1, "one RST, nothing to the server");
    let rst = packet::parse(&out[0]).unwrap();
    assert!(rst.rst && rst.dst == sa(CLIENT) && rst.seq == Seq(after), "RST at the client's ACK: {rst:?}");
    assert_eq!(n.engine.flow_count(), 0);
    record
}

/// A failed flow whose client neither acknowledges nor writes: the alert and FIN go again after
/// the retransmission timeout, and at the linger's end the client gets RST and the flow goes.
#[test]
fn a_failed_flows_alert_is_resent_until_acknowledged_and_the_flow_reset_after_its_linger() {
    let mut n = Net::new(TLS13[0]);
    open_connection(&mut n);
    let bytes = tampered_record(&mut n);
    let failed_at = n.now;
    let mut out = Vec::new();
    let p = data(sa(CLIENT), sa(SERVICE), CISN.wrapping_add(1 + n.c_sent), SISN + 1 + n.c_recv, &bytes);
    n.engine.handle_packet(failed_at, p, &mut out);
    let first: Vec<_> =
        out.iter().map(|p| packet::parse(p).unwrap()).filter(|s| s.dst == sa(CLIENT)).collect();
    assert!(first.len() == 1 && first[0].fin);
    let alert = out.iter().find(|p| packet::parse(p).unwrap().dst == sa(CLIENT)).unwrap().clone();
    // The first resend after the retransmission timeout, the same segment.
    let (mut at, mut again) = (failed_at, Vec::new());
    while again.is_empty() {
        at = n.engine.poll_timeout().expect("a failed flow keeps a timer");
        assert!(at < failed_at + Duration::from_secs(1), "{at:?}");
        n.engine.handle_timeout(at, &mut again);
    }
    assert!(at >= failed_at + Duration::from_millis(100), "after a timeout: {at:?}");
    assert_eq!(again, vec![alert.clone()], "the alert and FIN again");
    // The client acknowledges them (and says nothing): no more resends, the flow waits.
    let seg = packet::parse(&alert).unwrap();
    let after = seg.seq.0.wrapping_add(seg.payload.len() as u32 + 1);
    let mut none = Vec::new();
    let ack = data(sa(CLIENT), sa(SERVICE), CISN.wrapping_add(1 + n.c_sent + bytes.len() as u32), after, &[]);
    n.engine.handle_packet(at, ack, &mut none);
    assert!(none.is_empty());
    // The linger's end: RST past the FIN, the flow gone, counted once.
    let mut end = Vec::new();
    let mut now = at;
    while n.engine.flow_count() > 0 {
        now = n.engine.poll_timeout().expect("a failed flow keeps a timer");
        assert!(now <= failed_at + FAILED_LINGER + Duration::from_secs(1), "{now:?}");
        n.engine.handle_timeout(now, &mut end);
    }
    assert!(now >= failed_at + FAILED_LINGER);
    let segs: Vec<_> = end.iter().map(|p| packet::parse(p).unwrap()).collect();
    assert!(
        segs.len() == 1 && segs[0].rst && segs[0].dst == sa(CLIENT) && segs[0].seq == Seq(after),
        "{segs:?}"
    );
    let stats = n.engine.stats();
    assert_eq!((stats.mac_failures, stats.flows_reset), (1, 1));
}

#[test]
fn the_engines_handshake_bytes_are_retransmitted_until_acknowledged() {
    let mut n = Net::new(TLS13[1]);
    n.feed(syn(sa(CLIENT), sa(SERVICE), CISN, None));
    n.feed(syn(sa(BACKEND), sa(CLIENT), SISN, Some(CISN + 1)));
    n.feed(data(sa(CLIENT), sa(SERVICE), CISN + 1, SISN + 1, &[]));
    // The ClientHello; the engine's answer is "lost": the client never reads it.
    let hello = client_output(&mut n.client);
    let mut out = Vec::new();
    n.engine.handle_packet(n.now, data(sa(CLIENT), sa(SERVICE), CISN + 1, SISN + 1, &hello), &mut out);
    let first: Vec<Vec<u8>> =
        out.iter().filter(|p| packet::parse(p).unwrap().dst == sa(CLIENT)).cloned().collect();
    assert!(!first.is_empty());
    let deadline = n.engine.poll_timeout().unwrap();
    assert!(deadline < Duration::from_secs(1));
    let mut again = Vec::new();
    n.engine.handle_timeout(deadline, &mut again);
    let payloads = |v: &[Vec<u8>]| -> Vec<u8> {
        v.iter().flat_map(|p| p[packet::parse(p).unwrap().payload].to_vec()).collect()
    };
    assert_eq!(payloads(&again), payloads(&first), "the same bytes again");
    assert!(n.engine.poll_timeout().unwrap() > deadline, "backed off");
}

#[test]
fn a_reset_in_the_middle_of_a_record_releases_none_of_it() {
    let mut n = Net::new(TLS13[2]);
    open_connection(&mut n);
    n.client.writer().write_all(&[7u8; 3000]).unwrap();
    let bytes = client_output(&mut n.client);
    // Half the record arrives, then the client resets.
    let half = &bytes[..bytes.len() / 2];
    let seq = CISN.wrapping_add(1 + n.c_sent);
    n.feed(data(sa(CLIENT), sa(SERVICE), seq, SISN + 1 + n.c_recv, half));
    let rst = Build {
        src: sa(CLIENT),
        dst: sa(SERVICE),
        seq: Seq(seq.wrapping_add(half.len() as u32)),
        ack: None,
        control: Control::Rst,
        window: 0,
        payload: &[],
    };
    n.feed(rst.emit().unwrap());
    let segs: Vec<_> = n.to_server.iter().map(|p| packet::parse(p).unwrap()).collect();
    assert!(segs.iter().all(|s| s.payload.is_empty()), "no plaintext of the partial record");
    let r = segs.last().expect("the RST reaches the server");
    assert!(r.rst);
    assert_eq!(r.seq, Seq(CISN.wrapping_add(1)), "at the end of what the server received");
    assert_eq!(n.engine.flow_count(), 0);
}

#[test]
fn a_service_flow_that_is_not_tls_passes_through() {
    let mut n = Net::new(TLS13[0]);
    n.feed(syn(sa(CLIENT), sa(SERVICE), CISN, None));
    n.feed(syn(sa(BACKEND), sa(CLIENT), SISN, Some(CISN + 1)));
    n.feed(data(sa(CLIENT), sa(SERVICE), CISN + 1, SISN + 1, &[]));
    n.to_server.clear();
    // Plain HTTP to the TLS port: the engine steps aside.
    let request = b"GET / HTTP/1.0\r\n\r\n";
    let mut out = Vec::new();
    n.engine.handle_packet(n.now, data(sa(CLIENT), sa(SERVICE), CISN + 1, SISN + 1, request), &mut out);
    assert_eq!(out.len(), 1);
    let seg = packet::parse(&out[0]).unwrap();
    assert_eq!((seg.dst, seg.seq), (sa(BACKEND), Seq(CISN + 1)));
    assert_eq!(&out[0][seg.payload.clone()], request);
    assert!(packet::checksum_ok(&out[0]));
    // The answer comes back as it was sent, from the service port.
    let answer = data(
        sa(BACKEND),
        sa(CLIENT),
        SISN + 1,
        CISN.wrapping_add(1 + request.len() as u32),
        b"HTTP/1.0 200 OK\r\n\r\n",
    );
    let mut out = Vec::new();
    n.engine.handle_packet(n.now, answer.clone(), &mut out);
    let seg = packet::parse(&out[0]).unwrap();
    assert_eq!((seg.src, seg.seq), (sa(SERVICE), Seq(SISN + 1)));
    assert_eq!(out[0][seg.payload.clone()], answer[packet::parse(&answer).unwrap().payload]);
    assert_eq!(n.engine.stats().not_tls, 1);
    let report = n.engine.report();
    assert_eq!(report.connections[0].state, FlowState::PassThrough);
}

/// The payloads the server got, in order, checked to be contiguous from `from`.
fn server_bytes(to_server: &[Vec<u8>], from: u32) -> Vec<u8> {
    let mut got = Vec::new();
    for p in to_server {
        let seg = packet::parse(p).unwrap();
        if !seg.payload.is_empty() {
            assert_eq!(seg.seq, Seq(from.wrapping_add(got.len() as u32)), "contiguous plaintext");
            got.extend_from_slice(&p[seg.payload.clone()]);
        }
    }
    got
}

#[test]
fn cut_through_a_tampered_record_resets_the_server_after_its_first_part_and_alerts_the_client() {
    for &suite in TLS13.iter().chain(TLS12) {
        let mut n = Net::with_release(suite, Release::CutThrough);
        open_connection(&mut n);
        let msg: Vec<u8> = (0..3000u32).map(|i| (i % 200) as u8 + 1).collect();
        n.client.writer().write_all(&msg).unwrap();
        let mut bytes = client_output(&mut n.client);
        assert!(bytes.len() > 2 * 1460, "one record over three segments");
        // A ciphertext byte in the first segment: its plaintext leaves flipped before the tag.
        let head = record_head(suite);
        bytes[head + 100] ^= 0x10;
        let mut out = Vec::new();
        let ack = SISN + 1 + n.c_recv;
        for (i, chunk) in bytes.chunks(1460).enumerate() {
            let seq = CISN.wrapping_add(1 + n.c_sent + (i * 1460) as u32);
            n.engine.handle_packet(n.now, data(sa(CLIENT), sa(SERVICE), seq, ack, chunk), &mut out);
        }
        let segs: Vec<_> = out.iter().map(|p| (packet::parse(p).unwrap(), p.clone())).collect();
        let to_server: Vec<Vec<u8>> =
            segs.iter().filter(|(s, _)| s.dst == sa(BACKEND)).map(|(_, p)| p.clone()).collect();
        let got = server_bytes(&to_server, CISN.wrapping_add(1));
        // The first two segments' plaintext left (less TLS 1.3's held last byte), unauthenticated.
        let tls13 = usize::from(TLS13.contains(&suite));
        assert_eq!(got.len(), 2 * 1460 - head - tls13, "{suite:?}");
        let diff: Vec<usize> = (0..got.len()).filter(|&i| got[i] != msg[i]).collect();
        assert_eq!(diff, vec![100], "{suite:?}");
        // Then RST to the server, right after the bytes it got.
        let (rst, _) = segs.iter().rfind(|(s, _)| s.dst == sa(BACKEND)).unwrap();
        assert!(rst.rst, "{suite:?}");
        assert_eq!(rst.seq, Seq(CISN.wrapping_add(1 + got.len() as u32)));
        // The client: a bad_record_mac alert with a FIN, RST at its next data.
        let to_client: Vec<_> =
            segs.iter().filter(|(s, _)| s.dst == sa(CLIENT) && (s.rst || !s.payload.is_empty())).collect();
        assert_eq!(to_client.len(), 1, "{suite:?}");
        let next = CISN.wrapping_add(1 + n.c_sent + bytes.len() as u32);
        let alert = failed_flow_ends_at_the_clients_next_data(&mut n, to_client[0], next);
        n.client.read_tls(&mut &alert[..]).unwrap();
        let err = n.client.process_new_packets().unwrap_err();
        assert!(format!("{err:?}").contains("BadRecordMac"), "{err:?}");
    }
}

#[test]
fn cut_through_a_reset_in_the_middle_of_a_record_follows_the_part_that_left() {
    let mut n = Net::with_release(TLS13[2], Release::CutThrough);
    open_connection(&mut n);
    n.client.writer().write_all(&[7u8; 3000]).unwrap();
    let bytes = client_output(&mut n.client);
    let half = &bytes[..bytes.len() / 2];
    let seq = CISN.wrapping_add(1 + n.c_sent);
    n.feed(data(sa(CLIENT), sa(SERVICE), seq, SISN + 1 + n.c_recv, half));
    let got = server_bytes(&n.to_server, CISN.wrapping_add(1));
    assert_eq!(got, vec![7u8; half.len() - 5 - 1], "all decrypted but the possible type byte");
    let rst = Build {
        src: sa(CLIENT),
        dst: sa(SERVICE),
        seq: Seq(seq.wrapping_add(half.len() as u32)),
        ack: None,
        control: Control::Rst,
        window: 0,
        payload: &[],
    };
    n.feed(rst.emit().unwrap());
    let r = packet::parse(n.to_server.last().unwrap()).unwrap();
    assert!(r.rst);
    assert_eq!(r.seq, Seq(CISN.wrapping_add(1 + got.len() as u32)), "after what the server received");
    assert_eq!(n.engine.flow_count(), 0);
}

/// A bare segment at `seq` acknowledging `ack` with the raw window `window`.
fn ack_with_window(src: SocketAddr, dst: SocketAddr, seq: u32, ack: u32, window: u16) -> Vec<u8> {
    Build { src, dst, seq: Seq(seq), ack: Some(Seq(ack)), control: Control::None, window, payload: &[] }
        .emit()
        .unwrap()
}

#[test]
fn a_servers_zero_window_probe_reaches_the_client_translated() {
    let mut n = Net::new(TLS13[0]);
    open_connection(&mut n);
    assert!(n.c_recv > 0, "the engine's handshake bytes shift the client's sequence space");
    // The client's window closes; the server hears it.
    let (client_seq, client_ack) = (CISN.wrapping_add(1 + n.c_sent), SISN + 1 + n.c_recv);
    n.feed(ack_with_window(sa(CLIENT), sa(SERVICE), client_seq, client_ack, 0));
    let told = packet::parse(n.to_server.last().expect("the ACK reaches the server")).unwrap();
    assert_eq!(told.window, 0);
    n.to_server.clear();
    n.to_client.clear();
    // The server probes the zero window as Linux does: no data, at SND.UNA - 1.
    n.feed(ack_with_window(sa(BACKEND), sa(CLIENT), SISN, CISN.wrapping_add(1), 502));
    assert_eq!(n.to_client.len(), 1, "the probe, passed on");
    let probe = &n.to_client[0];
    assert!(probe.payload.is_empty() && !probe.syn && !probe.fin && !probe.rst);
    assert_eq!(probe.seq, Seq(client_ack - 1), "SND.UNA - 1 in the client's sequence space");
    assert_eq!(probe.ack, Some(Seq(client_seq)), "the client's own next byte");
    // The client answers with its window open again: the server hears that.
    n.feed(ack_with_window(sa(CLIENT), sa(SERVICE), client_seq, client_ack, 501));
    let answer = packet::parse(n.to_server.last().expect("the answer reaches the server")).unwrap();
    assert!(answer.payload.is_empty());
    assert_eq!(
        (answer.seq, answer.ack, answer.window),
        (Seq(CISN.wrapping_add(1)), Some(Seq(SISN + 1)), 501)
    );
}

#[test]
fn reloaded_certificates_serve_new_flows_while_established_ones_continue() {
    let mut n = Net::new(TLS13[0]);
    open_connection(&mut n);
    let (fresh_server, fresh_client) = configs(TLS13[0]);
    let mut services = n.engine.services().to_vec();
    services[0].tls = fresh_server;
    n.engine.reload_tls(&services).unwrap();
    // The established flow keeps its keys: a request still arrives in plaintext.
    n.client.writer().write_all(REQUEST).unwrap();
    n.client_sends();
    let p = n.to_server.pop().expect("plaintext to the server");
    assert_eq!(&p[packet::parse(&p).unwrap().payload], REQUEST);
    // The client resets; a new flow is served with the new certificate, which is all the new
    // client trusts (feeding panics on a handshake error).
    n.feed(
        Build {
            src: sa(CLIENT),
            dst: sa(SERVICE),
            seq: Seq(CISN.wrapping_add(1 + n.c_sent)),
            ack: None,
            control: Control::Rst,
            window: 0,
            payload: &[],
        }
        .emit()
        .unwrap(),
    );
    assert_eq!(n.engine.flow_count(), 0);
    n.client = ClientConnection::new(fresh_client, ServerName::try_from("localhost").unwrap()).unwrap();
    (n.c_sent, n.c_recv) = (0, 0);
    n.to_server.clear();
    n.to_client.clear();
    open_connection(&mut n);
    assert_eq!(n.engine.report().sessions.len(), 1);
}

/// A post-handshake rule broken on packets (a KeyUpdate with request_update 2, RFC 8446
/// §4.6.3): the server gets RST, the client the alert the session chose (illegal_parameter,
/// not bad_record_mac) with a FIN, then RST at its next data, and the flow is gone.
#[test]
fn a_broken_post_handshake_rule_gets_the_sessions_alert_on_packets() {
    use tlsgate_record::crypto::{RecordKey, Version};
    use tlsgate_record::frame::{ContentType, Header};
    for release in [Release::Buffered, Release::CutThrough] {
        let mut n = Net::with_release(TLS13[0], release);
        open_connection(&mut n);
        // The client's keys, taken from rustls (which is done with after this).
        let fresh =
            ClientConnection::new(configs(TLS13[0]).1, ServerName::try_from("localhost").unwrap()).unwrap();
        let secrets = std::mem::replace(&mut n.client, fresh).dangerous_extract_secrets().unwrap();
        let mut tx = RecordKey::new(Version::Tls13, secrets.tx.0, secrets.tx.1).unwrap();
        let mut rx = RecordKey::new(Version::Tls13, secrets.rx.0, secrets.rx.1).unwrap();
        let mut rec = Vec::new();
        tx.seal(ContentType::HANDSHAKE, &[24, 0, 0, 1, 2], &mut rec).unwrap();
        let p = data(sa(CLIENT), sa(SERVICE), CISN.wrapping_add(1 + n.c_sent), SISN + 1 + n.c_recv, &rec);
        let mut out = Vec::new();
        n.engine.handle_packet(Duration::from_secs(1), p, &mut out);
        let segs: Vec<_> = out.iter().map(|p| (packet::parse(p).unwrap(), p.clone())).collect();
        let to_server: Vec<_> = segs.iter().filter(|(s, _)| s.dst == sa(BACKEND)).collect();
        assert!(to_server.len() == 1 && to_server[0].0.rst, "RST to the server ({release:?})");
        let to_client: Vec<_> = segs.iter().filter(|(s, _)| s.dst == sa(CLIENT)).collect();
        assert_eq!(to_client.len(), 1, "{release:?}");
        let next = CISN.wrapping_add(1 + n.c_sent + rec.len() as u32);
        let wire = failed_flow_ends_at_the_clients_next_data(&mut n, to_client[0], next);
        let header = Header::parse(wire[..5].try_into().unwrap());
        let mut body = wire[5..].to_vec();
        let opened = rx.open(header, &mut body).unwrap();
        assert_eq!(opened.content_type, ContentType::ALERT);
        assert_eq!(&body[opened.plaintext], &[2, 47], "fatal illegal_parameter ({release:?})");
        assert_eq!(n.engine.stats().mac_failures, 0, "not a tag failure");
    }
}

/// Whether a packet's TCP options offer SACK.
fn offers_sack(p: &[u8]) -> bool {
    tcp_repr(p).sack_permitted
}

/// A packet's SACK blocks.
fn sack_blocks(p: &[u8]) -> Vec<(u32, u32)> {
    tcp_repr(p).sack_ranges.iter().flatten().copied().collect()
}

fn tcp_repr(p: &[u8]) -> smoltcp::wire::TcpRepr<'_> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpAddress, Ipv4Packet, TcpPacket, TcpRepr};
    let ip = Ipv4Packet::new_checked(p).unwrap();
    let (src, dst) = (IpAddress::Ipv4(ip.src_addr()), IpAddress::Ipv4(ip.dst_addr()));
    let tcp = TcpPacket::new_checked(&p[20..]).unwrap();
    TcpRepr::parse(&tcp, &src, &dst, &ChecksumCapabilities::ignored()).unwrap()
}

/// A client offering SACK (as Linux does) uses it with the engine, whether or not the server
/// accepts it (here it does not): the client's SYN-ACK gains the option. Client bytes the engine holds beyond
/// a gap are reported in SACK blocks (the last stored first), so the client repairs the gap in
/// one round trip and takes no RTT sample from segments acknowledged long after they arrived —
/// but only with an ACK that covers every byte taken in order: the bytes before the gap are
/// acknowledged once the server has their plaintext, and blocks ahead of that ACK would show a
/// hole over segments that arrived (Linux marks them lost, then undoes the recovery when they
/// are acknowledged unsent, the real loss with it). Once the gap fills, the engine's ACK
/// follows the server's, but never ends inside a range it reported: Linux would take that for
/// reneging and time out.
#[test]
fn client_bytes_held_beyond_a_gap_are_sacked_and_no_ack_ends_inside_them() {
    let mut n = Net::new(TLS13[0]);
    n.sack = true;
    open_connection(&mut n);
    let syn_ack = n.to_client.iter().position(|s| s.syn).expect("SYN-ACK to the client");
    assert!(offers_sack(&n.raw_to_client[syn_ack]), "the client's SYN-ACK offers SACK");

    // Ten records of 1000 plaintext bytes (1022 on the wire), in seven segments of 1460.
    for _ in 0..10 {
        n.client.writer().write_all(&[7; 1000]).unwrap();
    }
    let bytes = client_output(&mut n.client);
    assert_eq!(bytes.len(), 10 * 1022);
    let base = 1 + n.c_sent;
    n.c_sent += bytes.len() as u32;
    let at = |off: u32| CISN.wrapping_add(base + off);
    let chunks: Vec<Vec<u8>> = bytes.chunks(1460).map(<[u8]>::to_vec).collect();
    let ack = SISN + 1 + n.c_recv;
    let send =
        |n: &mut Net, i: usize| n.feed(data(sa(CLIENT), sa(SERVICE), at(i as u32 * 1460), ack, &chunks[i]));
    let server_acks = |n: &mut Net, records: u32| {
        n.feed(data(sa(BACKEND), sa(CLIENT), SISN + 1, CISN.wrapping_add(1 + records * 1000), &[]))
    };
    let last =
        |n: &Net| (n.to_client.last().unwrap().ack.unwrap().0, sack_blocks(n.raw_to_client.last().unwrap()));

    send(&mut n, 0);
    let (first_ack, blocks) = last(&n);
    assert_eq!(blocks, vec![], "nothing held, no block");
    // Segment 1 is lost; 2, 3 and 5 arrive and are held. Segment 0 went to the server
    // unacknowledged: no packet to the client reports them yet, nor acknowledges further.
    let since = n.to_client.len();
    for i in [2, 3, 5] {
        send(&mut n, i);
    }
    for (seg, p) in n.to_client[since..].iter().zip(&n.raw_to_client[since..]) {
        assert_eq!((seg.ack.unwrap().0, sack_blocks(p)), (first_ack, vec![]));
    }
    // The server takes record 0: the ACK covers everything taken in order (the record in
    // progress as far as it came), and the held segments are reported, the last stored first.
    server_acks(&mut n, 1);
    assert_eq!(last(&n), (at(1460), vec![(at(7300), at(8760)), (at(2920), at(5840))]));
    // Segment 1 fills the gap: records 1 to 4 go to the server, segment 4 is still missing. The
    // ACK stays where it was until the server acknowledges them, without blocks.
    let since = n.to_client.len();
    send(&mut n, 1);
    for (seg, p) in n.to_client[since..].iter().zip(&n.raw_to_client[since..]) {
        assert_eq!((seg.ack.unwrap().0, sack_blocks(p)), (at(1460), vec![]));
    }
    // The server's ACK of records 1 and 2 ends inside the reported range: held one byte short.
    server_acks(&mut n, 3);
    assert_eq!(last(&n), (at(2919), vec![]), "an ACK ending inside SACKed bytes");
    // Should the server have lost records 3 and 4, the client's resend of the byte before the
    // range (the only one it would resend) brings them again.
    let before = n.to_server.len();
    n.feed(data(sa(CLIENT), sa(SERVICE), at(2919), ack, &chunks[1][1459..]));
    let again = server_bytes(&n.to_server.drain(before..).collect::<Vec<_>>(), CISN.wrapping_add(1 + 3000));
    assert_eq!(again.len(), 2000, "records 3 and 4 delivered again");
    // All released records acknowledged: past the whole range (the record in progress goes on).
    server_acks(&mut n, 5);
    assert_eq!(last(&n), (at(5840), vec![(at(7300), at(8760))]));
    send(&mut n, 4);
    server_acks(&mut n, 8);
    assert_eq!(last(&n), (at(8760), vec![]), "nothing held any more");
    send(&mut n, 6);
    server_acks(&mut n, 10);
    assert_eq!(last(&n).0, at(10 * 1022), "everything");
    let plain = server_bytes(&n.to_server, CISN.wrapping_add(1));
    assert_eq!(plain, vec![7; 10_000], "the server got every record once, in order");
}

/// Client data taken in order gets an ACK only when the ACK would say something: the
/// acknowledgment moves, SACK blocks, another window. Once a record has gone to the server
/// unacknowledged, the engine's ACK waits for the server's; each later in-order segment used to
/// get that same ACK again, a duplicate ACK per segment (four of five packets an upload sent the
/// client; a client without SACK counts them toward fast retransmit). A segment out of order
/// is still acknowledged at once (RFC 5681 section 4.2), and the server's ACK goes on.
#[test]
fn in_order_client_data_gets_no_duplicate_acks() {
    for sack in [true, false] {
        let mut n = Net::new(TLS13[0]);
        n.sack = sack;
        open_connection(&mut n);
        // Ten records of 1000 plaintext bytes (1022 on the wire), in seven segments of 1460.
        for _ in 0..10 {
            n.client.writer().write_all(&[7; 1000]).unwrap();
        }
        let bytes = client_output(&mut n.client);
        let base = 1 + n.c_sent;
        n.c_sent += bytes.len() as u32;
        let at = |off: u32| CISN.wrapping_add(base + off);
        let chunks: Vec<Vec<u8>> = bytes.chunks(1460).map(<[u8]>::to_vec).collect();
        let ack = SISN + 1 + n.c_recv;
        let before = n.to_client.len();
        for (i, chunk) in chunks.iter().enumerate().take(6) {
            n.feed(data(sa(CLIENT), sa(SERVICE), at(i as u32 * 1460), ack, chunk));
        }
        // The ACKs since the handshake's last packet: none repeats the one before it.
        let acks: Vec<u32> = n.to_client[before - 1..].iter().map(|s| s.ack.unwrap().0).collect();
        assert!(acks.windows(2).all(|w| w[1] != w[0]), "sack {sack}: a duplicate ACK: {acks:?}");
        assert_eq!(server_bytes(&n.to_server, CISN.wrapping_add(1)).len(), 8000, "sack {sack}");
        // Out of order, while the ACK is short of the bytes taken in order (the server has not
        // acknowledged their plaintext): no ACK yet, it would show the client a hole over
        // segments that arrived.
        let last = n.to_client.len();
        n.feed(data(sa(CLIENT), sa(SERVICE), at(6 * 1460 + 1), ack, &chunks[6][1..]));
        assert_eq!(n.to_client.len(), last, "sack {sack}: an ACK below the bytes taken in order");
        // The server's ACK of everything released goes on: all the bytes taken in order, and
        // the held segment in a block.
        n.feed(data(sa(BACKEND), sa(CLIENT), SISN + 1, CISN.wrapping_add(1 + 8000), &[]));
        assert_eq!(n.to_client.len(), last + 1, "sack {sack}");
        assert_eq!(n.to_client[last].ack.unwrap().0, at(6 * 1460), "sack {sack}");
        let blocks = if sack { vec![(at(6 * 1460 + 1), at(10 * 1022))] } else { vec![] };
        assert_eq!(sack_blocks(&n.raw_to_client[last]), blocks, "sack {sack}");
        // Out of order again, now that the ACK is there: acknowledged at once (RFC 5681 section
        // 4.2), the same ACK again.
        n.feed(data(sa(CLIENT), sa(SERVICE), at(6 * 1460 + 1), ack, &chunks[6][1..]));
        assert_eq!(n.to_client.len(), last + 2, "sack {sack}: a segment out of order gets an ACK");
        assert_eq!(n.to_client[last + 1].ack, n.to_client[last].ack, "sack {sack}");
        // The last segment completes it.
        n.feed(data(sa(CLIENT), sa(SERVICE), at(6 * 1460), ack, &chunks[6][..1]));
        n.feed(data(sa(BACKEND), sa(CLIENT), SISN + 1, CISN.wrapping_add(1 + 10_000), &[]));
        assert_eq!(n.to_client.last().unwrap().ack.unwrap().0, at(10 * 1022), "sack {sack}: everything");
        assert_eq!(server_bytes(&n.to_server, CISN.wrapping_add(1)), vec![7; 10_000], "sack {sack}");
    }
}

/// Server bytes the engine holds beyond a gap are reported to a server that accepted SACK (as
/// Linux does), the range stored last first, and no ACK to the server ends inside or right
/// before a reported range: once the gap fills, the client's ACKs of those records come one by
/// one and the server's stays one byte short of the range until the client has all of it.
/// Without the blocks a Linux server learns of held segments only when their records are
/// acknowledged, long after it sent them: its RTT estimate and timeout grow with every repair
/// and it repairs one hole per round trip. Blocks go only with an ACK that covers every server
/// byte taken in order: ahead of it they would show a hole over segments whose records are on
/// their way to the client. A server that declined SACK gets no block.
#[test]
fn server_bytes_held_beyond_a_gap_are_sacked_to_the_server_and_no_ack_ends_inside_them() {
    for server_sack in [true, false] {
        let mut n = Net::new(TLS13[0]);
        (n.sack, n.server_sack) = (true, server_sack);
        open_connection(&mut n);
        n.to_server.clear();
        let plain: Vec<u8> = (0..6000u32).map(|i| (i % 251) as u8).collect();
        let cack = CISN.wrapping_add(1 + n.c_sent);
        let seg = |n: &mut Net, k: usize| {
            let at = SISN + 1 + k as u32 * 1000;
            n.feed(data(sa(BACKEND), sa(CLIENT), at, cack, &plain[k * 1000..(k + 1) * 1000]))
        };
        // The client acknowledges what it got up to outer offset `outer` (its stream from 1).
        let client_acks =
            |n: &mut Net, outer: u32| n.feed(data(sa(CLIENT), sa(SERVICE), cack, SISN + outer, &[]));
        // The last segment to the server: its ACK (as an offset of the server's stream) and
        // its SACK blocks (as offsets).
        let last = |n: &Net| {
            let p = n.to_server.last().expect("a segment to the server");
            let ack = packet::parse(p).unwrap().ack.unwrap().0.wrapping_sub(SISN);
            let blocks: Vec<(u32, u32)> = sack_blocks(p)
                .into_iter()
                .map(|(l, r)| (l.wrapping_sub(SISN), r.wrapping_sub(SISN)))
                .collect();
            (ack, blocks)
        };
        let blocks = |b: Vec<(u32, u32)>| if server_sack { b } else { vec![] };
        let start = 1 + n.c_recv; // outer offset of the first record
        seg(&mut n, 0);
        let all = 1 + n.c_recv;
        client_acks(&mut n, all);
        assert_eq!(last(&n), (1001, vec![]), "record 0 taken, nothing held");
        // Segments 1 and 4 are lost; 2, 3 and 5 are held, each answered at once.
        seg(&mut n, 2);
        assert_eq!(last(&n), (1001, blocks(vec![(2001, 3001)])));
        seg(&mut n, 3);
        assert_eq!(last(&n), (1001, blocks(vec![(2001, 4001)])));
        seg(&mut n, 5);
        assert_eq!(last(&n), (1001, blocks(vec![(5001, 6001), (2001, 4001)])), "last stored first");
        assert_eq!(n.c_recv + 1 - start, 1022, "nothing beyond the gap reached the client");
        // Segment 1 fills the first gap: its record goes to the client, then one record of the
        // two held segments (1022 and 2022 bytes).
        seg(&mut n, 1);
        assert_eq!(n.c_recv + 1 - start, 2 * 1022 + 2022);
        // The client takes record 1 (plaintext up to 2001): right before the reported range,
        // so the server is told one byte less, and no block (the ACK is short of the bytes
        // taken in order).
        client_acks(&mut n, start + 2 * 1022);
        let short = |other| if server_sack { 2000 } else { other };
        assert_eq!(last(&n), (short(2001), vec![]));
        // Part of the next record (its first 1000 plaintext bytes): inside the range, still
        // one byte short of it.
        client_acks(&mut n, start + 2 * 1022 + 5 + 1000);
        assert_eq!(last(&n), (short(3001), vec![]));
        // All of it: the whole range, passed, and every byte taken in order: the block again.
        client_acks(&mut n, start + 2 * 1022 + 2022);
        assert_eq!(last(&n), (4001, blocks(vec![(5001, 6001)])));
        // The last gap fills; the client takes everything.
        seg(&mut n, 4);
        let all = 1 + n.c_recv;
        client_acks(&mut n, all);
        assert_eq!(last(&n), (6001, vec![]), "nothing held any more");
        let mut got = vec![0; plain.len()];
        std::io::Read::read_exact(&mut n.client.reader(), &mut got).unwrap();
        assert_eq!(got, plain, "the client got every byte once, in order");
    }
}

/// The window the server is told never reaches beyond what the engine can hold: the next server
/// byte to seal plus the hold queue's bound. With the client's window alone, a server with far
/// more in flight beyond a gap had most of it dropped at the bound while every segment was
/// answered; Linux counted it all in flight, had no room left to repair the gap and waited for
/// its timeout. The edge never moves back.
#[test]
fn the_window_to_the_server_stays_within_what_the_engine_can_hold() {
    let mut limits = Limits::default();
    limits.down.hold_bytes = 4000;
    let mut n = Net::with_limits(TLS13[0], Release::Buffered, limits);
    (n.sack, n.server_sack) = (true, true);
    open_connection(&mut n);
    n.to_server.clear();
    let plain: Vec<u8> = (0..8000u32).map(|i| (i % 251) as u8).collect();
    let cack = CISN.wrapping_add(1 + n.c_sent);
    let seg = |n: &mut Net, k: usize| {
        let at = SISN + 1 + k as u32 * 1000;
        n.feed(data(sa(BACKEND), sa(CLIENT), at, cack, &plain[k * 1000..(k + 1) * 1000]))
    };
    let client_acks = |n: &mut Net| {
        let all = SISN + 1 + n.c_recv;
        n.feed(data(sa(CLIENT), sa(SERVICE), cack, all, &[]))
    };
    // The right edge the last segment to the server allows (window scale 7 both ways), as an
    // offset of the server's stream.
    let edge = |n: &Net| {
        let s = packet::parse(n.to_server.last().unwrap()).unwrap();
        s.ack.unwrap().0.wrapping_sub(SISN) + ((s.window as u32) << 7)
    };
    let mut edges = Vec::new();
    seg(&mut n, 0);
    client_acks(&mut n);
    edges.push(edge(&n));
    // Segment 1 lost: 2 and 3 held; the edge stays within 4000 bytes of the gap (1001), where
    // the client's own window (502 << 7) would allow 64 KB.
    for k in [2, 3] {
        seg(&mut n, k);
        edges.push(edge(&n));
    }
    assert!(edges.iter().all(|&e| e <= 1001 + 4000 && e > 4001), "{edges:?}");
    // The gap fills and the client takes everything: the edge moves on with the next byte.
    seg(&mut n, 1);
    client_acks(&mut n);
    edges.push(edge(&n));
    assert!(*edges.last().unwrap() > 4001 + 3000, "{edges:?}");
    assert!(*edges.last().unwrap() <= 4001 + 4000, "{edges:?}");
    assert!(edges.windows(2).all(|w| w[0] <= w[1]), "the edge never moves back: {edges:?}");
    // Without scaling room to spare, the window is the client's: the field never exceeds it.
    for p in &n.to_server {
        assert!(packet::parse(p).unwrap().window <= 502);
    }
}

/// The server may keep the whole record store in flight: the hold bound
/// past the next byte to seal is no smaller than the store. At 256 KiB it was the window the
/// server saw whatever the client's, and a download through a bridge adding a millisecond ran at
/// 256 KiB per round trip.
#[test]
fn the_window_to_the_server_reaches_the_record_store_by_default_and_as_configured() {
    // The default, and a larger window for long paths (`limits.flow_window`).
    for limits in [Limits::default(), Limits::default().with_flow_window(4 << 20)] {
        window_to_the_server_reaches_the_record_store(limits);
    }
}

fn window_to_the_server_reaches_the_record_store(limits: Limits) {
    let store = limits.down.unacked_bytes as u32 * 15 / 16;
    assert!(limits.down.hold_bytes >= limits.down.unacked_bytes);
    let mut n = Net::with_limits(TLS13[0], Release::Buffered, limits);
    (n.sack, n.server_sack) = (true, true);
    open_connection(&mut n);
    n.to_server.clear();
    // The client opens its window wide (65535 << 7: 8 MiB).
    let cack = CISN.wrapping_add(1 + n.c_sent);
    let all = SISN + 1 + n.c_recv;
    n.feed(ack_with_window(sa(CLIENT), sa(SERVICE), cack, all, u16::MAX));
    let s = packet::parse(n.to_server.last().expect("the client's ACK went on to the server")).unwrap();
    let window = (s.window as u32) << 7;
    assert!(window + 128 >= store && window <= store, "window {window}, store {store}");
}

/// The window the client is told is the server's, but never more than the engine takes from it
/// in flight (the store of plaintext the server has not acknowledged, less a sixteenth for the
/// records' overhead): with the server's autotuned megabytes passed on, a bulk upload sent more
/// than the engine takes, and every segment past the store was dropped and resent.
#[test]
fn the_window_to_the_client_stays_within_what_the_engine_takes() {
    for limits in [Limits::default(), Limits::default().with_flow_window(4 << 20)] {
        window_to_the_client_stays_within_what_the_engine_takes(limits);
    }
}

fn window_to_the_client_stays_within_what_the_engine_takes(limits: Limits) {
    let store = limits.up.unacked_bytes as u32 * 15 / 16;
    assert!(limits.up.hold_bytes >= limits.up.unacked_bytes, "the hold bound does not cap it lower");
    let mut n = Net::with_limits(TLS13[0], Release::Buffered, limits);
    open_connection(&mut n);
    n.to_client.clear();
    // A request, and the server acknowledging it with its window wide open (65535 << 7: 8 MiB).
    n.client.writer().write_all(REQUEST).unwrap();
    n.client_sends();
    let p = n.to_server.pop().expect("plaintext to the server");
    let request = packet::parse(&p).unwrap();
    let acked = request.seq.0.wrapping_add(request.payload.len() as u32);
    n.feed(ack_with_window(sa(BACKEND), sa(CLIENT), SISN + 1, acked, u16::MAX));
    let told = n.to_client.last().expect("the server's ACK reaches the client");
    let window = (told.window as u32) << 7;
    assert!(window + 128 >= store && window <= store, "window {window}, store {store}");
}

/// With segmentation offload a record's plaintext goes to the server as one packet larger than
/// the MTU, whose segment size is the server's MSS (1460 in its SYN-ACK here): the link cuts it
/// into the segments the engine would have built one by one.
#[test]
fn with_segmentation_offload_a_records_plaintext_goes_to_the_server_as_one_packet() {
    let mut n = Net::new(TLS13[0]);
    n.engine.set_segmentation_offload(true);
    open_connection(&mut n);
    n.to_server.clear();
    let body: Vec<u8> = (0..12_000u32).map(|i| (i % 251) as u8).collect();
    n.client.writer().write_all(&body).unwrap();
    n.client_sends();
    assert_eq!(n.to_server.len(), 1, "one packet for the record's 12,000 bytes");
    let p = &n.to_server[0];
    assert_eq!(&p[packet::parse(p).unwrap().payload], &body[..]);
    assert_eq!(n.engine.segment_size(p), Some(1460));
}

/// A client GSO frame of an established flow (a host's TSO hands its veth up to 64 KiB at once)
/// is taken whole: read where it lies, its records opened and their plaintext sent on in one
/// packet, with one ACK to the client at most; not cut into wire-sized segments
/// first (each a copy, a checksum and a pass through the flow). A frame of a flow the engine
/// does not know, or still in its handshake, is cut (it may pass on unchanged).
#[test]
fn a_client_gso_frame_of_an_established_flow_is_taken_whole() {
    let mut n = Net::new(TLS13[0]);
    n.engine.set_segmentation_offload(true);
    let early = data(sa(CLIENT), sa(SERVICE), CISN.wrapping_add(1), 0, &[0x17; 3000]);
    assert!(!n.engine.takes_whole(&early), "no flow yet");
    open_connection(&mut n);
    n.to_server.clear();
    let body: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    n.client.writer().write_all(&body).unwrap();
    let bytes = client_output(&mut n.client);
    assert!(bytes.len() > 40_000 && bytes.len() < 60_000, "{} bytes: three records", bytes.len());
    let frame = data(sa(CLIENT), sa(SERVICE), CISN.wrapping_add(1 + n.c_sent), SISN + 1 + n.c_recv, &bytes);
    n.c_sent += bytes.len() as u32;
    assert!(n.engine.takes_whole(&frame), "client data of an established flow");
    let to_client = n.to_client.len();
    n.feed_whole(&frame);
    assert_eq!(n.to_server.len(), 1, "the three records' plaintext in one packet");
    assert_eq!(server_bytes(&n.to_server, CISN.wrapping_add(1)), body);
    assert!(n.to_client.len() - to_client <= 1, "one ACK to the client at most");
    // The server's ACK of all of it reaches the client as the ACK of the whole frame.
    n.feed(data(sa(BACKEND), sa(CLIENT), SISN + 1, CISN.wrapping_add(1 + 40_000), &[]));
    assert_eq!(n.to_client.last().unwrap().ack.unwrap().0, CISN.wrapping_add(1 + n.c_sent));
}

#[test]
fn an_idle_flow_is_parked_by_the_timers_and_carries_the_next_request_as_before() {
    for &suite in TLS13.iter().chain(TLS12) {
        let parking = Limits { park_after: Some(PARK_AFTER), ..Limits::default() };
        let mut n = Net::with_limits(suite, Release::Buffered, parking);
        open_connection(&mut n);
        let key = FlowKey { client: sa(CLIENT), server: sa(SERVICE) };
        // The client acknowledges the engine's flight: nothing is in flight either way.
        n.feed(data(sa(CLIENT), sa(SERVICE), CISN.wrapping_add(1 + n.c_sent), SISN + 1 + n.c_recv, &[]));
        let tls13 = TLS13.contains(&suite);
        let (mut up, mut down) = (0u32, 0u32);
        // Twice: parked, then (TLS 1.3) a client KeyUpdate asking for ours, a request and its
        // answer, each direction rebuilding its key from the traffic secret's next generation.
        for round in 0..2 {
            let busy = n.engine.report().connection(&key).unwrap().state_bytes;
            // The timers run as the driver runs them: the flow's parking comes within
            // PARK_AFTER, and once run the flow holds less.
            let limit = n.now + PARK_AFTER;
            for _ in 0..100 {
                if n.engine.stats().flows_compacted > round {
                    break;
                }
                let due = n.engine.poll_timeout().unwrap();
                assert!(due <= limit, "{suite:?}");
                n.now = n.now.max(due);
                n.engine.handle_timeout(n.now, &mut Vec::new());
            }
            let parked = n.engine.report().connection(&key).unwrap().state_bytes;
            // Nothing in flight: parked in the compact form, which the request below wakes.
            assert_eq!(n.engine.stats().flows_compacted, round + 1, "{suite:?}");
            if round == 0 {
                assert!(parked + 2 * AEAD_CONTEXT_BYTES <= busy, "{suite:?}: {parked} parked, {busy} before");
            }
            assert!(n.engine.poll_timeout().is_none_or(|t| t > n.now + PARK_AFTER), "nothing more to park");
            if tls13 {
                n.client.refresh_traffic_keys().unwrap();
            }
            n.client.writer().write_all(REQUEST).unwrap();
            n.client_sends();
            let p = n.to_server.pop().expect("plaintext to the server");
            assert_eq!(&p[packet::parse(&p).unwrap().payload], REQUEST, "{suite:?}");
            up += REQUEST.len() as u32;
            n.feed(data(sa(BACKEND), sa(CLIENT), SISN + 1 + down, CISN.wrapping_add(1 + up), RESPONSE));
            down += RESPONSE.len() as u32;
            let mut got = vec![0; RESPONSE.len()];
            std::io::Read::read_exact(&mut n.client.reader(), &mut got).unwrap();
            assert_eq!(got, RESPONSE, "{suite:?} round {round}");
            let seqs = n.engine.report().connection(&key).unwrap().record_seqs.unwrap();
            if tls13 {
                // New keys both ways: the request alone under the client's, our KeyUpdate under
                // the old transmit key and the answer alone under the new one.
                assert_eq!(seqs, (1, 1), "{suite:?} round {round}");
            }
            // The client acknowledges everything: the flow is idle again.
            n.feed(data(sa(CLIENT), sa(SERVICE), CISN.wrapping_add(1 + n.c_sent), SISN + 1 + n.c_recv, &[]));
        }
    }
}

/// Thousands of idle flows beside a busy one: the busy flow's timers (parking after every
/// exchange) run without a sweep of the flow table, and the idle flows stay. Before the timer
/// heap every timer run, and every driver round's `poll_timeout`, visited every flow: 12,000
/// idle flows held during a download took its CPU per GiB from 0.6 to 1.8 s.
#[test]
fn a_busy_flows_timers_run_without_sweeping_the_idle_flows() {
    let mut n = Net::new(TLS13[0]);
    const IDLE: u32 = 2000;
    for i in 0..IDLE {
        let c = SocketAddr::new([10, 1, (i >> 8) as u8, i as u8].into(), 50000);
        let mut out = Vec::new();
        n.engine.handle_packet(n.now, syn_with_sack(c, sa(SERVICE), 1000, None, false), &mut out);
        n.engine.handle_packet(n.now, syn_with_sack(sa(BACKEND), c, 9000, Some(1001), false), &mut out);
    }
    open_connection(&mut n);
    // The client acknowledges the engine's flight: nothing is in flight either way.
    n.feed(data(sa(CLIENT), sa(SERVICE), CISN.wrapping_add(1 + n.c_sent), SISN + 1 + n.c_recv, &[]));
    let (mut up, mut down) = (0u32, 0u32);
    for round in 0..20 {
        // The flow's timers run as the driver runs them until it is parked again.
        for _ in 0..100 {
            if n.engine.stats().flows_compacted > round {
                break;
            }
            n.now = n.now.max(n.engine.poll_timeout().unwrap());
            n.engine.handle_timeout(n.now, &mut Vec::new());
        }
        assert_eq!(n.engine.stats().flows_compacted, round + 1);
        n.client.writer().write_all(REQUEST).unwrap();
        n.client_sends();
        up += REQUEST.len() as u32;
        n.feed(data(sa(BACKEND), sa(CLIENT), SISN + 1 + down, CISN.wrapping_add(1 + up), RESPONSE));
        down += RESPONSE.len() as u32;
        n.feed(data(sa(CLIENT), sa(SERVICE), CISN.wrapping_add(1 + n.c_sent), SISN + 1 + n.c_recv, &[]));
    }
    assert!(n.now > Duration::from_secs(10), "{:?}", n.now);
    assert_eq!(n.engine.flow_count(), IDLE as usize + 1);
    // One sweep, when the half-open flows' SYN timeout would have come: it found them past
    // their SYN-ACK, idle until their idle timeout.
    assert_eq!(n.engine.expiry_sweeps(), 1);
}

/// A client's close_notify alone (its TCP stays open: it waits for the server's close_notify, a
/// bidirectional TLS shutdown) ends its stream as a FIN would: the server gets a FIN right
/// after the plaintext, with or without a request before it, and its own FIN brings the client
/// close_notify and a FIN. Without it both sides waited for each other until a timeout.
#[test]
fn a_close_notify_alone_sends_the_server_a_fin_after_the_plaintext() {
    for suite in [TLS12[0], TLS13[0]] {
        for request in [&b""[..], REQUEST] {
            let mut n = Net::new(suite);
            open_connection(&mut n);
            n.client.writer().write_all(request).unwrap();
            n.client.send_close_notify();
            n.client_sends();
            let r = request.len() as u32;
            assert_eq!(server_bytes(&n.to_server, CISN.wrapping_add(1)), request, "{suite:?}");
            let f = packet::parse(n.to_server.last().expect("a FIN to the server")).unwrap();
            assert!(f.fin && f.seq == Seq(CISN.wrapping_add(1 + r)), "{suite:?} {r}: {f:?}");
            n.to_client.clear();
            n.feed(fin(sa(BACKEND), sa(CLIENT), SISN + 1, CISN.wrapping_add(1 + r + 1), &[]));
            assert!(n.to_client.iter().any(|s| s.fin), "{suite:?} {r}: the server's FIN goes on");
            assert!(n.client.process_new_packets().unwrap().peer_has_closed(), "close_notify first");
            // The server acknowledged the FIN sent for the client's close_notify: the client is
            // acknowledged its close_notify, not a FIN it has not sent (Linux drops a segment
            // acknowledging more than it sent).
            let client_next = CISN.wrapping_add(1 + n.c_sent);
            for s in &n.to_client {
                assert_eq!(s.ack, Some(Seq(client_next)), "{suite:?} {r}: {s:?}");
            }
            // The client's own FIN then: the FIN goes to the server again, and the server's ACK
            // of it now acknowledges the client's FIN.
            let s_next = SISN + 1 + n.c_recv + 1;
            n.to_server.clear();
            n.feed(fin(sa(CLIENT), sa(SERVICE), client_next, s_next, &[]));
            let f = packet::parse(n.to_server.last().expect("the FIN again")).unwrap();
            assert!(f.fin && f.seq == Seq(CISN.wrapping_add(1 + r)), "{suite:?} {r}: {f:?}");
            n.to_client.clear();
            n.feed(data(sa(BACKEND), sa(CLIENT), SISN + 2, CISN.wrapping_add(1 + r + 1), &[]));
            let a = n.to_client.last().expect("the client's FIN acknowledged");
            assert_eq!(a.ack, Some(Seq(client_next.wrapping_add(1))), "{suite:?} {r}");
        }
    }
}

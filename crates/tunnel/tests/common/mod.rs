//! Two endpoints joined in memory on a virtual clock (quinn's `Pair`, without sockets).
#![allow(dead_code)]

use std::time::{Duration, Instant};
use tlsgate_tunnel::wire::Protocol;
use tlsgate_tunnel::{Config, ConnectionError, Endpoint, Event, Role, SessionId, Target};

pub struct Pair {
    pub now: Instant,
    pub portal: Endpoint,
    pub gate: Endpoint,
    pub portal_events: Vec<Event>,
    pub gate_events: Vec<Event>,
    /// When false, the gate's output is dropped (a peer gone silent).
    pub gate_to_portal_open: bool,
    pub portal_error: Option<ConnectionError>,
    pub gate_error: Option<ConnectionError>,
    /// Bytes moved in each direction.
    pub portal_sent: usize,
    pub gate_sent: usize,
}

pub fn cfg(role: Role) -> Config {
    let mut c = Config::new(role);
    c.recv_window = 64 * 1024;
    c.send_buffer = 64 * 1024;
    c
}

impl Pair {
    pub fn new() -> Self {
        Pair::with(cfg(Role::Portal), cfg(Role::Gate))
    }

    pub fn with(p: Config, g: Config) -> Self {
        let now = Instant::now();
        let mut pair = Pair {
            now,
            portal: Endpoint::new(p, now),
            gate: Endpoint::new(g, now),
            portal_events: Vec::new(),
            gate_events: Vec::new(),
            gate_to_portal_open: true,
            portal_error: None,
            gate_error: None,
            portal_sent: 0,
            gate_sent: 0,
        };
        pair.drive();
        pair
    }

    /// Moves records both ways until neither side has anything to send.
    pub fn drive(&mut self) {
        for _ in 0..1_000_000 {
            let a = self.flush_portal();
            let b = self.flush_gate();
            self.collect();
            if a == 0 && b == 0 {
                return;
            }
        }
        panic!("pair did not settle");
    }

    fn collect(&mut self) {
        while let Some(e) = self.portal.poll_event() {
            self.portal_events.push(e);
        }
        while let Some(e) = self.gate.poll_event() {
            self.gate_events.push(e);
        }
    }

    /// Portal output into the gate, at most 64 KiB per call (one TLS write's worth).
    pub fn flush_portal(&mut self) -> usize {
        let mut buf = Vec::new();
        while buf.len() < 64 * 1024 && self.portal.poll_transmit(self.now, &mut buf) {}
        if !buf.is_empty() {
            if let Err(e) = self.gate.handle_input(self.now, &buf) {
                self.gate_error.get_or_insert(e);
            }
        }
        self.portal_sent += buf.len();
        buf.len()
    }

    pub fn flush_gate(&mut self) -> usize {
        let mut buf = Vec::new();
        while buf.len() < 64 * 1024 && self.gate.poll_transmit(self.now, &mut buf) {}
        if !buf.is_empty() && self.gate_to_portal_open {
            if let Err(e) = self.portal.handle_input(self.now, &buf) {
                self.portal_error.get_or_insert(e);
            }
        }
        self.gate_sent += buf.len();
        buf.len()
    }

    /// Jumps the virtual clock and fires both endpoints' timers.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.portal.handle_timeout(self.now);
        self.gate.handle_timeout(self.now);
        self.drive();
    }

    /// Advances to the earlier of the two endpoints' next timers.
    pub fn advance_to_next_timeout(&mut self) {
        let next = [self.portal.poll_timeout(), self.gate.poll_timeout()].into_iter().flatten().min();
        if let Some(t) = next {
            self.advance(t.saturating_duration_since(self.now));
        }
    }

    /// Portal opens a TCP session that the gate accepts; returns its id.
    pub fn open_tcp(&mut self, target: Target) -> SessionId {
        let id = self.portal.open(self.now, Protocol::TCP, target).unwrap();
        self.drive();
        self.gate.accept(self.now, id).unwrap();
        self.drive();
        assert!(self.portal_events.contains(&Event::Opened { id }));
        id
    }

    pub fn take_portal_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.portal_events)
    }

    pub fn take_gate_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.gate_events)
    }

    /// Reads everything buffered on `id` at `side`; the bool says whether EOF was seen.
    pub fn read_all(side: &mut Endpoint, now: Instant, id: SessionId) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match side.read(now, id, &mut buf) {
                Ok(0) => return (out, true),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => return (out, false),
            }
        }
    }
}

/// Deterministic bytes that differ per session, to catch mixed-up streams.
pub fn pattern(seed: u16, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed as u32 * 7) as u8).collect()
}

pub fn target() -> Target {
    Target::name("db.corp.example", 5432).unwrap()
}

pub const SECS: fn(u64) -> Duration = Duration::from_secs;

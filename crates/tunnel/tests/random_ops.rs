//! Seeded random operations on both ends, with deliveries in random order so records cross:
//! no protocol error ever, every byte read is the byte written at that offset, and once every
//! session is closed both ends forget them all.

mod common;

use common::Pair;
use std::collections::HashMap;
use tlsgate_tunnel::wire::{OpenRc, Protocol, ResetCode};
use tlsgate_tunnel::{Endpoint, Event, SessionId, Target};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What one end knows of one session.
#[derive(Debug, Default)]
struct Track {
    epoch: u32,
    written: u64,
    read: u64,
    undecided: bool,
}

/// Byte `offset` of the stream written by `side` on session `id` in its `epoch`-th use.
fn byte(id: SessionId, epoch: u32, side: usize, offset: u64) -> u8 {
    (offset.wrapping_mul(131) + id as u64 * 7 + epoch as u64 * 13 + side as u64 * 101) as u8
}

struct World {
    pair: Pair,
    tracks: [HashMap<SessionId, Track>; 2],
    epochs: HashMap<SessionId, u32>,
    /// Evidence the run exercised something: bytes checked, releases and resets seen.
    verified: u64,
    releases: u64,
    resets: u64,
}

impl World {
    fn ep(&mut self, side: usize) -> &mut Endpoint {
        if side == 0 {
            &mut self.pair.portal
        } else {
            &mut self.pair.gate
        }
    }

    fn absorb_events(&mut self) {
        for side in 0..2 {
            let events =
                if side == 0 { self.pair.take_portal_events() } else { self.pair.take_gate_events() };
            for ev in events {
                match ev {
                    Event::OpenRequest { id, .. } => {
                        let epoch = self.epochs[&id];
                        self.tracks[side].insert(id, Track { epoch, undecided: true, ..Track::default() });
                    }
                    Event::Released { id } => {
                        self.tracks[side].remove(&id);
                        self.releases += 1;
                    }
                    Event::Reset { .. } => self.resets += 1,
                    Event::ConnectionClosed { error } => panic!("connection closed: {error}"),
                    _ => {}
                }
            }
        }
        assert!(self.pair.portal_error.is_none(), "{:?}", self.pair.portal_error);
        assert!(self.pair.gate_error.is_none(), "{:?}", self.pair.gate_error);
    }

    fn pick(&self, rng: &mut Rng, side: usize) -> Option<SessionId> {
        let mut ids: Vec<_> = self.tracks[side].keys().copied().collect();
        ids.sort();
        (!ids.is_empty()).then(|| ids[rng.below(ids.len())])
    }

    fn step(&mut self, rng: &mut Rng) {
        let side = rng.below(2);
        let now = self.pair.now;
        match rng.below(12) {
            0 => {
                if let Ok(id) = self.ep(side).open(now, Protocol::TCP, Target::ip([10, 0, 0, 1], 80)) {
                    let epoch = self.epochs.entry(id).or_default();
                    *epoch += 1;
                    let epoch = *epoch;
                    self.tracks[side].insert(id, Track { epoch, ..Track::default() });
                }
            }
            1 | 2 => {
                let undecided: Vec<_> =
                    self.tracks[side].iter().filter(|(_, t)| t.undecided).map(|(i, _)| *i).collect();
                if let Some(&id) = undecided.first() {
                    self.tracks[side].get_mut(&id).unwrap().undecided = false;
                    if rng.below(4) == 0 {
                        let _ = self.ep(side).refuse(now, id, OpenRc::CONNECTION_REFUSED, "no");
                    } else {
                        let _ = self.ep(side).accept(now, id);
                    }
                }
            }
            3 | 4 => {
                if let Some(id) = self.pick(rng, side) {
                    let len = rng.below(40_000);
                    let t = &self.tracks[side][&id];
                    let (epoch, off) = (t.epoch, t.written);
                    let data: Vec<u8> = (0..len as u64).map(|k| byte(id, epoch, side, off + k)).collect();
                    if let Ok(n) = self.ep(side).write(now, id, &data) {
                        self.tracks[side].get_mut(&id).unwrap().written += n as u64;
                    }
                }
            }
            5 | 6 => {
                if let Some(id) = self.pick(rng, side) {
                    let mut buf = vec![0u8; rng.below(50_000) + 1];
                    if let Ok(n) = self.ep(side).read(now, id, &mut buf) {
                        let t = self.tracks[side].get_mut(&id).unwrap();
                        for (k, b) in buf[..n].iter().enumerate() {
                            assert_eq!(
                                *b,
                                byte(id, t.epoch, 1 - side, t.read + k as u64),
                                "session {id} corrupted"
                            );
                        }
                        t.read += n as u64;
                        self.verified += n as u64;
                    }
                }
            }
            7 => {
                if let Some(id) = self.pick(rng, side) {
                    let _ = self.ep(side).finish(now, id);
                }
            }
            8 => {
                if let Some(id) = self.pick(rng, side) {
                    match rng.below(3) {
                        0 => drop(self.ep(side).reset(now, id, ResetCode::IO_ERROR, "r")),
                        1 => drop(self.ep(side).end(now, id, ResetCode::NONE, "e")),
                        _ => drop(self.ep(side).stop_reading(now, id)),
                    }
                }
            }
            // Deliver one direction only, so the other side's records are still in flight.
            9 => drop(self.pair.flush_portal()),
            10 => drop(self.pair.flush_gate()),
            _ => self.pair.drive(),
        }
        self.absorb_events();
    }
}

fn run(seed: u64, steps: usize) {
    let mut rng = Rng(seed);
    let mut w = World {
        pair: Pair::new(),
        tracks: [HashMap::new(), HashMap::new()],
        epochs: HashMap::new(),
        verified: 0,
        releases: 0,
        resets: 0,
    };
    w.absorb_events();
    for _ in 0..steps {
        w.step(&mut rng);
    }
    eprintln!("seed {seed}: {} bytes verified, {} releases, {} resets", w.verified, w.releases, w.resets);
    assert!(w.verified > 100_000 && w.releases > 20 && w.resets > 5, "seed {seed} did too little");
    // Wind down: refuse what is undecided, reset the rest, until both ends are empty.
    for _ in 0..10 {
        for side in 0..2 {
            let ids: Vec<_> = w.tracks[side].iter().map(|(i, t)| (*i, t.undecided)).collect();
            let now = w.pair.now;
            for (id, undecided) in ids {
                if undecided {
                    let _ = w.ep(side).refuse(now, id, OpenRc::CANCELLED, "");
                } else {
                    let _ = w.ep(side).reset(now, id, ResetCode::CANCELLED, "");
                }
            }
        }
        w.pair.drive();
        w.absorb_events();
    }
    assert_eq!((w.pair.portal.session_count(), w.pair.gate.session_count()), (0, 0), "seed {seed}");
    assert!(w.tracks.iter().all(HashMap::is_empty), "every session was released on both ends");
}

#[test]
fn random_operations_with_crossing_records() {
    for seed in 1..=8u64 {
        run(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), 1500);
    }
}

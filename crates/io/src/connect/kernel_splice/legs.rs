//! The two legs of a kernel-spliced connection, as the BPF program (`splice.bpf.c`) reads
//! them, and how they follow from what the gate's two sockets know at the downgrade.
//!
//! Sequence spaces: the portal's bytes go out with `seq + seq_add` of the portal leg, the
//! destination's with `seq + seq_add` of the destination leg; an acknowledgement (and a SACK
//! edge) arriving on one leg is in the other leg's space and goes out minus that leg's
//! `seq_add`. Both offsets are fixed at stream positions, not at an instant: the portal's
//! raw stream starts right after its close_notify, the destination's at its first byte.

use std::net::SocketAddrV4;

pub const LEG_WATCH: u32 = 0;
pub const LEG_FREEZE: u32 = 1;
pub const LEG_SPLICE: u32 = 2;
pub const LEG_RESET: u32 = 3;

pub const F_SPLIT_PENDING: u8 = 1;
pub const F_WATCH_ACK: u8 = 2;
#[cfg(test)]
pub const F_TS_SEEN: u8 = 4;

pub const EV_ACKED: u32 = 1;
pub const EV_FIN: u32 = 2;
pub const EV_RST: u32 = 3;

/// A segment as it arrives: its source and destination (network byte order in memory).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct LegKey {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
}

impl LegKey {
    /// Segments from `from` to `to`.
    pub fn new(from: SocketAddrV4, to: SocketAddrV4) -> LegKey {
        LegKey {
            saddr: from.ip().octets(),
            daddr: to.ip().octets(),
            sport: from.port().to_be_bytes(),
            dport: to.port().to_be_bytes(),
        }
    }
}

/// `struct leg` of splice.bpf.c, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Leg {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub state: u32,
    pub seq_add: u32,
    pub split_at: u32,
    pub base: u32,
    pub watch_ack: u32,
    pub ts_off: u32,
    pub ts_recent: u32,
    pub in_ifindex: u32,
    pub ws_in: u8,
    pub ws_out: u8,
    pub flags: u8,
    pub pad: u8,
    pub bytes: u64,
    pub packets: u64,
    pub last_ns: u64,
}

/// A leg that only watches (learns the peer's timestamps and interface) or also holds the
/// peer's data back.
pub fn watching(state: u32) -> Leg {
    Leg { state, ..Leg::default() }
}

/// One TCP connection of the gate as its socket sees it at the downgrade.
#[derive(Clone, Copy, Debug)]
pub struct SocketView {
    pub local: SocketAddrV4,
    pub peer: SocketAddrV4,
    /// The sequence number of the next byte the gate sends (its write queue's end).
    pub write_seq: u32,
    /// The sequence number of the next byte the gate expects.
    pub rcv_nxt: u32,
    /// TSval = CLOCK_MONOTONIC in ms + this.
    pub ts_off: u32,
    /// Window scale the peer applies to its windows, the gate to its own.
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
}

/// Where the streams meet, read from the sockets.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// The portal's connection; `rcv_nxt` is where its close_notify will start, `write_seq`
    /// the end of everything the gate sends it (its answer and close_notify, still queued).
    pub portal: SocketView,
    /// The destination's connection, nothing sent or received on it yet.
    pub dest: SocketView,
}

/// The portal leg and the destination leg, ready to splice. The portal leg's offset is
/// provisional until the program reads the close_notify's length; until then an
/// acknowledgement toward the portal ends at the close_notify's start (it acknowledges less,
/// never more, than the portal sent).
pub fn spliced(plan: &Plan, mut portal_leg: Leg, mut dest_leg: Leg) -> ((LegKey, Leg), (LegKey, Leg)) {
    let (p, d) = (plan.portal, plan.dest);
    portal_leg.saddr = d.local.ip().octets();
    portal_leg.daddr = d.peer.ip().octets();
    portal_leg.sport = d.local.port().to_be_bytes();
    portal_leg.dport = d.peer.port().to_be_bytes();
    portal_leg.state = LEG_SPLICE;
    portal_leg.split_at = p.rcv_nxt;
    portal_leg.base = d.write_seq;
    portal_leg.seq_add = d.write_seq.wrapping_sub(p.rcv_nxt);
    portal_leg.watch_ack = p.write_seq;
    portal_leg.ts_off = d.ts_off;
    portal_leg.ws_in = p.snd_wscale;
    portal_leg.ws_out = d.rcv_wscale;
    portal_leg.flags |= F_SPLIT_PENDING | F_WATCH_ACK;

    dest_leg.saddr = p.local.ip().octets();
    dest_leg.daddr = p.peer.ip().octets();
    dest_leg.sport = p.local.port().to_be_bytes();
    dest_leg.dport = p.peer.port().to_be_bytes();
    dest_leg.state = LEG_SPLICE;
    dest_leg.seq_add = p.write_seq.wrapping_sub(d.rcv_nxt);
    dest_leg.ts_off = p.ts_off;
    dest_leg.ws_in = d.snd_wscale;
    dest_leg.ws_out = p.rcv_wscale;
    ((LegKey::new(p.peer, p.local), portal_leg), (LegKey::new(d.peer, d.local), dest_leg))
}

/// A socket's view for the tests: window scales 7 (the peer's) and 9 (the gate's).
#[cfg(test)]
pub fn view(local: &str, peer: &str, write_seq: u32, rcv_nxt: u32, ts_off: u32) -> SocketView {
    SocketView {
        local: local.parse().unwrap(),
        peer: peer.parse().unwrap(),
        write_seq,
        rcv_nxt,
        ts_off,
        snd_wscale: 7,
        rcv_wscale: 9,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_programs() {
        assert_eq!(std::mem::size_of::<LegKey>(), 12);
        assert_eq!(std::mem::size_of::<Leg>(), 72);
        assert_eq!(std::mem::offset_of!(Leg, in_ifindex), 40);
        assert_eq!(std::mem::offset_of!(Leg, bytes), 48);
    }

    #[test]
    fn each_leg_goes_out_as_the_other_connection_and_the_offsets_meet_at_the_stream_starts() {
        let plan = Plan {
            // The portal's close_notify starts at 1000; the gate's bytes to it end at 5000.
            portal: view("10.0.0.1:8443", "10.0.0.2:40000", 5000, 1000, 111),
            // Nothing sent or received toward the destination: its streams start at 7000 and
            // at u32::MAX (wrapping).
            dest: view("10.0.1.1:50000", "10.0.1.2:443", 7000, u32::MAX, 222),
        };
        let ((pk, pl), (dk, dl)) = spliced(&plan, Leg::default(), Leg::default());
        assert_eq!(pk, LegKey::new("10.0.0.2:40000".parse().unwrap(), "10.0.0.1:8443".parse().unwrap()));
        assert_eq!(dk, LegKey::new("10.0.1.2:443".parse().unwrap(), "10.0.1.1:50000".parse().unwrap()));
        // The portal leg leaves as the gate's segment to the destination, and back.
        assert_eq!((pl.saddr, pl.daddr), ([10, 0, 1, 1], [10, 0, 1, 2]));
        assert_eq!((dl.saddr, dl.daddr, u16::from_be_bytes(dl.dport)), ([10, 0, 0, 1], [10, 0, 0, 2], 40000));
        // Provisional: the close_notify's first byte maps to the destination stream's start.
        assert_eq!(1000u32.wrapping_add(pl.seq_add), 7000);
        // The destination's first byte follows the gate's last byte to the portal.
        assert_eq!(u32::MAX.wrapping_add(dl.seq_add), 5000);
        // The destination acknowledging its stream's start acknowledges the portal up to the
        // close_notify; the portal acknowledging the gate's last byte acknowledges nothing of
        // the destination's.
        assert_eq!(7000u32.wrapping_sub(pl.seq_add), 1000);
        assert_eq!(5000u32.wrapping_sub(dl.seq_add), u32::MAX);
        assert_eq!((pl.watch_ack, pl.split_at, pl.base), (5000, 1000, 7000));
        // Timestamps leave on the clock of the connection they join; windows are rescaled.
        assert_eq!((pl.ts_off, dl.ts_off), (222, 111));
        assert_eq!((pl.ws_in, pl.ws_out, dl.ws_in, dl.ws_out), (7, 9, 7, 9));
        assert_eq!(pl.flags, F_SPLIT_PENDING | F_WATCH_ACK);
    }

    #[test]
    fn what_the_legs_learned_while_watching_is_kept() {
        let plan = Plan {
            portal: view("10.0.0.1:8443", "10.0.0.2:40000", 5, 1, 0),
            dest: view("10.0.1.1:50000", "10.0.1.2:443", 7, 9, 0),
        };
        let learned = Leg { ts_recent: 42, in_ifindex: 3, flags: F_TS_SEEN, ..watching(LEG_WATCH) };
        let ((_, pl), (_, dl)) = spliced(&plan, learned, Leg { ts_recent: 9, in_ifindex: 4, ..learned });
        assert_eq!((pl.ts_recent, pl.in_ifindex, pl.flags & F_TS_SEEN), (42, 3, F_TS_SEEN));
        assert_eq!((dl.ts_recent, dl.in_ifindex), (9, 4));
    }
}

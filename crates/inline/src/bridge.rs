//! The L2 bridge around the engine (sans-IO): Ethernet frames in from either side, frames out to
//! either side. IPv4/IPv6 frames go through the [`Engine`]; everything else (ARP, IPv6 neighbour
//! discovery, other ethertypes) crosses unchanged, so the box is invisible at L3. The engine's
//! packets are framed again with the MAC addresses learned from the frames seen on each side.
//! Balanced services' virtual addresses are answered in ARP with the bridge's own MAC.
//!
//! The AF_PACKET driver (`tlsgate-io`) and the simulator both drive this type.

use crate::engine::Engine;
use std::time::Duration;

/// Which interface a frame came from or goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

/// One frame as read from an interface.
#[derive(Clone, Copy, Debug)]
pub struct InFrame<'a> {
    pub from: Side,
    pub data: &'a [u8],
    /// The sender's stack left the TCP/UDP checksum unfinished (checksum offload on veth and
    /// most NICs: the field holds only the pseudo-header sum). The bridge completes it.
    pub csum_partial: bool,
}

/// Counters of the bridge itself (the engine has its own [`crate::engine::Stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// Non-IP frames (ARP, …) crossed unchanged.
    pub non_ip_frames: u64,
    /// ARP requests for a virtual address answered by the bridge.
    pub arp_answered: u64,
    /// Engine packets with no learned MAC for their destination: dropped.
    pub unroutable: u64,
    /// Frames larger than the far side's MTU allows: dropped (segmentation offload left on).
    pub oversize: u64,
    /// Partial checksums completed.
    pub csum_completed: u64,
}

#[derive(Debug)]
pub struct Bridge {
    engine: Engine,
}

impl Bridge {
    /// `mac`: the address the bridge answers ARP for virtual addresses with; `mtu`: the largest
    /// IP packet either side accepts.
    pub fn new(engine: Engine, mac: [u8; 6], mtu: usize) -> Bridge {
        let _ = (mac, mtu);
        Bridge { engine }
    }

    /// Handles one frame seen at `now`; appends the frames to write, each with its side.
    pub fn handle_frame(&mut self, now: Duration, frame: InFrame<'_>, out: &mut Vec<(Side, Vec<u8>)>) {
        let _ = (now, frame, out);
        todo!()
    }

    pub fn poll_timeout(&self) -> Option<Duration> {
        self.engine.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Duration, out: &mut Vec<(Side, Vec<u8>)>) {
        let _ = (now, out);
        todo!()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    pub fn stats(&self) -> BridgeStats {
        todo!()
    }
}

//! An AF_PACKET socket on one interface with a memory-mapped TPACKET_V3 receive ring (frames
//! are read in blocks the kernel fills, no system call per frame) and a batched transmit path.
//! The only module of tlsgate with `unsafe`: the ring is shared memory with the kernel.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

#[derive(Clone, Copy, Debug)]
pub struct RingConfig {
    /// Bytes per receive block (a power of two, a multiple of the page size).
    pub block_size: usize,
    pub block_count: usize,
    /// A block the kernel has not filled is handed over after this long, so light traffic is not
    /// held back waiting for a full block.
    pub block_timeout_ms: u32,
}

impl Default for RingConfig {
    fn default() -> RingConfig {
        RingConfig { block_size: 1 << 20, block_count: 16, block_timeout_ms: 1 }
    }
}

/// One received frame, borrowed from the ring.
#[derive(Clone, Copy, Debug)]
pub struct RxFrame<'a> {
    /// The Ethernet frame as captured.
    pub data: &'a [u8],
    /// The frame's length on the wire; larger than `data.len()` when truncated.
    pub wire_len: usize,
    /// The TCP/UDP checksum is unfinished (TP_STATUS_CSUMNOTREADY): checksum offload.
    pub csum_partial: bool,
}

/// Kernel and ring counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Frames the kernel dropped because the ring was full (PACKET_STATISTICS).
    pub kernel_drops: u64,
    pub tx_errors: u64,
}

#[derive(Debug)]
pub struct PacketRing {}

impl PacketRing {
    /// Opens the socket bound to `iface`, in promiscuous mode (a bridge sees frames addressed to
    /// the far host), ignoring the frames it sends itself. An error names the interface and, when
    /// permission is missing, the capability (CAP_NET_RAW).
    pub fn open(iface: &str, config: &RingConfig) -> io::Result<PacketRing> {
        let _ = (iface, config);
        todo!()
    }

    /// The interface's MTU (the largest IP packet it carries).
    pub fn mtu(&self) -> usize {
        todo!()
    }

    /// The interface's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        todo!()
    }

    /// Calls `f` for each frame received since the last call and returns the blocks to the
    /// kernel; never blocks. Returns the number of frames.
    pub fn recv(&mut self, f: impl FnMut(RxFrame<'_>)) -> usize {
        let _ = f;
        todo!()
    }

    /// Queues one frame; it leaves at the next [`PacketRing::flush`] (or sooner when the queue
    /// is full).
    pub fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        let _ = frame;
        todo!()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        todo!()
    }

    pub fn stats(&self) -> RingStats {
        todo!()
    }
}

impl AsFd for PacketRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        todo!()
    }
}

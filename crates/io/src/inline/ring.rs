//! An AF_PACKET socket on one interface with a memory-mapped TPACKET_V3 receive ring (frames
//! are read in blocks the kernel fills, no system call per frame) and a batched transmit path.
//! One of tlsgate's two modules with `unsafe` (the other: `ktls::sys`): the ring is shared
//! memory with the kernel.
//!
//! **Receive: TPACKET_V3.** The kernel copies each frame into the current block of a ring mapped
//! into our memory and hands the whole block over when it is full or when `block_timeout_ms` has
//! passed. One poll(2) wakeup then yields a block of many frames, read with no system call per
//! frame, and frames of any size pack tightly (TPACKET_V1/V2 give every frame a fixed slot).
//! Handing a block back is one store to its status word. With PACKET_VNET_HDR a
//! `virtio_net_hdr` precedes each frame: a sender's TSO/GSO frame (64 KiB of one flow, as a veth
//! carries it) arrives whole with its segment size.
//!
//! **Transmit: batched `sendmmsg(2)` with segmentation offload.** [`PacketRing::queue`] takes
//! the frame (its buffer, no copy; [`PacketRing::send`] copies a borrowed one) and
//! [`PacketRing::flush`] hands the whole queue to the kernel in one call, from a second packet
//! socket on the interface that only sends, with PACKET_VNET_HDR: a run of consecutive segments
//! of one TCP flow (see [`super::gso`]) leaves as one GSO frame that the kernel cuts back into
//! the same MTU-sized frames (in software with TSO off; with TSO on a veth carries it to the peer
//! whole and a NIC cuts it), so the packet socket, the qdisc and the device checks run once per
//! run instead of once per frame. Before that, a bare ACK that a later one of the same flow in
//! the batch acknowledges beyond is dropped ([`super::acks`]): the client's ACKs of one receive
//! block otherwise leave as one packet each. A
//! TPACKET_V3 transmit ring would save the copy into the kernel's buffer, but its slots stay the
//! kernel's until the driver frees each frame, so it needs completion tracking over more shared
//! memory, reports a bad frame only as a slot status and carries no GSO header per slot that
//! sendmmsg's iovecs do not; `sendmmsg` costs one system call per batch, reports errors per
//! message and needs no shared memory. The qdisc is kept (no PACKET_QDISC_BYPASS): on a veth
//! there is none (noqueue), on a NIC it absorbs bursts the driver cannot take at once, and
//! tcpdump on the interface still sees what the bridge sends.
//!
//! **Later: AF_XDP.** An XDP socket would slot in behind the same `recv`/`send`/`flush`: a UMEM
//! (frame memory shared with the driver) with fill and completion rings, RX/TX descriptor rings,
//! and a small BPF program that redirects the interface's frames into the socket. It avoids the
//! copy into the ring, but needs a driver with XDP support (zero-copy mode) and loading BPF.

#![allow(unsafe_code)]

use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::gso::{self, Message, TxFrame};

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
        // Many small blocks: a block goes over after the timeout however few frames it holds, so
        // the ring lasts about `block_count` timeouts while the bridge thread waits for a CPU
        // (16 blocks of 1 MiB lasted 16 ms, and a loaded machine dropped frames every second).
        // Each block holds at least one GSO frame of 64 KiB with its headers (see
        // `RxFrame::gso_size`): a frame larger than a block is cut short by the kernel.
        RingConfig { block_size: 1 << 17, block_count: 256, block_timeout_ms: 1 }
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
    /// A TCP GSO frame (the sender's TSO/GSO left its segments whole, as a veth carries them):
    /// the segment size it stands for; 0 for a frame as a wire carries it.
    pub gso_size: u16,
}

/// Kernel and ring counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Frames the kernel dropped because the ring was full (PACKET_STATISTICS).
    pub kernel_drops: u64,
    pub tx_errors: u64,
    /// Messages handed to the kernel (a GSO run of frames is one).
    pub tx_messages: u64,
    /// Bare ACKs dropped before sending because a later one of the same flow in the same batch
    /// acknowledged further (`acks::superseded`).
    pub tx_acks_superseded: u64,
    /// Frames larger than a ring block, which the kernel cut short: dropped.
    pub rx_truncated: u64,
}

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
/// Frames queued before [`PacketRing::send`] flushes on its own: room for a few GSO runs.
const TX_BATCH: usize = 256;

/// Where the fields of a block's header (`tpacket_block_desc`) lie.
const BLOCK_STATUS: usize =
    offset_of!(libc::tpacket_block_desc, hdr) + offset_of!(libc::tpacket_hdr_v1, block_status);
const BLOCK_NUM_PKTS: usize =
    offset_of!(libc::tpacket_block_desc, hdr) + offset_of!(libc::tpacket_hdr_v1, num_pkts);
const BLOCK_FIRST_PKT: usize =
    offset_of!(libc::tpacket_block_desc, hdr) + offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt);
const BLOCK_HDR_LEN: usize = size_of::<libc::tpacket_block_desc>();

/// A frame's header is a `tpacket3_hdr`, then (TPACKET_ALIGNMENT-aligned) a `sockaddr_ll`.
const SLL_OFFSET: usize =
    (size_of::<libc::tpacket3_hdr>() + libc::TPACKET_ALIGNMENT - 1) & !(libc::TPACKET_ALIGNMENT - 1);
const PKT_HDR_LEN: usize = SLL_OFFSET + size_of::<libc::sockaddr_ll>();

/// An `ifreq` with its union as bytes, so the answers are read without `unsafe`.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; size_of::<libc::ifreq>() - libc::IFNAMSIZ],
}

/// What a ring's interface is now ([`PacketRing::link`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Up,
    /// Administratively down: the kernel stops delivering and resumes once it is up again.
    Down,
    /// Removed (or its name now names another interface): the ring will never see a frame again.
    Gone,
}

pub struct PacketRing {
    // Declared before `fd`: the ring is unmapped before the socket closes.
    rx: RxRing,
    fd: OwnedFd,
    /// The sending socket: bound to the interface for no protocol (it receives nothing), with
    /// PACKET_VNET_HDR, which the receive ring's socket cannot have without a header per frame.
    tx: OwnedFd,
    iface: String,
    ifindex: i32,
    mtu: usize,
    mac: [u8; 6],
    tx_frames_queued: Vec<TxFrame>,
    /// Per queued frame: the segment size the kernel cuts it at, 0 for none.
    tx_gso_sizes: Vec<u16>,
    /// Every received frame has a `virtio_net_hdr` in front (PACKET_VNET_HDR on the ring).
    rx_vnet: bool,
    rx_frames: u64,
    rx_truncated: u64,
    tx_frames: u64,
    tx_errors: u64,
    tx_messages: u64,
    tx_acks_superseded: u64,
    /// PACKET_STATISTICS resets on every read: the drops read so far.
    kernel_drops: AtomicU64,
}

impl std::fmt::Debug for PacketRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketRing")
            .field("iface", &self.iface)
            .field("fd", &self.fd)
            .field("mtu", &self.mtu)
            .field("blocks", &self.rx.block_count)
            .field("block_size", &self.rx.block_size)
            .finish_non_exhaustive()
    }
}

impl PacketRing {
    /// Opens the socket bound to `iface`, in promiscuous mode (a bridge sees frames addressed to
    /// the far host), ignoring the frames it sends itself. An error names the interface and, when
    /// permission is missing, the capability (CAP_NET_RAW).
    pub fn open(iface: &str, config: &RingConfig) -> io::Result<PacketRing> {
        let fail = |what: &str, e: io::Error| open_error(iface, what, e);
        check_config(config).map_err(|e| fail("ring configuration", e))?;
        let name = if_name(iface)?;
        // Protocol 0: the socket receives nothing until `bind` names the interface and ETH_P_ALL,
        // so no frame of another interface slips into the ring meanwhile.
        let socket = socket2::Socket::new(socket2::Domain::PACKET, socket2::Type::RAW, None)
            .map_err(|e| fail("packet socket", e))?;
        socket.set_nonblocking(true).map_err(|e| fail("packet socket", e))?;
        let fd = OwnedFd::from(socket);
        let sock = fd.as_fd();

        let ifindex = i32_at(&if_ioctl(sock, &name, libc::SIOCGIFINDEX)?, 0);
        let hw = if_ioctl(sock, &name, libc::SIOCGIFHWADDR)?;
        if u16::from_ne_bytes([hw[0], hw[1]]) != libc::ARPHRD_ETHER {
            return Err(fail(
                "link type",
                io::Error::new(io::ErrorKind::InvalidInput, "not an Ethernet interface"),
            ));
        }
        let mac: [u8; 6] = hw[2..8].try_into().expect("six bytes");
        let mtu = i32_at(&if_ioctl(sock, &name, libc::SIOCGIFMTU)?, 0);
        let mtu = usize::try_from(mtu).unwrap_or(0);

        let version = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        set_opt(sock, libc::PACKET_VERSION, &version).map_err(|e| fail("TPACKET_V3", e))?;
        // What the host itself sends out of the interface would be captured as PACKET_OUTGOING
        // (a packet socket's own frames never come back to it); `recv` skips those too, for
        // kernels older than 4.20 that lack the option.
        let one: libc::c_int = 1;
        match set_opt(sock, libc::PACKET_IGNORE_OUTGOING, &one) {
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {}
            r => r.map_err(|e| fail("PACKET_IGNORE_OUTGOING", e))?,
        }
        // A `virtio_net_hdr` before each frame says whether it is a GSO frame and of which
        // segment size (the sender's TSO left it whole). Set before the ring exists (the kernel
        // refuses it after); ring frames carry it from Linux 5.8 on, older kernels ignore it.
        let rx_vnet = vnet_in_ring();
        if rx_vnet {
            set_opt(sock, libc::PACKET_VNET_HDR, &one).map_err(|e| fail("PACKET_VNET_HDR", e))?;
        }
        let as_uint = |n: usize| libc::c_uint::try_from(n).expect("checked by check_config");
        // V3 lays frames out freely inside a block; the frame fields only have to agree with the
        // block geometry, so one "frame" per block.
        let req = libc::tpacket_req3 {
            tp_block_size: as_uint(config.block_size),
            tp_block_nr: as_uint(config.block_count),
            tp_frame_size: as_uint(config.block_size),
            tp_frame_nr: as_uint(config.block_count),
            tp_retire_blk_tov: config.block_timeout_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        set_opt(sock, libc::PACKET_RX_RING, &req).map_err(|e| fail("receive ring", e))?;
        let rx = RxRing::map(sock, config.block_size, config.block_count)
            .map_err(|e| fail("mapping the receive ring", e))?;

        bind(sock, ifindex).map_err(|e| fail("bind", e))?;
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex,
            mr_type: libc::PACKET_MR_PROMISC as libc::c_ushort,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        set_opt(sock, libc::PACKET_ADD_MEMBERSHIP, &mreq).map_err(|e| fail("promiscuous mode", e))?;
        let tx = open_tx(ifindex).map_err(|e| fail("sending socket", e))?;

        Ok(PacketRing {
            rx,
            fd,
            tx,
            iface: iface.to_owned(),
            ifindex,
            mtu,
            mac,
            tx_frames_queued: Vec::with_capacity(TX_BATCH),
            tx_gso_sizes: Vec::with_capacity(TX_BATCH),
            rx_vnet,
            rx_frames: 0,
            rx_truncated: 0,
            tx_frames: 0,
            tx_errors: 0,
            tx_messages: 0,
            tx_acks_superseded: 0,
            kernel_drops: AtomicU64::new(0),
        })
    }

    /// The interface's MTU (the largest IP packet it carries).
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// The interface's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The interface's name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The error the kernel reported on the receiving socket, read and cleared (SO_ERROR). A
    /// packet socket reports ENETDOWN when its interface goes down or away, and until the error
    /// is read poll(2) reports POLLERR at once every time: the bridge thread spun on a CPU.
    pub fn take_error(&self) -> Option<io::Error> {
        match socket2::SockRef::from(&self.fd).take_error() {
            Ok(e) => e,
            Err(e) => Some(e),
        }
    }

    /// Whether the interface the ring was opened on is still there, and up. One whose name now
    /// names another interface (removed and made again) is gone: the socket stays bound to the
    /// old one's index and never sees a frame again.
    pub fn link(&self) -> Link {
        let Ok(name) = if_name(&self.iface) else { return Link::Gone };
        match if_ioctl(self.fd.as_fd(), &name, libc::SIOCGIFINDEX) {
            Ok(data) if i32_at(&data, 0) == self.ifindex => {}
            _ => return Link::Gone,
        }
        match if_ioctl(self.fd.as_fd(), &name, libc::SIOCGIFFLAGS) {
            Ok(data) if u16::from_ne_bytes([data[0], data[1]]) & libc::IFF_UP as u16 != 0 => Link::Up,
            Ok(_) => Link::Down,
            Err(_) => Link::Gone,
        }
    }

    /// Calls `f` for each frame received since the last call and returns the blocks to the
    /// kernel; never blocks. Returns the number of frames.
    pub fn recv(&mut self, mut f: impl FnMut(RxFrame<'_>)) -> usize {
        let mut frames = 0;
        for _ in 0..self.rx.block_count {
            let block = self.rx.next;
            // Acquire: the kernel's writes into the block happen before it sets TP_STATUS_USER.
            if self.rx.word(block, BLOCK_STATUS).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                break;
            }
            let count = self.rx.word(block, BLOCK_NUM_PKTS).load(Ordering::Relaxed);
            let first = self.rx.word(block, BLOCK_FIRST_PKT).load(Ordering::Relaxed) as usize;
            let vnet = self.rx_vnet;
            let packets = self.rx.packets(block);
            let mut deliver = |frame: RxFrame<'_>| {
                if frame.wire_len > frame.data.len() {
                    // Cut short to the block: not a frame the bridge may pass on.
                    self.rx_truncated += 1;
                } else {
                    frames += 1;
                    f(frame);
                }
            };
            walk_block(packets, first.wrapping_sub(BLOCK_HDR_LEN), count, vnet, &mut deliver);
            // Release: our reads of the block happen before the kernel may refill it.
            self.rx.word(block, BLOCK_STATUS).store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.rx.next = (block + 1) % self.rx.block_count;
        }
        self.rx_frames += frames as u64;
        frames
    }

    /// Queues a copy of one frame; it leaves at the next [`PacketRing::flush`] (or sooner when
    /// the queue is full).
    pub fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.queue(frame.to_vec())
    }

    /// Queues one frame, taking its buffer (no copy); it leaves at the next
    /// [`PacketRing::flush`] (or sooner when the queue is full).
    pub fn queue(&mut self, frame: Vec<u8>) -> io::Result<()> {
        self.queue_segmented(frame, 0)
    }

    /// [`PacketRing::queue`] for a TCP packet larger than the MTU with `gso_size` above 0: it
    /// leaves as one GSO frame that the kernel (or the device) cuts into segments of `gso_size`
    /// payload bytes (see `Bridge::set_segmentation_offload`).
    pub fn queue_segmented(&mut self, frame: Vec<u8>, gso_size: u16) -> io::Result<()> {
        self.enqueue(TxFrame::whole(frame), gso_size)
    }

    /// [`PacketRing::queue_segmented`] for the IP packet `ip` behind the Ethernet header `eth`,
    /// kept apart: the kernel gathers both, so putting the header in front moves no byte.
    pub fn queue_packet(&mut self, eth: [u8; ETH_HLEN], ip: Vec<u8>, gso_size: u16) -> io::Result<()> {
        self.enqueue(TxFrame::split(eth, ip), gso_size)
    }

    fn enqueue(&mut self, frame: TxFrame, gso_size: u16) -> io::Result<()> {
        // The kernel allows four more bytes for an 802.1Q/802.1ad tag.
        let eth = frame.eth();
        let tagged =
            eth.len() == ETH_HLEN && matches!(u16::from_be_bytes([eth[12], eth[13]]), 0x8100 | 0x88a8);
        let max = if gso_size > 0 {
            ETH_HLEN + usize::from(u16::MAX)
        } else {
            self.mtu + ETH_HLEN + if tagged { VLAN_HLEN } else { 0 }
        };
        if frame.len() < ETH_HLEN || frame.len() > max {
            self.tx_errors += 1;
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "interface {}: a {}-byte frame does not fit (Ethernet header, then at most \
                     the MTU of {} bytes)",
                    self.iface,
                    frame.len(),
                    self.mtu
                ),
            ));
        }
        if self.tx_frames_queued.len() == TX_BATCH {
            self.flush()?;
        }
        self.tx_frames_queued.push(frame);
        self.tx_gso_sizes.push(gso_size);
        Ok(())
    }

    /// Sends the queued frames. A frame the kernel refuses for want of room or a link (the
    /// socket's buffer is full, the interface is down) is dropped and counted in `tx_errors`, as
    /// a switch drops; an error that means the socket or interface is gone is returned.
    pub fn flush(&mut self) -> io::Result<()> {
        let (keep, superseded) = super::acks::superseded(&self.tx_frames_queued);
        if superseded > 0 {
            let mut k = keep.iter();
            self.tx_frames_queued.retain(|_| *k.next().expect("a mask entry per frame"));
            let mut k = keep.iter();
            self.tx_gso_sizes.retain(|_| *k.next().expect("a mask entry per frame"));
            self.tx_acks_superseded += superseded as u64;
        }
        let messages = gso::plan(&mut self.tx_frames_queued, &self.tx_gso_sizes);
        let frames_in = |m: &[Message]| m.iter().map(|m| m.frames() as u64).sum::<u64>();
        let mut done = 0;
        let mut result = Ok(());
        while done < messages.len() {
            match send_batch(self.tx.as_fd(), &self.tx_frames_queued, &messages[done..]) {
                Ok(sent) => {
                    self.tx_frames += frames_in(&messages[done..done + sent]);
                    self.tx_messages += sent as u64;
                    done += sent;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if dropped_frame(&e) => {
                    self.tx_errors += messages[done].frames() as u64;
                    done += 1;
                }
                Err(e) => {
                    self.tx_errors += frames_in(&messages[done..]);
                    result = Err(io::Error::new(
                        e.kind(),
                        format!("interface {}: sending frames: {e}", self.iface),
                    ));
                    break;
                }
            }
        }
        self.tx_frames_queued.clear();
        self.tx_gso_sizes.clear();
        result
    }

    pub fn stats(&self) -> RingStats {
        if let Ok(s) = packet_statistics(self.fd.as_fd()) {
            self.kernel_drops.fetch_add(u64::from(s.tp_drops), Ordering::Relaxed);
        }
        RingStats {
            rx_frames: self.rx_frames,
            tx_frames: self.tx_frames,
            kernel_drops: self.kernel_drops.load(Ordering::Relaxed),
            tx_errors: self.tx_errors,
            tx_messages: self.tx_messages,
            tx_acks_superseded: self.tx_acks_superseded,
            rx_truncated: self.rx_truncated,
        }
    }
}

impl AsFd for PacketRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The receive ring: `block_count` blocks of `block_size` bytes mapped from the socket.
struct RxRing {
    base: NonNull<u8>,
    block_size: usize,
    block_count: usize,
    /// The block the kernel hands over next.
    next: usize,
}

// SAFETY: the mapping belongs to this value alone (like a Box); moving it to another thread
// moves that ownership. Shared references reach it only through atomic status words.
unsafe impl Send for RxRing {}
// SAFETY: `&RxRing` gives access to the status words only, as atomics; the blocks themselves
// are reached through `&mut RxRing`.
unsafe impl Sync for RxRing {}

impl RxRing {
    fn map(sock: BorrowedFd<'_>, block_size: usize, block_count: usize) -> io::Result<RxRing> {
        let len = block_size * block_count;
        // SAFETY: a fresh shared mapping of the socket's ring, at an address the kernel picks;
        // no existing memory is affected. The result is checked before use.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                sock.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(RxRing { base, block_size, block_count, next: 0 })
    }

    /// A 32-bit word of a block's header, as the kernel shares it.
    fn word(&self, block: usize, offset: usize) -> &AtomicU32 {
        debug_assert!(block < self.block_count && offset + 4 <= BLOCK_HDR_LEN);
        // SAFETY: the word lies inside the mapping (block < block_count, offset within the
        // header), is 4-byte aligned (blocks are page-aligned, header fields are u32-aligned),
        // and lives as long as `self`. The kernel reads and writes it as one aligned word.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(block * self.block_size + offset).cast()) }
    }

    /// The frames of a block the kernel has handed over (everything after the block header).
    fn packets(&mut self, block: usize) -> &mut [u8] {
        debug_assert!(block < self.block_count);
        // SAFETY: the range lies inside the mapping. The caller saw TP_STATUS_USER (acquire) on
        // this block, and the kernel leaves a user-owned block's frames alone until the status
        // is set back, which the caller does only after this borrow of `self` ends.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.base.as_ptr().add(block * self.block_size + BLOCK_HDR_LEN),
                self.block_size - BLOCK_HDR_LEN,
            )
        }
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no borrow of it outlives `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.block_size * self.block_count);
        }
    }
}

/// Calls `f` for each frame of one block (`first` is the offset of the first frame in `block`).
/// Frames we sent ourselves are skipped; an 802.1Q tag the kernel took out is put back in front
/// of the frame. With `vnet`, a `virtio_net_hdr` lies just before each frame.
fn walk_block(block: &mut [u8], first: usize, count: u32, vnet: bool, f: &mut impl FnMut(RxFrame<'_>)) {
    let mut at = first;
    for _ in 0..count {
        let Some(hdr) = block.get(at..at.saturating_add(PKT_HDR_LEN)) else { break };
        let field = |offset| u32_at(hdr, offset) as usize;
        let next = field(offset_of!(libc::tpacket3_hdr, tp_next_offset));
        let mut snaplen = field(offset_of!(libc::tpacket3_hdr, tp_snaplen));
        let mut wire_len = field(offset_of!(libc::tpacket3_hdr, tp_len));
        let status = u32_at(hdr, offset_of!(libc::tpacket3_hdr, tp_status));
        let mac_at = offset_of!(libc::tpacket3_hdr, tp_mac);
        let mut mac = usize::from(u16::from_ne_bytes([hdr[mac_at], hdr[mac_at + 1]]));
        let pkttype = hdr[SLL_OFFSET + offset_of!(libc::sockaddr_ll, sll_pkttype)];
        let variant = offset_of!(libc::tpacket3_hdr, hv1);
        let tci = u32_at(hdr, variant + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tci));
        let tpid_at = variant + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tpid);
        let tpid = u16::from_ne_bytes([hdr[tpid_at], hdr[tpid_at + 1]]);

        let mut deliver = pkttype != libc::PACKET_OUTGOING;
        // Read before a tag is put back: that moves the addresses over its last bytes.
        let gso_size = match vnet.then(|| mac.checked_sub(VNET_HDR_LEN)).flatten() {
            Some(v) => block.get(at + v..at + mac).map_or(0, tcp_gso_size),
            None => 0,
        };
        if deliver && status & libc::TP_STATUS_VLAN_VALID != 0 {
            let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 { tpid } else { 0x8100 };
            // The kernel leaves room between the headers and the frame; without it (never with
            // the headers this socket uses) the frame is dropped rather than passed on untagged.
            deliver = mac >= PKT_HDR_LEN + VLAN_HLEN
                && snaplen >= 12
                && reinsert_tag(block, at + mac, tpid, tci as u16);
            mac -= VLAN_HLEN.min(mac);
            snaplen += VLAN_HLEN;
            wire_len += VLAN_HLEN;
        }
        if deliver {
            let start = at + mac;
            if let Some(data) = block.get(start..start.saturating_add(snaplen)) {
                let csum_partial = status & libc::TP_STATUS_CSUMNOTREADY != 0;
                f(RxFrame { data, wire_len, csum_partial, gso_size });
            }
        }
        if next == 0 {
            break;
        }
        at += next;
    }
}

/// `struct virtio_net_hdr`: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, in
/// the host's byte order (the legacy virtio order the packet socket writes).
const VNET_HDR_LEN: usize = 10;
const VNET_GSO_TCPV4: u8 = 1;
const VNET_GSO_TCPV6: u8 = 4;
const VNET_GSO_ECN: u8 = 0x80;

/// The segment size of a TCP GSO frame from its `virtio_net_hdr`; 0 for any other frame.
fn tcp_gso_size(vnet: &[u8]) -> u16 {
    match vnet[1] & !VNET_GSO_ECN {
        VNET_GSO_TCPV4 | VNET_GSO_TCPV6 => u16::from_ne_bytes([vnet[4], vnet[5]]),
        _ => 0,
    }
}

/// Whether the running kernel writes a `virtio_net_hdr` into ring frames (Linux 5.8 and later;
/// before, the option only applied to `recvmsg`).
fn vnet_in_ring() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (5, 8)
}

/// Moves the two MAC addresses at `frame` four bytes forward and writes the tag after them.
fn reinsert_tag(block: &mut [u8], frame: usize, tpid: u16, tci: u16) -> bool {
    if frame < VLAN_HLEN || frame + 12 > block.len() {
        return false;
    }
    let tag = frame - VLAN_HLEN + 12;
    block.copy_within(frame..frame + 12, frame - VLAN_HLEN);
    block[tag..tag + 2].copy_from_slice(&tpid.to_be_bytes());
    block[tag + 2..tag + 4].copy_from_slice(&tci.to_be_bytes());
    true
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_ne_bytes(bytes[offset..offset + 4].try_into().expect("four bytes"))
}

fn i32_at(bytes: &[u8], offset: usize) -> i32 {
    i32::from_ne_bytes(bytes[offset..offset + 4].try_into().expect("four bytes"))
}

fn check_config(config: &RingConfig) -> io::Result<()> {
    let bad = |why: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, why.to_owned()));
    if !config.block_size.is_power_of_two() || config.block_size < 4096 {
        return bad("block_size must be a power of two of at least 4096 bytes");
    }
    if config.block_count == 0 {
        return bad("block_count must be at least 1");
    }
    let fits = |n: usize| libc::c_uint::try_from(n).is_ok();
    if !fits(config.block_size) || !fits(config.block_count) {
        return bad("block_size and block_count must each fit in 32 bits");
    }
    if config.block_size.checked_mul(config.block_count).is_none_or(|n| n > isize::MAX as usize) {
        return bad("the ring (block_size × block_count) is too large");
    }
    Ok(())
}

fn if_name(iface: &str) -> io::Result<[u8; libc::IFNAMSIZ]> {
    let mut name = [0u8; libc::IFNAMSIZ];
    if iface.is_empty() || iface.len() >= libc::IFNAMSIZ || iface.bytes().any(|b| b == 0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface {iface:?}: not a valid interface name"),
        ));
    }
    name[..iface.len()].copy_from_slice(iface.as_bytes());
    Ok(name)
}

fn open_error(iface: &str, what: &str, e: io::Error) -> io::Error {
    let errno = e.raw_os_error();
    let msg = if matches!(errno, Some(libc::EPERM | libc::EACCES)) {
        format!(
            "interface {iface}: {what}: {e}; a packet socket needs CAP_NET_RAW, and promiscuous \
             mode CAP_NET_ADMIN"
        )
    } else if matches!(errno, Some(libc::ENODEV | libc::ENXIO)) {
        format!("interface {iface}: no such interface in this network namespace ({what}: {e})")
    } else {
        format!("interface {iface}: {what}: {e}")
    };
    io::Error::new(e.kind(), msg)
}

/// An interface ioctl (SIOCGIF*) on the packet socket: it answers for the socket's network
/// namespace, which need not be the one /sys shows.
fn if_ioctl(
    sock: BorrowedFd<'_>,
    name: &[u8; libc::IFNAMSIZ],
    request: libc::Ioctl,
) -> io::Result<[u8; size_of::<libc::ifreq>() - libc::IFNAMSIZ]> {
    let iface = String::from_utf8_lossy(&name[..name.iter().position(|&b| b == 0).unwrap_or(0)]);
    let mut req = IfReq { name: *name, data: [0; size_of::<libc::ifreq>() - libc::IFNAMSIZ] };
    // SAFETY: `req` is a writable buffer of the size of `struct ifreq` with a NUL-terminated
    // name; SIOCGIFINDEX, SIOCGIFMTU, SIOCGIFHWADDR and SIOCGIFFLAGS write only inside its union
    // part.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(open_error(&iface, "interface lookup", io::Error::last_os_error()));
    }
    Ok(req.data)
}

/// A SOL_PACKET option whose value is the plain C struct or integer `T`.
fn set_opt<T>(sock: BorrowedFd<'_>, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of the length passed, which the kernel only reads.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// PACKET_STATISTICS: counters since the last read (the kernel resets them).
fn packet_statistics(sock: BorrowedFd<'_>) -> io::Result<libc::tpacket_stats_v3> {
    let mut stats = libc::tpacket_stats_v3 { tp_packets: 0, tp_drops: 0, tp_freeze_q_cnt: 0 };
    let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
    // SAFETY: `stats` and `len` are live and writable; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut stats as *mut libc::tpacket_stats_v3).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stats)
}

/// Binds the socket to the interface for every protocol (ETH_P_ALL): frames start arriving.
fn bind(sock: BorrowedFd<'_>, ifindex: i32) -> io::Result<()> {
    bind_protocol(sock, ifindex, libc::ETH_P_ALL as u16)
}

/// The sending socket: bound to the interface for protocol 0, so no frame is delivered to it
/// (the kernel takes each sent frame's protocol from its Ethernet header), with a
/// `virtio_net_hdr` in front of every frame it sends.
fn open_tx(ifindex: i32) -> io::Result<OwnedFd> {
    let socket = socket2::Socket::new(socket2::Domain::PACKET, socket2::Type::RAW, None)?;
    socket.set_nonblocking(true)?;
    let fd = OwnedFd::from(socket);
    let one: libc::c_int = 1;
    set_opt(fd.as_fd(), libc::PACKET_VNET_HDR, &one)?;
    set_send_buffer(fd.as_fd(), TX_SOCKET_BUFFER)?;
    bind_protocol(fd.as_fd(), ifindex, 0)?;
    Ok(fd)
}

/// The sending socket's buffer: every frame sent counts against it until the receiving stack
/// takes it (on a veth, when the peer's IP layer gets it from its CPU's backlog; on a NIC, at
/// transmit completion), and a send past it fails and the frame is dropped. The default (208 KiB,
/// `net.core.wmem_default`) is three 64 KiB GSO frames: when the peer's receive processing runs
/// on a busy CPU, bursts of a flow's window overflowed it, and every frame lost that way costs
/// the flow a retransmission by its sender, often after a timeout. 4 MiB (the kernel doubles
/// it for its bookkeeping) holds the engine's stores toward both ends; the memory is taken only
/// while frames are in flight. SO_SNDBUFFORCE passes `net.core.wmem_max`, which the bridge's
/// CAP_NET_ADMIN allows; without it, SO_SNDBUF up to that limit.
const TX_SOCKET_BUFFER: libc::c_int = 4 << 20;

fn set_send_buffer(sock: BorrowedFd<'_>, bytes: libc::c_int) -> io::Result<()> {
    let set = |name: libc::c_int| {
        // SAFETY: `bytes` is a live c_int of the length passed, which the kernel only reads.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                name,
                (&bytes as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    set(libc::SO_SNDBUFFORCE).or_else(|_| set(libc::SO_SNDBUF))
}

fn bind_protocol(sock: BorrowedFd<'_>, ifindex: i32, protocol: u16) -> io::Result<()> {
    let addr = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as libc::c_ushort,
        sll_protocol: protocol.to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    // SAFETY: `addr` is a live sockaddr_ll of the length passed, which the kernel only reads.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One `sendmmsg` of (a prefix of) `messages` to the bound interface: each message is its
/// `virtio_net_hdr`, then its first frame whole, then the payloads of the rest of its run.
/// Returns how many messages left; an error is the first message's.
fn send_batch(sock: BorrowedFd<'_>, frames: &[TxFrame], messages: &[Message]) -> io::Result<usize> {
    // Every iovec first (the vector does not move once the headers point into it).
    let iov = |bytes: &[u8]| libc::iovec { iov_base: bytes.as_ptr().cast_mut().cast(), iov_len: bytes.len() };
    let mut iovecs: Vec<libc::iovec> = Vec::with_capacity(messages.len() * 3 + frames.len());
    for m in messages {
        let first = &frames[m.start];
        iovecs.push(iov(&m.vnet));
        iovecs.push(iov(first.eth()));
        iovecs.push(iov(first.ip()));
        let rest = &frames[m.start + 1..m.end];
        iovecs.extend(rest.iter().map(|f| iov(&f.ip()[m.header_len - ETH_HLEN..])));
    }
    let mut at = 0;
    let mut headers: Vec<libc::mmsghdr> = messages
        .iter()
        .map(|m| {
            // The header, the first frame's two parts, the payload of each other frame.
            let count = 2 + (m.end - m.start);
            // SAFETY: msghdr is integers and pointers, for which all-zero (null, empty) is valid.
            let mut msg_hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            msg_hdr.msg_iov = iovecs[at..at + count].as_mut_ptr();
            msg_hdr.msg_iovlen = count;
            at += count;
            libc::mmsghdr { msg_hdr, msg_len: 0 }
        })
        .collect();
    debug_assert_eq!(at, iovecs.len());
    // SAFETY: each header points to its own iovecs, over a live `virtio_net_hdr` of `messages`
    // and live frames of `frames` (`gso::plan` made `header_len` at most each frame's length),
    // which the kernel only reads; no address (the bound interface) and no control data. All
    // outlive the call, and `iovecs` is not touched between taking the pointers and the call.
    let sent = unsafe {
        libc::sendmmsg(
            sock.as_raw_fd(),
            headers.as_mut_ptr(),
            headers.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// The kernel refused one frame but the socket works: no room (buffer, queue) or no link.
fn dropped_frame(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN | libc::ENOBUFS | libc::ENOMEM | libc::ENETDOWN | libc::EMSGSIZE)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_header_layout_matches_the_kernel() {
        // linux/if_packet.h: version, offset_to_priv, then block_status, num_pkts, offset.
        assert_eq!((BLOCK_STATUS, BLOCK_NUM_PKTS, BLOCK_FIRST_PKT), (8, 12, 16));
        assert_eq!(BLOCK_HDR_LEN, 48);
        // TPACKET3_HDRLEN: tpacket3_hdr aligned to 16, then sockaddr_ll.
        assert_eq!(PKT_HDR_LEN, libc::TPACKET3_HDRLEN);
        assert_eq!(size_of::<IfReq>(), size_of::<libc::ifreq>());
    }

    #[test]
    fn a_tag_goes_back_between_the_addresses_and_the_type() {
        let mut block = vec![0u8; 64];
        let frame: Vec<u8> = (1..=20).collect();
        block[30..50].copy_from_slice(&frame);
        assert!(reinsert_tag(&mut block, 30, 0x8100, 0x0123));
        assert_eq!(&block[26..38], &frame[..12]);
        assert_eq!(&block[38..42], &[0x81, 0x00, 0x01, 0x23]);
        assert_eq!(&block[42..50], &frame[12..]);
    }
}

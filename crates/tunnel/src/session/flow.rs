//! Per-session byte buffers and the Ack-based window.
//!
//! The sender may have at most `peer_window` bytes sent and not yet acknowledged; the receiver
//! acknowledges bytes once its application has taken them (for the gate: written to the
//! destination socket). A receiver therefore never holds more than the window it announced, and a
//! stalled destination stops only its own session's credit.

use std::collections::VecDeque;

/// Outgoing bytes written by the application and not yet framed, plus the credit counters.
///
/// The bytes stay in the buffers they were written in: a buffer handed over whole
/// ([`SendBuf::write_vec`]) is kept rather than copied, so a bulk transfer's bytes are copied once,
/// into the frame. Buffers are kept whole, however full, while the capacity of the kept ones stays
/// within twice the cap (many streams read a few KiB at a time, and copying each read out of its
/// buffer was a fifth of the tunnel's CPU with 64 of them); past that they are copied, into the
/// last buffer's spare room first. Memory stays within twice the cap plus the copied bytes (at
/// most the cap).
#[derive(Debug)]
pub(crate) struct SendBuf {
    chunks: VecDeque<Vec<u8>>,
    /// Capacity of the buffers in `chunks`.
    kept: usize,
    /// Bytes of the first chunk already framed.
    head: usize,
    /// Bytes in `chunks` past `head`.
    len: usize,
    cap: usize,
    sent: u64,
    acked: u64,
    peer_window: u32,
}

/// The peer acknowledged more bytes than were ever sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckTooLarge;

impl SendBuf {
    pub fn new(cap: usize) -> Self {
        SendBuf { chunks: VecDeque::new(), kept: 0, head: 0, len: 0, cap, sent: 0, acked: 0, peer_window: 0 }
    }

    pub fn set_peer_window(&mut self, w: u32) {
        self.peer_window = w;
    }

    /// Copies as much of `data` as fits under the cap; returns the count taken.
    pub fn write(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.room());
        if n == 0 {
            return 0;
        }
        match self.chunks.back_mut() {
            Some(last) if last.capacity() - last.len() >= n => last.extend_from_slice(&data[..n]),
            _ => {
                let copy = data[..n].to_vec();
                self.kept += copy.capacity();
                self.chunks.push_back(copy);
            }
        }
        self.len += n;
        n
    }

    /// As [`SendBuf::write`] for a buffer the caller gives up, taken only when all of it fits
    /// (0 otherwise): kept whole while the buffers' capacity stays within twice the cap, else
    /// copied. Only a buffer larger than the cap itself is taken in parts (what was not taken
    /// stays in `data`). Taking the part that fits of a full buffer copied it and shifted the rest
    /// down, for every record sent while a busy session's buffer was full.
    pub fn write_vec(&mut self, data: &mut Vec<u8>) -> usize {
        let n = data.len();
        if n > self.room() {
            if n <= self.cap {
                return 0;
            }
            let n = self.write(data);
            data.drain(..n);
            return n;
        }
        if n > 0 && self.kept + data.capacity() <= 2 * self.cap {
            self.kept += data.capacity();
            self.chunks.push_back(std::mem::take(data));
            self.len += n;
            return n;
        }
        let n = self.write(data);
        data.clear();
        n
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn room(&self) -> usize {
        self.cap.saturating_sub(self.len)
    }

    pub fn buffered(&self) -> usize {
        self.len
    }

    pub fn clear(&mut self) {
        self.chunks = VecDeque::new();
        self.kept = 0;
        self.head = 0;
        self.len = 0;
    }

    /// Bytes the peer still has room for.
    pub fn credit(&self) -> u64 {
        (self.peer_window as u64).saturating_sub(self.sent - self.acked)
    }

    pub fn in_flight(&self) -> u64 {
        self.sent - self.acked
    }

    /// [`SendBuf::take_chunk_keeping`], freeing spent buffers.
    #[cfg(test)]
    pub fn take_chunk(&mut self, max: usize, out: &mut Vec<u8>) -> usize {
        self.take_chunk_keeping(max, out, &mut Vec::new())
    }

    /// Moves up to `max` bytes (bounded by credit) into `out`; returns the count. A buffer whose
    /// bytes have all gone out is emptied into `spent` while that holds fewer than
    /// [`crate::endpoint::SPENT_KEEP`] (else freed), so that the driver reads into it again
    /// instead of faulting in fresh pages.
    pub fn take_chunk_keeping(&mut self, max: usize, out: &mut Vec<u8>, spent: &mut Vec<Vec<u8>>) -> usize {
        let n = (self.len as u64).min(self.credit()).min(max as u64) as usize;
        out.reserve(n);
        let mut left = n;
        while left > 0 {
            let Some(front) = self.chunks.front() else { break };
            let k = (front.len() - self.head).min(left);
            out.extend_from_slice(&front[self.head..self.head + k]);
            self.head += k;
            left -= k;
            if self.head == front.len() {
                if let Some(mut done) = self.chunks.pop_front() {
                    self.kept -= done.capacity();
                    if spent.len() < crate::endpoint::SPENT_KEEP {
                        done.clear();
                        spent.push(done);
                    }
                }
                self.head = 0;
            }
        }
        self.len -= n;
        self.sent += n as u64;
        n
    }

    pub fn on_ack(&mut self, size: u32) -> Result<(), AckTooLarge> {
        let acked = self.acked + size as u64;
        if acked > self.sent {
            return Err(AckTooLarge);
        }
        self.acked = acked;
        Ok(())
    }
}

/// Bytes per receive buffer: a driver's socket write's worth, the size of the buffers it reads
/// sockets into, so that one it hands to [`RecvBuf::read_vec`] can hold received bytes next.
pub const RECV_CHUNK: usize = 64 * 1024;
/// The least a receive buffer holds: small messages share one, so the buffers of a window
/// filled by tiny frames cost a bounded share of it.
const SMALL_CHUNK: usize = 4 * 1024;

/// Incoming bytes not yet read by the application, and consumed bytes not yet acknowledged.
///
/// The bytes are kept in buffers of [`RECV_CHUNK`], filled in order, so that
/// [`RecvBuf::read_vec`] hands a whole buffer to the application instead of copying it out
/// (received bytes are copied once, out of the decrypted record). Every buffer but the last is
/// full, so memory stays within the window plus one buffer.
#[derive(Debug)]
pub(crate) struct RecvBuf {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the first chunk already read.
    head: usize,
    /// Bytes in `chunks` past `head`.
    len: usize,
    window: u32,
    unacked: u32,
}

/// The peer sent more than the window we announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowExceeded;

impl RecvBuf {
    pub fn new(window: u32) -> Self {
        RecvBuf { chunks: VecDeque::new(), head: 0, len: 0, window, unacked: 0 }
    }

    pub fn window(&self) -> u32 {
        self.window
    }

    pub fn buffered(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.chunks = VecDeque::new();
        self.head = 0;
        self.len = 0;
        self.unacked = 0;
    }

    /// Appends `data` within the window. A new buffer comes from `spare` (emptied buffers of
    /// [`RECV_CHUNK`], the connection's) before the allocator; small data gets a small one.
    pub fn push(&mut self, mut data: &[u8], spare: &mut Vec<Vec<u8>>) -> Result<(), WindowExceeded> {
        let held = self.len as u64 + self.unacked as u64 + data.len() as u64;
        if held > self.window as u64 {
            return Err(WindowExceeded);
        }
        self.len += data.len();
        while !data.is_empty() {
            let room = self.chunks.back().map_or(0, |c| c.capacity() - c.len());
            if room == 0 {
                let fresh = match spare.pop() {
                    Some(b) if b.capacity() >= RECV_CHUNK => b,
                    _ if data.len() >= RECV_CHUNK / 8 => Vec::with_capacity(RECV_CHUNK),
                    // Never smaller than SMALL_CHUNK: a peer sending tiny frames must not make
                    // a buffer (and its bookkeeping) per byte within the window.
                    _ => Vec::with_capacity(data.len().max(SMALL_CHUNK)),
                };
                self.chunks.push_back(fresh);
                continue;
            }
            let k = room.min(data.len());
            if let Some(last) = self.chunks.back_mut() {
                last.extend_from_slice(&data[..k]);
            }
            data = &data[k..];
        }
        Ok(())
    }

    pub fn read(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len);
        let mut at = 0;
        while at < n {
            let Some(front) = self.chunks.front() else { break };
            let k = (front.len() - self.head).min(n - at);
            out[at..at + k].copy_from_slice(&front[self.head..self.head + k]);
            at += k;
            self.consumed(k, &mut Vec::new());
        }
        self.unacked += n as u32;
        n
    }

    /// As [`RecvBuf::read`], appending up to `max` bytes to `out`. When `out` is empty and the
    /// first buffer's bytes fit in `max`, that buffer becomes `out` (no copy), and the empty one
    /// `out` held goes to `spare` for a later [`RecvBuf::push`], if it is a [`RECV_CHUNK`] one and
    /// `spare` holds fewer than [`crate::endpoint::SPENT_KEEP`].
    pub fn read_vec(&mut self, max: usize, out: &mut Vec<u8>, spare: &mut Vec<Vec<u8>>) -> usize {
        let n = max.min(self.len);
        if out.is_empty()
            && self.head == 0
            && self.chunks.front().is_some_and(|c| !c.is_empty() && c.len() <= n)
        {
            if let Some(front) = self.chunks.pop_front() {
                let given = std::mem::replace(out, front);
                keep(given, spare);
                let n = out.len();
                self.len -= n;
                self.unacked += n as u32;
                return n;
            }
        }
        out.reserve_exact(n);
        let mut left = n;
        while left > 0 {
            let Some(front) = self.chunks.front() else { break };
            let k = (front.len() - self.head).min(left);
            out.extend_from_slice(&front[self.head..self.head + k]);
            left -= k;
            self.consumed(k, spare);
        }
        self.unacked += n as u32;
        n
    }

    /// `k` bytes of the first buffer were read: a buffer read to its end goes to `spare`.
    fn consumed(&mut self, k: usize, spare: &mut Vec<Vec<u8>>) {
        self.head += k;
        self.len -= k;
        if self.chunks.front().is_some_and(|c| self.head == c.len()) {
            if let Some(done) = self.chunks.pop_front() {
                keep(done, spare);
            }
            self.head = 0;
        }
    }

    /// An Ack is due once half the window was consumed; with `riding` (the session sends a
    /// record in this batch anyway) any consumed bytes are acknowledged, at no extra write.
    /// Acking whenever the buffer ran empty made a bulk receiver send a record of its own, and
    /// wake the sender, every few reads (a third of the tunnel's system calls). Never deadlocks:
    /// a sender out of credit has a window's worth unacknowledged here, and once the
    /// application took it, at least half a window is due.
    pub fn ack_due(&self, riding: bool) -> Option<u32> {
        let due = self.unacked > 0 && (self.unacked >= self.window / 2 || riding);
        due.then_some(self.unacked)
    }

    pub fn acked(&mut self, n: u32) {
        self.unacked -= n;
    }
}

/// Empties `buf` into `spare` if it is a receive buffer and `spare` has room; else frees it.
fn keep(mut buf: Vec<u8>, spare: &mut Vec<Vec<u8>>) {
    if buf.capacity() == RECV_CHUNK && spare.len() < crate::endpoint::SPENT_KEEP {
        buf.clear();
        spare.push(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_limits_chunks_and_acks_restore_it() {
        let mut s = SendBuf::new(100);
        s.set_peer_window(10);
        assert_eq!(s.write(&[7u8; 150]), 100, "cap bounds the buffer");
        let mut out = Vec::new();
        assert_eq!(s.take_chunk(4, &mut out), 4);
        assert_eq!(s.take_chunk(100, &mut out), 6, "credit is 10 in total");
        assert_eq!(s.take_chunk(100, &mut out), 0);
        assert_eq!(s.credit(), 0);
        s.on_ack(3).unwrap();
        assert_eq!(s.credit(), 3);
        assert_eq!(s.on_ack(8), Err(AckTooLarge));
        assert_eq!(out.len(), 10);
    }

    #[test]
    fn written_buffers_come_out_in_order_and_only_full_ones_are_kept() {
        let mut s = SendBuf::new(64);
        s.set_peer_window(1000);
        let mut whole = Vec::with_capacity(20);
        whole.extend_from_slice(&[1u8; 20]);
        assert_eq!(s.write_vec(&mut whole), 20);
        assert!(whole.is_empty() && whole.capacity() == 0, "a full buffer is kept, not copied");
        let mut sparse = Vec::with_capacity(1000);
        sparse.extend_from_slice(&[2u8; 10]);
        assert_eq!(s.write_vec(&mut sparse), 10);
        assert!(
            sparse.is_empty() && sparse.capacity() == 1000,
            "a buffer past twice the cap in capacity is copied"
        );
        assert_eq!(s.write(&[3u8; 5]), 5);
        let mut over = vec![4u8; 40];
        assert_eq!(s.write_vec(&mut over), 0, "a buffer that does not fit waits for room");
        assert_eq!(over.len(), 40);
        let mut large = vec![4u8; 80];
        assert_eq!(s.write_vec(&mut large), 29, "one larger than the cap is taken in parts");
        assert_eq!(large, vec![4u8; 51], "the rest stays with the caller");
        assert_eq!(s.buffered(), 64);
        assert_eq!(s.room(), 0);
        let mut out = Vec::new();
        for max in [7, 20, 1, 100] {
            s.take_chunk(max, &mut out);
        }
        let mut expect = vec![1u8; 20];
        expect.extend([2u8; 10]);
        expect.extend([3u8; 5]);
        expect.extend([4u8; 29]);
        assert_eq!(out, expect);
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn sparse_buffers_are_kept_whole_within_twice_the_cap_then_copied_into_spare_room() {
        let mut s = SendBuf::new(1000);
        s.set_peer_window(1 << 20);
        let sparse = |b: u8| {
            let mut v = Vec::with_capacity(500);
            v.extend_from_slice(&[b; 100]);
            v
        };
        for b in 0..4 {
            let mut v = sparse(b);
            assert_eq!(s.write_vec(&mut v), 100);
            assert_eq!(v.capacity(), 0, "buffer {b} kept whole: 2000 bytes of capacity allowed");
        }
        let mut fifth = sparse(4);
        assert_eq!(s.write_vec(&mut fifth), 100);
        assert_eq!(fifth.capacity(), 500, "past twice the cap: copied, the caller keeps its buffer");
        assert_eq!(s.chunks.len(), 4, "into the last buffer's spare room");
        let mut out = Vec::new();
        assert_eq!(s.take_chunk(1000, &mut out), 500);
        let expect: Vec<u8> = (0..4u8).flat_map(|b| [b; 100]).chain([4u8; 100]).collect();
        assert_eq!(out, expect);
        assert_eq!(s.kept, 0, "every buffer went out");
    }

    #[test]
    fn tiny_frames_share_receive_buffers() {
        let mut r = RecvBuf::new(64 * 1024);
        for _ in 0..64 * 1024 {
            r.push(b"x", &mut Vec::new()).unwrap();
        }
        assert_eq!(r.buffered(), 64 * 1024);
        assert!(r.chunks.len() <= 64 * 1024 / SMALL_CHUNK, "{} buffers for a full window", r.chunks.len());
        let mut out = Vec::new();
        assert_eq!(r.read_vec(64 * 1024, &mut out, &mut Vec::new()), SMALL_CHUNK, "the first buffer, whole");
        assert!(out.iter().all(|&b| b == b'x'));
    }

    #[test]
    fn receiver_enforces_window_and_acks_what_was_read() {
        let mut r = RecvBuf::new(8);
        r.push(b"abcdef", &mut Vec::new()).unwrap();
        assert_eq!(r.push(b"ghi", &mut Vec::new()), Err(WindowExceeded));
        let mut out = [0u8; 4];
        assert_eq!(r.read(&mut out), 4);
        assert_eq!(&out, b"abcd");
        assert_eq!(r.ack_due(false), Some(4), "half the window was consumed");
        assert_eq!(r.push(b"ghi", &mut Vec::new()), Err(WindowExceeded), "read but unacked still counts");
        r.acked(4);
        r.push(b"ghi", &mut Vec::new()).unwrap();
        assert_eq!(r.buffered(), 5);
    }

    #[test]
    fn read_and_read_vec_return_bytes_in_order_across_the_ring_wrap() {
        let mut r = RecvBuf::new(1 << 20);
        let mut expect = std::collections::VecDeque::new();
        let mut next = 0u8;
        let mut out = [0u8; 700];
        let mut spare = Vec::new();
        // Pushes and reads of unequal sizes move the ring's head around its end many times.
        for round in 0..200usize {
            let chunk: Vec<u8> = (0..(300 + round * 7 % 500))
                .map(|_| {
                    next = next.wrapping_add(1);
                    next
                })
                .collect();
            r.push(&chunk, &mut spare).unwrap();
            expect.extend(&chunk);
            let want = (round * 13) % out.len() + 1;
            // Every other round through read_vec, which appends to what the Vec holds.
            let (n, read) = if round % 2 == 0 {
                let n = r.read(&mut out[..want]);
                (n, out[..n].to_vec())
            } else {
                let mut v = vec![0xEE];
                let n = r.read_vec(want, &mut v, &mut spare);
                assert_eq!(v[0], 0xEE, "read_vec appends");
                (n, v[1..].to_vec())
            };
            assert_eq!(n, want.min(expect.len()));
            assert_eq!(read.len(), n);
            let got: Vec<u8> = expect.drain(..n).collect();
            assert_eq!(read, got);
            r.acked(r.ack_due(true).unwrap_or(0));
        }
        assert_eq!(r.buffered(), expect.len());
    }

    #[test]
    fn read_vec_hands_over_whole_buffers_and_reuses_the_callers() {
        let mut r = RecvBuf::new(1 << 20);
        let mut spare = Vec::new();
        let bulk: Vec<u8> = (0..3 * RECV_CHUNK + 100).map(|i| (i % 251) as u8).collect();
        // Received as frames of 16376 bytes, the tunnel's data frames.
        for frame in bulk.chunks(16376) {
            r.push(frame, &mut spare).unwrap();
        }
        assert_eq!(r.chunks.len(), 4, "full buffers of RECV_CHUNK and the last one filling");
        let mut got = Vec::new();
        let mut given = Vec::with_capacity(RECV_CHUNK);
        let ptr = given.as_ptr();
        assert_eq!(r.read_vec(RECV_CHUNK, &mut given, &mut spare), RECV_CHUNK);
        assert_eq!(given.capacity(), RECV_CHUNK);
        assert!(given.as_ptr() != ptr, "a buffer of the session, not a copy into ours");
        assert!(spare.len() == 1 && spare[0].as_ptr() == ptr, "ours is kept for the next bytes");
        got.extend_from_slice(&given);
        // The next push that needs a buffer takes the one we gave.
        r.push(&[7u8; RECV_CHUNK], &mut spare).unwrap();
        assert!(spare.is_empty());
        let mut small = vec![0xEE];
        assert_eq!(r.read_vec(1000, &mut small, &mut spare), 1000, "a non-empty out is appended to");
        got.extend_from_slice(&small[1..]);
        loop {
            let mut v = Vec::new();
            if r.read_vec(RECV_CHUNK, &mut v, &mut spare) == 0 {
                break;
            }
            got.extend_from_slice(&v);
        }
        let mut expect = bulk.clone();
        expect.extend_from_slice(&[7u8; RECV_CHUNK]);
        assert_eq!(got, expect);
        assert_eq!(r.buffered(), 0);
        assert!(r.chunks.is_empty(), "nothing held once everything was read");
        assert!(spare.len() <= crate::endpoint::SPENT_KEEP);
    }
}

//! Socket buffers reused within one tunnel connection. A bulk transfer reads and writes a
//! [`CHUNK`] buffer per 64 KiB; allocating each afresh let the allocator hand their pages back
//! and the next read fault them in again, zeroed by the kernel (8 % of the tunnel's CPU). The
//! pool holds at most [`KEEP`] buffers, and none once the connection has no session, so it adds
//! a fixed amount per connection and nothing per session.

use std::sync::Mutex;

use super::pump::CHUNK;

/// Buffers kept per tunnel connection (1 MiB).
const KEEP: usize = 16;

#[derive(Default)]
pub(crate) struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl Pool {
    /// An empty buffer with room for a chunk.
    pub fn take(&self) -> Vec<u8> {
        let reused = self.free.lock().ok().and_then(|mut f| f.pop());
        reused.unwrap_or_else(|| Vec::with_capacity(CHUNK))
    }

    /// Keeps `buf` for a later [`Pool::take`] if it is a chunk buffer and the pool has room.
    pub fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() != CHUNK {
            return;
        }
        if let Ok(mut free) = self.free.lock() {
            if free.len() < KEEP {
                buf.clear();
                free.push(buf);
            }
        }
    }

    /// Frees every kept buffer (the connection went idle).
    pub fn clear(&self) {
        if let Ok(mut free) = self.free.lock() {
            if !free.is_empty() {
                *free = Vec::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_chunk_buffers_and_at_most_keep() {
        let pool = Pool::default();
        pool.give(Vec::with_capacity(100));
        let first = pool.take();
        assert_eq!(first.capacity(), CHUNK, "a fresh chunk buffer; the small one was not kept");
        let ptr = first.as_ptr();
        let mut used = first;
        used.extend_from_slice(b"bytes");
        pool.give(used);
        let again = pool.take();
        assert!(again.is_empty() && again.as_ptr() == ptr, "the same buffer, emptied");
        for _ in 0..KEEP + 3 {
            pool.give(Vec::with_capacity(CHUNK));
        }
        assert_eq!(pool.free.lock().unwrap().len(), KEEP);
        pool.clear();
        assert!(pool.free.lock().unwrap().is_empty());
    }
}

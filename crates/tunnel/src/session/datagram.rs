//! A bounded queue of datagrams (count and bytes); a full queue drops, as UDP would.

use crate::Target;
use std::collections::VecDeque;

/// One UDP datagram with the addresses the tunnel carries for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub src: Target,
    pub dst: Target,
    pub data: Vec<u8>,
}

impl Datagram {
    /// Payload bytes of the SendUdp record carrying it.
    pub fn encoded_len(&self) -> usize {
        let target_len = |t: &Target| {
            3 + match &t.host {
                crate::Host::Ip(std::net::IpAddr::V4(_)) => 4,
                crate::Host::Ip(std::net::IpAddr::V6(_)) => 16,
                crate::Host::Name(n) => 1 + n.len(),
            }
        };
        target_len(&self.src) + target_len(&self.dst) + self.data.len()
    }
}

#[derive(Debug)]
pub(crate) struct DatagramQueue {
    queue: VecDeque<Datagram>,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

impl DatagramQueue {
    pub fn new(max_count: usize, max_bytes: usize) -> Self {
        DatagramQueue { queue: VecDeque::new(), bytes: 0, max_count, max_bytes }
    }

    pub fn push(&mut self, d: Datagram) -> Result<(), Full> {
        if self.queue.len() >= self.max_count || self.bytes + d.data.len() > self.max_bytes {
            return Err(Full);
        }
        self.bytes += d.data.len();
        self.queue.push_back(d);
        Ok(())
    }

    pub fn pop(&mut self) -> Option<Datagram> {
        let d = self.queue.pop_front()?;
        self.bytes -= d.data.len();
        Some(d)
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn clear(&mut self) {
        self.queue = VecDeque::new();
        self.bytes = 0;
    }
}

//! Every byte that reaches the client must be the byte first sent there at that position: a
//! retransmission carrying different ciphertext means a record was sealed twice under one nonce
//! (or data was corrupted), which the client's TLS alone might not notice if it took the first
//! copy.

use std::collections::HashMap;

use smoltcp::wire::{IpProtocol, Ipv4Packet, TcpPacket};

#[derive(Default)]
struct Stream {
    /// Sequence number of the first data byte (SYN-ACK's plus one).
    isn: Option<u32>,
    bytes: Vec<u8>,
    known: Vec<bool>,
}

#[derive(Default)]
pub struct Consistency {
    /// By the client's port.
    streams: HashMap<u16, Stream>,
    /// Segments that changed bytes already delivered.
    pub changed: u64,
    pub first: Option<String>,
}

impl Consistency {
    /// Looks at a packet on its way to the client.
    pub fn observe(&mut self, packet: &[u8]) {
        let Ok(ip) = Ipv4Packet::new_checked(packet) else { return };
        if ip.next_header() != IpProtocol::Tcp {
            return;
        }
        let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else { return };
        let s = self.streams.entry(tcp.dst_port()).or_default();
        if tcp.syn() {
            s.isn = Some(tcp.seq_number().0.wrapping_add(1) as u32);
            return;
        }
        let (Some(isn), data) = (s.isn, tcp.payload()) else { return };
        if data.is_empty() {
            return;
        }
        let at = (tcp.seq_number().0 as u32).wrapping_sub(isn) as usize;
        if s.bytes.len() < at + data.len() {
            s.bytes.resize(at + data.len(), 0);
            s.known.resize(at + data.len(), false);
        }
        let mut changed = false;
        for (i, b) in data.iter().enumerate() {
            if s.known[at + i] {
                changed |= s.bytes[at + i] != *b;
            } else {
                s.bytes[at + i] = *b;
                s.known[at + i] = true;
            }
        }
        if changed {
            self.changed += 1;
            if self.first.is_none() {
                self.first = Some(format!(
                    "client port {}: bytes at offset {at} changed on retransmission (nonce reuse or corruption)",
                    tcp.dst_port()
                ));
            }
        }
    }
}

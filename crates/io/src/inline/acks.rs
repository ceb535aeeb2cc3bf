//! Bare ACKs made stale within one send batch (no `unsafe` here).
//!
//! A bulk download through the gate sends the server one bare ACK per ACK the client sent, and
//! the client's ACKs of one receive block (about a millisecond of them) leave in one batch: two
//! or more of one flow, each acknowledging further. The server acts on the last one's
//! acknowledgment and window; the earlier ones each cost a packet: an skb, a veth transmit and
//! often an interrupt to the CPU that receives it. A bare ACK that a later one in the same batch
//! supersedes is dropped, as a receiver acknowledging every other segment would never have sent
//! it (RFC 9293 3.8.6.3 lets a receiver acknowledge every second full-sized segment).
//!
//! Superseded only: both without data, flags exactly ACK (no FIN, RST, SYN, PSH, URG, ECE, CWR),
//! no TCP options (no SACK blocks or timestamps to lose), the same Ethernet header, addresses,
//! IP header fields, ports and sequence number, and the later acknowledgment strictly further
//! (modulo 2^32). Duplicate ACKs (the same acknowledgment) are kept, each: fast retransmit
//! counts them (RFC 5681). Nothing is reordered.

use std::collections::hash_map::{Entry, HashMap};

use super::gso::TxFrame;

const TCP_ACK: u8 = 0x10;

/// A bare ACK: the bytes that name its flow and position (every header byte but the IP length,
/// identification and checksum, and the TCP acknowledgment, window, checksum and urgent
/// pointer), and its acknowledgment number.
struct BareAck<'a> {
    eth: &'a [u8],
    ip_fixed: [&'a [u8]; 3],
    /// Ports and sequence number.
    tcp_fixed: &'a [u8],
    ack: u32,
}

impl<'a> BareAck<'a> {
    /// What names its flow and position: two bare ACKs supersede one another only when equal.
    fn flow(&self) -> FlowKey<'a> {
        (self.eth, self.ip_fixed, self.tcp_fixed)
    }
}

type FlowKey<'a> = (&'a [u8], [&'a [u8]; 3], &'a [u8]);

fn bare_ack(frame: &TxFrame) -> Option<BareAck<'_>> {
    let eth = frame.eth();
    let ethertype = u16::from_be_bytes([*eth.get(12)?, *eth.get(13)?]);
    let ip = frame.ip();
    let (tcp, ip_fixed) = match ethertype {
        0x0800 => {
            // Version 4, no IP options, TCP, exactly header-sized (no Ethernet padding).
            if ip.len() != 40 || ip[0] != 0x45 || ip[9] != 6 || u16::from_be_bytes([ip[2], ip[3]]) != 40 {
                return None;
            }
            // Version and TOS; flags, fragment offset, TTL, protocol; the addresses.
            (&ip[20..], [&ip[..2], &ip[6..10], &ip[12..20]])
        }
        0x86dd => {
            // Version 6, no extension headers, TCP, the TCP header alone.
            if ip.len() != 60 || ip[0] >> 4 != 6 || ip[6] != 6 || u16::from_be_bytes([ip[4], ip[5]]) != 20 {
                return None;
            }
            // Version, traffic class, flow label; next header, hop limit; the addresses.
            (&ip[40..], [&ip[..4], &ip[6..8], &ip[8..40]])
        }
        _ => return None,
    };
    // Data offset 5 (no options), flags ACK alone.
    if tcp[12] != 0x50 || tcp[13] != TCP_ACK {
        return None;
    }
    let ack = u32::from_be_bytes(tcp[8..12].try_into().expect("four bytes"));
    Some(BareAck { eth, ip_fixed, tcp_fixed: &tcp[..8], ack })
}

/// Which queued frames to send: false for a bare ACK that a later bare ACK of the same flow in
/// `frames` acknowledges beyond. Returns the mask and how many frames it drops.
///
/// One pass from the end, keeping per flow the furthest acknowledgment seen so far: a batch
/// holds hundreds of the engine's ACKs to an uploading client, and comparing each with every
/// later one (as this did first) took a sixth of the bridge's CPU in `memcmp`.
pub fn superseded(frames: &[TxFrame]) -> (Vec<bool>, usize) {
    let mut keep = vec![true; frames.len()];
    let mut dropped = 0;
    // The furthest acknowledgment of each flow among the frames after the current one.
    let mut furthest: HashMap<FlowKey<'_>, u32> = HashMap::new();
    for (i, frame) in frames.iter().enumerate().rev() {
        let Some(a) = bare_ack(frame) else { continue };
        match furthest.entry(a.flow()) {
            Entry::Vacant(v) => {
                v.insert(a.ack);
            }
            Entry::Occupied(mut o) => {
                // Within one batch the acknowledgments of a flow lie within half the sequence
                // space of one another, so "further" (modulo 2^32) orders them.
                if (o.get().wrapping_sub(a.ack) as i32) > 0 {
                    keep[i] = false;
                    dropped += 1;
                } else {
                    o.insert(a.ack);
                }
            }
        }
    }
    (keep, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 frame from 10.0.0.1:40000 to 10.0.0.2:80 with `flags`, `ack`, `window` and
    /// `payload` bytes, an Ethernet header apart (as the engine's packets are queued).
    fn v4(flags: u8, ack: u32, window: u16, payload: usize) -> TxFrame {
        frame(v4_ip(flags, ack, window, payload))
    }

    fn v4_ip(flags: u8, ack: u32, window: u16, payload: usize) -> Vec<u8> {
        let mut ip = vec![0u8; 40 + payload];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&ack.to_be_bytes()[2..]); // an identification that differs
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let tcp = &mut ip[20..];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&7u32.to_be_bytes());
        tcp[8..12].copy_from_slice(&ack.to_be_bytes());
        tcp[12] = 0x50;
        tcp[13] = flags;
        tcp[14..16].copy_from_slice(&window.to_be_bytes());
        ip
    }

    fn frame(ip: Vec<u8>) -> TxFrame {
        let mut eth = [0u8; 14];
        eth[12..14].copy_from_slice(&[0x08, 0x00]);
        TxFrame::split(eth, ip)
    }

    fn bare(ack: u32) -> TxFrame {
        v4(TCP_ACK, ack, 1000, 0)
    }

    fn mask(frames: &[TxFrame]) -> Vec<bool> {
        let (keep, dropped) = superseded(frames);
        assert_eq!(dropped, keep.iter().filter(|k| !**k).count(), "the count matches the mask");
        keep
    }

    #[test]
    fn an_ack_acknowledged_further_in_the_batch_is_dropped() {
        assert_eq!(mask(&[bare(100), bare(200), bare(300)]), [false, false, true]);
    }

    #[test]
    fn the_later_ack_wins_whatever_its_window() {
        let frames = [v4(TCP_ACK, 100, 5000, 0), v4(TCP_ACK, 200, 10, 0)];
        assert_eq!(mask(&frames), [false, true]);
    }

    #[test]
    fn duplicate_acks_are_all_kept() {
        assert_eq!(mask(&[bare(100), bare(200), bare(200), bare(200)]), [false, true, true, true]);
    }

    #[test]
    fn an_older_ack_after_a_newer_one_drops_nothing() {
        assert_eq!(mask(&[bare(300), bare(200)]), [true, true]);
    }

    #[test]
    fn acknowledgments_compare_modulo_2_32() {
        assert_eq!(mask(&[bare(u32::MAX - 10), bare(5)]), [false, true]);
        assert_eq!(mask(&[bare(5), bare(u32::MAX - 10)]), [true, true]);
    }

    #[test]
    fn segments_with_data_or_other_flags_are_kept_and_supersede_nothing() {
        const PSH: u8 = 0x08;
        const FIN: u8 = 0x01;
        const ECE: u8 = 0x40;
        assert_eq!(mask(&[v4(TCP_ACK, 100, 1000, 10), bare(200)]), [true, true]);
        assert_eq!(mask(&[bare(100), v4(TCP_ACK, 200, 1000, 10)]), [true, true]);
        for flags in [TCP_ACK | PSH, TCP_ACK | FIN, TCP_ACK | ECE] {
            assert_eq!(mask(&[v4(flags, 100, 1000, 0), bare(200)]), [true, true], "flags {flags:#x}");
            assert_eq!(mask(&[bare(100), v4(flags, 200, 1000, 0)]), [true, true], "flags {flags:#x}");
        }
    }

    #[test]
    fn acks_with_options_are_kept() {
        // Data offset 8: twelve bytes of options (SACK, timestamps), no data.
        let mut with_options = v4_ip(TCP_ACK, 100, 1000, 12);
        with_options[32] = 0x80;
        assert_eq!(mask(&[frame(with_options.clone()), bare(200)]), [true, true]);
        let mut later = with_options.clone();
        later[28..32].copy_from_slice(&200u32.to_be_bytes());
        assert_eq!(mask(&[frame(with_options), frame(later)]), [true, true]);
    }

    #[test]
    fn other_flows_are_left_alone() {
        let later = || v4_ip(TCP_ACK, 200, 1000, 0);
        let mut other_port = later();
        other_port[20..22].copy_from_slice(&40001u16.to_be_bytes());
        let mut other_seq = later();
        other_seq[24..28].copy_from_slice(&8u32.to_be_bytes());
        let mut other_addr = later();
        other_addr[12..16].copy_from_slice(&[10, 0, 0, 3]);
        let mut other_ttl = later();
        other_ttl[8] = 63;
        for ip in [other_port, other_seq, other_addr, other_ttl] {
            assert_eq!(mask(&[bare(100), frame(ip)]), [true, true]);
        }
        assert_eq!(mask(&[bare(100), frame(later())]), [false, true], "the same flow, for contrast");
    }

    #[test]
    fn ipv6_acks_are_superseded_too() {
        let v6 = |ack: u32| {
            let mut ip = vec![0u8; 60];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&20u16.to_be_bytes());
            ip[6] = 6;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            ip[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            ip[40..42].copy_from_slice(&40000u16.to_be_bytes());
            ip[42..44].copy_from_slice(&80u16.to_be_bytes());
            ip[48..52].copy_from_slice(&ack.to_be_bytes());
            ip[52] = 0x50;
            ip[53] = TCP_ACK;
            let mut eth = [0u8; 14];
            eth[12..14].copy_from_slice(&[0x86, 0xdd]);
            TxFrame::split(eth, ip)
        };
        assert_eq!(mask(&[v6(100), v6(200), v6(200)]), [false, true, true]);
    }

    #[test]
    fn non_tcp_and_short_frames_pass() {
        let arp = TxFrame::whole(vec![0u8; 42]);
        let runt = TxFrame::whole(vec![0u8; 10]);
        assert_eq!(mask(&[arp, runt, bare(1), bare(2)]), [true, true, false, true]);
    }
}

//! A test-only stage on the client's wire that makes chosen client connections advertise a tiny
//! receive window, as no Linux socket will by itself (TCP_WINDOW_CLAMP and SO_RCVBUF floor at
//! about a thousand bytes). Frames from the client whose TCP source port is in a range get their
//! window field lowered to the clamp, and their SYN loses its window-scale option (so the field
//! is the window itself on both sides); the checksum is recomputed. Everything else crosses as is.

use std::ops::RangeInclusive;

/// Which client connections to clamp, and to how many bytes.
#[derive(Clone, Debug)]
pub struct WindowClamp {
    pub ports: RangeInclusive<u16>,
    pub bytes: u16,
    /// Connections whose SYN keeps its window (its window-scale option still goes) and whose
    /// later segments are clamped: a window that shrinks after the SYN. Wins over `ports`;
    /// `0..=0` for none (no client sends from port 0).
    pub after_syn_ports: RangeInclusive<u16>,
}

const ETH_HEADER: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const TCP: u8 = 6;
const WINDOW_SCALE: u8 = 3;

impl WindowClamp {
    /// Rewrites an Ethernet frame from the client in place; true when it was changed.
    pub fn apply(&self, frame: &mut [u8]) -> bool {
        if frame.len() < ETH_HEADER + 20 || u16::from_be_bytes([frame[12], frame[13]]) != ETHERTYPE_IPV4 {
            return false;
        }
        let ip = &frame[ETH_HEADER..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
        if ip[9] != TCP || fragment || total > ip.len() || total < ihl + 20 {
            return false;
        }
        let (src, dst) = ([ip[12], ip[13], ip[14], ip[15]], [ip[16], ip[17], ip[18], ip[19]]);
        let tcp = &mut frame[ETH_HEADER + ihl..ETH_HEADER + total];
        let port = u16::from_be_bytes([tcp[0], tcp[1]]);
        let after_syn = self.after_syn_ports.contains(&port);
        if !after_syn && !self.ports.contains(&port) {
            return false;
        }
        let data_off = usize::from(tcp[12] >> 4) * 4;
        if data_off < 20 || data_off > tcp.len() {
            return false;
        }
        let syn = tcp[13] & 0x02 != 0;
        if syn {
            strip_window_scale(&mut tcp[20..data_off]);
        }
        let field = u16::from_be_bytes([tcp[14], tcp[15]]);
        let window = if syn && after_syn { field } else { field.min(self.bytes) };
        tcp[14..16].copy_from_slice(&window.to_be_bytes());
        tcp[16..18].copy_from_slice(&[0, 0]);
        let sum = tcp_checksum(src, dst, tcp);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        true
    }
}

/// Replaces a window-scale option with NOPs.
fn strip_window_scale(opts: &mut [u8]) {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => return,
            1 => i += 1,
            kind => {
                let Some(&len) = opts.get(i + 1) else { return };
                let len = usize::from(len);
                if len < 2 || i + len > opts.len() {
                    return;
                }
                if kind == WINDOW_SCALE {
                    opts[i..i + len].fill(1);
                }
                i += len;
            }
        }
    }
}

/// The TCP checksum over the IPv4 pseudo-header and the segment (RFC 9293 §3.1).
fn tcp_checksum(src: [u8; 4], dst: [u8; 4], segment: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for pair in b.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(&src);
    add(&dst);
    add(&[0, TCP]);
    add(&(segment.len() as u16).to_be_bytes());
    add(segment);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SYN from 10.0.0.1:40000 to 10.0.0.2:443 with MSS and window-scale options.
    fn syn(port: u16) -> Vec<u8> {
        let mut f = vec![0u8; ETH_HEADER];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let mut ip = vec![0x45, 0, 0, 48, 0, 0, 0x40, 0, 64, TCP, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        let mut tcp = vec![0u8; 28];
        tcp[0..2].copy_from_slice(&port.to_be_bytes());
        tcp[2..4].copy_from_slice(&443u16.to_be_bytes());
        tcp[12] = 7 << 4;
        tcp[13] = 0x02;
        tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
        tcp[20..28].copy_from_slice(&[2, 4, 5, 0xb4, 1, 3, 3, 7]);
        let sum = tcp_checksum([10, 0, 0, 1], [10, 0, 0, 2], &tcp);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        f.append(&mut ip);
        f.append(&mut tcp);
        f
    }

    #[test]
    fn a_clamped_syn_advertises_the_clamp_without_scaling_and_checks() {
        let clamp = WindowClamp { ports: 40000..=40000, bytes: 300, after_syn_ports: 0..=0 };
        let mut f = syn(40000);
        assert!(clamp.apply(&mut f));
        let tcp = &f[ETH_HEADER + 20..];
        assert_eq!(u16::from_be_bytes([tcp[14], tcp[15]]), 300);
        assert_eq!(&tcp[20..28], &[2, 4, 5, 0xb4, 1, 1, 1, 1], "MSS kept, window scale gone");
        assert_eq!(tcp_checksum([10, 0, 0, 1], [10, 0, 0, 2], tcp), 0, "the checksum verifies");
        // Another port crosses unchanged.
        let mut g = syn(40001);
        let before = g.clone();
        assert!(!clamp.apply(&mut g));
        assert_eq!(g, before);
    }

    #[test]
    fn an_after_syn_port_keeps_its_syn_window_and_clamps_the_rest() {
        let clamp = WindowClamp { ports: 40000..=40000, bytes: 300, after_syn_ports: 40001..=40001 };
        let mut f = syn(40001);
        assert!(clamp.apply(&mut f));
        let tcp = &f[ETH_HEADER + 20..];
        assert_eq!(u16::from_be_bytes([tcp[14], tcp[15]]), 64240, "the SYN's window stays");
        assert_eq!(&tcp[20..28], &[2, 4, 5, 0xb4, 1, 1, 1, 1], "window scale gone");
        // The same connection's next segment (ACK instead of SYN) is clamped.
        let mut g = syn(40001);
        g[ETH_HEADER + 20 + 13] = 0x10;
        assert!(clamp.apply(&mut g));
        let tcp = &g[ETH_HEADER + 20..];
        assert_eq!(u16::from_be_bytes([tcp[14], tcp[15]]), 300);
        assert_eq!(tcp_checksum([10, 0, 0, 1], [10, 0, 0, 2], tcp), 0, "the checksum verifies");
    }
}

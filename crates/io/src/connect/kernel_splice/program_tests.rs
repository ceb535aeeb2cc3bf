//! The BPF program itself, run by the kernel on packets the test builds (BPF_PROG_TEST_RUN, no
//! interface attached): what a spliced segment leaves as, field by field and with valid
//! checksums, and thousands of mangled segments (options, lengths, flags, truncations), each
//! either passed, dropped, or rewritten with checksums still valid. Needs CAP_BPF (root).

#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd};

use aya::programs::SchedClassifier;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::legs::{self, Leg, LegKey, Plan};
use super::KernelSplice;

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// `union bpf_attr`'s `test` member.
#[repr(C)]
#[derive(Default)]
struct TestRun {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

fn run(ks: &KernelSplice, packet: &[u8]) -> (u32, Vec<u8>) {
    let mut bpf = ks.bpf.lock().unwrap();
    let prog: &mut SchedClassifier = bpf.program_mut("connect_splice").unwrap().try_into().unwrap();
    let fd = prog.fd().unwrap().as_fd().as_raw_fd();
    let mut out = vec![0u8; packet.len() + 256];
    // `struct __sk_buff` up to ingress_ifindex (allowed in a test run), the rest zero: the
    // segment arrives on loopback's index, as every leg here says its own segments do.
    let mut ctx = [0u8; 40];
    ctx[36..40].copy_from_slice(&1u32.to_ne_bytes());
    let mut attr = TestRun {
        prog_fd: fd as u32,
        data_size_in: packet.len() as u32,
        data_size_out: out.len() as u32,
        data_in: packet.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ctx_size_in: ctx.len() as u32,
        ctx_in: ctx.as_mut_ptr() as u64,
        ..TestRun::default()
    };
    // SAFETY: `attr` is the test-run member of bpf_attr; the buffers outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRun,
            std::mem::size_of::<TestRun>(),
        )
    };
    assert_eq!(rc, 0, "BPF_PROG_TEST_RUN: {}", std::io::Error::last_os_error());
    out.truncate(attr.data_size_out as usize);
    (attr.retval, out)
}

fn sum16(bytes: &[u8], mut acc: u32) -> u32 {
    for pair in bytes.chunks(2) {
        acc += u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Sets the IPv4 and TCP checksums of an Ethernet frame.
fn checksum(frame: &mut [u8]) {
    frame[24..26].fill(0);
    let ip = !fold(sum16(&frame[14..34], 0));
    frame[24..26].copy_from_slice(&ip.to_be_bytes());
    frame[50..52].fill(0);
    let tcp = !fold(tcp_sum(frame));
    frame[50..52].copy_from_slice(&tcp.to_be_bytes());
}

fn tcp_sum(frame: &[u8]) -> u32 {
    let total = u16::from_be_bytes([frame[16], frame[17]]) as usize;
    let segment = &frame[34..14 + total];
    let mut pseudo = Vec::from(&frame[26..34]);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    sum16(segment, sum16(&pseudo, 0))
}

fn checksums_valid(frame: &[u8]) -> bool {
    fold(sum16(&frame[14..34], 0)) == 0xffff && fold(tcp_sum(frame)) == 0xffff
}

/// A segment from `from` to `to`: seq, ack, flags, TCP options, payload.
fn segment(
    from: [u8; 6],
    to: [u8; 6],
    seq: u32,
    ack: u32,
    flags: u8,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(opts.len() % 4, 0);
    let mut f = vec![0u8; 14];
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let total = 20 + 20 + opts.len() + payload.len();
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    f[16..18].copy_from_slice(&(total as u16).to_be_bytes());
    f.extend_from_slice(&from[..4]);
    f.extend_from_slice(&to[..4]);
    f.extend_from_slice(&from[4..6]);
    f.extend_from_slice(&to[4..6]);
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.extend_from_slice(&[(((20 + opts.len()) / 4) << 4) as u8, flags, 0x01, 0x00, 0, 0, 0, 0]);
    f.extend_from_slice(opts);
    f.extend_from_slice(payload);
    checksum(&mut f);
    f
}

fn addr(s: &str) -> [u8; 6] {
    let a: std::net::SocketAddrV4 = s.parse().unwrap();
    let mut out = [0u8; 6];
    out[..4].copy_from_slice(&a.ip().octets());
    out[4..].copy_from_slice(&a.port().to_be_bytes());
    out
}

const PORTAL: &str = "10.0.0.2:40000";
const GATE_C: &str = "10.0.0.1:8443";
const GATE_D: &str = "10.0.1.1:50000";
const DEST: &str = "10.0.1.2:443";

/// Both legs live, as after a downgrade: the portal's close_notify (24 bytes) at 1000, so its
/// raw stream starts at 1024 (already learned); the gate's bytes to the portal end at 5000; the
/// destination's streams start at 7000 (the gate's) and 9000 (its own).
fn spliced(ks: &KernelSplice) -> (Leg, Leg) {
    let view = legs::view;
    let plan = Plan {
        portal: view(GATE_C, PORTAL, 5000, 1000, 100_000),
        dest: view(GATE_D, DEST, 7000, 9000, 200_000),
    };
    let learned = |ts| Leg { ts_recent: ts, in_ifindex: 1, flags: legs::F_TS_SEEN, ..Leg::default() };
    let ((pk, mut pl), (dk, dl)) = legs::spliced(&plan, learned(11), learned(22));
    pl.flags &= !legs::F_SPLIT_PENDING;
    pl.seq_add = pl.base.wrapping_sub(1024);
    ks.put(&pk, pl).unwrap();
    ks.put(&dk, dl).unwrap();
    (pl, dl)
}

fn u32_at(f: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(f[at..at + 4].try_into().unwrap())
}

#[tokio::test]
async fn a_portal_segment_leaves_as_the_gates_segment_to_the_destination() {
    let ks = KernelSplice::start(&[]).expect("the program loads (needs CAP_BPF)");
    let (pl, dl) = spliced(&ks);
    // NOP NOP TS(val 5555, ecr 4321), NOP NOP SACK(one block 6000..6100): what the portal has
    // received of the destination's stream, in the portal connection's numbers.
    let mut opts = vec![1, 1, 8, 10];
    opts.extend_from_slice(&5555u32.to_be_bytes());
    opts.extend_from_slice(&4321u32.to_be_bytes());
    opts.extend_from_slice(&[1, 1, 5, 10]);
    opts.extend_from_slice(&6000u32.to_be_bytes());
    opts.extend_from_slice(&6100u32.to_be_bytes());
    let payload = vec![0xabu8; 100];
    let frame = segment(addr(PORTAL), addr(GATE_C), 2024, 5500, 0x18, &opts, &payload);
    let (rc, out) = run(&ks, &frame);
    assert_eq!(rc, TC_ACT_REDIRECT);
    assert!(checksums_valid(&out), "checksums of the rewritten segment");
    assert_eq!(&out[26..30], &[10, 0, 1, 1]);
    assert_eq!(&out[30..34], &[10, 0, 1, 2]);
    assert_eq!(u16::from_be_bytes([out[34], out[35]]), 50000);
    assert_eq!(u16::from_be_bytes([out[36], out[37]]), 443);
    // The raw byte 1000 after the portal's stream start is byte 1000 of the gate's to the
    // destination; the portal's acknowledgement of 500 bytes of the destination's likewise.
    assert_eq!(u32_at(&out, 38), 7000 + 1000);
    assert_eq!(u32_at(&out, 42), 9000 + 500);
    // The window: 256 in units of 2^7, rescaled to units of 2^9.
    assert_eq!(u16::from_be_bytes([out[48], out[49]]), 64);
    // TSval on the gate's clock toward the destination (its offset), TSecr the destination's.
    let now_ms = {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid timespec to fill.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        (ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000) as u32
    };
    let tsval = u32_at(&out, 58);
    assert!(now_ms.wrapping_add(pl.ts_off).wrapping_sub(tsval) < 1000, "TSval {tsval}");
    assert_eq!(u32_at(&out, 62), dl.ts_recent);
    assert_eq!((u32_at(&out, 70), u32_at(&out, 74)), (9000 + 1000, 9000 + 1100));
    assert_eq!(&out[78..], &payload[..]);
    // The portal's TSval is what the destination leg echoes next.
    assert_eq!(
        ks.get(&LegKey::new(PORTAL.parse().unwrap(), GATE_C.parse().unwrap())).unwrap().ts_recent,
        5555
    );
}

#[tokio::test]
async fn mangled_segments_are_passed_dropped_or_rewritten_with_valid_checksums() {
    let ks = KernelSplice::start(&[]).expect("the program loads (needs CAP_BPF)");
    spliced(&ks);
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let (mut redirected, mut other) = (0, 0);
    for _ in 0..4000 {
        let mut opts = vec![0u8; 4 * rng.random_range(0..=10)];
        rng.fill(&mut opts[..]);
        // Often a well-formed start (timestamps, SACK), then garbage.
        if opts.len() >= 12 && rng.random_bool(0.5) {
            opts[..4].copy_from_slice(&[1, 1, 8, 10]);
        }
        if opts.len() >= 24 && rng.random_bool(0.5) {
            opts[12..16].copy_from_slice(&[1, 1, 5, rng.random_range(0..=16)]);
        }
        let payload = vec![0u8; rng.random_range(0..300)];
        let (from, to) = if rng.random_bool(0.5) { (PORTAL, GATE_C) } else { (DEST, GATE_D) };
        let flags = rng.random::<u8>() & !0x02; // any but SYN, which is passed by design
        let mut frame = segment(addr(from), addr(to), rng.random(), rng.random(), flags, &opts, &payload);
        // Sometimes lie about the lengths, or cut the frame short (the checksums then no
        // longer matter: such a segment must not be rewritten into a valid one).
        let lied = match rng.random_range(0..8) {
            0 => {
                frame[46] = rng.random::<u8>() & 0xf0;
                true
            }
            1 => {
                let cut = rng.random_range(14..frame.len());
                frame.truncate(cut);
                true
            }
            2 => {
                frame[16..18].copy_from_slice(&rng.random::<u16>().to_be_bytes());
                true
            }
            _ => false,
        };
        if frame.len() < 14 + 20 {
            continue;
        }
        let (rc, out) = run(&ks, &frame);
        assert!([TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT].contains(&rc), "return {rc}");
        if rc == TC_ACT_REDIRECT {
            redirected += 1;
            if !lied {
                assert!(checksums_valid(&out), "a well-formed segment rewritten with a bad checksum");
            }
        } else {
            other += 1;
        }
    }
    assert!(redirected > 1000 && other > 100, "{redirected} rewritten, {other} passed or dropped");
}

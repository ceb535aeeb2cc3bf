//! Searching a live process's memory (/proc/PID/maps and /proc/PID/mem, as root) for bytes: the
//! proof that a process does or does not hold a private key.

use std::io::{Read, Seek, SeekFrom};

/// Whether any readable mapping of `pid` contains one of `needles`.
pub fn process_holds(pid: u32, needles: &[Vec<u8>]) -> bool {
    let finders: Vec<_> = needles.iter().map(memchr::memmem::Finder::new).collect();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps readable");
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("mem readable (run as root)");
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else { continue };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16)) else {
            continue;
        };
        let mut region = vec![0u8; (end - start) as usize];
        if mem.seek(SeekFrom::Start(start)).is_err() {
            continue;
        }
        let mut filled = 0;
        while filled < region.len() {
            match mem.read(&mut region[filled..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => filled += n,
            }
        }
        if finders.iter().any(|f| f.find(&region[..filled]).is_some()) {
            return true;
        }
    }
    false
}

/// The private scalar of a P-256 key in PKCS#8 PEM (RFC 5915's ECPrivateKey inside), in both
/// byte orders: big-endian as encoded, and reversed as aws-lc keeps it in little-endian words.
pub fn p256_scalar(pem: &str) -> [Vec<u8>; 2] {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64_decode(&body);
    let at = der.windows(5).position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20]).expect("an ECPrivateKey");
    let scalar = der[at + 5..at + 37].to_vec();
    let mut reversed = scalar.clone();
    reversed.reverse();
    [scalar, reversed]
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=' && !c.is_ascii_whitespace()).collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= u32::from(value(c)) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

//! The hasher of the per-packet tables (flows by 4-tuple, learned MACs by address): a keyed
//! multiply-fold hash, several times cheaper than std's SipHash-1-3 on a 4-tuple.
//!
//! Clients choose the keys (addresses and ports), so a fixed fast hash (FxHash-style) would let
//! anyone who knows it send SYNs that all land in one bucket group and turn every lookup into a
//! scan of the flow table. Each table therefore gets its own random key (from std's
//! `RandomState`, seeded by the OS per process and varied per instance), and every word is mixed
//! by a 64×64→128-bit multiply folded to 64 bits, so a key bit reaches every output bit and
//! colliding inputs depend on the secret key. This is the resistance foldhash and ahash offer:
//! not a proven PRF like SipHash, but with the key unknown and no hash values ever shown to the
//! network, constructing collisions means guessing 128 secret bits. The tables stay bounded
//! (flow limits, MAC table size) whatever the hash.

use std::hash::{BuildHasher, Hasher, RandomState};

/// Odd constants from the digits of pi (as in foldhash and wyhash).
const K1: u64 = 0x243f_6a88_85a3_08d3;
const K2: u64 = 0x1319_8a2e_0370_7344;

/// A per-table random key; builds [`TableHasher`]s.
#[derive(Clone, Debug)]
pub struct TableHash {
    k0: u64,
    k1: u64,
}

impl TableHash {
    pub fn new() -> TableHash {
        let random = RandomState::new();
        TableHash { k0: random.hash_one(K1), k1: random.hash_one(K2) | 1 }
    }
}

impl Default for TableHash {
    fn default() -> TableHash {
        TableHash::new()
    }
}

impl BuildHasher for TableHash {
    type Hasher = TableHasher;

    fn build_hasher(&self) -> TableHasher {
        TableHasher { state: self.k0, key: self.k1 }
    }
}

/// The low and high halves of the 128-bit product, XORed.
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

#[derive(Clone, Debug)]
pub struct TableHasher {
    state: u64,
    key: u64,
}

impl TableHasher {
    fn word(&mut self, w: u64) {
        self.state = fold_mul(self.state ^ w, self.key ^ K1);
    }
}

impl Hasher for TableHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().expect("eight bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            // The length tells "ab" + "" from "a" + "b" within one write.
            self.word(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.word(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.word(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.word(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.word(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.word(n as u64);
    }

    fn finish(&self) -> u64 {
        fold_mul(self.state, self.key ^ K2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::net::SocketAddr;

    #[test]
    fn keys_differ_between_tables_and_ports_spread_over_buckets() {
        let (a, b) = (TableHash::new(), TableHash::new());
        let key: (SocketAddr, SocketAddr) =
            ("10.0.0.1:40000".parse().unwrap(), "10.0.0.2:443".parse().unwrap());
        assert_ne!(a.hash_one(key), b.hash_one(key), "each table has its own key");
        assert_eq!(a.hash_one(key), a.hash_one(key));
        // Clients that differ only in the port: the low bits (the bucket) take many values, as
        // do the top seven (the control byte).
        let ports = 40000u16..41024;
        let hashes: Vec<u64> =
            ports.map(|p| a.hash_one((SocketAddr::from(([10, 0, 0, 1], p)), key.1))).collect();
        // (Uniformly random: 251 of 256 and 128 of 128 expected; a structural collision gives
        // a handful.)
        let low: HashSet<u64> = hashes.iter().map(|h| h & 255).collect();
        let top: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(low.len() > 230, "{} of 256 buckets", low.len());
        assert!(top.len() > 120, "{} of 128 control bytes", top.len());
    }
}

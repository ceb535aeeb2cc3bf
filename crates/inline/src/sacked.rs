//! The ranges a sender was told, by SACK blocks (RFC 2018), that the engine holds beyond a gap:
//! remembered until the cumulative ACK passes them, because an ACK must never end inside one
//! (Linux takes that as the receiver reneging, section 8) and a resend reaching one stands for
//! all of it. Used for both directions: client bytes held toward the server and server bytes
//! held toward the client.

/// Reported ranges as `[start, end)` offsets of the sender's stream, sorted and disjoint. A boxed
/// slice: no spare capacity, and 16 bytes when empty (a vector's 24) in every idle flow.
#[derive(Debug, Default)]
pub struct Sacked(Box<[(u64, u64)]>);

impl Sacked {
    /// Remembers `blocks`, reported with an ACK at `ack`, and forgets what that ACK passed.
    pub fn report(&mut self, ack: u64, blocks: &[(u64, u64)]) {
        if self.0.is_empty() && blocks.is_empty() {
            return;
        }
        let mut all: Vec<(u64, u64)> = self.0.iter().copied().filter(|&(_, e)| e > ack).collect();
        all.extend_from_slice(blocks);
        all.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(all.len());
        for &(s, e) in &all {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.0 = merged.into_boxed_slice();
    }

    /// The reported range holding offset `at`, if any.
    pub fn containing(&self, at: u64) -> Option<(u64, u64)> {
        self.0.iter().copied().find(|&(s, e)| s <= at && at < e)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn state_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.0)
    }

    /// Nothing to give back: the slice has no spare room.
    pub fn shrink(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::Sacked;

    #[test]
    fn overlapping_reports_merge_and_an_ack_past_a_range_forgets_it() {
        let mut s = Sacked::default();
        s.report(10, &[(20, 30)]);
        s.report(10, &[(25, 40), (50, 60)]);
        assert_eq!(s.containing(39), Some((20, 40)));
        assert_eq!(s.containing(40), None);
        s.report(45, &[]);
        assert_eq!(s.containing(25), None, "the ACK passed it");
        assert_eq!(s.containing(55), Some((50, 60)));
    }
}

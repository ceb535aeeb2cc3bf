//! Entry points for the fuzz targets in `fuzz/`; each checks invariants beyond "no panic".

use crate::record::{Event, Framer, HEADER_LEN, MAX_CIPHERTEXT_TLS13};

/// Frames `data` cut into chunks whose sizes come from the input itself, and checks that every
/// byte is accounted for once: header events point at the right offset, body pieces continue
/// where the last ended, and the framer's offset equals the bytes consumed until it fails.
pub fn framer(data: &[u8]) {
    let Some((&seed, mut rest)) = data.split_first() else { return };
    let mut f = Framer::new(0, MAX_CIPHERTEXT_TLS13);
    let mut consumed = 0u64;
    // (next body position, record length) while inside a record.
    let mut body_at = None::<(usize, usize)>;
    let mut step = seed as usize % 17 + 1;
    while !rest.is_empty() {
        let (mut chunk, tail) = rest.split_at(step.min(rest.len()));
        rest = tail;
        step = (step * 5 + 3) % 1500 + 1;
        loop {
            let before = chunk.len();
            let ev = f.next(&mut chunk);
            consumed += (before - chunk.len()) as u64;
            match ev {
                Ok(Some(Event::Header { header, offset })) => {
                    assert!(body_at.is_none());
                    assert!(header.len as usize <= MAX_CIPHERTEXT_TLS13);
                    assert_eq!(offset + HEADER_LEN as u64, consumed);
                    body_at = Some((0, header.len as usize));
                }
                Ok(Some(Event::Body { data, at })) => {
                    let (next, len) = body_at.unwrap();
                    assert_eq!(at, next);
                    assert!(!data.is_empty() && at + data.len() <= len);
                    body_at = Some((at + data.len(), len));
                }
                Ok(Some(Event::End { header })) => {
                    let (next, len) = body_at.take().unwrap();
                    assert_eq!((next, len), (header.len as usize, header.len as usize));
                    assert!(f.at_boundary());
                }
                Ok(None) => {
                    assert!(chunk.is_empty());
                    assert!(f.held() < HEADER_LEN);
                    break;
                }
                Err(_) => return,
            }
            assert_eq!(f.offset(), consumed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framer_entry_point_accepts_records_and_garbage() {
        let mut s = vec![3u8];
        for len in [0u16, 1, 300, 2000] {
            s.extend_from_slice(&[23, 3, 3]);
            s.extend_from_slice(&len.to_be_bytes());
            s.extend(std::iter::repeat_n(0xab, len as usize));
        }
        framer(&s);
        s.extend_from_slice(b"garbage after the records");
        framer(&s);
        framer(&[]);
        framer(&[0, 23, 3, 3, 0xff, 0xff]);
    }
}

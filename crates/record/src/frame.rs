//! A TLS record framer over one direction's in-order byte stream.
//!
//! TCP delivers records cut at any byte: a header may straddle two segments, one segment may carry
//! several records and a record may span many segments. The framer keeps only the partial header
//! (at most 5 bytes) and a count of body bytes still due, so it never copies a body: it hands out
//! borrowed pieces of the caller's segment. That serves both release modes — buffered mode
//! collects the pieces of a record until its end, cut-through mode decrypts each piece at once.
//!
//! Ordering is the caller's job (the hold queue): the framer must see every byte once, in order.

use thiserror::Error;

/// Size of a record header: content type, legacy version, length.
pub const HEADER_LEN: usize = 5;
/// Largest plaintext fragment (RFC 8446 §5.1).
pub const MAX_PLAINTEXT: usize = 1 << 14;
/// Largest TLS 1.3 ciphertext: plaintext, content type byte and AEAD expansion (RFC 8446 §5.2).
pub const MAX_CIPHERTEXT_TLS13: usize = MAX_PLAINTEXT + 256;
/// Largest TLS 1.2 ciphertext (RFC 5246 §6.2.3).
pub const MAX_CIPHERTEXT_TLS12: usize = MAX_PLAINTEXT + 2048;

/// A record's content type: an open newtype, so an unknown value parses and is refused by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ContentType(pub u8);

impl ContentType {
    pub const CHANGE_CIPHER_SPEC: ContentType = ContentType(20);
    pub const ALERT: ContentType = ContentType(21);
    pub const HANDSHAKE: ContentType = ContentType(22);
    pub const APPLICATION_DATA: ContentType = ContentType(23);

    /// The four types TLS 1.2 and 1.3 use; heartbeat (24) is not accepted.
    pub fn is_known(self) -> bool {
        (20..=23).contains(&self.0)
    }
}

/// A parsed record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub content_type: ContentType,
    /// The legacy version field (0x0301..0x0303 in practice; TLS 1.3 always writes 0x0303).
    pub version: u16,
    /// Length of the body that follows.
    pub len: u16,
}

impl Header {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            content_type: ContentType(b[0]),
            version: u16::from_be_bytes([b[1], b[2]]),
            len: u16::from_be_bytes([b[3], b[4]]),
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let v = self.version.to_be_bytes();
        let l = self.len.to_be_bytes();
        [self.content_type.0, v[0], v[1], l[0], l[1]]
    }
}

/// Why a stream is not (or no longer) a TLS record stream. The framer stays failed afterwards:
/// after a bad header there is no way to find the next record boundary.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("record of {len} bytes exceeds the limit of {limit}")]
    Oversized { len: usize, limit: usize },
    #[error("unknown record content type {0}")]
    ContentType(u8),
    #[error("record version {0:#06x} is not TLS")]
    Version(u16),
    #[error("the stream already failed framing")]
    Failed,
}

/// What the framer found next in the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete header; `offset` is the stream offset of its first byte.
    Header { header: Header, offset: u64 },
    /// Body bytes of the current record, in order; `at` is their position within the body.
    Body { data: &'a [u8], at: usize },
    /// The current record's body is complete (immediately after `Header` for an empty body).
    End { header: Header },
}

#[derive(Clone, Copy, Debug)]
enum State {
    Header { buf: [u8; HEADER_LEN], have: usize },
    Body { header: Header, at: usize },
    Failed,
}

/// The framer of one direction. See the module docs.
#[derive(Clone, Debug)]
pub struct Framer {
    limit: usize,
    state: State,
    /// Stream offset of the next byte the framer will read.
    offset: u64,
}

impl Framer {
    /// A framer whose stream starts at `offset`, refusing bodies longer than `limit`.
    pub fn new(offset: u64, limit: usize) -> Framer {
        Framer { limit, state: State::Header { buf: [0; HEADER_LEN], have: 0 }, offset }
    }

    /// Stream offset of the next byte expected.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// True between records (no partial header or body pending): where a new sequence pair may
    /// be recorded and where a stream may end cleanly.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header { have: 0, .. })
    }

    /// Bytes the framer holds itself (the partial header): its share of the per-flow state.
    pub fn held(&self) -> usize {
        match self.state {
            State::Header { have, .. } => have,
            _ => 0,
        }
    }

    /// Reads the next event from `input`, advancing it past the bytes used. `Ok(None)` when
    /// `input` is used up without completing an event.
    #[inline]
    pub fn next<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<Event<'a>>, FrameError> {
        match self.state {
            State::Failed => Err(FrameError::Failed),
            State::Header { mut buf, mut have } => {
                let start = self.offset - have as u64;
                let take = (HEADER_LEN - have).min(input.len());
                buf[have..have + take].copy_from_slice(&input[..take]);
                *input = &input[take..];
                have += take;
                self.offset += take as u64;
                if have < HEADER_LEN {
                    self.state = State::Header { buf, have };
                    return Ok(None);
                }
                let header = Header::parse(&buf);
                if let Err(e) = self.check(header) {
                    self.state = State::Failed;
                    return Err(e);
                }
                self.state = State::Body { header, at: 0 };
                Ok(Some(Event::Header { header, offset: start }))
            }
            State::Body { header, at } => {
                let remaining = header.len as usize - at;
                if remaining == 0 {
                    self.state = State::Header { buf: [0; HEADER_LEN], have: 0 };
                    return Ok(Some(Event::End { header }));
                }
                if input.is_empty() {
                    return Ok(None);
                }
                let take = remaining.min(input.len());
                let (data, rest) = input.split_at(take);
                *input = rest;
                self.offset += take as u64;
                self.state = State::Body { header, at: at + take };
                Ok(Some(Event::Body { data, at }))
            }
        }
    }

    fn check(&self, h: Header) -> Result<(), FrameError> {
        if !h.content_type.is_known() {
            return Err(FrameError::ContentType(h.content_type.0));
        }
        // SSL 3.0 and TLS 1.x all write major version 3.
        if h.version >> 8 != 3 {
            return Err(FrameError::Version(h.version));
        }
        if h.len as usize > self.limit {
            return Err(FrameError::Oversized { len: h.len as usize, limit: self.limit });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as the tests see it: header and whole body.
    #[derive(Debug, PartialEq, Eq)]
    struct Rec {
        header: Header,
        offset: u64,
        body: Vec<u8>,
    }

    fn record(ct: ContentType, body: &[u8]) -> Vec<u8> {
        let h = Header { content_type: ct, version: 0x0303, len: body.len() as u16 };
        let mut v = h.encode().to_vec();
        v.extend_from_slice(body);
        v
    }

    /// Several records back to back: empty application data, tiny, alert, maximum size.
    fn sample_stream() -> (Vec<u8>, usize) {
        let mut s = Vec::new();
        s.extend(record(ContentType::HANDSHAKE, &[1, 2, 3]));
        s.extend(record(ContentType::APPLICATION_DATA, &[]));
        s.extend(record(ContentType::APPLICATION_DATA, b"x"));
        s.extend(record(ContentType::ALERT, &[1, 0]));
        let big: Vec<u8> = (0..MAX_CIPHERTEXT_TLS13).map(|i| (i * 7) as u8).collect();
        s.extend(record(ContentType::APPLICATION_DATA, &big));
        s.extend(record(ContentType::APPLICATION_DATA, &[]));
        (s, 6)
    }

    /// Feeds the chunks in order and reassembles records, checking the event grammar on the way.
    fn run(f: &mut Framer, chunks: &[&[u8]]) -> Result<Vec<Rec>, FrameError> {
        let mut out = Vec::new();
        let mut cur: Option<Rec> = None;
        for chunk in chunks {
            let mut input = *chunk;
            while let Some(ev) = f.next(&mut input)? {
                match ev {
                    Event::Header { header, offset } => {
                        assert!(cur.is_none());
                        cur = Some(Rec { header, offset, body: Vec::new() });
                    }
                    Event::Body { data, at } => {
                        let r = cur.as_mut().unwrap();
                        assert_eq!(at, r.body.len());
                        assert!(!data.is_empty());
                        r.body.extend_from_slice(data);
                    }
                    Event::End { header } => {
                        let r = cur.take().unwrap();
                        assert_eq!(r.header, header);
                        assert_eq!(r.body.len(), header.len as usize);
                        out.push(r);
                    }
                }
            }
            assert!(input.is_empty(), "None only when the input is used up");
        }
        assert!(cur.is_none() || !f.at_boundary());
        Ok(out)
    }

    fn whole(stream: &[u8]) -> Vec<Rec> {
        run(&mut Framer::new(0, MAX_CIPHERTEXT_TLS13), &[stream]).unwrap()
    }

    #[test]
    fn several_records_in_one_segment() {
        let (s, n) = sample_stream();
        let recs = whole(&s);
        assert_eq!(recs.len(), n);
        assert_eq!(recs[0].body, [1, 2, 3]);
        assert_eq!(recs[1].body, []);
        assert_eq!(recs[1].offset, 8);
        assert_eq!(recs[4].body.len(), MAX_CIPHERTEXT_TLS13);
        let mut f = Framer::new(0, MAX_CIPHERTEXT_TLS13);
        run(&mut f, &[&s]).unwrap();
        assert!(f.at_boundary());
        assert_eq!(f.offset(), s.len() as u64);
    }

    #[test]
    fn split_at_every_offset() {
        let (s, _) = sample_stream();
        let expect = whole(&s);
        for cut in 0..=s.len() {
            let mut f = Framer::new(0, MAX_CIPHERTEXT_TLS13);
            let got = run(&mut f, &[&s[..cut], &s[cut..]]).unwrap();
            assert_eq!(got, expect, "cut at {cut}");
            assert!(f.at_boundary());
        }
    }

    #[test]
    fn split_at_every_pair_of_offsets_in_small_records() {
        let mut s = record(ContentType::APPLICATION_DATA, b"hello");
        s.extend(record(ContentType::APPLICATION_DATA, &[]));
        s.extend(record(ContentType::ALERT, &[1, 0]));
        let expect = whole(&s);
        for a in 0..=s.len() {
            for b in a..=s.len() {
                let got = run(&mut Framer::new(0, 100), &[&s[..a], &s[a..b], &s[b..]]).unwrap();
                assert_eq!(got, expect, "cuts at {a} and {b}");
            }
        }
    }

    #[test]
    fn byte_at_a_time() {
        let (s, _) = sample_stream();
        let chunks: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(run(&mut Framer::new(0, MAX_CIPHERTEXT_TLS13), &chunks).unwrap(), whole(&s));
    }

    #[test]
    fn offsets_count_from_the_start_given() {
        let s = record(ContentType::APPLICATION_DATA, b"ab");
        let start = u32::MAX as u64 - 3;
        let mut f = Framer::new(start, 100);
        let got = run(&mut f, &[&s[..4], &s[4..]]).unwrap();
        assert_eq!(got[0].offset, start);
        assert_eq!(f.offset(), start + 7);
    }

    #[test]
    fn held_bytes_are_the_partial_header() {
        let s = record(ContentType::APPLICATION_DATA, b"ab");
        let mut f = Framer::new(0, 100);
        let mut input = &s[..3];
        assert_eq!(f.next(&mut input), Ok(None));
        assert_eq!(f.held(), 3);
        assert!(!f.at_boundary());
    }

    #[test]
    fn oversized_record_is_refused_and_the_framer_stays_failed() {
        let limit = MAX_CIPHERTEXT_TLS13;
        let mut h = record(ContentType::APPLICATION_DATA, &[]);
        h[3..5].copy_from_slice(&((limit + 1) as u16).to_be_bytes());
        let mut f = Framer::new(0, limit);
        let mut input = &h[..];
        assert_eq!(f.next(&mut input), Err(FrameError::Oversized { len: limit + 1, limit }));
        let mut more: &[u8] = &[23];
        assert_eq!(f.next(&mut more), Err(FrameError::Failed));
        // At the limit exactly it passes.
        h[3..5].copy_from_slice(&(limit as u16).to_be_bytes());
        let mut input = &h[..];
        assert!(matches!(Framer::new(0, limit).next(&mut input), Ok(Some(Event::Header { .. }))));
    }

    #[test]
    fn non_tls_bytes_are_refused() {
        let mut input: &[u8] = b"GET / HTTP/1.1\r\n";
        assert_eq!(Framer::new(0, 100).next(&mut input), Err(FrameError::ContentType(b'G')));
        let mut input: &[u8] = &[23, 4, 3, 0, 0];
        assert_eq!(Framer::new(0, 100).next(&mut input), Err(FrameError::Version(0x0403)));
        let mut input: &[u8] = &[24, 3, 3, 0, 0];
        assert_eq!(Framer::new(0, 100).next(&mut input), Err(FrameError::ContentType(24)));
    }
}

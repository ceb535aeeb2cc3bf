//! Record protection after the handshake: open the client's records, seal the server's, with the
//! traffic keys rustls extracted, and follow TLS 1.3 key updates.
//!
//! TLS 1.3 (RFC 8446 §5.2–5.3): the outer type is always application_data, the real type is the
//! last non-zero byte of the plaintext, the AAD is the record header, the nonce is the IV XOR the
//! record sequence number. TLS 1.2 AES-GCM (RFC 5288): an 8-byte explicit nonce leads the body,
//! the AAD is sequence number, type, version and plaintext length. rustls hands a TLS 1.2 GCM key
//! over with a 12-byte IV (4-byte salt and 8 bytes from the key block), so sealing here also uses
//! IV XOR sequence number and writes the last 8 bytes of that nonce as the explicit one: a nonce
//! is a function of the sequence number alone, never reused while the number only grows.
//! TLS 1.2 ChaCha20-Poly1305 (RFC 7905 §2): no explicit nonce, the nonce is the IV XOR the
//! sequence number as in TLS 1.3, the AAD is TLS 1.2's; so its records are 8 bytes shorter than
//! AES-GCM's, and where the plaintext starts is a property of the key ([`RecordKey::head`]), not
//! of the version alone.

use crate::frame::{ContentType, Header, HEADER_LEN, MAX_PLAINTEXT};
use crate::stream::{Alg, Ctx, StreamOpener, CONTEXT_BYTES};
use crate::traffic::{Capture, TrafficSecrets};
use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use rustls::client::ClientConnectionData;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion};
use std::ops::Range;
use thiserror::Error;

use crate::stream::TAG_LEN;
const EXPLICIT_NONCE_LEN: usize = 8;
/// The legacy version every TLS 1.2 and 1.3 record written here carries.
const RECORD_VERSION: u16 = 0x0303;

/// TLS 1.3 ChaCha20-Poly1305 records up to this much plaintext are copied into the record and
/// sealed in place rather than sealed from where they lie: aws-lc seals the content type byte,
/// given as extra input, with a keystream block and a Poly1305 pass of its own (about 170 ns a
/// record on an Intel Xeon, more than copying 4 KiB). At 1,460 bytes the copy lifts the seal
/// from 0.81 to 0.91 of aws-lc's own in-place seal; from 8 KiB on it costs more than it saves.
/// AES-GCM's counter mode takes the extra byte for nothing, and the copy would cost it a tenth
/// at 1,460 bytes.
const CHACHA_COPY_MAX: usize = 4096;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The tag did not verify: answered with RST to the server and bad_record_mac to the client.
    #[error("bad record MAC")]
    BadRecordMac,
    #[error("record too short to hold its {0} bytes of overhead")]
    Short(usize),
    #[error("unexpected outer content type {0}")]
    OuterType(u8),
    #[error("TLS 1.3 record with no content type (all padding)")]
    NoContentType,
    #[error("plaintext of {0} bytes exceeds the record limit")]
    TooLarge(usize),
    #[error("record sequence number exhausted")]
    SeqExhausted,
    #[error("post-handshake message not supported (type {0})")]
    PostHandshake(u8),
    #[error("unsupported protocol version or cipher suite")]
    Unsupported,
    #[error("key schedule: {0}")]
    KeySchedule(String),
}

/// The two record-protection formats the engine speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Tls12,
    Tls13,
}

impl Version {
    pub fn from_rustls(v: ProtocolVersion) -> Result<Version, CryptoError> {
        match v {
            ProtocolVersion::TLSv1_2 => Ok(Version::Tls12),
            ProtocolVersion::TLSv1_3 => Ok(Version::Tls13),
            _ => Err(CryptoError::Unsupported),
        }
    }

    /// Outer bytes after the last plaintext byte (TLS 1.3: the content type byte; no padding is
    /// ever added here).
    #[inline]
    pub fn trail(self) -> usize {
        match self {
            Version::Tls12 => TAG_LEN,
            Version::Tls13 => 1 + TAG_LEN,
        }
    }
}

/// The largest expansion of a record in any format spoken here (TLS 1.2 AES-GCM's): what the MSS
/// clamp subtracts before the version and suite are known.
pub const MAX_OVERHEAD: usize = HEADER_LEN + EXPLICIT_NONCE_LEN + TAG_LEN;

/// A decrypted record: its real content type and where the plaintext lies in the body buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    pub content_type: ContentType,
    pub plaintext: Range<usize>,
    /// The record sequence number it was opened under (for the nonce log).
    pub seq: u64,
}

/// The AEAD algorithms the engine speaks, each with TLS 1.2 and 1.3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

/// Heap bytes of one built AEAD context (aws-lc's `EVP_AEAD_CTX` with the expanded key and
/// GHASH table, allocated by C's malloc), as glibc's `mallinfo2` counts it: measured by
/// `crates/inline/benches/idle_flows.rs` (building and parking keys), the same for the three
/// suites within a few bytes.
pub const AEAD_CONTEXT_BYTES: usize = 608;

/// One direction's key: AEAD key, IV and the next record sequence number.
pub struct RecordKey {
    version: Version,
    alg: &'static aead::Algorithm,
    /// The AEAD context, built from `raw` on first use and dropped by [`RecordKey::park`]: an
    /// idle connection keeps the 32 raw bytes instead of aws-lc's expanded context.
    key: Option<LessSafeKey>,
    /// The raw key: to rebuild the AEAD context after parking, and to build the streaming
    /// opener's key on first use (only cut-through release opens records piece by piece, and
    /// its expanded key would cost every other connection a few hundred bytes for nothing).
    raw: ([u8; 32], usize),
    /// The streaming opener's decryption context (cut-through release), once needed; lent to
    /// the record being opened and handed back at its end.
    stream: Option<Ctx>,
    iv: [u8; NONCE_LEN],
    /// TLS 1.2 AES-GCM: the body starts with the 8-byte explicit nonce (RFC 5288).
    explicit_nonce: bool,
    seq: u64,
}

impl std::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key or IV.
        f.debug_struct("RecordKey").field("version", &self.version).field("seq", &self.seq).finish()
    }
}

impl RecordKey {
    pub fn new(
        version: Version,
        seq: u64,
        secrets: ConnectionTrafficSecrets,
    ) -> Result<RecordKey, CryptoError> {
        let (suite, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Suite::Aes128Gcm, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Suite::Aes256Gcm, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (Suite::Chacha20Poly1305, key, iv),
            _ => return Err(CryptoError::Unsupported),
        };
        let iv: [u8; NONCE_LEN] = iv.as_ref().try_into().map_err(|_| CryptoError::Unsupported)?;
        RecordKey::from_parts(version, suite, key.as_ref(), iv, seq)
    }

    /// A key from raw parts (what rustls extracted, or a test's own).
    pub fn from_parts(
        version: Version,
        suite: Suite,
        key: &[u8],
        iv: [u8; NONCE_LEN],
        seq: u64,
    ) -> Result<RecordKey, CryptoError> {
        let mut k = RecordKey::unbuilt(version, suite, key, iv, seq)?;
        k.aead()?;
        Ok(k)
    }

    /// A key from raw parts whose AEAD context is built on its first record (as after
    /// [`RecordKey::park`]).
    fn unbuilt(
        version: Version,
        suite: Suite,
        key: &[u8],
        iv: [u8; NONCE_LEN],
        seq: u64,
    ) -> Result<RecordKey, CryptoError> {
        let alg = match suite {
            Suite::Aes128Gcm if key.len() == 16 => &aead::AES_128_GCM,
            Suite::Aes256Gcm if key.len() == 32 => &aead::AES_256_GCM,
            Suite::Chacha20Poly1305 if key.len() == 32 => &aead::CHACHA20_POLY1305,
            _ => return Err(CryptoError::Unsupported),
        };
        let mut raw = [0u8; 32];
        raw[..key.len()].copy_from_slice(key);
        Ok(RecordKey {
            version,
            alg,
            key: None,
            raw: (raw, alg.key_len()),
            stream: None,
            iv,
            explicit_nonce: version == Version::Tls12 && suite != Suite::Chacha20Poly1305,
            seq,
        })
    }

    /// Drops the built contexts (AEAD and streaming), keeping the raw key: the next record
    /// rebuilds what it needs. For connections with nothing in flight.
    pub fn park(&mut self) {
        self.key = None;
        self.stream = None;
    }

    /// Heap bytes the key holds beyond its own size: the AEAD context while built, the
    /// streaming opener's context while built and not lent to a record.
    pub fn heap_bytes(&self) -> usize {
        self.key.as_ref().map_or(0, |_| AEAD_CONTEXT_BYTES)
            + self.stream.as_ref().map_or(0, |_| CONTEXT_BYTES)
    }

    fn suite(&self) -> Suite {
        if self.alg == &aead::AES_128_GCM {
            Suite::Aes128Gcm
        } else if self.alg == &aead::AES_256_GCM {
            Suite::Aes256Gcm
        } else {
            Suite::Chacha20Poly1305
        }
    }

    /// The AEAD context, rebuilt from the raw key after [`RecordKey::park`].
    fn aead(&mut self) -> Result<&LessSafeKey, CryptoError> {
        self.ensure_aead()?;
        self.key.as_ref().ok_or(CryptoError::Unsupported)
    }

    /// Builds the AEAD context if the key was parked.
    #[inline]
    fn ensure_aead(&mut self) -> Result<(), CryptoError> {
        if self.key.is_none() {
            self.build_aead()?;
        }
        Ok(())
    }

    /// Out of line and cold: a seal builds its nonce after [`RecordKey::ensure_aead`], so the
    /// nonce never has to live in memory across this call ([`RecordKey::seal_record`]).
    #[cold]
    #[inline(never)]
    fn build_aead(&mut self) -> Result<(), CryptoError> {
        let unbound =
            UnboundKey::new(self.alg, &self.raw.0[..self.raw.1]).map_err(|_| CryptoError::Unsupported)?;
        self.key = Some(LessSafeKey::new(unbound));
        Ok(())
    }

    /// The streaming opener's context: the one the previous record handed back, or a new one.
    fn stream_ctx(&mut self) -> Result<Ctx, CryptoError> {
        if let Some(ctx) = self.stream.take() {
            return Ok(ctx);
        }
        let alg = if self.alg == &aead::CHACHA20_POLY1305 { Alg::Chacha20Poly1305 } else { Alg::AesGcm };
        Ctx::new(alg, &self.raw.0[..self.raw.1]).ok_or(CryptoError::Unsupported)
    }

    /// Checks a streamed record's tag ([`StreamOpener::finish`]) and keeps its context for the
    /// next record, when the record was this key's latest (a key update replaced the key
    /// otherwise, and the context holds the old one).
    pub fn finish_stream(&mut self, opener: StreamOpener) -> Result<(), CryptoError> {
        let seq = opener.seq();
        let (verdict, ctx) = opener.finish_keep();
        if verdict.is_ok() && self.stream.is_none() && self.key_seq_follows(seq) {
            self.stream = Some(ctx);
        }
        verdict
    }

    fn key_seq_follows(&self, seq: u64) -> bool {
        seq.checked_add(1) == Some(self.seq)
    }

    /// The next record sequence number.
    #[inline]
    pub fn seq(&self) -> u64 {
        self.seq
    }

    #[inline]
    pub fn version(&self) -> Version {
        self.version
    }

    /// Outer bytes before the first plaintext byte: the header, and TLS 1.2 AES-GCM's explicit
    /// nonce.
    #[inline]
    pub fn head(&self) -> usize {
        HEADER_LEN + self.explicit_len()
    }

    /// Outer bytes after the last plaintext byte.
    #[inline]
    pub fn trail(&self) -> usize {
        self.version.trail()
    }

    /// Total expansion of one record: what the window arithmetic subtracts.
    #[inline]
    pub fn overhead(&self) -> usize {
        self.head() + self.trail()
    }

    #[inline]
    fn explicit_len(&self) -> usize {
        if self.explicit_nonce {
            EXPLICIT_NONCE_LEN
        } else {
            0
        }
    }

    /// The record's nonce (RFC 8446, section 5.3; RFC 7905 for TLS 1.2's ChaCha20-Poly1305): the
    /// IV with the sequence number XORed into its last 8 bytes, as one 64-bit word.
    fn nonce(&self, seq: u64) -> [u8; NONCE_LEN] {
        // Whole arrays, not slices: the compiler then moves the nonce in two words, not in bytes.
        let (head, tail) = self.iv.split_at(NONCE_LEN - 8);
        let head: [u8; NONCE_LEN - 8] = head.try_into().expect("the IV's head");
        let tail: [u8; 8] = tail.try_into().expect("an 8-byte tail");
        let tail = (u64::from_be_bytes(tail) ^ seq).to_be_bytes();
        let mut n = [0u8; NONCE_LEN];
        n[..NONCE_LEN - 8].copy_from_slice(&head);
        n[NONCE_LEN - 8..].copy_from_slice(&tail);
        n
    }

    /// TLS 1.2: AES-GCM's nonce is the IV's 4-byte salt and the record's explicit nonce; ChaCha20's
    /// (`explicit` empty) is the IV XOR the sequence number.
    fn tls12_nonce(&self, seq: u64, explicit: &[u8]) -> [u8; NONCE_LEN] {
        if !self.explicit_nonce {
            return self.nonce(seq);
        }
        let mut nonce = self.iv;
        nonce[NONCE_LEN - EXPLICIT_NONCE_LEN..].copy_from_slice(explicit);
        nonce
    }

    fn take_seq(&mut self) -> Result<u64, CryptoError> {
        let seq = self.seq;
        self.seq = seq.checked_add(1).ok_or(CryptoError::SeqExhausted)?;
        Ok(seq)
    }

    /// Opens a record in place. `body` is the record body after `header`; on success the
    /// plaintext is `body[opened.plaintext]`. A failed tag still consumes the sequence number:
    /// the connection is dead after it anyway.
    pub fn open(&mut self, header: Header, body: &mut [u8]) -> Result<Opened, CryptoError> {
        let (plain, seq) = self.decrypt(header, body)?;
        match self.version {
            Version::Tls13 => {
                // Strip the zero padding; the last non-zero byte is the real content type.
                let inner = &body[plain.clone()];
                let end = inner.iter().rposition(|&b| b != 0).ok_or(CryptoError::NoContentType)?;
                Ok(Opened {
                    content_type: ContentType(inner[end]),
                    plaintext: plain.start..plain.start + end,
                    seq,
                })
            }
            Version::Tls12 => Ok(Opened { content_type: header.content_type, plaintext: plain, seq }),
        }
    }

    /// Decrypts a record in place and returns where its plaintext lies in `body` (TLS 1.3: the
    /// whole TLSInnerPlaintext, content type and padding included) and its sequence number.
    #[inline]
    pub fn decrypt(&mut self, header: Header, body: &mut [u8]) -> Result<(Range<usize>, u64), CryptoError> {
        let seq = self.take_seq()?;
        match self.version {
            Version::Tls13 => {
                if header.content_type != ContentType::APPLICATION_DATA {
                    return Err(CryptoError::OuterType(header.content_type.0));
                }
                if body.len() < TAG_LEN + 1 {
                    return Err(CryptoError::Short(TAG_LEN + 1));
                }
                // The nonce once the context exists, just before the call (see `seal_tls13`).
                self.ensure_aead()?;
                let key = self.key.as_ref().ok_or(CryptoError::Unsupported)?;
                let nonce = Nonce::assume_unique_for_key(self.nonce(seq));
                let plain = key
                    .open_in_place(nonce, Aad::from(header.encode()), body)
                    .map_err(|_| CryptoError::BadRecordMac)?;
                Ok((0..plain.len(), seq))
            }
            Version::Tls12 => {
                let explicit = self.explicit_len();
                let overhead = explicit + TAG_LEN;
                if body.len() < overhead {
                    return Err(CryptoError::Short(overhead));
                }
                let nonce = self.tls12_nonce(seq, &body[..explicit]);
                let aad = tls12_aad(seq, header.content_type, header.version, body.len() - overhead);
                self.aead()?
                    .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body[explicit..])
                    .map_err(|_| CryptoError::BadRecordMac)?;
                Ok((explicit..body.len() - TAG_LEN, seq))
            }
        }
    }

    /// Starts opening a record piece by piece ([`StreamOpener`]); takes its sequence number like
    /// [`RecordKey::open`]. The same checks before decryption: outer type (TLS 1.3) and room for
    /// the overhead, known from the header alone.
    pub fn open_stream(&mut self, header: Header) -> Result<StreamOpener, CryptoError> {
        let seq = self.take_seq()?;
        let len = header.len as usize;
        match self.version {
            Version::Tls13 => {
                if header.content_type != ContentType::APPLICATION_DATA {
                    return Err(CryptoError::OuterType(header.content_type.0));
                }
                if len < TAG_LEN + 1 {
                    return Err(CryptoError::Short(TAG_LEN + 1));
                }
                Ok(StreamOpener::new(self.stream_ctx()?, self.nonce(seq), &header.encode(), 0, len, seq))
            }
            Version::Tls12 => {
                let explicit = self.explicit_len();
                let overhead = explicit + TAG_LEN;
                if len < overhead {
                    return Err(CryptoError::Short(overhead));
                }
                let aad = tls12_aad(seq, header.content_type, header.version, len - overhead);
                // AES-GCM: the opener reads the explicit nonce into the IV's last 8 bytes itself.
                let nonce = if self.explicit_nonce { self.iv } else { self.nonce(seq) };
                Ok(StreamOpener::new(self.stream_ctx()?, nonce, &aad, explicit, len, seq))
            }
        }
    }

    /// Seals `plaintext` as one record of type `ct` appended to `out`; returns the sequence
    /// number used.
    pub fn seal(&mut self, ct: ContentType, plaintext: &[u8], out: &mut Vec<u8>) -> Result<u64, CryptoError> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(CryptoError::TooLarge(plaintext.len()));
        }
        let start = out.len();
        self.seal_any(ct, plaintext, out, start)
    }

    /// As [`RecordKey::seal`], the record written at the start of `out` over the bytes it holds
    /// (a reused record buffer), `out` then the record's length: only bytes beyond what `out`
    /// held are zeroed before the AEAD writes them.
    pub fn seal_over(
        &mut self,
        ct: ContentType,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<u64, CryptoError> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(CryptoError::TooLarge(plaintext.len()));
        }
        self.seal_any(ct, plaintext, out, 0)
    }

    /// As [`RecordKey::seal`], the record written at `out[start..]` over the bytes `out` holds
    /// there, which are kept beyond the record's end (a reused batch buffer: the records of one
    /// batch are sealed one after another, and only bytes beyond the buffer's old length are
    /// zeroed first). Returns the record's end.
    pub fn seal_within(
        &mut self,
        ct: ContentType,
        plaintext: &[u8],
        out: &mut Vec<u8>,
        start: usize,
    ) -> Result<usize, CryptoError> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(CryptoError::TooLarge(plaintext.len()));
        }
        self.seal_record(ct, plaintext, out, start, false)
    }

    /// Tests: a record over the plaintext limit, as a broken peer would send it.
    #[cfg(test)]
    pub(crate) fn seal_oversized(&mut self, ct: ContentType, plaintext: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        self.seal_any(ct, plaintext, out, start).unwrap();
    }

    /// Other crates' tests (feature `test-util`): as [`RecordKey::seal`] without the plaintext
    /// limit, as a broken peer would seal.
    #[cfg(feature = "test-util")]
    pub fn seal_oversized_for_tests(&mut self, ct: ContentType, plaintext: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        self.seal_any(ct, plaintext, out, start).expect("a record of at most 64 KiB");
    }

    /// Seals one record at `out[start..]`, `out` cut or grown to end with it. The plaintext is
    /// encrypted straight from where it lies into the record (aws-lc's out-of-place seal): no
    /// copy of it into the record first and no second pass over it. Bytes `out` did not hold
    /// are zeroed first (safe Rust writes no uninitialised memory); TLS 1.3's content type is
    /// sealed behind the plaintext as aws-lc's extra input, with the tag (short ChaCha20-Poly1305
    /// records are copied and sealed in place instead: [`CHACHA_COPY_MAX`]).
    fn seal_any(
        &mut self,
        ct: ContentType,
        plaintext: &[u8],
        out: &mut Vec<u8>,
        start: usize,
    ) -> Result<u64, CryptoError> {
        let seq = self.seq;
        self.seal_record(ct, plaintext, out, start, true).map(|_| seq)
    }

    /// [`RecordKey::seal_any`]'s work; `cut`: `out` ends with the record, else bytes it held
    /// beyond the record stay. Returns the record's end.
    ///
    /// Each version has a function of its own, and the TLS 1.3 one builds its nonce only once
    /// the AEAD context exists, for the machine code's sake: with both versions here (TLS 1.2
    /// copies part of the nonce into the record) and the nonce alive across the context's
    /// rebuild, the compiler kept the nonce as twelve single bytes and copied it byte by byte
    /// into aws-lc-rs's `Nonce`, whose first wide load in aws-lc then waited for those stores
    /// to drain. At 1,460-byte AES-128-GCM records (an Intel Xeon), sealing each into a reused
    /// buffer went from about 0.91 to 0.93 of aws-lc's own in-place seal, and the inline
    /// engine's seal path became about 1.5 % faster.
    fn seal_record(
        &mut self,
        ct: ContentType,
        plaintext: &[u8],
        out: &mut Vec<u8>,
        start: usize,
        cut: bool,
    ) -> Result<usize, CryptoError> {
        let seq = self.take_seq()?;
        let body_len = plaintext.len() + self.overhead() - HEADER_LEN;
        let end = start + HEADER_LEN + body_len;
        if out.len() < end {
            out.resize(end, 0);
        } else if cut {
            out.truncate(end);
        }
        let record = &mut out[start..end];
        match self.version {
            Version::Tls13 => self.seal_tls13(seq, ct, plaintext, record)?,
            Version::Tls12 => self.seal_tls12(seq, ct, plaintext, record)?,
        }
        Ok(end)
    }

    /// A TLS 1.3 record (RFC 8446, section 5.2) of `plaintext` and its content type `ct` into
    /// `record`, which has its exact length.
    fn seal_tls13(
        &mut self,
        seq: u64,
        ct: ContentType,
        plaintext: &[u8],
        record: &mut [u8],
    ) -> Result<(), CryptoError> {
        self.ensure_aead()?;
        let too_large = |_| CryptoError::TooLarge(plaintext.len());
        let header = Header {
            content_type: ContentType::APPLICATION_DATA,
            version: RECORD_VERSION,
            len: (record.len() - HEADER_LEN) as u16,
        }
        .encode();
        record[..HEADER_LEN].copy_from_slice(&header);
        if plaintext.len() <= CHACHA_COPY_MAX && self.alg == &aead::CHACHA20_POLY1305 {
            return self.seal_tls13_copied(seq, ct, header, plaintext, record);
        }
        // The nonce last: `Nonce` wipes itself when dropped, and built before a check that may
        // return (or panic), it was first stored byte by byte for that wipe.
        let key = self.key.as_ref().ok_or(CryptoError::Unsupported)?;
        let (cipher, trail) = record[HEADER_LEN..].split_at_mut(plaintext.len());
        let nonce = Nonce::assume_unique_for_key(self.nonce(seq));
        key.seal_out_of_place_scatter(nonce, Aad::from(header), plaintext, cipher, &[ct.0], trail)
            .map_err(too_large)
    }

    /// [`RecordKey::seal_tls13`] for short ChaCha20-Poly1305 records ([`CHACHA_COPY_MAX`]): the
    /// plaintext and its content type copied into the record, sealed in place, then the tag. A
    /// function of its own: inlined, the compiler computed this path's nonce bytes before the
    /// branch, on every AES-GCM record too.
    #[inline(never)]
    fn seal_tls13_copied(
        &self,
        seq: u64,
        ct: ContentType,
        header: [u8; HEADER_LEN],
        plaintext: &[u8],
        record: &mut [u8],
    ) -> Result<(), CryptoError> {
        let key = self.key.as_ref().ok_or(CryptoError::Unsupported)?;
        let (inner, tag) = record[HEADER_LEN..].split_at_mut(plaintext.len() + 1);
        inner[..plaintext.len()].copy_from_slice(plaintext);
        inner[plaintext.len()] = ct.0;
        let nonce = Nonce::assume_unique_for_key(self.nonce(seq));
        let t = key
            .seal_in_place_separate_tag(nonce, Aad::from(header), inner)
            .map_err(|_| CryptoError::TooLarge(plaintext.len()))?;
        tag.copy_from_slice(t.as_ref());
        Ok(())
    }

    /// A TLS 1.2 record (RFC 5246, section 6.2.3.3; RFC 7905 for ChaCha20-Poly1305) of type `ct`
    /// into `record`, which has its exact length.
    #[inline(never)]
    fn seal_tls12(
        &mut self,
        seq: u64,
        ct: ContentType,
        plaintext: &[u8],
        record: &mut [u8],
    ) -> Result<(), CryptoError> {
        let n = self.nonce(seq);
        let header =
            Header { content_type: ct, version: RECORD_VERSION, len: (record.len() - HEADER_LEN) as u16 }
                .encode();
        let explicit = self.explicit_len();
        let aad = tls12_aad(seq, ct, RECORD_VERSION, plaintext.len());
        record[..HEADER_LEN].copy_from_slice(&header);
        record[HEADER_LEN..HEADER_LEN + explicit].copy_from_slice(&n[NONCE_LEN - explicit..]);
        let (cipher, tag) = record[HEADER_LEN + explicit..].split_at_mut(plaintext.len());
        self.aead()?
            .seal_out_of_place_scatter(
                Nonce::assume_unique_for_key(n),
                Aad::from(aad),
                plaintext,
                cipher,
                &[],
                tag,
            )
            .map_err(|_| CryptoError::TooLarge(plaintext.len()))
    }
}

fn tls12_aad(seq: u64, ct: ContentType, version: u16, len: usize) -> [u8; 13] {
    let mut a = [0u8; 13];
    a[..8].copy_from_slice(&seq.to_be_bytes());
    a[8] = ct.0;
    a[9..11].copy_from_slice(&version.to_be_bytes());
    a[11..].copy_from_slice(&(len as u16).to_be_bytes());
    a
}

/// Heap bytes of rustls's `KernelConnection` after a server handshake (its boxed traffic state
/// with the key schedule, the negotiated parameters, the session's data), measured with a
/// TLS 1.3 handshake by `crates/inline/benches/idle_flows.rs`; a SNI or ALPN adds its length.
pub const KERNEL_CONNECTION_BYTES: usize = 260;

/// The key schedule after the handshake: rustls's, of a server or a client connection, or a
/// server's own TLS 1.3 traffic secrets ([`crate::traffic`]), or nothing (TLS 1.2 has no key
/// update). rustls's connections are boxed so that the compact forms stay small.
pub enum KeySchedule {
    Server(Box<KernelConnection<ServerConnectionData>>),
    /// A client also stores the server's TLS 1.3 session tickets through it.
    Client(Box<KernelConnection<ClientConnectionData>>),
    /// A TLS 1.3 server's traffic secrets, captured and verified at the handover.
    Secrets(Box<TrafficSecrets>),
    /// A TLS 1.2 server: the extracted keys are all it needs.
    Tls12,
}

impl From<KernelConnection<ServerConnectionData>> for KeySchedule {
    fn from(k: KernelConnection<ServerConnectionData>) -> KeySchedule {
        KeySchedule::Server(Box::new(k))
    }
}

impl From<KernelConnection<ClientConnectionData>> for KeySchedule {
    fn from(k: KernelConnection<ClientConnectionData>) -> KeySchedule {
        KeySchedule::Client(Box::new(k))
    }
}

impl KeySchedule {
    /// A server's compact schedule instead of rustls's `kernel`, when `capture` holds the TLS 1.3
    /// traffic secrets of exactly these `secrets` (or the version is TLS 1.2); `kernel` otherwise.
    pub fn compact(
        kernel: KernelConnection<ServerConnectionData>,
        secrets: &ExtractedSecrets,
        capture: &Capture,
    ) -> KeySchedule {
        match Version::from_rustls(kernel.protocol_version()) {
            Ok(Version::Tls12) => KeySchedule::Tls12,
            Ok(v) => match TrafficSecrets::verified(capture, v, &secrets.rx.1, &secrets.tx.1) {
                Some(t) => KeySchedule::Secrets(Box::new(t)),
                None => kernel.into(),
            },
            Err(_) => kernel.into(),
        }
    }

    pub fn protocol_version(&self) -> ProtocolVersion {
        match self {
            KeySchedule::Server(k) => k.protocol_version(),
            KeySchedule::Client(k) => k.protocol_version(),
            KeySchedule::Secrets(_) => ProtocolVersion::TLSv1_3,
            KeySchedule::Tls12 => ProtocolVersion::TLSv1_2,
        }
    }

    /// Whether this end is the TLS client (the peer is a server).
    pub fn is_client(&self) -> bool {
        matches!(self, KeySchedule::Client(_))
    }

    /// Whether rustls's connection is kept (not a compact form).
    pub fn is_rustls(&self) -> bool {
        matches!(self, KeySchedule::Server(_) | KeySchedule::Client(_))
    }

    /// Heap bytes the schedule holds.
    pub fn heap_bytes(&self) -> usize {
        match self {
            KeySchedule::Server(_) | KeySchedule::Client(_) => {
                std::mem::size_of::<KernelConnection<ServerConnectionData>>() + KERNEL_CONNECTION_BYTES
            }
            KeySchedule::Secrets(_) => std::mem::size_of::<TrafficSecrets>(),
            KeySchedule::Tls12 => 0,
        }
    }

    fn update_rx_secret(&mut self) -> Result<(u64, RecordKeyParts), CryptoError> {
        match self {
            KeySchedule::Server(k) => k.update_rx_secret().map_err(key_schedule).map(parts),
            KeySchedule::Client(k) => k.update_rx_secret().map_err(key_schedule).map(parts),
            KeySchedule::Secrets(t) => {
                let (key, len, iv) = t.update_rx().ok_or_else(derive_failed)?;
                Ok((0, RecordKeyParts::Raw(t.suite(), key, len, iv)))
            }
            KeySchedule::Tls12 => Err(CryptoError::PostHandshake(ContentType::HANDSHAKE.0)),
        }
    }

    fn update_tx_secret(&mut self) -> Result<(u64, RecordKeyParts), CryptoError> {
        match self {
            KeySchedule::Server(k) => k.update_tx_secret().map_err(key_schedule).map(parts),
            KeySchedule::Client(k) => k.update_tx_secret().map_err(key_schedule).map(parts),
            KeySchedule::Secrets(t) => {
                let (key, len, iv) = t.update_tx().ok_or_else(derive_failed)?;
                Ok((0, RecordKeyParts::Raw(t.suite(), key, len, iv)))
            }
            KeySchedule::Tls12 => Err(CryptoError::PostHandshake(ContentType::HANDSHAKE.0)),
        }
    }
}

/// A next key as rustls hands it over, or as [`crate::traffic`] derived it.
enum RecordKeyParts {
    Rustls(ConnectionTrafficSecrets),
    Raw(Suite, [u8; 32], usize, [u8; NONCE_LEN]),
}

fn parts((seq, s): (u64, ConnectionTrafficSecrets)) -> (u64, RecordKeyParts) {
    (seq, RecordKeyParts::Rustls(s))
}

fn derive_failed() -> CryptoError {
    CryptoError::KeySchedule("traffic secret update failed".into())
}

impl RecordKeyParts {
    fn key(self, version: Version, seq: u64) -> Result<RecordKey, CryptoError> {
        match self {
            RecordKeyParts::Rustls(s) => RecordKey::new(version, seq, s),
            RecordKeyParts::Raw(suite, key, len, iv) => {
                RecordKey::from_parts(version, suite, &key[..len], iv, seq)
            }
        }
    }
}

/// A server's record layer reduced to what rebuilds it ([`RecordLayer::compact`]): TLS 1.3 keeps
/// its two traffic secrets (the keys and IVs are derived from them again, RFC 8446 §7.3), TLS 1.2
/// the raw keys and IVs; both the two sequence numbers.
pub struct CompactLayer {
    suite: Suite,
    version: Version,
    keys: CompactKeys,
    rx_seq: u64,
    tx_seq: u64,
}

enum CompactKeys {
    Secrets(Box<TrafficSecrets>),
    Raw(Box<RawKeys>),
}

/// TLS 1.2's keys and IVs (receive, transmit); wiped on drop.
struct RawKeys {
    key: [[u8; 32]; 2],
    iv: [[u8; NONCE_LEN]; 2],
    len: u8,
}

impl Drop for RawKeys {
    fn drop(&mut self) {
        self.key = [[0; 32]; 2];
        self.iv = [[0; NONCE_LEN]; 2];
        // Keeps the wipe of memory about to be freed from being optimised away.
        std::hint::black_box(&mut self.key);
        std::hint::black_box(&mut self.iv);
    }
}

impl std::fmt::Debug for CompactLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a key or secret.
        f.debug_struct("CompactLayer").field("rx_seq", &self.rx_seq).field("tx_seq", &self.tx_seq).finish()
    }
}

impl CompactLayer {
    /// Next sequence numbers (receive, transmit).
    pub fn seqs(&self) -> (u64, u64) {
        (self.rx_seq, self.tx_seq)
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// Heap bytes held beyond its own size.
    pub fn heap_bytes(&self) -> usize {
        match &self.keys {
            CompactKeys::Secrets(_) => std::mem::size_of::<TrafficSecrets>(),
            CompactKeys::Raw(_) => std::mem::size_of::<RawKeys>(),
        }
    }

    /// The record layer again, its AEAD contexts built on the next record (as after
    /// [`RecordLayer::park`]).
    pub fn resume(self) -> Result<RecordLayer, CryptoError> {
        let CompactLayer { suite, version, keys, rx_seq, tx_seq } = self;
        let key = |key: &[u8], iv, seq| RecordKey::unbuilt(version, suite, key, iv, seq);
        match keys {
            CompactKeys::Secrets(t) => {
                let (rk, rlen, riv) = t.rx_keys().ok_or_else(derive_failed)?;
                let (tk, tlen, tiv) = t.tx_keys().ok_or_else(derive_failed)?;
                Ok(RecordLayer {
                    version,
                    rx: key(&rk[..rlen], riv, rx_seq)?,
                    tx: key(&tk[..tlen], tiv, tx_seq)?,
                    kernel: KeySchedule::Secrets(t),
                })
            }
            CompactKeys::Raw(r) => {
                let len = usize::from(r.len);
                Ok(RecordLayer {
                    version,
                    rx: key(&r.key[0][..len], r.iv[0], rx_seq)?,
                    tx: key(&r.key[1][..len], r.iv[1], tx_seq)?,
                    kernel: KeySchedule::Tls12,
                })
            }
        }
    }
}

/// The record layer of one flow: both keys and rustls's key schedule for updates.
pub struct RecordLayer {
    version: Version,
    rx: RecordKey,
    tx: RecordKey,
    kernel: KeySchedule,
}

impl std::fmt::Debug for RecordLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordLayer").field("rx", &self.rx).field("tx", &self.tx).finish()
    }
}

impl RecordLayer {
    pub fn new(
        secrets: ExtractedSecrets,
        kernel: impl Into<KeySchedule>,
    ) -> Result<RecordLayer, CryptoError> {
        let kernel = kernel.into();
        let version = Version::from_rustls(kernel.protocol_version())?;
        let (rx_seq, rx) = secrets.rx;
        let (tx_seq, tx) = secrets.tx;
        Ok(RecordLayer {
            version,
            rx: RecordKey::new(version, rx_seq, rx)?,
            tx: RecordKey::new(version, tx_seq, tx)?,
            kernel,
        })
    }

    #[inline]
    pub fn version(&self) -> Version {
        self.version
    }

    /// Whether this end is the TLS client.
    pub fn is_client(&self) -> bool {
        self.kernel.is_client()
    }

    /// A client's TLS 1.3 NewSessionTicket body (after its 4-byte header): stored in the
    /// session cache of the client config for later resumption. A server has none to take.
    pub fn new_session_ticket(&mut self, body: &[u8]) -> Result<(), CryptoError> {
        match &mut self.kernel {
            KeySchedule::Client(k) => k.handle_new_session_ticket(body).map_err(key_schedule),
            KeySchedule::Server(_) | KeySchedule::Secrets(_) | KeySchedule::Tls12 => {
                Err(CryptoError::PostHandshake(NEW_SESSION_TICKET))
            }
        }
    }

    /// Outer bytes before the first plaintext byte (both directions share the suite).
    #[inline]
    pub fn head(&self) -> usize {
        self.tx.head()
    }

    /// Total expansion of one record.
    #[inline]
    pub fn overhead(&self) -> usize {
        self.tx.overhead()
    }

    /// Next sequence numbers (receive, transmit), for the connection table.
    #[inline]
    pub fn seqs(&self) -> (u64, u64) {
        (self.rx.seq(), self.tx.seq())
    }

    /// Drops both AEAD contexts, keeping the raw keys (see [`RecordKey::park`]).
    pub fn park(&mut self) {
        self.rx.park();
        self.tx.park();
    }

    /// Whether [`RecordLayer::compact`] would succeed: a compact key schedule, one suite.
    pub fn is_compactable(&self) -> bool {
        matches!(self.kernel, KeySchedule::Secrets(_) | KeySchedule::Tls12)
            && self.rx.suite() == self.tx.suite()
    }

    /// The compact form of a server's layer: its secrets (TLS 1.3) or raw keys (TLS 1.2) and
    /// sequence numbers, the contexts dropped. The layer itself back when it keeps rustls's key
    /// schedule (no compact form of that).
    pub fn compact(self) -> Result<CompactLayer, Box<RecordLayer>> {
        let (suite, version) = (self.tx.suite(), self.version);
        if !self.is_compactable() {
            return Err(Box::new(self));
        }
        let (rx_seq, tx_seq) = self.seqs();
        let RecordLayer { rx, tx, kernel, .. } = self;
        let keys = match kernel {
            // A new allocation: made at the handshake, among its short-lived allocations, the
            // secrets would keep their memory resident as long as the compact form lives.
            KeySchedule::Secrets(t) => CompactKeys::Secrets(t.reallocated()),
            KeySchedule::Tls12 => CompactKeys::Raw(Box::new(RawKeys {
                key: [rx.raw.0, tx.raw.0],
                iv: [rx.iv, tx.iv],
                len: rx.raw.1 as u8,
            })),
            kernel => return Err(Box::new(RecordLayer { version, rx, tx, kernel })),
        };
        Ok(CompactLayer { suite, version, keys, rx_seq, tx_seq })
    }

    /// Whether both AEAD contexts are dropped (until the next record).
    pub fn parked(&self) -> bool {
        self.rx.key.is_none() && self.tx.key.is_none()
    }

    /// Heap bytes held beyond the layer's own size: the keys' contexts while built and rustls's
    /// key schedule ([`KERNEL_CONNECTION_BYTES`]).
    pub fn heap_bytes(&self) -> usize {
        self.rx.heap_bytes() + self.tx.heap_bytes() + self.kernel.heap_bytes()
    }

    /// Whether rustls's key schedule is kept (not the compact one of [`crate::traffic`]).
    pub fn keeps_rustls_schedule(&self) -> bool {
        self.kernel.is_rustls()
    }

    /// Decrypts a client record in place: see [`RecordKey::decrypt`]. What it means is
    /// [`crate::session`]'s business.
    #[inline]
    pub fn decrypt(&mut self, header: Header, body: &mut [u8]) -> Result<(Range<usize>, u64), CryptoError> {
        self.rx.decrypt(header, body)
    }

    /// Starts opening a client record piece by piece (cut-through release); once
    /// [`StreamOpener::finish`] verified it, [`crate::session`] interprets the content.
    pub fn open_stream(&mut self, header: Header) -> Result<StreamOpener, CryptoError> {
        self.rx.open_stream(header)
    }

    /// Checks a streamed client record's tag: see [`RecordKey::finish_stream`].
    pub fn finish_stream(&mut self, opener: StreamOpener) -> Result<(), CryptoError> {
        self.rx.finish_stream(opener)
    }

    /// TLS 1.3: the client's KeyUpdate was received whole; the receive key moves on.
    pub fn update_rx(&mut self) -> Result<(), CryptoError> {
        if self.version != Version::Tls13 {
            return Err(CryptoError::PostHandshake(ContentType::HANDSHAKE.0));
        }
        let (seq, next) = self.kernel.update_rx_secret()?;
        self.rx = next.key(self.version, seq)?;
        Ok(())
    }

    /// Tests: both sequence numbers set (the wrap at 2^64 cannot be reached otherwise).
    #[cfg(test)]
    pub(crate) fn set_seqs(&mut self, rx: u64, tx: u64) {
        self.rx.seq = rx;
        self.tx.seq = tx;
    }

    /// Seals server plaintext as one application-data record.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<u64, CryptoError> {
        self.tx.seal(ContentType::APPLICATION_DATA, plaintext, out)
    }

    /// As [`RecordLayer::seal`] over the bytes `out` holds (see [`RecordKey::seal_over`]).
    pub fn seal_over(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<u64, CryptoError> {
        self.tx.seal_over(ContentType::APPLICATION_DATA, plaintext, out)
    }

    /// As [`RecordLayer::seal`] at `out[start..]`, keeping what `out` holds beyond the record
    /// (see [`RecordKey::seal_within`]); returns the record's end.
    pub fn seal_within(
        &mut self,
        plaintext: &[u8],
        out: &mut Vec<u8>,
        start: usize,
    ) -> Result<usize, CryptoError> {
        self.tx.seal_within(ContentType::APPLICATION_DATA, plaintext, out, start)
    }

    /// Seals an alert (close_notify is `[1, 0]`, bad_record_mac `[2, 20]`).
    pub fn seal_alert(&mut self, alert: [u8; 2], out: &mut Vec<u8>) -> Result<u64, CryptoError> {
        self.tx.seal(ContentType::ALERT, &alert, out)
    }

    /// TLS 1.3: sends a KeyUpdate (update_not_requested) under the current key, then moves the
    /// transmit key on.
    pub fn send_key_update(&mut self, out: &mut Vec<u8>) -> Result<u64, CryptoError> {
        let seq = self.tx.seal(ContentType::HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], out)?;
        let (next, key) = self.kernel.update_tx_secret()?;
        self.tx = key.key(self.version, next)?;
        Ok(seq)
    }
}

const KEY_UPDATE: u8 = 24;
const NEW_SESSION_TICKET: u8 = 4;

fn key_schedule(e: rustls::Error) -> CryptoError {
    CryptoError::KeySchedule(e.to_string())
}

//! The 8-byte record header: LENGTH (of the payload after the header), TYPE, SESSION.

use super::FrameType;

type Field = std::ops::Range<usize>;

const LENGTH: Field = 0..4;
const TYPE: Field = 4..6;
const SESSION: Field = 6..8;

/// Bytes in every header.
pub const HEADER_LEN: usize = 8;

/// A view of a header at the start of a buffer; after [`Header::new_checked`] no accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps `buffer` if it holds at least a whole header.
    pub fn new_checked(buffer: T) -> Option<Self> {
        (buffer.as_ref().len() >= HEADER_LEN).then_some(Header { buffer })
    }

    fn field<const N: usize>(&self, f: Field) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buffer.as_ref()[f]);
        out
    }

    /// Payload length (bytes following the header).
    pub fn length(&self) -> u32 {
        u32::from_be_bytes(self.field(LENGTH))
    }

    pub fn frame_type(&self) -> FrameType {
        FrameType(u16::from_be_bytes(self.field(TYPE)))
    }

    pub fn session(&self) -> u16 {
        u16::from_be_bytes(self.field(SESSION))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    pub fn set_length(&mut self, len: u32) {
        self.buffer.as_mut()[LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    pub fn set_frame_type(&mut self, ty: FrameType) {
        self.buffer.as_mut()[TYPE].copy_from_slice(&ty.0.to_be_bytes());
    }

    pub fn set_session(&mut self, session: u16) {
        self.buffer.as_mut()[SESSION].copy_from_slice(&session.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_big_endian_at_seed_offsets() {
        let mut raw = [0u8; HEADER_LEN];
        let mut h = Header::new_checked(&mut raw[..]).unwrap();
        h.set_length(0x0102_0304);
        h.set_frame_type(FrameType::ACK);
        h.set_session(0xBEEF);
        assert_eq!(raw, [1, 2, 3, 4, 0, 5, 0xBE, 0xEF]);
        let h = Header::new_checked(&raw[..]).unwrap();
        assert_eq!((h.length(), h.frame_type(), h.session()), (0x0102_0304, FrameType::ACK, 0xBEEF));
        assert!(Header::new_checked(&raw[..7]).is_none());
    }
}

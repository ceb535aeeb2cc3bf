//! Cutting a text prologue into lines, with a length limit.

use crate::ErrorKind;

#[derive(Debug, Default)]
pub(crate) struct LineBuf {
    buf: Vec<u8>,
    max: usize,
}

impl LineBuf {
    pub(crate) fn new(max: usize) -> Self {
        LineBuf { buf: Vec::new(), max }
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole line without its CRLF (or bare LF); `None` until one has arrived. A line
    /// longer than the limit is an error as soon as it is known to be.
    pub(crate) fn next_line(&mut self) -> Result<Option<Vec<u8>>, ErrorKind> {
        match self.buf.iter().position(|&b| b == b'\n') {
            Some(end) if end < self.max => {
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Ok(Some(line))
            }
            Some(_) => Err(ErrorKind::LineTooLong(self.max)),
            None if self.buf.len() >= self.max => Err(ErrorKind::LineTooLong(self.max)),
            None => Ok(None),
        }
    }

    /// Bytes after the last whole line.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf
    }

    pub(crate) fn clear(&mut self) {
        self.buf.clear();
    }
}

/// The first word and the rest with its leading blanks removed.
pub(crate) fn word(line: &[u8]) -> (&[u8], &[u8]) {
    let end = line.iter().position(|&b| b == b' ' || b == b'\t').unwrap_or(line.len());
    let rest = &line[end..];
    let skip = rest.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    (&line[..end], &rest[skip..])
}

/// The first word upper-cased (a command verb), and the rest.
pub(crate) fn verb(line: &[u8]) -> (String, &[u8]) {
    let (first, rest) = word(line);
    (String::from_utf8_lossy(first).to_ascii_uppercase(), rest)
}

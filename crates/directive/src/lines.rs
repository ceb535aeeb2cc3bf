//! Newline-delimited framing with a length limit: a peer that never sends a newline cannot make
//! the reader hold more than [`MAX_LINE`](crate::MAX_LINE) bytes.

use crate::message::DirectiveError;
use crate::MAX_LINE;

/// Bytes received and not yet cut into lines.
#[derive(Debug, Default)]
pub struct Lines {
    buf: Vec<u8>,
    /// How far `buf` was already searched for a newline.
    searched: usize,
}

impl Lines {
    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete line without its `\n` (a trailing `\r` is dropped too), `None` until one
    /// is complete, or an error once a line exceeds the limit (the stream cannot continue).
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, DirectiveError> {
        match self.buf[self.searched..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let end = self.searched + i;
                if end > MAX_LINE {
                    return Err(DirectiveError::LineTooLong);
                }
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.searched = 0;
                Ok(Some(line))
            }
            None if self.buf.len() > MAX_LINE => Err(DirectiveError::LineTooLong),
            None => {
                self.searched = self.buf.len();
                Ok(None)
            }
        }
    }

    /// Bytes held: never more than one line's limit plus one read.
    pub fn held(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_cut_anywhere_come_out_whole() {
        let mut l = Lines::default();
        l.push(b"{\"op\":");
        assert_eq!(l.next_line().unwrap(), None);
        l.push(b"\"peer\"}\r\n{}\nx");
        assert_eq!(l.next_line().unwrap().unwrap(), b"{\"op\":\"peer\"}");
        assert_eq!(l.next_line().unwrap().unwrap(), b"{}");
        assert_eq!(l.next_line().unwrap(), None);
        assert_eq!(l.held(), 1);
    }

    #[test]
    fn a_line_without_end_is_refused_at_the_limit() {
        let mut l = Lines::default();
        l.push(&vec![b'a'; MAX_LINE + 1]);
        assert!(matches!(l.next_line(), Err(DirectiveError::LineTooLong)));
    }
}

//! The little BER that LDAP's StartTLS needs: reading one LDAPMessage's header and fields, and
//! writing the two responses tlsgate sends.

use crate::ErrorKind;

/// Largest LDAPMessage accepted before TLS; StartTLS requests and responses are under 100 bytes.
pub(crate) const MAX_MESSAGE: usize = 16 * 1024;

pub(crate) const STARTTLS_OID: &[u8] = b"1.3.6.1.4.1.1466.20037";
pub(crate) const NOTICE_OF_DISCONNECTION_OID: &[u8] = b"1.3.6.1.4.1.1466.20036";
pub(crate) const EXTENDED_REQUEST: u8 = 0x77;
pub(crate) const EXTENDED_RESPONSE: u8 = 0x78;

/// The length of the whole message (tag, length, contents) at the start of `buf`, `None` until
/// its header has arrived.
pub(crate) fn message_len(buf: &[u8]) -> Result<Option<usize>, ErrorKind> {
    match buf.first() {
        None => return Ok(None),
        Some(0x30) => {}
        Some(t) => return Err(ErrorKind::Malformed(format!("LDAP message starts with tag {t:#04x}"))),
    }
    let Some((len, header)) = length(&buf[1..])? else {
        return Ok(None);
    };
    let total = 1 + header + len;
    if total > MAX_MESSAGE {
        return Err(ErrorKind::MessageTooLong(total, MAX_MESSAGE));
    }
    Ok(Some(total))
}

/// A definite length (short or long form, at most 4 bytes) and the bytes it took.
fn length(buf: &[u8]) -> Result<Option<(usize, usize)>, ErrorKind> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first < 0x80 {
        return Ok(Some((first as usize, 1)));
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 4 {
        return Err(ErrorKind::Malformed("BER length indefinite or too long".into()));
    }
    let Some(bytes) = buf.get(1..=n) else {
        return Ok(None);
    };
    Ok(Some((bytes.iter().fold(0usize, |acc, &b| acc << 8 | b as usize), 1 + n)))
}

/// Reads the elements of one complete constructed value in order.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    /// The next element: its tag and contents.
    pub(crate) fn next(&mut self) -> Result<(u8, &'a [u8]), ErrorKind> {
        let bad = || ErrorKind::Malformed("truncated BER element".into());
        let (&tag, rest) = self.data.split_first().ok_or_else(bad)?;
        let (len, header) = length(rest)?.ok_or_else(bad)?;
        let contents = rest.get(header..header + len).ok_or_else(bad)?;
        self.data = &rest[header + len..];
        Ok((tag, contents))
    }

    /// The next element, which must carry `tag`.
    pub(crate) fn expect(&mut self, tag: u8, what: &str) -> Result<&'a [u8], ErrorKind> {
        match self.next()? {
            (t, contents) if t == tag => Ok(contents),
            (t, _) => Err(ErrorKind::Malformed(format!("{what}: tag {t:#04x}, expected {tag:#04x}"))),
        }
    }
}

/// A non-negative INTEGER's value (messageID, resultCode, at most 4 bytes).
pub(crate) fn integer(contents: &[u8]) -> Result<u32, ErrorKind> {
    if contents.is_empty() || contents.len() > 5 || contents[0] & 0x80 != 0 {
        return Err(ErrorKind::Malformed("bad INTEGER".into()));
    }
    let value = contents.iter().fold(0u64, |acc, &b| acc << 8 | b as u64);
    u32::try_from(value).map_err(|_| ErrorKind::Malformed("INTEGER out of range".into()))
}

pub(crate) fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u32).to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
    out
}

fn integer_bytes(value: u32) -> Vec<u8> {
    let mut bytes = value.to_be_bytes().to_vec();
    while bytes.len() > 1 && bytes[0] == 0 && bytes[1] & 0x80 == 0 {
        bytes.remove(0);
    }
    if bytes[0] & 0x80 != 0 {
        bytes.insert(0, 0);
    }
    bytes
}

/// An LDAPMessage carrying an ExtendedResponse.
pub(crate) fn extended_response(message_id: u32, result: u8, diagnostic: &[u8], name: &[u8]) -> Vec<u8> {
    let mut op = tlv(0x0a, &[result]);
    op.extend(tlv(0x04, b""));
    op.extend(tlv(0x04, diagnostic));
    op.extend(tlv(0x8a, name));
    let mut msg = tlv(0x02, &integer_bytes(message_id));
    msg.extend(tlv(EXTENDED_RESPONSE, &op));
    tlv(0x30, &msg)
}

/// An LDAPMessage carrying the StartTLS ExtendedRequest.
pub(crate) fn starttls_request(message_id: u32) -> Vec<u8> {
    let mut msg = tlv(0x02, &integer_bytes(message_id));
    msg.extend(tlv(EXTENDED_REQUEST, &tlv(0x80, STARTTLS_OID)));
    tlv(0x30, &msg)
}

//! PostgreSQL's and LDAP's server side before TLS: one binary message at a time.

use super::Outcome;
use crate::ber::{self, Reader};
use crate::postgres::{self, CANCEL_REQUEST, GSSENC_REQUEST, MAX_STARTUP, SSL_REQUEST};
use crate::ErrorKind;

/// Answers the first whole message in `buf` and removes it; `None` until one has arrived.
pub(super) fn postgres(buf: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<Option<Outcome>, ErrorKind> {
    let Some((len, code)) = postgres::header(buf) else {
        return Ok(None);
    };
    if len < 8 {
        return Err(ErrorKind::Malformed(format!("PostgreSQL message length {len}")));
    }
    if len > MAX_STARTUP {
        return Err(ErrorKind::MessageTooLong(len, MAX_STARTUP));
    }
    if buf.len() < len {
        return Ok(None);
    }
    buf.drain(..len);
    Ok(Some(match code {
        SSL_REQUEST if len == 8 => {
            out.push(b'S');
            Outcome::StartTls
        }
        GSSENC_REQUEST if len == 8 => {
            // No GSSAPI encryption here; libpq then tries SSL.
            out.push(b'N');
            Outcome::Refused
        }
        // A cancel key is meaningless before a session: close, as the server would.
        CANCEL_REQUEST => Outcome::Close,
        _ => {
            out.extend(postgres::fatal("28000", "SSL required"));
            Outcome::Close
        }
    }))
}

/// Answers the first whole LDAPMessage in `buf` and removes it; `None` until one has arrived.
pub(super) fn ldap(buf: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<Option<Outcome>, ErrorKind> {
    let Some(len) = ber::message_len(buf)? else {
        return Ok(None);
    };
    if buf.len() < len {
        return Ok(None);
    }
    let message: Vec<u8> = buf.drain(..len).collect();
    let mut outer = Reader::new(&message);
    let mut fields = Reader::new(outer.expect(0x30, "LDAPMessage")?);
    let id = ber::integer(fields.expect(0x02, "messageID")?)?;
    let (op, contents) = fields.next()?;
    if op == ber::EXTENDED_REQUEST && id != 0 {
        let name = Reader::new(contents).expect(0x80, "requestName")?;
        if name == ber::STARTTLS_OID {
            out.extend(ber::extended_response(id, 0, b"", ber::STARTTLS_OID));
            return Ok(Some(Outcome::StartTls));
        }
    }
    // Anything else needs the TLS this listener insists on (RFC 4511 section 4.4.1).
    out.extend(ber::extended_response(
        0,
        8, // strongerAuthRequired
        b"StartTLS required",
        ber::NOTICE_OF_DISCONNECTION_OID,
    ));
    Ok(Some(Outcome::Close))
}

//! PostgreSQL's and LDAP's client side: send the request, read the one answer.

use super::{ClientSide, Phase};
use crate::ber::{self, Reader};
use crate::error::printable;
use crate::{postgres, Error, ErrorKind, Protocol};

/// messageID of tlsgate's StartTLS request; the client's own session starts after TLS.
const MESSAGE_ID: u32 = 1;

pub(super) fn open(side: &mut ClientSide) {
    match side.protocol {
        Protocol::Postgres => side.output.extend_from_slice(&postgres::ssl_request()),
        _ => side.output.extend(ber::starttls_request(MESSAGE_ID)),
    }
    side.phase = Phase::Upgrade;
}

/// Reads the answer once whole; `true` when the upgrade was agreed.
pub(super) fn answer(side: &mut ClientSide) -> Result<bool, Error> {
    if !side.output.is_empty() && !side.message.is_empty() {
        return Err(Error::backend(ErrorKind::Unsolicited(side.message.len())));
    }
    let agreed = match side.protocol {
        Protocol::Postgres => postgres_answer(&mut side.message),
        _ => ldap_answer(&mut side.message),
    }
    .map_err(Error::backend)?;
    if agreed {
        side.phase = Phase::Done;
    }
    Ok(agreed)
}

fn postgres_answer(buf: &mut Vec<u8>) -> Result<bool, ErrorKind> {
    let Some(&first) = buf.first() else {
        return Ok(false);
    };
    match first {
        b'S' => {
            buf.remove(0);
            Ok(true)
        }
        b'N' => Err(ErrorKind::Refused("answered N to SSLRequest: the server has no TLS".into())),
        b'E' => {
            // An old server's ErrorResponse; its text is enough to go on.
            let text: Vec<u8> = buf.iter().skip(5).copied().take(300).collect();
            Err(ErrorKind::Refused(format!("answered SSLRequest with an error: {:?}", printable(&text))))
        }
        other => Err(ErrorKind::Malformed(format!("answered SSLRequest with byte {other:#04x}"))),
    }
}

fn ldap_answer(buf: &mut Vec<u8>) -> Result<bool, ErrorKind> {
    let Some(len) = ber::message_len(buf)? else {
        return Ok(false);
    };
    if buf.len() < len {
        return Ok(false);
    }
    let message: Vec<u8> = buf.drain(..len).collect();
    let mut fields = Reader::new(Reader::new(&message).expect(0x30, "LDAPMessage")?);
    let id = ber::integer(fields.expect(0x02, "messageID")?)?;
    let op = fields.expect(ber::EXTENDED_RESPONSE, "ExtendedResponse")?;
    let mut op = Reader::new(op);
    let result = ber::integer(op.expect(0x0a, "resultCode")?)?;
    op.expect(0x04, "matchedDN")?;
    let diagnostic = printable(op.expect(0x04, "diagnosticMessage")?);
    if id == 0 {
        return Err(ErrorKind::Refused(format!(
            "notice of disconnection, resultCode {result}: {diagnostic:?}"
        )));
    }
    if id != MESSAGE_ID {
        return Err(ErrorKind::Malformed(format!("answer to messageID {id}, not {MESSAGE_ID}")));
    }
    if result != 0 {
        return Err(ErrorKind::Refused(format!("resultCode {result}: {diagnostic:?}")));
    }
    Ok(true)
}

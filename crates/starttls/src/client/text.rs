//! The line protocols' client side: read the greeting, (SMTP) EHLO, ask for TLS.

use super::{ClientSide, Phase};
use crate::error::printable;
use crate::greeting::{Reply, MAX_REPLY_LINES};
use crate::{ErrorKind, Protocol};

/// IMAP tag of the one command tlsgate sends.
const TAG: &str = "tg1";

/// Takes one upstream line (without its line end).
pub(super) fn line(side: &mut ClientSide, line: &[u8]) -> Result<(), ErrorKind> {
    if side.protocol == Protocol::Imap && side.phase == Phase::Upgrade {
        return imap_answer(side, line);
    }
    if !side.reply.line(line)? {
        return Ok(());
    }
    let reply = std::mem::replace(&mut side.reply, Reply::new(side.protocol));
    match side.phase {
        Phase::Greeting => {
            if !reply.greeting_ok() {
                return Err(ErrorKind::Refused(format!(
                    "greeting is not a welcome: {:?}",
                    reply.printable()
                )));
            }
            side.greeting = match side.protocol {
                Protocol::Imap => strip_capability(&reply.text),
                _ => reply.text,
            };
            let command = match side.protocol {
                Protocol::Smtp => {
                    side.phase = Phase::Ehlo;
                    format!("EHLO {}\r\n", side.name)
                }
                Protocol::Imap => format!("{TAG} STARTTLS\r\n"),
                Protocol::Pop3 => "STLS\r\n".into(),
                _ => "AUTH TLS\r\n".into(),
            };
            if side.phase == Phase::Greeting {
                side.phase = Phase::Upgrade;
            }
            side.output.extend_from_slice(command.as_bytes());
        }
        Phase::Ehlo => {
            if reply.code() != b"250" {
                return Err(ErrorKind::Refused(format!("EHLO answered {:?}", reply.printable())));
            }
            let offered = reply.text.split(|&b| b == b'\n').skip(1).any(|l| {
                let keyword = l.get(4..).unwrap_or(b"");
                let end = keyword.iter().position(|b| b.is_ascii_whitespace()).unwrap_or(keyword.len());
                keyword[..end].eq_ignore_ascii_case(b"STARTTLS")
            });
            if !offered {
                return Err(ErrorKind::Refused(format!(
                    "STARTTLS not offered in the EHLO reply: {:?}",
                    reply.printable()
                )));
            }
            side.phase = Phase::Upgrade;
            side.output.extend_from_slice(b"STARTTLS\r\n");
        }
        Phase::Upgrade => {
            let agreed = match side.protocol {
                Protocol::Smtp => reply.code() == b"220",
                Protocol::Ftp => reply.code() == b"234",
                _ => reply.text.starts_with(b"+OK"),
            };
            if !agreed {
                return Err(ErrorKind::Refused(reply.printable()));
            }
            side.phase = Phase::Done;
        }
        Phase::Done => {}
    }
    Ok(())
}

/// IMAP: untagged lines (a CAPABILITY some servers volunteer) are passed over until the
/// tagged answer to STARTTLS.
fn imap_answer(side: &mut ClientSide, line: &[u8]) -> Result<(), ErrorKind> {
    if line.starts_with(b"* ") {
        side.untagged += 1;
        if side.untagged > MAX_REPLY_LINES {
            return Err(ErrorKind::Malformed("too many untagged lines".into()));
        }
        return Ok(());
    }
    let Some(status) = line.strip_prefix(format!("{TAG} ").as_bytes()) else {
        return Err(ErrorKind::Malformed(format!("unexpected line {:?}", printable(line))));
    };
    if status.len() >= 2 && status[..2].eq_ignore_ascii_case(b"OK") {
        side.phase = Phase::Done;
        return Ok(());
    }
    Err(ErrorKind::Refused(printable(line)))
}

/// `* OK [CAPABILITY …] text` becomes `* OK text`: the capabilities change once TLS is up, and
/// the client must ask again (RFC 2595 section 3.1).
fn strip_capability(greeting: &[u8]) -> Vec<u8> {
    let Some(open) = greeting.iter().position(|&b| b == b'[') else {
        return greeting.to_vec();
    };
    let code = &greeting[open + 1..];
    let is_capability = code.len() >= 10 && code[..10].eq_ignore_ascii_case(b"CAPABILITY");
    let Some(close) = code.iter().position(|&b| b == b']') else {
        return greeting.to_vec();
    };
    if !is_capability {
        return greeting.to_vec();
    }
    let mut after = open + 1 + close + 1;
    if greeting.get(after) == Some(&b' ') {
        after += 1;
    }
    [&greeting[..open], &greeting[after..]].concat()
}

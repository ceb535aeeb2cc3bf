//! The line protocols' server replies before TLS: what RFC 3207, 2595 and 4217 servers say.

use super::Outcome;
use crate::lines::{verb, word};
use crate::Protocol;

pub(super) fn greeting(protocol: Protocol, host: &str, out: &mut Vec<u8>) {
    let text = match protocol {
        Protocol::Smtp => format!("220 {host} ESMTP ready\r\n"),
        Protocol::Imap => format!("* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] {host} ready\r\n"),
        Protocol::Pop3 => format!("+OK {host} POP3 ready\r\n"),
        Protocol::Ftp => format!("220 {host} FTP ready\r\n"),
        Protocol::Postgres | Protocol::Ldap => return,
    };
    out.extend_from_slice(text.as_bytes());
}

/// Answers one command line (without its line end).
pub(super) fn answer(protocol: Protocol, host: &str, line: &[u8], out: &mut Vec<u8>) -> Outcome {
    let (reply, outcome) = match protocol {
        Protocol::Smtp => smtp(host, line),
        Protocol::Imap => imap(host, line),
        Protocol::Pop3 => pop3(host, line),
        _ => ftp(line),
    };
    out.extend_from_slice(reply.as_bytes());
    outcome
}

fn smtp(host: &str, line: &[u8]) -> (String, Outcome) {
    let (verb, rest) = verb(line);
    match verb.as_str() {
        // No other extension: the backend announces its own after TLS, when the client must
        // send EHLO again (RFC 3207 section 4.2).
        "EHLO" => (format!("250-{host}\r\n250 STARTTLS\r\n"), Outcome::Answered),
        "HELO" => (format!("250 {host}\r\n"), Outcome::Answered),
        "NOOP" | "RSET" => ("250 2.0.0 OK\r\n".into(), Outcome::Answered),
        "QUIT" => (format!("221 2.0.0 {host} closing connection\r\n"), Outcome::Close),
        "STARTTLS" if rest.is_empty() => ("220 2.0.0 Ready to start TLS\r\n".into(), Outcome::StartTls),
        "STARTTLS" => ("501 5.5.4 Syntax error (no parameters allowed)\r\n".into(), Outcome::Refused),
        _ => ("530 5.7.0 Must issue a STARTTLS command first\r\n".into(), Outcome::Refused),
    }
}

fn imap(host: &str, line: &[u8]) -> (String, Outcome) {
    let (tag, rest) = word(line);
    let tag = String::from_utf8_lossy(tag);
    // The tag is echoed back, so only an atom-like one: no spaces, controls or specials.
    let tag_ok = !tag.is_empty()
        && tag.len() <= 64
        && tag.bytes().all(|b| b.is_ascii_graphic() && !b"*+(){%\"\\]".contains(&b));
    if !tag_ok {
        return ("* BAD Invalid tag\r\n".into(), Outcome::Refused);
    }
    let (command, _) = verb(rest);
    match command.as_str() {
        "CAPABILITY" => (
            format!("* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n{tag} OK CAPABILITY completed\r\n"),
            Outcome::Answered,
        ),
        "NOOP" => (format!("{tag} OK NOOP completed\r\n"), Outcome::Answered),
        "LOGOUT" => (format!("* BYE {host} logging out\r\n{tag} OK LOGOUT completed\r\n"), Outcome::Close),
        "STARTTLS" => (format!("{tag} OK Begin TLS negotiation now\r\n"), Outcome::StartTls),
        _ => (format!("{tag} BAD Must issue STARTTLS first\r\n"), Outcome::Refused),
    }
}

fn pop3(host: &str, line: &[u8]) -> (String, Outcome) {
    match verb(line).0.as_str() {
        "CAPA" => ("+OK Capability list follows\r\nSTLS\r\n.\r\n".into(), Outcome::Answered),
        "NOOP" => ("+OK\r\n".into(), Outcome::Answered),
        "QUIT" => (format!("+OK {host} closing connection\r\n"), Outcome::Close),
        "STLS" => ("+OK Begin TLS negotiation\r\n".into(), Outcome::StartTls),
        _ => ("-ERR Must issue STLS first\r\n".into(), Outcome::Refused),
    }
}

fn ftp(line: &[u8]) -> (String, Outcome) {
    let (verb, rest) = verb(line);
    match verb.as_str() {
        "FEAT" => ("211-Features:\r\n AUTH TLS\r\n211 End\r\n".into(), Outcome::Answered),
        "NOOP" => ("200 NOOP ok\r\n".into(), Outcome::Answered),
        "QUIT" => ("221 Goodbye\r\n".into(), Outcome::Close),
        "AUTH" if rest.eq_ignore_ascii_case(b"TLS") || rest.eq_ignore_ascii_case(b"TLS-C") => {
            ("234 AUTH TLS successful\r\n".into(), Outcome::StartTls)
        }
        "AUTH" => ("504 Only AUTH TLS is supported\r\n".into(), Outcome::Refused),
        _ => ("530 Please login with AUTH TLS first\r\n".into(), Outcome::Refused),
    }
}

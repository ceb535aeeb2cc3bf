//! The protocols with a STARTTLS prologue.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// RFC 3207 `STARTTLS`.
    Smtp,
    /// RFC 2595 `STARTTLS`.
    Imap,
    /// RFC 2595 `STLS`.
    Pop3,
    /// RFC 4217 `AUTH TLS`, control channel only.
    Ftp,
    /// `SSLRequest`.
    Postgres,
    /// StartTLS extended operation (RFC 4511 section 4.14).
    Ldap,
}

impl Protocol {
    pub const ALL: [Protocol; 6] =
        [Protocol::Smtp, Protocol::Imap, Protocol::Pop3, Protocol::Ftp, Protocol::Postgres, Protocol::Ldap];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Smtp => "smtp",
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
            Protocol::Ftp => "ftp",
            Protocol::Postgres => "postgres",
            Protocol::Ldap => "ldap",
        }
    }

    /// The server greets first (SMTP, IMAP, POP3, FTP); otherwise the client opens.
    pub fn server_speaks_first(self) -> bool {
        matches!(self, Protocol::Smtp | Protocol::Imap | Protocol::Pop3 | Protocol::Ftp)
    }

    /// Longest prologue line accepted, line end included: SMTP's 512 of RFC 5321, more room for
    /// the others (IMAP capability lines run long).
    pub(crate) fn max_line(self) -> usize {
        match self {
            Protocol::Smtp => 512,
            Protocol::Pop3 | Protocol::Ftp => 1024,
            Protocol::Imap => 8192,
            Protocol::Postgres | Protocol::Ldap => 0,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown STARTTLS protocol {s:?} (smtp, imap, pop3, ftp, postgres, ldap)"))
    }
}

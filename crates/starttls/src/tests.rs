//! The prologues of each protocol, both sides, against scripted peers and each other.

mod client;
mod pair;
mod server;

use crate::{Error, ErrorKind, ServerSide, Step};

/// Feeds `input` and returns what the machine answered, as text.
fn feed(s: &mut ServerSide, input: &[u8]) -> (Result<(), Error>, String) {
    let r = s.receive(input);
    (r, String::from_utf8_lossy(&s.take_output()).into_owned())
}

fn kind(r: Result<(), Error>) -> ErrorKind {
    r.expect_err("an error").kind
}

#[test]
fn protocol_names_round_trip() {
    for p in crate::Protocol::ALL {
        assert_eq!(p.to_string().parse::<crate::Protocol>().unwrap(), p);
    }
    assert_eq!("SMTP".parse::<crate::Protocol>().unwrap(), crate::Protocol::Smtp);
    assert!("smtps".parse::<crate::Protocol>().unwrap_err().contains("unknown STARTTLS protocol"));
    assert!(!crate::Protocol::Ldap.server_speaks_first());
    let _ = Step::NeedInput;
}

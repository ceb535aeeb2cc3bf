use crate::ber;
use crate::{ClientSide, Error, ErrorKind, GreetingSkip, PostgresClientFilter, Protocol, Step};
use tlsgate_core::side::Side;

/// Plays `script` (what the upstream sends after each of tlsgate's commands) and checks the
/// commands; returns the client side at the end.
fn run(p: Protocol, script: &[(&[u8], &str)]) -> Result<ClientSide, Error> {
    let mut c = ClientSide::new(p, "gate.example");
    for (answer, command) in script {
        c.receive(answer)?;
        assert_eq!(String::from_utf8_lossy(&c.take_output()), *command, "{p} after {answer:?}");
    }
    Ok(c)
}

const SMTP_GREETING: &[u8] = b"220-mx.example ESMTP\r\n220 at your service\r\n";
const EHLO: &[u8] = b"250-mx.example\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n";

#[test]
fn smtp_client_prologue() {
    let c = run(
        Protocol::Smtp,
        &[(SMTP_GREETING, "EHLO gate.example\r\n"), (EHLO, "STARTTLS\r\n"), (b"220 2.0.0 go ahead\r\n", "")],
    )
    .unwrap();
    assert_eq!(c.state(), Step::StartTls);
    assert_eq!(c.greeting_for_client(), SMTP_GREETING);
}

#[test]
fn smtp_client_any_cut_of_each_answer() {
    for answer in [SMTP_GREETING, EHLO, b"220 go\r\n"] {
        for i in 0..=answer.len() {
            let mut c = ClientSide::new(Protocol::Smtp, "g");
            for previous in [SMTP_GREETING, EHLO, b"220 go\r\n"] {
                if previous == answer {
                    break;
                }
                c.receive(previous).unwrap();
                c.take_output();
            }
            c.receive(&answer[..i]).unwrap();
            c.receive(&answer[i..]).unwrap();
            assert!(!c.take_output().is_empty() || c.state() == Step::StartTls, "cut at {i}");
        }
    }
}

#[test]
fn smtp_client_refusals_carry_the_servers_text() {
    let e =
        run(Protocol::Smtp, &[(SMTP_GREETING, "EHLO gate.example\r\n"), (b"250-mx\r\n250 SIZE 100\r\n", "")])
            .unwrap_err();
    assert_eq!(e.side, Side::Backend);
    assert!(e.to_string().starts_with("backend refused STARTTLS: STARTTLS not offered"), "{e}");

    let e = run(
        Protocol::Smtp,
        &[
            (SMTP_GREETING, "EHLO gate.example\r\n"),
            (EHLO, "STARTTLS\r\n"),
            (b"454 4.7.0 TLS not available\r\n", ""),
        ],
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Refused("454 4.7.0 TLS not available".into()));

    let e = run(Protocol::Smtp, &[(b"554 go away\r\n", "")]).unwrap_err();
    assert!(e.to_string().contains("greeting is not a welcome: \"554 go away\""), "{e}");
}

#[test]
fn upstream_bytes_after_the_upgrade_or_before_our_command_are_refused() {
    // Response injection: plaintext behind the "go ahead" would be taken as the TLS session's.
    let e = run(
        Protocol::Smtp,
        &[(SMTP_GREETING, "EHLO gate.example\r\n"), (EHLO, "STARTTLS\r\n"), (b"220 go\r\n250 x\r\n", "")],
    )
    .unwrap_err();
    assert_eq!((e.side, e.kind), (Side::Backend, ErrorKind::DataAfterStartTls(7)));

    let mut c = ClientSide::new(Protocol::Smtp, "g");
    let greeting_and_more = [SMTP_GREETING, EHLO].concat();
    assert!(matches!(c.receive(&greeting_and_more).unwrap_err().kind, ErrorKind::Unsolicited(_)));

    let mut c = ClientSide::new(Protocol::Postgres, "g");
    c.take_output();
    assert_eq!(c.receive(b"SE").unwrap_err().kind, ErrorKind::DataAfterStartTls(1));

    let mut c = ClientSide::new(Protocol::Pop3, "g");
    c.receive(b"+OK hi\r\n").unwrap();
    c.take_output();
    c.receive(b"+OK go\r\n").unwrap();
    assert_eq!(c.receive(b"+OK more").unwrap_err().kind, ErrorKind::DataAfterStartTls(8));
}

#[test]
fn imap_client_prologue_drops_the_stale_capabilities() {
    let c = run(
        Protocol::Imap,
        &[
            (b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] Dovecot ready.\r\n", "tg1 STARTTLS\r\n"),
            (b"* CAPABILITY IMAP4rev1 STARTTLS\r\ntg1 OK Begin TLS negotiation now.\r\n", ""),
        ],
    )
    .unwrap();
    assert_eq!(c.state(), Step::StartTls);
    assert_eq!(c.greeting_for_client(), b"* OK Dovecot ready.\r\n");

    let c =
        run(Protocol::Imap, &[(b"* OK [ALERT] hi\r\n", "tg1 STARTTLS\r\n"), (b"tg1 OK go\r\n", "")]).unwrap();
    assert_eq!(c.greeting_for_client(), b"* OK [ALERT] hi\r\n");

    let e = run(Protocol::Imap, &[(b"* OK hi\r\n", "tg1 STARTTLS\r\n"), (b"tg1 BAD no TLS here\r\n", "")])
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Refused("tg1 BAD no TLS here".into()));
    assert!(run(Protocol::Imap, &[(b"* BYE busy\r\n", "")]).is_err());
    assert!(run(Protocol::Imap, &[(b"* PREAUTH hi\r\n", "")]).is_err());
}

#[test]
fn pop3_and_ftp_client_prologues() {
    let c = run(Protocol::Pop3, &[(b"+OK POP3 ready\r\n", "STLS\r\n"), (b"+OK go\r\n", "")]).unwrap();
    assert_eq!((c.state(), c.greeting_for_client()), (Step::StartTls, &b"+OK POP3 ready\r\n"[..]));
    let e =
        run(Protocol::Pop3, &[(b"+OK POP3 ready\r\n", "STLS\r\n"), (b"-ERR not now\r\n", "")]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Refused("-ERR not now".into()));

    // FTP continuation lines may be free text (RFC 959 section 4.2).
    let greeting = b"220-Welcome\r\n  to the server\r\n220 ready\r\n";
    let c = run(Protocol::Ftp, &[(greeting, "AUTH TLS\r\n"), (b"234 AUTH TLS ok\r\n", "")]).unwrap();
    assert_eq!((c.state(), c.greeting_for_client()), (Step::StartTls, &greeting[..]));
    let e = run(Protocol::Ftp, &[(b"220 x\r\n", "AUTH TLS\r\n"), (b"500 unknown\r\n", "")]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Refused("500 unknown".into()));
}

#[test]
fn postgres_client_prologue() {
    let mut c = ClientSide::new(Protocol::Postgres, "g");
    assert_eq!(c.take_output(), [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
    c.receive(b"S").unwrap();
    assert_eq!((c.state(), c.greeting_for_client()), (Step::StartTls, &b""[..]));

    let mut c = ClientSide::new(Protocol::Postgres, "g");
    c.take_output();
    let e = c.receive(b"N").unwrap_err();
    assert!(e.to_string().contains("refused STARTTLS: answered N to SSLRequest"), "{e}");
}

#[test]
fn ldap_client_prologue() {
    let mut c = ClientSide::new(Protocol::Ldap, "g");
    assert_eq!(c.take_output(), ber::starttls_request(1));
    let ok = ber::extended_response(1, 0, b"", ber::STARTTLS_OID);
    c.receive(&ok[..4]).unwrap();
    c.receive(&ok[4..]).unwrap();
    assert_eq!(c.state(), Step::StartTls);

    let mut c = ClientSide::new(Protocol::Ldap, "g");
    c.take_output();
    let e = c.receive(&ber::extended_response(1, 2, b"TLS not configured", b"")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Refused("resultCode 2: \"TLS not configured\"".into()));

    let mut c = ClientSide::new(Protocol::Ldap, "g");
    c.take_output();
    let notice = ber::extended_response(0, 52, b"shutting down", ber::NOTICE_OF_DISCONNECTION_OID);
    assert!(matches!(c.receive(&notice).unwrap_err().kind, ErrorKind::Refused(_)));

    let mut c = ClientSide::new(Protocol::Ldap, "g");
    c.take_output();
    assert!(matches!(c.receive(b"\x30\x03\x02\x01\x01").unwrap_err().kind, ErrorKind::Malformed(_)));
}

#[test]
fn greeting_skip_consumes_exactly_the_greeting() {
    let input = b"220-mx ESMTP\r\n220 ready\r\n250 rest";
    for i in 0..=input.len() {
        let mut skip = GreetingSkip::new(Protocol::Smtp);
        let first = skip.receive(&input[..i]).unwrap();
        let rest = match first {
            Some(n) => input[n..].to_vec(),
            None => {
                let n = skip.receive(&input[i..]).unwrap().expect("greeting complete");
                input[i + n..].to_vec()
            }
        };
        assert_eq!(rest, b"250 rest", "cut at {i}");
        assert!(skip.is_done());
    }
    let mut skip = GreetingSkip::new(Protocol::Imap);
    assert_eq!(skip.receive(b"* OK [CAPABILITY IMAP4rev1] hi\r\n* 1 EXISTS").unwrap(), Some(32));
    assert!(GreetingSkip::new(Protocol::Postgres).is_done());
    assert!(GreetingSkip::new(Protocol::Ldap).is_done());
    let e = GreetingSkip::new(Protocol::Smtp).receive(b"421 busy\r\n").unwrap_err();
    assert_eq!(e.side, Side::Backend);
    assert!(GreetingSkip::new(Protocol::Pop3).receive(b"-ERR no\r\n").is_err());
    assert!(GreetingSkip::new(Protocol::Smtp).receive(&[b'2'; 600]).is_err());
}

#[test]
fn postgres_filter_answers_the_clients_negotiation_locally() {
    let ssl = crate::postgres::ssl_request();
    let gss = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
    let startup = b"\x00\x00\x00\x09\x00\x03\x00\x00\x00";
    let mut f = PostgresClientFilter::new();
    assert_eq!(f.receive(&gss).unwrap(), None);
    assert_eq!(f.receive(&ssl[..5]).unwrap(), None);
    assert_eq!(f.receive(&ssl[5..]).unwrap(), None);
    assert_eq!(f.take_reply(), b"NN");
    assert_eq!(f.receive(startup).unwrap().unwrap(), startup);
    assert_eq!(f.receive(b"more").unwrap().unwrap(), b"more");

    let mut f = PostgresClientFilter::new();
    assert_eq!(f.receive(&startup[..4]).unwrap().unwrap(), &startup[..4]);
    let mut f = PostgresClientFilter::new();
    assert_eq!(f.receive(b"\x16\x03\x01").unwrap_err().kind, ErrorKind::TlsOnPlaintext);
    let mut f = PostgresClientFilter::new();
    f.receive(&[ssl, ssl].concat()).unwrap();
    assert!(f.receive(&ssl).is_err());
}

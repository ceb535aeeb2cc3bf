use super::{feed, kind};
use crate::ber;
use crate::{ErrorKind, Protocol, ServerSide, Step};
use tlsgate_core::side::Side;

fn server(p: Protocol) -> (ServerSide, String) {
    let mut s = ServerSide::new(p, "mx.example");
    let greeting = String::from_utf8(s.take_output()).unwrap();
    (s, greeting)
}

#[test]
fn smtp_prologue() {
    let (mut s, greeting) = server(Protocol::Smtp);
    assert_eq!(greeting, "220 mx.example ESMTP ready\r\n");
    let (r, out) = feed(&mut s, b"EHLO client.example\r\n");
    r.unwrap();
    assert_eq!(out, "250-mx.example\r\n250 STARTTLS\r\n");
    let (r, out) = feed(&mut s, b"NOOP\r\nMAIL FROM:<a@b>\r\n");
    r.unwrap();
    assert_eq!(out, "250 2.0.0 OK\r\n530 5.7.0 Must issue a STARTTLS command first\r\n");
    assert_eq!(s.state(), Step::NeedInput);
    let (r, out) = feed(&mut s, b"starttls\r\n");
    r.unwrap();
    assert_eq!(out, "220 2.0.0 Ready to start TLS\r\n");
    assert_eq!(s.state(), Step::StartTls);
}

#[test]
fn smtp_any_cut_of_the_input_gives_the_same_answers() {
    let input = b"EHLO a\r\nNOOP\nHELP\r\nSTARTTLS\r\n";
    let (mut whole, _) = server(Protocol::Smtp);
    let (r, expected) = feed(&mut whole, input);
    r.unwrap();
    for i in 0..=input.len() {
        for j in i..=input.len() {
            let (mut s, _) = server(Protocol::Smtp);
            let mut out = String::new();
            for part in [&input[..i], &input[i..j], &input[j..]] {
                let (r, o) = feed(&mut s, part);
                r.unwrap();
                out += &o;
            }
            assert_eq!(out, expected, "cut at {i}, {j}");
            assert_eq!(s.state(), Step::StartTls);
        }
    }
}

#[test]
fn plaintext_pipelined_after_the_upgrade_is_refused() {
    // CVE-2011-0411: a command injected behind STARTTLS must not be taken as sent over TLS.
    let (mut s, _) = server(Protocol::Smtp);
    let e = s.receive(b"STARTTLS\r\nMAIL FROM:<evil>\r\n").unwrap_err();
    assert_eq!((e.side, e.kind.clone()), (Side::Client, ErrorKind::DataAfterStartTls(18)));
    assert!(e.to_string().starts_with("client sent 18 bytes of plaintext after the STARTTLS"), "{e}");

    let (mut s, _) = server(Protocol::Imap);
    assert_eq!(kind(s.receive(b"a STARTTLS\r\nb")), ErrorKind::DataAfterStartTls(1));

    // Arriving in a later read, before the handshake started, is the same.
    let (mut s, _) = server(Protocol::Pop3);
    s.receive(b"STLS\r\n").unwrap();
    assert_eq!(kind(s.receive(b"USER x\r\n")), ErrorKind::DataAfterStartTls(8));

    let (mut s, _) = server(Protocol::Postgres);
    let mut req = crate::postgres::ssl_request().to_vec();
    req.push(b'Q');
    assert_eq!(kind(s.receive(&req)), ErrorKind::DataAfterStartTls(1));

    let (mut s, _) = server(Protocol::Ldap);
    let mut req = ber::starttls_request(3);
    req.extend_from_slice(b"\x30\x05");
    assert_eq!(kind(s.receive(&req)), ErrorKind::DataAfterStartTls(2));
}

#[test]
fn a_client_hello_instead_of_a_command_is_refused() {
    let hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    for p in Protocol::ALL {
        let (mut s, _) = server(p);
        if p == Protocol::Smtp {
            s.receive(b"EHLO x\r\n").unwrap();
        }
        let e = s.receive(hello).unwrap_err();
        assert_eq!(e.kind, ErrorKind::TlsBeforeStartTls, "{p}");
        assert_eq!(e.to_string(), "client sent TLS before STARTTLS");
    }
}

#[test]
fn limits_on_lines_messages_and_refused_commands() {
    let (mut s, _) = server(Protocol::Smtp);
    assert_eq!(kind(s.receive(&[b'A'; 600])), ErrorKind::LineTooLong(512));
    let (mut s, _) = server(Protocol::Smtp);
    let long = [vec![b'A'; 520], b"\r\n".to_vec()].concat();
    assert_eq!(kind(s.receive(&long)), ErrorKind::LineTooLong(512));
    let (mut s, _) = server(Protocol::Imap);
    s.receive(&[b'a'; 8000]).unwrap();
    assert_eq!(kind(s.receive(&[b'a'; 200])), ErrorKind::LineTooLong(8192));

    let (mut s, _) = server(Protocol::Pop3);
    let e = s.receive(&b"USER x\r\n".repeat(12)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::TooManyBadCommands(10));
    assert_eq!(String::from_utf8(s.take_output()).unwrap().matches("-ERR").count(), 10);

    let (mut s, _) = server(Protocol::Postgres);
    assert_eq!(kind(s.receive(&[0, 1, 0, 0, 0, 3, 0, 0])), ErrorKind::MessageTooLong(65536, 10_000));
    let (mut s, _) = server(Protocol::Postgres);
    assert!(matches!(kind(s.receive(&[0, 0, 0, 4, 1, 2, 3, 4])), ErrorKind::Malformed(_)));
    let (mut s, _) = server(Protocol::Ldap);
    assert_eq!(kind(s.receive(&[0x30, 0x83, 0x10, 0, 0])), ErrorKind::MessageTooLong(0x100005, 16384));
    let (mut s, _) = server(Protocol::Ldap);
    assert!(matches!(kind(s.receive(b"GET / HTTP/1.1\r\n")), ErrorKind::Malformed(_)));
}

#[test]
fn quit_and_logout_close_politely() {
    for (p, cmd, reply) in [
        (Protocol::Smtp, "QUIT\r\n", "221 2.0.0 mx.example closing connection\r\n"),
        (Protocol::Imap, "a LOGOUT\r\n", "* BYE mx.example logging out\r\na OK LOGOUT completed\r\n"),
        (Protocol::Pop3, "QUIT\r\n", "+OK mx.example closing connection\r\n"),
        (Protocol::Ftp, "QUIT\r\n", "221 Goodbye\r\n"),
    ] {
        let (mut s, _) = server(p);
        let (r, out) = feed(&mut s, cmd.as_bytes());
        r.unwrap();
        assert_eq!((out.as_str(), s.state()), (reply, Step::Close), "{p}");
        assert!(s.receive(b"NOOP\r\n").is_err());
    }
}

#[test]
fn imap_prologue() {
    let (mut s, greeting) = server(Protocol::Imap);
    assert_eq!(greeting, "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] mx.example ready\r\n");
    let (r, out) = feed(&mut s, b". CAPABILITY\r\na1 LOGIN u p\r\n* NOOP\r\na2 noop\r\n");
    r.unwrap();
    assert_eq!(
        out,
        "* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n. OK CAPABILITY completed\r\n\
         a1 BAD Must issue STARTTLS first\r\n* BAD Invalid tag\r\na2 OK NOOP completed\r\n"
    );
    let (r, out) = feed(&mut s, b"a3 STARTTLS\r\n");
    r.unwrap();
    assert_eq!((out.as_str(), s.state()), ("a3 OK Begin TLS negotiation now\r\n", Step::StartTls));
}

#[test]
fn pop3_prologue() {
    let (mut s, greeting) = server(Protocol::Pop3);
    assert_eq!(greeting, "+OK mx.example POP3 ready\r\n");
    let (r, out) = feed(&mut s, b"CAPA\r\nUSER bob\r\n");
    r.unwrap();
    assert_eq!(out, "+OK Capability list follows\r\nSTLS\r\n.\r\n-ERR Must issue STLS first\r\n");
    let (r, out) = feed(&mut s, b"STLS\r\n");
    r.unwrap();
    assert_eq!((out.as_str(), s.state()), ("+OK Begin TLS negotiation\r\n", Step::StartTls));
}

#[test]
fn ftp_prologue() {
    let (mut s, greeting) = server(Protocol::Ftp);
    assert_eq!(greeting, "220 mx.example FTP ready\r\n");
    let (r, out) = feed(&mut s, b"FEAT\r\nUSER anonymous\r\nAUTH SSL\r\n");
    r.unwrap();
    assert_eq!(
        out,
        "211-Features:\r\n AUTH TLS\r\n211 End\r\n530 Please login with AUTH TLS first\r\n\
         504 Only AUTH TLS is supported\r\n"
    );
    let (r, out) = feed(&mut s, b"auth tls\r\n");
    r.unwrap();
    assert_eq!((out.as_str(), s.state()), ("234 AUTH TLS successful\r\n", Step::StartTls));
}

#[test]
fn postgres_prologue() {
    let (mut s, greeting) = server(Protocol::Postgres);
    assert!(greeting.is_empty());
    let gssenc = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
    let (r, out) = feed(&mut s, &gssenc);
    r.unwrap();
    assert_eq!((out.as_str(), s.state()), ("N", Step::NeedInput));
    let req = crate::postgres::ssl_request();
    s.receive(&req[..3]).unwrap();
    let (r, out) = feed(&mut s, &req[3..]);
    r.unwrap();
    assert_eq!((out.as_str(), s.state()), ("S", Step::StartTls));

    // A plaintext startup is refused the way a hostssl-only server refuses it.
    let (mut s, _) = server(Protocol::Postgres);
    let mut startup = vec![0, 3, 0, 0];
    startup.extend_from_slice(b"user\0bob\0\0");
    let startup = [&((startup.len() as u32 + 4).to_be_bytes())[..], &startup].concat();
    s.receive(&startup).unwrap();
    let out = s.take_output();
    assert_eq!(s.state(), Step::Close);
    assert_eq!(out[0], b'E');
    assert_eq!(u32::from_be_bytes(out[1..5].try_into().unwrap()) as usize, out.len() - 1);
    assert_eq!(&out[5..], b"SFATAL\0VFATAL\0C28000\0MSSL required\0\0");
}

#[test]
fn ldap_prologue() {
    let (mut s, _) = server(Protocol::Ldap);
    let req = ber::starttls_request(300);
    s.receive(&req[..5]).unwrap();
    let (r, _) = feed(&mut s, &req[5..]);
    r.unwrap();
    assert_eq!(s.state(), Step::StartTls);
    // messageID 300, ExtendedResponse success carrying the StartTLS OID.
    let mut s2 = ServerSide::new(Protocol::Ldap, "x");
    s2.receive(&req).unwrap();
    assert_eq!(s2.take_output(), ber::extended_response(300, 0, b"", ber::STARTTLS_OID));
    assert_eq!(&ber::starttls_request(1)[..7], b"\x30\x1d\x02\x01\x01\x77\x18");

    // A simple bind in plaintext: notice of disconnection, strongerAuthRequired.
    let (mut s, _) = server(Protocol::Ldap);
    let bind = b"\x30\x0c\x02\x01\x01\x60\x07\x02\x01\x03\x04\x00\x80\x00";
    s.receive(bind).unwrap();
    assert_eq!(s.state(), Step::Close);
    let out = s.take_output();
    assert_eq!(out, ber::extended_response(0, 8, b"StartTLS required", ber::NOTICE_OF_DISCONNECTION_OID));
    assert_eq!(&out[2..5], b"\x02\x01\x00");
}

#[test]
fn host_name_cannot_inject_lines() {
    let mut s = ServerSide::new(Protocol::Smtp, "mx\r\n250 evil");
    assert_eq!(s.take_output(), b"220 mx250evil ESMTP ready\r\n");
}

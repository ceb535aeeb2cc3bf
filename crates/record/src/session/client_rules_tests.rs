//! The rules of a session whose peer is a TLS server (originate): what a server may send after
//! the handshake differs from what a client may.

use super::rules::{Outcome, Reason, Role, Rules};
use crate::crypto::Version;
use crate::frame::ContentType;

const HS: ContentType = ContentType::HANDSHAKE;

fn tls13(content: &[u8]) -> Vec<u8> {
    let mut inner = content.to_vec();
    inner.push(HS.0);
    inner
}

#[test]
fn new_session_tickets_from_a_server_are_collected_across_records_rfc8446_4_6_1() {
    let mut rules = Rules::with_role(Version::Tls13, Role::Client);
    // Two tickets in one record, the second cut after its header's first byte.
    let (a, b) = (vec![7u8; 20], vec![9u8; 300]);
    let mut first = vec![4, 0, 0, 20];
    first.extend_from_slice(&a);
    first.extend_from_slice(&[4]);
    let o = rules.record(ContentType::APPLICATION_DATA, &tls13(&first), 0).unwrap();
    assert_eq!(o.tickets, vec![a]);
    assert_eq!(rules.held(), 1);
    let mut second = vec![0, 1, 44];
    second.extend_from_slice(&b[..100]);
    let o = rules.record(ContentType::APPLICATION_DATA, &tls13(&second), 0).unwrap();
    assert!(o.tickets.is_empty());
    let o = rules.record(ContentType::APPLICATION_DATA, &tls13(&b[100..]), 0).unwrap();
    assert_eq!(o.tickets, vec![b]);
    assert_eq!(rules.held(), 0);
}

#[test]
fn a_server_ticket_in_the_middle_of_data_is_interleaving_rfc8446_5_1() {
    let mut rules = Rules::with_role(Version::Tls13, Role::Client);
    rules.record(ContentType::APPLICATION_DATA, &tls13(&[4, 0, 0, 8, 1]), 0).unwrap();
    let data = [b'x', ContentType::APPLICATION_DATA.0];
    assert_eq!(rules.record(ContentType::APPLICATION_DATA, &data, 0), Err(Reason::Interleaved(23)));
}

#[test]
fn a_client_never_takes_a_client_hello_nor_a_server_a_ticket() {
    let mut client = Rules::with_role(Version::Tls13, Role::Client);
    let hello = tls13(&[1, 0, 0, 1, 0]);
    assert_eq!(client.record(ContentType::APPLICATION_DATA, &hello, 0), Err(Reason::UnexpectedHandshake(1)));
    let mut server = Rules::with_role(Version::Tls13, Role::Server);
    let ticket = tls13(&[4, 0, 0, 1, 0]);
    assert_eq!(server.record(ContentType::APPLICATION_DATA, &ticket, 0), Err(Reason::UnexpectedHandshake(4)));
    let mut tls12 = Rules::with_role(Version::Tls12, Role::Client);
    assert_eq!(tls12.record(HS, &[1, 0, 0, 1, 0], 0), Err(Reason::UnexpectedHandshake(1)));
}

#[test]
fn a_tls12_hello_request_is_refused_with_a_warning_rfc5246_7_4_1_1() {
    let mut rules = Rules::with_role(Version::Tls12, Role::Client);
    let o = rules.record(HS, &[0, 0, 0, 0], 0).unwrap();
    assert_eq!(o, Outcome { renegotiations: 1, ..Outcome::default() });
}

#[test]
fn a_key_update_from_a_server_is_followed_rfc8446_4_6_3() {
    let mut rules = Rules::with_role(Version::Tls13, Role::Client);
    let o = rules.record(ContentType::APPLICATION_DATA, &tls13(&[24, 0, 0, 1, 1]), 0).unwrap();
    assert_eq!(o.key_update, Some(true));
}

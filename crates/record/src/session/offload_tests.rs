//! The offloaded session (kernel TLS): the kernel opens and seals records, the same rules
//! decide what they mean, and what the session sends comes out as plaintext records for the
//! kernel to seal. Against a real rustls handshake ([`super::tests::Pair`]).

use super::alert::*;
use super::tests::{both, Pair, AD, AL, HS, TLS12, TLS13};
use super::*;

/// A plaintext record as the offloaded session hands it to its driver.
fn plain_rec(ct: ContentType, content: &[u8]) -> Vec<u8> {
    let mut r = Header { content_type: ct, version: 0x0303, len: content.len() as u16 }.encode().to_vec();
    r.extend_from_slice(content);
    r
}

#[test]
fn offloaded_records_out_are_plaintext_for_the_kernel_to_seal() {
    for suite in both() {
        let mut p = Pair::new(suite);
        p.session.offload();
        let seqs = p.session.seqs();
        let mut out = Vec::new();
        assert_eq!(p.session.opened(AD, b"", &mut out), Ok(Received::Data(0..0)));
        p.session.close(&mut out).unwrap();
        assert_eq!(out, plain_rec(AL, &[WARNING, CLOSE_NOTIFY]), "{suite:?}");
        assert_eq!(p.session.seqs(), seqs, "the kernel keeps the sequence numbers");
    }
}

#[test]
fn offloaded_close_notify_and_alerts_follow_the_rules_rfc8446_6() {
    for suite in both() {
        let mut p = Pair::new(suite);
        p.session.offload();
        let mut out = Vec::new();
        assert_eq!(p.session.opened(AL, &[WARNING, CLOSE_NOTIFY], &mut out), Ok(Received::Closed));
        assert_eq!(p.session.opened(AD, b"", &mut out), Ok(Received::Closed), "ignored after close_notify");
        assert!(out.is_empty());

        let mut p = Pair::new(suite);
        p.session.offload();
        let f = p.session.opened(AL, &[FATAL, 42], &mut out).unwrap_err();
        assert_eq!((f.side, f.alert), (Side::Client, None), "{f}");
        assert_eq!(p.session.send_alert(&mut out), None, "no answer to a fatal alert");
    }
}

#[test]
fn offloaded_broken_rule_gets_its_alert_as_a_plaintext_record() {
    let mut p = Pair::new(TLS13);
    p.session.offload();
    let mut out = Vec::new();
    // A ClientHello after a TLS 1.3 handshake (RFC 8446 §4).
    let f = p.session.opened(HS, &[1, 0, 0, 0], &mut out).unwrap_err();
    assert_eq!(f.alert, Some(UNEXPECTED_MESSAGE), "{f}");
    assert_eq!(p.session.send_alert(&mut out), Some(UNEXPECTED_MESSAGE));
    assert_eq!(out, plain_rec(AL, &[FATAL, UNEXPECTED_MESSAGE]));
    // A kernel's own finding (EBADMSG), reported by the driver.
    let mut p = Pair::new(TLS12);
    p.session.offload();
    let f = p.session.fail_with(Reason::BadRecordMac);
    assert_eq!((f.side, f.alert), (Side::Client, Some(BAD_RECORD_MAC)));
    let mut out = Vec::new();
    assert_eq!(p.session.send_alert(&mut out), Some(BAD_RECORD_MAC));
    assert_eq!(out, plain_rec(AL, &[FATAL, BAD_RECORD_MAC]));
}

#[test]
fn offloaded_key_update_is_flagged_for_the_driver_not_followed_rfc8446_4_6_3() {
    let mut p = Pair::new(TLS13);
    p.session.offload();
    let seqs = p.session.seqs();
    let mut out = Vec::new();
    assert_eq!(p.session.opened(HS, &[24, 0, 0, 1, 1], &mut out), Ok(Received::Nothing));
    assert!(p.session.rx_rekey_pending());
    assert!(out.is_empty(), "no KeyUpdate answer: the kernel's transmit key stays");
    assert_eq!(p.session.seqs(), seqs);
}

#[test]
fn offloaded_tls12_renegotiation_is_refused_with_a_plaintext_warning_rfc5746_4_4() {
    let mut p = Pair::new(TLS12);
    p.session.offload();
    let mut out = Vec::new();
    assert_eq!(p.session.opened(HS, &[1, 0, 0, 2, 3, 3], &mut out), Ok(Received::Nothing));
    assert_eq!(out, plain_rec(AL, &[WARNING, NO_RENEGOTIATION]));
}

#[test]
fn offloaded_transmit_key_is_used_up_at_the_record_limit_rfc8446_5_5() {
    for suite in both() {
        let mut p = Pair::new(suite);
        assert!(!p.session.offloaded_tx_used_up(u64::MAX), "not offloaded: the session refreshes its key");
        p.session.offload();
        assert!(!p.session.offloaded_tx_used_up(TX_KEY_RECORDS - 1));
        assert!(p.session.offloaded_tx_used_up(TX_KEY_RECORDS), "{suite:?}");
        // The margin between reads keeps the last record under AES-GCM's 2^24.5.
        assert!(((TX_KEY_RECORDS + OFFLOAD_TX_CHECK_BYTES) as f64) < 2f64.powf(24.5));
        p.session.set_tx_key_records(64);
        assert!(!p.session.offloaded_tx_used_up(63));
        assert!(p.session.offloaded_tx_used_up(64));
        // Used up is no failure: the session still seals its close_notify for the kernel.
        let mut out = Vec::new();
        p.session.close(&mut out).unwrap();
        assert_eq!(out, plain_rec(AL, &[WARNING, CLOSE_NOTIFY]));
    }
}

//! rustls's errors in an operator's words.
//!
//! rustls names its failures with Rust enum variants (`PeerIncompatible(NoCipherSuitesInCommon)`,
//! `ExpiredContext { time: UnixTime(…) }`) and links its documentation; a gateway's log is read
//! by people who know TLS, not rustls. Every place that logs a handshake failure goes through
//! here, so the words are the same for terminate, originate and the tunnel. Variants without a
//! sentence of their own are spelled as lower-case words, never as a type name.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use rustls::pki_types::UnixTime;
use rustls::{AlertDescription, CertificateError, Error, InconsistentKeys, InvalidMessage, PeerIncompatible};

/// The other end of the handshake, as TLS sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// tlsgate is the server (terminate, tunnel gate).
    Client,
    /// tlsgate is the client (originate, tunnel portal).
    Server,
}

impl Peer {
    fn noun(self) -> &'static str {
        match self {
            Peer::Client => "client",
            Peer::Server => "server",
        }
    }
}

/// The versions every listener accepts, for messages about a peer that offers none of them.
const ACCEPTED: &str = "tlsgate accepts TLS 1.2 and 1.3";

/// A failure of a handshake with `peer` (or, for key and certificate problems, of loading them).
pub fn tls_error(e: &Error, peer: Peer) -> String {
    let who = peer.noun();
    match e {
        Error::InappropriateMessage { .. } | Error::InappropriateHandshakeMessage { .. } => {
            format!("{who} sent a TLS message out of order")
        }
        Error::InvalidMessage(m) => invalid_message(m, peer),
        Error::NoCertificatesPresented => format!("{who} sent no certificate, and one is required"),
        Error::UnsupportedNameType => format!("{who} sent a server name that is not a DNS name"),
        Error::DecryptError => format!("{who}'s data failed to decrypt (wrong key, or corrupted)"),
        Error::EncryptError => "encryption failed".into(),
        Error::PeerIncompatible(p) => incompatible(p, peer),
        Error::PeerMisbehaved(m) => format!("{who} broke the TLS protocol ({})", words(&format!("{m:?}"))),
        Error::AlertReceived(a) => format!("{who} aborted the handshake with alert {}", alert_name(*a)),
        Error::InvalidCertificate(c) => certificate(c, peer),
        Error::InvalidCertRevocationList(c) => {
            format!("unusable certificate revocation list ({})", words(&format!("{c:?}")))
        }
        Error::General(text) => text.clone(),
        Error::FailedToGetCurrentTime => "cannot read the system clock".into(),
        Error::FailedToGetRandomBytes => "the random number generator failed".into(),
        Error::HandshakeNotComplete => "the handshake did not complete".into(),
        Error::PeerSentOversizedRecord => format!("{who} sent a record larger than TLS allows"),
        Error::NoApplicationProtocol => {
            format!("no application protocol (ALPN) in common with the {who}")
        }
        Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
            "the private key does not match the certificate".into()
        }
        Error::InconsistentKeys(_) => "cannot tell whether the private key matches the certificate".into(),
        Error::InvalidEncryptedClientHello(e) => {
            format!("{who} sent an unusable encrypted ClientHello ({})", words(&format!("{e:?}")))
        }
        other => words(&format!("{other:?}")),
    }
}

/// A handshake failure reported as an I/O error (tokio-rustls wraps rustls's errors in one).
pub fn io_error(e: &std::io::Error, peer: Peer) -> String {
    if let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        return tls_error(tls, peer);
    }
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            format!("{} closed the connection during the handshake", peer.noun())
        }
        _ => e.to_string(),
    }
}

/// The name a client asked for, for a handshake's log line: `SNI x` or `no SNI`.
pub fn requested_name(sni: Option<&str>) -> String {
    match sni {
        Some(name) => format!("SNI {name}"),
        None => "no SNI".into(),
    }
}

/// A ClientHello whose highest version is older than TLS 1.2: what to log, from its
/// `legacy_version` (a TLS 1.3 client sends 0x0303 there and its versions in an extension).
pub fn too_old(legacy_version: u16) -> Option<String> {
    let name = match legacy_version {
        0x0303.. => return None,
        0x0302 => "TLS 1.1",
        0x0301 => "TLS 1.0",
        0x0300 => "SSL 3.0",
        _ => "SSL 2 or older",
    };
    Some(format!("client offered only {name} (protocol too old; {ACCEPTED})"))
}

/// An alert's name as the TLS RFCs spell it (`unknown_ca`).
pub fn alert_name(a: AlertDescription) -> String {
    use AlertDescription as A;
    let name = match a {
        A::CloseNotify => "close_notify",
        A::UnexpectedMessage => "unexpected_message",
        A::BadRecordMac => "bad_record_mac",
        A::DecryptionFailed => "decryption_failed",
        A::RecordOverflow => "record_overflow",
        A::DecompressionFailure => "decompression_failure",
        A::HandshakeFailure => "handshake_failure",
        A::NoCertificate => "no_certificate",
        A::BadCertificate => "bad_certificate",
        A::UnsupportedCertificate => "unsupported_certificate",
        A::CertificateRevoked => "certificate_revoked",
        A::CertificateExpired => "certificate_expired",
        A::CertificateUnknown => "certificate_unknown",
        A::IllegalParameter => "illegal_parameter",
        A::UnknownCA => "unknown_ca",
        A::AccessDenied => "access_denied",
        A::DecodeError => "decode_error",
        A::DecryptError => "decrypt_error",
        A::ExportRestriction => "export_restriction",
        A::ProtocolVersion => "protocol_version",
        A::InsufficientSecurity => "insufficient_security",
        A::InternalError => "internal_error",
        A::InappropriateFallback => "inappropriate_fallback",
        A::UserCanceled => "user_canceled",
        A::NoRenegotiation => "no_renegotiation",
        A::MissingExtension => "missing_extension",
        A::UnsupportedExtension => "unsupported_extension",
        A::CertificateUnobtainable => "certificate_unobtainable",
        A::UnrecognisedName => "unrecognized_name",
        A::BadCertificateStatusResponse => "bad_certificate_status_response",
        A::BadCertificateHashValue => "bad_certificate_hash_value",
        A::UnknownPSKIdentity => "unknown_psk_identity",
        A::CertificateRequired => "certificate_required",
        A::NoApplicationProtocol => "no_application_protocol",
        A::EncryptedClientHelloRequired => "encrypted_client_hello_required",
        other => return format!("number {}", u8::from(other)),
    };
    name.into()
}

fn invalid_message(m: &InvalidMessage, peer: Peer) -> String {
    let who = peer.noun();
    match m {
        InvalidMessage::InvalidContentType => format!("{who} sent data that is not TLS"),
        InvalidMessage::UnknownProtocolVersion => format!("{who} sent a record of an unknown TLS version"),
        InvalidMessage::MessageTooLarge => format!("{who} sent a handshake message too large to accept"),
        other => format!("{who} sent a malformed TLS message ({})", words(&format!("{other:?}"))),
    }
}

fn incompatible(p: &PeerIncompatible, peer: Peer) -> String {
    let who = peer.noun();
    use PeerIncompatible as P;
    match p {
        P::NoCipherSuitesInCommon => format!("no cipher suite in common with the {who}"),
        // Also what a TLS 1.2 client offering only RSA key exchange suites gets: it sends no
        // groups at all.
        P::NoKxGroupsInCommon | P::NamedGroupsExtensionRequired => {
            format!("no key exchange in common with the {who} (tlsgate uses ECDHE only)")
        }
        P::NoSignatureSchemesInCommon => format!("no signature algorithm in common with the {who}"),
        P::NoCertificateRequestSignatureSchemesInCommon => {
            "no signature algorithm in common for the client certificate".into()
        }
        P::SignatureAlgorithmsExtensionRequired => {
            format!("{who} offered no signature algorithms, as only TLS 1.1 and older do ({ACCEPTED})")
        }
        P::Tls12NotOffered | P::Tls12NotOfferedOrEnabled | P::SupportedVersionsExtensionRequired => {
            format!("{who} offered no TLS version in common ({ACCEPTED})")
        }
        P::ServerDoesNotSupportTls12Or13 | P::ServerTlsVersionIsDisabledByOurConfig => {
            format!("{who} chose a TLS version tlsgate does not accept ({ACCEPTED})")
        }
        P::ExtendedMasterSecretExtensionRequired => {
            format!("{who} does not support the extended master secret (RFC 7627), required with TLS 1.2")
        }
        P::KeyShareExtensionRequired => format!("{who} sent a TLS 1.3 hello without a key share"),
        P::NullCompressionRequired => format!("{who} offered only compressed TLS, which is insecure"),
        P::EcPointsExtensionRequired | P::NoEcPointFormatsInCommon | P::UncompressedEcPointsRequired => {
            format!("no elliptic curve point format in common with the {who}")
        }
        other => format!("{who} is incompatible ({})", words(&format!("{other:?}"))),
    }
}

fn certificate(c: &CertificateError, peer: Peer) -> String {
    let whose = format!("{} certificate", peer.noun());
    use CertificateError as C;
    #[allow(deprecated)]
    match c {
        C::BadEncoding => format!("{whose} is malformed"),
        C::Expired => format!("{whose} expired"),
        C::ExpiredContext { not_after, .. } => format!("{whose} expired on {}", date(*not_after)),
        C::NotValidYet => format!("{whose} is not valid yet"),
        C::NotValidYetContext { not_before, .. } => {
            format!("{whose} is not valid before {}", date(*not_before))
        }
        C::Revoked => format!("{whose} revoked"),
        C::UnhandledCriticalExtension => format!("{whose} has a critical extension tlsgate does not know"),
        C::UnknownIssuer => format!("{whose} not issued by a trusted CA"),
        C::UnknownRevocationStatus => format!("{whose}: no CRL from its issuer to check it against"),
        C::ExpiredRevocationList => format!("the CRL for the {whose} is out of date"),
        C::ExpiredRevocationListContext { next_update, .. } => {
            format!("the CRL for the {whose} is out of date (next update was due {})", date(*next_update))
        }
        C::BadSignature => {
            format!("{whose} has a bad signature (not signed by the trusted CA it names as issuer)")
        }
        C::UnsupportedSignatureAlgorithm
        | C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            format!("{whose} is signed with an unsupported algorithm")
        }
        C::NotValidForName => format!("{whose} is not valid for the name asked for"),
        C::NotValidForNameContext { expected, presented } => {
            let mut s = format!("{whose} is not valid for {}", expected.to_str());
            match presented.as_slice() {
                [] => s.push_str(" (it names no DNS name or address)"),
                names => {
                    let names: Vec<String> = names.iter().map(|n| presented_name(n)).collect();
                    let _ = write!(s, " (it names {})", names.join(", "));
                }
            }
            s
        }
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            format!("{whose} is not issued for this use (its extended key usage)")
        }
        C::InvalidOcspResponse => format!("invalid OCSP response for the {whose}"),
        C::ApplicationVerificationFailure => format!("{whose} refused by tlsgate's policy"),
        C::Other(e) => format!("{whose} refused: {e}"),
        other => format!("{whose} refused ({})", words(&format!("{other:?}"))),
    }
}

/// A name a certificate carries, as webpki lists it (`DnsName("a.test")`): just the name.
fn presented_name(debug: &str) -> String {
    match debug.split_once('(') {
        Some((_, value)) if value.ends_with(')') => value[..value.len() - 1].trim_matches('"').to_string(),
        _ => words(debug),
    }
}

/// `2025-01-31 12:00:00 UTC`.
fn date(t: UnixTime) -> String {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(t.as_secs());
    let rfc3339 = humantime::format_rfc3339_seconds(at).to_string();
    format!("{} UTC", rfc3339.trim_end_matches('Z').replacen('T', " ", 1))
}

/// A variant's debug text as lower-case words: `NoKxGroupsInCommon` → `no kx groups in common`.
fn words(debug: &str) -> String {
    let chars: Vec<char> = debug.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1);
            let starts_word = prev.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit())
                || (prev.is_some_and(char::is_uppercase) && next.is_some_and(|n| n.is_lowercase()));
            if starts_word {
                out.push(' ');
            }
            out.extend(c.to_lowercase());
        } else if matches!(c, '(' | ')' | '"' | '_' | '{' | '}' | ':' | ',') {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing a reader would have to look up in rustls's source.
    fn assert_plain(text: &str) {
        for bad in ["Some(", "None", "http", "::", "{"] {
            assert!(!text.contains(bad), "{text:?} contains {bad:?}");
        }
        let camel = text.split(|c: char| !c.is_alphanumeric()).any(|w| {
            w.chars().next().is_some_and(char::is_uppercase)
                && w.chars().skip(1).any(char::is_lowercase)
                && w.chars().skip(1).any(char::is_uppercase)
        });
        assert!(!camel, "{text:?} has a CamelCase word");
    }

    #[test]
    fn common_failures_read_in_words() {
        let cases = [
            (Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon), "no cipher suite in common"),
            (
                Error::AlertReceived(AlertDescription::UnknownCA),
                "aborted the handshake with alert unknown_ca",
            ),
            (Error::InvalidCertificate(CertificateError::UnknownIssuer), "not issued by a trusted CA"),
            (Error::InvalidCertificate(CertificateError::Revoked), "client certificate revoked"),
            (
                Error::InvalidCertificate(CertificateError::ExpiredContext {
                    time: UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000)),
                    not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_738_324_800)),
                }),
                "client certificate expired on 2025-01-31 12:00:00 UTC",
            ),
            (Error::InconsistentKeys(InconsistentKeys::KeyMismatch), "private key does not match"),
            (
                Error::PeerMisbehaved(rustls::PeerMisbehaved::IllegalMiddleboxChangeCipherSpec),
                "broke the TLS protocol (illegal middlebox change cipher spec)",
            ),
            (Error::InvalidMessage(InvalidMessage::MissingData("ServerNameType")), "malformed"),
        ];
        for (error, words) in cases {
            let text = tls_error(&error, Peer::Client);
            assert!(text.contains(words), "{error:?}: {text:?}");
            assert_plain(&text);
        }
    }

    #[test]
    fn names_a_certificate_carries_are_listed_plainly() {
        let e = Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected: rustls::pki_types::ServerName::try_from("wrong.test").unwrap(),
            presented: vec!["DnsName(\"localhost\")".into(), "IpAddress(127.0.0.1)".into()],
        });
        assert_eq!(
            tls_error(&e, Peer::Server),
            "server certificate is not valid for wrong.test (it names localhost, 127.0.0.1)"
        );
    }

    #[test]
    fn every_alert_has_its_rfc_name() {
        for n in 0..=u8::MAX {
            let name = alert_name(AlertDescription::from(n));
            assert!(name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == ' ' || c.is_ascii_digit()));
        }
        assert_eq!(alert_name(AlertDescription::UnrecognisedName), "unrecognized_name");
    }

    #[test]
    fn old_versions_are_named() {
        assert_eq!(
            too_old(0x0302).as_deref(),
            Some("client offered only TLS 1.1 (protocol too old; tlsgate accepts TLS 1.2 and 1.3)")
        );
        assert!(too_old(0x0301).unwrap().contains("TLS 1.0"));
        assert_eq!(too_old(0x0303), None);
    }

    #[test]
    fn wrapped_errors_are_unwrapped() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert_eq!(io_error(&io, Peer::Server), "server certificate not issued by a trusted CA");
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert_eq!(io_error(&eof, Peer::Client), "client closed the connection during the handshake");
    }

    #[test]
    fn words_splits_camel_case() {
        assert_eq!(words("NoKxGroupsInCommon"), "no kx groups in common");
        assert_eq!(words("UnknownCA"), "unknown ca");
        assert_eq!(words("MissingData(\"ServerNameType\")"), "missing data server name type");
    }
}

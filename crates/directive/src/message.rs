//! The messages: one JSON object per line.
//!
//! Requests name their connection by the two addresses of the application's own socket:
//! `local` (its end) and `peer` (the other end, as the application sees it).
//!
//! ```text
//! {"op":"peer","local":"IP:PORT","peer":"IP:PORT"}
//! {"op":"start_tls","local":…,"peer":…,"after":N,"sni":"name","alpn":["h2"],"client_cert":"NAME"}
//! {"op":"stop_tls","local":…,"peer":…,"after":N}
//! ```
//!
//! Answers: `{"ok":true}` (with the session's facts for `peer`) or `{"ok":false,"error":"…"}`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Why a line is not a valid request (or answer). The text is what the caller is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectiveError {
    #[error("line longer than {} bytes", crate::MAX_LINE)]
    LineTooLong,
    #[error("not a JSON object of a known shape: {0}")]
    NotJson(String),
    #[error("unknown op {0:?} (peer, start_tls or stop_tls)")]
    UnknownOp(String),
    #[error("{op} needs {field:?}")]
    Missing { op: &'static str, field: &'static str },
    #[error("{op} takes no {field:?}")]
    NotForOp { op: &'static str, field: &'static str },
    #[error("{field} {value:?} is not IP:PORT")]
    BadAddress { field: &'static str, value: String },
    #[error("sni {0:?} is not a DNS name")]
    BadSni(String),
    #[error("alpn protocol {0:?} must be 1 to 255 bytes")]
    BadAlpn(String),
    #[error("client_cert {0:?} is not an identity name (1 to 64 of letters, digits, '-', '_', '.')")]
    BadClientCert(String),
}

/// One validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The client's certificate and session facts of a terminate connection.
    Peer { local: SocketAddr, peer: SocketAddr },
    /// TLS from byte `after` of the application's outgoing stream on.
    /// `client_cert` names one of the listener's configured client identities (originate).
    StartTls {
        local: SocketAddr,
        peer: SocketAddr,
        after: u64,
        sni: Option<String>,
        alpn: Vec<String>,
        client_cert: Option<String>,
    },
    /// Plaintext again from byte `after` of the application's outgoing stream on.
    StopTls { local: SocketAddr, peer: SocketAddr, after: u64 },
}

/// The wire shape of a request: every field optional, unknown fields refused.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    local: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sni: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alpn: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_cert: Option<String>,
}

/// An address as the application's socket reports it; an IPv4-mapped IPv6 address is the IPv4
/// one (a dual-stack socket reports those for IPv4 peers).
fn address(
    field: &'static str,
    value: Option<String>,
    op: &'static str,
) -> Result<SocketAddr, DirectiveError> {
    let value = value.ok_or(DirectiveError::Missing { op, field })?;
    let addr: SocketAddr = value.parse().map_err(|_| DirectiveError::BadAddress { field, value })?;
    Ok(SocketAddr::new(addr.ip().to_canonical(), addr.port()))
}

fn valid_sni(name: &str) -> bool {
    name.len() <= 253
        && !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A configured client identity's name (the config's rule): letters, digits, `-`, `_`, `.`.
fn valid_identity(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Request {
    /// Parses and validates one line.
    pub fn parse(line: &[u8]) -> Result<Request, DirectiveError> {
        let raw: Raw = serde_json::from_slice(line).map_err(|e| DirectiveError::NotJson(e.to_string()))?;
        let op: &'static str = match raw.op.as_str() {
            "peer" => "peer",
            "start_tls" => "start_tls",
            "stop_tls" => "stop_tls",
            _ => return Err(DirectiveError::UnknownOp(raw.op)),
        };
        let local = address("local", raw.local, op)?;
        let peer = address("peer", raw.peer, op)?;
        let refuse =
            |present: bool, field| if present { Err(DirectiveError::NotForOp { op, field }) } else { Ok(()) };
        match op {
            "peer" => {
                refuse(raw.after.is_some(), "after")?;
                refuse(raw.sni.is_some(), "sni")?;
                refuse(raw.alpn.is_some(), "alpn")?;
                refuse(raw.client_cert.is_some(), "client_cert")?;
                Ok(Request::Peer { local, peer })
            }
            "start_tls" => {
                let after = raw.after.ok_or(DirectiveError::Missing { op, field: "after" })?;
                if let Some(sni) = &raw.sni {
                    if !valid_sni(sni) {
                        return Err(DirectiveError::BadSni(sni.clone()));
                    }
                }
                let alpn = raw.alpn.unwrap_or_default();
                if let Some(bad) = alpn.iter().find(|p| p.is_empty() || p.len() > 255) {
                    return Err(DirectiveError::BadAlpn(bad.clone()));
                }
                if let Some(name) = raw.client_cert.as_ref().filter(|n| !valid_identity(n)) {
                    return Err(DirectiveError::BadClientCert(name.clone()));
                }
                Ok(Request::StartTls { local, peer, after, sni: raw.sni, alpn, client_cert: raw.client_cert })
            }
            _ => {
                let after = raw.after.ok_or(DirectiveError::Missing { op, field: "after" })?;
                refuse(raw.sni.is_some(), "sni")?;
                refuse(raw.alpn.is_some(), "alpn")?;
                refuse(raw.client_cert.is_some(), "client_cert")?;
                Ok(Request::StopTls { local, peer, after })
            }
        }
    }

    /// The request as one line, `\n` included.
    pub fn encode(&self) -> Vec<u8> {
        let raw = match self {
            Request::Peer { local, peer } => Raw {
                op: "peer".into(),
                local: Some(local.to_string()),
                peer: Some(peer.to_string()),
                ..Raw::default()
            },
            Request::StartTls { local, peer, after, sni, alpn, client_cert } => Raw {
                op: "start_tls".into(),
                local: Some(local.to_string()),
                peer: Some(peer.to_string()),
                after: Some(*after),
                sni: sni.clone(),
                alpn: (!alpn.is_empty()).then(|| alpn.clone()),
                client_cert: client_cert.clone(),
            },
            Request::StopTls { local, peer, after } => Raw {
                op: "stop_tls".into(),
                local: Some(local.to_string()),
                peer: Some(peer.to_string()),
                after: Some(*after),
                ..Raw::default()
            },
        };
        line(&raw)
    }

    /// The connection it names: (the application's local address, its peer address).
    pub fn connection(&self) -> (SocketAddr, SocketAddr) {
        match self {
            Request::Peer { local, peer }
            | Request::StartTls { local, peer, .. }
            | Request::StopTls { local, peer, .. } => (*local, *peer),
        }
    }

    pub fn op(&self) -> &'static str {
        match self {
            Request::Peer { .. } => "peer",
            Request::StartTls { .. } => "start_tls",
            Request::StopTls { .. } => "stop_tls",
        }
    }
}

/// What a `peer` answer tells about the TLS session of the application's connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerFacts {
    /// The client certificate's subject, RFC 4514 style; `null` without a client certificate.
    pub subject: Option<String>,
    /// Its subject alternative names: `DNS:…`, `URI:…`, `IP:…`.
    pub sans: Vec<String>,
    /// The identity the allow-lists matched (CN and SANs), as in the connection's log line.
    pub identity: Option<String>,
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// The IANA name of the cipher suite.
    pub suite: String,
    pub alpn: Option<String>,
    pub sni: Option<String>,
    /// The client certificate (leaf) as PEM.
    pub cert_pem: Option<String>,
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `start_tls` or `stop_tls` done.
    Done,
    Peer(PeerFacts),
    Failed(String),
}

#[derive(Serialize, Deserialize)]
struct RawAnswer {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(flatten)]
    facts: Option<PeerFacts>,
}

fn line<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    let mut out = serde_json::to_vec(value).unwrap_or_default();
    out.push(b'\n');
    out
}

impl Answer {
    /// The answer as one line, `\n` included.
    pub fn encode(&self) -> Vec<u8> {
        let raw = match self {
            Answer::Done => RawAnswer { ok: true, error: None, facts: None },
            Answer::Peer(f) => RawAnswer { ok: true, error: None, facts: Some(f.clone()) },
            Answer::Failed(e) => RawAnswer { ok: false, error: Some(e.clone()), facts: None },
        };
        line(&raw)
    }

    /// Reads an answer line (the client library's side).
    pub fn decode(line: &[u8]) -> Result<Answer, DirectiveError> {
        let raw: RawAnswer =
            serde_json::from_slice(line).map_err(|e| DirectiveError::NotJson(e.to_string()))?;
        Ok(match (raw.ok, raw.error, raw.facts) {
            (false, e, _) => Answer::Failed(e.unwrap_or_else(|| "failed (no reason given)".into())),
            (true, _, Some(f)) if !f.version.is_empty() => Answer::Peer(f),
            (true, _, _) => Answer::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_encode_back() {
        let peer =
            Request::parse(br#"{"op":"peer","local":"127.0.0.1:8080","peer":"[::ffff:127.0.0.1]:4000"}"#)
                .unwrap();
        assert_eq!(
            peer,
            Request::Peer {
                local: "127.0.0.1:8080".parse().unwrap(),
                peer: "127.0.0.1:4000".parse().unwrap()
            }
        );
        let start = Request::parse(
            br#"{"op":"start_tls","local":"[::1]:1","peer":"[::1]:2","after":6,"sni":"a.test","alpn":["x"],"client_cert":"alpha"}"#,
        )
        .unwrap();
        for r in [
            peer,
            start,
            Request::StopTls {
                local: "1.2.3.4:5".parse().unwrap(),
                peer: "1.2.3.4:6".parse().unwrap(),
                after: 9,
            },
        ] {
            let line = r.encode();
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(Request::parse(&line[..line.len() - 1]).unwrap(), r);
        }
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let err = |s: &str| Request::parse(s.as_bytes()).unwrap_err().to_string();
        assert!(err("nonsense").starts_with("not a JSON object"));
        assert!(
            err(r#"{"op":"peer","local":"1.2.3.4:5","peer":"1.2.3.4:6","x":1}"#).contains("unknown field")
        );
        assert_eq!(
            err(r#"{"op":"dance","local":"1.2.3.4:5"}"#),
            r#"unknown op "dance" (peer, start_tls or stop_tls)"#
        );
        assert_eq!(err(r#"{"op":"peer","local":"1.2.3.4:5"}"#), r#"peer needs "peer""#);
        assert_eq!(
            err(r#"{"op":"peer","local":"1.2.3.4","peer":"1.2.3.4:6"}"#),
            r#"local "1.2.3.4" is not IP:PORT"#
        );
        assert_eq!(
            err(r#"{"op":"stop_tls","local":"1.2.3.4:5","peer":"1.2.3.4:6"}"#),
            r#"stop_tls needs "after""#
        );
        assert_eq!(
            err(r#"{"op":"peer","local":"1.2.3.4:5","peer":"1.2.3.4:6","after":1}"#),
            r#"peer takes no "after""#
        );
        assert!(err(r#"{"op":"start_tls","local":"1.2.3.4:5","peer":"1.2.3.4:6","after":1,"sni":"a b"}"#)
            .starts_with("sni"));
        assert!(err(r#"{"op":"start_tls","local":"1.2.3.4:5","peer":"1.2.3.4:6","after":1,"alpn":[""]}"#)
            .starts_with("alpn"));
        assert!(err(
            r#"{"op":"start_tls","local":"1.2.3.4:5","peer":"1.2.3.4:6","after":1,"client_cert":"../k"}"#
        )
        .starts_with("client_cert \"../k\" is not an identity name"));
        assert_eq!(
            err(r#"{"op":"stop_tls","local":"1.2.3.4:5","peer":"1.2.3.4:6","after":1,"client_cert":"a"}"#),
            r#"stop_tls takes no "client_cert""#
        );
        assert!(err(r#"{"op":"start_tls","local":"1.2.3.4:5","peer":"1.2.3.4:6","after":-1}"#)
            .starts_with("not a JSON"));
    }

    #[test]
    fn answers_round_trip() {
        let facts = PeerFacts {
            subject: Some("CN=alice".into()),
            sans: vec!["DNS:alice.test".into()],
            identity: Some("CN=alice,DNS:alice.test".into()),
            version: "TLSv1.3".into(),
            suite: "TLS_AES_128_GCM_SHA256".into(),
            alpn: None,
            sni: Some("localhost".into()),
            cert_pem: Some("-----BEGIN CERTIFICATE-----\n…".into()),
        };
        for a in [Answer::Done, Answer::Peer(facts), Answer::Failed("unknown connection".into())] {
            let line = a.encode();
            assert_eq!(Answer::decode(&line[..line.len() - 1]).unwrap(), a);
        }
        assert_eq!(String::from_utf8(Answer::Done.encode()).unwrap(), "{\"ok\":true}\n");
        assert_eq!(
            String::from_utf8(Answer::Failed("x".into()).encode()).unwrap(),
            "{\"ok\":false,\"error\":\"x\"}\n"
        );
    }
}

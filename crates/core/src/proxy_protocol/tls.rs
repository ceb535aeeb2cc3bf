//! TLS details of the client's connection as v2 TLVs, the way HAProxy sends them
//! (`send-proxy-v2-ssl-cn`), plus tlsgate's own TLV with the client certificate's identity.
//!
//! - `PP2_TYPE_ALPN` (0x01): the negotiated protocol;
//! - `PP2_TYPE_AUTHORITY` (0x02): the SNI;
//! - `PP2_TYPE_SSL` (0x20): `client` flags (SSL; CERT_CONN and CERT_SESS when a certificate was
//!   presented), `verify` (0 when that certificate verified, 1 otherwise), then sub-TLVs
//!   `SSL_VERSION` (0x21, `TLSv1.3`), `SSL_CIPHER` (0x23, IANA name), `SSL_CN` (0x22);
//! - `TLSGATE_CLIENT_CERT` (0xE7): sub-TLVs of the client certificate — 0x01 subject DN, 0x02 a
//!   DNS SAN, 0x03 a URI SAN, 0x04 an IP SAN (text), one sub-TLV per value.

use super::v2::{parse_tlvs, push_tlv};
use super::{ParseError, Tlv, TlvType};
use crate::identity::PeerIdentity;

pub const CLIENT_SSL: u8 = 0x01;
pub const CLIENT_CERT_CONN: u8 = 0x02;
pub const CLIENT_CERT_SESS: u8 = 0x04;

/// Sub-TLV types inside [`TlvType::TLSGATE_CLIENT_CERT`].
pub const CERT_SUBJECT: TlvType = TlvType(0x01);
pub const CERT_DNS: TlvType = TlvType(0x02);
pub const CERT_URI: TlvType = TlvType(0x03);
pub const CERT_IP: TlvType = TlvType(0x04);

/// What tlsgate knows of the client's TLS session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    pub sni: Option<String>,
    pub alpn: Option<Vec<u8>>,
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// IANA name, e.g. `TLS_AES_128_GCM_SHA256`.
    pub cipher: String,
    /// The verified client certificate's identity, if one was presented.
    pub client_cert: Option<PeerIdentity>,
}

/// The TLVs describing `info`. Values too long for a TLV (over 64 KiB) are left out.
pub fn tlvs(info: &TlsInfo) -> Vec<Tlv> {
    let mut out = Vec::new();
    if let Some(alpn) = &info.alpn {
        out.push(Tlv { kind: TlvType::ALPN, value: alpn.clone() });
    }
    if let Some(sni) = &info.sni {
        out.push(Tlv { kind: TlvType::AUTHORITY, value: sni.as_bytes().to_vec() });
    }
    let mut ssl = Vec::new();
    let has_cert = info.client_cert.is_some();
    ssl.push(CLIENT_SSL | if has_cert { CLIENT_CERT_CONN | CLIENT_CERT_SESS } else { 0 });
    ssl.extend_from_slice(&u32::from(!has_cert).to_be_bytes());
    sub(TlvType::SSL_VERSION, info.version.as_bytes(), &mut ssl);
    sub(TlvType::SSL_CIPHER, info.cipher.as_bytes(), &mut ssl);
    if let Some(cn) = info.client_cert.as_ref().and_then(|c| c.common_name.as_ref()) {
        sub(TlvType::SSL_CN, cn.as_bytes(), &mut ssl);
    }
    out.push(Tlv { kind: TlvType::SSL, value: ssl });
    if let Some(cert) = &info.client_cert {
        let mut v = Vec::new();
        sub(CERT_SUBJECT, cert.subject.as_bytes(), &mut v);
        for d in &cert.dns {
            sub(CERT_DNS, d.as_bytes(), &mut v);
        }
        for u in &cert.uri {
            sub(CERT_URI, u.as_bytes(), &mut v);
        }
        for ip in &cert.ip {
            sub(CERT_IP, ip.to_string().as_bytes(), &mut v);
        }
        out.push(Tlv { kind: TlvType::TLSGATE_CLIENT_CERT, value: v });
    }
    out
}

/// Appends a sub-TLV; a value over 64 KiB (no certificate field comes near) is left out.
fn sub(kind: TlvType, value: &[u8], into: &mut Vec<u8>) {
    let _ = push_tlv(into, kind, value);
}

/// The parts of a `PP2_TYPE_SSL` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SslTlv {
    pub client: u8,
    pub verify: u32,
    pub sub: Vec<Tlv>,
}

pub fn parse_ssl(value: &[u8]) -> Result<SslTlv, ParseError> {
    let [client, a, b, c, d, rest @ ..] = value else {
        return Err(ParseError::Invalid("v2: SSL TLV shorter than 5 bytes".into()));
    };
    Ok(SslTlv { client: *client, verify: u32::from_be_bytes([*a, *b, *c, *d]), sub: parse_tlvs(rest)? })
}

/// Reads [`tlvs`] back: what a backend learns from the header.
pub fn parse_tls_info(tlvs: &[Tlv]) -> Result<TlsInfo, ParseError> {
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let mut info = TlsInfo::default();
    for t in tlvs {
        match t.kind {
            TlvType::ALPN => info.alpn = Some(t.value.clone()),
            TlvType::AUTHORITY => info.sni = Some(text(&t.value)),
            TlvType::SSL => {
                for s in parse_ssl(&t.value)?.sub {
                    match s.kind {
                        TlvType::SSL_VERSION => info.version = text(&s.value),
                        TlvType::SSL_CIPHER => info.cipher = text(&s.value),
                        TlvType::SSL_CN => {
                            info.client_cert.get_or_insert_with(PeerIdentity::default).common_name =
                                Some(text(&s.value))
                        }
                        _ => {}
                    }
                }
            }
            TlvType::TLSGATE_CLIENT_CERT => {
                let cert = info.client_cert.get_or_insert_with(PeerIdentity::default);
                for s in parse_tlvs(&t.value)? {
                    match s.kind {
                        CERT_SUBJECT => cert.subject = text(&s.value),
                        CERT_DNS => cert.dns.push(text(&s.value)),
                        CERT_URI => cert.uri.push(text(&s.value)),
                        CERT_IP => {
                            let ip = text(&s.value);
                            cert.ip.push(
                                ip.parse().map_err(|_| ParseError::Invalid(format!("bad IP SAN {ip:?}")))?,
                            )
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

use super::tls::{parse_tls_info, tlvs, TlsInfo};
use super::*;
use crate::identity::PeerIdentity;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn v1_known_lines() {
    let h = Header::tcp(Version::V1, sa("192.168.0.1:56324"), sa("192.168.0.11:443"), Vec::new());
    assert_eq!(h.encode().unwrap(), b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
    let h6 = Header::tcp(Version::V1, sa("[2001:db8::1]:1"), sa("[::1]:2"), Vec::new());
    assert_eq!(h6.encode().unwrap(), b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n");
    let (parsed, used) = parse(b"PROXY UNKNOWN\r\nGET /").unwrap();
    assert_eq!((parsed.addresses, used), (Addresses::Unspecified, 15));
}

#[test]
fn v2_known_bytes() {
    let h = Header::tcp(Version::V2, sa("10.0.0.1:1000"), sa("10.0.0.2:443"), Vec::new());
    let bytes = h.encode().unwrap();
    let mut want = V2_SIGNATURE.to_vec();
    want.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c, 10, 0, 0, 1, 10, 0, 0, 2, 0x03, 0xe8, 0x01, 0xbb]);
    assert_eq!(bytes, want);
    // LOCAL, UNSPEC: what a health check sends.
    let mut local = V2_SIGNATURE.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    let (h, used) = parse(&local).unwrap();
    assert_eq!((h.command, h.addresses, used), (Command::Local, Addresses::Unspecified, 16));
}

#[test]
fn v2_local_addresses_are_not_the_clients() {
    // LOCAL with an IPv4 block: the addresses parse (and re-encode) but relay nothing.
    let mut local = V2_SIGNATURE.to_vec();
    local.extend_from_slice(&[0x20, 0x11, 0x00, 0x0c, 10, 9, 9, 9, 10, 0, 0, 2, 0x03, 0xe8, 0x01, 0xbb]);
    let (h, _) = parse(&local).unwrap();
    assert_eq!(h.command, Command::Local);
    assert!(matches!(h.addresses, Addresses::Tcp { .. }));
    assert_eq!(h.relayed(), None);
    let proxy = Header::tcp(Version::V2, sa("10.9.9.9:1000"), sa("10.0.0.2:443"), Vec::new());
    assert_eq!(proxy.relayed(), Some((sa("10.9.9.9:1000"), sa("10.0.0.2:443"))));
    let (v1, _) = parse(b"PROXY TCP4 10.9.9.9 10.0.0.2 1000 443\r\n").unwrap();
    assert_eq!(v1.relayed(), proxy.relayed());
    let (unknown, _) = parse(b"PROXY UNKNOWN\r\n").unwrap();
    assert_eq!(unknown.relayed(), None);
}

fn samples() -> Vec<Header> {
    let info = TlsInfo {
        sni: Some("api.example.test".into()),
        alpn: Some(b"h2".to_vec()),
        version: "TLSv1.3".into(),
        cipher: "TLS_AES_128_GCM_SHA256".into(),
        client_cert: Some(PeerIdentity {
            subject: "CN=alice,O=Example".into(),
            common_name: Some("alice".into()),
            dns: vec!["alice.example".into()],
            uri: vec!["spiffe://example/alice".into()],
            ip: vec!["10.9.8.7".parse().unwrap()],
        }),
    };
    vec![
        Header::tcp(Version::V1, sa("1.2.3.4:5"), sa("6.7.8.9:10"), Vec::new()),
        Header::tcp(Version::V1, sa("[fe80::1]:65535"), sa("[::]:0"), Vec::new()),
        Header {
            version: Version::V1,
            command: Command::Proxy,
            addresses: Addresses::Unspecified,
            tlvs: Vec::new(),
        },
        Header::tcp(Version::V2, sa("1.2.3.4:5"), sa("6.7.8.9:10"), tlvs(&info)),
        Header::tcp(
            Version::V2,
            sa("[2001:db8::7]:443"),
            sa("[2001:db8::8]:8443"),
            tlvs(&TlsInfo::default()),
        ),
        Header {
            version: Version::V2,
            command: Command::Local,
            addresses: Addresses::Unspecified,
            tlvs: Vec::new(),
        },
        Header::tcp(
            Version::V2,
            sa("1.2.3.4:5"),
            sa("6.7.8.9:10"),
            vec![Tlv { kind: TlvType(0xEE), value: vec![9; 300] }],
        ),
    ]
}

#[test]
fn round_trip_and_every_split_is_incomplete_until_whole() {
    for h in samples() {
        let bytes = h.encode().unwrap();
        let mut with_payload = bytes.clone();
        with_payload.extend_from_slice(b"\x16\x03\x01 client bytes");
        assert_eq!(parse(&with_payload).unwrap(), (h.clone(), bytes.len()), "{h:?}");
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut]), Err(ParseError::Incomplete), "{h:?} cut at {cut}");
        }
    }
}

#[test]
fn tls_details_survive_the_trip() {
    let h = &samples()[3];
    let (parsed, _) = parse(&h.encode().unwrap()).unwrap();
    let info = parse_tls_info(&parsed.tlvs).unwrap();
    assert_eq!(info.sni.as_deref(), Some("api.example.test"));
    assert_eq!(info.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!((info.version.as_str(), info.cipher.as_str()), ("TLSv1.3", "TLS_AES_128_GCM_SHA256"));
    let cert = info.client_cert.unwrap();
    assert_eq!(cert.common_name.as_deref(), Some("alice"));
    assert_eq!(cert.subject, "CN=alice,O=Example");
    assert_eq!((cert.dns.len(), cert.uri.len(), cert.ip.len()), (1, 1, 1));
    let ssl = tls::parse_ssl(parsed.tlv(TlvType::SSL).unwrap()).unwrap();
    assert_eq!((ssl.client, ssl.verify), (0x07, 0));
    let anon = parse_tls_info(&tlvs(&TlsInfo::default())).unwrap();
    assert!(anon.client_cert.is_none());
}

#[test]
fn malformed_headers_are_refused() {
    let mut v2 = samples()[3].encode().unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"GET / HTTP/1.1\r\n".to_vec(), "neither"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n".to_vec(), "4 fields"),
        (b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n".to_vec(), "family"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n".to_vec(), "bad port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n".to_vec(), "bad port"),
        (b"PROXY TCP5 x\r\n".to_vec(), "family"),
        ([b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat(), "107"),
        ([V2_SIGNATURE.as_slice(), &[0x31, 0x11, 0, 0]].concat(), "version 3"),
        ([V2_SIGNATURE.as_slice(), &[0x2f, 0x11, 0, 0]].concat(), "command"),
        ([V2_SIGNATURE.as_slice(), &[0x21, 0x11, 0, 4, 1, 2, 3, 4]].concat(), "truncated"),
        ([V2_SIGNATURE.as_slice(), &[0x21, 0x99, 0, 0]].concat(), "family"),
        ([V2_SIGNATURE.as_slice(), &[0x21, 0x11, 0xff, 0xff]].concat(), "limit"),
    ];
    for (bytes, want) in cases {
        match parse(&bytes) {
            Err(ParseError::Invalid(why)) => assert!(why.contains(want), "{want:?} not in {why:?}"),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(&bytes)),
        }
    }
    // A TLV whose length runs past the header.
    let last_tlv_len_at = 16 + 12 + 1; // first TLV's length field
    v2[last_tlv_len_at] = 0xff;
    assert!(matches!(parse(&v2), Err(ParseError::Invalid(_))));
}

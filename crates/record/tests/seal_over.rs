//! `RecordKey::seal_over` writes a record over whatever a reused buffer holds: the same bytes as
//! `RecordKey::seal` into an empty one, whichever the buffer's old length, for every version and
//! suite; and the record opens to the plaintext and content type it was sealed with.

use tlsgate_record::crypto::{RecordKey, Suite, Version};
use tlsgate_record::frame::{ContentType, Header, HEADER_LEN, MAX_PLAINTEXT};

fn key(version: Version, suite: Suite) -> RecordKey {
    let len = if suite == Suite::Aes128Gcm { 16 } else { 32 };
    RecordKey::from_parts(version, suite, &vec![0x42; len], [9; 12], 5).unwrap()
}

#[test]
fn a_record_sealed_over_old_bytes_equals_one_sealed_into_an_empty_buffer() {
    let plaintext: Vec<u8> = (0..MAX_PLAINTEXT).map(|i| (i * 7) as u8).collect();
    for version in [Version::Tls12, Version::Tls13] {
        for suite in [Suite::Aes128Gcm, Suite::Aes256Gcm, Suite::Chacha20Poly1305] {
            let (mut fresh, mut over, mut opener) =
                (key(version, suite), key(version, suite), key(version, suite));
            // Old contents longer, shorter and as long as the records, and none.
            let mut buf = vec![0xee; 20_000];
            for len in [1460, 1, 16384, 0, 700, MAX_PLAINTEXT, 3] {
                let mut want = Vec::new();
                let seq = fresh.seal(ContentType::APPLICATION_DATA, &plaintext[..len], &mut want).unwrap();
                assert_eq!(
                    over.seal_over(ContentType::APPLICATION_DATA, &plaintext[..len], &mut buf).unwrap(),
                    seq
                );
                assert_eq!(buf, want, "{version:?} {suite:?} {len} bytes");

                let header = Header::parse(buf[..HEADER_LEN].try_into().unwrap());
                let mut body = buf[HEADER_LEN..].to_vec();
                let opened = opener.open(header, &mut body).unwrap();
                assert_eq!(opened.content_type, ContentType::APPLICATION_DATA);
                assert_eq!(&body[opened.plaintext], &plaintext[..len]);
            }
            buf.clear();
            buf.resize(3, 0xee);
        }
    }
}

#[test]
fn sealing_over_refuses_a_plaintext_beyond_the_record_limit() {
    let mut k = key(Version::Tls13, Suite::Aes128Gcm);
    let mut buf = vec![1, 2, 3];
    assert!(k.seal_over(ContentType::APPLICATION_DATA, &vec![0; MAX_PLAINTEXT + 1], &mut buf).is_err());
    assert_eq!(k.seq(), 5, "no sequence number used");
}

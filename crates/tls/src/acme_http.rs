//! HTTP-01 (RFC 8555 §8.3) on an optional plain port: the answer to one request head. Only
//! `GET /.well-known/acme-challenge/TOKEN` for a token under validation gets a body (the key
//! authorization); anything else on that port gets a 404, so the port serves nothing else.

/// Request heads longer than this are refused (a validation request is a few hundred bytes).
pub const MAX_HEAD: usize = 8 * 1024;

const PREFIX: &str = "/.well-known/acme-challenge/";

/// What the port answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200 with the key authorization.
    KeyAuthorization(String),
    NotFound,
    /// Not an HTTP/1.x request line.
    BadRequest,
}

/// Whether `head` holds a whole request head (through the empty line).
pub fn complete(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

/// The token a request asks for, if it is a challenge request: `Err` for a head that is not
/// an HTTP/1.x request.
fn token(head: &[u8]) -> Result<Option<&str>, ()> {
    let line_end = head.iter().position(|&b| b == b'\n').ok_or(())?;
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| ())?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(());
    };
    if !version.starts_with("HTTP/1.") {
        return Err(());
    }
    if method != "GET" && method != "HEAD" {
        return Ok(None);
    }
    // Tokens are base64url (RFC 8555 §8.1); anything else is not one of ours.
    Ok(target
        .strip_prefix(PREFIX)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')))
}

/// The answer to `head`, `lookup` giving the key authorization of a token under validation.
pub fn answer(head: &[u8], lookup: impl Fn(&str) -> Option<String>) -> Answer {
    match token(head) {
        Err(()) => Answer::BadRequest,
        Ok(Some(t)) => lookup(t).map(Answer::KeyAuthorization).unwrap_or(Answer::NotFound),
        Ok(None) => Answer::NotFound,
    }
}

/// The response bytes for an answer.
pub fn response(answer: &Answer) -> Vec<u8> {
    let (status, body) = match answer {
        Answer::KeyAuthorization(k) => ("200 OK", k.as_str()),
        Answer::NotFound => ("404 Not Found", "not found\n"),
        Answer::BadRequest => ("400 Bad Request", "bad request\n"),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Fuzzing: any bytes as a request head never panic, and only a well-formed challenge path
/// reaches the lookup.
pub fn fuzz_check(data: &[u8]) {
    let _ = complete(data);
    let answer = answer(data, |t| {
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        Some(t.to_string())
    });
    let _ = response(&answer);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(t: &str) -> Option<String> {
        (t == "abc_-1").then(|| "abc_-1.thumb".to_string())
    }

    #[test]
    fn answers_only_known_challenge_tokens() {
        let get = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            answer(get("/.well-known/acme-challenge/abc_-1").as_bytes(), lookup),
            Answer::KeyAuthorization("abc_-1.thumb".into())
        );
        assert_eq!(answer(get("/.well-known/acme-challenge/other").as_bytes(), lookup), Answer::NotFound);
        assert_eq!(answer(get("/.well-known/acme-challenge/../x").as_bytes(), lookup), Answer::NotFound);
        assert_eq!(answer(get("/").as_bytes(), lookup), Answer::NotFound);
        assert_eq!(
            answer(b"POST /.well-known/acme-challenge/abc_-1 HTTP/1.1\r\n\r\n", lookup),
            Answer::NotFound
        );
        assert_eq!(answer(b"\x16\x03\x01\x00\x05hello\n", lookup), Answer::BadRequest);
        assert!(complete(b"GET / HTTP/1.0\r\n\r\n") && !complete(b"GET / HTTP/1.0\r\n"));
        fuzz_check(b"GET /.well-known/acme-challenge/\xff HTTP/1.1\r\n\r\n");
    }
}

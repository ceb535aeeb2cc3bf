//! HTTP/1.1 heads (RFC 9112 §2–§5) as a proxy reads them: a request line or status line and
//! header fields, ended by an empty line, read from bytes that arrive cut anywhere.
//!
//! Limits are checked as bytes arrive, so a peer cannot make the reader hold more than
//! [`MAX_HEAD`] bytes or [`MAX_HEADERS`] fields; the I/O shell adds the time limit. Only what a
//! proxy needs is accepted: CRLF line ends, no obsolete line folding (RFC 9112 §5.2), token
//! field names, visible ASCII in the request line.

use tlsgate_tunnel::addr::Host;
use tlsgate_tunnel::Target;

/// The largest head accepted, request line and fields included.
pub const MAX_HEAD: usize = 8 * 1024;
/// The most header fields accepted.
pub const MAX_HEADERS: usize = 64;

/// Why a head was refused, and the status that answers it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("head larger than {0} bytes")]
    TooLarge(usize),
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyFields,
    #[error("malformed head: {0}")]
    Malformed(&'static str),
    #[error("method {0:?} is not CONNECT")]
    NotConnect(String),
    #[error("CONNECT target {0:?} is not host:port")]
    BadTarget(String),
}

impl HeadError {
    /// The status a proxy answers with (RFC 9110 §15.5, RFC 6585 §5).
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge(_) | HeadError::TooManyFields => 431,
            HeadError::NotConnect(_) => 405,
            HeadError::Malformed(_) | HeadError::BadTarget(_) => 400,
        }
    }
}

/// Where the head in `buf` ends (just past its empty line), `None` while more is due. Fails
/// once `buf` holds `limit` bytes without an end, or the end lies past `limit`.
pub fn head_end(buf: &[u8], limit: usize) -> Result<Option<usize>, HeadError> {
    match buf.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) if at + 4 <= limit => Ok(Some(at + 4)),
        Some(_) => Err(HeadError::TooLarge(limit)),
        None if buf.len() >= limit => Err(HeadError::TooLarge(limit)),
        None => Ok(None),
    }
}

/// A request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

/// A response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        field(&self.headers, name)
    }

    /// The CONNECT target (authority-form, RFC 9112 §3.2.3): `host:port`, `[v6]:port`.
    pub fn connect_target(&self) -> Result<Target, HeadError> {
        if !self.method.eq_ignore_ascii_case("CONNECT") {
            return Err(HeadError::NotConnect(self.method.clone()));
        }
        parse_authority(&self.target)
    }
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        field(&self.headers, name)
    }
}

fn field<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// `host:port` or `[v6]:port`; names that are IP literals become addresses.
pub fn parse_authority(s: &str) -> Result<Target, HeadError> {
    let bad = || HeadError::BadTarget(s.chars().take(300).collect());
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (v6, port) = rest.split_once("]:").ok_or_else(bad)?;
            let ip: std::net::Ipv6Addr = v6.parse().map_err(|_| bad())?;
            (Host::Ip(ip.into()), port)
        }
        None => {
            let (name, port) = s.rsplit_once(':').ok_or_else(bad)?;
            let valid =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            if !valid {
                return Err(bad());
            }
            (Target::name(&name.to_ascii_lowercase(), 0).map_err(|_| bad())?.host, port)
        }
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
    if !port.to_string().eq(port_text(s)) {
        return Err(bad());
    }
    Ok(Target { host, port })
}

fn port_text(s: &str) -> &str {
    s.rsplit_once(':').map_or("", |(_, p)| p)
}

/// Header fields in order, names as sent.
pub type Fields = Vec<(String, String)>;

/// Splits a head (as [`head_end`] delimited it) into its first line and fields.
fn lines(head: &[u8]) -> Result<(&str, Fields), HeadError> {
    let text = std::str::from_utf8(head).map_err(|_| HeadError::Malformed("not UTF-8"))?;
    let text = text.strip_suffix("\r\n\r\n").ok_or(HeadError::Malformed("no empty line"))?;
    let mut it = text.split("\r\n");
    let first = it.next().unwrap_or("");
    let mut headers = Vec::new();
    for line in it {
        if headers.len() == MAX_HEADERS {
            return Err(HeadError::TooManyFields);
        }
        if line.starts_with([' ', '\t']) {
            return Err(HeadError::Malformed("obsolete line folding"));
        }
        let (name, value) = line.split_once(':').ok_or(HeadError::Malformed("field without a colon"))?;
        let token = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(HeadError::Malformed("field name is not a token"));
        }
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(HeadError::Malformed("control character in a field value"));
        }
        headers.push((name.to_string(), value.trim_matches([' ', '\t']).to_string()));
    }
    Ok((first, headers))
}

/// A request head: `METHOD TARGET HTTP/1.x` and its fields.
pub fn parse_request(head: &[u8]) -> Result<Request, HeadError> {
    let (first, headers) = lines(head)?;
    let mut parts = first.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed("request line is not METHOD TARGET VERSION"));
    };
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(HeadError::Malformed("not HTTP/1.x"));
    }
    let visible = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    if !visible(method) || !visible(target) {
        return Err(HeadError::Malformed("request line has invisible characters"));
    }
    Ok(Request { method: method.to_string(), target: target.to_string(), headers })
}

/// A response head: `HTTP/1.x STATUS REASON` and its fields.
pub fn parse_response(head: &[u8]) -> Result<Response, HeadError> {
    let (first, headers) = lines(head)?;
    let rest = first
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| first.strip_prefix("HTTP/1.0 "))
        .ok_or(HeadError::Malformed("not HTTP/1.x"))?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|s| (100..600).contains(s) && code.len() == 3)
        .ok_or(HeadError::Malformed("bad status code"))?;
    Ok(Response { status, reason: reason.to_string(), headers })
}

/// A response head with `headers`; `Content-Length: 0` on refusals so that a client reading
/// the answer knows it ended.
pub fn response(status: u16, reason: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (n, v) in headers {
        // Values are ours, but a reason text may quote a peer: keep it on one line.
        let v: String = v.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    if status != 200 {
        out.push_str("Content-Length: 0\r\nConnection: close\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// The fuzz target's checks: fed whole or cut at every position, [`head_end`] finds the same
/// end and never one past the limit; parsing what it delimits never panics.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    let limit = 512;
    let whole = head_end(data, limit);
    let mut cut = Ok(None);
    for n in 0..=data.len() {
        cut = head_end(&data[..n], limit);
        if !matches!(cut, Ok(None)) {
            break;
        }
    }
    match (&whole, &cut) {
        (Ok(Some(a)), Ok(Some(b))) => assert_eq!(a, b),
        (Err(_), _) | (_, Err(_)) | (Ok(None), Ok(None)) => {}
        other => panic!("whole and cut disagree: {other:?}"),
    }
    if let Ok(Some(end)) = whole {
        assert!(end <= limit);
        if let Ok(r) = parse_request(&data[..end]) {
            let _ = r.connect_target();
        }
        let _ = parse_response(&data[..end]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_head_cut_anywhere_ends_at_its_empty_line() {
        let head = b"CONNECT internal.test:443 HTTP/1.1\r\nHost: internal.test:443\r\nTlsgate-Downgrade: 1\r\n\r\nrest";
        for n in 0..head.len() {
            let got = head_end(&head[..n], MAX_HEAD).unwrap();
            assert_eq!(got, (n >= head.len() - 4).then_some(head.len() - 4), "at {n}");
        }
        let r = parse_request(&head[..head.len() - 4]).unwrap();
        assert_eq!(r.connect_target().unwrap(), Target::name("internal.test", 443).unwrap());
        assert!(crate::downgrade::requested(&r.headers));
        assert_eq!(r.header("host"), Some("internal.test:443"));
    }

    #[test]
    fn oversized_heads_and_too_many_fields_are_431() {
        let big = vec![b'a'; MAX_HEAD];
        assert_eq!(head_end(&big, MAX_HEAD).unwrap_err().status(), 431);
        let mut late = b"CONNECT a:1 HTTP/1.1\r\n".to_vec();
        late.resize(MAX_HEAD, b'x');
        late.extend_from_slice(b"\r\n\r\n");
        assert_eq!(head_end(&late, MAX_HEAD + 10).unwrap(), None.or(Some(late.len())));
        assert!(head_end(&late, MAX_HEAD).is_err());
        let mut many = b"CONNECT a:1 HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_request(&many).unwrap_err(), HeadError::TooManyFields);
    }

    #[test]
    fn targets_other_than_host_port_are_refused() {
        let ok = |s: &str| parse_authority(s).unwrap();
        assert_eq!(ok("[::1]:443"), Target::ip(std::net::Ipv6Addr::LOCALHOST, 443));
        assert_eq!(ok("127.0.0.1:8443"), Target::ip([127, 0, 0, 1], 8443));
        assert_eq!(ok("Example.COM:443"), Target::name("example.com", 443).unwrap());
        for bad in
            ["example.com", "example.com:0", "example.com:+443", "a b:1", ":443", "[::1]443", "x:65536"]
        {
            assert_eq!(parse_authority(bad).unwrap_err().status(), 400, "{bad}");
        }
        let get = parse_request(b"GET /proxy.pac HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(get.connect_target().unwrap_err().status(), 405);
    }

    #[test]
    fn malformed_heads_are_400() {
        for bad in [
            &b"CONNECT a:1\r\n\r\n"[..],
            b"CONNECT a:1 HTTP/2\r\n\r\n",
            b"CONNECT a:1 HTTP/1.1\r\nNo colon\r\n\r\n",
            b"CONNECT a:1 HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            b"CONNECT a:1 HTTP/1.1\r\nBad name: b\r\n\r\n",
            b"CONNECT  a:1 HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse_request(bad).unwrap_err().status(), 400, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn responses_parse_and_refusals_say_they_are_empty() {
        let r = response(403, "Forbidden", &[("Tlsgate-Reason", "internal.test:22 not allowed\r\nX: y")]);
        let text = String::from_utf8(r.clone()).unwrap();
        assert!(text.contains("Content-Length: 0\r\n"), "{text}");
        let end = head_end(&r, MAX_HEAD).unwrap().unwrap();
        let parsed = parse_response(&r[..end]).unwrap();
        assert_eq!(parsed.status, 403);
        assert_eq!(parsed.header("tlsgate-reason"), Some("internal.test:22 not allowed  X: y"));
        assert!(parse_response(b"HTTP/1.1 20 x\r\n\r\n").is_err());
    }

    #[test]
    fn the_fuzz_check_holds_for_interesting_inputs() {
        fuzz_check(b"CONNECT a:1 HTTP/1.1\r\n\r\n");
        fuzz_check(b"\r\n\r\n");
        fuzz_check(&[b'\r'; 600]);
        fuzz_check(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nxx");
    }
}

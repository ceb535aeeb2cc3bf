//! Entry point for the fuzz target in `fuzz/`; checks invariants beyond "no panic".

use crate::{Answer, Lines, Request, MAX_LINE};

/// Every line of `lines` until the end or the first error.
fn drain(lines: &mut Lines, out: &mut Vec<Result<Vec<u8>, ()>>) {
    loop {
        match lines.next_line() {
            Ok(Some(line)) => out.push(Ok(line)),
            Ok(None) => return,
            Err(_) => {
                out.push(Err(()));
                return;
            }
        }
    }
}

/// The first byte picks how the rest is cut into reads. Cut or whole, the reader yields the same
/// lines; it never holds more than a line's limit plus one read; a request that parses encodes
/// back to itself; answers decode without panicking.
pub fn lines(data: &[u8]) {
    let Some((&cut, rest)) = data.split_first() else { return };
    let size = (cut as usize % 64) + 1;
    let mut whole = Lines::default();
    whole.push(rest);
    let mut expected = Vec::new();
    drain(&mut whole, &mut expected);

    let mut cut_reader = Lines::default();
    let mut got = Vec::new();
    for chunk in rest.chunks(size) {
        cut_reader.push(chunk);
        drain(&mut cut_reader, &mut got);
        assert!(cut_reader.held() <= MAX_LINE + 1 + size || got.last() == Some(&Err(())));
        if got.last() == Some(&Err(())) {
            break;
        }
    }
    // A too-long line is found as soon as the limit is passed when cut, only at its end when
    // whole: the lines before it agree.
    let ok = |v: &[Result<Vec<u8>, ()>]| v.iter().take_while(|l| l.is_ok()).cloned().collect::<Vec<_>>();
    assert_eq!(ok(&got), ok(&expected));

    for line in got.into_iter().flatten() {
        if let Ok(request) = Request::parse(&line) {
            let encoded = request.encode();
            assert_eq!(Request::parse(&encoded[..encoded.len() - 1]).as_ref(), Ok(&request));
        }
        let _ = Answer::decode(&line);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fuzz_check_holds_for_interesting_inputs() {
        super::lines(b"\x03{\"op\":\"peer\",\"local\":\"1.2.3.4:5\",\"peer\":\"[::1]:6\"}\n{}\n");
        super::lines(&[b'x'; 70_000]);
        super::lines(b"\x00\n\n\r\n");
    }
}

#![no_main]
// Any bytes: parse never panics, and whatever parses re-encodes to a header that parses the same.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tlsgate_core::proxy_protocol::fuzz_check(data));

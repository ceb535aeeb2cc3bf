#![no_main]
// Any bytes as a request head on the HTTP-01 port: never a panic, and only a well-formed
// challenge token reaches the lookup.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tlsgate_tls::acme_http::fuzz_check(data));

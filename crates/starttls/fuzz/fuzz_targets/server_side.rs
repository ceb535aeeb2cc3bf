#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tlsgate_starttls::fuzzing::server_side(data));

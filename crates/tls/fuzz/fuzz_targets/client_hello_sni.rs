#![no_main]
// Any first bytes of a connection: the SNI peek never panics and answers consistently.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tlsgate_tls::peek::fuzz_check(data));

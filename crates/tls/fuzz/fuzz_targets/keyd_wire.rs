#![no_main]
// Any bytes a keyd client or keyd may send: framing and decoding never panic, and what decodes
// encodes back to the same message.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tlsgate_tls::keyd::fuzz_check(data));

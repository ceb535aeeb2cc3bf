#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tlsgate_record::fuzzing::session_rules(data));

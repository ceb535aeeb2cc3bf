#![no_main]
// Any bytes, cut anywhere: the head readers never panic, never take more than their limit, and
// agree with a reader fed everything at once.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tlsgate_connect::head::fuzz_check(data));

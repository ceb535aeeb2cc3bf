#![no_main]
// Any bytes, cut anywhere: the line reader never holds more than its limit, agrees with a reader
// fed everything at once, and every request it parses encodes back to the same request.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tlsgate_directive::fuzzing::lines(data));

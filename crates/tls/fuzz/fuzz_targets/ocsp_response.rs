#![no_main]
// Any bytes as the OCSP responder's answer (or an `ocsp_file`): parsing, the signature and
// CertID checks never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tlsgate_tls::ocsp::fuzz_check(data));

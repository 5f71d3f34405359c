#![no_main]
//! See `ptnet_backend::fuzzing::virtq`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ptnet_backend::fuzzing::virtq(data));

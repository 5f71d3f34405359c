#![no_main]
//! See `ptnet_backend::fuzzing::slots`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ptnet_backend::fuzzing::slots(data));

#![no_main]
//! See `ptnet_backend::fuzzing::control`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ptnet_backend::fuzzing::control(data));

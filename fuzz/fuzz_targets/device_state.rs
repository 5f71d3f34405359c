#![no_main]
//! See `ptnet_backend::fuzzing::device_state`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ptnet_backend::fuzzing::device_state(data));

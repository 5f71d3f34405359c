#![no_main]
//! See `ptnet_backend::fuzzing::vale_frames`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ptnet_backend::fuzzing::vale_frames(data));

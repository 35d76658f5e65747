//! Fuzz target `frame`: see `party_node::fuzzing::frame_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| party_node::fuzzing::frame_decode(data));

//! Fuzz target `hello`: see `party_node::fuzzing::hello`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| party_node::fuzzing::hello(data));

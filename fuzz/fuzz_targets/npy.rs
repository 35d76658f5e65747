//! Fuzz target `npy`: see `party_node::fuzzing::npy`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| party_node::fuzzing::npy(data));

//! Fuzz target `csv`: see `party_node::fuzzing::csv`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| party_node::fuzzing::csv(data));

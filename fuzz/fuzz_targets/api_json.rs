//! Fuzz target `api_json`: see `party_node::fuzzing::api_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| party_node::fuzzing::api_json(data));

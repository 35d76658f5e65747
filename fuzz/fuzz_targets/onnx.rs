//! Fuzz target `onnx`: see `party_node::fuzzing::onnx`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| party_node::fuzzing::onnx(data));

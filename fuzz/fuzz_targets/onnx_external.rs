//! Fuzz target `onnx_external`: see `party_node::fuzzing::onnx_external`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| party_node::fuzzing::onnx_external(data));

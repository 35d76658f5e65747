//! Replays the fuzz corpora and every crash the fuzzer found (`fuzz/corpus/<target>/`,
//! `fuzz/artifacts/<target>/`) through the same entry points the fuzz targets call, so CI guards
//! them on stable Rust. A panic here is a decoder bug.

use std::path::Path;

#[test]
fn every_committed_fuzz_input_is_handled() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut total = 0;
    for (name, target) in party_node::fuzzing::TARGETS {
        let mut n = 0;
        for dir in ["corpus", "artifacts"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else { continue };
            for e in entries {
                let path = e.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let r = std::panic::catch_unwind(|| target(&data));
                assert!(r.is_ok(), "fuzz target {name} panics on {}", path.display());
                n += 1;
            }
        }
        assert!(n > 0, "no corpus for fuzz target {name}");
        total += n;
    }
    eprintln!("{total} fuzz inputs replayed");
}

//! Every fuzz target's committed corpus (`fuzz/corpus/<target>/`, minimized), replayed
//! through what the target does (`fuzz/src/lib.rs`, included here) with no fuzzing
//! engine: what fuzzing once found stays fixed. Not privileged.

#[path = "../../fuzz/src/lib.rs"]
mod targets;

use std::path::Path;

#[test]
fn every_fuzz_corpus_replays_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut replayed = Vec::new();
    for (name, run) in targets::TARGETS {
        let dir = root.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("the corpus of {name} ({}): {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "the corpus of {name} is empty");
        for input in &inputs {
            let data = std::fs::read(input).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{name} panicked on {}", input.display());
        }
        replayed.push(format!("{name}: {}", inputs.len()));
    }
    eprintln!("replayed {}", replayed.join(", "));
}

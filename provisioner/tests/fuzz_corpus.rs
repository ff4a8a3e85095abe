#![allow(clippy::unwrap_used)]
//! Replays every file of the fuzz corpus (`fuzz/corpus/<target>/`) through its
//! entry point in `provisioner::fuzz`: the seeds, and every input a fuzzing run
//! found interesting and was committed, including past crashes. Runs on every
//! `cargo test`, without libFuzzer.

use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

#[test]
fn every_target_has_a_corpus_and_replays_it() {
    for (name, run) in provisioner::fuzz::TARGETS {
        let dir = corpus_dir(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(
            files.iter().any(|f| f
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-")),
            "{name}: no seeds in {}",
            dir.display()
        );
        for file in &files {
            let data = std::fs::read(file).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{name}: {} panicked", file.display());
        }
        eprintln!("{name}: {} inputs replayed", files.len());
    }
}

#[test]
fn every_target_directory_is_a_known_target() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fuzz_targets");
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(
            provisioner::fuzz::TARGETS.iter().any(|(n, _)| *n == stem),
            "fuzz/fuzz_targets/{stem}.rs has no entry in provisioner::fuzz::TARGETS"
        );
    }
}

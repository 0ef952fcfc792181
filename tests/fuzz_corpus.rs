//! Every committed fuzz seed (`fuzz/seeds/<target>/`) through its target, as
//! `cargo fuzz run <target> <seeds> -- -runs=0` would, but in the ordinary build: the corpus
//! holds the fixtures the targets started from and every input a fuzzing run found to crash,
//! so this is the regression test for all of them. The fuzzing itself is `scripts/fuzz`.

#[path = "../fuzz/targets.rs"]
mod targets;

use std::path::Path;

#[test]
fn every_committed_seed_runs_through_its_target() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for (name, run) in targets::TARGETS {
        let folder = seeds.join(name);
        let mut ran = 0;
        for entry in
            std::fs::read_dir(&folder).unwrap_or_else(|err| panic!("{}: {err}", folder.display()))
        {
            let path = entry.expect("seed entry").path();
            let data = std::fs::read(&path).expect("seed");
            run(&data);
            ran += 1;
        }
        assert!(ran > 0, "{name} has no seeds in {}", folder.display());
    }
}

#[test]
fn every_seed_folder_belongs_to_a_target() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for entry in std::fs::read_dir(&seeds).expect("fuzz/seeds") {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            targets::TARGETS.iter().any(|(target, _)| *target == name),
            "fuzz/seeds/{name} has no target in fuzz/targets.rs"
        );
    }
}

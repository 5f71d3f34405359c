//! The fuzz corpus on stable (issue 10): every file of `fuzz/corpus/TARGET/` run through the same
//! target body `cargo xtask fuzz` runs under libFuzzer (`ptnet_backend::fuzzing`), so CI replays
//! the inputs that reached the targets' coverage on every run, in a few seconds.

use ptnet_backend::fuzzing::TARGETS;
use std::path::Path;
use std::time::Instant;

fn replay(target: &str) {
    let body = TARGETS
        .iter()
        .find(|(t, _)| *t == target)
        .map(|(_, f)| *f)
        .expect("a target");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    let t0 = Instant::now();
    for f in &files {
        let data = std::fs::read(f).expect("corpus file");
        // A panic names the input: `cargo +nightly fuzz run TARGET FILE` reproduces it.
        eprintln!("{target}: {}", f.display());
        body(&data);
    }
    eprintln!(
        "{target}: {} inputs in {:.2} s",
        files.len(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn control_corpus() {
    replay("control");
}

#[test]
fn device_corpus() {
    replay("device");
}

#[test]
fn device_state_corpus() {
    replay("device_state");
}

#[test]
fn sync_corpus() {
    replay("sync");
}

#[test]
fn slots_corpus() {
    replay("slots");
}

#[test]
fn vale_frames_corpus() {
    replay("vale_frames");
}

#[test]
fn virtq_corpus() {
    replay("virtq");
}

#[test]
fn vnet_corpus() {
    replay("vnet");
}

#[test]
fn every_target_has_a_test() {
    let names: Vec<&str> = TARGETS.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        names,
        [
            "control",
            "device",
            "device_state",
            "sync",
            "slots",
            "vale_frames",
            "virtq",
            "vnet"
        ]
    );
}

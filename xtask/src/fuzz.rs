//! `cargo xtask fuzz [--seconds N] [--sanitizer S] [TARGET...]`: runs the cargo-fuzz targets of
//! `fuzz/` (bodies in `ptnet_backend::fuzzing`) on nightly, each for N seconds (default 60) over
//! its corpus in `fuzz/corpus/TARGET` (read only: what a run finds goes to
//! `fuzz/target/corpus/TARGET`, so the committed corpus stays minimised; `cargo fuzz cmin` it
//! into `fuzz/corpus` to keep it), and prints the executions per target. Fails on a crash,
//! a timeout or an out-of-memory (libFuzzer leaves the input in `fuzz/artifacts/TARGET/`).
//! `--sanitizer none` runs 3-10x faster than the default `address`. CI replays the corpus on
//! stable instead (`host-backend/tests/fuzz_corpus.rs`).

use super::{root, run};
use std::process::{Command, Stdio};

/// The targets, in the order they run (the names of `fuzz/fuzz_targets/*.rs`).
pub const TARGETS: &[&str] = &[
    "control",
    "device",
    "device_state",
    "sync",
    "slots",
    "vale_frames",
    "virtq",
    "vnet",
];

fn has_cargo_fuzz() -> bool {
    Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The executions libFuzzer reports at the end of a run: `stat::number_of_executed_units: N`
/// (with `-print_final_stats=1`), else the last `#N DONE` line, else the last `#N` status line.
pub fn executions(log: &str) -> Option<u64> {
    let stat = log.lines().rev().find_map(|l| {
        l.trim()
            .strip_prefix("stat::number_of_executed_units:")
            .and_then(|v| v.trim().parse().ok())
    });
    stat.or_else(|| {
        let status = |l: &str| l.strip_prefix('#')?.split_whitespace().next()?.parse().ok();
        let done = log.lines().rev().filter(|l| l.contains("DONE"));
        done.clone()
            .find_map(status)
            .or_else(|| log.lines().rev().find_map(status))
    })
}

pub fn fuzz(args: &[String]) -> Result<(), String> {
    let mut seconds = 60u64;
    let mut sanitizer = "address".to_string();
    let mut targets: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--seconds takes a number")?;
            }
            "--sanitizer" => sanitizer = it.next().ok_or("--sanitizer takes a name")?.clone(),
            t if TARGETS.contains(&t) => targets.push(t.to_string()),
            other => {
                return Err(format!(
                    "fuzz: unknown argument '{other}' (targets: {})",
                    TARGETS.join(", ")
                ))
            }
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    if !has_cargo_fuzz() {
        run(Command::new("cargo").args(["install", "cargo-fuzz"]))?;
    }
    let dir = root().join("fuzz");
    let mut results = Vec::new();
    let mut failed = Vec::new();
    for t in &targets {
        let corpus = dir.join("corpus").join(t);
        let found = dir.join("target/corpus").join(t);
        for d in [&corpus, &found] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let mut cmd = Command::new("cargo");
        // `-a`: debug assertions (and overflow checks) in the fuzzed code too. Leak detection
        // is off: LeakSanitizer reports std's per-thread allocations of the ring threads.
        cmd.current_dir(&dir)
            .args(["+nightly", "fuzz", "run", "-a", "-s", &sanitizer, t])
            .arg(&found)
            .arg(&corpus)
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-print_final_stats=1",
                "-detect_leaks=0",
                "-timeout=20",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        eprintln!("xtask: fuzzing {t} for {seconds} s");
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        let log = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        let execs = executions(&log);
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            for l in tail.into_iter().rev() {
                eprintln!("  {l}");
            }
            failed.push(t.clone());
        }
        results.push((t.clone(), execs, out.status.success()));
    }
    println!("{:<12} {:>14}  result", "target", "executions");
    for (t, e, ok) in &results {
        let e = e.map_or("?".into(), |e| e.to_string());
        println!("{t:<12} {e:>14}  {}", if *ok { "ok" } else { "CRASH" });
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "fuzz: {} failed; inputs in fuzz/artifacts/",
            failed.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::executions;

    #[test]
    fn parses_libfuzzer_counts() {
        let log = "#1024\tpulse  cov: 3\n#5000\tDONE   cov: 940 exec/s: 1407\nDone 5001 runs\n";
        assert_eq!(executions(log), Some(5000));
        let log = "#5000\tDONE   cov: 940\nstat::number_of_executed_units: 5003\n";
        assert_eq!(executions(log), Some(5003));
        assert_eq!(
            executions("#77\tNEW cov: 1\n==1== ERROR: deadly signal\n"),
            Some(77)
        );
        assert_eq!(executions("nothing"), None);
    }
}

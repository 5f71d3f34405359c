//! `ptnet-bench` (run by `cargo xtask bench`): ptnet against DPDK vhost-user, in one run.
//!
//! ```text
//! cargo xtask bench                 # the full spec: 3+3 alternating runs of 10 s per workload
//! cargo xtask bench --quick         # 1+1 runs of 2 s, for development
//! cargo xtask bench --only p1,p5    # a subset (`ptnet-bench --help` lists the names)
//! cargo xtask bench-table           # the README's figures table from target/bench/results.json
//! ```
//!
//! Workloads (60-byte frames, batch 512 unless varied):
//! * P1 sender -> daemon -> `null:` sink, vs testpmd virtio-user txonly -> vhost testpmd rxonly.
//! * P2 sender -> pipe -> receiver, vs virtio-user txonly -> vhost testpmd io -> virtio-user rxonly.
//! * P3 the same through VALE.
//! * P4 daemon CPU with 64 idle VALE ports (% of one core, /proc/PID/stat utime+stime).
//! * P5 ping-pong round trip through a pipe (p50, p99, p99.9).
//! * Scaling: batch 1/8/64/512, rings 1/2/4, slots per ring 1024/2048/4096, frame sizes
//!   60/256/1514 (over the pipe).
//! * P8 the cost at a fixed offered load (1 and 5 Mpps): CPU seconds per million packets of every
//!   process of each side, P1-P3's paths (`cost.rs`; DPDK's paced sender: `dpdk_paced.rs`).
//!
//! Both sides get the same two CPUs, each process pinned (taskset / EAL `--lcores`); where each
//! ran is printed and written to `target/bench/results.json` with every figure. DPDK's rate is
//! taken from testpmd's own statistics (`--stats-period 1`, Rx-pps of the receiving port), ptnet's
//! from the receiving pkt-gen's periodic reports, both averaged over the same window after the
//! warm-up. The benchmark never fails on a figure. A workload that cannot run is recorded as
//! failed (its error in the results file and in the table) and the others go on; the table is
//! printed in any case, and the exit status is non-zero at the end when something failed.

mod cases;
mod cost;
mod dpdk;
mod dpdk_paced;
mod floors;
mod opts;
mod proc;
mod ptnet;
mod report;
mod setup;
mod single;
mod virtio;
mod workloads;

use opts::Opts;
use report::Json;
use setup::{git_head, loadavg, setup_bins, setup_dpdk, setup_hugepages, utc_now};
use std::process::ExitCode;
use workloads::{Report, WORKLOADS};

/// Runs every workload `o` asks for, in [`WORKLOADS`] order, saving the results file after each;
/// then prints the table. `Ok` with the workloads that failed; `Err` when nothing could run.
fn run(o: &Opts) -> Result<Vec<&'static str>, String> {
    let start_load = loadavg();
    let start = utc_now();
    eprintln!("bench: start {start}, /proc/loadavg {start_load}");
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    if ncpu < 2 {
        return Err("the benchmark needs two CPUs".into());
    }
    if o.dpdk {
        setup_dpdk()?;
        dpdk::cleanup_stale();
        setup_hugepages()?;
    }
    let bins = setup_bins()?;
    eprintln!(
        "bench: binaries {} and {}",
        bins.backend.display(),
        bins.pkt_gen.display()
    );
    let mut meta = Json::obj();
    meta.set("start_utc", start.as_str())
        .set("loadavg_start", start_load.as_str())
        .set("cpus_online", ncpu)
        .set("core_budget", "2 CPUs (0 and 1), both sides")
        .set("quick", o.quick)
        .set("warmup_s", o.warm)
        .set("measure_s", o.secs)
        .set("reps_per_side", o.reps)
        .set("frame_len", 60u64)
        .set("batch", 512u64)
        .set(
            "pkt_gen_mode",
            "--fast: frames prepared once per buffer, receiver only counts (netmap pkt-gen style)",
        )
        .set("daemon_args", o.daemon_args.join(" "))
        .set(
            "dpdk_version",
            if o.dpdk {
                dpdk::version()
            } else {
                "skipped".into()
            },
        )
        .set("dpdk_burst", u64::from(o.dpdk_cfg.burst))
        .set("dpdk_ring", u64::from(o.dpdk_cfg.ring))
        .set("dpdk_virtio_opts", o.dpdk_cfg.virtio_opts.as_str())
        .set("git_head", git_head())
        .set("ptnet_backend", bins.backend.display().to_string())
        .set("ptnet_pkt_gen", bins.pkt_gen.display().to_string());
    let mut rep = Report::new(&o.out, meta.clone());
    for w in WORKLOADS.iter().filter(|w| o.wants(w.key)) {
        if let Err(e) = workloads::run(o, &bins, w, &mut rep) {
            eprintln!("bench: {} FAILED: {e}", w.key);
            rep.fail(w, &e);
        }
        if let Err(e) = rep.save() {
            eprintln!("bench: {e}");
        }
    }
    rep.pipe_over_switch();
    let end_load = loadavg();
    meta.set("loadavg_end", end_load.as_str())
        .set("end_utc", utc_now());
    rep.res.set("meta", meta);
    let saved = rep.save();
    print_table(o, &rep, &start_load, &end_load);
    saved?;
    Ok(rep.failed().to_vec())
}

/// The summary on stdout: the table, where things ran, the results file.
fn print_table(o: &Opts, rep: &Report, start_load: &str, end_load: &str) {
    let (table, places) = (&rep.table, &rep.places);

    let head = [
        "workload",
        "ptnet Mpps median [min-max]",
        "DPDK Mpps median [min-max]",
        "ratio",
        "target",
        "met",
    ];
    let mut w = head.map(str::len);
    for r in table {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |r: &[String]| {
        r.iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    println!();
    println!(
        "ptnet vs DPDK {} ({}): {} run(s) per side of {} s after {} s warm-up, alternating",
        if o.dpdk {
            dpdk::version()
        } else {
            "skipped (--no-dpdk)".into()
        },
        if o.quick { "QUICK" } else { "full" },
        o.reps,
        o.secs,
        o.warm
    );
    println!("loadavg at start: {start_load}; at end: {end_load}");
    println!("{}", line(&head.map(String::from)));
    println!(
        "{}",
        w.iter()
            .map(|n| "-".repeat(*n))
            .collect::<Vec<_>>()
            .join("-+-")
    );
    for r in table {
        println!("{}", line(r));
    }
    println!();
    println!("placement (2 CPUs for both sides):");
    for p in places {
        println!("  {p}");
    }
    println!("results: {}", o.out.display());
}

fn main() -> ExitCode {
    let o = match Opts::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&o) {
        Ok(failed) if failed.is_empty() => ExitCode::SUCCESS,
        Ok(failed) => {
            eprintln!(
                "ptnet-bench: {} workload(s) failed: {} (errors in the table and in the results file)",
                failed.len(),
                failed.join(", ")
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("ptnet-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

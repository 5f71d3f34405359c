//! `ptnet-soak` (`cargo xtask soak --minutes N`; not in CI): one daemon serving `--ports` ports
//! (pipes of `--rings` rings each way, so every port has TX and RX rings) for `--minutes`, while
//! on every pipe a worker starts, kills and misbehaves frontends at random:
//!
//! * legitimate rounds: a receiver and a sender (`ptnet-pkt-gen`, all rings) in a random
//!   direction, N packets verified (none lost, reordered or corrupted); sometimes a hostile
//!   connection to either end at the same time; sometimes several short rounds back to back
//!   (reconnects);
//! * `kill -9` of the sender, the receiver or both mid-traffic;
//! * hostile connections: silent, half a header, half a message, garbage, register writes at any
//!   offset (CREATE/DELETE with whatever CSB), a handshake and then nothing.
//!
//! Before every legitimate round a receiver drains what killed rounds left in flight. At the end
//! every port is drained, and the soak fails (exit 1, saying what) unless: the daemon never died;
//! every legitimate frontend was served (each legitimate pkt-gen exited 0 with all its packets
//! verified); on every pipe tx = rx + drops (the daemon's SIGUSR1 counters, both ends); the
//! daemon's fds and threads did not grow and its RSS grew by at most 10 % + 8 MiB from the
//! warm-up (every pipe through one legitimate round) to the end, both measured with no frontend
//! attached. It prints the figures as it goes and a summary at the end.
//!
//! ```text
//! cargo run --release -p ptnet-integration --bin ptnet-soak -- --minutes 3 [--ports 64]
//!     [--rings 2] [--rate 20000] [--seed N]
//! ```
//!
//! The daemon and pkt-gen are built in release mode (`PTNET_HOST_PROFILE=release` unless set).

mod checks;
mod hostile;
mod lanes;

use checks::{counters, usage};
use hostile::HOSTILE_KINDS;
use lanes::{drain, lane_loop, legit_round, on_lanes, Ctx, Lane, Rng, Tally};
use nix::sys::signal::Signal;
use ptnet_integration::{bins, Backend, PortCounters, TempDir};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: ptnet-soak [--minutes N] [--ports N] [--rings N] [--rate PPS] [--seed N]
  --minutes N   how long the random phase runs (fractions allowed; default 1)
  --ports N     ports served, an even number: N/2 pipes (default 64)
  --rings N     TX and RX rings per port (default 2)
  --rate PPS    each sender's rate (default 20000)
  --seed N      the random generator's seed (default: from the clock; printed)";

struct Opts {
    minutes: f64,
    ports: usize,
    rings: u32,
    rate: u64,
    seed: u64,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        minutes: 1.0,
        ports: 64,
        rings: 2,
        rate: 20_000,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value"))
                .cloned()
        };
        let bad = |name: &str, v: &str| format!("bad {name} '{v}'");
        match a.as_str() {
            "--minutes" => {
                let v = val(a)?;
                o.minutes = v.parse().map_err(|_| bad(a, &v))?;
                if !(o.minutes >= 0.0 && o.minutes.is_finite()) {
                    return Err(bad(a, &v));
                }
            }
            "--ports" => {
                let v = val(a)?;
                o.ports = v.parse().map_err(|_| bad(a, &v))?;
                if o.ports < 2 || !o.ports.is_multiple_of(2) {
                    return Err(format!("--ports must be even and at least 2, not {v}"));
                }
            }
            "--rings" => {
                let v = val(a)?;
                o.rings = v.parse().map_err(|_| bad(a, &v))?;
                if !(1..=8).contains(&o.rings) {
                    return Err(bad(a, &v));
                }
            }
            "--rate" => {
                let v = val(a)?;
                o.rate = v.parse().map_err(|_| bad(a, &v))?;
                if o.rate == 0 {
                    return Err(bad(a, &v));
                }
            }
            "--seed" => {
                let v = val(a)?;
                o.seed = v.parse::<u64>().map_err(|_| bad(a, &v))? | 1;
            }
            "-h" | "--help" => return Err(String::new()),
            _ => return Err(format!("unknown argument '{a}'")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("ptnet-soak: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&o) {
        Ok(()) => {
            println!("ptnet-soak: PASSED");
            ExitCode::SUCCESS
        }
        Err(fails) => {
            eprintln!("ptnet-soak: FAILED ({} violations):", fails.len());
            for f in &fails {
                eprintln!("  - {}", f.lines().next().unwrap_or(""));
            }
            ExitCode::from(1)
        }
    }
}

fn run(o: &Opts) -> Result<(), Vec<String>> {
    let one = |e: String| vec![e];
    if std::env::var_os("PTNET_HOST_PROFILE").is_none() {
        std::env::set_var("PTNET_HOST_PROFILE", "release");
    }
    bins().map_err(one)?;
    let dir = TempDir::new("soak").map_err(|e| one(format!("temp dir: {e}")))?;
    let lanes: Vec<Lane> = (0..o.ports / 2)
        .map(|i| {
            let names = [format!("netmap:soak{i}{{1"), format!("netmap:soak{i}}}1")];
            Lane {
                index: i,
                socks: names.clone().map(|n| dir.path().join(format!("{n}.sock"))),
                ends: names,
            }
        })
        .collect();
    let ports: Vec<String> = lanes
        .iter()
        .flat_map(|l| l.ends.iter())
        .map(|n| format!("{n}@conf:rings={}", o.rings))
        .collect();
    println!(
        "ptnet-soak: {} ports ({} pipes, {} rings each way), {} min, {} pps per sender, seed {}",
        o.ports,
        lanes.len(),
        o.rings,
        o.minutes,
        o.rate,
        o.seed
    );
    let port_refs: Vec<&str> = ports.iter().map(String::as_str).collect();
    let mut d = Backend::start(dir.path(), &port_refs, &[]).map_err(one)?;
    let pid = d.pid();
    let ctx = Ctx {
        rate: o.rate,
        tally: Tally::default(),
        failures: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    };
    let mut master = Rng(o.seed);
    let mut rngs: Vec<Rng> = lanes.iter().map(|_| Rng(master.next() | 1)).collect();

    // Warm-up: one legitimate round per pipe, then the baseline with no frontend attached.
    on_lanes(&lanes, &mut rngs, |lane, rng| {
        let src = rng.below(2) as usize;
        legit_round(&ctx, lane, rng, src, o.rate, false);
    });
    std::thread::sleep(Duration::from_secs(2));
    let start = usage(pid).ok_or_else(|| one("the daemon died during the warm-up".into()))?;
    println!(
        "ptnet-soak: after warm-up: fds {} threads {} rss {} KiB",
        start.0, start.1, start.2
    );

    // The random phase, with a progress line every 30 s.
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs_f64(o.minutes * 60.0);
    let died = AtomicBool::new(false);
    std::thread::scope(|s| {
        for (lane, rng) in lanes.iter().zip(rngs.iter_mut()) {
            let ctx = &ctx;
            s.spawn(move || lane_loop(ctx, lane, rng));
        }
        let mut next_report = t0 + Duration::from_secs(30);
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(200));
            if !d.running() {
                died.store(true, Ordering::SeqCst);
                break;
            }
            if Instant::now() >= next_report {
                next_report += Duration::from_secs(30);
                let u = usage(pid).unwrap_or_default();
                println!(
                    "ptnet-soak: {:>4.0} s: legitimate rounds {} (packets {}), kills {}, hostile {}, fds {} threads {} rss {} KiB",
                    t0.elapsed().as_secs_f64(),
                    ctx.tally.legit_rounds.load(Ordering::Relaxed),
                    ctx.tally.legit_packets.load(Ordering::Relaxed),
                    ctx.tally.kills.load(Ordering::Relaxed),
                    ctx.tally.hostile.iter().map(|h| h.load(Ordering::Relaxed)).sum::<u64>(),
                    u.0, u.1, u.2
                );
            }
        }
        ctx.stop.store(true, Ordering::SeqCst);
    });
    if died.load(Ordering::SeqCst) || !d.running() {
        ctx.fail(format!(
            "the daemon died:\n{}",
            d.log_text()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        ));
        return Err(ctx.failures.into_inner().unwrap());
    }
    println!(
        "ptnet-soak: random phase over after {:.0} s; draining every port",
        t0.elapsed().as_secs_f64()
    );

    // Every port drained (what is in flight is counted), then the end figures.
    on_lanes(&lanes, &mut rngs, |lane, _| {
        drain(&ctx, lane, 0);
        drain(&ctx, lane, 1);
    });
    std::thread::sleep(Duration::from_secs(2));
    let end = usage(pid).ok_or_else(|| one("the daemon died at the end".into()))?;
    println!(
        "ptnet-soak: at the end:     fds {} threads {} rss {} KiB",
        end.0, end.1, end.2
    );
    if end.0 > start.0 {
        ctx.fail(format!("fd growth: {} -> {}", start.0, end.0));
    }
    if end.1 > start.1 {
        ctx.fail(format!("thread growth: {} -> {}", start.1, end.1));
    }
    if end.2 > start.2 + start.2 / 10 + 8 * 1024 {
        ctx.fail(format!("RSS growth: {} KiB -> {} KiB", start.2, end.2));
    }

    // The daemon's counters (SIGUSR1), per pipe: tx = rx + drops over both ends.
    d.signal(Signal::SIGUSR1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut log = d.log_text();
    let before_usr1 = log.len();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        log = d.log_text();
        let tail = &log[before_usr1.min(log.len())..];
        let last = lanes.last().map(|l| l.ends[1].clone()).unwrap_or_default();
        if PortCounters::last(tail, Some(&last)).is_some() || Instant::now() > deadline {
            break;
        }
    }
    let mut totals = [0u64; 4];
    for lane in &lanes {
        let c: Vec<[u64; 4]> = lane.ends.iter().filter_map(|e| counters(&log, e)).collect();
        if c.len() != 2 {
            ctx.fail(format!(
                "lane {}: no counters in the daemon's log",
                lane.index
            ));
            continue;
        }
        let sum = |k: usize| c[0][k] + c[1][k];
        for (t, k) in totals.iter_mut().zip(0..4) {
            *t += sum(k);
        }
        if sum(0) != sum(1) + sum(2) {
            ctx.fail(format!(
                "lane {} ({} / {}): tx {} != rx {} + drops {} (bad_slots {})",
                lane.index,
                lane.ends[0],
                lane.ends[1],
                sum(0),
                sum(1),
                sum(2),
                sum(3)
            ));
        }
    }
    if log.contains("panicked") {
        ctx.fail("the daemon's log has a panic".into());
    }
    // A clean stop.
    match d.terminate(Duration::from_secs(10)) {
        Some(s) if s.success() => {}
        s => ctx.fail(format!("the daemon did not stop cleanly on SIGTERM: {s:?}")),
    }

    let t = &ctx.tally;
    println!(
        "ptnet-soak: daemon totals: tx {} rx {} drops {} bad_slots {}",
        totals[0], totals[1], totals[2], totals[3]
    );
    println!(
        "ptnet-soak: legitimate rounds {} ({} frontends served, {} packets verified), kill -9 {}, drains {} ({} packets in flight taken)",
        t.legit_rounds.load(Ordering::Relaxed),
        t.legit_frontends.load(Ordering::Relaxed),
        t.legit_packets.load(Ordering::Relaxed),
        t.kills.load(Ordering::Relaxed),
        t.drains.load(Ordering::Relaxed),
        t.drained_packets.load(Ordering::Relaxed),
    );
    println!(
        "ptnet-soak: hostile connections: {}",
        HOSTILE_KINDS
            .iter()
            .zip(&t.hostile)
            .map(|(k, n)| format!("{k} {}", n.load(Ordering::Relaxed)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "ptnet-soak: fds {} -> {}, threads {} -> {}, rss {} -> {} KiB",
        start.0, end.0, start.1, end.1, start.2, end.2
    );
    let fails = ctx.failures.into_inner().unwrap();
    if fails.is_empty() {
        Ok(())
    } else {
        // Keep the daemon's log for a post-mortem.
        let keep = std::env::temp_dir().join(format!("ptnet-soak-{}.log", std::process::id()));
        if std::fs::copy(d.log_path(), &keep).is_ok() {
            eprintln!("ptnet-soak: the daemon's log is in {}", keep.display());
        }
        Err(fails)
    }
}

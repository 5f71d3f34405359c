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

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ptnet_integration::host::{finish, spawn_pkt_gen, wait_deadline, RunOutput};
use ptnet_integration::{bins, json_num, TempDir};
use ptnet_protocol::regs::{ptnet, PTCTL_CREATE, PTCTL_DELETE};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::VhostBackend;

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

/// xorshift64*: deterministic per lane from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// What the lanes did, for the summary.
#[derive(Default)]
struct Tally {
    legit_rounds: AtomicU64,
    legit_frontends: AtomicU64,
    legit_packets: AtomicU64,
    kills: AtomicU64,
    hostile: [AtomicU64; HOSTILE_KINDS.len()],
    drains: AtomicU64,
    drained_packets: AtomicU64,
}

const HOSTILE_KINDS: [&str; 6] = [
    "silent",
    "half-header",
    "half-message",
    "garbage",
    "register-writes",
    "handshake-then-nothing",
];

/// One pipe and its two ends.
struct Lane {
    index: usize,
    ends: [String; 2],
    socks: [PathBuf; 2],
}

impl Lane {
    fn iface(&self, end: usize) -> String {
        format!("vhost-user:{}", self.socks[end].display())
    }
}

struct Ctx {
    rate: u64,
    tally: Tally,
    failures: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Ctx {
    fn fail(&self, msg: String) {
        eprintln!("ptnet-soak: FAILED: {msg}");
        self.failures.lock().unwrap().push(msg);
    }
}

fn pkt_gen_summary(out: &RunOutput) -> Option<&str> {
    out.stdout.lines().rev().find(|l| l.starts_with('{'))
}

/// A receiver that takes whatever is in flight on `end` and stops after 1 s without packets.
fn drain(ctx: &Ctx, lane: &Lane, end: usize) {
    let Ok(rx) = spawn_pkt_gen(&[
        "-i",
        &lane.iface(end),
        "-f",
        "rx",
        "-n",
        "0",
        "--timeout",
        "1",
        "--json",
        "-T",
        "0",
    ]) else {
        ctx.fail(format!("lane {}: cannot start a drain", lane.index));
        return;
    };
    let out = finish(rx, Duration::from_secs(30));
    ctx.tally.drains.fetch_add(1, Ordering::Relaxed);
    if let Some(p) = pkt_gen_summary(&out).and_then(|l| json_num(l, "packets")) {
        ctx.tally
            .drained_packets
            .fetch_add(p as u64, Ordering::Relaxed);
    }
    // Its disconnect is seen before the next frontend connects.
    std::thread::sleep(Duration::from_millis(300));
}

/// A legitimate round: `n` packets from `src` to the other end, verified. `hostile`: a hostile
/// connection to one end meanwhile.
fn legit_round(ctx: &Ctx, lane: &Lane, rng: &mut Rng, src: usize, n: u64, hostile: bool) {
    let dst = 1 - src;
    drain(ctx, lane, dst);
    let count = n.to_string();
    let rate = ctx.rate.to_string();
    let rx = spawn_pkt_gen(&[
        "-i",
        &lane.iface(dst),
        "-f",
        "rx",
        "-n",
        &count,
        "--timeout",
        "30",
        "--json",
        "-T",
        "0",
    ]);
    let h = hostile.then(|| {
        let sock = lane.socks[rng.below(2) as usize].clone();
        let kind = rng.below(HOSTILE_KINDS.len() as u64) as usize;
        let seed = rng.next();
        let delay = rng.millis(0, 800);
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            hostile_connection(&sock, kind, &mut Rng(seed | 1));
            kind
        })
    });
    let tx = spawn_pkt_gen(&[
        "-i",
        &lane.iface(src),
        "-f",
        "tx",
        "-n",
        &count,
        "-R",
        &rate,
        "--timeout",
        "30",
        "--json",
        "-T",
        "0",
    ]);
    let limit = Duration::from_secs(60 + n / ctx.rate.max(1));
    let (rx, tx) = match (rx, tx) {
        (Ok(rx), Ok(tx)) => (finish(rx, limit), finish(tx, limit)),
        _ => {
            ctx.fail(format!("lane {}: cannot start pkt-gen", lane.index));
            return;
        }
    };
    if let Some(h) = h {
        if let Ok(kind) = h.join() {
            ctx.tally.hostile[kind].fetch_add(1, Ordering::Relaxed);
        }
    }
    ctx.tally.legit_rounds.fetch_add(1, Ordering::Relaxed);
    ctx.tally.legit_frontends.fetch_add(2, Ordering::Relaxed);
    let what = format!(
        "lane {} legitimate round {} -> {} ({n} packets{})",
        lane.index,
        lane.ends[src],
        lane.ends[dst],
        if hostile {
            ", with a hostile connection"
        } else {
            ""
        }
    );
    let got = pkt_gen_summary(&rx).map(|l| {
        (
            json_num(l, "packets").unwrap_or(-1.0) as i64,
            json_num(l, "errors").unwrap_or(-1.0) as i64,
            json_num(l, "lost").unwrap_or(-1.0) as i64,
            json_num(l, "out_of_order").unwrap_or(-1.0) as i64,
        )
    });
    if !rx.success() || got != Some((n as i64, 0, 0, 0)) {
        ctx.fail(format!(
            "{what}: receiver not served: status {:?}, packets/errors/lost/out_of_order {got:?}\n{}{}",
            rx.status, rx.stdout, rx.stderr
        ));
    } else {
        ctx.tally.legit_packets.fetch_add(n, Ordering::Relaxed);
    }
    if !tx.success() {
        ctx.fail(format!(
            "{what}: sender not served: status {:?}\n{}{}",
            tx.status, tx.stdout, tx.stderr
        ));
    }
}

/// Traffic both ways is started, then the sender, the receiver or both are killed (SIGKILL)
/// mid-way; a survivor is stopped with SIGTERM.
fn kill_round(ctx: &Ctx, lane: &Lane, rng: &mut Rng) {
    let src = rng.below(2) as usize;
    let rate = ctx.rate.to_string();
    let rx = spawn_pkt_gen(&["-i", &lane.iface(1 - src), "-f", "rx", "-n", "0", "-T", "0"]);
    let tx = spawn_pkt_gen(&[
        "-i",
        &lane.iface(src),
        "-f",
        "tx",
        "-n",
        "0",
        "-R",
        &rate,
        "-T",
        "0",
    ]);
    let (Ok(rx), Ok(tx)) = (rx, tx) else {
        ctx.fail(format!("lane {}: cannot start pkt-gen", lane.index));
        return;
    };
    std::thread::sleep(rng.millis(200, 2000));
    let which = rng.below(3);
    let mut procs = [Some(rx), Some(tx)];
    for (i, p) in procs.iter_mut().enumerate() {
        if which == 2 || which == i as u64 {
            // Dropping a Spawned that still runs kills it with SIGKILL.
            drop(p.take());
            ctx.tally.kills.fetch_add(1, Ordering::Relaxed);
        }
    }
    std::thread::sleep(rng.millis(0, 500));
    for s in procs.into_iter().flatten() {
        s.terminate();
        let _ = finish(s, Duration::from_secs(10));
    }
    std::thread::sleep(Duration::from_millis(300));
}

/// One hostile connection of `kind` (an index into [`HOSTILE_KINDS`]).
fn hostile_connection(sock: &Path, kind: usize, rng: &mut Rng) {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let hold = rng.millis(300, 3000);
    match kind {
        0 => std::thread::sleep(hold),
        1 => {
            let _ = s.write_all(&[1, 0, 0, 0, 1, 0]);
            std::thread::sleep(hold);
        }
        2 => {
            // SET_FEATURES (2), version 1, 8 bytes of payload announced, 3 sent.
            let mut m = Vec::new();
            m.extend_from_slice(&2u32.to_le_bytes());
            m.extend_from_slice(&1u32.to_le_bytes());
            m.extend_from_slice(&8u32.to_le_bytes());
            m.extend_from_slice(&[0xaa; 3]);
            let _ = s.write_all(&m);
            std::thread::sleep(hold);
        }
        3 => {
            let junk: Vec<u8> = (0..64 + rng.below(512)).map(|_| rng.next() as u8).collect();
            let _ = s.write_all(&junk);
            std::thread::sleep(rng.millis(0, 500));
        }
        4 | 5 => {
            let mut fe = Frontend::from_stream(s, 256);
            let offered = fe.get_features().unwrap_or(0);
            let _ = fe.set_owner();
            let _ = fe.set_features(offered);
            let proto = fe
                .get_protocol_features()
                .map(|f| f.bits())
                .unwrap_or_default();
            let _ = fe.set_protocol_features(VhostUserProtocolFeatures::from_bits_retain(
                proto & !(1 << 3),
            ));
            if kind == 5 {
                std::thread::sleep(hold);
                return;
            }
            for _ in 0..4 + rng.below(28) {
                let off = match rng.below(3) {
                    0 => ptnet::PTCTL,
                    1 => [
                        ptnet::CSB_GH_BAH,
                        ptnet::CSB_GH_BAL,
                        ptnet::CSB_HG_BAH,
                        ptnet::CSB_HG_BAL,
                    ][rng.below(4) as usize],
                    _ => rng.below(300) as u32,
                };
                let val = match rng.below(3) {
                    0 => PTCTL_CREATE,
                    1 => PTCTL_DELETE,
                    _ => rng.next() as u32,
                };
                let len = if rng.below(4) == 0 {
                    rng.below(10) as usize
                } else {
                    4
                };
                let mut buf = val.to_le_bytes().to_vec();
                buf.resize(len, 0xa5);
                if fe
                    .set_config(off, VhostUserConfigFlags::empty(), &buf)
                    .is_err()
                    && rng.below(2) == 0
                {
                    break;
                }
            }
        }
        _ => unreachable!(),
    }
}

/// One pipe's worker until `ctx.stop`.
fn lane_loop(ctx: &Ctx, lane: &Lane, rng: &mut Rng) {
    while !ctx.stop.load(Ordering::Relaxed) {
        let src = rng.below(2) as usize;
        let n = ctx.rate / 2 + rng.below(ctx.rate * 2);
        match rng.below(10) {
            0..=2 => legit_round(ctx, lane, rng, src, n, false),
            3 | 4 => legit_round(ctx, lane, rng, src, n, true),
            5 | 6 => kill_round(ctx, lane, rng),
            7 | 8 => {
                let kind = rng.below(HOSTILE_KINDS.len() as u64) as usize;
                hostile_connection(&lane.socks[rng.below(2) as usize], kind, rng);
                ctx.tally.hostile[kind].fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                // Reconnects: short rounds back to back, alternating directions.
                for k in 0..3 {
                    let n = 1000 + rng.below(4000);
                    legit_round(ctx, lane, rng, (src + k) % 2, n, false);
                }
            }
        }
    }
}

/// fds, threads and RSS (KiB) of `pid`.
fn usage(pid: u32) -> Option<(usize, u64, u64)> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(k))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((fds, field("Threads:")?, field("VmRSS:")?))
}

/// The counters of the daemon's latest stats line for `port` in `log`.
fn counters(log: &str, port: &str) -> Option<[u64; 4]> {
    let line = log
        .lines()
        .rfind(|l| l.contains(&format!("port=\"{port}\"")) && l.contains("tx_packets="))?;
    let get = |k: &str| -> Option<u64> {
        let v = line.split(&format!("{k}=")).nth(1)?;
        v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    Some([
        get("tx_packets")?,
        get("rx_packets")?,
        get("drops")?,
        get("bad_slots")?,
    ])
}

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn start_daemon(backend: &Path, dir: &Path, ports: &[String]) -> Result<Daemon, String> {
    let log = dir.join("backend.log");
    let f = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let child = Command::new(backend)
        .arg("--socket-dir")
        .arg(dir)
        .args(ports)
        .stdin(Stdio::null())
        .stdout(f.try_clone().map_err(|e| e.to_string())?)
        .stderr(f)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", backend.display()))?;
    let mut d = Daemon { child, log };
    let deadline = Instant::now() + Duration::from_secs(30);
    let socks: Vec<PathBuf> = ports
        .iter()
        .map(|p| dir.join(format!("{}.sock", p.split("@conf:").next().unwrap_or(p))))
        .collect();
    while !socks.iter().all(|s| s.exists()) {
        if !d.alive() || Instant::now() > deadline {
            return Err(format!("the daemon did not come up:\n{}", d.log_text()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(d)
}

/// Runs `f` on every lane in parallel, each with its own generator.
fn on_lanes(lanes: &[Lane], rngs: &mut [Rng], f: impl Fn(&Lane, &mut Rng) + Sync) {
    std::thread::scope(|s| {
        for (lane, rng) in lanes.iter().zip(rngs.iter_mut()) {
            let f = &f;
            s.spawn(move || f(lane, rng));
        }
    });
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
    let b = bins().map_err(one)?;
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
    let mut d = start_daemon(&b.backend, dir.path(), &ports).map_err(one)?;
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
            if !d.alive() {
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
    if died.load(Ordering::SeqCst) || !d.alive() {
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
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGUSR1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut log = d.log_text();
    let before_usr1 = log.len();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        log = d.log_text();
        let tail = &log[before_usr1.min(log.len())..];
        let last = lanes.last().map(|l| l.ends[1].clone()).unwrap_or_default();
        if tail.contains(&format!("port=\"{last}\"")) || Instant::now() > deadline {
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
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    match wait_deadline(&mut d.child, Instant::now() + Duration::from_secs(10)) {
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
        if std::fs::copy(&d.log, &keep).is_ok() {
            eprintln!("ptnet-soak: the daemon's log is in {}", keep.display());
        }
        Err(fails)
    }
}

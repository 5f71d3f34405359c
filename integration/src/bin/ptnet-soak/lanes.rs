//! The pipes' workers: legitimate rounds (verified), kill rounds, hostile connections, drains,
//! and what they did (the [`Tally`]).

use crate::hostile::{hostile_connection, HOSTILE_KINDS};
use ptnet_integration::host::{finish, spawn_pkt_gen, RunOutput};
use ptnet_integration::json_num;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// xorshift64*: deterministic per lane from the seed.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// A duration from `lo` to `hi` ms.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// What the lanes did, for the summary.
#[derive(Default)]
pub struct Tally {
    /// Legitimate rounds.
    pub legit_rounds: AtomicU64,
    /// Legitimate pkt-gens (two a round).
    pub legit_frontends: AtomicU64,
    /// Packets the legitimate receivers verified.
    pub legit_packets: AtomicU64,
    /// pkt-gens killed with SIGKILL.
    pub kills: AtomicU64,
    /// Hostile connections of each of [`HOSTILE_KINDS`].
    pub hostile: [AtomicU64; HOSTILE_KINDS.len()],
    /// Drains.
    pub drains: AtomicU64,
    /// Packets the drains took.
    pub drained_packets: AtomicU64,
}

/// One pipe and its two ends.
pub struct Lane {
    /// Its number.
    pub index: usize,
    /// Its ports' names.
    pub ends: [String; 2],
    /// Its ports' sockets.
    pub socks: [PathBuf; 2],
}

impl Lane {
    fn iface(&self, end: usize) -> String {
        format!("vhost-user:{}", self.socks[end].display())
    }
}

/// What the workers share.
pub struct Ctx {
    /// Each sender's rate.
    pub rate: u64,
    /// What they did.
    pub tally: Tally,
    /// What went wrong.
    pub failures: Mutex<Vec<String>>,
    /// Set when the random phase is over.
    pub stop: AtomicBool,
}

impl Ctx {
    /// Records (and prints) a violation.
    pub fn fail(&self, msg: String) {
        eprintln!("ptnet-soak: FAILED: {msg}");
        self.failures.lock().unwrap().push(msg);
    }
}

fn pkt_gen_summary(out: &RunOutput) -> Option<&str> {
    out.stdout.lines().rev().find(|l| l.starts_with('{'))
}

/// A receiver that takes whatever is in flight on `end` and stops after 1 s without packets.
pub fn drain(ctx: &Ctx, lane: &Lane, end: usize) {
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
pub fn legit_round(ctx: &Ctx, lane: &Lane, rng: &mut Rng, src: usize, n: u64, hostile: bool) {
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
pub fn kill_round(ctx: &Ctx, lane: &Lane, rng: &mut Rng) {
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

/// One pipe's worker until `ctx.stop`.
pub fn lane_loop(ctx: &Ctx, lane: &Lane, rng: &mut Rng) {
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

/// Runs `f` on every lane in parallel, each with its own generator.
pub fn on_lanes(lanes: &[Lane], rngs: &mut [Rng], f: impl Fn(&Lane, &mut Rng) + Sync) {
    std::thread::scope(|s| {
        for (lane, rng) in lanes.iter().zip(rngs.iter_mut()) {
            let f = &f;
            s.spawn(move || f(lane, rng));
        }
    });
}

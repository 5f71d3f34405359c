//! `ptnet-bridge`: forwards every packet between two ptnet ports, both ways, like netmap's
//! `bridge` (a bump in the wire: the NFV middlebox in its simplest form).
//!
//! ```text
//! ptnet-bridge -i ptnet0 -i ptnet1                       # inside a guest with two ptnet NICs
//! ptnet-bridge -i 'vhost-user:/tmp/p/netmap:a}0.sock' -i 'vhost-user:/tmp/p/netmap:b{0.sock'
//! ```
//!
//! What arrives on RX ring `i` of one port leaves on TX ring `i mod n` of the other (`n` its TX
//! rings), in order; a ring's packets never spread over several TX rings (netmap's `bridge` moves
//! to the next TX ring when one is full, which can reorder a flow). Packets move in batches of at
//! most `-b` per ring per round ([`TxRing::forward_from`]): when both ports live in one netmap
//! memory ([`Port::shares_memory_with`]: the two ends of one pipe, ports of one kernel netmap
//! allocator) the RX and TX slots swap buffer indexes (zero copy, `BUF_CHANGED` set), otherwise
//! each packet is copied once into the TX slot's buffer. A full TX ring holds its packets back
//! in the RX ring (backpressure, as netmap's bridge): the bridge itself drops only slots the host
//! filled with a bad buffer index or length. When nothing moves it sleeps on the rings'
//! interrupts ([`Port::wait_ports`]: the empty RX rings and the TX rings it is waiting to fill),
//! unless `--busy-poll`.
//!
//! It stops on SIGINT/SIGTERM, after `--count` packets (both directions together), or after
//! `--timeout-ms` without forwarding anything, then lets the hosts take what it queued and prints
//! the packets, bytes and drops of each direction (one JSON line with `--json`).
//!
//! Exit codes: 0 success, 1 runtime failure (device errors, fewer packets than `--count`), 2 bad
//! command line or bad port string.
//!
//! [`TxRing::forward_from`]: ptnet_driver::TxRing::forward_from

use clap::Parser;
use ptnet_driver::summary::{BridgeDir, BridgeSummary};
use ptnet_driver::ForwardMode;
use ptnet_driver::{Error, Port, RingId};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by SIGINT/SIGTERM: stop, print the summary, detach cleanly.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

#[inline]
fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// The longest single sleep: signals and deadlines are checked at least this often.
const MAX_SLEEP: Duration = Duration::from_millis(200);

/// Forwards packets between two ptnet ports, both ways.
#[derive(Parser, Debug)]
#[command(name = "ptnet-bridge", version, about)]
struct Args {
    /// The two ports (give -i twice): vhost-user:PATH, ptnetN (or pci:ptnetN), ptnet:DDDD:BB:DD.F or
    /// pci:DDDD:BB:DD.F.
    #[arg(short = 'i', long = "interface", value_name = "PORT", required = true)]
    ports: Vec<String>,
    /// Packets moved per ring per round.
    #[arg(short = 'b', long = "batch", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Spin instead of sleeping on interrupts when idle.
    #[arg(long = "busy-poll")]
    busy_poll: bool,
    /// Print one JSON line instead of the summary.
    #[arg(long)]
    json: bool,
    /// Stop after forwarding this many packets, both directions together (0: never).
    #[arg(short = 'n', long = "count", default_value_t = 0)]
    count: u64,
    /// Stop after this many milliseconds without forwarding anything (from the start until the
    /// first packet).
    #[arg(long = "timeout-ms", value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Copy every packet even when the ports share a memory (to compare with zero copy).
    #[arg(long = "copy")]
    force_copy: bool,
}

/// Adds `id` to `list` unless it is there (lists hold at most one entry per ring).
#[inline]
fn push_once(list: &mut Vec<RingId>, id: RingId) {
    if !list.contains(&id) {
        list.push(id);
    }
}

/// One round from `src` to `dst`: every RX ring of `src` is synced and up to `batch` of its
/// packets (at most `limit`) move to TX ring `i mod n` of `dst`. Returns the packets moved.
/// Notes in `src_waits` the RX rings that were empty and in `dst_waits` the TX rings that were
/// full while packets waited for them: what to sleep on if no direction moves anything.
#[allow(clippy::too_many_arguments)]
#[inline]
fn forward(
    src: &mut Port,
    dst: &mut Port,
    mode: ForwardMode,
    batch: u32,
    limit: u64,
    c: &mut BridgeDir,
    src_waits: &mut Vec<RingId>,
    dst_waits: &mut Vec<RingId>,
) -> Result<u64, Error> {
    let (nrx, ntx) = (src.num_rx_rings(), dst.num_tx_rings());
    let mut moved = 0u64;
    for i in 0..nrx {
        let t = i % ntx;
        let mut rx = src.rx_ring(i);
        // Releases what the last round forwarded and learns of new packets.
        rx.rxsync()?;
        if rx.avail() == 0 {
            push_once(src_waits, RingId::Rx(i));
            continue;
        }
        let budget = u64::from(batch.min(rx.avail()))
            .min(limit.saturating_sub(moved))
            .min(u64::from(u32::MAX)) as u32;
        if budget == 0 {
            break;
        }
        let mut tx = dst.tx_ring(t);
        if tx.space() < budget {
            // Learn which slots the host has sent since.
            tx.txsync()?;
        }
        let f = tx.forward_from(&mut rx, budget, mode);
        if f.packets > 0 {
            tx.txsync()?;
        }
        c.add(f);
        moved += u64::from(f.packets + f.dropped);
        if rx.avail() > 0 && tx.space() == 0 {
            push_once(dst_waits, RingId::Tx(t));
        }
    }
    Ok(moved)
}

/// Lets the host take every queued TX slot of `port` (at most `limit`).
fn drain(port: &mut Port, limit: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + limit;
    loop {
        let mut pending = 0;
        for i in 0..port.num_tx_rings() {
            let mut tx = port.tx_ring(i);
            tx.txsync_reclaim()?;
            pending += tx.pending();
        }
        if pending == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            eprintln!(
                "ptnet-bridge: {}: {pending} packets still queued after {limit:?}",
                port.name()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

fn run(args: &Args, a: &mut Port, b: &mut Port, zero_copy: bool) -> Result<BridgeSummary, Error> {
    let mode = if zero_copy {
        ForwardMode::SwapBuffers
    } else {
        ForwardMode::Copy
    };
    let idle = args.timeout_ms.map(Duration::from_millis);
    let mut ab = BridgeDir::default();
    let mut ba = BridgeDir::default();
    // Rings to sleep on, per port (capacity for every ring: no allocation in the loop).
    let cap = |p: &Port| (p.num_tx_rings() + p.num_rx_rings()) as usize;
    let mut wa: Vec<RingId> = Vec::with_capacity(cap(a));
    let mut wb: Vec<RingId> = Vec::with_capacity(cap(b));
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut total = 0u64;
    let mut a_first = true;
    let limit = if args.count > 0 { args.count } else { u64::MAX };
    loop {
        wa.clear();
        wb.clear();
        let left = limit - total;
        let n = forward(a, b, mode, args.batch, left, &mut ab, &mut wa, &mut wb)?;
        let m = forward(b, a, mode, args.batch, left - n, &mut ba, &mut wb, &mut wa)?;
        total += n + m;
        if n != m && (n == 0 || m == 0) {
            // Sleep on the port that received last first: the likelier one to wake us.
            a_first = n > 0;
        }
        if n + m > 0 {
            last = Instant::now();
            first.get_or_insert(last);
            if total >= limit || stopped() {
                break;
            }
            continue;
        }
        if stopped() {
            break;
        }
        let now = Instant::now();
        let mut sleep = MAX_SLEEP;
        if let Some(idle) = idle {
            let until = (last + idle).saturating_duration_since(now);
            if until.is_zero() {
                break;
            }
            sleep = sleep.min(until);
        }
        if args.busy_poll {
            std::hint::spin_loop();
        } else {
            let (wa, wb) = (&wa[..], &wb[..]);
            if a_first {
                Port::wait_ports(&mut [(&mut *a, wa), (&mut *b, wb)], Some(sleep))?;
            } else {
                Port::wait_ports(&mut [(&mut *b, wb), (&mut *a, wa)], Some(sleep))?;
            }
        }
    }
    let seconds = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    // Let the hosts take what was queued; dropping the ports releases the RX slots.
    drain(a, Duration::from_secs(2))?;
    drain(b, Duration::from_secs(2))?;
    Ok(BridgeSummary::new(zero_copy, ab, ba, seconds))
}

fn open(spec: &str) -> Result<Port, ExitCode> {
    match Port::open(spec) {
        Ok(p) => Ok(p),
        Err(e @ Error::BadPort { .. }) => {
            eprintln!("ptnet-bridge: -i: {e}");
            Err(ExitCode::from(2))
        }
        Err(e) => {
            eprintln!("ptnet-bridge: cannot open {spec}: {e}");
            Err(ExitCode::from(1))
        }
    }
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if args.ports.len() != 2 {
        eprintln!(
            "ptnet-bridge: give exactly two ports (-i A -i B), not {}",
            args.ports.len()
        );
        return ExitCode::from(2);
    }
    if args.timeout_ms == Some(0) {
        eprintln!("ptnet-bridge: --timeout-ms must be positive");
        return ExitCode::from(2);
    }
    let mut a = match open(&args.ports[0]) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let mut b = match open(&args.ports[1]) {
        Ok(p) => p,
        Err(c) => return c,
    };
    a.set_busy_poll(args.busy_poll);
    b.set_busy_poll(args.busy_poll);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        if let Err(e) = vmm_sys_util::signal::register_signal_handler(sig, on_stop_signal) {
            eprintln!("ptnet-bridge: cannot handle signal {sig}: {e}");
        }
    }
    let shared = a.shares_memory_with(&b);
    let zero_copy = shared && !args.force_copy;
    eprintln!(
        "ptnet-bridge: ready: {} (memory {}, rings {}/{}) <-> {} (memory {}, rings {}/{}): {}",
        a.name(),
        a.mem_id(),
        a.num_tx_rings(),
        a.num_rx_rings(),
        b.name(),
        b.mem_id(),
        b.num_tx_rings(),
        b.num_rx_rings(),
        match (zero_copy, shared) {
            (true, _) => "zero copy (one memory)",
            (false, true) => "copy (--copy)",
            (false, false) => "copy (separate memories)",
        }
    );
    let res = run(&args, &mut a, &mut b, zero_copy);
    let names = (a.name().to_string(), b.name().to_string());
    drop(a);
    drop(b);
    let s = match res {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ptnet-bridge: {e}");
            return ExitCode::from(1);
        }
    };
    if args.json {
        println!("{}", s.json());
    } else {
        println!("{}", s.text(&names.0, &names.1));
    }
    if args.count > 0 && s.packets + s.dropped < args.count {
        eprintln!(
            "ptnet-bridge: forwarded {} of {} packets",
            s.packets, args.count
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

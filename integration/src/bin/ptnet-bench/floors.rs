//! What this machine allows at best, measured in the same run as the workloads it bounds: the
//! floor of a sleeping hand-off (P5) and the ceiling of handing netmap slots from one CPU to
//! the other (P2). Neither involves the daemon: they are the hardware's part of each path.

use crate::opts::Opts;
use crate::proc::{pin_self, pin_self_to};
use crate::report::{Json, Runs};
use crate::workloads::Report;
use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use ptnet_protocol::netmap::{ring_add, ring_dist, slot_flags};
use ptnet_protocol::shmem::{OwnedMem, SharedMem};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Instant;
use vmm_sys_util::eventfd::EventFd;

/// P2's bounds on this machine, measured now and reported beside P2: the ceiling of the slot
/// hand-over between the two CPUs ([`slot_handover`]) and the cost of a context switch on
/// CPU 0 ([`switch_cost`]), where P2's sender and the daemon's TX ring thread take turns.
pub fn p2_bounds(o: &Opts, rep: &mut Report) -> Result<(), String> {
    let (total, rounds) = if o.quick {
        (20_000_000, 5_000)
    } else {
        (100_000_000, 50_000)
    };
    let mut ceiling = Runs::default();
    for i in 0..o.reps {
        let m = slot_handover(total);
        eprintln!(
            "bench: p2 bound run {} slot hand-over cpu 0 -> cpu 1 {m:.1} Mpps",
            i + 1
        );
        ceiling.0.push(m);
    }
    let (procs, threads) = switch_cost(rounds)?;
    eprintln!("bench: p2 bound context switch on cpu 0: {procs:.2} us (threads {threads:.2} us)");
    let mut j = Json::obj();
    let mut sw = Json::obj();
    sw.set("between_processes_us", procs)
        .set("between_threads_us", threads)
        .set(
            "what",
            "one switch on cpu 0 (half a one-byte pipe round trip with an echo there): P2's \
             sender and the daemon's TX ring thread share cpu 0 and take turns once a ring lap",
        );
    j.set("slot_handover_mpps", ceiling.json())
        .set(
            "slot_handover_what",
            "netmap slots handed cpu 0 -> cpu 1 and back through one 1024-slot ring by two \
             spinning threads, swapping buffer indexes as the pipe does: no daemon, no syscalls",
        )
        .set("context_switch", sw);
    rep.res.set("p2_bounds", j);
    rep.figure(
        "P2 bound: slots cpu 0 -> cpu 1, alone (Mpps)".into(),
        ceiling.show(),
    );
    rep.figure(
        "P2 bound: context switch on cpu 0 (us)".into(),
        format!("{procs:.2} (threads {threads:.2})"),
    );
    Ok(())
}

/// The machine's floor for a sleeping hand-off: two threads on CPUs 0 and 1 bouncing a token
/// through two eventfds (two cross-CPU wake-ups per round trip). (p50, p99, p99.9) in us.
pub fn eventfd_floor(rounds: usize) -> (f64, f64, f64) {
    // Blocking eventfds (flags 0), closed when dropped at the end.
    let (a, b) = (
        EventFd::new(0).expect("eventfd"),
        EventFd::new(0).expect("eventfd"),
    );
    let mut v: Vec<u64> = Vec::with_capacity(rounds);
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_self(1);
            for _ in 0..rounds {
                let _ = a.read();
                let _ = b.write(1);
            }
        });
        pin_self(0);
        for _ in 0..rounds {
            let t0 = Instant::now();
            let _ = a.write(1);
            let _ = b.read();
            v.push(t0.elapsed().as_nanos() as u64);
        }
    });
    // Undo the pinning of this (main) thread.
    pin_self_to(0..CpuSet::count());
    v.sort_unstable();
    let q = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1] as f64 / 1e3;
    (q(0.5), q(0.99), q(0.999))
}

/// Slots of the hand-over ring: as P2's rings (netmap's default).
const SLOTS: u32 = 1024;
/// Slots handed over per index update, each way: about the pipe's batch at full rate.
const BATCH: u32 = 256;
/// Where the consumer's index (`head`) and the producer's (`tail`) live: a cache line each,
/// before the slots.
const HEAD: usize = 0;
const TAIL: usize = 64;
const SLOTS_AT: usize = 128;

/// The ceiling of P2 on this machine, in Mpps: `total` netmap slots handed from CPU 0 to CPU 1
/// through one shared ring, as the pipe hands them (the producer swaps each slot's buffer
/// index and writes its length and flags; the consumer reads length and index, then gives the
/// slots back), with both threads spinning and nothing else running: no daemon, no sender
/// work, no syscalls, no sleeps. Each 64-byte line of four slots crosses from one CPU to the
/// other and back once a lap, which is the cost no zero-copy path over these slots avoids.
pub fn slot_handover(total: u64) -> f64 {
    // Line-aligned, as netmap's rings are (page-aligned): an allocation is only 8-aligned.
    let m = OwnedMem::new(64 + SLOTS_AT + SLOTS as usize * 16);
    let pad = m.mem().as_ptr().align_offset(64);
    let mem = m
        .mem()
        .sub(pad, SLOTS_AT + SLOTS as usize * 16)
        .expect("fits");
    let slots = mem.slots(SLOTS_AT, SLOTS).expect("slots fit");
    for (i, s) in slots.as_slice().iter().enumerate() {
        s.set_buf_idx(2 + i as u32);
    }
    let mut secs = 0.0;
    std::thread::scope(|sc| {
        sc.spawn(|| {
            pin_self(1);
            consume(&mem, slots.as_slice(), total)
        });
        pin_self(0);
        let t0 = Instant::now();
        produce(&mem, slots.as_slice(), total);
        // The consumer's last release: everything arrived.
        while mem.load_u32(HEAD, Ordering::Acquire) != (total % u64::from(SLOTS)) as u32 {
            std::hint::spin_loop();
        }
        secs = t0.elapsed().as_secs_f64();
    });
    pin_self_to(0..CpuSet::count());
    total as f64 / secs / 1e6
}

fn produce(mem: &SharedMem, slots: &[ptnet_protocol::shmem::AtomicSlot], total: u64) {
    let (mut tail, mut sent, mut spare) = (0u32, 0u64, 2 + SLOTS);
    while sent < total {
        let head = mem.load_u32(HEAD, Ordering::Acquire);
        let free = SLOTS - 1 - ring_dist(head, tail, SLOTS);
        let mut n = free
            .min(BATCH)
            .min(u32::try_from(total - sent).unwrap_or(BATCH));
        if n == 0 {
            std::hint::spin_loop();
            continue;
        }
        sent += u64::from(n);
        while n > 0 {
            let run = n.min(SLOTS - tail);
            for s in &slots[tail as usize..][..run as usize] {
                // The swap: the consumer's released buffer comes back, another goes out.
                let back = s.buf_idx();
                s.set_buf_idx(spare);
                s.set_len(60);
                s.set_flags(slot_flags::BUF_CHANGED);
                spare = back;
            }
            tail = ring_add(tail, run, SLOTS);
            n -= run;
        }
        mem.store_u32(TAIL, tail, Ordering::Release);
    }
}

fn consume(mem: &SharedMem, slots: &[ptnet_protocol::shmem::AtomicSlot], total: u64) {
    let (mut head, mut got, mut seen) = (0u32, 0u64, 0u64);
    while got < total {
        let tail = mem.load_u32(TAIL, Ordering::Acquire);
        let mut n = ring_dist(head, tail, SLOTS).min(BATCH);
        if n == 0 {
            std::hint::spin_loop();
            continue;
        }
        got += u64::from(n);
        while n > 0 {
            let run = n.min(SLOTS - head);
            for s in &slots[head as usize..][..run as usize] {
                seen += u64::from(s.len()) + u64::from(s.buf_idx() & 1);
            }
            head = ring_add(head, run, SLOTS);
            n -= run;
        }
        mem.store_u32(HEAD, head, Ordering::Release);
    }
    std::hint::black_box(seen);
}

/// What one context switch on CPU 0 costs, in us: (between two processes, between two threads
/// of one process). A token (one byte) goes back and forth through two pipes between this
/// thread and an echo (`cat`, or a thread running the same loop), both on CPU 0: each round
/// trip is two switches and the same four syscalls either way, so the difference is what
/// changing address spaces costs. (P2's sender and the daemon's TX ring thread share CPU 0.)
pub fn switch_cost(rounds: u32) -> Result<(f64, f64), String> {
    let err = |e: std::io::Error| format!("switch probe: {e}");
    let mut cat = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("switch probe: starting cat: {e}"))?;
    let mut cpu0 = CpuSet::new();
    cpu0.set(0).map_err(|e| format!("switch probe: {e}"))?;
    let pid = Pid::from_raw(cat.id() as i32);
    sched_setaffinity(pid, &cpu0).map_err(|e| format!("switch probe: pinning cat: {e}"))?;
    let (mut to, mut from) = (cat.stdin.take(), cat.stdout.take());
    let procs = match (to.as_mut(), from.as_mut()) {
        (Some(w), Some(r)) => bounce(w, r, rounds).map_err(err),
        _ => Err("switch probe: cat's pipes".into()),
    };
    drop(to);
    let _ = cat.wait();
    let (r_echo, mut w) = std::io::pipe().map_err(err)?;
    let (mut r, mut w_echo) = std::io::pipe().map_err(err)?;
    let threads = std::thread::scope(|sc| {
        sc.spawn(move || {
            pin_self(0);
            let mut r_echo = r_echo;
            let mut b = [0u8; 1];
            while r_echo.read_exact(&mut b).is_ok() && w_echo.write_all(&b).is_ok() {}
        });
        let t = bounce(&mut w, &mut r, rounds).map_err(err);
        drop(w);
        t
    });
    Ok((procs?, threads?))
}

/// `rounds` round trips of one byte out through `w` and back through `r`, from CPU 0: us per
/// switch (half a round trip).
fn bounce(w: &mut impl Write, r: &mut impl Read, rounds: u32) -> std::io::Result<f64> {
    pin_self(0);
    let mut b = [0u8; 1];
    let t0 = Instant::now();
    for _ in 0..rounds {
        w.write_all(&b)?;
        r.read_exact(&mut b)?;
    }
    let us = t0.elapsed().as_secs_f64() * 1e6 / f64::from(rounds) / 2.0;
    pin_self_to(0..CpuSet::count());
    Ok(us)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_slot_hand_over_moves_every_slot_and_gives_a_rate() {
        let mpps = super::slot_handover(100_000);
        assert!(mpps.is_finite() && mpps > 0.0, "{mpps}");
    }

    #[test]
    fn switches_between_processes_and_threads_are_both_timed() {
        let (procs, threads) = super::switch_cost(2_000).unwrap();
        eprintln!("PROBE process {procs:.2} us, thread {threads:.2} us");
        assert!(procs > 0.0 && threads > 0.0, "{procs} {threads}");
    }
}

#!/usr/bin/env python3
"""Syscalls and wake-ups per P5 round trip, per thread, placed as `ptnet-bench` places P5.

    rtt.py BIN_DIR [--secs S] [--warm S] [--daemon-args "..."] [--no-perf]

Starts `ptnet-backend` (CPUs 0,1) with the pipe `netmap:lat{1` / `netmap:lat}1`, `ptnet-pkt-gen
-f pong` on CPU 1 and `-f ping` on CPU 0 (unpaced, far more pings than the window needs), waits
`--warm`, then over `--secs` counts, per thread: voluntary context switches (sleeps: each is one
wake-up later), preemptions, and syscalls by name (`perf stat --per-thread` on the syscall
tracepoints; `raw_syscalls:sys_enter` for the total). Round trips in the window: the daemon's TX
packet counter of `lat{1` (ptnet-ctl stats), read before and after; kicks and interrupts per
round trip from the same counters. Without perf
(`--no-perf`, which leaves the timing alone), read- and write-class syscalls from /proc/TID/io. Counts do not depend on the machine's load; times do.
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

from procstat import perf_per_thread, start_daemon, threads

SYSCALLS = ["write", "read", "pwritev2", "preadv2", "poll", "ppoll", "futex", "clock_nanosleep",
            "nanosleep", "sched_yield", "epoll_wait", "epoll_pwait", "recvmsg", "sendmsg",
            "rt_sigreturn", "tgkill", "readlinkat", "openat", "close", "statx", "getrandom"]


def ctl(bindir, d):
    out = subprocess.run([f"{bindir}/ptnet-ctl", "--socket-dir", d, "--json", "stats"],
                         capture_output=True, text=True, check=True).stdout
    rings = {}
    for p in json.loads(out)["stats"]["ports"]:
        for r in p["rings"]:
            rings[f"{p['name']}:{r['dir']}{r['index']}"] = r
    return rings


def sched_counts(d, tids):
    """Per thread of `tids`: wake-ups from its own CPU (`wake_local`) and the other
    (`wake_remote`), switches in that preempted another of our threads (`preempted_ours`) or
    another process (`preempted_other`), and switches out while runnable (`preempted`)."""
    ours = set(tids)
    out = subprocess.run(["perf", "script", "-i", f"{d}/sched.data"], capture_output=True,
                         text=True).stdout
    c = {}
    add = lambda tid, k: c.setdefault(str(tid), {}).__setitem__(k, c[str(tid)].get(k, 0) + 1)
    for line in out.splitlines():
        m = re.search(r"\[(\d+)\].*sched_wakeup: comm=.* pid=(\d+) .*target_cpu=(\d+)", line)
        if m and int(m.group(2)) in ours:
            add(m.group(2), "wake_local" if int(m.group(1)) == int(m.group(3)) else "wake_remote")
            continue
        m = re.search(r"sched_switch: .*prev_pid=(\d+) .*prev_state=(\S+) ==> .*next_pid=(\d+)",
                      line)
        if m and m.group(2).startswith("R"):
            prev, nxt = int(m.group(1)), int(m.group(3))
            if prev in ours:
                add(prev, "preempted")
            if nxt in ours and prev != 0:
                add(nxt, "preempted_ours" if prev in ours else "preempted_other")
    return c


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("--secs", type=float, default=3)
    ap.add_argument("--warm", type=float, default=1)
    ap.add_argument("--daemon-args", default="")
    ap.add_argument("--gen-args", default="")
    ap.add_argument("--no-perf", action="store_true", help="context switches only")
    ap.add_argument("--sched", action="store_true",
                    help="instead of syscalls: record the scheduler's wake-ups and switches "
                         "(perf record -a) and count, per thread, wake-ups from the same CPU "
                         "and from the other one, and who it preempted or followed")
    ap.add_argument("--snap", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.snap:
        procs = dict(kv.split("=") for kv in a.snap.split(","))
        json.dump([{k: threads(int(p), io=True) for k, p in procs.items()}, ctl(a.bin, a.dir), time.time()],
                  sys.stdout)
        return
    ports = ["netmap:lat{1", "netmap:lat}1"]
    d = tempfile.mkdtemp(prefix="rtt-")
    daemon, socks = start_daemon(a.bin, d, ports, a.daemon_args)
    gen = lambda f, cpu, sock, extra: subprocess.Popen(
        ["taskset", "-c", cpu, f"{a.bin}/ptnet-pkt-gen", "-i", f"vhost-user:{sock}", "-f", f]
        + extra + shlex.split(a.gen_args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    pong = gen("pong", "1", socks[1], ["-T", "1000"])
    time.sleep(0.5)
    ping = gen("ping", "0", socks[0], ["-n", "100000000", "-T", "0"])
    time.sleep(a.warm)
    procs = {"daemon": daemon.pid, "ping": ping.pid, "pong": pong.pid}
    # Both snapshots (threads and the daemon's counters) are taken inside perf's window, by this
    # script called again (`--snap`), so the syscall counts cover the same round trips.
    pids = ",".join(f"{k}={p}" for k, p in procs.items())
    me = os.path.abspath(__file__)
    snap = lambda n: f"python3 {me} {a.bin} --snap {pids} --dir {d} > {d}/snap{n}.json"
    inner = ["sh", "-c", f"{snap(0)}; sleep {a.secs}; {snap(1)}"]
    if a.no_perf:
        perf = ""
        subprocess.run(inner, check=True)
    elif a.sched:
        perf = ""
        subprocess.run(["perf", "record", "-q", "-o", f"{d}/sched.data", "-e",
                        "sched:sched_wakeup,sched:sched_switch", "-a", "--"] + inner,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        ev = ["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{s}" for s in SYSCALLS]
        perf = subprocess.run(
            ["perf", "stat", "--per-thread", "-x,", "-e", ",".join(ev), "-p",
             ",".join(str(p) for p in procs.values()), "--"] + inner,
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True).stderr
    (before, s0, t0), (after, s1, t1) = (json.load(open(f"{d}/snap{n}.json")) for n in (0, 1))
    dt = t1 - t0
    for p in (ping, pong):
        p.kill()
        p.wait()
    daemon.terminate()
    daemon.wait(timeout=10)
    sched = sched_counts(d, [int(t) for v in after.values() for t in v]) if a.sched else {}
    delta = lambda r, k: s1[r][k] - s0[r][k]
    rtts = delta("netmap:lat{1:tx0", "packets")
    if rtts <= 0:
        sys.exit("no round trips in the window: " + open(f"{d}/backend.log").read()[-2000:])
    print(f"{rtts} round trips in {dt:.2f} s ({1e6 * dt / rtts:.1f} us each on average)")
    print("daemon counters per round trip:")
    for r in sorted(s1):
        vals = {k: delta(r, k) / rtts for k in ("packets", "kicks", "irqs_sent", "irqs_suppressed",
                                                "batches")}
        print(f"  {r:22} " + " ".join(f"{k}={v:.3f}" for k, v in vals.items()))
    # raw_syscalls:sys_enter counts them all.
    sysc = {tid: {"ALL" if e == "sys_enter" else e: v for e, v in c.items()}
            for tid, c in perf_per_thread(perf).items()}
    print(f"{'per round trip':28} {'sleeps':>7} {'preempt':>7} {'cpu us':>7}  syscalls")
    for k in procs:
        for tid, b in before[k].items():
            e = after[k].get(tid)
            if not e:
                continue
            vol = (e["vol"] - b["vol"]) / rtts
            inv = (e["inv"] - b["inv"]) / rtts
            run = (e["run"] - b["run"]) / rtts / 1e3
            c = sysc.get(tid, {})
            if vol < 0.0005 and inv < 0.0005 and not any(c.values()):
                continue
            if tid in sched:
                c = {}
                calls = " ".join(f"{n}={v / rtts:.3f}" for n, v in sorted(sched[tid].items()))
            else:
                calls = None
            if calls is None:
                calls = " ".join(f"{n}={v / rtts:.3f}" for n, v in sorted(c.items()) if v)
            # Without perf: read-class and write-class syscalls (/proc/TID/io; poll is neither).
            calls = calls or (f"reads={(e['syscr'] - b['syscr']) / rtts:.3f} "
                              f"writes={(e['syscw'] - b['syscw']) / rtts:.3f}")
            print(f"  {k + ':' + e['comm']:26} {vol:7.3f} {inv:7.3f} {run:7.2f}  {calls}")


if __name__ == "__main__":
    main()

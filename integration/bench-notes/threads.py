#!/usr/bin/env python3
"""Per-thread cost of one P2 (pipe) or P3 (VALE) run, placed as `ptnet-bench` places it.

    threads.py BIN_DIR pipe|vale [--secs S] [--warm S] [--gen-args "..."] [--daemon-args "..."]
               [--conf slots=4096] [--tx-cpu 1]

Starts `ptnet-backend` (CPUs 0,1; its "-tx" ring threads then pinned to CPU 0 or `--tx-cpu`,
"-rx" to CPU 1; `--conf`: port options of both ports),
`ptnet-pkt-gen -f rx` on CPU 1 and `-f tx` on CPU 0, waits `--warm`, then samples every thread's
/proc/PID/task/TID/{stat,status,schedstat} over `--secs`. Prints, per thread: CPU share, CPU ns
per packet, voluntary context switches (sleeps, so wake-ups) per 1000 packets, run queue wait
per packet; the rate is the receiver's, from its periodic reports in the window.
"""

import argparse
import re
import shlex
import signal
import subprocess
import tempfile
import time

from procstat import perf_per_thread, start_daemon, threads

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("topo", choices=["pipe", "vale"])
    ap.add_argument("--secs", type=float, default=4)
    ap.add_argument("--warm", type=float, default=1.5)
    ap.add_argument("--gen-args", default="")
    ap.add_argument("--daemon-args", default="")
    ap.add_argument("--conf", default="", help="port options of both ports, e.g. slots=4096")
    ap.add_argument("--tx-cpu", default="0", help="CPU of the daemon's TX ring threads")
    ap.add_argument("--rx-args", default="", help="extra flags of the receiver only")
    ap.add_argument("--events", default="",
                    help="more perf events to count per thread (e.g. uprobes: probe_ptnet:pipesync)")
    ap.add_argument("--syscalls", action="store_true",
                    help="count syscalls per thread with perf (slows the run down)")
    a = ap.parse_args()
    ports = ["netmap:bp{1", "netmap:bp}1"] if a.topo == "pipe" else ["vale0:1", "vale0:2"]
    d = tempfile.mkdtemp(prefix="thr-")
    daemon, socks = start_daemon(a.bin, d, ports, a.daemon_args, a.conf)
    gen = lambda f, cpu, sock, extra="": subprocess.Popen(
        ["taskset", "-c", cpu, f"{a.bin}/ptnet-pkt-gen", "-i", f"vhost-user:{sock}", "-f", f,
         "-T", "250"] + shlex.split(a.gen_args) + shlex.split(extra), stderr=subprocess.PIPE, text=True)
    rx = gen("rx", "1", socks[1], a.rx_args)
    time.sleep(0.3)
    tx = gen("tx", "0", socks[0])
    time.sleep(0.5)
    for tid, th in threads(daemon.pid).items():
        if "-tx" in th["comm"] or "-rx" in th["comm"]:
            cpu = a.tx_cpu if "-tx" in th["comm"] else "1"
            subprocess.run(["taskset", "-p", "-c", cpu, tid], stdout=subprocess.DEVNULL)
    time.sleep(a.warm)
    procs = {"daemon": daemon.pid, "gen-tx": tx.pid, "gen-rx": rx.pid}
    before = {k: threads(p) for k, p in procs.items()}
    t0 = time.time()
    ev = ["syscalls:sys_enter_write", "syscalls:sys_enter_pwritev2", "syscalls:sys_enter_poll",
          "syscalls:sys_enter_ppoll"]
    if a.events:
        ev = ([] if not a.syscalls else ev) + a.events.split(",")
    perf = "" if not (a.syscalls or a.events) else subprocess.run(
        ["perf", "stat", "--per-thread", "-x,", "-e", ",".join(ev), "-p",
         ",".join(str(p) for p in procs.values()), "--", "sleep", str(a.secs)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True).stderr
    if not (a.syscalls or a.events):
        time.sleep(a.secs)
    after = {k: threads(p) for k, p in procs.items()}
    dt = time.time() - t0
    for p in (tx, rx):
        p.send_signal(signal.SIGINT)
    out = rx.communicate(timeout=10)[1]
    tx.communicate(timeout=10)
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=10)
    rates = [float(m.group(1)) for m in re.finditer(r"\] ([\d.]+) Mpps", out)]
    # Reports every 250 ms: those inside the window (skip the warm-up ones, the last partial).
    skip = int((0.8 + a.warm) / 0.25)
    win = rates[skip:skip + int(a.secs / 0.25)] or rates
    mpps = sum(win) / len(win)
    pkts = mpps * 1e6 * dt
    print(f"{a.topo} {a.gen_args!r}: {mpps:.2f} Mpps over {dt:.1f} s "
          f"(reports {min(win):.2f}-{max(win):.2f})")
    print(f"{'process/thread':28} {'cpu%':>6} {'ns/pkt':>7} {'sleeps/kpkt':>11} "
          f"{'preempt/kpkt':>12} {'rq-wait ns/pkt':>14}")
    sysc = perf_per_thread(perf)
    if sysc:
      print("events per 1000 packets (write: kicks and eventfd writes; pwritev2: interrupts; "
          "poll/ppoll: sleeps or checks; probes: calls):")
    for k in procs:
        for tid, c in sysc.items():
            if tid in after[k] and sum(c.values()) > 0:
                print(f"  {k + ':' + after[k][tid]['comm']:28} " + " ".join(
                    f"{e}={1000 * v / pkts:.3f}" for e, v in sorted(c.items()) if v))
    for k in procs:
        for tid, b in before[k].items():
            e = after[k].get(tid)
            if not e:
                continue
            run = e["run"] - b["run"]
            if run < 1e6:
                continue
            print(f"{k + ':' + e['comm']:28} {100 * run / 1e9 / dt:6.1f} {run / pkts:7.1f} "
                  f"{1000 * (e['vol'] - b['vol']) / pkts:11.3f} "
                  f"{1000 * (e['inv'] - b['inv']) / pkts:12.3f} {(e['wait'] - b['wait']) / pkts:14.1f}")


if __name__ == "__main__":
    main()

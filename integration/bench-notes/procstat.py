"""What `rtt.py` and `threads.py` read of a run: the daemon started for it, its threads' counters
under /proc, and `perf stat --per-thread` counts. Imported from the scripts' own folder."""

import os
import re
import shlex
import subprocess
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def _num(pattern, text):
    return int(re.search(pattern, text).group(1))


def threads(pid, io=False):
    """Per thread id of process `pid`: `comm`; `cpu`, user plus system seconds (stat); `vol` and
    `inv`, voluntary (sleeps) and involuntary context switches (status); `run`, `wait` (ns on a
    CPU and waiting in its run queue) and `slices` (schedstat); with `io`, `syscr` and `syscw`,
    read- and write-class syscalls (/proc/TID/io, which needs root). A thread that is gone, or
    whose files cannot be read, is left out."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{tid}"
        try:
            comm = open(f"{base}/comm").read().strip()
            st = open(f"{base}/stat").read()
            fields = st[st.rindex(")") + 2:].split()
            status = open(f"{base}/status").read()
            run_ns, wait_ns, slices = map(int, open(f"{base}/schedstat").read().split())
            t = dict(comm=comm, cpu=(int(fields[11]) + int(fields[12])) / HZ,
                     vol=_num(r"voluntary_ctxt_switches:\s+(\d+)", status),
                     inv=_num(r"nonvoluntary_ctxt_switches:\s+(\d+)", status),
                     run=run_ns, wait=wait_ns, slices=slices)
            if io:
                text = open(f"{base}/io").read()
                t.update(syscr=_num(r"syscr:\s+(\d+)", text), syscw=_num(r"syscw:\s+(\d+)", text))
        except (OSError, AttributeError, ValueError):
            continue
        out[tid] = t
    return out


def start_daemon(bindir, d, ports, daemon_args, conf=""):
    """`ptnet-backend` on CPUs 0 and 1 serving `ports` from socket directory `d` (its log in
    d/backend.log), with `daemon_args` (a shell-quoted string) before them and `conf` (port
    options, e.g. "slots=4096") on each port. Returns the process and the ports' socket paths
    once every socket exists; exits with the log after 10 s."""
    log = open(f"{d}/backend.log", "w")
    suffix = f"@conf:{conf}" if conf else ""
    daemon = subprocess.Popen(
        ["taskset", "-c", "0,1", f"{bindir}/ptnet-backend", "--socket-dir", d]
        + shlex.split(daemon_args) + [p + suffix for p in ports], stdout=log, stderr=log)
    socks = [f"{d}/{p}.sock" for p in ports]
    t = time.time()
    while not all(os.path.exists(s) for s in socks):
        if time.time() - t > 10:
            sys.exit("daemon did not come up: " + open(f"{d}/backend.log").read())
        time.sleep(0.05)
    return daemon, socks


def perf_per_thread(text):
    """`perf stat --per-thread -x,` output as {tid: {event: count}}, an event named by its last
    part (`syscalls:sys_enter_write`: `write`, `probe_ptnet:pipesync`: `pipesync`,
    `raw_syscalls:sys_enter`: `sys_enter`)."""
    counts = {}
    for line in text.splitlines():
        f = line.split(",")
        if len(f) > 3 and f[1].isdigit():
            tid = f[0].rsplit("-", 1)[-1]
            short = f[3].split("sys_enter_")[-1].split(":")[-1]
            counts.setdefault(tid, {})[short] = int(f[1])
    return counts

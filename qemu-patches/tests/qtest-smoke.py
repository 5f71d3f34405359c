#!/usr/bin/env python3
"""Drive the patched QEMU's ptnet devices through the qtest accelerator.

No guest: the script plays the guest driver with port I/O, PCI config and
guest-memory accesses (qtest protocol), against ptnet-backend listening on
SOCKET.

Checks: both PCI functions with their ids, classes and BAR types/sizes;
register reads (ring counts, MAC from QEMU's mac=, memdev registers); the
netmap memory BAR is backed by the daemon's memory (--expect-ifname: the
port's netmap_if name read through the BAR); PTFEAT write/read-back; PTCTL
results (ENXIO without CSB, EINVAL, CREATE/DELETE); CSB programming; kicks.

With --peer (SOCKET is one end of a netmap pipe, PEER the other end) and
--pkt-gen, the interrupt path end to end: a host ptnet-pkt-gen sends packets
into the pipe, the daemon fills our RX rings, publishes hwtail in the CSB in
guest RAM and signals the rings' call eventfds, and QEMU must raise INTx (the
PIIX routes it to the IOAPIC, intercepted by qtest) or, with MSI-X enabled,
write the vector's MSI data to the guest RAM address in its table entry.

With --restart-cmd (a shell command that kills and restarts the backend) or
--restart-handshake (print RESTART-BACKEND on stdout and wait for a line on
stdin, for a harness that owns the backend process): the link going down
(CREATE -> ENXIO), the automatic reconnection and state replay (CREATE -> 0,
memory BAR mapped again) and, with --peer, interrupts from the new daemon.

Prints one PASS/FAIL line per check and exits 1 if any failed.

usage: qtest-smoke.py QEMU SOCKET [--expect-ifname NAME]
                     [--peer PEER_SOCKET --pkt-gen PATH]
                     [--restart-cmd CMD | --restart-handshake] [--qtest-log FILE]
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

MAC = "52:54:00:12:34:56"

# Guest physical addresses (guest RAM, zeroed at start) and BAR placement.
IO, MDIO, MSIX, MEM = 0xC000, 0xC100, 0xFEBF0000, 0xE0000000
GH, HG = 0x200000, 0x201000     # CSB: guest-to-host (atok), host-to-guest (ktoa)
MSI_TARGET = 0x300000           # MSI-X vector v writes its data at MSI_TARGET + 4 * v
MSI_DATA = 0x5A5A0000           # data of vector v: MSI_DATA + v
CSB_ENTRY = 64                  # bytes per CSB entry (both arrays)
ATOK_APPL_NEED_KICK = 8
KTOA_HWCUR, KTOA_HWTAIL, KTOA_KERN_NEED_KICK = 0, 4, 8

PIIX_DEVFN = 8                  # 00:01.0, the PIIX3 ISA bridge of machine pc
PIIX_PIRQ_IRQS = [5, 9, 10, 11]  # what the script routes PIRQA..D to (config 0x60..0x63)

PACKETS = 32                    # per peer burst


class QTest:
    def __init__(self, qemu, sock_path, qtest_log):
        self.dir = tempfile.mkdtemp(prefix="ptnet-qtest-")
        qpath = os.path.join(self.dir, "qtest.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(qpath)
        srv.listen(1)
        self.log = open(os.path.join(self.dir, "qemu.log"), "w+")
        cmd = [qemu, "-L", "/usr/share/qemu", "-L", "/usr/share/seabios",
               "-machine", "pc,memory-backend=mem", "-accel", "qtest",
               "-qtest", "unix:" + qpath, "-qtest-log", qtest_log,
               "-nodefaults", "-display", "none", "-m", "256M",
               "-object", "memory-backend-memfd,id=mem,size=256M,share=on",
               "-chardev", "socket,id=p0,path=%s,reconnect-ms=500" % sock_path,
               "-device", "ptnet-pci,chardev=p0,mac=%s,addr=4" % MAC]
        print("+", " ".join(cmd), file=sys.stderr)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        srv.settimeout(30)
        try:
            self.sock, _ = srv.accept()
        finally:
            srv.close()
        self.f = self.sock.makefile("rw")
        self.irqs = []          # ("raise" | "lower", n), in arrival order

    def cmd(self, line):
        self.f.write(line + "\n")
        self.f.flush()
        while True:
            r = self.f.readline()
            if not r:
                raise RuntimeError("qtest %r: QEMU closed the connection" % line)
            r = r.strip()
            if r.startswith("IRQ"):
                _, what, n = r.split()
                self.irqs.append((what, int(n)))
                continue
            if not r.startswith("OK"):
                raise RuntimeError("qtest %r -> %r" % (line, r))
            parts = r.split()
            return int(parts[1], 16) if len(parts) > 1 else None

    def outl(self, port, v): self.cmd("outl 0x%x 0x%x" % (port, v))
    def inl(self, port): return self.cmd("inl 0x%x" % port)
    def readl(self, a): return self.cmd("readl 0x%x" % a)
    def writel(self, a, v): self.cmd("writel 0x%x 0x%x" % (a, v))

    def cfg_addr(self, devfn, off):
        return 0x80000000 | (devfn << 8) | (off & 0xFC)

    def cfg_read(self, devfn, off):
        self.outl(0xCF8, self.cfg_addr(devfn, off))
        return self.inl(0xCFC)

    def cfg_write(self, devfn, off, v):
        self.outl(0xCF8, self.cfg_addr(devfn, off))
        self.outl(0xCFC, v)

    def close(self):
        try:
            self.sock.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.log.seek(0)
            out = self.log.read()
            self.log.close()
            shutil.rmtree(self.dir, ignore_errors=True)
            return out


failures = []


def check(what, cond, detail=""):
    print(("PASS " if cond else "FAIL ") + what + (" (%s)" % detail if detail else ""),
          flush=True)
    if not cond:
        failures.append(what)
    return cond


def poll(cond, timeout=5.0, step=0.01):
    """Re-evaluates cond() until it is true or timeout seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


def bar_probe(q, devfn, bar):
    off = 0x10 + 4 * bar
    old = q.cfg_read(devfn, off)
    q.cfg_write(devfn, off, 0xFFFFFFFF)
    v = q.cfg_read(devfn, off)
    q.cfg_write(devfn, off, old)
    return v


def read_name(q, addr):
    name = b"".join(q.readl(addr + 4 * i).to_bytes(4, "little") for i in range(4))
    return name.split(b"\0")[0].decode("latin-1")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("qemu")
    ap.add_argument("socket")
    ap.add_argument("--expect-ifname", help="name in the port's netmap_if (ptnet-backend: the port name)")
    ap.add_argument("--peer", help="socket of the other end of the pipe SOCKET serves: "
                    "interrupt checks with packets sent there by --pkt-gen")
    ap.add_argument("--pkt-gen", help="host ptnet-pkt-gen (vhost-user transport) for --peer")
    rs = ap.add_mutually_exclusive_group()
    rs.add_argument("--restart-cmd", help="shell command that kills and restarts the backend")
    rs.add_argument("--restart-handshake", action="store_true",
                    help="print RESTART-BACKEND and wait for a line on stdin once the harness "
                    "has killed and restarted the backend")
    ap.add_argument("--qtest-log", default="none", help="file for QEMU's qtest log (default: none)")
    args = ap.parse_args()
    if args.peer and not args.pkt_gen:
        ap.error("--peer needs --pkt-gen")

    q = QTest(args.qemu, args.socket, args.qtest_log)
    try:
        run(q, args)
    except Exception as e:          # report, then still stop QEMU and print its output
        check("no qtest or harness error", False, "%s: %s" % (type(e).__name__, e))
    finally:
        out = q.close()
        if failures or out.strip():
            print("--- qemu output ---\n" + out)
    print("%d failure(s)" % len(failures))
    sys.exit(1 if failures else 0)


class Dev:
    """What the script learnt about the device, shared by the check groups."""


def run(q, args):
    d = Dev()
    nic = md = None
    for devfn in range(0, 256, 8):
        idv = q.cfg_read(devfn, 0)
        if idv == 0x000D1B36:
            nic = devfn
        elif idv == 0x000C1B36:
            md = devfn
    check("ptnet-pci 1b36:000d present", nic is not None)
    check("ptnetmap-memdev 1b36:000c present", md is not None)
    if nic is None or md is None:
        return
    d.nic, d.md = nic, md
    check("ptnet class 0x0200", q.cfg_read(nic, 8) >> 16 == 0x0200, hex(q.cfg_read(nic, 8)))
    check("memdev class 0xff00", q.cfg_read(md, 8) >> 16 == 0xFF00, hex(q.cfg_read(md, 8)))
    check("ptnet interrupt pin A", (q.cfg_read(nic, 0x3C) >> 8) & 0xFF == 1)
    b0 = bar_probe(q, nic, 0)
    check("ptnet BAR0 I/O 256 bytes", b0 == 0xFFFFFF01, hex(b0))
    b2 = bar_probe(q, nic, 2)
    check("ptnet BAR2 32-bit memory 4096 bytes", b2 == 0xFFFFF000, hex(b2))
    check("ptnet BAR1 unused", bar_probe(q, nic, 1) == 0)
    m0 = bar_probe(q, md, 0)
    check("memdev BAR0 I/O 128 bytes", m0 == 0xFFFFFF81, hex(m0))
    m1 = bar_probe(q, md, 1)
    msize = (~(m1 & ~0xF) + 1) & 0xFFFFFFFF
    check("memdev BAR1 32-bit prefetchable memory", m1 & 0xF == 0x8, hex(m1))
    cap = q.cfg_read(nic, 0x34) & 0xFF
    d.msix_cap = None
    while cap:
        hdr = q.cfg_read(nic, cap)
        if hdr & 0xFF == 0x11:
            d.msix_cap = cap
            nvec = ((hdr >> 16) & 0x7FF) + 1
        cap = (hdr >> 8) & 0xFF
    check("ptnet MSI-X capability", d.msix_cap is not None)

    q.cfg_write(nic, 0x10, IO)
    q.cfg_write(nic, 0x18, MSIX)
    q.cfg_write(nic, 0x04, 0x7)     # I/O, memory, bus master (MSI writes)
    q.cfg_write(md, 0x10, MDIO)
    q.cfg_write(md, 0x14, MEM)
    q.cfg_write(md, 0x04, 0x3)

    d.ntx, d.nrx = q.inl(IO + 28), q.inl(IO + 32)
    d.rx_slots = q.inl(IO + 40)
    check("ring counts", d.ntx >= 1 and d.nrx >= 1, "%d tx %d rx" % (d.ntx, d.nrx))
    if d.msix_cap is not None:
        check("one MSI-X vector per ring", nvec == d.ntx + d.nrx, "%d vectors" % nvec)
    mac_lo, mac_hi = q.inl(IO + 8), q.inl(IO + 12)
    check("MAC from mac=", (mac_lo, mac_hi) == (0x00123456, 0x5254), "%x %x" % (mac_hi, mac_lo))
    check("offsets 68..127 read 0", all(q.inl(IO + o) == 0 for o in range(68, 128, 4)))
    d.memsz = q.inl(MDIO + 4) << 32 | q.inl(MDIO + 0)
    check("memdev MEMSIZE > 0 and BAR1 = next pow2",
          d.memsz > 0 and msize >= d.memsz and msize & (msize - 1) == 0 and msize < 2 * d.memsz,
          "memsize 0x%x bar 0x%x" % (d.memsz, msize))
    check("HOSTMEMID == MEMID", q.inl(IO + 48) == q.inl(MDIO + 8), "%d" % q.inl(IO + 48))
    bufs = q.inl(MDIO + 92)
    bufsz = q.inl(MDIO + 96)
    bufofs = q.inl(MDIO + 88)
    check("buffer pool inside the memory", bufofs + bufs * bufsz <= d.memsz,
          "ofs 0x%x n %d sz %d" % (bufofs, bufs, bufsz))
    # The daemon's SHMEM_MAP is handled by the main loop right after realize
    d.nifp = q.inl(IO + 24)
    name = read_name(q, MEM + d.nifp)
    if args.expect_ifname is not None:
        check("netmap_if name through BAR1 at NIFP_OFS", name == args.expect_ifname, repr(name))
    else:
        print("info: netmap_if name at NIFP_OFS 0x%x: %r" % (d.nifp, name))

    q.outl(IO + 0, 0xFFFFFFFF)
    acc = q.inl(IO + 0)
    check("PTFEAT all-ones reads back the offered features only", acc & ~1 == 0, "accepted %x" % acc)
    q.outl(IO + 0, 0)
    check("PTFEAT 0 reads 0", q.inl(IO + 0) == 0)

    q.outl(IO + 4, 1)
    check("CREATE without CSB -> ENXIO", q.inl(IO + 4) == 6, str(q.inl(IO + 4)))
    q.outl(IO + 4, 77)
    check("unknown PTCTL -> EINVAL", q.inl(IO + 4) == 22, str(q.inl(IO + 4)))

    q.outl(IO + 52, 0)
    q.outl(IO + 56, GH)
    q.outl(IO + 60, 0)
    q.outl(IO + 64, HG)
    check("CSB addresses read back", (q.inl(IO + 56), q.inl(IO + 64)) == (GH, HG))
    q.outl(IO + 4, 1)
    check("CREATE with CSB -> 0", q.inl(IO + 4) == 0, str(q.inl(IO + 4)))
    # CREATE makes the daemon publish its rings in the host-to-guest CSB entries: TX rings
    # with every slot but one free, RX rings empty, kicks wanted.
    tx0 = [q.readl(HG + o) for o in (KTOA_HWCUR, KTOA_HWTAIL, KTOA_KERN_NEED_KICK)]
    check("CSB ktoa[TX 0] after CREATE: hwcur 0, hwtail slots-1, kern_need_kick 1",
          tx0 == [0, q.inl(IO + 36) - 1, 1], "hwcur %d hwtail %d kern_need_kick %d" % tuple(tx0))
    # ... and the guest-to-host entries as netmap's CSB_ENABLE does: head/cur the host's,
    # appl_need_kick 1, sync_flags 1 (the stock driver reads them back in ptnet_sync_from_csb).
    atoks = [[q.readl(GH + CSB_ENTRY * r + o) for o in (0, 4, ATOK_APPL_NEED_KICK, 12)]
             for r in range(d.ntx + d.nrx)]
    check("CSB atok after CREATE: head 0, cur 0, appl_need_kick 1, sync_flags 1",
          all(a == [0, 0, 1, 1] for a in atoks), "atok %s" % atoks)
    for i in range(d.ntx + d.nrx):
        q.outl(IO + 128 + 4 * i, 1)
    time.sleep(0.1)
    check("kicks on every ring: QEMU still answers", q.inl(IO + 4) == 0)

    if args.peer:
        irq_checks(q, args, d)

    if args.restart_cmd or args.restart_handshake:
        restart_checks(q, args, d)

    q.outl(IO + 4, 2)
    check("DELETE -> 0", q.inl(IO + 4) == 0)
    q.outl(IO + 56, 0)
    q.outl(IO + 64, 0)


# ---------------------------------------------------------------------------
# Interrupts, with packets from a host pkt-gen on the other end of the pipe

def rx_rings(d):
    return [d.ntx + j for j in range(d.nrx)]


def rx_tails(q, d):
    return [q.readl(HG + CSB_ENTRY * r + KTOA_HWTAIL) for r in rx_rings(d)]


def peer_send(args, d, n):
    """A host pkt-gen sends n frames into the peer end; spread over its TX rings in bursts."""
    burst = max(1, n // (2 * d.nrx))
    cmd = [args.pkt_gen, "-i", "vhost-user:" + args.peer, "-f", "tx", "-n", str(n),
           "-b", str(burst), "-l", "60", "-T", "0", "--timeout", "5", "--json"]
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    sent = None
    for line in reversed(r.stdout.splitlines()):
        if line.startswith("{"):
            sent = json.loads(line).get("packets")
            break
    return check("peer pkt-gen sent %d packets" % n, r.returncode == 0 and sent == n,
                 "exit %s, packets %s%s" % (r.returncode, sent,
                                            ", stderr: " + r.stderr.strip() if r.returncode else ""))


def send_and_wait(q, args, d, what):
    """Sends PACKETS through the pipe; returns how far each RX ring's hwtail moved."""
    before = rx_tails(q, d)
    if not peer_send(args, d, PACKETS):
        return [0] * d.nrx

    def moved():
        return [(a - b) % d.rx_slots for a, b in zip(rx_tails(q, d), before)]
    got = poll(lambda: sum(moved()) >= PACKETS and moved(), timeout=10) or moved()
    check("%s: RX hwtail in the CSB advanced by the packets sent" % what, sum(got) == PACKETS,
          "per RX ring %s, %d sent" % (got, PACKETS))
    return got


def status(q, d):
    return q.cfg_read(d.nic, 4)


def intx_pending(q, d):
    return (status(q, d) >> 16) & 0x8 != 0


def msix_table(q, d):
    return MSIX + (q.cfg_read(d.nic, d.msix_cap + 4) & ~7)


def msix_pba(q, d, v):
    pba = MSIX + (q.cfg_read(d.nic, d.msix_cap + 8) & ~7)
    return (q.readl(pba + 4 * (v // 32)) >> (v % 32)) & 1


def msi_words(q, d):
    return [q.readl(MSI_TARGET + 4 * v) for v in rx_rings(d)]


def clear_msi_words(q, d):
    for v in rx_rings(d):
        q.writel(MSI_TARGET + 4 * v, 0)


def expect_msi(got, d):
    """MSI data expected at each RX vector's target: written iff its ring received."""
    return [(MSI_DATA + v) if n else 0 for v, n in zip(rx_rings(d), got)]


def irq_checks(q, args, d):
    nic = d.nic
    # INTx reaches the interrupt controller only through the PIIX's PIRQ routing (the BIOS's
    # job): route PIRQA..D, then intercept the IOAPIC's inputs. Slot S pin A uses PIRQ (S-1)&3.
    check("PIIX3 ISA bridge at 00:01.0", q.cfg_read(PIIX_DEVFN, 0) == 0x70008086)
    q.cfg_write(PIIX_DEVFN, 0x60, sum(irq << (8 * i) for i, irq in enumerate(PIIX_PIRQ_IRQS)))
    gsi = PIIX_PIRQ_IRQS[((nic >> 3) - 1) & 3]
    q.cmd("irq_intercept_in ioapic")
    cmd = status(q, d) & 0xFFFF
    check("INTx enabled, MSI-X off at start",
          cmd & 0x400 == 0 and (q.cfg_read(nic, d.msix_cap) >> 31) == 0)

    # 1. Interrupts off in the CSB (appl_need_kick 0 everywhere, as a busy-polling guest
    #    writes it after CREATE): packets, no interrupt.
    for r in range(d.ntx + d.nrx):
        q.writel(GH + CSB_ENTRY * r + ATOK_APPL_NEED_KICK, 0)
    got = send_and_wait(q, args, d, "appl_need_kick=0")
    time.sleep(0.3)
    check("appl_need_kick=0: no interrupt (INTx not asserted, no IOAPIC input raised)",
          not intx_pending(q, d) and not any(w == "raise" for w, _ in q.irqs),
          "status %#x, irq events %s" % (status(q, d) >> 16, q.irqs))

    # 2. The guest asks for interrupts on its RX rings: INTx, held until masked.
    for r in rx_rings(d):
        q.writel(GH + CSB_ENTRY * r + ATOK_APPL_NEED_KICK, 1)
    q.irqs.clear()
    got = send_and_wait(q, args, d, "INTx")
    asserted = poll(lambda: intx_pending(q, d) and ("raise", gsi) in q.irqs)
    check("INTx: asserted after the daemon's call (PCI status bit 3)", intx_pending(q, d),
          "status %#x" % (status(q, d) >> 16))
    check("INTx: IOAPIC input %d raised (slot %d pin A via PIRQ)" % (gsi, nic >> 3), asserted,
          "irq events %s" % q.irqs)
    time.sleep(0.2)
    check("INTx: held (not pulsed) until the guest masks it",
          intx_pending(q, d) and ("lower", gsi) not in q.irqs, "irq events %s" % q.irqs)
    q.cfg_write(nic, 4, cmd | 0x400)
    check("INTx: deasserted once masked (command bit 10)",
          not intx_pending(q, d) and q.irqs[-1:] == [("lower", gsi)], "irq events %s" % q.irqs)
    q.cfg_write(nic, 4, cmd)
    time.sleep(0.1)
    check("INTx: stays low when unmasked with nothing new",
          not intx_pending(q, d) and q.irqs[-1:] == [("lower", gsi)], "irq events %s" % q.irqs)

    # 3. MSI-X on; vectors masked (their reset state). A call sets the pending bit; unmasking
    #    the vector delivers it: the MSI data lands at the address in its table entry.
    ctl = q.cfg_read(nic, d.msix_cap)
    q.cfg_write(nic, d.msix_cap, (ctl | 0x80000000) & ~0x40000000)
    table = msix_table(q, d)
    for v in rx_rings(d):
        q.writel(table + 16 * v + 0, MSI_TARGET + 4 * v)
        q.writel(table + 16 * v + 4, 0)
        q.writel(table + 16 * v + 8, MSI_DATA + v)
        check("MSI-X vector %d masked before the guest unmasks it" % v,
              q.readl(table + 16 * v + 12) & 1 == 1)
    clear_msi_words(q, d)
    q.irqs.clear()
    got = send_and_wait(q, args, d, "MSI-X masked")
    want_pba = [1 if n else 0 for n in got]
    pba = poll(lambda: [msix_pba(q, d, v) for v in rx_rings(d)] == want_pba and want_pba) or \
        [msix_pba(q, d, v) for v in rx_rings(d)]
    check("MSI-X masked: each RX ring that received has its pending bit set, the others not",
          pba == want_pba and any(want_pba), "RX vectors %s pending %s" % (rx_rings(d), pba))
    check("MSI-X masked: nothing written to the MSI addresses", msi_words(q, d) == [0] * d.nrx,
          str([hex(w) for w in msi_words(q, d)]))
    check("MSI-X enabled: no INTx", not intx_pending(q, d) and not q.irqs,
          "irq events %s" % q.irqs)
    for v in rx_rings(d):
        q.writel(table + 16 * v + 12, 0)        # unmask
    check("MSI-X unmasked: pending MSI delivered (data at the vector's address)",
          msi_words(q, d) == expect_msi(got, d), str([hex(w) for w in msi_words(q, d)]))
    check("MSI-X unmasked: pending bits clear",
          [msix_pba(q, d, v) for v in rx_rings(d)] == [0] * d.nrx)

    # 4. Vectors unmasked: the daemon's call is delivered at once.
    clear_msi_words(q, d)
    got = send_and_wait(q, args, d, "MSI-X")
    want = expect_msi(got, d)
    words = poll(lambda: msi_words(q, d) == want and want) or msi_words(q, d)
    check("MSI-X: each RX ring that received wrote its vector's data, the others nothing",
          words == want and any(want), "want %s got %s" % ([hex(w) for w in want],
                                                           [hex(w) for w in words]))
    check("MSI-X: no INTx", not intx_pending(q, d) and not q.irqs, "irq events %s" % q.irqs)
    d.msix_on = True


# ---------------------------------------------------------------------------
# The backend goes away and comes back

def restart_checks(q, args, d):
    tails_before = rx_tails(q, d) if args.peer else None
    if args.restart_cmd:
        subprocess.run(args.restart_cmd, shell=True, check=True)
    else:
        print("RESTART-BACKEND", flush=True)
        if not sys.stdin.readline():
            raise RuntimeError("harness closed stdin instead of restarting the backend")
    # wait until the link is down (CREATE refused) ...
    down = False
    for _ in range(100):
        q.outl(IO + 4, 1)
        if q.inl(IO + 4) == 6:
            down = True
            break
        time.sleep(0.05)
    check("after backend loss: CREATE -> ENXIO", down)
    # ... then up again: the state replay restarts the port
    up = False
    for _ in range(200):
        time.sleep(0.05)
        q.outl(IO + 4, 1)
        if q.inl(IO + 4) == 0:
            up = True
            break
    check("after reconnection: CREATE -> 0 again", up)
    check("CSB addresses kept", (q.inl(IO + 56), q.inl(IO + 64)) == (GH, HG))
    check("MEMSIZE kept", (q.inl(MDIO + 4) << 32 | q.inl(MDIO + 0)) == d.memsz)
    if args.expect_ifname is not None:
        name = read_name(q, MEM + d.nifp)
        check("netmap memory mapped after reconnection", name == args.expect_ifname, repr(name))
    if args.peer and getattr(d, "msix_on", False):
        # The replay sent RESUME: the new daemon took the ring positions the guest's CSB holds
        # (a stock guest never reloads them), not a fresh ring's.
        check("restarted daemon resumed the RX rings at the guest's positions (hwtail in the CSB)",
              rx_tails(q, d) == tails_before, "%s, before the restart %s"
              % (rx_tails(q, d), tails_before))
        clear_msi_words(q, d)
        got = send_and_wait(q, args, d, "after reconnection")
        want = expect_msi(got, d)
        words = poll(lambda: msi_words(q, d) == want and want) or msi_words(q, d)
        check("after reconnection: the new daemon's calls reach the guest as MSI-X",
              words == want and any(want), "want %s got %s" % ([hex(w) for w in want],
                                                               [hex(w) for w in words]))


if __name__ == "__main__":
    main()

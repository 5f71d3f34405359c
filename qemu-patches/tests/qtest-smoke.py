#!/usr/bin/env python3
"""Drive the patched QEMU's ptnet devices through the qtest accelerator.

No guest: the script plays the guest driver with port I/O and PCI config
accesses (qtest protocol), against whatever vhost-user backend listens on
SOCKET (ptnet-backend, or the development stand-in mock-backend.py).

Checks: both PCI functions with their ids, classes and BAR types/sizes;
register reads (ring counts, MAC from QEMU's mac=, memdev MEMSIZE); the
netmap memory BAR is backed by the daemon's memory (a read through the BAR
equals --expect-word if given); PTFEAT write/read-back; CSB programming;
PTCTL CREATE/DELETE results; kicks; and, with --reconnect-cmd, the link
going down (CREATE -> ENXIO) and the state replay after reconnection.

usage: qtest-smoke.py QEMU SOCKET [--expect-word 0x...] [--expect-ifname NAME]
                     [--irq-echo] [--restart-cmd CMD]
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

MAC = "52:54:00:12:34:56"


class QTest:
    def __init__(self, qemu, sock_path, extra):
        self.dir = tempfile.mkdtemp(prefix="ptnet-qtest-")
        qpath = os.path.join(self.dir, "qtest.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(qpath)
        srv.listen(1)
        self.log = open(os.path.join(self.dir, "qemu.log"), "w+")
        cmd = [qemu, "-L", "/usr/share/qemu", "-L", "/usr/share/seabios",
               "-machine", "pc,memory-backend=mem", "-accel", "qtest",
               "-qtest", "unix:" + qpath, "-nodefaults", "-display", "none",
               "-m", "256M",
               "-object", "memory-backend-memfd,id=mem,size=256M,share=on",
               "-chardev", "socket,id=p0,path=%s,reconnect-ms=500" % sock_path,
               "-device", "ptnet-pci,chardev=p0,mac=%s,addr=4" % MAC] + extra
        print("+", " ".join(cmd), file=sys.stderr)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        srv.settimeout(30)
        self.sock, _ = srv.accept()
        self.f = self.sock.makefile("rw")

    def cmd(self, line):
        self.f.write(line + "\n")
        self.f.flush()
        while True:
            r = self.f.readline().strip()
            if r.startswith("IRQ"):
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
            self.cmd("quit") if False else None
        finally:
            self.proc.terminate()
            self.proc.wait(10)
            self.log.seek(0)
            return self.log.read()


failures = []


def check(what, cond, detail=""):
    print(("PASS " if cond else "FAIL ") + what + (" (%s)" % detail if detail else ""))
    if not cond:
        failures.append(what)


def bar_probe(q, devfn, bar):
    off = 0x10 + 4 * bar
    old = q.cfg_read(devfn, off)
    q.cfg_write(devfn, off, 0xFFFFFFFF)
    v = q.cfg_read(devfn, off)
    q.cfg_write(devfn, off, old)
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("qemu")
    ap.add_argument("socket")
    ap.add_argument("--expect-word", type=lambda x: int(x, 0))
    ap.add_argument("--expect-ifname", help="name in the port's netmap_if (ptnet-backend: the port name)")
    ap.add_argument("--irq-echo", action="store_true",
                    help="the backend signals ring i's call fd on each kick (mock-backend.py --kick-echo)")
    ap.add_argument("--restart-cmd", help="shell command that kills and restarts the backend")
    args = ap.parse_args()

    q = QTest(args.qemu, args.socket, [])
    try:
        run(q, args)
    finally:
        out = q.close()
        print("--- qemu output ---\n" + out)
    print("%d failure(s)" % len(failures))
    sys.exit(1 if failures else 0)


def run(q, args):
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
    found_msix = False
    while cap:
        hdr = q.cfg_read(nic, cap)
        if hdr & 0xFF == 0x11:
            found_msix = True
            msix_cap = cap
            nvec = ((hdr >> 16) & 0x7FF) + 1
        cap = (hdr >> 8) & 0xFF
    check("ptnet MSI-X capability", found_msix)

    IO, MDIO, MSIX, MEM = 0xC000, 0xC100, 0xFEBF0000, 0xE0000000
    q.cfg_write(nic, 0x10, IO)
    q.cfg_write(nic, 0x18, MSIX)
    q.cfg_write(nic, 0x04, 0x7)
    q.cfg_write(md, 0x10, MDIO)
    q.cfg_write(md, 0x14, MEM)
    q.cfg_write(md, 0x04, 0x3)

    ntx, nrx = q.inl(IO + 28), q.inl(IO + 32)
    check("ring counts", ntx >= 1 and nrx >= 1, "%d tx %d rx" % (ntx, nrx))
    if found_msix:
        check("one MSI-X vector per ring", nvec == ntx + nrx, "%d vectors" % nvec)
    mac_lo, mac_hi = q.inl(IO + 8), q.inl(IO + 12)
    check("MAC from mac=", (mac_lo, mac_hi) == (0x00123456, 0x5254), "%x %x" % (mac_hi, mac_lo))
    check("offsets 68..127 read 0", all(q.inl(IO + o) == 0 for o in range(68, 128, 4)))
    memsz = q.inl(MDIO + 4) << 32 | q.inl(MDIO + 0)
    check("memdev MEMSIZE > 0 and BAR1 = next pow2", memsz > 0 and msize >= memsz and msize & (msize - 1) == 0 and msize < 2 * memsz,
          "memsize 0x%x bar 0x%x" % (memsz, msize))
    check("HOSTMEMID == MEMID", q.inl(IO + 48) == q.inl(MDIO + 8), "%d" % q.inl(IO + 48))
    bufs = q.inl(MDIO + 92)
    bufsz = q.inl(MDIO + 96)
    bufofs = q.inl(MDIO + 88)
    check("buffer pool inside the memory", bufofs + bufs * bufsz <= memsz,
          "ofs 0x%x n %d sz %d" % (bufofs, bufs, bufsz))
    # The daemon's SHMEM_MAP is handled by the main loop right after realize
    nifp = q.inl(IO + 24)
    name = b"".join(q.readl(MEM + nifp + 4 * i).to_bytes(4, "little") for i in range(4))
    name = name.split(b"\0")[0].decode("latin-1")
    if args.expect_ifname is not None:
        check("netmap_if name through BAR1 at NIFP_OFS", name == args.expect_ifname, repr(name))
    else:
        print("info: netmap_if name at NIFP_OFS 0x%x: %r" % (nifp, name))
    w = q.readl(MEM)
    if args.expect_word is not None:
        check("netmap memory visible through BAR1", w == args.expect_word, hex(w))
    else:
        print("info: first word of the netmap memory: 0x%x" % w)

    q.outl(IO + 0, 0xFFFFFFFF)
    acc = q.inl(IO + 0)
    check("PTFEAT all-ones reads back the offered features only", acc & ~1 == 0, "accepted %x" % acc)
    q.outl(IO + 0, 0)
    check("PTFEAT 0 reads 0", q.inl(IO + 0) == 0)

    q.outl(IO + 4, 1)
    check("CREATE without CSB -> ENXIO", q.inl(IO + 4) == 6, str(q.inl(IO + 4)))
    q.outl(IO + 4, 77)
    check("unknown PTCTL -> EINVAL", q.inl(IO + 4) == 22, str(q.inl(IO + 4)))

    GH, HG = 0x200000, 0x201000    # guest RAM (zeroed)
    q.outl(IO + 52, 0); q.outl(IO + 56, GH)
    q.outl(IO + 60, 0); q.outl(IO + 64, HG)
    check("CSB addresses read back", (q.inl(IO + 56), q.inl(IO + 64)) == (GH, HG))
    q.outl(IO + 4, 1)
    check("CREATE with CSB -> 0", q.inl(IO + 4) == 0, str(q.inl(IO + 4)))
    for i in range(ntx + nrx):
        q.outl(IO + 128 + 4 * i, 1)
    time.sleep(0.2)
    if args.irq_echo:
        # MSI-X is off: the backend's call (echoed kicks) holds INTx until the
        # guest masks it in the command register (uio_pci_generic's way).
        st = q.cfg_read(nic, 4)
        check("INTx asserted after a call (PCI status bit 3)", (st >> 16) & 0x8 != 0, hex(st))
        q.cfg_write(nic, 4, (st & 0xFFFF) | 0x400)
        st2 = q.cfg_read(nic, 4)
        check("INTx deasserted once masked", (st2 >> 16) & 0x8 == 0, hex(st2))
        q.cfg_write(nic, 4, st & 0xFFFF & ~0x400)
        # MSI-X on, vectors masked (their reset state): a call sets the
        # pending bit; unmasking the vector delivers it and clears the bit.
        ctl = q.cfg_read(nic, msix_cap)
        q.cfg_write(nic, msix_cap, ctl | 0x80000000)
        q.outl(IO + 128 + 4, 1)     # kick ring 1 -> call 1
        time.sleep(0.3)
        pba_off = q.cfg_read(nic, msix_cap + 8) & ~7
        pba = q.readl(MSIX + pba_off)
        check("MSI-X: call on a masked vector sets its pending bit", pba & 2 != 0, hex(pba))
        q.writel(MSIX + 16, 0xFEE00000)
        q.writel(MSIX + 20, 0)
        q.writel(MSIX + 24, 0x31)
        q.writel(MSIX + 28, 0)      # unmask vector 1
        pba = q.readl(MSIX + pba_off)
        check("MSI-X: unmasking delivers it (pending bit clear)", pba & 2 == 0, hex(pba))
        q.writel(MSIX + 28, 1)
        q.cfg_write(nic, msix_cap, ctl & ~0x80000000)
    # host-to-guest CSB entry 0 as published by the daemon (hwcur, hwtail)
    print("info: CSB ktoa[0] hwcur=%d hwtail=%d kern_need_kick=%d" %
          (q.readl(HG), q.readl(HG + 4), q.readl(HG + 8)))

    if args.restart_cmd:
        subprocess.run(args.restart_cmd, shell=True, check=True)
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
        check("MEMSIZE kept", (q.inl(MDIO + 4) << 32 | q.inl(MDIO + 0)) == memsz)
        w2 = q.readl(MEM)
        if args.expect_ifname is not None:
            name2 = b"".join(q.readl(MEM + nifp + 4 * i).to_bytes(4, "little") for i in range(4))
            name2 = name2.split(b"\0")[0].decode("latin-1")
            check("netmap memory mapped after reconnection", name2 == args.expect_ifname, repr(name2))
        print("info: CSB ktoa[0] after replay hwcur=%d hwtail=%d" % (q.readl(HG), q.readl(HG + 4)))
        if args.expect_word is not None:
            check("netmap memory remapped after reconnection", w2 == args.expect_word, hex(w2))

    q.outl(IO + 4, 2)
    check("DELETE -> 0", q.inl(IO + 4) == 0)
    q.outl(IO + 56, 0)
    q.outl(IO + 64, 0)


if __name__ == "__main__":
    main()

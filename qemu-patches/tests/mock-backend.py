#!/usr/bin/env python3
"""DEVELOPMENT STAND-IN for ptnet-backend -- not a test, not the daemon.

A minimal vhost-user backend speaking the ptnet device contract
(protocol/src/device.rs) closely enough to exercise the QEMU patch
before the real daemon builds: handshake, GET_SHMEM_CONFIG, GET/SET_CONFIG,
SHMEM_MAP of a memfd on the backend channel. It runs no sync loops.
It logs every message to stderr; with --kick-echo it signals the call fd of
ring i whenever ring i is kicked.

usage: mock-backend.py SOCKET [--tx N] [--rx N] [--mem-size BYTES] [--once]
"""
import argparse
import os
import select
import socket
import struct
import sys

F_PROTOCOL_FEATURES = 1 << 30
PROTOCOL_FEATURES = 0x402229
NAMES = {1: "GET_FEATURES", 2: "SET_FEATURES", 3: "SET_OWNER", 5: "SET_MEM_TABLE",
         12: "SET_VRING_KICK", 13: "SET_VRING_CALL", 15: "GET_PROTOCOL_FEATURES",
         16: "SET_PROTOCOL_FEATURES", 17: "GET_QUEUE_NUM", 18: "SET_VRING_ENABLE",
         21: "SET_BACKEND_REQ_FD", 24: "GET_CONFIG", 25: "SET_CONFIG", 34: "RESET_DEVICE",
         44: "GET_SHMEM_CONFIG"}


def log(*a):
    print("mock:", *a, file=sys.stderr, flush=True)


class Port:
    def __init__(self, ntx, nrx, mem_size):
        self.ntx, self.nrx, self.mem_size = ntx, nrx, mem_size
        self.memfd = os.memfd_create("mock-netmap")
        os.ftruncate(self.memfd, mem_size)
        # recognisable pattern: word i = 0x5a000000 + i for the first 4 KiB
        os.pwrite(self.memfd, b"".join(struct.pack("<I", 0x5A000000 + i) for i in range(1024)), 0)
        cfg = bytearray(256)
        def put(off, v):
            cfg[off:off + 4] = struct.pack("<I", v & 0xFFFFFFFF)
        put(0, 1)                      # PTFEAT offered: VNET_HDR
        put(8, 0x00000007)             # MAC_LO (daemon's choice, QEMU overrides)
        put(12, 0x0200)
        put(24, 0x100)                 # NIFP_OFS
        put(28, ntx); put(32, nrx)
        put(36, 256); put(40, 256)
        put(48, 3)                     # HOSTMEMID
        put(128 + 0, mem_size & 0xFFFFFFFF); put(128 + 4, mem_size >> 32)
        put(128 + 8, 3)
        put(128 + 88, 0x10000); put(128 + 92, 64); put(128 + 96, 2048)
        self.cfg = cfg
        self.offered = 1

    def get(self, off):
        return struct.unpack_from("<I", self.cfg, off)[0]

    def set(self, off, v):
        self.cfg[off:off + 4] = struct.pack("<I", v & 0xFFFFFFFF)

    def write(self, off, v):
        if off == 0:
            self.set(0, self.offered & v)
        elif off == 4:
            if v == 1:
                ok = self.get(56) or self.get(52)
                ok = ok and (self.get(64) or self.get(60))
                self.set(4, 0 if ok else 6)
            elif v == 2:
                self.set(4, 0)
            else:
                self.set(4, 22)
        elif off == 44:
            if v in (0, 10, 12):
                self.set(44, v)
        elif off in (52, 56, 60, 64):
            self.set(off, v)
        else:
            return False
        return True


def serve(conn, port, args):
    backend = None
    kicks, calls = {}, {}
    pending = b""
    while True:
        rl = [conn] + list(kicks.values())
        r, _, _ = select.select(rl, [], [])
        for kfd in [f for f in r if f is not conn]:
            idx = [i for i, f in kicks.items() if f == kfd][0]
            os.read(kfd, 8)
            log("kick ring", idx)
            if args.kick_echo and idx in calls:
                os.write(calls[idx], struct.pack("<Q", 1))
        if conn not in r:
            continue
        msg, fds, _, _ = socket.recv_fds(conn, 12, 16)
        if not msg:
            log("frontend closed")
            return
        while len(msg) < 12:
            more = conn.recv(12 - len(msg))
            if not more:
                return
            msg += more
        req, flags, size = struct.unpack("<III", msg)
        payload = b""
        while len(payload) < size:
            chunk, f2, _, _ = socket.recv_fds(conn, size - len(payload), 16)
            fds += f2
            if not chunk:
                return
            payload += chunk
        name = NAMES.get(req, str(req))
        need_reply = bool(flags & 0x8)

        def reply(body):
            conn.sendall(struct.pack("<III", req, 0x5, len(body)) + body)

        def ack(val=0):
            if need_reply:
                reply(struct.pack("<Q", val))

        if req == 1:
            log(name); reply(struct.pack("<Q", F_PROTOCOL_FEATURES))
        elif req == 15:
            log(name); reply(struct.pack("<Q", PROTOCOL_FEATURES))
        elif req == 17:
            log(name); reply(struct.pack("<Q", port.ntx + port.nrx))
        elif req == 44:
            log(name)
            reply(struct.pack("<II", 1, 0) + struct.pack("<Q", port.mem_size) + bytes(8 * 255))
        elif req == 24:
            off, sz, fl = struct.unpack_from("<III", payload)
            log(name, off, sz)
            reply(struct.pack("<III", off, sz, fl) + bytes(port.cfg[off:off + sz]))
        elif req == 25:
            off, sz, fl = struct.unpack_from("<III", payload)
            val = struct.unpack_from("<I", payload, 12)[0]
            ok = sz == 4 and port.write(off, val)
            log(name, off, hex(val), "->", hex(port.get(off)) if ok else "refused")
            ack(0 if ok else 1)
        elif req == 21:
            backend = fds[0]
            log(name, "fd", backend)
            ack()
            # SHMEM_MAP: shmid 0, fd_offset 0, shm_offset 0, len, flags RW; no reply
            body = struct.pack("<B7xQQQQ", 0, 0, 0, port.mem_size, 1)
            bs = socket.socket(fileno=os.dup(backend))
            socket.send_fds(bs, [struct.pack("<III", 9, 0x1, len(body)) + body], [port.memfd])
            bs.detach()
            log("sent SHMEM_MAP len", hex(port.mem_size))
        elif req == 5:
            n = struct.unpack_from("<I", payload)[0]
            regs = [struct.unpack_from("<QQQQ", payload, 8 + 32 * i) for i in range(n)]
            log(name, n, "regions", ["gpa=0x%x size=0x%x" % (g, s) for g, s, _, _ in regs], "fds", len(fds))
            for f in fds:
                os.close(f)
            fds = []
            ack()
        elif req in (12, 13):
            idx = struct.unpack_from("<Q", payload)[0]
            ring = idx & 0xFF
            log(name, ring, "nofd" if idx & 0x100 else "fd")
            if fds:
                (kicks if req == 12 else calls)[ring] = fds[0]
                fds = []
            ack()
        else:
            log(name, "flags", hex(flags), "size", size)
            ack()
        for f in fds:
            if f not in (backend,):
                os.close(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("socket")
    ap.add_argument("--tx", type=int, default=1)
    ap.add_argument("--rx", type=int, default=1)
    ap.add_argument("--mem-size", type=int, default=5 * 1024 * 1024)
    ap.add_argument("--once", action="store_true")
    ap.add_argument("--kick-echo", action="store_true")
    args = ap.parse_args()
    port = Port(args.tx, args.rx, args.mem_size)
    try:
        os.unlink(args.socket)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(args.socket)
    srv.listen(1)
    log("listening on", args.socket)
    while True:
        conn, _ = srv.accept()
        log("frontend connected")
        try:
            serve(conn, port, args)
        except (ConnectionError, OSError) as e:
            log("connection error", e)
        conn.close()
        if args.once:
            break


if __name__ == "__main__":
    main()

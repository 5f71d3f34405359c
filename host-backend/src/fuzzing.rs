//! Fuzz target bodies (issue 10): everything a frontend or a guest controls, driven from raw
//! bytes. The cargo-fuzz crate in `fuzz/` calls these under libFuzzer (nightly, `cargo xtask
//! fuzz`); `tests/fuzz_corpus.rs` runs every file of `fuzz/corpus/` through them on stable, so
//! CI replays the corpus on every run.
//!
//! Inputs are decoded by [`Input`], a byte reader in the style of `arbitrary::Unstructured`
//! (this crate takes no fuzzing dependency): a short input simply reads as zeros, so every byte
//! string is a valid input. Each target asserts what must hold whatever the input: no panic, no
//! fault, ring indexes in range, and no buffer index outside the pool reaching a peer.
//!
//! | target | what the input controls |
//! |---|---|
//! | [`device`] | a sequence of vhost-user requests to one or two [`PtnetDevice`]s over a real pipe or VALE pair: memory tables of memfds of any size, offset and seal, kick/call fds (eventfds or not, saturated), register writes and SET_CONFIG, PTCTL CREATE/DELETE/RESUME, GET_CONFIG, guest writes into the CSB and the port memory while the rings run, truncation |
//! | [`sync`] | [`HostKring::tx_pass`]/[`HostKring::rx_pass`] over a ring in memory, with the CSB and the ring written between passes and, by a second thread, during them |
//! | [`slots`] | TX syncs of pipes, VALE and null ports over any slot contents (and hostile receivers' RX slots) |
//! | [`vale_frames`] | frames and virtio-net headers through a 3-port VALE switch whose ports use different header lengths |
//! | [`vnet`] | [`VnetHeader::parse`], [`complete_checksum`] and [`Gso`] segmentation on any bytes |

use crate::frontend::ptnet::syncloop::LoopOptions;
use crate::frontend::ptnet::PtnetDevice;
use crate::port::RingWorker;
use crate::portspec::PortSpec;
use crate::served::{build_ports, NetmapImpl};
use crate::served::{Datapath, Port};
use ptnet_protocol::csb::{self, Atok, Ktoa};
use ptnet_protocol::netmap::{ring, ring_add, ring_dist, BufPool, RingView};
use ptnet_protocol::regs::{ptnet, PTCTL_CREATE, PTCTL_DELETE, PTCTL_RESUME};
use ptnet_protocol::shmem::OwnedMem;
use ptnet_protocol::sync::{ring_prev, HostKring, PortSync};
use ptnet_protocol::vnet::{self, complete_checksum, Gso, VnetHeader};
use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserMemoryRegion};
use vhost::vhost_user::VhostUserBackendReqHandlerMut;

/// A target body.
pub type Target = fn(&[u8]);

/// Every target, by the name its cargo-fuzz binary and corpus directory have.
pub const TARGETS: &[(&str, Target)] = &[
    ("device", device),
    ("sync", sync),
    ("slots", slots),
    ("vale_frames", vale_frames),
    ("vnet", vnet),
];

/// A reader of structured values from fuzzer bytes; past the end every value is zero.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// No bytes left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }

    fn le(&mut self, n: usize) -> u64 {
        self.bytes(n)
            .iter()
            .rev()
            .fold(0u64, |v, &b| (v << 8) | u64::from(b))
    }

    /// One byte.
    pub fn u8(&mut self) -> u8 {
        self.le(1) as u8
    }
    /// Two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        self.le(2) as u16
    }
    /// Four bytes, little-endian.
    pub fn u32(&mut self) -> u32 {
        self.le(4) as u32
    }
    /// Eight bytes, little-endian.
    pub fn u64(&mut self) -> u64 {
        self.le(8)
    }
    /// One byte's low bit.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }
    /// A value below `n` (0 when `n` is 0), from as few bytes as `n` needs.
    pub fn below(&mut self, n: u32) -> u32 {
        match n {
            0 => 0,
            1..=256 => u32::from(self.u8()) % n,
            257..=65536 => u32::from(self.u16()) % n,
            _ => self.u32() % n,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// vnet

/// Virtio-net header parsing, checksum completion and GSO segmentation on arbitrary bytes.
pub fn vnet(data: &[u8]) {
    let mut inp = Input::new(data);
    let len = [0, vnet::HDR_LEN, vnet::HDR_LEN_MRG, inp.below(16) as usize][inp.below(4) as usize];
    let out_len = inp.u16() as usize % 4096;
    let buf = inp.bytes(usize::MAX);
    let Ok(h) = VnetHeader::parse(buf, len) else {
        return;
    };
    // What parsed emits and parses back the same (num_buffers only in the 12-byte form).
    let mut again = [0u8; vnet::HDR_LEN_MRG];
    h.emit(&mut again, len).expect("room for a header");
    let back = VnetHeader::parse(&again, len).expect("an emitted header parses");
    assert_eq!(back, h, "header round trip");
    let frame = &buf[len..];
    let mut copy = frame.to_vec();
    let _ = complete_checksum(&h, &mut copy);
    assert_eq!(copy.len(), frame.len());
    if let Ok(g) = Gso::new(&h, frame) {
        assert!(g.count() >= 1 && g.count() <= vnet::MAX_GSO_SEGMENTS);
        let mut out = vec![0u8; out_len];
        for i in 0..g.count() {
            let l = g.segment_len(i);
            match g.write_segment(frame, i, &mut out) {
                Ok(n) => assert!(n == l && n <= out.len()),
                Err(_) => assert!(l > out.len()),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// sync

/// A port honouring [`PortSync`]'s contract, moving as many slots as the input says, and
/// checking on every call that the pass hands it indexes inside the ring and never a guest slot.
struct ToyPort<'a> {
    is_tx: bool,
    ring: RingView,
    budget: &'a [u8],
    at: usize,
    calls: u32,
}

impl ToyPort<'_> {
    fn next(&mut self) -> u32 {
        let b = self.budget.get(self.at).copied().unwrap_or(1);
        self.at = (self.at + 1) % self.budget.len().max(1);
        u32::from(b)
    }
}

fn check_kring(k: &HostKring) {
    let n = k.num_slots;
    assert!(
        k.hwcur < n && k.hwtail < n && k.rhead < n && k.rcur < n && k.rtail < n,
        "kring index out of range: {k:?}"
    );
}

impl PortSync for ToyPort<'_> {
    fn sync(&mut self, k: &mut HostKring, _flags: u32) {
        self.calls += 1;
        assert!(self.calls < 100_000, "a pass that never ends");
        check_kring(k);
        let n = k.num_slots;
        // The guest may only hand over slots the host gave it: [hwcur, rhead) within hwtail.
        assert!(
            ring_dist(k.hwcur, k.rhead, n) <= ring_dist(k.hwcur, k.hwtail, n) || !self.is_tx,
            "TX head beyond the host's tail: {k:?}"
        );
        if self.is_tx {
            let m = self.next().min(ring_dist(k.hwcur, k.rhead, n));
            for _ in 0..m {
                let _ = (self.ring.buf_idx(k.hwcur), self.ring.len(k.hwcur));
                k.hwcur = ring_add(k.hwcur, 1, n);
            }
            let done = self
                .next()
                .min(ring_dist(k.hwtail, ring_prev(k.hwcur, n), n));
            k.hwtail = ring_add(k.hwtail, done, n);
        } else {
            assert!(
                ring_dist(k.hwcur, k.rhead, n) <= ring_dist(k.hwcur, k.hwtail, n),
                "RX head beyond the received slots: {k:?}"
            );
            k.hwcur = k.rhead;
            let m = self
                .next()
                .min(ring_dist(k.hwtail, ring_prev(k.hwcur, n), n));
            for _ in 0..m {
                self.ring.set_len(k.hwtail, 60);
                k.hwtail = ring_add(k.hwtail, 1, n);
            }
        }
    }

    fn wants_released_slots(&self) -> bool {
        self.budget.first().is_some_and(|b| b & 0x80 != 0)
    }
}

/// The host sync passes over a ring in memory, the guest's side written between passes from the
/// input and during them by a second thread.
pub fn sync(data: &[u8]) {
    let mut inp = Input::new(data);
    let n = 2 + inp.below(63);
    let is_tx = inp.bool();
    let busy = inp.bool();
    let mut k = if inp.bool() {
        let (c, t) = (inp.below(n), inp.below(n));
        HostKring::with_state(n, c, t)
    } else if is_tx {
        HostKring::new_tx(n)
    } else {
        HostKring::new_rx(n)
    };
    let passes = 1 + inp.below(8);
    let blen = 1 + inp.below(16) as usize;
    let budget = inp.bytes(blen);
    let hostile: Vec<(u32, u32, u8)> = (0..inp.below(48))
        .map(|_| (inp.u8().into(), inp.u32(), inp.u8()))
        .collect();

    let rsize = ring::size(n);
    let csb_size = 2 * csb::ENTRY_SIZE;
    let mem = OwnedMem::new(csb_size + rsize);
    let m = mem.mem();
    let gh = m.sub(0, csb::ENTRY_SIZE).expect("inside");
    let hg = m.sub(csb::ENTRY_SIZE, csb::ENTRY_SIZE).expect("inside");
    let (atok, ktoa) = (
        Atok::new(&gh, 0).expect("fits"),
        Ktoa::new(&hg, 0).expect("fits"),
    );
    let ring = RingView::new(m.sub(csb_size, rsize).expect("inside"), n).expect("fits");
    k.start(&atok, &ktoa);
    let mut port = ToyPort {
        is_tx,
        ring,
        budget,
        at: 0,
        calls: 0,
    };
    let mut irqs = 0u64;
    std::thread::scope(|s| {
        if !hostile.is_empty() {
            s.spawn(|| {
                // The hostile guest: stores into the CSB (both arrays) and the first slots.
                for &(word, v, spin) in &hostile {
                    let off = (word as usize * 4) % (csb_size + 64);
                    let v = if spin & 0x80 != 0 { v % (2 * n) } else { v };
                    m.store_u32(off, v, Ordering::Release);
                    for _ in 0..(spin & 0x3f) {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        for _ in 0..passes {
            let (head, _) = atok.kernel_read();
            let (tail, _) = ktoa.appl_read();
            match inp.below(4) {
                // A well-behaved guest step: head and cur forward within what it owns.
                0 => {
                    let (h, t) = (head % n, tail % n);
                    // TX: free slots up to tail; RX: received slots up to tail.
                    let room = ring_dist(h, t, n);
                    let nh = ring_add(h, inp.below(room + 1), n);
                    let nc = ring_add(nh, inp.below(ring_dist(nh, t, n) + 1), n);
                    atok.appl_write(nh, nc);
                }
                1 => atok.appl_write(inp.u32() % (2 * n), inp.u32() % (2 * n)),
                2 => atok.appl_write(inp.u32(), inp.u32()),
                _ => {}
            }
            atok.set_appl_need_kick(inp.bool());
            atok.set_sync_flags(inp.u8().into());
            let mut irq = || irqs += 1;
            if is_tx {
                k.tx_pass(&atok, &ktoa, &mut port, busy, &mut irq);
            } else {
                k.rx_pass(&atok, &ktoa, &mut port, busy, &mut irq);
            }
            check_kring(&k);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// slots and vale_frames: real ports built in-process

/// Ports built for one input, with their rings taken out to be synced by hand.
struct Rig {
    ports: Vec<Arc<Port>>,
    workers: Vec<Vec<RingWorker>>,
}

impl Rig {
    fn new(specs: &[String]) -> Self {
        let specs: Vec<PortSpec> = specs
            .iter()
            .map(|s| PortSpec::parse(s).expect("a fuzz port spec"))
            .collect();
        let ports = build_ports(&specs, NetmapImpl::User).expect("fuzz ports");
        let workers = ports
            .iter()
            .map(|p| p.take_workers().expect("a userspace port"))
            .collect();
        Self { ports, workers }
    }

    fn bufs(&self, p: usize) -> BufPool {
        match self.ports[p].datapath() {
            Datapath::Threads { memory, .. } => memory.bufs(),
            Datapath::Kernel(_) => unreachable!("userspace ports only"),
        }
    }

    /// Every slot of every ring: (port, ring, slot) -> (buf_idx, len).
    fn snapshot(&self) -> Vec<Vec<Vec<(u32, u16)>>> {
        self.ports
            .iter()
            .map(|p| {
                (0..p.num_rings())
                    .map(|r| {
                        let v = p.ring_view(r).expect("userspace ring");
                        (0..v.num_slots())
                            .map(|i| (v.buf_idx(i), v.len(i)))
                            .collect()
                    })
                    .collect()
            })
            .collect()
    }

    /// Any slot the syncs changed carries a buffer of its own port's pool and a length that fits.
    fn check_changed(&self, before: &[Vec<Vec<(u32, u16)>>]) {
        for (p, port) in self.ports.iter().enumerate() {
            let bufs = self.bufs(p);
            for r in 0..port.num_rings() {
                let v = port.ring_view(r).expect("userspace ring");
                for i in 0..v.num_slots() {
                    let (b, l) = (v.buf_idx(i), v.len(i));
                    let (b0, l0) = before[p][r as usize][i as usize];
                    if b != b0 {
                        assert!(
                            bufs.valid(b),
                            "{} ring {r} slot {i}: buf_idx {b} outside the pool reached it",
                            port.name()
                        );
                    }
                    if (b, l) != (b0, l0) {
                        assert!(
                            u32::from(l) <= bufs.buf_size(),
                            "{} ring {r} slot {i}: length {l} over the buffer size",
                            port.name()
                        );
                    }
                }
            }
        }
    }

    /// Runs every RX ring's sync: takes in what producers committed, then (`release`) has the
    /// guest release everything it holds.
    fn drain_rx(&mut self, release: bool) {
        for ws in &mut self.workers {
            for w in ws.iter_mut().filter(|w| !w.is_tx) {
                w.sync.sync(&mut w.kring, 0);
                if release {
                    w.kring.rhead = w.kring.hwtail;
                    w.kring.rcur = w.kring.hwtail;
                    w.sync.sync(&mut w.kring, 0);
                }
                check_kring(&w.kring);
            }
        }
    }

    /// The guest of port `p` fills some of the free part of TX ring 0 with `fill`, and
    /// publishes its new head.
    fn fill_tx(
        &mut self,
        p: usize,
        inp: &mut Input,
        fill: &mut dyn FnMut(&mut Input, RingView, u32),
    ) {
        let view = self.ports[p].ring_view(0).expect("userspace ring");
        let w = &mut self.workers[p][0];
        assert!(w.is_tx);
        let n = w.kring.num_slots;
        let free = ring_dist(w.kring.rhead, w.kring.hwtail, n);
        let m = inp.below(free + 1);
        let mut i = w.kring.rhead;
        for _ in 0..m {
            fill(inp, view, i);
            i = ring_add(i, 1, n);
        }
        w.kring.rhead = i;
        w.kring.rcur = i;
    }

    /// Syncs TX ring 0 of port `p`.
    fn sync_tx(&mut self, p: usize, flags: u32) {
        let w = &mut self.workers[p][0];
        let (n, before_cur, head) = (w.kring.num_slots, w.kring.hwcur, w.kring.rhead);
        w.sync.sync(&mut w.kring, flags);
        check_kring(&w.kring);
        assert!(
            ring_dist(before_cur, w.kring.hwcur, n) <= ring_dist(before_cur, head, n),
            "TX sync went past the guest's head"
        );
    }

    /// One round: port `p`'s guest fills and syncs TX ring 0, then every RX ring syncs; checks
    /// every slot the syncs changed.
    fn round(
        &mut self,
        p: usize,
        inp: &mut Input,
        fill: &mut dyn FnMut(&mut Input, RingView, u32),
    ) {
        self.fill_tx(p, inp, fill);
        let before = self.snapshot();
        self.sync_tx(p, inp.u32());
        self.check_changed(&before);
        let before = self.snapshot();
        self.drain_rx(inp.bool());
        self.check_changed(&before);
    }
}

fn hdr_len(inp: &mut Input) -> u8 {
    [0, 10, 12][inp.below(3) as usize]
}

/// Pipe, VALE and null TX syncs over arbitrary slot contents; a hostile receiver may corrupt its
/// RX slots. Nothing outside the pool may reach a peer's slot.
pub fn slots(data: &[u8]) {
    let mut inp = Input::new(data);
    let kind = inp.below(3);
    let s = 2 + inp.below(15);
    let specs: Vec<String> = match kind {
        0 => vec![
            format!("netmap:fz{{0@conf:slots={s}"),
            "netmap:fz}0".to_string(),
        ],
        1 => ["a", "b", "c"]
            .iter()
            .map(|p| format!("valefz:{p}@conf:slots={s}"))
            .collect(),
        _ => vec![format!("null:fz@conf:slots={s}")],
    };
    let mut rig = Rig::new(&specs);
    for p in &rig.ports {
        if let Some(l) = p.vnet_hdr_len() {
            l.store(hdr_len(&mut inp), Ordering::Relaxed);
        }
    }
    // A hostile receiver: arbitrary indexes in some RX slots before anything arrives.
    for _ in 0..inp.below(4) {
        let p = inp.below(rig.ports.len() as u32) as usize;
        let port = &rig.ports[p];
        let r = port.num_rings() - 1;
        let v = port.ring_view(r).expect("userspace ring");
        v.set_buf_idx(inp.below(v.num_slots()), inp.u32());
    }
    for _ in 0..1 + inp.below(6) {
        let p = inp.below(rig.ports.len() as u32) as usize;
        let pool = rig.bufs(p).num();
        rig.round(p, &mut inp, &mut |inp, v, i| {
            let idx = match inp.below(4) {
                0 => inp.u32(),
                _ => inp.below(pool + 2),
            };
            let len = match inp.below(4) {
                0 => inp.u16(),
                _ => inp.below(2100) as u16,
            };
            v.set_buf_idx(i, idx);
            v.set_len(i, len);
            v.set_flags(i, inp.u16());
        });
    }
}

/// A frame as a guest would write it: a virtio-net header of `hdr` bytes (built from fields or
/// raw), Ethernet addresses (a switch port's, broadcast, or raw; the source mostly `own`), and
/// an IPv4/IPv6 TCP or UDP packet with consistent lengths, or raw bytes.
fn frame(inp: &mut Input, hdr: usize, own: [u8; 6], macs: &[[u8; 6]]) -> Vec<u8> {
    let mut f = vec![0u8; hdr];
    let dst = match inp.below(4) {
        0 => [0xff; 6],
        1 => {
            let mut m = [0u8; 6];
            m.copy_from_slice(&inp.u64().to_le_bytes()[..6]);
            m
        }
        _ => macs[inp.below(macs.len() as u32) as usize],
    };
    let src = if inp.below(8) == 0 {
        let mut m = [0u8; 6];
        m.copy_from_slice(&inp.u64().to_le_bytes()[..6]);
        m
    } else {
        own
    };
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    let l3 = f.len() - hdr + 2;
    let payload = inp.below(3000) as usize;
    let (gso_type, l4, csum_off) = match inp.below(4) {
        0 => {
            f.extend_from_slice(inp.bytes(payload));
            (inp.u8(), inp.u16() as usize, inp.u16())
        }
        k => {
            let (v6, tcp) = (k == 2, k != 3);
            let l4_len = if tcp { 20 } else { 8 } + payload;
            if v6 {
                f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
                f.extend_from_slice(&(l4_len as u16).to_be_bytes());
                f.extend_from_slice(&[if tcp { 6 } else { 17 }, 64]);
                f.extend_from_slice(&[0xfd; 32]);
            } else {
                f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
                f.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
                f.extend_from_slice(&[0, 1, 0x40, 0, 64, if tcp { 6 } else { 17 }, 0, 0]);
                f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
            }
            let l4 = f.len() - hdr;
            if tcp {
                f.extend_from_slice(&[0, 80, 0, 81, 0, 0, 0, 1, 0, 0, 0, 0, 0x50]);
                f.extend_from_slice(&[inp.u8(), 0xff, 0xff, 0, 0, 0, 0]);
            } else {
                f.extend_from_slice(&[0, 80, 0, 81]);
                f.extend_from_slice(&(l4_len as u16).to_be_bytes());
                f.extend_from_slice(&[0, 0]);
            }
            let body = inp.bytes(payload);
            f.extend_from_slice(body);
            f.resize(f.len() + payload - body.len(), 0xa5);
            let gso = match (v6, tcp) {
                (false, true) => vnet::gso::TCPV4,
                (true, true) => vnet::gso::TCPV6,
                _ => vnet::gso::UDP,
            };
            (gso, l4, if tcp { 16 } else { 6 })
        }
    };
    let _ = l3;
    if hdr > 0 {
        let h = if inp.below(8) == 0 {
            let mut raw = [0u8; vnet::HDR_LEN_MRG];
            raw.copy_from_slice(&inp.u64().to_le_bytes().repeat(2)[..12]);
            VnetHeader::parse(&raw, hdr).unwrap_or_default()
        } else {
            let flags = inp.below(4) as u8;
            let gso_type = if inp.bool() { gso_type } else { 0 };
            VnetHeader {
                flags,
                gso_type,
                hdr_len: (l4 as u16).wrapping_add(20),
                gso_size: 1 + inp.below(1600) as u16,
                csum_start: l4 as u16,
                csum_offset: csum_off,
                num_buffers: 0,
            }
        };
        h.emit(&mut f[..hdr], hdr).expect("room");
    }
    f
}

/// Frames with arbitrary contents and virtio-net headers through a VALE switch of 3 ports whose
/// guests set different header lengths (or the same, as the input says).
pub fn vale_frames(data: &[u8]) {
    let mut inp = Input::new(data);
    let s = 2 + inp.below(31);
    let specs: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|p| format!("valefz:{p}@conf:slots={s}"))
        .collect();
    let mut rig = Rig::new(&specs);
    let lens: [u8; 3] = if inp.bool() {
        [
            [0, 10, 12],
            [0, 12, 10],
            [10, 0, 12],
            [10, 12, 0],
            [12, 0, 10],
            [12, 10, 0],
        ][inp.below(6) as usize]
    } else {
        [(); 3].map(|_| hdr_len(&mut inp))
    };
    for (p, l) in rig.ports.iter().zip(lens) {
        p.vnet_hdr_len()
            .expect("VALE has headers")
            .store(l, Ordering::Relaxed);
    }
    let macs: Vec<[u8; 6]> = rig.ports.iter().map(|p| p.mac()).collect();
    for _ in 0..1 + inp.below(6) {
        let p = inp.below(3) as usize;
        let bufs = rig.bufs(p);
        let (own, hdr) = (macs[p], usize::from(lens[p]));
        rig.round(p, &mut inp, &mut |inp, v, i| {
            let f = frame(inp, hdr, own, &macs);
            let idx = v.buf_idx(i);
            let len = f.len().min(bufs.buf_size() as usize);
            bufs.write(idx, 0, &f[..len]);
            let len = if inp.below(16) == 0 {
                inp.u16()
            } else {
                len as u16
            };
            v.set_len(i, len);
            v.set_flags(i, 0);
        });
    }
}

// ---------------------------------------------------------------------------------------------
// device

/// A pipe and a VALE pair, built once: the device target's ports (their rings persist across
/// inputs as they do across a real daemon's connections).
fn device_ports() -> &'static Mutex<Vec<Arc<Port>>> {
    static PORTS: OnceLock<Mutex<Vec<Arc<Port>>>> = OnceLock::new();
    PORTS.get_or_init(|| {
        let specs: Vec<PortSpec> = [
            "netmap:fzd{0@conf:slots=64",
            "netmap:fzd}0",
            "valefzd:a@conf:slots=64",
            "valefzd:b@conf:slots=64",
        ]
        .iter()
        .map(|s| PortSpec::parse(s).expect("spec"))
        .collect();
        Mutex::new(build_ports(&specs, NetmapImpl::User).expect("device ports"))
    })
}

fn owned_fd(fd: libc::c_int) -> Option<File> {
    // SAFETY: a descriptor a syscall just returned, owned by nobody else.
    (fd >= 0).then(|| unsafe { File::from_raw_fd(fd) })
}

fn memfd(size: u64, seals: libc::c_int) -> Option<File> {
    // SAFETY: plain syscall with a NUL-terminated name.
    let fd = unsafe {
        libc::memfd_create(
            c"fuzz-guest".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    let f = owned_fd(fd)?;
    f.set_len(size).ok()?;
    if seals != 0 {
        crate::sys::add_seals(&f, seals).ok()?;
    }
    Some(f)
}

fn eventfd(nonblock: bool) -> Option<File> {
    let flags = libc::EFD_CLOEXEC | if nonblock { libc::EFD_NONBLOCK } else { 0 };
    // SAFETY: plain syscall.
    owned_fd(unsafe { libc::eventfd(0, flags) })
}

/// The frontend writes `v` to an eventfd it shares with the daemon, never blocking itself (a
/// saturated counter refuses the write), and leaves the description blocking if `blocking`.
fn frontend_write(f: &File, v: u64, blocking: bool) {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 {
        return;
    }
    // SAFETY: as above.
    unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) };
    let _ = (&*f).write(&v.to_ne_bytes());
    let fl = if blocking { fl & !libc::O_NONBLOCK } else { fl };
    // SAFETY: as above.
    unsafe { libc::fcntl(fd, libc::F_SETFL, fl) };
}

/// One frontend: a device and the descriptors it was given (kept to write through them).
struct Frontend {
    dev: PtnetDevice,
    rings: u32,
    mem: Vec<(u64, u64, File)>,
    kicks: Vec<File>,
    calls: Vec<File>,
}

impl Frontend {
    /// A descriptor for a kick or call: an eventfd (kept to be written), or something else.
    fn fd(&mut self, inp: &mut Input, call: bool) -> Option<File> {
        let f = match inp.below(6) {
            0 => return None,
            1 => memfd(8, 0)?,
            2 => {
                let mut p = [0; 2];
                // SAFETY: `p` has room for the two descriptors.
                if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
                    return None;
                }
                drop(owned_fd(p[1]));
                owned_fd(p[0])?
            }
            3 => eventfd(false)?,
            _ => eventfd(true)?,
        };
        if let Ok(c) = f.try_clone() {
            if call {
                &mut self.calls
            } else {
                &mut self.kicks
            }
            .push(c);
        }
        Some(f)
    }

    fn ring(&self, inp: &mut Input) -> u32 {
        if inp.below(8) == 0 {
            inp.u32()
        } else {
            inp.below(self.rings)
        }
    }

    fn mem_table(&mut self, inp: &mut Input, good: bool) {
        let n = if good { 1 } else { inp.below(4) as usize };
        let mut regions = Vec::new();
        let mut files = Vec::new();
        let mut keep = Vec::new();
        for r in 0..n {
            let size = if good {
                0x10000
            } else {
                match inp.below(4) {
                    0 => u64::from(inp.u32() % (1 << 20)),
                    1 => 1 << (30 + inp.below(8)),
                    _ => 0x1000 * u64::from(1 + inp.below(16)),
                }
            };
            let seals = match if good { 1 } else { inp.below(4) } {
                0 => 0,
                1 | 2 => libc::F_SEAL_SHRINK,
                _ => libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
            };
            let Some(f) = memfd(size, seals) else {
                return;
            };
            let gpa = if good || inp.bool() {
                (r as u64 + u64::from(inp.below(16))) << 16
            } else {
                inp.u64()
            };
            let (len, off) = match if good { 0 } else { inp.below(4) } {
                0 => (size, 0),
                1 => {
                    let off = 0x1000 * u64::from(inp.below(4));
                    (size.saturating_sub(off), off)
                }
                2 => (size + u64::from(inp.below(3)) * 0x1000, 0),
                _ => (inp.u64(), inp.u64()),
            };
            regions.push(VhostUserMemoryRegion::new(gpa, len, 0, off));
            if let Ok(c) = f.try_clone() {
                keep.push((gpa, size.min(len), c));
            }
            files.push(f);
        }
        if !good && inp.below(8) == 0 {
            files.pop();
        }
        if self.dev.set_mem_table(&regions, files, None).is_ok() {
            self.mem = keep;
        }
    }

    /// Points the CSB arrays inside a region of the last table (or anywhere).
    fn csb(&mut self, inp: &mut Input) {
        let (gh, hg) = match self.mem.get(inp.below(self.mem.len() as u32) as usize) {
            Some(&(gpa, size, _)) if inp.below(4) != 0 => {
                let slots = u32::try_from(size / 64).unwrap_or(u32::MAX);
                (
                    gpa + 64 * u64::from(inp.below(slots)),
                    gpa + 64 * u64::from(inp.below(slots)),
                )
            }
            _ => (inp.u64(), inp.u64()),
        };
        for (reg, v) in [
            (ptnet::CSB_GH_BAH, (gh >> 32) as u32),
            (ptnet::CSB_GH_BAL, gh as u32),
            (ptnet::CSB_HG_BAH, (hg >> 32) as u32),
            (ptnet::CSB_HG_BAL, hg as u32),
        ] {
            let _ = self.dev.write_register(reg, v);
        }
    }

    fn ptctl(&mut self, inp: &mut Input) {
        let v = [PTCTL_CREATE, PTCTL_RESUME, PTCTL_DELETE, inp.u32()][inp.below(4) as usize];
        let _ = self.dev.write_register(ptnet::PTCTL, v);
    }

    /// Everything a real frontend does before CREATE, then CREATE (or RESUME).
    fn setup(&mut self, inp: &mut Input) {
        let _ = self
            .dev
            .set_features(ptnet_protocol::device::VHOST_USER_F_PROTOCOL_FEATURES);
        let _ = self.dev.write_register(ptnet::PTFEAT, inp.u32());
        let _ = self
            .dev
            .write_register(ptnet::VNET_HDR_LEN, [0, 10, 12][inp.below(3) as usize]);
        self.mem_table(inp, true);
        for i in 0..self.rings {
            let (k, c) = (eventfd(true), eventfd(true));
            if let (Some(k), Some(c)) = (k, c) {
                self.kicks.extend(k.try_clone().ok());
                self.calls.extend(c.try_clone().ok());
                let _ = self.dev.set_vring_kick(i as u8, Some(k));
                let _ = self.dev.set_vring_call(i as u8, Some(c));
            }
        }
        self.csb(inp);
        let v = if inp.below(4) == 0 {
            PTCTL_RESUME
        } else {
            PTCTL_CREATE
        };
        let _ = self.dev.write_register(ptnet::PTCTL, v);
    }

    fn misc(&mut self, inp: &mut Input) {
        let d = &mut self.dev;
        let i = inp.u32();
        let _ = match inp.below(14) {
            0 => d.set_features(inp.u64()),
            1 => d.set_protocol_features(inp.u64()),
            2 => d.set_vring_num(i, inp.u32()),
            3 => d.set_vring_base(i, inp.u32()),
            4 => d.get_vring_base(i).map(|_| ()),
            5 => d.set_vring_enable(i, inp.bool()),
            6 => d.reset_owner(),
            7 => d.reset_device(),
            8 => d.get_queue_num().map(|_| ()),
            9 => d.get_shmem_config().map(|_| ()),
            10 => d.set_vring_err(i as u8, None),
            11 => d.set_owner(),
            12 => {
                d.flush_backend_requests();
                Ok(())
            }
            _ => {
                d.take_config_refusal();
                Ok(())
            }
        };
    }

    fn op(&mut self, inp: &mut Input) {
        match inp.below(16) {
            0 => self.mem_table(inp, false),
            1 => self.mem_table(inp, true),
            2 => {
                let (i, f) = (self.ring(inp), self.fd(inp, false));
                let _ = self.dev.set_vring_kick(i as u8, f);
            }
            3 => {
                let (i, f) = (self.ring(inp), self.fd(inp, true));
                let _ = self.dev.set_vring_call(i as u8, f);
            }
            4 => {
                // Every writable register, and one offset the input picks.
                let w = ptnet_protocol::device::WRITABLE_REGISTERS;
                let regs = [w[0], w[1], w[2], w[3], w[4], w[5], w[6], inp.u32()];
                let off = regs[inp.below(regs.len() as u32) as usize];
                let _ = self.dev.write_register(off, inp.u32());
            }
            5 => {
                let off = if inp.bool() { inp.below(72) } else { inp.u32() };
                let blen = inp.below(9) as usize;
                let buf = inp.bytes(blen).to_vec();
                let _ = self
                    .dev
                    .set_config(off, &buf, VhostUserConfigFlags::WRITABLE);
            }
            6 => {
                let (off, size) = if inp.bool() {
                    (inp.below(300), inp.below(300))
                } else {
                    (inp.u32(), inp.u32())
                };
                let _ = self
                    .dev
                    .get_config(off, size, VhostUserConfigFlags::empty());
            }
            7 => self.csb(inp),
            8 => self.ptctl(inp),
            9 => self.setup(inp),
            10 => {
                // The guest writes its memory (the CSB) while the rings may run.
                if let Some((_, size, f)) = self.mem.get(inp.below(self.mem.len() as u32) as usize)
                {
                    let off = u64::from(inp.below(u32::try_from(*size).unwrap_or(u32::MAX)));
                    let blen = 1 + inp.below(64) as usize;
                    let _ = f.write_at(inp.bytes(blen), off);
                }
            }
            11 => {
                // The guest writes the port memory (SHMEM_MAP): rings, slots, buffers.
                let (f, size) = self.dev.port().memory_file();
                let off = u64::from(inp.below(u32::try_from(size).unwrap_or(u32::MAX)));
                let blen = 1 + inp.below(16) as usize;
                let _ = f.write_at(inp.bytes(blen), off);
            }
            12 => {
                // Kicks, or a call counter saturated so the next interrupt cannot be written.
                let call = inp.bool();
                let list = if call { &self.calls } else { &self.kicks };
                if let Some(f) = list.get(inp.below(list.len() as u32) as usize) {
                    let v: u64 = if call && inp.bool() { u64::MAX - 1 } else { 1 };
                    // Or the frontend clears O_NONBLOCK on the description it shares with the
                    // daemon (issue 10, row 5), which must not block a daemon thread either.
                    frontend_write(f, v, inp.below(4) == 0);
                }
            }
            13 => self.misc(inp),
            14 => {
                // Truncation: refused on sealed memory, which is all the device maps.
                if let Some((_, size, f)) = self.mem.get(inp.below(self.mem.len() as u32) as usize)
                {
                    let _ = f.set_len(size / 2);
                }
                let (f, size) = self.dev.port().memory_file();
                assert!(f.set_len(size / 2).is_err(), "the port memfd can be shrunk");
            }
            _ => match inp.below(4) {
                0 => self.dev.disconnect(),
                1 => std::thread::sleep(std::time::Duration::from_micros(inp.below(20).into())),
                _ => std::thread::yield_now(),
            },
        }
    }
}

/// A sequence of vhost-user requests from one or two frontends, on the two ends of a pipe or
/// two ports of a VALE switch, built in-process; the rings really run between requests.
pub fn device(data: &[u8]) {
    let mut inp = Input::new(data);
    let ports = device_ports().lock().unwrap_or_else(|p| p.into_inner());
    let base = 2 * inp.below(2) as usize;
    let opts = LoopOptions {
        // Busy polling is the operator's choice, not a frontend's (and its spinning threads
        // take the CPU the requests need): the default loop, with or without a spin window.
        busy_poll: false,
        // Mostly no spinning: spinning ring threads take the CPU the requests need.
        spin: std::time::Duration::from_micros(match inp.below(4) {
            0 => inp.below(64).into(),
            _ => 0,
        }),
    };
    let mut fe: Vec<Frontend> = (0..1 + inp.below(2) as usize)
        .map(|k| {
            let port = ports[base + k].clone();
            Frontend {
                rings: port.num_rings(),
                dev: PtnetDevice::new(port, opts),
                mem: Vec::new(),
                kicks: Vec::new(),
                calls: Vec::new(),
            }
        })
        .collect();
    for _ in 0..48 {
        if inp.is_empty() {
            break;
        }
        let k = inp.below(fe.len() as u32) as usize;
        fe[k].op(&mut inp);
    }
    for f in &mut fe {
        f.dev.disconnect();
        assert!(!f.dev.running());
    }
}

//! The `slots` target, and the rig of real ports built in-process it shares with `vale_frames`.

use super::input::{check_kring, Input};
use crate::port::ring::RingWorker;
use crate::portspec::PortSpec;
use crate::served::{build_ports, NetmapImpl};
use crate::served::{Datapath, Port};
use ptnet_protocol::netmap::{ring_add, ring_dist, BufPool, RingView};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Ports built for one input, with their rings taken out to be synced by hand.
pub(super) struct Rig {
    pub(super) ports: Vec<Arc<Port>>,
    workers: Vec<Vec<RingWorker>>,
}

impl Rig {
    pub(super) fn new(specs: &[String]) -> Self {
        let specs: Vec<PortSpec> = specs
            .iter()
            .map(|s| PortSpec::parse(s).expect("a fuzz port spec"))
            .collect();
        let ports = build_ports(&specs, NetmapImpl::User, &Default::default()).expect("fuzz ports");
        let workers = ports
            .iter()
            .map(|p| p.take_workers().expect("a userspace port"))
            .collect();
        Self { ports, workers }
    }

    pub(super) fn bufs(&self, p: usize) -> BufPool {
        match self.ports[p].datapath() {
            Datapath::Threads { memory, .. } => memory.bufs().clone(),
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
            fill(inp, view.clone(), i);
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
    pub(super) fn round(
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

pub(super) fn hdr_len(inp: &mut Input) -> u8 {
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

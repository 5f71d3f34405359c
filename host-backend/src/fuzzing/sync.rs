//! The `sync` target: the host sync passes over a ring in memory, with a hostile guest.

use super::input::{check_kring, Input};
use ptnet_protocol::csb::{self, Atok, Ktoa};
use ptnet_protocol::netmap::{ring, ring_add, ring_dist, RingView};
use ptnet_protocol::shmem::OwnedMem;
use ptnet_protocol::sync::{ring_prev, HostKring, PortSync};
use std::sync::atomic::Ordering;

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

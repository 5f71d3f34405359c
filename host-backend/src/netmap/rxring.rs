//! The shared state of a userspace netmap RX ring fed by other rings: a pipe peer's TX ring or any
//! port of a VALE switch.
//!
//! Producers reserve slots with a compare-and-swap on `reserve`, fill them without any lock, then
//! commit in reservation order by advancing `hwtail`. The consumer (the ring's own sync loop)
//! publishes `hwcur` as its guest releases slots. Each side asks the other for a wake-up with a
//! `*_waiting` flag, set before a re-check behind a full barrier, so no wake-up is lost.

use ptnet_protocol::netmap::{ring_add, ring_dist, BufPool, RingView};
use ptnet_protocol::sync::ring_prev;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use vmm_sys_util::eventfd::EventFd;

/// An RX ring other threads produce into.
pub struct RxRing {
    /// The ring in its port's memory.
    pub ring: RingView,
    /// The buffer pool of the ring's memory.
    pub bufs: BufPool,
    reserve: AtomicU32,
    hwtail: AtomicU32,
    hwcur: AtomicU32,
    consumer_waiting: AtomicBool,
    producer_waiting: AtomicBool,
    /// Signalled for the consumer when packets arrive and it asked.
    consumer_notify: Arc<EventFd>,
    /// Signalled for a blocked producer (pipes) when slots are freed and it asked.
    producer_notify: Option<Arc<EventFd>>,
}

/// A reserved run of slots: `start..start + n` (modulo the ring).
#[derive(Clone, Copy, Debug)]
pub struct Reservation {
    /// First slot.
    pub start: u32,
    /// Number of slots.
    pub n: u32,
}

impl RxRing {
    /// A ring with nothing received yet.
    pub fn new(
        ring: RingView,
        bufs: BufPool,
        consumer_notify: Arc<EventFd>,
        producer_notify: Option<Arc<EventFd>>,
    ) -> Self {
        Self {
            ring,
            bufs,
            reserve: AtomicU32::new(0),
            hwtail: AtomicU32::new(0),
            hwcur: AtomicU32::new(0),
            consumer_waiting: AtomicBool::new(false),
            producer_waiting: AtomicBool::new(false),
            consumer_notify,
            producer_notify,
        }
    }

    /// Slots in the ring.
    pub fn num_slots(&self) -> u32 {
        self.ring.num_slots()
    }

    /// Free slots a producer could take now.
    pub fn space(&self) -> u32 {
        let n = self.num_slots();
        let hwcur = self.hwcur.load(Ordering::Acquire);
        ring_dist(self.reserve.load(Ordering::Acquire), ring_prev(hwcur, n), n)
    }

    /// Producer: reserves up to `want` slots; `None` when the ring is full.
    pub fn reserve(&self, want: u32) -> Option<Reservation> {
        let n = self.num_slots();
        loop {
            let start = self.reserve.load(Ordering::Acquire);
            let hwcur = self.hwcur.load(Ordering::Acquire);
            let k = want.min(ring_dist(start, ring_prev(hwcur, n), n));
            if k == 0 {
                return None;
            }
            let end = ring_add(start, k, n);
            if self
                .reserve
                .compare_exchange_weak(start, end, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Some(Reservation { start, n: k });
            }
        }
    }

    /// Producer: publishes a filled reservation, after every earlier one, and wakes the consumer
    /// if it asked.
    pub fn commit(&self, r: Reservation) {
        let mut spins = 0u32;
        while self.hwtail.load(Ordering::Acquire) != r.start {
            // An earlier producer is still copying: wait for it, politely on two cores.
            spins += 1;
            if spins.is_multiple_of(64) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        self.hwtail
            .store(ring_add(r.start, r.n, self.num_slots()), Ordering::Release);
        fence(Ordering::SeqCst);
        if self.consumer_waiting.load(Ordering::Relaxed)
            && self.consumer_waiting.swap(false, Ordering::AcqRel)
        {
            let _ = self.consumer_notify.write(1);
        }
    }

    /// Producer that could not place everything: asks to be woken when slots are freed. Returns
    /// true if there is room already (do not sleep).
    pub fn arm_producer(&self) -> bool {
        self.producer_waiting.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        self.space() > 0
    }

    /// Consumer: the guest released slots up to `hwcur`.
    pub fn release(&self, hwcur: u32) {
        if self.hwcur.swap(hwcur, Ordering::AcqRel) == hwcur {
            return;
        }
        fence(Ordering::SeqCst);
        if self.producer_waiting.load(Ordering::Relaxed)
            && self.producer_waiting.swap(false, Ordering::AcqRel)
        {
            if let Some(p) = &self.producer_notify {
                let _ = p.write(1);
            }
        }
    }

    /// Consumer: the end of what producers committed.
    pub fn hwtail(&self) -> u32 {
        self.hwtail.load(Ordering::Acquire)
    }

    /// Consumer: asks to be woken when packets arrive past `seen`. Returns true if some already
    /// did (do not sleep).
    pub fn arm_consumer(&self, seen: u32) -> bool {
        self.consumer_waiting.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        self.hwtail() != seen
    }
}

/// The RX side of a ring fed by an [`RxRing`]: the same for pipes and VALE ports.
pub struct RxRingSync {
    /// The shared ring.
    pub rx: Arc<RxRing>,
    /// Counters.
    pub stats: Arc<crate::port::RingStats>,
}

impl ptnet_protocol::sync::PortSync for RxRingSync {
    fn sync(&mut self, k: &mut ptnet_protocol::sync::HostKring, _flags: u32) {
        if k.hwcur != k.rhead {
            k.hwcur = k.rhead;
            self.rx.release(k.hwcur);
        }
        let tail = self.rx.hwtail();
        if tail != k.hwtail {
            crate::port::RingStats::add(
                &self.stats.packets,
                u64::from(ring_dist(k.hwtail, tail, k.num_slots)),
            );
            k.hwtail = tail;
        }
    }
}

impl crate::port::RingSync for RxRingSync {
    fn arm(&mut self, k: &ptnet_protocol::sync::HostKring) -> bool {
        self.rx.arm_consumer(k.hwtail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptnet_protocol::netmap::ring;
    use ptnet_protocol::shmem::OwnedMem;

    fn rx(n: u32) -> (OwnedMem, RxRing) {
        let m = OwnedMem::new(ring::size(n) + 4 * 64);
        let view = RingView::new(m.mem().sub(0, ring::size(n)).unwrap(), n).unwrap();
        let bufs = BufPool::new(
            m.mem()
                .sub(ring::size(n).next_multiple_of(8), 4 * 64)
                .unwrap(),
            4,
            64,
        )
        .unwrap();
        let e = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        (m, RxRing::new(view, bufs, e, None))
    }

    #[test]
    fn reservations_respect_the_consumer() {
        let (_m, r) = rx(8);
        assert_eq!(r.space(), 7);
        let a = r.reserve(5).unwrap();
        let b = r.reserve(5).unwrap();
        assert_eq!((a.start, a.n, b.start, b.n), (0, 5, 5, 2));
        assert!(r.reserve(1).is_none());
        r.commit(a);
        r.commit(b);
        assert_eq!(r.hwtail(), 7);
        r.release(3);
        assert_eq!(r.space(), 3);
        let c = r.reserve(8).unwrap();
        assert_eq!((c.start, c.n), (7, 3));
    }

    #[test]
    fn consumer_is_woken_only_when_it_asked() {
        let (_m, r) = rx(8);
        let a = r.reserve(1).unwrap();
        r.commit(a);
        assert!(r.consumer_notify.read().is_err(), "nobody asked");
        assert!(!r.arm_consumer(1));
        let b = r.reserve(1).unwrap();
        r.commit(b);
        assert_eq!(r.consumer_notify.read().unwrap(), 1);
    }

    #[test]
    fn concurrent_producers_commit_everything() {
        let (_m, r) = rx(64);
        let r = Arc::new(r);
        let producers: Vec<_> = (0..3)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    let mut placed = 0;
                    while placed < 1000 {
                        match r.reserve(3.min(1000 - placed)) {
                            Some(res) => {
                                placed += res.n;
                                r.commit(res);
                            }
                            None => std::thread::yield_now(),
                        }
                    }
                })
            })
            .collect();
        // One consumer releases whatever was committed, counting it.
        let (mut consumed, mut seen) = (0u32, 0u32);
        while consumed < 3000 {
            let t = r.hwtail();
            consumed += ring_dist(seen, t, 64);
            seen = t;
            r.release(t);
            std::thread::yield_now();
        }
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(consumed, 3000);
        assert_eq!(r.reserve.load(Ordering::Relaxed), r.hwtail());
    }
}

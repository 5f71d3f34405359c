//! The delivery ring: the shared state of a userspace netmap RX ring that other rings fill, a
//! pipe peer's TX ring or any port of a VALE switch ([`DeliveryRing`]), and the RX side of such
//! a ring as its sync loop drives it ([`DeliveryRx`]). (Not to be confused with the guest's
//! `RxRing` of `ptnet-driver`, the application's view of the same ring.)
//!
//! Producers reserve slots with a compare-and-swap on `reserve`, fill them without any lock, then
//! commit in reservation order by advancing `hwtail`. The consumer (the ring's host pass)
//! publishes `hwcur` as its guest releases slots. Each side asks the other for a wake-up with a
//! `*_waiting` flag, set before a re-check behind a full barrier, so no wake-up is lost.
//!
//! # Direct delivery
//!
//! Where a reader meets it: [`crate::port::pipe`]'s and [`crate::port::vale`]'s TX syncs call
//! [`DeliveryRing::host_pass`] after they commit, on *their* thread, and the RX ring's own sync
//! loop (`frontend::ptnet::syncloop`) lends the ring its pass state instead of running passes
//! over it alone. What happens, and why nothing is lost:
//!
//! While a guest runs the ring (its sync loop sleeps between passes), the loop lends the ring's
//! pass state ([`PassState`]: the host kring, the CSB entries, the interrupt eventfd) to the ring
//! ([`DirectRx::lend`]), and a producer that committed slots runs the ring's host pass itself
//! ([`DeliveryRing::host_pass`]): it publishes hwtail to the guest and raises its interrupt, with
//! no wake-up of the ring's own thread in between. That thread then only serves the guest's
//! kicks, which the passes ask for only when a producer waits for room
//! ([`RxTaker::wants_released_slots`]); otherwise the slots the guest releases are taken in by
//! the next producer's pass (a producer short of room runs one before it gives up,
//! [`DeliveryRing::arm_producer`]).
//!
//! Exactly one thread runs a pass at a time, and nobody blocks or spins for it: the state sits
//! behind a [`handover::PassLock`], a mutex only ever *tried* on the data path, and whoever finds
//! it taken leaves a request that the holder serves before it lets go (the protocol and why no
//! request is lost are in [`handover`]'s notes; a loom model checks it:
//! `RUSTFLAGS="--cfg loom" cargo test -p ptnet-backend --release --lib rxring_loom`). A pass that
//! serves a request starts after it, so it sees everything the requester did before asking: its
//! commits and, for the ring's own thread, the kick it drained. So every commit is followed by a
//! pass that sees it (lossless), and every kick the guest sends is followed by a pass that starts
//! after it. When the state is not lent (no guest, or a busy-polling loop), a request is dropped:
//! the ring's own thread runs every pass, woken as before through `consumer_waiting` and its
//! eventfd.

pub mod handover;

use crate::port::ring::{DirectRx, PassDone, PassState, RingStats, RingSync};
use handover::PassLock;
use ptnet_protocol::netmap::{ring_add, ring_dist, BufPool, RingView};
use ptnet_protocol::sync::{ring_prev, HostKring, HostStop, PortSync};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use vmm_sys_util::eventfd::EventFd;

/// An RX ring other threads produce into.
pub struct DeliveryRing {
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
    /// The ring's counters (written by whoever runs its pass, one at a time).
    stats: Arc<RingStats>,
    /// The ring's pass state while a guest runs the ring and its loop lends it (direct delivery).
    host: PassLock<PassState>,
}

/// A reserved run of slots: `start..start + n` (modulo the ring).
#[derive(Clone, Copy, Debug)]
pub struct Reservation {
    /// First slot.
    pub start: u32,
    /// Number of slots.
    pub n: u32,
}

impl DeliveryRing {
    /// A ring with nothing received yet, counting in `stats`.
    pub fn new(
        ring: RingView,
        bufs: BufPool,
        (consumer_notify, producer_notify): (Arc<EventFd>, Option<Arc<EventFd>>),
        stats: Arc<RingStats>,
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
            stats,
            host: PassLock::new(),
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
    ///
    /// With direct delivery the guest kicks for the slots it releases only while a producer
    /// waits, so a host pass runs once the flag is up: it takes in what the guest released
    /// already, and otherwise leaves the guest asked for that kick (with its own re-check).
    /// Whoever runs it (here or the holder of the state), the pass starts after the flag is set
    /// and sees it. The ring's thread, kicked, runs the pass whose `release` wakes us.
    pub fn arm_producer(&self) -> bool {
        self.producer_waiting.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        self.host_pass(false);
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

    /// A restarted daemon's ring takes a resumed guest's positions
    /// ([`ptnet_protocol::sync::HostKring::resume`]): the guest has released up to `hwcur` and
    /// holds everything up to `hwtail`. Waits (briefly: producers never block while they hold a
    /// reservation) until no reservation is in flight, then moves the producers' end there; what
    /// they put in the ring before is gone with the old daemon's view of it.
    pub fn adopt(&self, hwcur: u32, hwtail: u32) {
        self.hwcur.store(hwcur, Ordering::Release);
        loop {
            let t = self.hwtail.load(Ordering::Acquire);
            if self
                .reserve
                .compare_exchange(t, hwtail, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.hwtail.store(hwtail, Ordering::Release);
                return;
            }
            std::thread::yield_now();
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

impl DirectRx for DeliveryRing {
    fn lend(&self, state: PassState) {
        self.host.lend(state);
    }

    fn take_back(&self) -> Option<PassState> {
        self.host.take_back()
    }

    fn host_pass(&self, busy: bool) -> Option<PassDone> {
        DeliveryRing::host_pass(self, busy)
    }

    fn adopt(&self, hwcur: u32, hwtail: u32) {
        DeliveryRing::adopt(self, hwcur, hwtail);
    }
}

impl DeliveryRing {
    /// Runs the ring's host pass (`busy`: [`HostKring::rx_pass`]'s busy-wait mode) if the state
    /// is lent, here or, when another thread holds it, through that thread before it lets go
    /// (see the module notes). Never blocks. Returns what the passes run here did; `None` when
    /// none ran here (not lent, or handed over).
    pub fn host_pass(&self, busy: bool) -> Option<PassDone> {
        let mut done: Option<PassDone> = None;
        self.host.run(|h| {
            let mut taker = RxTaker {
                rx: self,
                direct: true,
            };
            let d = h.run(&mut taker, false, busy);
            if matches!(d.stop, HostStop::Reset(_)) {
                // Counted here for every pass over a lent ring, whoever runs it (one at a time).
                RingStats::add(&self.stats.resets, 1);
            }
            done = Some(PassDone {
                stop: d.stop,
                moved: d.moved || done.is_some_and(|p| p.moved),
            });
        });
        done
    }
}

/// The port side of a host pass over a [`DeliveryRing`]: gives the guest's released slots back to
/// the producers and takes in what they committed.
pub struct RxTaker<'a> {
    rx: &'a DeliveryRing,
    /// The pass runs with direct delivery (producers run passes after they commit).
    direct: bool,
}

impl PortSync for RxTaker<'_> {
    fn sync(&mut self, k: &mut HostKring, _flags: u32) {
        if k.hwcur != k.rhead {
            k.hwcur = k.rhead;
            self.rx.release(k.hwcur);
        }
        let tail = self.rx.hwtail();
        if tail != k.hwtail {
            RingStats::add(
                &self.rx.stats.packets,
                u64::from(ring_dist(k.hwtail, tail, k.num_slots)),
            );
            k.hwtail = tail;
        }
    }

    /// Without direct delivery, always: the ring's thread must hear of released slots, a
    /// producer may be waiting for them. With it, only while a producer waits for room: the
    /// others take released slots in with their next pass, and a producer that starts waiting
    /// runs a pass that sees its flag ([`DeliveryRing::arm_producer`]).
    fn wants_released_slots(&self) -> bool {
        !self.direct || self.rx.producer_waiting.load(Ordering::SeqCst)
    }
}

/// The RX side of a ring fed through a [`DeliveryRing`], the same for pipes and VALE ports: the
/// port side its sync loop drives while it runs the ring's passes alone, and the ring it lends
/// its pass state to otherwise ([`RingSync::direct_rx`]).
pub struct DeliveryRx {
    /// The shared ring.
    pub rx: Arc<DeliveryRing>,
}

impl PortSync for DeliveryRx {
    fn sync(&mut self, k: &mut HostKring, flags: u32) {
        RxTaker {
            rx: &self.rx,
            direct: false,
        }
        .sync(k, flags)
    }
}

impl RingSync for DeliveryRx {
    fn arm(&mut self, k: &HostKring) -> bool {
        self.rx.arm_consumer(k.hwtail)
    }

    fn direct_rx(&self) -> Option<Arc<dyn DirectRx>> {
        Some(self.rx.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptnet_protocol::csb::{Atok, Ktoa};
    use ptnet_protocol::netmap::ring;
    use ptnet_protocol::shmem::OwnedMem;

    fn rx(n: u32) -> (OwnedMem, DeliveryRing) {
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
        (
            m,
            DeliveryRing::new(view, bufs, (e, None), Arc::new(RingStats::default())),
        )
    }

    #[test]
    fn adopted_positions_are_where_producers_go_on() {
        let (_m, r) = rx(8);
        r.adopt(2, 6);
        assert_eq!(r.space(), 3, "slots 6, 7, 0 (1 stays free before hwcur 2)");
        let res = r.reserve(10).unwrap();
        assert_eq!((res.start, res.n), (6, 3));
        r.commit(res);
        assert_eq!(r.hwtail(), 1);
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

    /// Direct delivery under contention: a producer commits numbered packets in bursts and runs
    /// the ring's host pass itself, the ring's own thread runs passes (and bursts of busy ones)
    /// when kicked, and a guest consumes through the CSB, holding packets at times so the
    /// producer fills the ring and waits for room. After each burst the producer waits until the
    /// guest has it all, and a guest without packets kicks only as the protocol says: a lost
    /// pass, kick or producer wake-up stalls everything past the deadline. The guest checks every
    /// packet arrives once and in order, and that hwtail never goes backwards.
    #[test]
    fn direct_passes_race_with_the_ring_thread() {
        use crate::sys::poll_fds;
        use ptnet_protocol::csb::ENTRY_SIZE;
        use ptnet_protocol::netmap::ring_between;
        use ptnet_protocol::sync::GuestKring;
        use std::time::{Duration, Instant};

        const TOTAL: u32 = 200_000;
        const DEADLINE: Duration = Duration::from_secs(5);
        let n = 16;
        let (_m, mut r) = rx(n);
        let room = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        r.producer_notify = Some(room.clone());
        let r = Arc::new(r);
        let csb = OwnedMem::new(2 * ENTRY_SIZE);
        let (atok, ktoa) = (
            Atok::new(&csb.mem(), 0).unwrap(),
            Ktoa::new(&csb.mem(), 1).unwrap(),
        );
        let mut kring = HostKring::new_rx(n);
        kring.start(&atok, &ktoa);
        let stats = r.stats.clone();
        let obs = crate::port::ring::RingObs::new(&stats);
        r.lend(PassState {
            kring,
            atok: atok.clone(),
            ktoa: ktoa.clone(),
            call: None,
            obs,
        });
        let kick = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let done = Arc::new(AtomicBool::new(false));
        let consumed = Arc::new(AtomicU32::new(0));

        let producer = {
            let (r, room, consumed) = (r.clone(), room.clone(), consumed.clone());
            std::thread::spawn(move || {
                let mut seq = 0u32;
                let mut burst = 0u32;
                while seq < TOTAL {
                    burst += 1;
                    let end = (seq + burst % 37 + 1).min(TOTAL);
                    while seq < end {
                        if end - seq > r.space() {
                            r.host_pass(false);
                        }
                        let Some(res) = r.reserve(end - seq) else {
                            if !r.arm_producer() {
                                let fds = [(std::os::fd::AsRawFd::as_raw_fd(&*room), libc::POLLIN)];
                                let woken = poll_fds(&fds, DEADLINE.as_millis() as i32).unwrap();
                                assert_ne!(woken, 0, "producer waiting for room at {seq}: lost");
                                let _ = room.read();
                            }
                            continue;
                        };
                        let mut d = res.start;
                        for _ in 0..res.n {
                            r.ring.set_len(d, seq as u16);
                            seq += 1;
                            d = ring_add(d, 1, n);
                        }
                        r.commit(res);
                        r.host_pass(false);
                    }
                    // Nothing more until the guest has it all: only passes can show it the burst.
                    let t = Instant::now();
                    while consumed.load(Ordering::SeqCst) < seq {
                        assert!(
                            t.elapsed() < DEADLINE,
                            "burst ending at {seq} never delivered"
                        );
                        std::thread::yield_now();
                    }
                }
            })
        };
        let ring_thread = {
            let (r, kick, done) = (r.clone(), kick.clone(), done.clone());
            std::thread::spawn(move || {
                let mut wakes = 0u32;
                while !done.load(Ordering::SeqCst) {
                    let fds = [(std::os::fd::AsRawFd::as_raw_fd(&*kick), libc::POLLIN)];
                    // The timeout only lets the thread see `done`.
                    if poll_fds(&fds, 10).unwrap() == 0 {
                        continue;
                    }
                    let _ = kick.read();
                    r.host_pass(false);
                    // Like a spinning loop: busy passes racing with the producer's.
                    wakes += 1;
                    for _ in 0..wakes % 7 {
                        r.host_pass(true);
                    }
                }
            })
        };

        // The guest.
        let mut g = GuestKring::attach(n, &atok, &ktoa);
        let (mut head, mut expect, mut round) = (g.rhead, 0u32, 0u32);
        let mut starving: Option<Instant> = None;
        while expect < TOTAL {
            round += 1;
            let old_tail = g.hwtail;
            g.prologue(head, head).unwrap();
            let mut kicks = g.rxsync(&atok, &ktoa, 0);
            assert!(
                ring_between(old_tail, g.hwtail, ring_prev(head, n), n),
                "hwtail went from {old_tail} to {} (head {head})",
                g.hwtail
            );
            // Hold packets now and then, so the producer finds the ring full and waits.
            let take = if round % 64 < 8 { 0 } else { 1 + round % 5 };
            let mut c = 0;
            while head != g.hwtail && c < take {
                assert_eq!(r.ring.len(head), expect as u16, "packet lost or duplicated");
                expect += 1;
                c += 1;
                head = ring_add(head, 1, n);
            }
            consumed.store(expect, Ordering::SeqCst);
            g.prologue(head, head).unwrap();
            kicks |= g.rxsync(&atok, &ktoa, 0);
            // Extra kicks (allowed) while packets flow make the ring's thread race the producer;
            // a guest waiting for packets kicks only when asked.
            if kicks || (c > 0 && round % 3 == 0) {
                kick.write(1).unwrap();
            }
            if c == 0 && take != 0 {
                let since = *starving.get_or_insert_with(Instant::now);
                assert!(since.elapsed() < DEADLINE, "guest starved at {expect}");
                std::thread::yield_now();
            } else {
                starving = None;
            }
        }
        producer.join().unwrap();
        done.store(true, Ordering::SeqCst);
        ring_thread.join().unwrap();
        let h = r.take_back().unwrap();
        assert_eq!(h.kring.hwtail, r.hwtail());
        assert_eq!(stats.packets.load(Ordering::Relaxed), u64::from(TOTAL));
    }
}

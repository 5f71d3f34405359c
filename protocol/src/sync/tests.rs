//! Guest and host sync algorithms run against each other over one ring in shared memory.
//!
//! The host only runs when the guest kicks it (or, in the RX case, when its port has news), so a
//! lost wake-up shows up as a test that stops making progress.

use super::*;
use crate::csb::{Atok, Ktoa, ENTRY_SIZE};
use crate::netmap::{ring, ring_add, RingView};
use crate::shmem::OwnedMem;
use proptest::prelude::*;

struct Fixture {
    _mem: OwnedMem,
    ring: RingView,
    atok: Atok,
    ktoa: Ktoa,
}

fn fixture(n: u32) -> Fixture {
    let mem = OwnedMem::new(2 * ENTRY_SIZE + ring::size(n));
    let m = mem.mem();
    let atok = Atok::new(&m, 0).unwrap();
    let ktoa = Ktoa::new(&m, 1).unwrap();
    let ring = RingView::new(m.sub(2 * ENTRY_SIZE, ring::size(n)).unwrap(), n).unwrap();
    Fixture {
        _mem: mem,
        ring,
        atok,
        ktoa,
    }
}

/// A TX port that takes at most `budget` packets per sync and records their sequence numbers
/// (carried in the slot length).
struct Sink {
    ring: RingView,
    budget: u32,
    out: Vec<u16>,
}

impl PortSync for Sink {
    fn sync(&mut self, k: &mut HostKring, _flags: u32) {
        let mut taken = 0;
        while k.hwcur != k.rhead && taken < self.budget {
            self.out.push(self.ring.len(k.hwcur));
            k.hwcur = ring_add(k.hwcur, 1, k.num_slots);
            taken += 1;
        }
        k.hwtail = ring_prev(k.hwcur, k.num_slots);
    }
}

/// An RX port that delivers packets numbered from `next` up to `limit`, at most `budget` per sync.
struct Source {
    ring: RingView,
    next: u16,
    limit: u16,
    budget: u32,
}

impl PortSync for Source {
    fn sync(&mut self, k: &mut HostKring, _flags: u32) {
        k.hwcur = k.rhead;
        let mut given = 0;
        while self.next < self.limit
            && ring_add(k.hwtail, 1, k.num_slots) != k.hwcur
            && given < self.budget
        {
            self.ring.set_len(k.hwtail, self.next);
            self.next += 1;
            given += 1;
            k.hwtail = ring_add(k.hwtail, 1, k.num_slots);
        }
    }
}

/// A started TX ring, the guest attached to it, and a sink taking up to 100 packets a sync.
struct TxRig {
    f: Fixture,
    host: HostKring,
    guest: GuestKring,
    sink: Sink,
}

fn tx_rig(n: u32) -> TxRig {
    let f = fixture(n);
    let mut host = HostKring::new_tx(n);
    host.start(&f.atok, &f.ktoa);
    let guest = GuestKring::attach(n, &f.atok, &f.ktoa);
    let sink = Sink {
        ring: f.ring.clone(),
        budget: 100,
        out: Vec::new(),
    };
    TxRig {
        f,
        host,
        guest,
        sink,
    }
}

impl TxRig {
    /// The guest queues the slots up to `head` (its cur there too) and syncs: true if it kicked.
    fn send(&mut self, head: u32) -> bool {
        self.guest.prologue(head, head).unwrap();
        self.guest.txsync(&self.f.atok, &self.f.ktoa, 0)
    }

    /// One host pass in `mode` into the sink, counting the interrupts it raises in `irqs`.
    fn pass_irqs(&mut self, mode: impl Into<PassMode>, irqs: &mut u32) -> HostStop {
        let f = &self.f;
        let irq = &mut || *irqs += 1;
        self.host
            .tx_pass(&f.atok, &f.ktoa, &mut self.sink, mode, irq)
    }

    /// [`Self::pass_irqs`], the interrupts not counted.
    fn pass(&mut self, mode: impl Into<PassMode>) -> HostStop {
        self.pass_irqs(mode, &mut 0)
    }

    /// A new host on the same CSB (a restarted daemon), started from scratch.
    fn restart_host(&mut self) {
        self.host = HostKring::new_tx(self.f.ring.num_slots());
        self.host.start(&self.f.atok, &self.f.ktoa);
    }
}

fn run_tx(n: u32, bursts: &[u32], budget: u32, want_interrupts: bool) -> Vec<u16> {
    let TxRig {
        f,
        mut host,
        mut guest,
        mut sink,
    } = tx_rig(n);
    guest.want_interrupts = want_interrupts;
    f.ring.set_tail(guest.hwtail);
    sink.budget = budget;
    let mut irqs = 0;
    let mut seq: u16 = 0;
    let total: u32 = bursts.iter().sum();
    let mut stalls = 0;
    let mut bursts = bursts.iter().copied().peekable();
    let mut host_blocked = false;
    while (sink.out.len() as u32) < total {
        let mut progressed = false;
        if let Some(&b) = bursts.peek() {
            // Fill as much of the burst as there is room for.
            let mut cur = f.ring.cur();
            let mut sent = 0;
            while sent < b && cur != guest.hwtail {
                f.ring.set_len(cur, seq);
                seq += 1;
                sent += 1;
                cur = ring_add(cur, 1, n);
            }
            if sent == b {
                bursts.next();
            } else if let Some(rest) = bursts.next() {
                // Leave the remainder for later.
                let rest = rest - sent;
                let mut v: Vec<u32> = vec![rest];
                v.extend(bursts.by_ref());
                bursts = Box::leak(v.into_boxed_slice()).iter().copied().peekable();
            }
            progressed |= sent > 0;
            f.ring.set_head(cur);
            f.ring.set_cur(cur);
        }
        guest.prologue(f.ring.head(), f.ring.cur()).unwrap();
        let kick = guest.txsync(&f.atok, &f.ktoa, 0);
        f.ring.set_tail(guest.hwtail);
        if kick || host_blocked {
            let before = sink.out.len();
            let stop = host.tx_pass(&f.atok, &f.ktoa, &mut sink, false, &mut || irqs += 1);
            assert!(!matches!(stop, HostStop::Reset(_)), "{stop:?}");
            // A port that stopped with work left notifies when it can go on; model that as
            // "run again next round".
            host_blocked = stop == HostStop::PortBlocked;
            progressed |= sink.out.len() > before;
        }
        stalls = if progressed { 0 } else { stalls + 1 };
        assert!(
            stalls < 4,
            "no progress: lost wake-up (host {host:?}, guest {guest:?})"
        );
    }
    sink.out
}

proptest! {
    #[test]
    fn tx_delivers_everything_in_order(
        n in prop::sample::select(vec![2u32, 4, 8, 64]),
        bursts in prop::collection::vec(1u32..100, 1..20),
        budget in 1u32..70,
        want_interrupts: bool,
    ) {
        let out = run_tx(n, &bursts, budget, want_interrupts);
        let total: u32 = bursts.iter().sum();
        prop_assert_eq!(out.len() as u32, total);
        for (i, s) in out.iter().enumerate() {
            prop_assert_eq!(*s as usize, i);
        }
    }

    #[test]
    fn rx_delivers_everything_in_order(
        n in prop::sample::select(vec![2u32, 4, 8, 64]),
        total in 1u16..500,
        budget in 1u32..70,
        consume in 1u32..70,
    ) {
        let f = fixture(n);
        let mut host = HostKring::new_rx(n);
        host.start(&f.atok, &f.ktoa);
        let mut guest = GuestKring::attach(n, &f.atok, &f.ktoa);
        let mut port = Source { ring: f.ring.clone(), next: 0, limit: total, budget };
        let mut got: Vec<u16> = Vec::new();
        let mut irqs = 0u32;
        let mut stalls = 0;
        // The port has packets at the start: it notifies the host.
        let mut port_notified = true;
        while (got.len() as u16) < total {
            let mut progressed = false;
            let mut kick = false;
            if port_notified {
                let stop = host.rx_pass(&f.atok, &f.ktoa, &mut port, false, &mut || irqs += 1);
                prop_assert!(!matches!(stop, HostStop::Reset(_)));
            }
            // The guest syncs to learn new packets, consumes some, syncs to give them back.
            guest.prologue(f.ring.head(), f.ring.cur()).unwrap();
            kick |= guest.rxsync(&f.atok, &f.ktoa, 0);
            let mut head = f.ring.head();
            let mut c = 0;
            while head != guest.hwtail && c < consume {
                got.push(f.ring.len(head));
                head = ring_add(head, 1, n);
                c += 1;
            }
            progressed |= c > 0;
            f.ring.set_head(head);
            f.ring.set_cur(head);
            guest.prologue(head, head).unwrap();
            kick |= guest.rxsync(&f.atok, &f.ktoa, 0);
            // The port notifies only while it still has packets and the host stopped on it.
            port_notified = kick || port.next < total;
            stalls = if progressed { 0 } else { stalls + 1 };
            prop_assert!(stalls < 4, "no progress: host {:?} guest {:?}", host, guest);
        }
        for (i, s) in got.iter().enumerate() {
            prop_assert_eq!(*s as usize, i);
        }
    }
}

#[test]
fn host_resets_on_bad_indexes() {
    let n = 8;
    let mut t = tx_rig(n);
    for (head, cur) in [(9, 0), (0, 9), (u32::MAX, 0), (3, 2)] {
        t.f.atok.appl_write(head, cur);
        assert_eq!(t.pass(false), HostStop::Reset(BadIndexes { head, cur }));
        assert!(t.f.ktoa.kern_need_kick());
        assert_eq!(t.f.ktoa.appl_read(), (n - 1, 0));
        assert!(t.sink.out.is_empty());
    }
    // The ring works again once the guest publishes sane values.
    t.f.atok.appl_write(3, 3);
    assert_eq!(t.pass(false), HostStop::Idle);
    assert_eq!(t.sink.out.len(), 3);
    assert_eq!(t.f.ktoa.appl_read(), (2, 3));
}

#[test]
fn guest_rejects_its_own_bad_indexes() {
    let TxRig { mut guest, .. } = tx_rig(8);
    assert_eq!(guest.hwtail, 7);
    assert!(guest.prologue(8, 0).is_err());
    assert!(guest.prologue(3, 1).is_err());
    assert!(guest.prologue(7, 7).is_ok());
    assert!(guest.prologue(0, 0).is_err());
}

#[test]
fn interrupts_only_when_asked() {
    let mut t = tx_rig(4);
    t.sink.budget = 0;
    // Fill the ring: the guest would block and asks for an interrupt.
    assert!(t.send(3));
    assert!(t.f.atok.appl_need_kick());
    let mut irqs = 0;
    // The port takes nothing: no space freed, no interrupt.
    assert_eq!(t.pass_irqs(false, &mut irqs), HostStop::PortBlocked);
    assert_eq!(irqs, 0);
    // The port completes: space freed, the guest asked, one interrupt.
    t.sink.budget = 10;
    t.pass_irqs(false, &mut irqs);
    assert_eq!(irqs, 1);
    // A guest that does not want interrupts gets none.
    t.guest.want_interrupts = false;
    t.send(3);
    assert!(!t.f.atok.appl_need_kick());
}

#[test]
fn an_idle_receiver_does_not_kick_the_host() {
    let n = 8;
    let f = fixture(n);
    let mut host = HostKring::new_rx(n);
    host.start(&f.atok, &f.ktoa);
    let mut guest = GuestKring::attach(n, &f.atok, &f.ktoa);
    let mut port = Source {
        ring: f.ring,
        next: 0,
        limit: 3,
        budget: 8,
    };
    // Three packets arrive; the guest holds them, so the host wants to hear when they are freed.
    host.rx_pass(&f.atok, &f.ktoa, &mut port, false, &mut || {});
    assert!(f.ktoa.kern_need_kick());
    guest.prologue(0, 0).unwrap();
    guest.rxsync(&f.atok, &f.ktoa, 0);
    assert_eq!(guest.hwtail, 3);
    // The guest consumes and releases them: that kick is wanted.
    guest.prologue(3, 3).unwrap();
    assert!(guest.rxsync(&f.atok, &f.ktoa, 0));
    assert_eq!(
        host.rx_pass(&f.atok, &f.ktoa, &mut port, false, &mut || {}),
        HostStop::PortBlocked
    );
    // Now the guest holds nothing: its idle re-checks must not wake the host.
    assert!(!f.ktoa.kern_need_kick());
    for _ in 0..3 {
        guest.prologue(3, 3).unwrap();
        assert!(
            !guest.rxsync(&f.atok, &f.ktoa, 0),
            "idle rxsync kicked the host"
        );
    }
}

#[test]
fn guest_follows_a_host_that_started_over() {
    let mut t = tx_rig(16);
    // Ten packets go through; the guest is at 10.
    t.send(10);
    t.pass(false);
    t.send(12);
    assert_eq!(t.guest.host_resets, 0);
    // A new host (restarted daemon) starts from zero.
    t.restart_host();
    t.send(14);
    assert_eq!(t.guest.host_resets, 1);
    assert_eq!((t.guest.rhead, t.guest.rcur, t.guest.hwcur), (0, 0, 0));
    // Traffic continues from the new host's state, without a reset on the host side.
    t.send(3);
    t.sink.out.clear();
    assert_eq!(t.pass(false), HostStop::Idle);
    assert_eq!(t.sink.out.len(), 3);
    assert_eq!(t.guest.host_resets, 1);
}

#[test]
fn create_initialises_the_csb_as_netmap_does() {
    let n = 16;
    let f = fixture(n);
    // Whatever the guest left there (the stock driver writes appl_need_kick = 0 for TX rings).
    f.atok.appl_write(7, 9);
    f.atok.set_appl_need_kick(false);
    f.atok.set_sync_flags(0);
    f.ktoa.set_kern_need_kick(false);
    let mut host = HostKring::with_state(n, 4, 3);
    host.start(&f.atok, &f.ktoa);
    assert_eq!(f.atok.kernel_read(), (4, 4));
    assert!(f.atok.appl_need_kick());
    assert_eq!(f.atok.sync_flags(), 1);
    assert_eq!(f.ktoa.appl_read(), (3, 4));
    assert!(f.ktoa.kern_need_kick());
}

#[test]
fn a_resumed_tx_ring_goes_on_from_the_guests_positions() {
    let n = 16;
    let mut t = tx_rig(n);
    t.send(10);
    t.pass(false);
    // Two more queued that no host saw: the daemon dies here. Its successor has a fresh ring
    // memory (head, cur, tail at their initial values) and resumes from the CSB.
    t.send(12);
    let f = &t.f;
    f.ring.init_header(0, 2048, 0, ring::DIR_TX, n - 1);
    t.host = HostKring::new_tx(n);
    assert_eq!(t.host.resume(true, &f.atok, &f.ktoa, &f.ring), Ok((12, 11)));
    assert_eq!((f.ring.head(), f.ring.cur(), f.ring.tail()), (12, 12, 11));
    // The guest never notices: no reset, and traffic goes on from 12.
    t.send(15);
    t.sink.out.clear();
    assert_eq!(t.pass(false), HostStop::Idle);
    assert_eq!(t.sink.out.len(), 3);
    assert_eq!(t.guest.host_resets, 0);
}

#[test]
fn a_resumed_rx_ring_keeps_the_guests_unread_slots_as_zero_frames() {
    let n = 8;
    let f = fixture(n);
    // The guest received up to 6 and released up to 2 (its head).
    f.ktoa.kernel_write(1, 6);
    f.atok.appl_write(2, 3);
    f.ring.init_header(0, 2048, 0, ring::DIR_RX, 0);
    let mut host = HostKring::new_rx(n);
    assert_eq!(host.resume(false, &f.atok, &f.ktoa, &f.ring), Ok((2, 6)));
    assert_eq!((host.hwcur, host.hwtail), (2, 6));
    assert_eq!(f.ktoa.appl_read(), (6, 2));
    assert_eq!((f.ring.head(), f.ring.cur(), f.ring.tail()), (2, 3, 6));
    for i in 0..n {
        let want = if (2..6).contains(&i) {
            RESUME_FILLER_LEN
        } else {
            0
        };
        assert_eq!(f.ring.len(i), want, "slot {i}");
    }
}

#[test]
fn resume_refuses_a_csb_that_makes_no_ring() {
    let n = 8;
    let f = fixture(n);
    let mut host = HostKring::new_rx(n);
    for (hwcur, hwtail, head, cur) in [(0, 9, 0, 0), (1, 3, 5, 5), (1, 3, 2, 4), (8, 0, 0, 0)] {
        f.ktoa.kernel_write(hwcur, hwtail);
        f.atok.appl_write(head, cur);
        assert_eq!(
            host.resume(false, &f.atok, &f.ktoa, &f.ring),
            Err(BadIndexes { head, cur })
        );
        assert_eq!((host.hwcur, host.hwtail), (0, 0), "nothing adopted");
    }
}

#[test]
fn a_ring_resumed_in_place_sends_what_the_guest_queued() {
    let n = 16;
    let mut t = tx_rig(n);
    for i in 0..10 {
        t.f.ring.set_len(i, i as u16);
    }
    t.send(6);
    t.pass(false);
    assert_eq!(t.sink.out, [0, 1, 2, 3, 4, 5]);
    // Four more queued; the daemon dies before it sees them. Its successor has the same
    // memory back and resumes in place: the four go out.
    t.guest.prologue(10, 10).unwrap();
    t.f.atok.appl_write(10, 10);
    t.host = HostKring::new_tx(n);
    assert_eq!(
        t.host.resume_in_place(true, &t.f.atok, &t.f.ktoa),
        Ok((6, 5))
    );
    t.sink.out.clear();
    t.pass(false);
    assert_eq!(t.sink.out, [6, 7, 8, 9]);
    t.guest.txsync(&t.f.atok, &t.f.ktoa, 0);
    assert_eq!(t.guest.host_resets, 0);
}

#[test]
fn a_spinning_host_is_not_kicked_and_a_reset_still_asks_for_the_kick() {
    let mut t = tx_rig(8);
    // An idle pass that lets its loop sleep asks for kicks.
    assert_eq!(t.pass(false), HostStop::Idle);
    assert!(t.f.ktoa.kern_need_kick());
    // The loop spins on (busy passes): the request is withdrawn, so a guest sending now makes
    // no syscall for a thread that is running anyway, and the spinning pass takes the packet.
    assert_eq!(t.pass(true), HostStop::Poll);
    assert!(!t.f.ktoa.kern_need_kick());
    t.f.ring.set_len(0, 60);
    assert!(!t.send(1), "kicked a spinning host");
    assert_eq!(t.pass(true), HostStop::Poll);
    assert_eq!(t.host.hwcur, 1);
    // The spin ends: the non-busy pass asks for kicks again before the loop sleeps.
    assert_eq!(t.pass(false), HostStop::Idle);
    assert!(t.f.ktoa.kern_need_kick());
    assert!(t.send(2), "a sleeping host was not kicked");
    // A reset found by a busy pass: its loop then waits for the guest's kick, so it asks for it.
    assert_eq!(t.pass(true), HostStop::Poll);
    assert!(!t.f.ktoa.kern_need_kick());
    t.f.atok.appl_write(9, 0);
    assert_eq!(
        t.pass(true),
        HostStop::Reset(BadIndexes { head: 9, cur: 0 })
    );
    assert!(t.f.ktoa.kern_need_kick());
}

/// A TX ring whose host runs only inside the guest's kicks, as the driver's `packet:` transport
/// runs its host: a txsync that kicks runs the pass in `mode`, and nothing else runs it (no
/// thread, no port notification, no wait). Each of `rounds` rounds the guest queues what fits
/// of 5 packets and syncs; the port (a socket whose buffer fills) takes nothing in every third
/// round. Returns how many packets were queued and what the port sent.
fn tx_run_only_by_kicks(mode: PassMode, rounds: u16) -> (u16, Vec<u16>) {
    let n = 8;
    let mut t = tx_rig(n);
    let mut queued = 0;
    for round in 0..rounds {
        t.sink.budget = if round % 3 == 1 { 0 } else { 100 };
        let mut cur = t.f.ring.cur();
        for _ in 0..5 {
            if cur == t.guest.hwtail {
                break;
            }
            t.f.ring.set_len(cur, queued);
            queued += 1;
            cur = ring_add(cur, 1, n);
        }
        t.f.ring.set_head(cur);
        t.f.ring.set_cur(cur);
        if t.send(cur) {
            let stop = t.pass(mode);
            assert!(!matches!(stop, HostStop::Reset(_)), "{stop:?}");
            if mode == PassMode::Kicked {
                assert!(
                    t.f.ktoa.kern_need_kick(),
                    "stopped asking for kicks: {stop:?}"
                );
            }
        }
    }
    (queued, t.sink.out)
}

/// The RX ring of such a host: 3 packets reach the port (a socket's receive queue, which fills
/// while no pass runs) every third round; each round the guest syncs, reads all it has, gives
/// it back and syncs again. Returns how many packets arrived and what the guest read.
fn rx_run_only_by_kicks(mode: PassMode, rounds: u16) -> (u16, Vec<u16>) {
    let n = 8;
    let f = fixture(n);
    let mut host = HostKring::new_rx(n);
    host.start(&f.atok, &f.ktoa);
    let mut guest = GuestKring::attach(n, &f.atok, &f.ktoa);
    let mut port = Source {
        ring: f.ring.clone(),
        next: 0,
        limit: 0,
        budget: 8,
    };
    let mut sync = |guest: &mut GuestKring, port: &mut Source| {
        guest.prologue(f.ring.head(), f.ring.cur()).unwrap();
        if guest.rxsync(&f.atok, &f.ktoa, 0) {
            let stop = host.rx_pass(&f.atok, &f.ktoa, port, mode, &mut || {});
            assert!(!matches!(stop, HostStop::Reset(_)), "{stop:?}");
            if mode == PassMode::Kicked {
                assert!(
                    f.ktoa.kern_need_kick(),
                    "stopped asking for kicks: {stop:?}"
                );
            }
        }
    };
    let mut got = Vec::new();
    for round in 0..rounds {
        if round % 3 == 0 {
            port.limit += 3;
        }
        sync(&mut guest, &mut port);
        let mut head = f.ring.head();
        while head != guest.hwtail {
            got.push(f.ring.len(head));
            head = ring_add(head, 1, n);
        }
        f.ring.set_head(head);
        f.ring.set_cur(head);
        sync(&mut guest, &mut port);
    }
    (port.limit, got)
}

#[test]
fn a_host_run_only_by_kicks_keeps_asking_for_them() {
    // In its own mode, every packet goes through both ways, in order.
    let (queued, sent) = tx_run_only_by_kicks(PassMode::Kicked, 30);
    assert!(queued > 50, "{queued}");
    assert_eq!(sent, (0..queued).collect::<Vec<_>>());
    let (arrived, got) = rx_run_only_by_kicks(PassMode::Kicked, 30);
    assert_eq!(arrived, 30);
    assert_eq!(got, (0..arrived).collect::<Vec<_>>());
    // The same host passing as a sleeping thread stops with kicks off when it waits for its
    // port (TX: the socket is full; RX: nothing came and the guest holds nothing), or as a
    // polling loop at once, and nothing runs it again: less than a ring's worth goes through,
    // the packet transport's stall.
    for mode in [PassMode::Sleep, PassMode::Poll] {
        let (queued, sent) = tx_run_only_by_kicks(mode, 30);
        assert!(sent.len() < 8 && queued > 5, "{mode:?}: {queued} {sent:?}");
        let (arrived, got) = rx_run_only_by_kicks(mode, 30);
        assert!(got.len() < 8 && arrived == 30, "{mode:?}: {got:?}");
    }
}

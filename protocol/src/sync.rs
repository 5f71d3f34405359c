//! The ring-sync algorithms of both sides of the CSB, written once.
//!
//! Guest side ([`GuestKring`]): what the ptnet driver does on txsync/rxsync: publish the
//! application's `head`/`cur` to the CSB, learn `hwcur`/`hwtail` from it, kick the host only when
//! the host asked for kicks, and ask for an interrupt only when the ring would block.
//!
//! Host side ([`HostKring::tx_pass`], [`HostKring::rx_pass`]): one pass of a host ring's sync loop,
//! run when the ring is kicked or its port notifies it. It reads the guest's indexes, validates
//! them, runs the port's own sync ([`PortSync`]), publishes the result, interrupts the guest if it
//! asked, and, before it lets its caller sleep, asks for kicks and re-checks the CSB, so a guest
//! update racing with the decision to sleep is never lost. How the pass is run ([`PassMode`]: a sleeping host
//! thread, a polling loop, or a host run only by the guest's kicks) decides which kicks it asks
//! for.
//!
//! Both sides follow netmap's kloop (`netmap_kloop.c`): the same conditions, in the same order.

use crate::csb::{store_load_barrier, Atok, Ktoa, NAF_FORCE_RECLAIM};
use crate::netmap::{ring_add, ring_between, ring_dist, RingView};

/// Length of the zero frames [`HostKring::resume`] puts in RX slots whose contents were lost
/// with a restarted daemon's memory: the Ethernet minimum without FCS.
pub const RESUME_FILLER_LEN: u16 = 60;

/// Previous index on a ring of `n` slots.
#[inline]
pub fn ring_prev(i: u32, n: u32) -> u32 {
    if i == 0 {
        n - 1
    } else {
        i - 1
    }
}

/// Indexes published by the other side that are inconsistent with the ring state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadIndexes {
    /// The head that was published.
    pub head: u32,
    /// The cur that was published.
    pub cur: u32,
}

impl core::fmt::Display for BadIndexes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "bad ring indexes (head {}, cur {})", self.head, self.cur)
    }
}

impl std::error::Error for BadIndexes {}

/// Validates `head` and `cur`: both in range, `head` in `[old_head, tail]` and `cur` in
/// `[head, tail]`, going forward round the ring.
#[inline]
pub fn check_indexes(
    old_head: u32,
    tail: u32,
    head: u32,
    cur: u32,
    n: u32,
) -> Result<(), BadIndexes> {
    if head < n
        && cur < n
        && ring_between(old_head, head, tail, n)
        && ring_between(head, cur, tail, n)
    {
        Ok(())
    } else {
        Err(BadIndexes { head, cur })
    }
}

/// Guest-side state of one ring (the driver's `kring`).
#[derive(Clone, Copy, Debug)]
pub struct GuestKring {
    /// Slots in the ring.
    pub num_slots: u32,
    /// Last hwcur learnt from the host.
    pub hwcur: u32,
    /// Last hwtail learnt from the host.
    pub hwtail: u32,
    /// head published by the last sync.
    pub rhead: u32,
    /// cur published by the last sync.
    pub rcur: u32,
    /// Ask for interrupts when the ring would block (false: the application busy-polls).
    pub want_interrupts: bool,
    /// Times the host was seen starting over (see `GuestKring::host_restarted`).
    pub host_resets: u32,
}

impl GuestKring {
    /// State right after CREATE, taken from the host-to-guest entry. The guest-to-host entry is
    /// aligned to it so the host sees a consistent head from the start.
    pub fn attach(num_slots: u32, atok: &Atok, ktoa: &Ktoa) -> Self {
        let mut k = Self {
            num_slots,
            hwcur: 0,
            hwtail: 0,
            rhead: 0,
            rcur: 0,
            want_interrupts: true,
            host_resets: 0,
        };
        let (hwtail, hwcur) = ktoa.appl_read();
        k.hwtail = hwtail % num_slots;
        k.hwcur = hwcur % num_slots;
        k.rhead = k.hwcur;
        k.rcur = k.hwcur;
        atok.appl_write(k.rhead, k.rcur);
        k
    }

    /// "Would block": no slot for the application after cur (no free TX slot, no received packet).
    #[inline]
    pub fn would_block(&self) -> bool {
        self.rcur == self.hwtail
    }

    /// Validates and records the application's new head/cur.
    #[inline]
    pub fn prologue(&mut self, head: u32, cur: u32) -> Result<(), BadIndexes> {
        check_indexes(self.rhead, self.hwtail, head, cur, self.num_slots)?;
        self.rhead = head;
        self.rcur = cur;
        Ok(())
    }

    /// txsync, after [`Self::prologue`]. Returns true when the host must be kicked.
    pub fn txsync(&mut self, atok: &Atok, ktoa: &Ktoa, flags: u32) -> bool {
        atok.set_appl_need_kick(false);
        // Learn hwcur first: a head beyond it is work the host has not seen.
        let hwcur = ktoa.hwcur() % self.num_slots;
        if !self.host_restarted(hwcur) {
            self.hwcur = hwcur;
        } else {
            self.realign(atok, ktoa);
        }
        atok.appl_write(self.rhead, self.rcur);
        let mut kick = false;
        if ((self.rhead != self.hwcur || self.would_block()) && ktoa.kern_need_kick())
            || flags & NAF_FORCE_RECLAIM != 0
        {
            atok.set_sync_flags(flags);
            kick = true;
        }
        // Reclaim completed slots only when out of space (or asked to).
        if self.would_block() || flags & NAF_FORCE_RECLAIM != 0 {
            self.read_host(atok, ktoa);
        }
        if self.would_block() && self.want_interrupts {
            atok.set_appl_need_kick(true);
            // The host may have freed slots between our read and our request: look again.
            store_load_barrier();
            self.read_host(atok, ktoa);
            if !self.would_block() {
                atok.set_appl_need_kick(false);
            }
        }
        kick
    }

    /// rxsync, after [`Self::prologue`]. Returns true when the host must be kicked.
    pub fn rxsync(&mut self, atok: &Atok, ktoa: &Ktoa, flags: u32) -> bool {
        atok.set_appl_need_kick(false);
        self.read_host(atok, ktoa);
        // Give back the slots the application released.
        if self.rhead != self.hwcur {
            atok.appl_write(self.rhead, self.rcur);
        }
        if self.would_block() && self.want_interrupts {
            atok.set_appl_need_kick(true);
            // Packets may have arrived between our read and our request: look again.
            store_load_barrier();
            self.read_host(atok, ktoa);
            if !self.would_block() {
                atok.set_appl_need_kick(false);
            }
        }
        if (self.rhead != self.hwcur || self.would_block()) && ktoa.kern_need_kick() {
            atok.set_sync_flags(flags);
            return true;
        }
        false
    }

    /// Reads hwtail then hwcur. Values are reduced modulo the ring so a confused host cannot push
    /// the guest's indexes out of range.
    #[inline]
    fn read_host(&mut self, atok: &Atok, ktoa: &Ktoa) {
        let (hwtail, hwcur) = ktoa.appl_read();
        if self.host_restarted(hwcur % self.num_slots) {
            self.realign(atok, ktoa);
            return;
        }
        self.hwtail = hwtail % self.num_slots;
        self.hwcur = hwcur % self.num_slots;
    }

    /// The host only ever moves hwcur forward, and never past the head the guest published. A
    /// hwcur outside `[hwcur, rhead]` means the host side started over: a restarted daemon
    /// whose frontend reconnected and replayed CREATE, with fresh rings.
    #[inline]
    fn host_restarted(&self, hwcur: u32) -> bool {
        !ring_between(self.hwcur, hwcur, self.rhead, self.num_slots)
    }

    /// Takes the host's state as after attach, dropping what was in flight: the slots and
    /// buffers the guest had belong to memory that is gone. The application learns it from
    /// [`GuestKring::host_resets`] and its indexes from `rhead`/`rcur`.
    fn realign(&mut self, atok: &Atok, ktoa: &Ktoa) {
        let (hwtail, hwcur) = ktoa.appl_read();
        self.hwtail = hwtail % self.num_slots;
        self.hwcur = hwcur % self.num_slots;
        self.rhead = self.hwcur;
        self.rcur = self.hwcur;
        self.host_resets = self.host_resets.wrapping_add(1);
        atok.appl_write(self.rhead, self.rcur);
    }
}

/// The port side of a host ring: what netmap calls the ring's `nm_sync`.
pub trait PortSync {
    /// TX: transmit slots `[k.hwcur, k.rhead)`, advancing `k.hwcur` past what was taken and
    /// `k.hwtail` past what completed. RX: release `[k.hwcur, k.rhead)` (set `k.hwcur = k.rhead`)
    /// and receive into the free slots, advancing `k.hwtail`. Must never move `hwcur` beyond
    /// `rhead` or `hwtail` into the guest's part of the ring.
    fn sync(&mut self, k: &mut HostKring, flags: u32);

    /// RX: whether the port needs to hear at once of slots the guest releases, i.e. whether the
    /// host should ask for the guest's kick when it stops with packets in the guest's hands.
    /// True (the default) when a producer of the port may be waiting for those slots. A port
    /// whose producers run the ring's host pass themselves (and so take released slots in as
    /// they go) answers false while none waits for room.
    fn wants_released_slots(&self) -> bool {
        true
    }
}

/// How a host pass is run, i.e. what brings on the next one: it decides whether the pass leaves
/// the guest's kicks requested when it stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassMode {
    /// A host thread that sleeps when the pass stops, until the guest kicks it or its port
    /// notifies it: the pass asks for kicks (and re-checks the CSB) only when it stops waiting
    /// for the guest, and leaves them off while it waits for the port.
    Sleep,
    /// Busy-wait: a loop polling the CSB (or spinning after progress before it sleeps) runs the
    /// next pass at once, so the guest need not kick it: the pass withdraws a request an earlier
    /// pass left, and stops ([`HostStop::Poll`]) as soon as the guest has published nothing new.
    Poll,
    /// A host that runs only when the guest kicks it, inline (the guest's kick runs the pass, as
    /// the driver's in-process `packet:` transport does): nothing else wakes it, no port
    /// notification and no loop, so the kick request stands whatever the pass finds (it is set
    /// again if it is missing), and the pass stops as soon as the guest has published nothing
    /// new, leaving the next move to the guest. A pass that stopped with kicks off (`Sleep`,
    /// `Poll`) would never be run again: the guest only kicks when asked.
    Kicked,
}

impl From<bool> for PassMode {
    /// The `busy_wait` flag of a host thread: true polls, false sleeps.
    fn from(busy_wait: bool) -> Self {
        if busy_wait {
            PassMode::Poll
        } else {
            PassMode::Sleep
        }
    }
}

/// Why a host pass stopped, i.e. what its caller should wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostStop {
    /// Nothing to do; kicks are enabled. Sleep until the guest kicks or the port notifies.
    Idle,
    /// Busy-wait mode ([`PassMode::Poll`]): nothing to do right now; poll again.
    Poll,
    /// The port cannot make progress (TX ring full, RX: nothing new). Wait for the port's
    /// notification (or a kick: kicks stay enabled only on RX when the guest has no free slots,
    /// and always in [`PassMode::Kicked`]).
    PortBlocked,
    /// The guest published bad indexes; the ring was re-published as the host sees it and kicks
    /// are enabled. The caller counts and logs this.
    Reset(BadIndexes),
}

/// Host-side state of one ring (netmap's `kring` as the kloop uses it).
#[derive(Clone, Copy, Debug)]
pub struct HostKring {
    /// Slots in the ring (trusted: the port's geometry).
    pub num_slots: u32,
    /// First slot the host has not yet consumed (TX) or released (RX).
    pub hwcur: u32,
    /// TX: last slot owned by the host going forward (free slots end here); RX: end of received.
    pub hwtail: u32,
    /// Guest head as last validated.
    pub rhead: u32,
    /// Guest cur as last validated.
    pub rcur: u32,
    /// hwtail as last published to the guest.
    pub rtail: u32,
    /// Interrupt raised since the last notification was owed (saves duplicate signals).
    pending_irq: bool,
}

/// Dry RX passes in a row after which the host stops and waits for the port.
const RX_DRY_CYCLES_MAX: u32 = 2;

impl HostKring {
    /// A fresh TX ring: every slot but one free for the guest.
    pub fn new_tx(num_slots: u32) -> Self {
        Self::with_state(num_slots, 0, num_slots - 1)
    }

    /// A fresh RX ring: nothing received.
    pub fn new_rx(num_slots: u32) -> Self {
        Self::with_state(num_slots, 0, 0)
    }

    /// A ring at the given hwcur/hwtail.
    pub fn with_state(num_slots: u32, hwcur: u32, hwtail: u32) -> Self {
        Self {
            num_slots,
            hwcur,
            hwtail,
            rhead: hwcur,
            rcur: hwcur,
            rtail: hwtail,
            pending_irq: false,
        }
    }

    /// CREATE: align the guest's view with ours, writing both CSB entries as netmap's
    /// `CSB_ENABLE` does (`netmap_csb_validate` in `netmap.c`): atok `head`/`cur` = our
    /// `rhead`/`rcur` (here both `hwcur`: a stopped ring has no unvalidated guest work),
    /// `appl_need_kick` = 1, `sync_flags` = 1; ktoa `hwcur`/`hwtail` = ours, `kern_need_kick` =
    /// 1. The stock guest driver then aligns its rings to the CSB (`ptnet_sync_from_csb`).
    pub fn start(&mut self, atok: &Atok, ktoa: &Ktoa) {
        self.rhead = self.hwcur;
        self.rcur = self.hwcur;
        self.rtail = self.hwtail;
        atok.appl_write(self.rhead, self.rcur);
        atok.set_appl_need_kick(true);
        atok.set_sync_flags(1);
        ktoa.kernel_write(self.hwcur, self.hwtail);
        ktoa.set_kern_need_kick(true);
    }

    /// RESUME: a frontend that outlived a daemon restart starts a ring this daemon has never run,
    /// in a fresh port memory, under a guest kernel that keeps its old positions and never
    /// reloads them (the stock driver reads the CSB only after its own CREATE). The positions
    /// still in the CSB (guest memory) are adopted instead of ours, and written into the new
    /// ring's header, so the guest's next sync passes its own checks:
    ///
    /// * TX: what the guest queued but no host completed lived in the old memory: those slots
    ///   complete at once (`hwcur` = the guest's `head`), every slot free again.
    /// * RX: released slots are taken in (`hwcur` = the guest's `head`); slots the guest
    ///   believes received and unread (`head`..`hwtail`) get a 60-byte zero frame, not an empty
    ///   or stale one (`len` 0 under a virtio-net header would underflow a driver's length).
    ///
    /// Returns the adopted `(head, hwtail)`, or the CSB's indexes when they do not make a ring,
    /// with nothing changed; the caller then falls back to [`Self::start`].
    pub fn resume(
        &mut self,
        is_tx: bool,
        atok: &Atok,
        ktoa: &Ktoa,
        ring: &RingView,
    ) -> Result<(u32, u32), BadIndexes> {
        let (head, cur, _, hwtail) = self.csb_positions(atok, ktoa)?;
        let n = self.num_slots;
        self.hwcur = head;
        if is_tx {
            self.hwtail = ring_prev(head, n);
        } else {
            self.hwtail = hwtail;
            let mut i = head;
            while i != hwtail {
                ring.set_len(i, RESUME_FILLER_LEN);
                ring.set_flags(i, 0);
                i = ring_add(i, 1, n);
            }
        }
        self.start(atok, ktoa);
        ring.set_head(head);
        ring.set_cur(cur);
        ring.set_tail(self.hwtail);
        Ok((head, self.hwtail))
    }

    /// RESUME over the very memory the guest used (the frontend handed the old daemon's port
    /// memory back, and it was copied in): buffers, slots and ring headers are the guest's, so
    /// only our positions are taken from the CSB. TX resumes at the old host's `hwcur`, so the
    /// frames the guest queued and no host sent go out now; RX keeps what the guest has not
    /// read. Returns the adopted `(hwcur, hwtail)`; on bad indexes, nothing changes.
    pub fn resume_in_place(
        &mut self,
        is_tx: bool,
        atok: &Atok,
        ktoa: &Ktoa,
    ) -> Result<(u32, u32), BadIndexes> {
        let (head, cur, hwcur, hwtail) = self.csb_positions(atok, ktoa)?;
        self.hwcur = if is_tx { hwcur } else { head };
        self.hwtail = hwtail;
        // The guest's head and cur stand (unlike CREATE, which starts a stopped ring): its
        // queued TX slots are work for the first pass.
        (self.rhead, self.rcur, self.rtail) = (head, cur, hwtail);
        ktoa.kernel_write(self.hwcur, self.hwtail);
        ktoa.set_kern_need_kick(true);
        atok.set_appl_need_kick(true);
        Ok((self.hwcur, self.hwtail))
    }

    /// The positions in the CSB, checked to make a ring: `(head, cur, hwcur, hwtail)`.
    fn csb_positions(&self, atok: &Atok, ktoa: &Ktoa) -> Result<(u32, u32, u32, u32), BadIndexes> {
        let n = self.num_slots;
        let (head, cur) = atok.kernel_read();
        let (hwtail, hwcur) = ktoa.appl_read();
        let consistent = head < n
            && cur < n
            && hwcur < n
            && hwtail < n
            && ring_between(hwcur, head, hwtail, n)
            && ring_between(head, cur, hwtail, n);
        if consistent {
            Ok((head, cur, hwcur, hwtail))
        } else {
            Err(BadIndexes { head, cur })
        }
    }

    /// Free TX slots as the guest sees them.
    #[inline]
    fn tx_space(&self) -> u32 {
        ring_dist(self.rcur, self.hwtail, self.num_slots)
    }

    /// Reads and validates the guest's indexes against what we published.
    #[inline]
    fn read_guest(&self, atok: &Atok) -> Result<(u32, u32), BadIndexes> {
        let (head, cur) = atok.kernel_read();
        check_indexes(self.rhead, self.rtail, head, cur, self.num_slots)?;
        Ok((head, cur))
    }

    fn reset(&mut self, ktoa: &Ktoa, bad: BadIndexes) -> HostStop {
        // The guest's view is broken: publish ours again so a sane guest can re-align, and keep
        // listening for kicks. Busy-wait passes too: they cleared the request at their start
        // (`kick_request_at_start`), and after a reset the caller waits for the guest's kick.
        ktoa.kernel_write(self.hwcur, self.hwtail);
        ktoa.set_kern_need_kick(true);
        HostStop::Reset(bad)
    }

    /// Publishes hwcur/hwtail to the guest. Returns true when hwtail moved (TX: slots completed,
    /// RX: packets received), which owes the guest an interrupt if it asks for one.
    fn publish(&mut self, ktoa: &Ktoa) -> bool {
        ktoa.kernel_write(self.hwcur, self.hwtail);
        if self.rtail == self.hwtail {
            return false;
        }
        self.rtail = self.hwtail;
        self.pending_irq = true;
        true
    }

    /// Asks the guest for kicks, then reads its indexes again: the guest may have published just
    /// before it could see the request, and would then not kick (the lost wake-up).
    fn ask_for_kicks(&self, atok: &Atok, ktoa: &Ktoa) -> Result<(u32, u32), BadIndexes> {
        ktoa.set_kern_need_kick(true);
        store_load_barrier();
        self.read_guest(atok)
    }

    /// A pass starts: the host is awake, so the guest need not kick it. A busy-wait pass (a loop
    /// polling the CSB, or spinning after progress before it sleeps) clears a request left by
    /// an earlier pass that stopped `Idle` too, or the guest would kick (one syscall each sync)
    /// a thread that is running anyway: only stores when the flag is set, so a polling loop
    /// does not write the guest's cache line on every pass. A busy pass never sets it again;
    /// the first sleeping pass asks for kicks, with its re-check, before its loop sleeps. A
    /// kicked host's request stands (it runs only on kicks), stored only if it is missing.
    #[inline]
    fn kick_request_at_start(&self, ktoa: &Ktoa, mode: PassMode) {
        match mode {
            PassMode::Sleep => ktoa.set_kern_need_kick(false),
            PassMode::Poll if ktoa.kern_need_kick() => ktoa.set_kern_need_kick(false),
            PassMode::Kicked if !ktoa.kern_need_kick() => ktoa.set_kern_need_kick(true),
            PassMode::Poll | PassMode::Kicked => {}
        }
    }

    fn interrupt_if_wanted(&mut self, atok: &Atok, irq: &mut dyn FnMut()) {
        if self.pending_irq && atok.appl_need_kick() {
            irq();
            self.pending_irq = false;
        }
    }

    /// One pass of the host TX loop, run as `mode` says (a `busy_wait` flag converts: true is
    /// [`PassMode::Poll`], false [`PassMode::Sleep`]). `irq` raises the guest's interrupt for this
    /// ring.
    pub fn tx_pass(
        &mut self,
        atok: &Atok,
        ktoa: &Ktoa,
        port: &mut dyn PortSync,
        mode: impl Into<PassMode>,
        irq: &mut dyn FnMut(),
    ) -> HostStop {
        let mode = mode.into();
        self.kick_request_at_start(ktoa, mode);
        let mut guest = self.read_guest(atok);
        let stop = loop {
            let (head, cur) = match guest {
                Ok(v) => v,
                Err(bad) => break self.reset(ktoa, bad),
            };
            self.rhead = head;
            self.rcur = cur;
            let mut flags = atok.sync_flags();
            if self.tx_space() <= self.num_slots / 2 {
                flags |= NAF_FORCE_RECLAIM;
            }
            port.sync(self, flags);
            self.publish(ktoa);
            self.interrupt_if_wanted(atok, irq);

            guest = self.read_guest(atok);
            if matches!(guest, Ok((h, _)) if h == self.rhead) {
                if mode == PassMode::Poll {
                    break HostStop::Poll;
                }
                if self.hwcur != self.rhead {
                    // Packets are left that the port could not take: wait for it, not the guest.
                    break HostStop::PortBlocked;
                }
                if mode == PassMode::Kicked {
                    // Its request stands: nothing to ask for, nothing to re-check.
                    break HostStop::Idle;
                }
                guest = self.ask_for_kicks(atok, ktoa);
                if matches!(guest, Ok((h, _)) if h != self.rhead) {
                    ktoa.set_kern_need_kick(false);
                    continue;
                }
                if guest.is_ok() {
                    break HostStop::Idle;
                }
                continue;
            }
            if self.rhead == self.hwtail {
                // The guest has no free slot left: completions from the port will wake us.
                break HostStop::PortBlocked;
            }
        };
        self.interrupt_if_wanted(atok, irq);
        stop
    }

    /// One pass of the host RX loop, run as `mode` says (as for [`Self::tx_pass`]).
    pub fn rx_pass(
        &mut self,
        atok: &Atok,
        ktoa: &Ktoa,
        port: &mut dyn PortSync,
        mode: impl Into<PassMode>,
        irq: &mut dyn FnMut(),
    ) -> HostStop {
        let mode = mode.into();
        self.kick_request_at_start(ktoa, mode);
        let mut dry_cycles = 0;
        let mut guest = self.read_guest(atok);
        let stop = loop {
            let (head, cur) = match guest {
                Ok(v) => v,
                Err(bad) => break self.reset(ktoa, bad),
            };
            self.rhead = head;
            self.rcur = cur;
            port.sync(self, atok.sync_flags());
            if self.publish(ktoa) {
                dry_cycles = 0;
            } else {
                dry_cycles += 1;
            }
            self.interrupt_if_wanted(atok, irq);

            guest = self.read_guest(atok);
            let no_rx_slots = |g: &Result<(u32, u32), BadIndexes>, k: &Self| matches!(g, Ok((h, _)) if k.hwtail == ring_prev(*h, k.num_slots));
            if no_rx_slots(&guest, self) {
                match mode {
                    PassMode::Poll => break HostStop::Poll,
                    PassMode::Kicked => break HostStop::Idle,
                    PassMode::Sleep => {}
                }
                // The guest holds every slot: wait for it to release some.
                guest = self.ask_for_kicks(atok, ktoa);
                if guest.is_ok() && !no_rx_slots(&guest, self) {
                    ktoa.set_kern_need_kick(false);
                    continue;
                }
                if guest.is_ok() {
                    break HostStop::Idle;
                }
                continue;
            }
            if guest.is_ok() && (self.hwtail == self.rhead || dry_cycles >= RX_DRY_CYCLES_MAX) {
                match mode {
                    PassMode::Poll => break HostStop::Poll,
                    // Kicks stay requested: the guest's next sync brings the next pass.
                    PassMode::Kicked => break HostStop::PortBlocked,
                    PassMode::Sleep => {}
                }
                // Nothing more from the port for now; new packets come with its notification.
                if self.hwtail == self.rhead || !port.wants_released_slots() {
                    // The guest holds no packet, so it has nothing to give back, or the port
                    // does not need what it gives back yet: no kicks wanted (an idle guest that
                    // re-checks its ring costs the host nothing).
                    break HostStop::PortBlocked;
                }
                // The guest holds packets; the slots it frees come with a kick (a blocked
                // producer on the port may be waiting for them), so ask and re-check.
                guest = self.ask_for_kicks(atok, ktoa);
                if matches!(guest, Ok((h, _)) if h == self.rhead) {
                    break HostStop::PortBlocked;
                }
                ktoa.set_kern_need_kick(false);
                continue;
            }
        };
        self.interrupt_if_wanted(atok, irq);
        stop
    }
}

#[cfg(test)]
mod tests;

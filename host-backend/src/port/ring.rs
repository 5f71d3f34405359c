//! The ring contract: what every port kind implements for each of its rings ([`RingSync`]), what
//! a host pass over a ring works on ([`PassState`]), and the skeleton of a TX sync ([`TxBatch`]).
//!
//! A ring has three sides:
//!
//! * the **port side**: the port kind's [`RingSync`], which moves packets between the ring and
//!   wherever the port takes them (another ring, a switch, a socket, nowhere);
//! * the **host side**: the host kring ([`HostKring`], the host's view of the ring's indexes),
//!   kept with the port's sync and its counters in a [`RingWorker`] while no frontend runs the
//!   ring, across connections;
//! * the **guest side**: what a frontend hands over to run a port's rings ([`FrontendRings`]:
//!   its CSB arrays, its kick and interrupt eventfds).
//!
//! While a frontend runs the ring, its sync loop owns a [`PassState`] (the host kring, the ring's
//! CSB entries and interrupt) and runs the protocol's host pass over it ([`PassState::run`]).
//! Exactly one party owns each ring's pass state at a time: the loop, or, for an RX ring with
//! direct delivery, the ring itself, to which the loop lends it ([`DirectRx`], see
//! [`crate::port::delivery`]) so that its producers can run the pass.

use crate::capture::ring::ObservedSync;
pub use crate::capture::ring::RingObs;
use ptnet_protocol::csb::{Atok, Ktoa};
use ptnet_protocol::netmap::{ring_add, ring_dist};
use ptnet_protocol::shmem::SharedMem;
use ptnet_protocol::sync::{ring_prev, HostKring, HostStop, PortSync};
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use vmm_sys_util::eventfd::EventFd;

/// The port side of one ring, as a sync loop drives it.
pub trait RingSync: PortSync + Send {
    /// Asks the port to signal this ring's notifier when the ring can make progress without the
    /// guest (RX: packets arrived; TX: room freed for packets left pending). Returns true when it
    /// already can, so the caller must not sleep.
    fn arm(&mut self, k: &HostKring) -> bool;

    /// A descriptor of the port, and the `poll(2)` events on it, that the sync loop also waits
    /// for while it sleeps after [`Self::arm`] returned false: NIC ports hand their socket or tap
    /// here, so frames arriving ([`Wake::readable`]) or room in a kernel queue that was full
    /// ([`Wake::writable`]) wake the ring.
    ///
    /// The contract:
    /// - Asked after every `arm` that returned false, never after a ring reset (then only the
    ///   guest can move the ring on). `None` (the default): no wake-up wanted.
    /// - `poll` is level-triggered: it returns at once while the event holds, so ask only while
    ///   the event means the ring can move (RX: frames may arrive *and* the guest left free
    ///   slots; TX: slots are pending *and* the kernel's queue is full). Anything else spins the
    ///   loop. A port whose descriptor has no event that says so hands another one
    ///   (`packet:`/`xdp:` TX: an epoll descriptor that turns readable on the socket's wake-ups,
    ///   `nic::sys::EdgeWait`).
    /// - POLLERR and POLLHUP (which `poll` reports whatever was asked) wake the ring too: the
    ///   pass that follows runs the port's own error handling, and `arm` must clear the error
    ///   (e.g. read `SO_ERROR`) or stop asking, or the loop spins.
    fn wake_fd(&self) -> Option<Wake> {
        None
    }

    /// An RX ring whose producers can run its host pass themselves (direct delivery, see
    /// [`crate::port::delivery`]): the sync loop lends the ring its pass state while it runs and
    /// syncs through it. `None` (the default): the loop alone runs the ring's passes.
    fn direct_rx(&self) -> Option<Arc<dyn DirectRx>> {
        None
    }
}

/// An RX ring that runs its own host passes while a sync loop lends it the pass state: the
/// loop's side of direct delivery (implemented by [`crate::port::delivery::DeliveryRing`]).
pub trait DirectRx: Send + Sync {
    /// Takes the ring's pass state: from now on [`Self::host_pass`] runs passes, whoever calls
    /// it. Not on the data path: may wait for a pass in progress.
    fn lend(&self, state: PassState);

    /// Gives the pass state back (the loop stops); later [`Self::host_pass`] calls do nothing.
    /// Waits for a pass in progress.
    fn take_back(&self) -> Option<PassState>;

    /// Runs the ring's host pass (`busy`: the protocol's busy-wait mode) if the state is lent,
    /// here or, when another thread is running one, through that thread before it lets go.
    /// Never blocks. Returns what the passes run here did; `None` when none ran here.
    fn host_pass(&self, busy: bool) -> Option<PassDone>;

    /// A restarted daemon's ring takes a resumed guest's positions: released up to `hwcur`,
    /// everything up to `hwtail` in the guest's hands.
    fn adopt(&self, hwcur: u32, hwtail: u32);
}

/// What a sync loop polls on the port's behalf ([`RingSync::wake_fd`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wake {
    /// The descriptor.
    pub fd: std::os::fd::RawFd,
    /// The `poll(2)` events that wake the ring (`POLLIN`, `POLLOUT`).
    pub events: i16,
}

impl Wake {
    /// Wake when `fd` is readable.
    pub fn readable(fd: std::os::fd::RawFd) -> Self {
        Self {
            fd,
            events: libc::POLLIN,
        }
    }

    /// Wake when `fd` is writable.
    pub fn writable(fd: std::os::fd::RawFd) -> Self {
        Self {
            fd,
            events: libc::POLLOUT,
        }
    }
}

/// Counters of one ring. Written by whoever runs its sync (one at a time); read by anyone.
#[derive(Debug, Default)]
pub struct RingStats {
    /// Packets moved (TX: sent or dropped by the port; RX: received).
    pub packets: AtomicU64,
    /// Bytes moved: counted where the frames are handled (TX rings, and RX rings of NIC ports;
    /// the RX rings of pipes and VALE only move indexes, their bytes are the sender's).
    pub bytes: AtomicU64,
    /// Packets dropped for lack of room at a destination.
    pub drops: AtomicU64,
    /// Slots refused for a bad buffer index or length.
    pub bad_slots: AtomicU64,
    /// Ring resets for bad head/cur values.
    pub resets: AtomicU64,
    /// VALE: frames refused for a source address the port does not own (`port::mactable`).
    pub src_refused: AtomicU64,
    /// VALE: frames for a port the ring's table does not have (added since its last sync, or
    /// just removed).
    pub no_route: AtomicU64,
    /// Syncs of the port that moved the ring (hwcur or hwtail).
    pub batches: AtomicU64,
    /// Kicks received from the frontend (reads of the kick eventfd that found one).
    pub kicks: AtomicU64,
    /// Interrupts raised to the frontend.
    pub irqs_sent: AtomicU64,
    /// Passes that completed or delivered slots while the frontend asked for no interrupt.
    pub irqs_suppressed: AtomicU64,
    /// The ring's capture point (set once, when the port is built; see [`crate::capture`]).
    pub tap: std::sync::OnceLock<Arc<crate::capture::ring::RingTap>>,
}

impl RingStats {
    /// Adds `n` to a counter (single writer, so a plain load/store pair suffices).
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        if n != 0 {
            counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
        }
    }

    /// Adds a batch's counts, once per batch.
    #[inline]
    pub fn add_batch(&self, c: &BatchCounts) {
        Self::add(&self.packets, c.packets);
        Self::add(&self.bytes, c.bytes);
        Self::add(&self.drops, c.drops);
        Self::add(&self.bad_slots, c.bad_slots);
        Self::add(&self.src_refused, c.src_refused);
        Self::add(&self.no_route, c.no_route);
    }
}

/// What one sync did, counted on the stack and added to the ring's [`RingStats`] once at its end.
#[derive(Clone, Copy, Debug, Default)]
pub struct BatchCounts {
    /// See [`RingStats::packets`].
    pub packets: u64,
    /// See [`RingStats::bytes`].
    pub bytes: u64,
    /// See [`RingStats::drops`].
    pub drops: u64,
    /// See [`RingStats::bad_slots`].
    pub bad_slots: u64,
    /// See [`RingStats::src_refused`].
    pub src_refused: u64,
    /// See [`RingStats::no_route`].
    pub no_route: u64,
}

impl BatchCounts {
    /// One frame of `len` bytes moved.
    #[inline]
    pub fn moved(&mut self, len: usize) {
        self.packets += 1;
        self.bytes += len as u64;
    }
}

/// The skeleton of a TX sync, shared by every port kind: the guest's pending slots
/// `[hwcur, rhead)` taken in order, each either handled (sent, dropped or refused: the kind
/// counts which in [`Self::counts`]) or left, with the rest, for a later sync; then hwcur moved
/// past what was handled, those slots completed at once (the kinds copy or swap a frame before
/// they let its slot go), and the counters flushed once.
///
/// ```text
/// let mut b = TxBatch::new(k);
/// while let Some(j) = b.slot() {
///     // handle slot j, or `break` to leave it and the rest pending
///     b.next();
/// }
/// b.finish(k, &stats);
/// ```
#[derive(Debug)]
pub struct TxBatch {
    j: u32,
    head: u32,
    n: u32,
    /// What the batch did so far.
    pub counts: BatchCounts,
}

impl TxBatch {
    /// The batch of the slots the guest has published and the port not taken yet.
    #[inline]
    pub fn new(k: &HostKring) -> Self {
        Self {
            j: k.hwcur,
            head: k.rhead,
            n: k.num_slots,
            counts: BatchCounts::default(),
        }
    }

    /// The next slot to handle; `None` when every pending slot has been.
    #[inline]
    pub fn slot(&self) -> Option<u32> {
        (self.j != self.head).then_some(self.j)
    }

    /// The slot from [`Self::slot`] is handled: go on to the next.
    #[inline]
    pub fn next(&mut self) {
        debug_assert_ne!(self.j, self.head, "past the guest's head");
        self.j = ring_add(self.j, 1, self.n);
    }

    /// The slots from [`Self::slot`] on, as far as the ring's end: at most `n` of them, the
    /// pending ones only. Returns the first and how many (0 when none is pending); the caller
    /// handles them and moves on with [`Self::advance`].
    #[inline]
    pub fn run(&self, n: u32) -> (u32, u32) {
        (self.j, n.min(self.pending()).min(self.n - self.j))
    }

    /// `n` slots (from [`Self::run`]) are handled: go on past them.
    #[inline]
    pub fn advance(&mut self, n: u32) {
        debug_assert!(n <= self.pending(), "past the guest's head");
        self.j = ring_add(self.j, n, self.n);
    }

    /// Slots still pending.
    #[inline]
    pub fn pending(&self) -> u32 {
        ring_dist(self.j, self.head, self.n)
    }

    /// Ends the batch: hwcur past the handled slots, all of them complete (hwtail just behind
    /// hwcur), and the counters added to `stats`.
    #[inline]
    pub fn finish(self, k: &mut HostKring, stats: &RingStats) {
        k.hwcur = self.j;
        k.hwtail = ring_prev(self.j, self.n);
        stats.add_batch(&self.counts);
    }
}

/// One ring of a port while no frontend runs it: its host kring (kept across frontend
/// connections), the port's sync for it, the eventfd the port signals, and its counters.
pub struct RingWorker {
    /// Ring number (TX rings first, then RX rings): also the vhost-user queue index.
    pub index: u32,
    /// TX or RX.
    pub is_tx: bool,
    /// The host kring.
    pub kring: HostKring,
    /// The port kind's sync.
    pub sync: Box<dyn RingSync>,
    /// Signalled by the port when this ring can make progress (after [`RingSync::arm`]).
    pub notify: Arc<EventFd>,
    /// Counters.
    pub stats: Arc<RingStats>,
}

/// What a host pass over one ring works on besides the port's sync, while a frontend runs the
/// ring: owned by the ring's sync loop, or lent by it to the ring ([`DirectRx`]).
pub struct PassState {
    /// The host kring (the worker's, for as long as the loop runs).
    pub kring: HostKring,
    /// Guest-to-host CSB entry.
    pub atok: Atok,
    /// Host-to-guest CSB entry.
    pub ktoa: Ktoa,
    /// Interrupt eventfd, if the frontend gave one.
    pub call: Option<File>,
    /// Capture and the pass counters ([`RingObs::new`] with the ring's counters).
    pub obs: RingObs,
}

/// What the host passes run by one call did.
#[derive(Clone, Copy, Debug)]
pub struct PassDone {
    /// Why the last one stopped.
    pub stop: HostStop,
    /// Whether any of them moved the ring (hwcur, hwtail or the guest's head).
    pub moved: bool,
}

impl PassState {
    /// One host pass of the protocol ([`HostKring::tx_pass`] or [`HostKring::rx_pass`]) with
    /// `port`'s sync, raising the guest's interrupt through the call eventfd when it asks.
    pub fn run(&mut self, port: &mut dyn PortSync, is_tx: bool, busy: bool) -> PassDone {
        let Self {
            kring,
            atok,
            ktoa,
            call,
            obs,
        } = self;
        // Never blocks, whatever the frontend did to the descriptor, and on whichever thread
        // (another port's, with direct delivery): a saturated counter drops the interrupt (one
        // is pending anyway), and a write that had to be cut (a frontend that made its counter
        // blocking and full) means this descriptor is not signalled again while these rings
        // run, so a hostile frontend costs another port's thread one cut at most.
        let mut sent = 0u64;
        let mut irq = || {
            sent += 1;
            if let Some(c) = call.as_ref() {
                if let Ok(crate::sys::Raised::Cut) = crate::sys::eventfd_signal_nowait(c) {
                    *call = None;
                }
            }
        };
        let before = (kring.hwcur, kring.hwtail, kring.rhead);
        let mut port = ObservedSync::new(port, obs, is_tx);
        let stop = if is_tx {
            kring.tx_pass(atok, ktoa, &mut port, busy, &mut irq)
        } else {
            kring.rx_pass(atok, ktoa, &mut port, busy, &mut irq)
        };
        obs.pass_done(sent, kring.hwtail != before.1, atok.appl_need_kick());
        PassDone {
            stop,
            moved: (kring.hwcur, kring.hwtail, kring.rhead) != before,
        }
    }
}

/// Keeps what the CSB entries point into (the frontend's guest memory) mapped for as long as the
/// rings run.
pub type Keepalive = Arc<dyn Send + Sync>;

/// What a frontend gives for running a port's rings, whichever loop runs them (ours or the
/// kernel's): its CSB arrays (windows of its memory, checked to hold an entry per ring), one kick
/// and one optional call eventfd per ring (TX rings first), and what keeps that memory mapped
/// while the rings run.
pub struct FrontendRings {
    /// Guest-to-host CSB array.
    pub atok: SharedMem,
    /// Host-to-guest CSB array.
    pub ktoa: SharedMem,
    /// Kick eventfds.
    pub kicks: Vec<File>,
    /// Interrupt eventfds.
    pub calls: Vec<Option<File>>,
    /// Keeps the guest memory mapped.
    pub keep: Keepalive,
}

/// Views CSB entry `ring` of both arrays.
pub fn csb_entries(atok: &SharedMem, ktoa: &SharedMem, ring: u32) -> Option<(Atok, Ktoa)> {
    Some((Atok::new(atok, ring)?, Ktoa::new(ktoa, ring)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_completes_what_it_handled_and_counts_once() {
        let mut k = HostKring::new_tx(8);
        k.hwcur = 6;
        k.rhead = 2;
        let stats = RingStats::default();
        let mut b = TxBatch::new(&k);
        assert_eq!(b.pending(), 4);
        let mut seen = Vec::new();
        while let Some(j) = b.slot() {
            if j == 1 {
                break; // left for later, with the rest
            }
            seen.push(j);
            b.counts.moved(60);
            b.next();
        }
        b.finish(&mut k, &stats);
        assert_eq!(seen, [6, 7, 0]);
        assert_eq!((k.hwcur, k.hwtail), (1, 0));
        assert_eq!(stats.packets.load(Ordering::Relaxed), 3);
        assert_eq!(stats.bytes.load(Ordering::Relaxed), 180);
    }
}

//! Rings whose guest is a daemon thread: the thread takes the rings' [`RingWorker`]s apart (the
//! host kring goes into the ring's [`PassState`], its one owner while the thread runs; the port
//! kind's [`RingSync`] stays with the thread), and a CSB in the daemon's own memory stands where
//! a ptnet guest's would be. The thread is both sides of it: the protocol's guest side
//! ([`GuestKring`]) over one view of a ring's entries, the host passes, run inline, over another.

use crate::port::ring::{PassDone, PassState, RingObs, RingSync};
use crate::port::{RingStats, RingWorker};
use ptnet_protocol::csb::{Atok, Ktoa, ENTRY_SIZE};
use ptnet_protocol::shmem::OwnedMem;
use ptnet_protocol::sync::{GuestKring, HostKring};
use std::fs::File;
use std::sync::Arc;
use vmm_sys_util::eventfd::EventFd;

/// A private CSB for a number of rings: ring `i`'s guest-to-host entry is entry `2 i`, its
/// host-to-guest entry `2 i + 1`. Kept for as long as the views of its entries are used.
pub struct PrivateCsb {
    mem: OwnedMem,
    rings: u32,
}

impl PrivateCsb {
    /// Zeroed entries for `rings` rings.
    pub fn new(rings: u32) -> Self {
        Self {
            mem: OwnedMem::new(2 * rings as usize * ENTRY_SIZE),
            rings,
        }
    }

    /// Views of ring `ring`'s entries (a new pair on every call: each side takes its own).
    pub fn entries(&self, ring: u32) -> (Atok, Ktoa) {
        assert!(ring < self.rings, "ring {ring} of a CSB for {}", self.rings);
        let m = self.mem.mem();
        (
            Atok::new(&m, 2 * ring).expect("an atok entry"),
            Ktoa::new(&m, 2 * ring + 1).expect("a ktoa entry"),
        )
    }

    /// Starts worker `w`'s ring on entries `ring` (`call`: the interrupt its passes raise), and
    /// attaches the guest side to it.
    pub fn start(&self, w: RingWorker, ring: u32, call: Option<File>) -> (InlineRing, GuestEnd) {
        let host = InlineRing::start(w, self.entries(ring), call);
        let (atok, ktoa) = self.entries(ring);
        let slots = host.kring().expect("not lent yet").num_slots;
        let kring = GuestKring::attach(slots, &atok, &ktoa);
        (host, GuestEnd { atok, ktoa, kring })
    }
}

/// The guest side of one ring of a [`PrivateCsb`]: its own views of the entries, and its kring.
pub struct GuestEnd {
    /// Guest-to-host entry.
    pub atok: Atok,
    /// Host-to-guest entry.
    pub ktoa: Ktoa,
    /// The guest's ring state, attached after the host started the ring.
    pub kring: GuestKring,
}

/// A ring while a daemon thread is its guest: its worker taken apart, the host kring in the
/// pass state (its one copy until [`Self::into_worker`]), as in the ptnet sync loop.
pub struct InlineRing {
    /// Ring number, as in the worker.
    pub index: u32,
    /// TX or RX.
    pub is_tx: bool,
    /// The port kind's sync.
    pub sync: Box<dyn RingSync>,
    /// Signalled by the port when the ring can make progress.
    pub notify: Arc<EventFd>,
    /// Counters.
    pub stats: Arc<RingStats>,
    /// The thread's, or `None` while lent to the ring (direct delivery).
    pub state: Option<PassState>,
}

impl InlineRing {
    /// Starts the worker's ring on CSB entries `host` (`call`: the interrupt its passes raise).
    pub fn start(w: RingWorker, host: (Atok, Ktoa), call: Option<File>) -> Self {
        let RingWorker {
            index,
            is_tx,
            mut kring,
            sync,
            notify,
            stats,
        } = w;
        let (atok, ktoa) = host;
        kring.start(&atok, &ktoa);
        let obs = RingObs::new(&stats);
        let _ = notify.read();
        Self {
            index,
            is_tx,
            sync,
            notify,
            stats,
            state: Some(PassState {
                kring,
                atok,
                ktoa,
                call,
                obs,
            }),
        }
    }

    /// The host kring, unless it is lent.
    pub fn kring(&self) -> Option<&HostKring> {
        self.state.as_ref().map(|s| &s.kring)
    }

    /// One host pass here (`None` while the state is lent).
    pub fn pass(&mut self, busy: bool) -> Option<PassDone> {
        let Self {
            state, sync, is_tx, ..
        } = self;
        state.as_mut().map(|s| s.run(sync.as_mut(), *is_tx, busy))
    }

    /// [`RingSync::arm`] (false while the state is lent: the ring's producers run its passes).
    pub fn arm(&mut self) -> bool {
        let Self { state, sync, .. } = self;
        state.as_ref().is_some_and(|s| sync.arm(&s.kring))
    }

    /// The worker again, with the ring's state (which must be back).
    pub fn into_worker(self) -> RingWorker {
        RingWorker {
            index: self.index,
            is_tx: self.is_tx,
            kring: self.state.expect("the pass state is back").kring,
            sync: self.sync,
            notify: self.notify,
            stats: self.stats,
        }
    }
}

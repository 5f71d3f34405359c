//! Per-ring sync glue: the application's indexes of one ring, and txsync/rxsync over the
//! protocol's [`GuestKring`] with a kick when the host asked for one.

use crate::transport::Transport;
use crate::Error;
use ptnet_protocol::csb::{Atok, Ktoa};
use ptnet_protocol::netmap::{ring_add, ring_dist, RingView};
use ptnet_protocol::sync::GuestKring;

/// Per-ring state: the view of the netmap ring, the CSB entries, the guest sync state and the
/// application's indexes.
pub(super) struct RingState {
    pub(super) view: RingView,
    pub(super) atok: Atok,
    pub(super) ktoa: Ktoa,
    pub(super) kring: GuestKring,
    /// Global ring number (TX rings first): the kick and interrupt index.
    pub(super) index: u32,
    pub(super) head: u32,
    pub(super) cur: u32,
    pub(super) tail: u32,
}

impl RingState {
    /// A ring just attached: the application's indexes start where the host's are.
    pub(super) fn attach(view: RingView, atok: Atok, ktoa: Ktoa, index: u32) -> Self {
        let kring = GuestKring::attach(view.num_slots(), &atok, &ktoa);
        let r = RingState {
            view,
            atok,
            ktoa,
            kring,
            index,
            head: kring.rhead,
            cur: kring.rcur,
            tail: kring.hwtail,
        };
        r.store_indexes();
        r
    }

    /// Publishes head/cur/tail into the netmap ring header (for anyone inspecting the memory).
    fn store_indexes(&self) {
        self.view.set_head(self.head);
        self.view.set_cur(self.cur);
        self.view.set_tail(self.tail);
    }

    pub(super) fn txsync(&mut self, t: &dyn Transport, flags: u32) -> Result<(), Error> {
        self.sync_with(t, flags, GuestKring::txsync)
    }

    pub(super) fn rxsync(&mut self, t: &dyn Transport, flags: u32) -> Result<(), Error> {
        self.sync_with(t, flags, GuestKring::rxsync)
    }

    /// The body both syncs share: validate the application's indexes, run the protocol's sync,
    /// kick when it says so, and take the ring's new tail.
    #[inline]
    fn sync_with(
        &mut self,
        t: &dyn Transport,
        flags: u32,
        sync: fn(&mut GuestKring, &Atok, &Ktoa, u32) -> bool,
    ) -> Result<(), Error> {
        self.kring
            .prologue(self.head, self.cur)
            .map_err(|source| Error::BadIndexes {
                ring: self.index,
                source,
            })?;
        let resets = self.kring.host_resets;
        if sync(&mut self.kring, &self.atok, &self.ktoa, flags) {
            t.kick(self.index);
        }
        if self.kring.host_resets != resets {
            // The host started over (a restarted daemon): continue from its state.
            self.head = self.kring.rhead;
            self.cur = self.kring.rcur;
        }
        self.tail = self.kring.hwtail;
        self.store_indexes();
        Ok(())
    }

    /// Slots the application owns after cur (free TX slots, received RX packets).
    #[inline]
    pub(super) fn avail(&self) -> u32 {
        ring_dist(self.cur, self.tail, self.view.num_slots())
    }

    /// The application is done with `n` more slots from `cur` (at most [`Self::avail`]): moves
    /// `cur` and `head` past them.
    #[inline]
    pub(super) fn advance(&mut self, n: u32) {
        self.cur = ring_add(self.cur, n, self.view.num_slots());
        self.head = self.cur;
    }
}

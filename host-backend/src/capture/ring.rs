//! The capture point of one ring and what a host pass counts besides packets: [`RingObs`] rides
//! in the ring's [`PassState`](crate::port::ring::PassState) and wraps the port's sync for each
//! pass ([`ObservedSync`]).
//!
//! Where frames are taken:
//!
//! * **TX** (the frontend transmitted): before each of the port's syncs, the slots the frontend
//!   published and the capture has not seen yet (from a captured-up-to index to the guest's
//!   head), read before the sync because a pipe or VALE port swaps or reuses those buffers.
//!   Each frame is captured once, however many syncs it stays pending for.
//! * **RX** (delivered to the frontend): after each sync, the slots between the old and the new
//!   hwtail.
//!
//! This is the same ring for both frontends: the ptnet guest's netmap rings, and the netmap rings
//! a virtio-net queue pair copies its chains into and its frames out of. A virtio-net header
//! the port carries is not captured (frames start at their Ethernet header).
//!
//! Cost while nobody captures: one relaxed load per sync. While a capture runs: one `try_lock`
//! per sync (never waits), and copies into the tap's preallocated buffer.

use super::{Direction, Tap};
use crate::port::ring::RingStats;
use ptnet_protocol::netmap::{ring_add, ring_between, ring_dist, BufPool, RingView};
use ptnet_protocol::sync::{HostKring, PortSync};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// One ring's view of its port's [`Tap`]: where its frames are.
pub struct RingTap {
    tap: Arc<Tap>,
    view: RingView,
    bufs: BufPool,
    /// The port's virtio-net header length, skipped in each frame.
    hdr: Option<Arc<AtomicU8>>,
    dir: Direction,
}

impl std::fmt::Debug for RingTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingTap").field("dir", &self.dir).finish()
    }
}

impl RingTap {
    /// Ring `view` (a TX ring when `is_tx`) of a port whose buffers are `bufs`, feeding `tap`.
    pub fn new(
        tap: Arc<Tap>,
        view: RingView,
        bufs: BufPool,
        hdr: Option<Arc<AtomicU8>>,
        is_tx: bool,
    ) -> Self {
        let dir = if is_tx {
            Direction::FromFrontend
        } else {
            Direction::ToFrontend
        };
        Self {
            tap,
            view,
            bufs,
            hdr,
            dir,
        }
    }

    /// Copies slots `[from, to)` into the capture (missed, counted, when the tap is busy).
    fn capture(&self, from: u32, to: u32) {
        let n = self.view.num_slots();
        if from >= n || to >= n || from == to {
            return;
        }
        let Some(mut b) = self.tap.batch(u64::from(ring_dist(from, to, n))) else {
            return;
        };
        let hdr = self
            .hdr
            .as_ref()
            .map_or(0, |h| usize::from(h.load(Ordering::Relaxed)));
        let size = self.bufs.buf_size() as usize;
        let mut j = from;
        while j != to {
            let (idx, len) = (self.view.buf_idx(j), usize::from(self.view.len(j)));
            // A bad slot (the port refuses it and counts it) is not captured.
            if self.bufs.valid(idx) && len <= size && len >= hdr {
                b.push(self.dir, len - hdr, |dst| self.bufs.read(idx, hdr, dst));
            }
            j = ring_add(j, 1, n);
        }
    }
}

/// What a ring's host passes keep for capture and counting (in its pass state: one owner).
#[derive(Default)]
pub struct RingObs {
    stats: Option<Arc<RingStats>>,
    tap: Option<Arc<RingTap>>,
    /// TX: the first slot not captured yet, while `capturing`.
    next: u32,
    capturing: bool,
}

impl RingObs {
    /// The observer of the ring whose counters are `stats` (and whose tap they hold, if any).
    pub fn new(stats: &Arc<RingStats>) -> Self {
        Self {
            tap: stats.tap.get().cloned(),
            stats: Some(stats.clone()),
            next: 0,
            capturing: false,
        }
    }

    /// One pass ended: `sent` interrupts raised; `owed` when it completed or delivered slots,
    /// `wanted` whether the guest asked for interrupts at its end.
    pub fn pass_done(&self, sent: u64, owed: bool, wanted: bool) {
        if let Some(s) = &self.stats {
            RingStats::add(&s.irqs_sent, sent);
            if owed && sent == 0 && !wanted {
                RingStats::add(&s.irqs_suppressed, 1);
            }
        }
    }
}

/// The port's sync seen through a ring's [`RingObs`]: counts the syncs that moved the ring
/// (batches) and feeds the capture.
pub struct ObservedSync<'a> {
    inner: &'a mut dyn PortSync,
    obs: &'a mut RingObs,
    is_tx: bool,
}

impl<'a> ObservedSync<'a> {
    /// Wraps `inner`, the sync of a TX ring when `is_tx`.
    pub fn new(inner: &'a mut dyn PortSync, obs: &'a mut RingObs, is_tx: bool) -> Self {
        Self { inner, obs, is_tx }
    }
}

impl PortSync for ObservedSync<'_> {
    fn sync(&mut self, k: &mut HostKring, flags: u32) {
        let tap = self.obs.tap.as_deref().filter(|t| t.tap.is_active());
        if tap.is_none() {
            self.obs.capturing = false;
        }
        if let (Some(t), true) = (tap, self.is_tx) {
            let n = k.num_slots;
            let fresh = !self.obs.capturing
                || self.obs.next >= n
                || !ring_between(k.hwcur, self.obs.next, k.rhead, n);
            let from = if fresh { k.hwcur } else { self.obs.next };
            t.capture(from, k.rhead);
            self.obs.next = k.rhead;
            self.obs.capturing = true;
        }
        let before = (k.hwcur, k.hwtail);
        self.inner.sync(k, flags);
        if (k.hwcur, k.hwtail) != before {
            if let Some(s) = &self.obs.stats {
                RingStats::add(&s.batches, 1);
            }
            if let (Some(t), false) = (tap, self.is_tx) {
                t.capture(before.1, k.hwtail);
            }
        }
    }

    fn wants_released_slots(&self) -> bool {
        self.inner.wants_released_slots()
    }
}

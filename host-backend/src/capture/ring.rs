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
            j = ring_add(j, 1, n);
            if self.bufs.valid(idx)
                && len <= size
                && len >= hdr
                && !b.push(self.dir, len - hdr, |dst| self.bufs.read(idx, hdr, dst))
            {
                // Full (the rest missed, counted in one add), or all frames wanted taken.
                b.miss(u64::from(ring_dist(j, to, n)));
                return;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::for_each_record;
    use crate::portspec::PortSpec;
    use crate::served::{build_ports, NetmapImpl};

    /// A port sync that takes (TX) or delivers (RX) at most `.0` slots a call.
    struct Step(u32, bool);

    impl PortSync for Step {
        fn sync(&mut self, k: &mut HostKring, _flags: u32) {
            let n = k.num_slots;
            if self.1 {
                let take = ring_dist(k.hwcur, k.rhead, n).min(self.0);
                k.hwcur = ring_add(k.hwcur, take, n);
                k.hwtail = ring_add(k.hwcur, n - 1, n);
            } else {
                k.hwtail = ring_add(k.hwtail, self.0, n);
            }
        }
    }

    fn captured(tap: &Tap) -> Vec<(Direction, Vec<u8>)> {
        let mut buf = Vec::new();
        tap.drain(&mut buf);
        let mut v = Vec::new();
        for_each_record(&buf, |r| v.push((r.dir, r.data.to_vec())));
        v
    }

    #[test]
    fn tx_slots_are_captured_once_before_the_sync_and_rx_slots_after() {
        let specs = [PortSpec::parse("netmap:rt{1").unwrap()];
        let port = build_ports(&specs, NetmapImpl::User, &Default::default())
            .unwrap()
            .remove(0);
        let (view, bufs) = (
            port.ring_view(0).unwrap(),
            port.threads_memory().unwrap().bufs().clone(),
        );
        let n = view.num_slots();
        let put = |j: u32| {
            let f: Vec<u8> = (0..60 + j as usize)
                .map(|i| (i as u8) ^ (j as u8))
                .collect();
            assert!(bufs.write(view.buf_idx(j), 0, &f));
            view.set_len(j, f.len() as u16);
            f
        };
        let tap = Arc::new(Tap::default());
        let stats = Arc::new(RingStats::default());
        let _ = stats.tap.set(Arc::new(RingTap::new(
            tap.clone(),
            view.clone(),
            bufs.clone(),
            None,
            true,
        )));
        let mut obs = RingObs::new(&stats);
        let mut k = HostKring::new_tx(n);
        let mut step = Step(3, true);
        tap.start(None, 2048).unwrap();
        // 5 published; the port takes 3, then 2; 4 more published meanwhile.
        let mut sent: Vec<Vec<u8>> = (0..5).map(put).collect();
        k.rhead = 5;
        ObservedSync::new(&mut step, &mut obs, true).sync(&mut k, 0);
        assert_eq!(k.hwcur, 3);
        sent.extend((5..9).map(put));
        k.rhead = 9;
        ObservedSync::new(&mut step, &mut obs, true).sync(&mut k, 0);
        ObservedSync::new(&mut step, &mut obs, true).sync(&mut k, 0);
        ObservedSync::new(&mut step, &mut obs, true).sync(&mut k, 0);
        assert_eq!(k.hwcur, 9);
        let got = captured(&tap);
        assert_eq!(got.len(), 9, "each frame once");
        assert!(got.iter().map(|(_, f)| f).eq(sent.iter()));
        assert!(got.iter().all(|(d, _)| *d == Direction::FromFrontend));
        // A sync that moved nothing is no batch.
        ObservedSync::new(&mut step, &mut obs, true).sync(&mut k, 0);
        assert_eq!(stats.batches.load(Ordering::Relaxed), 3);
        assert!(captured(&tap).is_empty());

        // RX (the same ring seen as RX, for the test): what lies between the old and new hwtail.
        let rx_stats = Arc::new(RingStats::default());
        let _ = rx_stats.tap.set(Arc::new(RingTap::new(
            tap.clone(),
            view.clone(),
            bufs.clone(),
            None,
            false,
        )));
        let mut obs = RingObs::new(&rx_stats);
        let mut k = HostKring::new_rx(n);
        let want: Vec<Vec<u8>> = (0..8).map(put).collect();
        let mut step = Step(4, false);
        ObservedSync::new(&mut step, &mut obs, false).sync(&mut k, 0);
        ObservedSync::new(&mut step, &mut obs, false).sync(&mut k, 0);
        let got = captured(&tap);
        assert!(got.iter().map(|(_, f)| f).eq(want.iter()));
        assert!(got.iter().all(|(d, _)| *d == Direction::ToFrontend));
        // No capture running: nothing taken, nothing counted missed.
        let mut rest = Vec::new();
        tap.stop(&mut rest);
        ObservedSync::new(&mut step, &mut obs, false).sync(&mut k, 0);
        assert_eq!(tap.counts().missed, 0);
        assert_eq!(rx_stats.batches.load(Ordering::Relaxed), 3);
    }
}

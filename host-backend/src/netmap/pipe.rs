//! netmap pipes: two ports sharing one memory; what one end transmits on TX ring `i` arrives on
//! the other end's RX ring `i`, with no copy: the TX slot's buffer and the free RX slot's buffer
//! swap indexes. Lossless: when the receiver is full, the sender waits (backpressure).
//!
//! Direct delivery: after it commits, the TX ring runs the peer RX ring's host pass itself
//! ([`RxRing::host_pass`]), which publishes the packets to the peer guest and interrupts it; the
//! peer's RX thread stays asleep. Short of room, it runs one first to take in the slots the peer
//! guest released without a kick.

use super::rxring::RxRing;
use crate::port::{RingStats, RingSync};
use ptnet_protocol::netmap::{ring_add, ring_dist, slot_flags, BufPool, RingView};
use ptnet_protocol::sync::{ring_prev, HostKring, PortSync};
use std::sync::Arc;

/// TX ring of one pipe end, feeding the peer's RX ring.
pub struct PipeTx {
    /// This end's TX ring.
    pub tx: RingView,
    /// The peer's RX ring.
    pub peer: Arc<RxRing>,
    /// The shared buffer pool.
    pub bufs: BufPool,
    /// Counters.
    pub stats: Arc<RingStats>,
}

impl PortSync for PipeTx {
    fn sync(&mut self, k: &mut HostKring, _flags: u32) {
        let n = k.num_slots;
        let pending = ring_dist(k.hwcur, k.rhead, n);
        if pending > self.peer.space() {
            // The peer guest may have released slots no pass has taken in yet (with direct
            // delivery it kicks for them only while we wait): take them in. Once per sync, only
            // when short of room.
            self.peer.host_pass(false);
        }
        if pending > 0 {
            if let Some(res) = self.peer.reserve(pending) {
                let (rx, buf_size) = (&self.peer.ring, self.bufs.buf_size());
                let (mut j, mut d) = (k.hwcur, res.start);
                let (mut bytes, mut bad) = (0u64, 0u64);
                for _ in 0..res.n {
                    let (ai, len, bi) = (self.tx.buf_idx(j), self.tx.len(j), rx.buf_idx(d));
                    if self.bufs.valid(ai) && self.bufs.valid(bi) && u32::from(len) <= buf_size {
                        self.tx.set_buf_idx(j, bi);
                        self.tx.set_flags(j, slot_flags::BUF_CHANGED);
                        rx.set_buf_idx(d, ai);
                        rx.set_len(d, len);
                        rx.set_flags(d, slot_flags::BUF_CHANGED);
                        bytes += u64::from(len);
                    } else {
                        // Never hand a bad index to the peer: it gets an empty slot instead.
                        rx.set_len(d, 0);
                        rx.set_flags(d, 0);
                        bad += 1;
                    }
                    j = ring_add(j, 1, n);
                    d = ring_add(d, 1, rx.num_slots());
                }
                self.peer.commit(res);
                // Direct delivery: publish to the peer guest from here (a no-op when no guest
                // runs the peer ring: its own thread was notified by the commit).
                self.peer.host_pass(false);
                k.hwcur = j;
                RingStats::add(&self.stats.packets, u64::from(res.n) - bad);
                RingStats::add(&self.stats.bytes, bytes);
                RingStats::add(&self.stats.bad_slots, bad);
            }
        }
        // Swapped slots are complete at once.
        k.hwtail = ring_prev(k.hwcur, n);
    }
}

impl RingSync for PipeTx {
    fn arm(&mut self, k: &HostKring) -> bool {
        k.hwcur != k.rhead && self.peer.arm_producer()
    }
}

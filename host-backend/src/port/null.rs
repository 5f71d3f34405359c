//! The null port: transmitted packets are counted and discarded at once; nothing is ever received.

use crate::port::{RingStats, RingSync};
use ptnet_protocol::netmap::{ring_add, RingView};
use ptnet_protocol::sync::{ring_prev, HostKring, PortSync};
use std::sync::Arc;

/// A TX ring that completes everything.
pub struct NullTx {
    /// The ring (to count bytes).
    pub tx: RingView,
    /// Counters.
    pub stats: Arc<RingStats>,
}

impl PortSync for NullTx {
    fn sync(&mut self, k: &mut HostKring, _flags: u32) {
        let (mut packets, mut bytes) = (0u64, 0u64);
        let mut j = k.hwcur;
        while j != k.rhead {
            bytes += u64::from(self.tx.len(j));
            packets += 1;
            j = ring_add(j, 1, k.num_slots);
        }
        k.hwcur = k.rhead;
        k.hwtail = ring_prev(k.hwcur, k.num_slots);
        RingStats::add(&self.stats.packets, packets);
        RingStats::add(&self.stats.bytes, bytes);
    }
}

impl RingSync for NullTx {
    fn arm(&mut self, _k: &HostKring) -> bool {
        false
    }
}

/// An RX ring that never receives; it only takes back released slots.
pub struct NullRx;

impl PortSync for NullRx {
    fn sync(&mut self, k: &mut HostKring, _flags: u32) {
        k.hwcur = k.rhead;
    }
}

impl RingSync for NullRx {
    fn arm(&mut self, _k: &HostKring) -> bool {
        false
    }
}

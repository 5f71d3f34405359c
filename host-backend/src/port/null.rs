//! The null port: transmitted packets are counted and discarded at once; nothing is ever received.

use crate::port::ring::{RingStats, RingSync, TxBatch};
use ptnet_protocol::netmap::RingView;
use ptnet_protocol::sync::{HostKring, PortSync};
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
        let mut b = TxBatch::new(k);
        while let Some(j) = b.slot() {
            b.counts.moved(usize::from(self.tx.len(j)));
            b.next();
        }
        b.finish(k, &self.stats);
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

//! The VALE learning switch: ports with private memories; packets are copied from the sender's
//! buffers into free slots of the destination's RX ring, found by learning source MACs. Unknown
//! and multicast destinations are flooded. A full destination drops (and counts) the packet: a
//! slow receiver never blocks a sender.

use super::rxring::RxRing;
use crate::port::{RingStats, RingSync};
use ptnet_protocol::netmap::{ring_add, slot_flags, BufPool, RingView};
use ptnet_protocol::sync::{ring_prev, HostKring, PortSync};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Frames shorter than an Ethernet header cannot be switched.
const ETH_HLEN: usize = 14;
const MAC_TABLE_SIZE: usize = 4096;

/// A lock-free MAC learning table: one word per bucket, `mac << 16 | (port + 1)`.
pub struct MacTable {
    buckets: Box<[AtomicU64]>,
}

impl Default for MacTable {
    fn default() -> Self {
        Self {
            buckets: (0..MAC_TABLE_SIZE).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn mac_u64(b: &[u8; 6]) -> u64 {
    u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
}

impl MacTable {
    fn bucket(mac: u64) -> usize {
        ((mac.wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 52) as usize % MAC_TABLE_SIZE
    }

    /// The port `mac` was last seen on.
    pub fn lookup(&self, mac: u64) -> Option<usize> {
        let e = self.buckets[Self::bucket(mac)].load(Ordering::Relaxed);
        (e >> 16 == mac && e & 0xffff != 0).then(|| (e & 0xffff) as usize - 1)
    }

    /// Records that `mac` is behind `port`.
    pub fn learn(&self, mac: u64, port: usize) {
        let v = mac << 16 | (port as u64 + 1);
        let b = &self.buckets[Self::bucket(mac)];
        if b.load(Ordering::Relaxed) != v {
            b.store(v, Ordering::Relaxed);
        }
    }
}

/// One port as the switch sees it: where to deliver.
pub struct SwitchPort {
    /// The port's RX rings.
    pub rx: Vec<Arc<RxRing>>,
}

/// A VALE switch.
pub struct Switch {
    /// Name (`vale0`).
    pub name: String,
    /// Ports, by index.
    pub ports: Vec<SwitchPort>,
    /// Learnt MACs.
    pub table: MacTable,
}

/// TX ring `ring_no` of switch port `me`.
pub struct ValeTx {
    /// The switch.
    pub switch: Arc<Switch>,
    /// This port's index.
    pub me: usize,
    /// This ring's number among the port's TX rings.
    pub ring_no: usize,
    /// The ring.
    pub tx: RingView,
    /// This port's buffers.
    pub bufs: BufPool,
    /// Per destination port: slots to deliver this round (capacity preallocated).
    pub lists: Vec<Vec<u32>>,
    /// Counters.
    pub stats: Arc<RingStats>,
}

impl ValeTx {
    /// A TX ring of `num_slots` slots; the per-destination lists are allocated here, once.
    pub fn new(
        switch: Arc<Switch>,
        me: usize,
        ring_no: usize,
        tx: RingView,
        bufs: BufPool,
        stats: Arc<RingStats>,
    ) -> Self {
        let lists = (0..switch.ports.len())
            .map(|_| Vec::with_capacity(tx.num_slots() as usize))
            .collect();
        Self {
            switch,
            me,
            ring_no,
            tx,
            bufs,
            lists,
            stats,
        }
    }

    /// Copies the slots in `self.lists[p]` into port `p`'s RX ring. Returns (delivered, dropped).
    fn deliver(&self, p: usize) -> (u64, u64) {
        let dst = &self.switch.ports[p];
        let rx = &dst.rx[self.ring_no % dst.rx.len()];
        let mut rest = &self.lists[p][..];
        let (mut sent, mut bad) = (0u64, 0u64);
        if rest.len() as u32 > rx.space() {
            // Take in the slots the destination's guest released (direct delivery: it kicks
            // for them only while a producer waits, and VALE senders never wait): a pass.
            rx.host_pass(false);
        }
        while !rest.is_empty() {
            let Some(res) = rx.reserve(rest.len() as u32) else {
                break;
            };
            let mut d = res.start;
            for &j in &rest[..res.n as usize] {
                let (src, len) = (self.tx.buf_idx(j), self.tx.len(j));
                let di = rx.ring.buf_idx(d);
                if rx.bufs.copy_from(di, &self.bufs, src, usize::from(len)) {
                    rx.ring.set_len(d, len);
                    sent += 1;
                } else {
                    // The receiver's own slot was corrupt: it gets an empty slot.
                    rx.ring.set_len(d, 0);
                    bad += 1;
                }
                rx.ring.set_flags(d, 0);
                d = ring_add(d, 1, rx.num_slots());
            }
            rx.commit(res);
            rest = &rest[res.n as usize..];
        }
        if sent + bad > 0 {
            // Direct delivery: publish to the destination's guest from here.
            rx.host_pass(false);
        }
        (sent, rest.len() as u64 + bad)
    }
}

impl PortSync for ValeTx {
    fn sync(&mut self, k: &mut HostKring, _flags: u32) {
        let n = k.num_slots;
        for l in &mut self.lists {
            l.clear();
        }
        let (mut bad, mut bytes, mut packets) = (0u64, 0u64, 0u64);
        let mut j = k.hwcur;
        while j != k.rhead {
            let (idx, len, flags) = (
                self.tx.buf_idx(j),
                usize::from(self.tx.len(j)),
                self.tx.flags(j),
            );
            let mut hdr = [0u8; 12];
            if len < ETH_HLEN
                || len > self.bufs.buf_size() as usize
                || !self.bufs.read(idx, 0, &mut hdr)
            {
                bad += 1;
            } else {
                packets += 1;
                bytes += len as u64;
                let dst = mac_u64(hdr[..6].try_into().expect("6 bytes"));
                let src = mac_u64(hdr[6..].try_into().expect("6 bytes"));
                if hdr[6] & 1 == 0 && flags & slot_flags::NO_LEARN == 0 {
                    self.switch.table.learn(src, self.me);
                }
                let known = if hdr[0] & 1 == 0 {
                    self.switch.table.lookup(dst)
                } else {
                    None
                };
                match known {
                    Some(p) if p != self.me => self.lists[p].push(j),
                    Some(_) => {}
                    None => {
                        for (p, l) in self.lists.iter_mut().enumerate() {
                            if p != self.me {
                                l.push(j);
                            }
                        }
                    }
                }
            }
            j = ring_add(j, 1, n);
        }
        let mut dropped = 0;
        for p in 0..self.lists.len() {
            if !self.lists[p].is_empty() {
                dropped += self.deliver(p).1;
            }
        }
        // Copied or dropped, every slot is complete.
        k.hwcur = k.rhead;
        k.hwtail = ring_prev(k.hwcur, n);
        RingStats::add(&self.stats.packets, packets);
        RingStats::add(&self.stats.bytes, bytes);
        RingStats::add(&self.stats.bad_slots, bad);
        RingStats::add(&self.stats.drops, dropped);
    }
}

impl RingSync for ValeTx {
    fn arm(&mut self, _k: &HostKring) -> bool {
        // A switch port never waits for room: it drops instead.
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_table_learns_and_forgets_nothing_it_should_not() {
        let t = MacTable::default();
        let a = mac_u64(&[2, 0, 0, 0, 0, 1]);
        let b = mac_u64(&[2, 0, 0, 0, 0, 2]);
        assert_eq!(t.lookup(a), None);
        t.learn(a, 0);
        t.learn(b, 3);
        assert_eq!(t.lookup(a), Some(0));
        assert_eq!(t.lookup(b), Some(3));
        t.learn(a, 5);
        assert_eq!(t.lookup(a), Some(5));
    }
}

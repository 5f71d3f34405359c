//! Forwarding between rings ([`TxRing::forward_from`]): the NFV middlebox's inner loop, by copy
//! or by swapping buffer indexes between ports of one memory.

use super::app::{RxRing, TxRing};
use ptnet_protocol::netmap::{ring_add, slot_flags};
use ptnet_protocol::sync::ring_prev;

impl TxRing<'_> {
    /// Moves up to `max` received packets from `rx` (from its `cur`) into this ring's free slots
    /// (from `cur`), in order, advancing `cur` and `head` of both rings; returns what it did.
    /// Call [`TxRing::txsync`] to transmit and [`RxRing::rxsync`] to release the RX slots.
    ///
    /// * [`ForwardMode::Copy`]: each packet is copied into the TX slot's own buffer (one copy,
    ///   any two ports).
    /// * [`ForwardMode::SwapBuffers`]: the RX and TX slots exchange buffer indexes and both get
    ///   `BUF_CHANGED` (no copy). Only for rings of ports in one memory
    ///   ([`Port::shares_memory_with`](crate::Port::shares_memory_with)); across memories the indexes would name other buffers (the
    ///   packets would be garbage, though no memory outside the pools is ever touched).
    ///
    /// A received slot with a bad buffer index or a length over either buffer size is consumed
    /// and counted in `dropped`, with no TX slot used. Allocates nothing.
    #[inline]
    #[must_use = "the packets moved must be counted or the TX ring synced"]
    pub fn forward_from(&mut self, rx: &mut RxRing<'_>, max: u32, mode: ForwardMode) -> Forwarded {
        let (t, r) = (&mut *self.ring, &mut *rx.ring);
        let (tbufs, rbufs) = (self.bufs, rx.bufs);
        let (tn, rn) = (t.view.num_slots(), r.view.num_slots());
        let max_len = tbufs.buf_size().min(rbufs.buf_size());
        let mut out = Forwarded::default();
        let (mut j, mut k) = (t.cur, r.cur);
        let mut budget = max;
        while budget > 0 && j != t.tail && k != r.tail {
            budget -= 1;
            let (ridx, len) = (r.view.buf_idx(k), r.view.len(k));
            let tidx = t.view.buf_idx(j);
            let ok = u32::from(len) <= max_len
                && match mode {
                    ForwardMode::Copy => tbufs.copy_from(tidx, rbufs, ridx, usize::from(len)),
                    ForwardMode::SwapBuffers => rbufs.valid(ridx) && tbufs.valid(tidx),
                };
            k = ring_add(k, 1, rn);
            if !ok {
                out.dropped += 1;
                continue;
            }
            match mode {
                ForwardMode::Copy => t.view.set_flags(j, 0),
                ForwardMode::SwapBuffers => {
                    t.view.set_buf_idx(j, ridx);
                    t.view.set_flags(j, slot_flags::BUF_CHANGED);
                    let rk = ring_prev(k, rn);
                    r.view.set_buf_idx(rk, tidx);
                    r.view.set_flags(rk, slot_flags::BUF_CHANGED);
                }
            }
            t.view.set_len(j, len);
            j = ring_add(j, 1, tn);
            out.packets += 1;
            out.bytes += u64::from(len);
        }
        t.cur = j;
        t.head = j;
        r.cur = k;
        r.head = k;
        out
    }
}

/// How [`TxRing::forward_from`] moves a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardMode {
    /// Copy the packet into the TX slot's buffer.
    Copy,
    /// Swap the RX and TX slots' buffer indexes (netmap's zero copy; ports in one memory only).
    SwapBuffers,
}

/// What one [`TxRing::forward_from`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Forwarded {
    /// Packets placed in the TX ring.
    pub packets: u32,
    /// Their bytes.
    pub bytes: u64,
    /// Received slots consumed but not forwarded (bad buffer index or length).
    pub dropped: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::mock::{host_receives, host_sees, Mock, BUF, SLOTS};
    use crate::Port;

    #[test]
    fn forward_copies_between_ports_in_different_memories() {
        let (ma, mb) = (Mock::new(), Mock::new());
        let mut a = Port::attach(Box::new(ma.clone())).unwrap();
        let mut b = Port::attach(Box::new(mb.clone())).unwrap();
        // Same memory id (7), different memories: the probe tells them apart.
        assert_eq!(a.mem_id(), b.mem_id());
        assert!(!a.shares_memory_with(&b));
        assert!(!b.shares_memory_with(&a));
        let frames: [&[u8]; 4] = [&[1; 60], &[2; 1514], &[3; 61], &[4; 60]];
        host_receives(&ma, &frames);
        // Slot 2 carries a length over the buffer size: consumed, dropped, not forwarded.
        ma.ring_view(1).set_len(2, (BUF + 1) as u16);
        let rx_bufs: Vec<u32> = (0..4).map(|i| ma.ring_view(1).buf_idx(i)).collect();
        let tx_bufs: Vec<u32> = (0..4).map(|i| mb.ring_view(0).buf_idx(i)).collect();
        a.rx_ring(0).rxsync().unwrap();
        let mut rx = a.rx_ring(0);
        let mut tx = b.tx_ring(0);
        // A budget of one moves one packet.
        let f = tx.forward_from(&mut rx, 1, ForwardMode::Copy);
        assert_eq!(
            f,
            Forwarded {
                packets: 1,
                bytes: 60,
                dropped: 0
            }
        );
        let f = tx.forward_from(&mut rx, 64, ForwardMode::Copy);
        assert_eq!(
            f,
            Forwarded {
                packets: 2,
                bytes: 1574,
                dropped: 1
            }
        );
        assert_eq!(rx.avail(), 0);
        assert_eq!(rx.indexes(), (4, 4, 4));
        assert_eq!(tx.indexes(), (3, 3, SLOTS - 1));
        tx.txsync().unwrap();
        rx.rxsync().unwrap();
        assert_eq!(mb.atok(0).kernel_read(), (3, 3));
        assert_eq!(ma.atok(1).kernel_read(), (4, 4));
        // Copied, in order, into the TX slots' own buffers; nothing swapped.
        assert_eq!(host_sees(&mb, 0), vec![1; 60]);
        assert_eq!(host_sees(&mb, 1), vec![2; 1514]);
        assert_eq!(host_sees(&mb, 2), vec![4; 60]);
        for i in 0..4 {
            assert_eq!(ma.ring_view(1).buf_idx(i), rx_bufs[i as usize]);
            assert_eq!(mb.ring_view(0).buf_idx(i), tx_bufs[i as usize]);
            assert_eq!(mb.ring_view(0).flags(i), 0);
        }
    }

    #[test]
    fn forward_swaps_buffers_between_ports_in_one_memory() {
        let mocks = Mock::sharing_memory(2);
        let (ma, mb) = (&mocks[0], &mocks[1]);
        let mut a = Port::attach(Box::new(ma.clone())).unwrap();
        let mut b = Port::attach(Box::new(mb.clone())).unwrap();
        assert!(a.shares_memory_with(&b));
        assert!(b.shares_memory_with(&a));
        let frames: [&[u8]; 3] = [&[7; 60], &[8; 100], &[9; 60]];
        host_receives(ma, &frames);
        // Slot 1 names a reserved buffer: dropped, its index left alone.
        ma.ring_view(1).set_buf_idx(1, 1);
        let rx_bufs: Vec<u32> = (0..3).map(|i| ma.ring_view(1).buf_idx(i)).collect();
        let tx_bufs: Vec<u32> = (0..2).map(|i| mb.ring_view(0).buf_idx(i)).collect();
        a.rx_ring(0).rxsync().unwrap();
        let mut rx = a.rx_ring(0);
        let mut tx = b.tx_ring(0);
        let f = tx.forward_from(&mut rx, 64, ForwardMode::SwapBuffers);
        assert_eq!(
            f,
            Forwarded {
                packets: 2,
                bytes: 120,
                dropped: 1
            }
        );
        tx.txsync().unwrap();
        rx.rxsync().unwrap();
        assert_eq!(mb.atok(0).kernel_read(), (2, 2));
        let (rv, tv) = (ma.ring_view(1), mb.ring_view(0));
        // The TX slots carry the received buffers, the RX slots the TX slots' free ones.
        assert_eq!((tv.buf_idx(0), tv.buf_idx(1)), (rx_bufs[0], rx_bufs[2]));
        assert_eq!((rv.buf_idx(0), rv.buf_idx(2)), (tx_bufs[0], tx_bufs[1]));
        assert_eq!(rv.buf_idx(1), 1);
        for (v, i) in [(&tv, 0), (&tv, 1), (&rv, 0), (&rv, 2)] {
            assert_eq!(v.flags(i), slot_flags::BUF_CHANGED);
        }
        assert_eq!(rv.flags(1), 0);
        assert_eq!(host_sees(mb, 0), vec![7; 60]);
        assert_eq!(host_sees(mb, 1), vec![9; 60]);
        // A full TX ring takes nothing and consumes nothing.
        let mut tx = b.tx_ring(0);
        while tx.send(&[0; 60]) {}
        let mut rx = a.rx_ring(0);
        assert_eq!(
            tx.forward_from(&mut rx, 64, ForwardMode::SwapBuffers),
            Forwarded::default()
        );
    }
}

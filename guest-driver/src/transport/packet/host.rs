//! The port side of the `packet:` transport's two rings: what the protocol's host passes call to
//! move slots to and from the socket. Every slot is the application's to write, so each buffer
//! index and length is checked before the kernel sees it.

use super::PacketStats;
use crate::sys::packet::{PacketSocket, BATCH};
use ptnet_protocol::netmap::{ring_add, BufPool, RingView};
use ptnet_protocol::sync::{ring_prev, HostKring, PortSync};

/// One ring's port side: the socket, the port's buffers, the ring, and the counters its passes
/// add to. `TX` picks the direction's sync ([`TxSide`], [`RxSide`]).
pub(super) struct Side<'a, const TX: bool> {
    sock: &'a PacketSocket,
    bufs: &'a BufPool,
    view: &'a RingView,
    stats: &'a mut PacketStats,
}

/// TX: slots `[hwcur, head)` go out in batches; each one sent (or dropped) completes at once.
pub(super) type TxSide<'a> = Side<'a, true>;

/// RX: the slots the application released are taken back, then the free ones (`hwtail` up to
/// just before `hwcur`) filled in batches.
pub(super) type RxSide<'a> = Side<'a, false>;

impl<'a, const TX: bool> Side<'a, TX> {
    pub(super) fn new(
        sock: &'a PacketSocket,
        bufs: &'a BufPool,
        view: &'a RingView,
        stats: &'a mut PacketStats,
    ) -> Self {
        Self {
            sock,
            bufs,
            view,
            stats,
        }
    }
}

impl TxSide<'_> {
    /// The slot's frame as `(offset in the pool, length)`, if its buffer and length are sane.
    fn frame(&self, slot: u32) -> Option<(usize, usize)> {
        let len = usize::from(self.view.len(slot));
        let off = self.bufs.offset(self.view.buf_idx(slot))?;
        (len > 0 && len <= self.bufs.buf_size() as usize).then_some((off, len))
    }
}

impl PortSync for TxSide<'_> {
    fn sync(&mut self, k: &mut HostKring, _flags: u32) {
        let n = k.num_slots;
        let mut batch = [(0usize, 0usize); BATCH];
        while k.hwcur != k.rhead {
            // A batch of consecutive good slots; a bad first slot is dropped on its own.
            let mut count = 0;
            let mut i = k.hwcur;
            while i != k.rhead && count < BATCH {
                let Some(f) = self.frame(i) else { break };
                batch[count] = f;
                count += 1;
                i = ring_add(i, 1, n);
            }
            if count == 0 {
                self.stats.tx_dropped += 1;
                k.hwcur = ring_add(k.hwcur, 1, n);
                continue;
            }
            match self.sock.send_batch(self.bufs.mem(), &batch[..count]) {
                // The socket's buffer is full: the rest waits for POLLOUT.
                Ok(0) => break,
                Ok(sent) => {
                    self.stats.tx_frames += sent as u64;
                    k.hwcur = ring_add(k.hwcur, sent as u32, n);
                }
                // The kernel refused the first frame (too short or long for the interface, link
                // down): dropped, as a NIC would.
                Err(_) => {
                    self.stats.tx_dropped += 1;
                    k.hwcur = ring_add(k.hwcur, 1, n);
                }
            }
        }
        k.hwtail = ring_prev(k.hwcur, n);
    }
}

impl PortSync for RxSide<'_> {
    fn sync(&mut self, k: &mut HostKring, _flags: u32) {
        let n = k.num_slots;
        k.hwcur = k.rhead;
        let end = ring_prev(k.hwcur, n);
        let cap = self.bufs.buf_size() as usize;
        let mut bufs = [(0usize, 0usize); BATCH];
        let mut slots = [0u32; BATCH];
        let mut lens = [0usize; BATCH];
        while k.hwtail != end {
            let mut count = 0;
            let mut i = k.hwtail;
            while i != end && count < BATCH {
                let Some(off) = self.bufs.offset(self.view.buf_idx(i)) else {
                    break;
                };
                bufs[count] = (off, cap);
                slots[count] = i;
                count += 1;
                i = ring_add(i, 1, n);
            }
            if count == 0 {
                // The application put a bad buffer index in a free slot: handed back empty.
                self.stats.rx_bad_slots += 1;
                self.view.set_len(k.hwtail, 0);
                self.view.set_flags(k.hwtail, 0);
                k.hwtail = ring_add(k.hwtail, 1, n);
                continue;
            }
            // An error is a pending socket error (the interface went down): consumed, nothing
            // received.
            let got = self
                .sock
                .recv_batch(self.bufs.mem(), &bufs[..count], &mut lens)
                .unwrap_or_default();
            // Keep the frames that fitted, in order, in the first slots: a truncated one's
            // buffer moves to the end of the batch.
            let mut kept = 0;
            for j in 0..got {
                if lens[j] > cap {
                    self.stats.rx_truncated += 1;
                    continue;
                }
                if kept != j {
                    let (a, b) = (slots[kept], slots[j]);
                    let (ba, bb) = (self.view.buf_idx(a), self.view.buf_idx(b));
                    self.view.set_buf_idx(a, bb);
                    self.view.set_buf_idx(b, ba);
                }
                self.view.set_len(slots[kept], lens[j] as u16);
                self.view.set_flags(slots[kept], 0);
                kept += 1;
            }
            self.stats.rx_frames += kept as u64;
            k.hwtail = ring_add(k.hwtail, kept as u32, n);
            if got < count {
                break;
            }
        }
    }
}

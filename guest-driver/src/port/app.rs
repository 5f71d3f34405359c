//! The application's ring API: [`TxRing`] and [`RxRing`] borrowed from a [`Port`](crate::Port), and the
//! [`SlotWriter`] / [`SlotReader`] through which a closure reaches one slot's buffer (shared
//! memory is only ever copied into and out of).

use super::ring::RingState;
use crate::transport::Transport;
use crate::Error;
use ptnet_protocol::csb::NAF_FORCE_RECLAIM;
use ptnet_protocol::netmap::{ring_add, ring_dist, slot_flags, BufPool};

/// A TX ring of a [`Port`](crate::Port): fill slots from `cur`, then [`TxRing::txsync`].
pub struct TxRing<'a> {
    pub(super) ring: &'a mut RingState,
    pub(super) transport: &'a dyn Transport,
    pub(super) bufs: &'a BufPool,
}

impl<'a> TxRing<'a> {
    pub(super) fn new(
        ring: &'a mut RingState,
        transport: &'a dyn Transport,
        bufs: &'a BufPool,
    ) -> Self {
        TxRing {
            ring,
            transport,
            bufs,
        }
    }

    /// Number of slots.
    #[must_use]
    pub fn num_slots(&self) -> u32 {
        self.ring.view.num_slots()
    }

    /// Free slots the application may fill now (from `cur` to `tail`).
    #[must_use]
    pub fn space(&self) -> u32 {
        self.ring.avail()
    }

    /// Slots handed to the host that it has not completed yet (after the last sync).
    #[must_use]
    pub fn pending(&self) -> u32 {
        let n = self.ring.view.num_slots();
        n - 1 - ring_dist(self.ring.cur, self.ring.tail, n)
    }

    /// The ring's (head, cur, tail).
    #[must_use]
    pub fn indexes(&self) -> (u32, u32, u32) {
        (self.ring.head, self.ring.cur, self.ring.tail)
    }

    /// Copies `frame` into the buffer of the slot at `cur`, sets its length, and advances `cur`
    /// and `head` past it. Returns false (changing nothing) when the ring has no free slot or the
    /// frame does not fit a buffer. Call [`TxRing::txsync`] to transmit.
    #[inline]
    #[must_use]
    pub fn send(&mut self, frame: &[u8]) -> bool {
        self.send_with(frame.len(), |w| w.write(0, frame))
    }

    /// Fills the buffer of the slot at `cur` with `fill`, which writes through a [`SlotWriter`]
    /// (shared memory is only reached by copying), then sets the slot length to `len` and advances
    /// `cur` and `head`. Returns false when there is no free slot, `len` exceeds the buffer size,
    /// or `fill` returns false.
    #[inline]
    #[must_use]
    pub fn send_with(&mut self, len: usize, fill: impl FnOnce(&SlotWriter<'_>) -> bool) -> bool {
        let r = &mut *self.ring;
        if r.cur == r.tail || len > self.bufs.buf_size() as usize {
            return false;
        }
        let idx = r.view.buf_idx(r.cur);
        if !self.bufs.valid(idx) {
            return false;
        }
        let w = SlotWriter {
            bufs: self.bufs,
            idx,
            len,
        };
        if !fill(&w) {
            return false;
        }
        r.view.set_len(r.cur, len as u16);
        r.view.set_flags(r.cur, 0);
        r.cur = ring_add(r.cur, 1, r.view.num_slots());
        r.head = r.cur;
        true
    }

    /// Sends `frame` in as many slots as it needs, each but the last flagged NS_MOREFRAG (how
    /// netmap applications, and the stock ptnet driver for its TSO frames, send frames longer
    /// than a buffer). Returns false, changing nothing, when the ring has fewer free slots.
    #[must_use]
    pub fn send_chain(&mut self, frame: &[u8]) -> bool {
        let size = self.bufs.buf_size() as usize;
        let need = frame.len().div_ceil(size).max(1);
        let r = &mut *self.ring;
        let n = r.view.num_slots();
        if (r.avail() as usize) < need {
            return false;
        }
        let mut at = r.cur;
        for i in 0..need {
            let idx = r.view.buf_idx(at);
            let part = &frame[i * size..frame.len().min((i + 1) * size)];
            if !self.bufs.valid(idx) || !self.bufs.write(idx, 0, part) {
                return false;
            }
            r.view.set_len(at, part.len() as u16);
            let last = i + 1 == need;
            r.view
                .set_flags(at, if last { 0 } else { slot_flags::MOREFRAG });
            at = ring_add(at, 1, n);
        }
        r.cur = at;
        r.head = at;
        true
    }

    /// Hands the filled slots to the host and learns which ones completed.
    pub fn txsync(&mut self) -> Result<(), Error> {
        self.ring.txsync(self.transport, 0)
    }

    /// Like [`TxRing::txsync`], but also asks the host to report completions now (netmap's forced
    /// reclaim); always kicks. Use when draining the ring.
    pub fn txsync_reclaim(&mut self) -> Result<(), Error> {
        self.ring.txsync(self.transport, NAF_FORCE_RECLAIM)
    }
}

/// Write access to one TX buffer, given to the closure of [`TxRing::send_with`].
pub struct SlotWriter<'a> {
    bufs: &'a BufPool,
    idx: u32,
    len: usize,
}

impl<'a> SlotWriter<'a> {
    #[inline]
    pub(super) fn new(bufs: &'a BufPool, idx: u32, len: usize) -> Self {
        Self { bufs, idx, len }
    }

    /// The index of the buffer being filled. Buffers change hands (a pipe swaps the sender's
    /// buffer with the receiver's), so a sender that prepares each buffer once keeps note of the
    /// indexes it has filled already.
    #[inline]
    #[must_use]
    pub fn buf_idx(&self) -> u32 {
        self.idx
    }

    /// Copies `data` into the buffer at byte `at`. Returns false if it would pass the frame
    /// length given to [`TxRing::send_with`].
    #[inline]
    #[must_use]
    pub fn write(&self, at: usize, data: &[u8]) -> bool {
        at.checked_add(data.len())
            .is_some_and(|end| end <= self.len)
            && self.bufs.write(self.idx, at, data)
    }
}

/// An RX ring of a [`Port`](crate::Port): read packets from `cur`, then [`RxRing::rxsync`] to release them
/// and learn of new ones.
pub struct RxRing<'a> {
    pub(super) ring: &'a mut RingState,
    pub(super) transport: &'a dyn Transport,
    pub(super) bufs: &'a BufPool,
}

impl<'a> RxRing<'a> {
    pub(super) fn new(
        ring: &'a mut RingState,
        transport: &'a dyn Transport,
        bufs: &'a BufPool,
    ) -> Self {
        RxRing {
            ring,
            transport,
            bufs,
        }
    }

    /// Number of slots.
    #[must_use]
    pub fn num_slots(&self) -> u32 {
        self.ring.view.num_slots()
    }

    /// Received packets waiting for the application (from `cur` to `tail`).
    #[must_use]
    pub fn avail(&self) -> u32 {
        self.ring.avail()
    }

    /// The ring's (head, cur, tail).
    #[must_use]
    pub fn indexes(&self) -> (u32, u32, u32) {
        (self.ring.head, self.ring.cur, self.ring.tail)
    }

    /// Copies the packet at `cur` into `out` (at most `out.len()` bytes) and advances `cur` and
    /// `head` past it. Returns the packet's length (which may exceed what was copied), or `None`
    /// when no packet is waiting. A slot the host filled with a bad buffer index or length is
    /// consumed and reported as a zero-length packet.
    #[inline]
    pub fn recv(&mut self, out: &mut [u8]) -> Option<usize> {
        self.recv_with(|p| {
            let n = p.len().min(out.len());
            // `n` is at most the packet's length; a bad slot (length 0) copies nothing.
            let _ = p.read(0, &mut out[..n]);
            p.len()
        })
    }

    /// Gives the packet at `cur` to `f` as a [`SlotReader`], then advances `cur` and `head` past
    /// it. Returns what `f` returned, or `None` when no packet is waiting.
    #[inline]
    pub fn recv_with<R>(&mut self, f: impl FnOnce(&SlotReader<'_>) -> R) -> Option<R> {
        let r = &mut *self.ring;
        if r.cur == r.tail {
            return None;
        }
        let idx = r.view.buf_idx(r.cur);
        let mut len = r.view.len(r.cur) as usize;
        if !self.bufs.valid(idx) || len > self.bufs.buf_size() as usize {
            len = 0;
        }
        let p = SlotReader {
            bufs: self.bufs,
            idx,
            len,
        };
        let out = f(&p);
        r.cur = ring_add(r.cur, 1, r.view.num_slots());
        r.head = r.cur;
        Some(out)
    }

    /// Reads the frame at `cur` into `out` (replacing its contents), joining a chain of slots
    /// flagged NS_MOREFRAG, and advances past it. Returns the number of slots it took, or
    /// `None` when no frame is waiting, or only the first slots of a chain (its rest not
    /// received yet: `cur` stays, a later call reads the whole chain).
    pub fn recv_chain(&mut self, out: &mut Vec<u8>) -> Option<u32> {
        let r = &mut *self.ring;
        let n = r.view.num_slots();
        let (mut at, mut slots) = (r.cur, 0u32);
        out.clear();
        loop {
            if at == r.tail {
                return None;
            }
            let idx = r.view.buf_idx(at);
            let len = usize::from(r.view.len(at));
            if self.bufs.valid(idx) && len <= self.bufs.buf_size() as usize {
                let from = out.len();
                out.resize(from + len, 0);
                if !self.bufs.read(idx, 0, &mut out[from..]) {
                    out.truncate(from);
                }
            }
            slots += 1;
            let more = r.view.flags(at) & slot_flags::MOREFRAG != 0;
            at = ring_add(at, 1, n);
            if !more {
                break;
            }
        }
        r.cur = at;
        r.head = at;
        Some(slots)
    }

    /// Releases the packets read and learns of newly received ones.
    pub fn rxsync(&mut self) -> Result<(), Error> {
        self.ring.rxsync(self.transport, 0)
    }
}

/// Read access to one received packet, given to the closure of [`RxRing::recv_with`].
pub struct SlotReader<'a> {
    bufs: &'a BufPool,
    idx: u32,
    len: usize,
}

impl SlotReader<'_> {
    /// The packet's length (0 for a slot the host filled with a bad buffer index or length).
    #[inline]
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Is the packet empty?
    #[inline]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies packet bytes from `at` into `out`. Returns false (copying nothing) if the range
    /// passes the packet's end.
    #[inline]
    #[must_use]
    pub fn read(&self, at: usize, out: &mut [u8]) -> bool {
        at.checked_add(out.len()).is_some_and(|end| end <= self.len)
            && self.bufs.read(self.idx, at, out)
    }
}

#[cfg(test)]
mod tests {
    use crate::port::mock::{Mock, BUF, SLOTS};
    use crate::Port;
    use std::sync::atomic::Ordering;

    #[test]
    fn tx_fills_slots_and_publishes_head() {
        let mock = Mock::new();
        let mut port = Port::attach(Box::new(mock.clone())).unwrap();
        let mut tx = port.tx_ring(0);
        assert_eq!(tx.space(), SLOTS - 1);
        assert!(tx.send(&[0xaa; 60]));
        assert!(tx.send(&[0xbb; 100]));
        assert!(!tx.send(&vec![0; BUF as usize + 1]), "too long");
        assert!(tx.send_with(64, |w| w.write(0, &[1, 2, 3]) && w.write(61, &[4, 5, 6])));
        assert!(
            !tx.send_with(64, |w| w.write(62, &[0; 3])),
            "past the frame"
        );
        assert_eq!(tx.space(), SLOTS - 4);
        assert_eq!(tx.indexes(), (3, 3, SLOTS - 1));
        assert_eq!(mock.kicks.load(Ordering::Relaxed), 0);
        tx.txsync().unwrap();
        // The host asked for kicks: one kick, and head/cur published.
        assert_eq!(mock.kicks.load(Ordering::Relaxed), 1);
        assert_eq!(mock.atok(0).kernel_read(), (3, 3));
        let view = mock.ring_view(0);
        assert_eq!((view.len(0), view.len(1), view.len(2)), (60, 100, 64));
        let bufs = mock.bufs();
        let mut b = [0u8; 3];
        bufs.read(view.buf_idx(1), 97, &mut b);
        assert_eq!(b, [0xbb; 3]);
        bufs.read(view.buf_idx(2), 61, &mut b);
        assert_eq!(b, [4, 5, 6]);
        // Fill the ring: the last free slot is taken, the next send fails.
        let mut tx = port.tx_ring(0);
        while tx.send(&[0; 60]) {}
        assert_eq!(tx.space(), 0);
        assert_eq!(tx.pending(), SLOTS - 1);
        // The host "transmits" everything: hwcur = head, hwtail = head - 1.
        mock.ktoa(0).kernel_write(SLOTS - 1, SLOTS - 2);
        tx.txsync().unwrap();
        assert_eq!(tx.space(), SLOTS - 1);
        assert_eq!(tx.pending(), 0);
    }

    #[test]
    fn rx_reads_what_the_host_published_and_releases_it() {
        let mock = Mock::new();
        let mut port = Port::attach(Box::new(mock.clone())).unwrap();
        let view = mock.ring_view(1);
        let bufs = mock.bufs();
        for (i, len) in [(0u32, 60u16), (1, 1514)] {
            bufs.write(view.buf_idx(i), 0, &vec![i as u8 + 1; len as usize]);
            view.set_len(i, len);
        }
        let mut rx = port.rx_ring(0);
        assert_eq!(rx.avail(), 0);
        rx.rxsync().unwrap();
        assert_eq!(rx.avail(), 0);
        // Nothing there: the guest asked for an interrupt.
        assert!(mock.atok(1).appl_need_kick());
        mock.ktoa(1).kernel_write(0, 2);
        rx.rxsync().unwrap();
        assert!(!mock.atok(1).appl_need_kick());
        assert_eq!(rx.avail(), 2);
        let mut out = [0u8; 2048];
        assert_eq!(rx.recv(&mut out), Some(60));
        assert_eq!(out[..60], [1; 60]);
        let got = rx.recv_with(|p| {
            let mut b = [0u8; 4];
            assert!(p.read(1510, &mut b));
            assert!(!p.read(1511, &mut b));
            (p.len(), b)
        });
        assert_eq!(got, Some((1514, [2; 4])));
        assert_eq!(rx.recv(&mut out), None);
        rx.rxsync().unwrap();
        assert_eq!(mock.atok(1).kernel_read(), (2, 2));
    }

    #[test]
    fn bad_slots_from_the_host_are_contained() {
        let mock = Mock::new();
        let mut port = Port::attach(Box::new(mock.clone())).unwrap();
        let view = mock.ring_view(1);
        view.set_buf_idx(0, 1); // reserved
        view.set_buf_idx(1, 2);
        view.set_len(1, 4000); // longer than a buffer
        mock.ktoa(1).kernel_write(0, 2);
        let mut rx = port.rx_ring(0);
        rx.rxsync().unwrap();
        let mut out = [0u8; 64];
        assert_eq!(rx.recv(&mut out), Some(0));
        assert_eq!(rx.recv(&mut out), Some(0));
        // A TX slot with a bad buffer index is refused.
        mock.ring_view(0).set_buf_idx(0, u32::MAX);
        assert!(!port.tx_ring(0).send(&[0; 60]));
        // Out-of-range host indexes are reduced modulo the ring.
        mock.ktoa(1).kernel_write(1000, 1003);
        let mut rx = port.rx_ring(0);
        rx.rxsync().unwrap();
        assert!(rx.indexes().2 < SLOTS);
    }
}

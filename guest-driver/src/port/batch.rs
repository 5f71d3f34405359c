//! Batched forms of the ring API, for applications that move packets without looking at most
//! of them (netmap's pkt-gen at full rate): one pass over a run of slots per call, the ring's
//! indexes advanced once, no per-slot index arithmetic. [`TxRing::send_batch`] fills slots,
//! [`RxRing::consume`] releases received ones unread.

use super::app::{RxRing, SlotWriter, TxRing};

impl TxRing<'_> {
    /// Queues up to `max` frames of `len` bytes from `cur`, calling `fill` once per slot to
    /// write its buffer (it may write nothing, e.g. when that buffer holds the frame already:
    /// [`SlotWriter::buf_idx`] says which buffer it is), and advances `cur` and `head` past
    /// them. Returns how many it queued: fewer than `max` when the ring has fewer free slots,
    /// or at the first slot whose buffer index is bad or whose `fill` returned false (that
    /// slot is left as it was). 0 when `len` exceeds the buffer size.
    #[inline]
    pub fn send_batch(
        &mut self,
        len: usize,
        max: u32,
        mut fill: impl FnMut(&SlotWriter<'_>) -> bool,
    ) -> u32 {
        if len > self.bufs.buf_size() as usize {
            return 0;
        }
        let (bufs, r) = (self.bufs, &mut *self.ring);
        let (n, want) = (r.view.num_slots(), max.min(r.avail()));
        let mut sent = 0;
        'runs: while sent < want {
            // From `cur` to the ring's end at most: a run of consecutive slots.
            let (at, run) = (r.cur as usize, (want - sent).min(n - r.cur) as usize);
            let slots = r.view.slots().get(at..at + run).unwrap_or(&[]);
            let mut done = 0u32;
            for s in slots {
                let w = SlotWriter::new(bufs, s.buf_idx(), len);
                if !bufs.valid(w.buf_idx()) || !fill(&w) {
                    r.advance(done);
                    sent += done;
                    break 'runs;
                }
                s.set_len(len as u16);
                s.set_flags(0);
                done += 1;
            }
            r.advance(done);
            sent += done;
            if done == 0 {
                break;
            }
        }
        sent
    }
}

/// What [`RxRing::consume`] released.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Consumed {
    /// Packets.
    pub packets: u32,
    /// Their bytes (0 for a slot the host filled with a bad buffer index or length).
    pub bytes: u64,
}

impl RxRing<'_> {
    /// Releases up to `max` received packets from `cur` without reading them (counting only,
    /// as netmap's pkt-gen does), advancing `cur` and `head` past them; [`RxRing::rxsync`]
    /// hands them back. Returns how many and their bytes.
    #[inline]
    pub fn consume(&mut self, max: u32) -> Consumed {
        let (bufs, r) = (self.bufs, &mut *self.ring);
        let (n, want, size) = (r.view.num_slots(), max.min(r.avail()), bufs.buf_size());
        let mut c = Consumed::default();
        while c.packets < want {
            let (at, run) = (r.cur as usize, (want - c.packets).min(n - r.cur) as usize);
            let slots = r.view.slots().get(at..at + run).unwrap_or(&[]);
            for s in slots {
                let len = u32::from(s.len());
                if bufs.valid(s.buf_idx()) && len <= size {
                    c.bytes += u64::from(len);
                }
            }
            let done = slots.len() as u32;
            r.advance(done);
            c.packets += done;
            if done == 0 {
                break;
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::Consumed;
    use crate::port::mock::{Mock, BUF, SLOTS};
    use crate::Port;

    #[test]
    fn send_batch_fills_free_slots_across_the_ring_end_and_stops_where_told() {
        let mock = Mock::new();
        let mut port = Port::attach(Box::new(mock.clone())).unwrap();
        let (view, bufs) = (mock.ring_view(0), mock.bufs());
        // Move the ring near its end: send and complete SLOTS - 3 frames.
        let mut tx = port.tx_ring(0);
        assert_eq!(
            tx.send_batch(60, SLOTS - 3, |w| w.write(0, &[1])),
            SLOTS - 3
        );
        mock.ktoa(0).kernel_write(SLOTS - 3, SLOTS - 4);
        tx.txsync_reclaim().unwrap();
        assert_eq!(tx.space(), SLOTS - 1);
        // Five frames: three up to the end, two from slot 0; each buffer written once.
        let mut seen = Vec::new();
        let sent = tx.send_batch(64, 5, |w| {
            seen.push(w.buf_idx());
            w.write(0, &[0xab; 64])
        });
        assert_eq!(sent, 5);
        assert_eq!(tx.indexes(), (2, 2, SLOTS - 4));
        for (k, i) in [SLOTS - 3, SLOTS - 2, SLOTS - 1, 0, 1]
            .into_iter()
            .enumerate()
        {
            assert_eq!((view.len(i), view.flags(i)), (64, 0), "slot {i}");
            assert_eq!(view.buf_idx(i), seen[k]);
            let mut b = [0u8; 64];
            assert!(bufs.read(view.buf_idx(i), 0, &mut b));
            assert_eq!(b, [0xab; 64]);
        }
        mock.ktoa(0).kernel_write(2, 1);
        tx.txsync_reclaim().unwrap();
        // `fill` refusing the third slot: two queued, the third untouched.
        view.set_len(4, 7);
        let mut calls = 0;
        let sent = tx.send_batch(60, 10, |_| {
            calls += 1;
            calls < 3
        });
        assert_eq!((sent, calls), (2, 3));
        assert_eq!(view.len(4), 7, "the refused slot keeps its length");
        assert_eq!(tx.indexes(), (4, 4, 1));
        // Too long for a buffer; a slot with a bad buffer index.
        assert_eq!(tx.send_batch(BUF as usize + 1, 1, |_| true), 0);
        view.set_buf_idx(4, 1);
        assert_eq!(tx.send_batch(60, 3, |_| true), 0);
        assert_eq!(tx.indexes(), (4, 4, 1));
    }

    #[test]
    fn send_batch_takes_no_more_than_the_free_slots() {
        let mock = Mock::new();
        let mut port = Port::attach(Box::new(mock.clone())).unwrap();
        let mut tx = port.tx_ring(0);
        assert_eq!(tx.send_batch(60, u32::MAX, |_| true), SLOTS - 1);
        assert_eq!(tx.space(), 0);
        assert_eq!(tx.send_batch(60, 1, |_| true), 0);
    }

    #[test]
    fn consume_counts_packets_and_good_bytes_and_releases_them() {
        let mock = Mock::new();
        let mut port = Port::attach(Box::new(mock.clone())).unwrap();
        let view = mock.ring_view(1);
        for (i, len) in [(0u32, 60u16), (1, 1514), (2, 4000), (3, 70)] {
            view.set_len(i, len);
        }
        view.set_buf_idx(3, 0); // "no buffer": counted, no bytes
        mock.ktoa(1).kernel_write(0, 4);
        let mut rx = port.rx_ring(0);
        rx.rxsync().unwrap();
        assert_eq!(rx.avail(), 4);
        let c = rx.consume(3);
        assert_eq!(
            c,
            Consumed {
                packets: 3,
                bytes: 60 + 1514
            }
        );
        assert_eq!(
            rx.consume(10),
            Consumed {
                packets: 1,
                bytes: 0
            }
        );
        assert_eq!(rx.consume(10), Consumed::default());
        rx.rxsync().unwrap();
        assert_eq!(mock.atok(1).kernel_read(), (4, 4));
    }

    #[test]
    fn consume_wraps_at_the_ring_end() {
        let mock = Mock::new();
        let mut port = Port::attach(Box::new(mock.clone())).unwrap();
        let view = mock.ring_view(1);
        for i in 0..SLOTS {
            view.set_len(i, 100);
        }
        mock.ktoa(1).kernel_write(0, SLOTS - 2);
        let mut rx = port.rx_ring(0);
        rx.rxsync().unwrap();
        assert_eq!(rx.consume(SLOTS - 3).packets, SLOTS - 3);
        rx.rxsync().unwrap();
        mock.ktoa(1).kernel_write(SLOTS - 3, 2);
        rx.rxsync().unwrap();
        assert_eq!(rx.avail(), 5);
        let c = rx.consume(u32::MAX);
        assert_eq!(
            c,
            Consumed {
                packets: 5,
                bytes: 500
            }
        );
        assert_eq!(rx.indexes().1, 2);
    }
}

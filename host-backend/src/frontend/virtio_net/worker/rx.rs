//! The RX half of a queue-pair thread's round: received netmap slots into the guest's RX
//! chains (chains of slots and GSO frames through [`ChainRx`]).

use super::*;

impl Pair<'_> {
    /// Moves received frames from the netmap RX ring into the guest's RX chains. True if
    /// anything moved.
    pub(super) fn rx_round(&mut self, mem: &GuestMemoryMmap) -> bool {
        if let Some(rx) = &self.direct {
            // One pass of our own each round (a try-lock when a producer runs one): it takes in
            // what producers committed before the ring was lent (their passes were dropped
            // then), as the ptnet sync loop's first pass does.
            rx.host_pass(false);
        } else if let Some(PassDone {
            stop: HostStop::Reset(bad),
            ..
        }) = self.rx.pass(false)
        {
            tracing::error!(
                port = self.port,
                "RX ring reset by its own guest side: {bad}"
            );
        }
        let head0 = self.grx.rhead;
        let _ = self.grx.prologue(head0, head0);
        self.grx.rxsync(&self.rx_atok, &self.rx_ktoa, 0);
        if !self.rxq.check(mem, self.port, "rx") {
            return false;
        }
        let n = self.grx.num_slots;
        let mut head = self.grx.rhead;
        let mut delivered = false;
        let mut chain_open = false;
        self.rx_need_bufs = false;
        let st = self.rxq.stats.clone();
        while head != self.grx.hwtail {
            if self.rings.rx.flags(head) & slot_flags::MOREFRAG != 0 {
                // A frame in several slots (`rxchain`): joined, delivered as ordinary frames.
                match self.rx_chain_at(mem, head, &st) {
                    ChainDone::Released(slots) => {
                        delivered = true;
                        head = ring_add(head, slots, n);
                        continue;
                    }
                    ChainDone::Incomplete => {
                        chain_open = true;
                        break;
                    }
                    ChainDone::NoBuffers => {
                        self.rx_need_bufs = true;
                        self.rx_avail_seen = self.rxq.queue.avail_mark(mem);
                        break;
                    }
                }
            }
            let len = usize::from(self.rings.rx.len(head));
            let out = match buffer(&self.rings.bufs, self.rings.rx.buf_idx(head)) {
                Some(b) => match b.subslice(0, len.min(b.len())) {
                    Ok(frame) => {
                        self.rxw_writer
                            .deliver(mem, &mut self.rxq.queue, &frame, &self.conf)
                    }
                    Err(_) => RxOutcome::Dropped(RxDrop::BadFrame),
                },
                None => RxOutcome::Dropped(RxDrop::BadFrame),
            };
            let out = match out {
                // A GSO frame in one slot: cut into segments as a chain would be.
                RxOutcome::Gso => match self.rx_chain_at(mem, head, &st) {
                    ChainDone::NoBuffers => RxOutcome::NoBuffers,
                    // One slot, its last: never incomplete.
                    ChainDone::Released(_) | ChainDone::Incomplete => {
                        delivered = true;
                        head = ring_add(head, 1, n);
                        continue;
                    }
                },
                out => out,
            };
            match out {
                RxOutcome::Gso => unreachable!("handled above"),
                RxOutcome::NoBuffers => {
                    self.rx_need_bufs = true;
                    self.rx_avail_seen = self.rxq.queue.avail_mark(mem);
                    break;
                }
                RxOutcome::Delivered(_) => {
                    VqStats::add(&st.packets, 1);
                    VqStats::add(&st.bytes, len.saturating_sub(self.conf.port_len) as u64);
                    delivered = true;
                }
                RxOutcome::Dropped(why) => {
                    let c = match why {
                        RxDrop::BadFrame => &st.bad_headers,
                        RxDrop::NoRoom => &st.too_long,
                        RxDrop::BadChain => {
                            delivered = true; // chains went back to the guest
                            &st.bad_chains
                        }
                    };
                    VqStats::add(c, 1);
                }
            }
            head = ring_add(head, 1, n);
        }
        let moved = head != head0;
        if moved {
            let _ = self.grx.prologue(head, head);
            let kick = self.grx.rxsync(&self.rx_atok, &self.rx_ktoa, 0);
            match &self.direct {
                // The slots released matter at once only to a producer waiting for room.
                Some(rx) if kick => {
                    rx.host_pass(false);
                }
                Some(_) => {}
                None => {
                    self.rx.pass(false);
                }
            }
        }
        if delivered {
            VqStats::add(&self.rxq.stats.batches, 1);
            self.rxq.notify(mem);
        }
        if chain_open {
            // A chain's last slot has not come: every slot up to the tail seen (netmap's `cur`
            // past `head`), so the ring asks to be told when more arrive; if some came already,
            // go round again.
            let tail = self.grx.hwtail;
            let _ = self.grx.prologue(head, tail);
            self.grx.rxsync(&self.rx_atok, &self.rx_ktoa, 0);
            return moved || self.grx.hwtail != tail;
        }
        moved
    }

    /// Delivers the chain of slots (or the one GSO slot) at `head` of the netmap RX ring.
    fn rx_chain_at(&mut self, mem: &GuestMemoryMmap, head: u32, st: &VqStats) -> ChainDone {
        let ring = (&self.rings.rx, &self.rings.bufs);
        let (q, w) = (&mut self.rxq.queue, &mut self.rxw_writer);
        let span = (head, self.grx.hwtail);
        self.rx_chain.deliver(ring, span, w, mem, q, &self.conf, st)
    }
}

//! The TX half of a queue-pair thread's round: the guest's TX chains into the netmap TX ring
//! (GSO frames cut into segments), and the host pass that sends them.

use super::*;

impl Pair<'_> {
    /// The host TX pass over what the guest side published, then the completions read back.
    fn tx_publish(&mut self, cur: u32) {
        if self.gtx.prologue(cur, cur).is_err() {
            // Our own indexes: cannot be bad; start the ring over rather than wedge it.
            self.gtx = GuestKring::attach(self.gtx.num_slots, &self.tx_atok, &self.tx_ktoa);
            return;
        }
        self.gtx.txsync(&self.tx_atok, &self.tx_ktoa, 0);
        let stop = self.tx.pass(false).map_or(HostStop::Idle, |d| d.stop);
        if let HostStop::Reset(bad) = stop {
            tracing::error!(
                port = self.port,
                "TX ring reset by its own guest side: {bad}"
            );
        }
        // Take in the completions.
        let _ = self.gtx.prologue(self.gtx.rhead, self.gtx.rcur);
        self.gtx
            .txsync(&self.tx_atok, &self.tx_ktoa, NAF_FORCE_RECLAIM);
        // No free slot, or frames the port could not take yet: wait for the port.
        self.tx_full = ring_dist(self.gtx.rcur, self.gtx.hwtail, self.gtx.num_slots)
            < self.tx_room()
            || matches!(stop, HostStop::PortBlocked)
                && self.tx.kring().is_some_and(|k| k.hwcur != k.rhead);
    }

    /// Free TX slots a chain needs before it is taken: one, or with TSO the most segments a GSO
    /// frame may make (a chain, once taken, is not given back), bounded by the ring.
    fn tx_room(&self) -> u32 {
        if self.conf.tso4 || self.conf.tso6 {
            (vnet::MAX_GSO_SEGMENTS as u32).min(self.gtx.num_slots - 1)
        } else {
            1
        }
    }

    /// Cuts the GSO frame in the scratch buffer into segments, one slot each from `cur` on,
    /// each with complete checksums (so the port's header says no offload).
    fn tx_segments(&mut self, h: &VnetHeader, len: usize, cur: &mut u32) -> Result<(), TxDrop> {
        let frame = &self.gso.frame[..len];
        let g = vnet::Gso::new(h, frame).map_err(|_| TxDrop::BadHeader)?;
        let n = self.gtx.num_slots;
        if g.count() as u32 > ring_dist(*cur, self.gtx.hwtail, n) {
            return Err(TxDrop::TooLong);
        }
        let st = &self.txq.stats;
        let port_len = self.conf.port_len;
        for i in 0..g.count() {
            let seg = g
                .write_segment(frame, i, &mut self.gso.segment[..])
                .map_err(|_| TxDrop::TooLong)?;
            let b = buffer(&self.rings.bufs, self.rings.tx.buf_idx(*cur)).ok_or(TxDrop::TooLong)?;
            b.subslice(port_len, seg)
                .map_err(|_| TxDrop::TooLong)?
                .copy_from(&self.gso.segment[..seg]);
            emit_port_header(&b, &self.conf, VnetHeader::default())?;
            self.rings.tx.set_len(*cur, (port_len + seg) as u16);
            self.rings.tx.set_flags(*cur, 0);
            *cur = ring_add(*cur, 1, n);
            VqStats::add(&st.packets, 1);
            VqStats::add(&st.bytes, seg as u64);
        }
        Ok(())
    }

    /// Moves TX chains into the netmap TX ring and the port. True if anything moved.
    pub(super) fn tx_round(&mut self, mem: &GuestMemoryMmap) -> bool {
        if !self.txq.check(mem, self.port, "tx") {
            return false;
        }
        if self.tx_full {
            // Completions may have come (the port notified): look.
            let cur = self.gtx.rcur;
            self.tx_publish(cur);
            if self.tx_full {
                return false;
            }
        }
        let n = self.gtx.num_slots;
        let mut moved = false;
        let mut used = false;
        let st = self.txq.stats.clone();
        let mut mc = MemCache::new(mem);
        // The round's frames and bytes, counted once at its end.
        let (mut packets, mut bytes) = (0u64, 0u64);
        loop {
            let mut cur = self.gtx.rcur;
            let mut taken = 0u32;
            while ring_dist(cur, self.gtx.hwtail, n) >= self.tx_room() {
                let Some(mut chain) = self.txq.queue.pop_in(&mut mc) else {
                    break;
                };
                let head = chain.head();
                taken += 1;
                let r = match buffer(&self.rings.bufs, self.rings.tx.buf_idx(cur)) {
                    // (By reference: the chain is not moved.)
                    Some(b) => {
                        let chain = chain.by_ref();
                        tx_chain_in(&mut mc, chain, &self.conf, &b, &mut self.gso.frame)
                    }
                    None => Err(TxDrop::TooLong),
                };
                let r = match r {
                    Ok(TxFrame::Slot(len)) => {
                        self.rings.tx.set_len(cur, len as u16);
                        self.rings.tx.set_flags(cur, 0);
                        cur = ring_add(cur, 1, n);
                        packets += 1;
                        bytes += (len - self.conf.port_len) as u64;
                        Ok(())
                    }
                    Ok(TxFrame::Gso(h, len)) => self.tx_segments(&h, len, &mut cur),
                    Err(e) => Err(e),
                };
                match r {
                    Ok(()) => {}
                    Err(e) => {
                        let c = match e {
                            TxDrop::Writable | TxDrop::BadChain => &st.bad_chains,
                            TxDrop::BadAddress => &st.bad_addresses,
                            TxDrop::TooLong => &st.too_long,
                            TxDrop::TooShort => &st.too_short,
                            TxDrop::BadHeader => &st.bad_headers,
                        };
                        VqStats::add(c, 1);
                        self.log_bad(format_args!("TX chain dropped: {e:?}"));
                    }
                }
                if self.txq.queue.add_used_tx(&mut mc, head).is_err() {
                    VqStats::add(&st.bad_heads, 1);
                    self.log_bad(format_args!("TX chain head outside the queue"));
                }
                used = true;
            }
            if taken == 0 {
                break;
            }
            moved = true;
            if cur != self.gtx.rcur {
                self.tx_publish(cur);
            }
            if self.tx_full {
                break;
            }
        }
        VqStats::add(&st.packets, packets);
        VqStats::add(&st.bytes, bytes);
        // The in-order batch into the used ring, before the interrupt is decided.
        if self.txq.queue.flush_used(&mut mc).is_err() {
            VqStats::add(&st.bad_heads, 1);
            self.log_bad(format_args!("TX used ring outside guest memory"));
        }
        if used {
            VqStats::add(&self.txq.stats.batches, 1);
            self.txq.notify(mem);
        }
        moved
    }
}

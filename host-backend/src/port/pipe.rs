//! netmap pipes: two ports sharing one memory; what one end transmits on TX ring `i` arrives on
//! the other end's RX ring `i`, with no copy: the TX slot's buffer and the free RX slot's buffer
//! swap indexes. Lossless: when the receiver is full, the sender waits (backpressure).
//!
//! Direct delivery (see [`crate::port::delivery`]): after it commits, the TX sync runs the peer RX
//! ring's host pass itself ([`DeliveryRing::host_pass`]), once per sync, which publishes the
//! packets to the peer guest and interrupts it; the peer's RX thread stays asleep. The same pass
//! takes in the slots the peer guest released without a kick (it kicks for them only while a
//! producer waits), so a sync that found the peer short of room leaves its slots pending and the
//! ring's `arm` sees the room that pass found: the loop goes round again at once, and waits for
//! the peer ([`DeliveryRing::arm_producer`]) only when there is none.
//!
//! # Virtio-net headers
//!
//! Each end has the header length its guest set. Equal lengths pass untouched. When they differ,
//! the frame is converted in place in the buffer that changes hands (moved within the buffer's
//! `buf_size`): a zero header inserted (`num_buffers` 1 in the 12-byte form), `num_buffers` added
//! or dropped between 10 and 12, or the header taken off with its partial checksum completed. A
//! GSO frame toward an end without a header cannot be segmented in place (its segments need more
//! slots than it has): it is dropped and counted in `drops`; a malformed header or a frame that
//! would outgrow its buffer counts in `bad_slots`. Either way the peer gets an empty slot, as
//! for any refused slot. (netmap itself offers headers on VALE ports only; pipes here offer them
//! so a stock driver's offloads work on either.)
//!
//! # Frames in several slots
//!
//! A frame longer than a buffer comes as a chain of slots, each but the last flagged NS_MOREFRAG
//! (netmap's stock Linux ptnet driver sends its TSO frames so). The flag crosses with the slot,
//! as in netmap's pipes, so the receiver sees the chain; it may see the first slots of a chain
//! before the rest (netmap publishes whole chains only; the stock driver, finding a chain cut
//! by its tail, waits for the rest). Only the first slot of a chain holds the header: between
//! ends of different lengths it alone is converted, the others cross as they are, and a chain
//! toward an end without a header is dropped whole (its offloads cannot be finished in place),
//! counted once in `drops`.
//!
//! # Who pays for a bad slot
//!
//! A loss counts on the end that caused it: a bad buffer index or length in the sender's TX slot
//! is the sender's `bad_slots`; a bad buffer index the receiver left in its own RX slot is the
//! receiver's `bad_slots` (on its RX ring), and the sender's packet counts as sent. A receiver
//! that corrupts its ring can only lose its own traffic, and the loss shows on its counters.

use crate::port::delivery::DeliveryRing;
use crate::port::ring::{BatchCounts, RingStats, RingSync, TxBatch};
use ptnet_protocol::netmap::{ring_add, slot_flags, BufPool, RingView};
use ptnet_protocol::shmem::AtomicSlot;
use ptnet_protocol::sync::{HostKring, PortSync};
use ptnet_protocol::vnet::{self, VnetHeader};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// TX ring of one pipe end, feeding the peer's RX ring.
pub struct PipeTx {
    /// This end's TX ring.
    pub tx: RingView,
    /// The peer's RX ring.
    pub peer: Arc<DeliveryRing>,
    /// The shared buffer pool.
    pub bufs: BufPool,
    /// Counters.
    pub stats: Arc<RingStats>,
    /// The peer RX ring's counters: a bad buffer index in the peer's own slot is the peer's
    /// fault and counts there (`bad_slots`), not on this sender.
    peer_stats: Arc<RingStats>,
    /// Header lengths of this end and of the peer (the devices write them).
    hdr_lens: [Arc<AtomicU8>; 2],
    /// A frame being converted (only when the ends' header lengths differ).
    frame: Vec<u8>,
    /// Where the slow path is in a chain of slots (see the module notes), across syncs.
    chain: Chain,
}

/// The slow path's position in a chain of NS_MOREFRAG slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Chain {
    /// The next slot starts a frame.
    #[default]
    Start,
    /// Inside a chain whose first slot crossed: the rest cross as they are.
    Pass,
    /// Inside a chain that was refused: the rest are refused too (not counted again).
    Drop,
}

/// Why a frame could not cross between ends of different header lengths.
enum Refused {
    /// A GSO frame toward an end without a header.
    Gso,
    /// A malformed header, or a frame that would not fit its buffer.
    Bad,
    /// The receiver's own slot holds a buffer index outside the pool.
    PeerBad,
    /// A later slot of a chain already refused.
    Rest,
}

impl PipeTx {
    /// The TX ring `tx` of one end, feeding `peer` (whose ring counts in `peer_stats`);
    /// `hdr_lens`: this end's and the peer's.
    pub fn new(
        tx: RingView,
        (peer, peer_stats): (Arc<DeliveryRing>, Arc<RingStats>),
        bufs: BufPool,
        stats: Arc<RingStats>,
        hdr_lens: [Arc<AtomicU8>; 2],
    ) -> Self {
        Self {
            peer_stats,
            frame: vec![0; bufs.buf_size() as usize],
            tx,
            peer,
            bufs,
            stats,
            hdr_lens,
            chain: Chain::Start,
        }
    }
}

/// Rewrites the `len`-byte frame in buffer `idx` of `bufs` from a `src_len` header to a
/// `dst_len` one, through the scratch `frame`; returns the new length. (Not a method: the TX
/// sync holds the peer's ring borrowed while it calls this.)
fn convert(
    scratch: &mut [u8],
    bufs: &BufPool,
    idx: u32,
    len: usize,
    src_len: usize,
    dst_len: usize,
) -> Result<u16, Refused> {
    let frame = &mut scratch[..len];
    if !bufs.read(idx, 0, frame) {
        return Err(Refused::Bad);
    }
    let hdr = VnetHeader::parse(frame, src_len).map_err(|_| Refused::Bad)?;
    let new_len = dst_len + (len - src_len);
    if new_len > bufs.buf_size() as usize {
        return Err(Refused::Bad);
    }
    let mut head = [0u8; vnet::HDR_LEN_MRG];
    if dst_len == 0 {
        if hdr.is_gso() {
            return Err(Refused::Gso);
        }
        vnet::complete_checksum(&hdr, &mut frame[src_len..]).map_err(|_| Refused::Bad)?;
    } else {
        let num_buffers = u16::from(dst_len == vnet::HDR_LEN_MRG);
        VnetHeader { num_buffers, ..hdr }
            .emit(&mut head, dst_len)
            .expect("room for the header");
    }
    let ok =
        bufs.write(idx, 0, &head[..dst_len]) && bufs.write(idx, dst_len, &scratch[src_len..len]);
    if !ok {
        return Err(Refused::Bad);
    }
    Ok(new_len as u16)
}

/// One TX slot `j` (buffer `ai`, `len` bytes) and the peer's RX slot `d` (buffer `bi`).
#[derive(Clone, Copy)]
struct Slot {
    j: u32,
    d: u32,
    ai: u32,
    len: u16,
    bi: u32,
}

/// The slots the tight loop of [`PipeTx`]'s sync leaves: headers to convert, or a bad index or
/// length on either end. Swaps (converting the frame) or refuses the slot, counting in
/// `counts`; true when the peer's own slot was bad (the peer's loss, counted there).
fn other_slot(
    (tx, rx, bufs): (&RingView, &RingView, &BufPool),
    s: Slot,
    (src_len, dst_len): (usize, usize),
    (scratch, chain): (&mut [u8], &mut Chain),
    counts: &mut BatchCounts,
) -> bool {
    let sane = bufs.valid(s.ai) && u32::from(s.len) <= bufs.buf_size();
    let more = tx.flags(s.j) & slot_flags::MOREFRAG;
    let mut len = s.len;
    let refused = if !bufs.valid(s.bi) {
        Some(Refused::PeerBad)
    } else if !sane {
        Some(Refused::Bad)
    } else if *chain == Chain::Drop {
        Some(Refused::Rest)
    } else if *chain == Chain::Pass {
        None
    } else if more != 0 && dst_len == 0 && src_len > 0 {
        Some(Refused::Gso)
    } else if src_len != dst_len {
        match convert(scratch, bufs, s.ai, usize::from(len), src_len, dst_len) {
            Ok(l) => {
                len = l;
                None
            }
            Err(r) => Some(r),
        }
    } else {
        None
    };
    *chain = match (more != 0, refused.is_some()) {
        (false, _) => Chain::Start,
        (true, false) => Chain::Pass,
        (true, true) => Chain::Drop,
    };
    match refused {
        None => {
            tx.set_buf_idx(s.j, s.bi);
            tx.set_flags(s.j, slot_flags::BUF_CHANGED);
            rx.set_buf_idx(s.d, s.ai);
            rx.set_len(s.d, len);
            rx.set_flags(s.d, slot_flags::BUF_CHANGED | more);
            counts.moved(usize::from(len));
        }
        Some(r) => {
            // Never hand a bad index to the peer: it gets an empty slot instead.
            rx.set_len(s.d, 0);
            rx.set_flags(s.d, 0);
            match r {
                Refused::Gso => counts.drops += 1,
                Refused::Rest => {}
                Refused::Bad => counts.bad_slots += 1,
                // What the peer's corrupt slot lost is the peer's: the sender's packet counts
                // as sent (it left this end intact) and the loss as the peer's bad slot.
                Refused::PeerBad => {
                    counts.packets += 1;
                    return true;
                }
            }
        }
    }
    false
}

/// The common case, kept tight: swaps the buffers of the slot pairs of `tx` and `rx` in order
/// (a chain's MOREFRAG crossing with its slot), as long as both slots are sane. Returns how
/// many pairs it swapped (it stops at the first pair that is not sane, left to the slow path)
/// and their bytes. Only for ends of equal header lengths. Not inlined: alone, its loop keeps
/// everything in registers (the sync around it has too much live state).
#[inline(never)]
fn swap_run(tx: &[AtomicSlot], rx: &[AtomicSlot], bufs: &BufPool) -> (usize, u64) {
    let (mut bytes, buf_size) = (0u64, bufs.buf_size());
    for (n, (t, r)) in tx.iter().zip(rx).enumerate() {
        let (ai, len, bi) = (t.buf_idx(), t.len(), r.buf_idx());
        if !(bufs.valid(ai) && bufs.valid(bi) && u32::from(len) <= buf_size) {
            return (n, bytes);
        }
        let more = t.flags() & slot_flags::MOREFRAG;
        t.set_buf_idx(bi);
        t.set_flags(slot_flags::BUF_CHANGED);
        r.set_buf_idx(ai);
        r.set_len(len);
        r.set_flags(slot_flags::BUF_CHANGED | more);
        bytes += u64::from(len);
    }
    (tx.len().min(rx.len()), bytes)
}

impl PortSync for PipeTx {
    fn sync(&mut self, k: &mut HostKring, _flags: u32) {
        let mut b = TxBatch::new(k);
        let pending = b.pending();
        if pending == 0 {
            return b.finish(k, &self.stats);
        }
        let mut peer_bad = 0u64;
        if self.peer.space() < pending {
            // Take in what the peer guest released since the last pass first (it does not kick
            // for them while no producer waits): the room it gave back moves this batch now.
            self.peer.host_pass(false);
        }
        if let Some(res) = self.peer.reserve(pending) {
            let [mine, theirs] = [0, 1].map(|e| self.hdr_lens[e].load(Ordering::Relaxed));
            let (src_len, dst_len) = (usize::from(mine), usize::from(theirs));
            let rx = &self.peer.ring;
            let mut d = res.start;
            let (same, mut swapped, mut bytes) = (src_len == dst_len, 0u64, 0u64);
            if same {
                // Chains matter to the slow path only between ends of different lengths.
                self.chain = Chain::Start;
            }
            // Contiguous runs of both rings (a run ends where either wraps), each taken as a
            // pair of slices: one bounds check a run, not a clamp per field.
            let (txs, rxs) = (self.tx.slots(), rx.slots());
            let mut left = res.n;
            while left > 0 {
                let Some(j) = b.slot() else { break };
                let room = (rx.num_slots() - d).min(self.tx.num_slots().saturating_sub(j));
                let (j, run) = b.run(left.min(room));
                if run == 0 {
                    break; // (a kring and its ring of different sizes: never, by construction)
                }
                let (txr, rxr) = (
                    &txs[j as usize..][..run as usize],
                    &rxs[d as usize..][..run as usize],
                );
                let mut k = 0;
                while k < run {
                    if same {
                        let (n, b) = swap_run(&txr[k as usize..], &rxr[k as usize..], &self.bufs);
                        (swapped, bytes) = (swapped + n as u64, bytes + b);
                        k += n as u32;
                        if k == run {
                            break;
                        }
                    }
                    // A slot the tight loop left (headers to convert, or a bad slot).
                    let (t, r) = (&txr[k as usize], &rxr[k as usize]);
                    let (ai, len, bi) = (t.buf_idx(), t.len(), r.buf_idx());
                    let slot = Slot {
                        j: j + k,
                        d: d + k,
                        ai,
                        len,
                        bi,
                    };
                    let lens = (src_len, dst_len);
                    let ends = (&self.tx, rx, &self.bufs);
                    let state = (&mut self.frame[..], &mut self.chain);
                    if other_slot(ends, slot, lens, state, &mut b.counts) {
                        peer_bad += 1;
                    }
                    k += 1;
                }
                b.advance(run);
                d = ring_add(d, run, rx.num_slots());
                left -= run;
            }
            b.counts.packets += swapped;
            b.counts.bytes += bytes;
            self.peer.commit(res);
        }
        // Direct delivery, once per sync: publishes what was just committed to the peer guest
        // (a no-op when no guest runs the peer ring: the commit notified its thread), and takes
        // in the slots the peer guest released since the last pass, for the next reservation.
        self.peer.host_pass(false);
        RingStats::add(&self.peer_stats.bad_slots, peer_bad);
        // Swapped slots are complete at once.
        b.finish(k, &self.stats);
    }
}

impl RingSync for PipeTx {
    fn arm(&mut self, k: &HostKring) -> bool {
        // Slots are left only when the peer was short of room. The sync's pass may have found
        // some since (released by the peer guest): then go round again at once. Otherwise ask
        // to be woken (or find room after all).
        k.hwcur != k.rhead && (self.peer.space() > 0 || self.peer.arm_producer())
    }
}

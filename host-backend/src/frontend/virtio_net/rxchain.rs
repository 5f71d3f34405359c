//! Frames in several netmap RX slots toward the guest: a chain of slots, each but the last
//! flagged NS_MOREFRAG (a pipe peer running netmap's stock Linux ptnet driver sends its TSO
//! frames so, up to 64 KiB), and GSO frames that fit one slot. The device offers no GUEST_TSO, so a chain is joined and delivered
//! as ordinary frames: a GSO frame cut into its segments (checksums done, each behind a header
//! asking for nothing), anything else whole (its partial checksum completed), if the guest's
//! buffers take it.
//!
//! A chain still arriving (cut by the ring's tail) waits for the rest, as the stock driver
//! waits; one longer than [`MAX_CHAIN_SLOTS`] slots or [`MAX_FRAME`] bytes, or with a bad slot,
//! is dropped whole. A chain whose segments outrun the guest's buffers resumes at the first
//! segment not delivered.

use super::queue::{HdrConf, RxDrop, RxOutcome, RxWriter};
use super::ring::VirtQueue;
use super::vq::VqStats;
use ptnet_protocol::netmap::{ring_add, slot_flags, BufPool, RingView};
use ptnet_protocol::vnet::{self, VnetHeader};
use vm_memory::{GuestMemoryMmap, VolatileSlice};

/// The longest chain joined: a 64 KiB GSO frame behind its header.
pub const MAX_FRAME: usize = 65_536 + 64;
/// The most slots a chain may span (64 KiB in 2 KiB buffers takes 33).
pub const MAX_CHAIN_SLOTS: u32 = 64;
/// The longest segment cut from a joined GSO frame (a jumbo MTU's), header included.
const MAX_SEGMENT: usize = 9216 + 64;

/// What became of the chain at the head of the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainDone {
    /// Delivered (or dropped, counted): release this many slots.
    Released(u32),
    /// Its last slot has not arrived yet: leave it.
    Incomplete,
    /// The guest's buffers ran out: leave it, resume later.
    NoBuffers,
}

/// The joined frame and one segment of it, allocated on the first chain.
#[derive(Default)]
pub struct ChainRx {
    frame: Vec<u8>,
    segment: Vec<u8>,
    /// Segments of the chain at the head already delivered.
    done: usize,
}

impl ChainRx {
    /// Delivers the chain starting at slot `head` of `rx` (slots up to `tail` received) into
    /// the guest's RX queue `q`, counting in `st`.
    #[allow(clippy::too_many_arguments)]
    pub fn deliver(
        &mut self,
        ring: (&RingView, &BufPool),
        span: (u32, u32),
        writer: &mut RxWriter,
        mem: &GuestMemoryMmap,
        q: &mut VirtQueue,
        conf: &HdrConf,
        st: &VqStats,
    ) -> ChainDone {
        let done = self.deliver_chain(ring, span, writer, mem, q, conf, st);
        if let ChainDone::Released(_) = done {
            // The next chain starts from its first segment.
            self.done = 0;
        }
        done
    }

    /// [`Self::deliver`], but for the segment count it leaves behind.
    #[allow(clippy::too_many_arguments)]
    fn deliver_chain(
        &mut self,
        (rx, bufs): (&RingView, &BufPool),
        (head, tail): (u32, u32),
        writer: &mut RxWriter,
        mem: &GuestMemoryMmap,
        q: &mut VirtQueue,
        conf: &HdrConf,
        st: &VqStats,
    ) -> ChainDone {
        if self.frame.is_empty() {
            self.frame = vec![0; MAX_FRAME];
            self.segment = vec![0; MAX_SEGMENT];
        }
        let (mut at, mut slots, mut total, mut ok) = (head, 0u32, 0usize, true);
        loop {
            if at == tail {
                if slots + 1 < rx.num_slots() {
                    return ChainDone::Incomplete;
                }
                // The whole ring is one unfinished chain: no more can come. Dropped.
                ok = false;
                break;
            }
            let (idx, len) = (rx.buf_idx(at), usize::from(rx.len(at)));
            ok = ok
                && total + len <= self.frame.len()
                && len <= bufs.buf_size() as usize
                && bufs.read(idx, 0, &mut self.frame[total..total + len]);
            total += len;
            slots += 1;
            let more = rx.flags(at) & slot_flags::MOREFRAG != 0;
            at = ring_add(at, 1, rx.num_slots());
            if !more {
                break;
            }
            if slots == MAX_CHAIN_SLOTS {
                ok = false;
                break;
            }
        }
        let released = ChainDone::Released(slots);
        let plen = conf.port_len;
        let hdr = if !ok || total < plen {
            None
        } else {
            VnetHeader::parse(&self.frame[..total], plen).ok()
        };
        let Some(hdr) = hdr else {
            VqStats::add(&st.bad_headers, 1);
            return released;
        };
        if !hdr.is_gso() {
            // One frame: its checksum finished here (the writer's scratch holds one buffer).
            if hdr.needs_csum() {
                if vnet::complete_checksum(&hdr, &mut self.frame[plen..total]).is_err() {
                    VqStats::add(&st.bad_headers, 1);
                    return released;
                }
                self.frame[..plen].fill(0);
            }
            let frame = VolatileSlice::from(&mut self.frame[..total]);
            return match writer.deliver(mem, q, &frame, conf) {
                RxOutcome::NoBuffers => ChainDone::NoBuffers,
                out => {
                    count(st, out, total - plen);
                    released
                }
            };
        }
        let g = match vnet::Gso::new(&hdr, &self.frame[plen..total]) {
            Ok(g) if plen + g.segment_len(0) <= self.segment.len() => g,
            _ => {
                VqStats::add(&st.bad_headers, 1);
                return released;
            }
        };
        let seg_hdr = VnetHeader::default();
        while self.done < g.count() {
            seg_hdr
                .emit(&mut self.segment[..plen], plen)
                .expect("a valid header length");
            let n = g
                .write_segment(
                    &self.frame[plen..total],
                    self.done,
                    &mut self.segment[plen..],
                )
                .expect("checked by Gso::new and sized above");
            let seg = VolatileSlice::from(&mut self.segment[..plen + n]);
            match writer.deliver(mem, q, &seg, conf) {
                RxOutcome::NoBuffers => return ChainDone::NoBuffers,
                out => count(st, out, n),
            }
            self.done += 1;
        }
        released
    }
}

/// Counts one frame of `len` bytes the writer delivered or dropped.
fn count(st: &VqStats, out: RxOutcome, len: usize) {
    let c = match out {
        RxOutcome::Delivered(_) => {
            VqStats::add(&st.bytes, len as u64);
            &st.packets
        }
        RxOutcome::Dropped(RxDrop::BadFrame) | RxOutcome::NoBuffers | RxOutcome::Gso => {
            &st.bad_headers
        }
        RxOutcome::Dropped(RxDrop::NoRoom) => &st.too_long,
        RxOutcome::Dropped(RxDrop::BadChain) => &st.bad_chains,
    };
    VqStats::add(c, 1);
}

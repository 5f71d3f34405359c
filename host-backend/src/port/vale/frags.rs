//! Frames in several slots (NS_MOREFRAG chains) through the switch: assembled, then delivered
//! as single-slot frames (see the parent module's notes).

use super::{Converted, Route, ValeTx, ETH_HLEN};
use crate::port::ring::TxBatch;
use ptnet_protocol::netmap::slot_flags;
use std::sync::atomic::Ordering;

/// The longest frame the switch assembles from a chain of slots: a 64 KiB GSO frame (what
/// Linux sends at most) behind a virtio-net header, with room for its Ethernet header.
pub const MAX_FRAME: usize = 65_536 + 64;

impl ValeTx {
    /// Takes the chain of slots starting at the batch's current slot (flagged MOREFRAG) up to
    /// and including its last slot, assembles the frame in `self.frame` and delivers it. A
    /// chain that is bad (a slot's index or length, longer than [`MAX_FRAME`], unfinished at
    /// the guest's head, shorter than its headers, a malformed header) counts all its slots in
    /// `bad_slots`; a destination without room drops the frame (one drop).
    pub(super) fn multi_slot(&mut self, b: &mut TxBatch, my_len: usize) {
        let buf_size = self.bufs.buf_size() as usize;
        if self.frame.len() < MAX_FRAME {
            // Once per ring, on its first chain (most senders never chain).
            self.frame.resize(MAX_FRAME, 0);
        }
        let (mut total, mut slots, mut ok, mut complete) = (0usize, 0u64, true, false);
        // The first slot's flags speak for the frame (NO_LEARN).
        let first_flags = b.slot().map_or(0, |j| self.tx.flags(j));
        while let Some(j) = b.slot() {
            let (idx, len, flags) = (
                self.tx.buf_idx(j),
                usize::from(self.tx.len(j)),
                self.tx.flags(j),
            );
            slots += 1;
            ok = ok
                && len <= buf_size
                && total + len <= self.frame.len()
                && self.bufs.read(idx, 0, &mut self.frame[total..total + len]);
            total += len;
            b.next();
            if flags & slot_flags::MOREFRAG == 0 {
                complete = true;
                break;
            }
        }
        let mut macs = [0u8; 12];
        if !ok || !complete || total < my_len + ETH_HLEN {
            b.counts.bad_slots += slots;
            return;
        }
        macs.copy_from_slice(&self.frame[my_len..my_len + 12]);
        let (dests, unicast) = match self.route(&macs, first_flags, &mut b.counts) {
            Route::Refused | Route::Nowhere => return,
            Route::To(p) => (p..p + 1, true),
            Route::Flood => (0..self.lists.len(), false),
        };
        b.counts.moved(total);
        let mut bad = false;
        for p in dests {
            if p == self.me {
                continue;
            }
            let Some(dst) = self.dst(p).cloned() else {
                // A port removed since the table was taken (a flood just skips its slot).
                b.counts.no_route += u64::from(unicast);
                continue;
            };
            let dst_len = usize::from(dst.vnet_hdr_len.load(Ordering::Relaxed));
            let rx = dst.rx[self.ring_no % dst.rx.len()].clone();
            match self.convert_frame(&rx, total, (my_len, dst_len), true) {
                Converted::Sent(_) => {
                    // Direct delivery: published to the destination's guest from here.
                    rx.host_pass(false);
                }
                Converted::Dropped => b.counts.drops += 1,
                Converted::Bad(e) => {
                    tracing::debug!(switch = self.switch.name, port = self.me, "dropped: {e}");
                    bad = true;
                    break;
                }
            }
        }
        if bad {
            // The sender's own malformed frame: its slots are bad, once.
            b.counts.packets -= 1;
            b.counts.bytes -= total as u64;
            b.counts.bad_slots += slots;
        }
    }
}

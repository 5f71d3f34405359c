//! The memory-sharing probe: do two ports live in one netmap memory, so that buffer indexes of
//! one name buffers of the other (zero-copy forwarding)?

use super::Port;

impl Port {
    /// Do this port and `other` live in one netmap memory, so that buffer indexes of one are
    /// buffers of the other (the two ends of a netmap pipe, ports of one kernel netmap
    /// allocator)? Then [`TxRing::forward_from`](crate::TxRing::forward_from) may swap buffers between their rings
    /// ([`ForwardMode::SwapBuffers`](crate::ForwardMode::SwapBuffers)).
    ///
    /// Equal memory ids (the memdev's MEMID) are necessary but not enough: ids are only unique
    /// within one host (two daemons both have a memory 2). So the buffer pools must have the same
    /// geometry, and a probe decides: two random values written into the buffer of a free TX
    /// slot of this port (a buffer the application owns and has not published) must read back
    /// through `other`'s mapping of the same buffer index. False when this port has no free TX
    /// slot to probe with.
    #[must_use]
    pub fn shares_memory_with(&mut self, other: &Port) -> bool {
        if self.mem_id != other.mem_id
            || self.bufs.num() != other.bufs.num()
            || self.bufs.buf_size() != other.bufs.buf_size()
        {
            return false;
        }
        let Some(r) = self.rings[..self.num_tx_rings as usize]
            .iter()
            .find(|r| r.avail() > 0)
        else {
            return false;
        };
        let idx = r.view.buf_idx(r.cur);
        if !self.bufs.valid(idx) {
            return false;
        }
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(idx);
        let nonce = h.finish();
        [nonce, !nonce].into_iter().all(|v| {
            let mut back = [0u8; 8];
            self.bufs.write(idx, 0, &v.to_le_bytes())
                && other.bufs.read(idx, 0, &mut back)
                && u64::from_le_bytes(back) == v
        })
    }
}

//! The virtio-net frontend's one piece of `unsafe`: the port's netmap buffers as vm-memory
//! volatile slices, so that a copy goes straight between guest memory and a netmap buffer.

use ptnet_protocol::netmap::BufPool;
use vm_memory::VolatileSlice;

/// Buffer `idx` of `pool` as a volatile slice (`None`: not a buffer of the pool). The slice
/// borrows the pool, whose memory window keeps the mapping alive: nothing is taken per buffer.
#[inline]
pub fn buffer(pool: &BufPool, idx: u32) -> Option<VolatileSlice<'_>> {
    let (off, len) = (pool.offset(idx)?, pool.buf_size() as usize);
    let m = pool.mem();
    if !m.contains(off, len) {
        return None;
    }
    // SAFETY: `[off, off + len)` lies inside `m` (checked just above), a window of a shared
    // mapping that stays mapped while `m` (which holds its keepalive) lives; the slice borrows
    // `pool`, hence `m`. Every access through it is volatile, so concurrent access by others
    // sharing the memory is as `SharedMem`'s own copies tolerate.
    Some(unsafe { VolatileSlice::new(m.as_ptr().wrapping_add(off), len) })
}

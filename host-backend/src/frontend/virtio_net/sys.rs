//! The virtio-net frontend's one piece of `unsafe`: the port's netmap buffers as vm-memory
//! volatile slices, so that a copy goes straight between guest memory and a netmap buffer.

use ptnet_protocol::shmem::SharedMem;
use vm_memory::VolatileSlice;

/// A window of the port's netmap memory (a buffer) as a volatile slice.
pub fn volatile(m: &SharedMem) -> VolatileSlice<'_> {
    // SAFETY: a `SharedMem` is a window of a live shared mapping, valid for `len` bytes for as
    // long as its owner (the port's `NetmapMemory`, which the device's `Arc<Port>` keeps) lives;
    // the slice borrows `m`, and every access through it is volatile, so concurrent access by
    // others sharing the memory is as `SharedMem`'s own copies tolerate.
    unsafe { VolatileSlice::new(m.as_ptr(), m.len()) }
}

//! The device side of a packed virtqueue (`VIRTIO_F_RING_PACKED`, virtio 1.2 section 2.8):
//! virtio-queue 0.18 has the descriptor layout but no packed queue, so this is ours.
//!
//! One ring of 16-byte descriptors (address, length, buffer id, flags) serves both directions:
//! the driver makes a chain available by writing its descriptors at the positions after the last
//! one it wrote, the head's flags last, with the `AVAIL` bit equal to its wrap counter and `USED`
//! the opposite; the device writes one used descriptor per chain (the buffer id, the bytes
//! written, `AVAIL` = `USED` = its own wrap counter) at its used position and moves that on by
//! the chain's length. Each side's counter flips when its position wraps. Event suppression is
//! one 4-byte structure a side (`off_wrap`, `flags`: enable, disable, or with EVENT_IDX a
//! descriptor position to notify at): the driver's (in the driver area) says when to interrupt,
//! ours (in the device area) when the driver should kick.
//!
//! Everything the driver wrote is untrusted. A chain whose later descriptors are not available
//! (a wrap counter that makes no sense), longer than the ring, or whose buffer id is not below
//! the queue size leaves the queue broken ([`PackedQueue::error`]): nothing more is taken from
//! it until it is set up again, and the caller counts and logs that once. A chain with a bad
//! indirect table (a length that is not a multiple of 16, a table outside guest memory, nested
//! tables, an indirect descriptor inside a chain) yields that error from its iterator: the frame
//! is dropped and the chain returned empty. Descriptor addresses are the copy's business, like
//! the split queue's.

use super::mem::MemCache;
use super::ring::{Head, VqError};
use std::sync::atomic::{fence, AtomicU64, Ordering};
use virtio_queue::desc::{packed, split};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileMemory,
    VolatileSlice,
};

/// Descriptor flags (the split ring's three, plus the two availability bits).
pub const F_NEXT: u16 = 1;
/// Device-writable buffer.
pub const F_WRITE: u16 = 2;
/// The buffer is a table of descriptors.
pub const F_INDIRECT: u16 = 4;
/// Available bit.
pub const F_AVAIL: u16 = 1 << 7;
/// Used bit.
pub const F_USED: u16 = 1 << 15;

/// Event suppression `flags`: notifications on.
pub const EVENT_ENABLE: u16 = 0;
/// Notifications off.
pub const EVENT_DISABLE: u16 = 1;
/// A notification when the descriptor at `off_wrap` is reached (EVENT_IDX only).
pub const EVENT_DESC: u16 = 2;

/// Most descriptors in one indirect table (the largest queue's size).
pub const MAX_INDIRECT: u32 = super::MAX_QUEUE_SIZE as u32;

/// Most descriptors one in-order used descriptor stands for ([`PackedQueue::defer_used`]).
pub const USED_BATCH: u16 = 32;

/// The vhost-user form of a position: the index in bits 0-14, the wrap counter in bit 15 (what
/// GET_VRING_BASE returns and SET_VRING_BASE gives).
pub fn encode(pos: u16, wrap: bool) -> u16 {
    (pos & 0x7fff) | (u16::from(wrap) << 15)
}

/// The index and wrap counter of an encoded position.
pub fn decode(v: u16) -> (u16, bool) {
    (v & 0x7fff, v & 0x8000 != 0)
}

/// Is a descriptor with these flags available to a device whose avail wrap counter is `wrap`?
fn is_avail(flags: u16, wrap: bool) -> bool {
    (flags & F_AVAIL != 0) == wrap && (flags & F_USED != 0) != wrap
}

/// A packed virtqueue, device side.
#[derive(Debug)]
pub struct PackedQueue {
    size: u16,
    ring: GuestAddress,
    /// Driver event suppression (the driver area).
    driver: GuestAddress,
    /// Device event suppression (the device area).
    device: GuestAddress,
    event_idx: bool,
    avail: u16,
    avail_wrap: bool,
    used: u16,
    used_wrap: bool,
    /// Descriptors used since set-up, and when the driver was last asked about an interrupt.
    used_total: u32,
    signalled_total: u32,
    /// The first position found not available (encoded), for [`Self::arm_avail_past`].
    seen_end: u16,
    error: Option<VqError>,
    /// `VIRTIO_F_IN_ORDER` negotiated: chains used without bytes written may go into the ring
    /// as one used descriptor a batch ([`Self::defer_used`]).
    in_order: bool,
    /// The batch not yet in the ring: the last chain's buffer id, and the descriptors of all
    /// its chains (from the used position on).
    pending: (u16, u16),
}

impl PackedQueue {
    /// A queue of `size` descriptors at `ring`, its driver and device areas at `driver` and
    /// `device`, starting at the encoded position `base` (both avail and used: a queue is set
    /// up stopped). Checks everything against `mem`.
    pub fn new(
        mem: &GuestMemoryMmap,
        size: u16,
        (ring, driver, device): (u64, u64, u64),
        event_idx: bool,
        base: u16,
    ) -> Result<Self, VqError> {
        let (pos, wrap) = decode(base);
        if size == 0 || size > super::MAX_QUEUE_SIZE {
            return Err(VqError::BadSize { size });
        }
        if pos >= size {
            return Err(VqError::BaseBeyondQueue { base });
        }
        let inside = |a: u64, len: usize, align: u64| {
            a.is_multiple_of(align) && mem.get_slice(GuestAddress(a), len).is_ok()
        };
        if !inside(ring, 16 * usize::from(size), 16)
            || !inside(driver, 4, 4)
            || !inside(device, 4, 4)
        {
            return Err(VqError::RingOutside);
        }
        Ok(Self {
            size,
            ring: GuestAddress(ring),
            driver: GuestAddress(driver),
            device: GuestAddress(device),
            event_idx,
            avail: pos,
            avail_wrap: wrap,
            used: pos,
            used_wrap: wrap,
            used_total: 0,
            signalled_total: 0,
            seen_end: base,
            error: None,
            in_order: false,
            pending: (0, 0),
        })
    }

    /// `VIRTIO_F_IN_ORDER` negotiated (set before the queue runs).
    pub fn set_in_order(&mut self, yes: bool) {
        self.in_order = yes;
    }

    /// The queue size.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// The next descriptor to take, encoded.
    pub fn next_avail(&self) -> u16 {
        encode(self.avail, self.avail_wrap)
    }

    /// The next used position, encoded.
    pub fn next_used(&self) -> u16 {
        encode(self.used, self.used_wrap)
    }

    /// Why the queue stopped, if it did.
    pub fn error(&self) -> Option<VqError> {
        self.error
    }

    fn at(&self, pos: u16) -> GuestAddress {
        self.ring.unchecked_add(16 * u64::from(pos))
    }

    fn flags(&self, mem: &GuestMemoryMmap, pos: u16) -> Option<u16> {
        mem.load::<u16>(self.at(pos).unchecked_add(14), Ordering::Acquire)
            .ok()
            .map(u16::from_le)
    }

    /// The descriptor at `pos`: (address, length, id, flags). Length, id and flags are one
    /// acquire load (the flags the driver writes last with a release store come with the
    /// length and id written before them), then the address.
    fn read(ring: &VolatileSlice<'_>, pos: u16) -> Option<(u64, u32, u16, u16)> {
        let at = 16 * usize::from(pos);
        // (Through the atomic references: vm-memory's `load` is an out-of-line call a field.)
        let w = u64::from_le(
            ring.get_atomic_ref::<AtomicU64>(at + 8)
                .ok()?
                .load(Ordering::Acquire),
        );
        let addr = u64::from_le(
            ring.get_atomic_ref::<AtomicU64>(at)
                .ok()?
                .load(Ordering::Relaxed),
        );
        Some((addr, w as u32, (w >> 32) as u16, (w >> 48) as u16))
    }

    /// The descriptor ring (checked inside one region at set-up): one look-up a pop, not one a
    /// field.
    fn ring_in<'m>(&self, mc: &mut MemCache<'m>) -> Option<VolatileSlice<'m>> {
        mc.ring(self.ring, 16 * usize::from(self.size))
    }

    fn fail(&mut self, e: VqError) -> Option<PackedChain<'static>> {
        self.error = Some(e);
        None
    }

    /// The next available chain, or `None` when there is none (or the queue is broken).
    pub fn pop<'m>(&mut self, mem: &'m GuestMemoryMmap) -> Option<PackedChain<'m>> {
        self.pop_in(&mut MemCache::new(mem))
    }

    /// [`Self::pop`] with a round's region cache.
    #[inline(always)]
    pub fn pop_in<'m>(&mut self, mc: &mut MemCache<'m>) -> Option<PackedChain<'m>> {
        if self.error.is_some() {
            return None;
        }
        let mem = mc.mem;
        let Some(ring) = self.ring_in(mc) else {
            return self.fail(VqError::DescOutside);
        };
        let (mut pos, mut wrap) = (self.avail, self.avail_wrap);
        let start = pos;
        let mut n = 0u16;
        let mut bad = None;
        let mut table = None;
        let mut first = split::Descriptor::new(0, 0, 0, 0);
        let id = loop {
            let Some((addr, len, id, flags)) = Self::read(&ring, pos) else {
                return self.fail(VqError::DescOutside);
            };
            if !is_avail(flags, wrap) {
                if n == 0 {
                    self.seen_end = encode(pos, wrap);
                    return None;
                }
                return self.fail(VqError::ChainNotAvailable { at: pos });
            }
            n += 1;
            if n == 1 {
                first = split::Descriptor::new(addr, len, flags & F_WRITE, 0);
            }
            if flags & F_INDIRECT != 0 {
                if n > 1 || flags & F_NEXT != 0 {
                    bad = Some(VqError::IndirectInChain);
                } else {
                    table = Some((GuestAddress(addr), len));
                }
            }
            pos += 1;
            if pos == self.size {
                pos = 0;
                wrap = !wrap;
            }
            if flags & F_NEXT == 0 {
                break id;
            }
            if n == self.size {
                return self.fail(VqError::ChainTooLong);
            }
        };
        if id >= self.size {
            return self.fail(VqError::IdOutOfRange { id });
        }
        (self.avail, self.avail_wrap) = (pos, wrap);
        let (rest, left) = match (bad, table) {
            (Some(e), _) => (Rest::Bad(e), n),
            (None, Some((a, l))) => (Rest::Table(a, l), 0),
            (None, None) => (Rest::Ring, n),
        };
        Some(PackedChain {
            mem,
            ring,
            first,
            head: Head { id, ndesc: n },
            size: self.size,
            pos: start,
            left,
            rest,
        })
    }

    /// Gives back the last chain taken (`head`), as if it had not been.
    pub fn undo_pop(&mut self, head: Head) {
        let n = head.ndesc.min(self.size);
        if self.avail >= n {
            self.avail -= n;
        } else {
            self.avail = self.avail + self.size - n;
            self.avail_wrap = !self.avail_wrap;
        }
    }

    /// Puts chain `head` in the ring as used, `len` bytes written.
    pub fn add_used(&mut self, mem: &GuestMemoryMmap, head: Head, len: u32) -> Result<(), VqError> {
        self.add_used_in(&mut MemCache::new(mem), head, len)
    }

    /// [`Self::add_used`] with a round's region cache.
    #[inline]
    pub fn add_used_in(
        &mut self,
        mc: &mut MemCache<'_>,
        head: Head,
        len: u32,
    ) -> Result<(), VqError> {
        if head.id >= self.size || head.ndesc == 0 || head.ndesc > self.size {
            return Err(VqError::IdOutOfRange { id: head.id });
        }
        let mut flags = if self.used_wrap { F_AVAIL | F_USED } else { 0 };
        if len > 0 {
            flags |= F_WRITE;
        }
        // Length, id and flags in one store (the flags, which publish the entry, cannot be seen
        // before the rest).
        let word = u64::from(len) | u64::from(head.id) << 32 | u64::from(flags) << 48;
        self.ring_in(mc)
            .and_then(|r| {
                r.get_atomic_ref::<AtomicU64>(16 * usize::from(self.used) + 8)
                    .ok()
                    .map(|a| a.store(word.to_le(), Ordering::Release))
            })
            .ok_or(VqError::DescOutside)?;
        self.used += head.ndesc;
        if self.used >= self.size {
            self.used -= self.size;
            self.used_wrap = !self.used_wrap;
        }
        self.used_total = self.used_total.wrapping_add(u32::from(head.ndesc));
        Ok(())
    }

    /// Puts chain `head` in the ring as used with no bytes written (a TX chain): with
    /// `VIRTIO_F_IN_ORDER` it joins the batch that [`Self::flush_used`] writes as one used
    /// descriptor (the last chain's id, the used position moved past all of them: virtio 1.2
    /// section 2.8.20), else at once. Checked as [`Self::add_used`] checks.
    #[inline]
    pub fn defer_used(&mut self, mc: &mut MemCache<'_>, head: Head) -> Result<(), VqError> {
        if !self.in_order {
            return self.add_used_in(mc, head, 0);
        }
        if head.id >= self.size || head.ndesc == 0 || head.ndesc > self.size {
            return Err(VqError::IdOutOfRange { id: head.id });
        }
        // Bounded, so the driver gets descriptors back while a long round goes on.
        if self.pending.1 + head.ndesc > USED_BATCH.min(self.size) {
            self.flush_used(mc)?;
        }
        self.pending = (head.id, self.pending.1 + head.ndesc);
        Ok(())
    }

    /// Writes the batch of [`Self::defer_used`] (nothing when there is none).
    #[inline]
    pub fn flush_used(&mut self, mc: &mut MemCache<'_>) -> Result<(), VqError> {
        let (id, ndesc) = self.pending;
        if ndesc == 0 {
            return Ok(());
        }
        self.pending = (0, 0);
        self.add_used_in(mc, Head { id, ndesc }, 0)
    }

    fn set_device_event(&self, mem: &GuestMemoryMmap, flags: u16, off_wrap: u16) {
        if flags == EVENT_DESC {
            let _ = mem.store(off_wrap.to_le(), self.device, Ordering::Relaxed);
        }
        let _ = mem.store(
            flags.to_le(),
            self.device.unchecked_add(2),
            Ordering::Release,
        );
    }

    /// Kicks off.
    pub fn disable_notification(&mut self, mem: &GuestMemoryMmap) {
        self.set_device_event(mem, EVENT_DISABLE, 0);
    }

    /// Kicks on (with EVENT_IDX: at the next descriptor to take). True when a chain is there
    /// already (do not sleep).
    pub fn enable_notification(&mut self, mem: &GuestMemoryMmap) -> bool {
        let next = self.next_avail();
        self.arm_at(mem, next)
    }

    /// The first position found not available (encoded): what [`Self::arm_avail_past`] takes.
    pub fn avail_mark(&self) -> u16 {
        self.seen_end
    }

    /// Asks for a kick once the driver makes the descriptor at `mark` available. False when it
    /// is already (do not sleep).
    pub fn arm_avail_past(&mut self, mem: &GuestMemoryMmap, mark: u16) -> bool {
        !self.arm_at(mem, mark)
    }

    fn arm_at(&mut self, mem: &GuestMemoryMmap, mark: u16) -> bool {
        if self.event_idx {
            self.set_device_event(mem, EVENT_DESC, mark);
        } else {
            self.set_device_event(mem, EVENT_ENABLE, 0);
        }
        fence(Ordering::SeqCst);
        let (pos, wrap) = decode(mark);
        pos < self.size && self.flags(mem, pos).is_some_and(|f| is_avail(f, wrap))
    }

    /// Does the driver want an interrupt for what was used since it was last asked?
    pub fn needs_notification(&mut self, mem: &GuestMemoryMmap) -> bool {
        fence(Ordering::SeqCst);
        let delta = self.used_total.wrapping_sub(self.signalled_total);
        self.signalled_total = self.used_total;
        let Ok(flags) = mem.load::<u16>(self.driver.unchecked_add(2), Ordering::Acquire) else {
            return true;
        };
        match u16::from_le(flags) {
            EVENT_DISABLE => false,
            EVENT_DESC if self.event_idx => {
                if delta == 0 {
                    return false;
                }
                let Ok(off_wrap) = mem.load::<u16>(self.driver, Ordering::Acquire) else {
                    return true;
                };
                let (off, ewrap) = decode(u16::from_le(off_wrap));
                // Positions on a cycle of two rings (one per wrap counter value): interrupt
                // when the event descriptor is among those used since the last check.
                let cycle = 2 * u32::from(self.size);
                let lin = |p: u16, w: bool| u32::from(p) + if w { u32::from(self.size) } else { 0 };
                let new = lin(self.used, self.used_wrap);
                let ev = lin(off, ewrap) % cycle;
                let since = (new + 2 * cycle - ev - 1) % cycle;
                delta >= u32::from(self.size) || since < delta
            }
            _ => true,
        }
    }
}

/// The descriptors of one packed chain, as split descriptors (address, length, the `WRITE`
/// flag); the error of a bad indirect table instead of its descriptors.
pub struct PackedChain<'m> {
    mem: &'m GuestMemoryMmap,
    /// The descriptor ring (checked at the pop).
    ring: VolatileSlice<'m>,
    /// The head descriptor, read by [`PackedQueue::pop`] already (given while `left` is the
    /// chain's length).
    first: split::Descriptor,
    head: Head,
    size: u16,
    /// Next ring position, and ring descriptors left (table entries left in a table).
    pos: u16,
    left: u16,
    rest: Rest,
}

/// Where a chain's descriptors come from (kept small: a chain is built for every frame).
#[derive(Clone, Copy)]
enum Rest {
    /// The ring.
    Ring,
    /// The indirect table (address, length) not yet read, then (next entry, length).
    Table(GuestAddress, u32),
    /// An error that ends the chain, given first.
    Bad(VqError),
}

impl PackedChain<'_> {
    /// The chain's buffer id and length in the ring.
    pub fn head(&self) -> Head {
        self.head
    }

    fn desc(d: &packed::Descriptor, flags: u16) -> split::Descriptor {
        split::Descriptor::new(d.addr().0, d.len(), flags & F_WRITE, 0)
    }
}

impl PackedChain<'_> {
    /// The next entry of the indirect table (checked before its first entry), or its error.
    #[cold]
    #[inline(never)]
    fn next_indirect(
        &mut self,
        addr: GuestAddress,
        len: u32,
    ) -> Result<split::Descriptor, VqError> {
        if self.left == 0 {
            let n = len / 16;
            if len == 0 || !len.is_multiple_of(16) || n > MAX_INDIRECT {
                self.rest = Rest::Ring;
                return Err(VqError::IndirectLen { len });
            }
            if self.mem.get_slice(addr, len as usize).is_err() {
                self.rest = Rest::Ring;
                return Err(VqError::IndirectOutside);
            }
            self.left = n as u16;
        }
        let d = self.mem.read_obj::<packed::Descriptor>(addr);
        self.left -= 1;
        self.rest = if self.left > 0 {
            Rest::Table(addr.unchecked_add(16), len)
        } else {
            Rest::Ring
        };
        match d {
            Err(_) => {
                (self.rest, self.left) = (Rest::Ring, 0);
                Err(VqError::IndirectOutside)
            }
            Ok(d) if d.flags() & F_INDIRECT != 0 => {
                (self.rest, self.left) = (Rest::Ring, 0);
                Err(VqError::NestedIndirect)
            }
            Ok(d) => Ok(Self::desc(&d, d.flags())),
        }
    }

    /// The error that ends a chain.
    #[cold]
    fn end_bad(&mut self, e: VqError) -> Option<Result<split::Descriptor, VqError>> {
        self.left = 0;
        self.rest = Rest::Ring;
        Some(Err(e))
    }
}

impl Iterator for PackedChain<'_> {
    type Item = Result<split::Descriptor, VqError>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        match self.rest {
            Rest::Ring => {}
            Rest::Table(addr, len) => return Some(self.next_indirect(addr, len)),
            Rest::Bad(e) => return self.end_bad(e),
        }
        if self.left == 0 {
            return None;
        }
        let first = self.left == self.head.ndesc;
        self.left -= 1;
        let at = self.pos;
        self.pos = if self.pos + 1 == self.size {
            0
        } else {
            self.pos + 1
        };
        if first {
            return Some(Ok(self.first));
        }
        Some(
            PackedQueue::read(&self.ring, at)
                .map(|(addr, len, _, flags)| split::Descriptor::new(addr, len, flags & F_WRITE, 0))
                .ok_or(VqError::DescOutside),
        )
    }
}

#[cfg(test)]
mod tests;

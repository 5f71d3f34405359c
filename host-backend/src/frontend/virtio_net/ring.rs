//! A virtqueue of either layout, as the TX and RX paths see it ([`VirtQueue`]): virtio-queue's
//! split queue or our [`PackedQueue`], behind the few operations the data path needs (take a
//! chain, give one back, put one in the used ring, kicks and interrupts), so `queue.rs` and
//! `worker.rs` are written once for both.

use super::mem::MemCache;
use super::packed::{PackedChain, PackedQueue};
use std::num::Wrapping;
use std::sync::atomic::{fence, Ordering};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// A chain as taken: what putting it in the used ring (or back) needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// The split ring's head index, the packed ring's buffer id.
    pub id: u16,
    /// Ring descriptors it spans (packed; 1 for a split chain).
    pub ndesc: u16,
}

/// What was wrong with a queue or a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VqError {
    /// Split: the avail index more than a queue ahead of what was consumed.
    #[error("the avail index is more than a queue ahead")]
    AvailOutOfRange,
    /// Packed: a buffer id not below the queue size.
    #[error("buffer id {id} beyond the queue")]
    IdOutOfRange {
        /// The id.
        id: u16,
    },
    /// Packed: a chain with more descriptors than the ring.
    #[error("a chain longer than the queue")]
    ChainTooLong,
    /// Packed: a chain whose descriptor at `at` is not available (its wrap bits are wrong).
    #[error("descriptor {at} of a chain is not available (wrap counter)")]
    ChainNotAvailable {
        /// The ring position.
        at: u16,
    },
    /// A descriptor ring entry that cannot be read or written.
    #[error("a ring entry outside guest memory")]
    DescOutside,
    /// Packed: an indirect descriptor with `NEXT`, or after another descriptor of the chain.
    #[error("an indirect descriptor inside a chain")]
    IndirectInChain,
    /// Packed: an indirect table of `len` bytes (zero, not a multiple of 16, or too long).
    #[error("an indirect table of {len} bytes")]
    IndirectLen {
        /// Its length.
        len: u32,
    },
    /// Packed: an indirect table outside guest memory.
    #[error("an indirect table outside guest memory")]
    IndirectOutside,
    /// Packed: an indirect table inside an indirect table.
    #[error("nested indirect tables")]
    NestedIndirect,
    /// Set-up: a queue size that is zero or too large.
    #[error("a queue size of {size}")]
    BadSize {
        /// The size.
        size: u16,
    },
    /// Set-up: a packed base whose index is not below the queue size.
    #[error("a vring base of {base:#x} beyond the queue")]
    BaseBeyondQueue {
        /// The encoded base.
        base: u16,
    },
    /// Set-up: the ring or an event area not inside guest memory, or misaligned.
    #[error("the ring or its event areas are outside guest memory or misaligned")]
    RingOutside,
}

/// A virtqueue of either layout.
#[derive(Debug)]
pub enum VirtQueue {
    /// virtio-queue's split queue.
    Split(Queue),
    /// Ours.
    Packed(PackedQueue),
}

/// One chain of either layout: its descriptors, or the error that ends it.
pub enum Chain<'m> {
    /// A split chain (virtio-queue ends it at a descriptor it cannot read).
    Split(DescriptorChain<&'m GuestMemoryMmap>),
    /// A packed chain.
    Packed(PackedChain<'m>),
}

impl Chain<'_> {
    /// What putting it in the used ring needs.
    pub fn head(&self) -> Head {
        match self {
            Self::Split(c) => Head {
                id: c.head_index(),
                ndesc: 1,
            },
            Self::Packed(c) => c.head(),
        }
    }
}

impl Iterator for Chain<'_> {
    type Item = Result<Descriptor, VqError>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::Split(c) => c.next().map(Ok),
            Self::Packed(c) => c.next(),
        }
    }
}

impl VirtQueue {
    /// The next available chain.
    #[inline]
    pub fn pop<'m>(&mut self, mem: &'m GuestMemoryMmap) -> Option<Chain<'m>> {
        self.pop_in(&mut MemCache::new(mem))
    }

    /// [`Self::pop`] with a round's region cache.
    #[inline(always)]
    pub fn pop_in<'m>(&mut self, mc: &mut MemCache<'m>) -> Option<Chain<'m>> {
        match self {
            Self::Split(q) => q.pop_descriptor_chain(mc.mem).map(Chain::Split),
            Self::Packed(q) => q.pop_in(mc).map(Chain::Packed),
        }
    }

    /// Gives back the last chain taken.
    pub fn undo_pop(&mut self, head: Head) {
        match self {
            Self::Split(q) => q.go_to_previous_position(),
            Self::Packed(q) => q.undo_pop(head),
        }
    }

    /// Puts a chain in the used ring.
    #[inline]
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
        match self {
            Self::Split(q) => q
                .add_used(mc.mem, head.id, len)
                .map_err(|_| VqError::IdOutOfRange { id: head.id }),
            Self::Packed(q) => q.add_used_in(mc, head, len),
        }
    }

    /// Puts a chain with no bytes written (TX) in the used ring: a packed in-order queue
    /// batches them until [`Self::flush_used`].
    #[inline]
    pub fn add_used_tx(&mut self, mc: &mut MemCache<'_>, head: Head) -> Result<(), VqError> {
        match self {
            Self::Split(_) => self.add_used_in(mc, head, 0),
            Self::Packed(q) => q.defer_used(mc, head),
        }
    }

    /// Writes what [`Self::add_used_tx`] batched (before the driver is notified).
    #[inline]
    pub fn flush_used(&mut self, mc: &mut MemCache<'_>) -> Result<(), VqError> {
        match self {
            Self::Split(_) => Ok(()),
            Self::Packed(q) => q.flush_used(mc),
        }
    }

    /// Next chain to take (split: the index; packed: encoded with the wrap counter).
    pub fn next_avail(&self) -> u16 {
        match self {
            Self::Split(q) => q.next_avail(),
            Self::Packed(q) => q.next_avail(),
        }
    }

    /// Next used position (as [`Self::next_avail`]).
    pub fn next_used(&self) -> u16 {
        match self {
            Self::Split(q) => q.next_used(),
            Self::Packed(q) => q.next_used(),
        }
    }

    /// Can the queue run? A split queue whose avail index is more than a queue ahead of what was
    /// consumed (virtio-queue then refuses to iterate; re-checking on every wake-up would spin)
    /// or a packed queue that found a broken chain needs a reset.
    pub fn check(&self, mem: &GuestMemoryMmap) -> Result<(), VqError> {
        match self {
            Self::Split(q) => q
                .avail_idx(mem, Ordering::Acquire)
                .is_ok_and(|idx| (idx - Wrapping(q.next_avail())).0 <= q.size())
                .then_some(())
                .ok_or(VqError::AvailOutOfRange),
            Self::Packed(q) => q.error().map_or(Ok(()), Err),
        }
    }

    /// Kicks off.
    pub fn disable_notification(&mut self, mem: &GuestMemoryMmap) {
        match self {
            Self::Split(q) => {
                let _ = q.disable_notification(mem);
            }
            Self::Packed(q) => q.disable_notification(mem),
        }
    }

    /// Kicks on for the next chain; true when one is there already.
    pub fn enable_notification(&mut self, mem: &GuestMemoryMmap) -> bool {
        match self {
            Self::Split(q) => q.enable_notification(mem).unwrap_or(false),
            Self::Packed(q) => q.enable_notification(mem),
        }
    }

    /// Should the driver be interrupted for what was used?
    #[inline]
    pub fn needs_notification(&mut self, mem: &GuestMemoryMmap) -> bool {
        match self {
            Self::Split(q) => q.needs_notification(mem).unwrap_or(true),
            Self::Packed(q) => q.needs_notification(mem),
        }
    }

    /// Where the chains available now end (split: the avail index; packed: the first position
    /// found not available): what [`Self::arm_avail_past`] takes.
    pub fn avail_mark(&self, mem: &GuestMemoryMmap) -> u16 {
        match self {
            Self::Split(q) => q.avail_idx(mem, Ordering::Acquire).map_or(0, |i| i.0),
            Self::Packed(q) => q.avail_mark(),
        }
    }

    /// Asks the driver for a kick once it makes chains available past `mark` (see
    /// [`Self::avail_mark`]): with EVENT_IDX the event at `mark`, else notifications on. False
    /// when chains came past it meanwhile (do not sleep). (virtio-queue's own
    /// `enable_notification` arms at the next chain to consume, which a driver that already made
    /// it available never kicks for again.)
    pub fn arm_avail_past(&mut self, mem: &GuestMemoryMmap, mark: u16) -> bool {
        let q = match self {
            Self::Split(q) => q,
            Self::Packed(q) => return q.arm_avail_past(mem, mark),
        };
        if q.event_idx_enabled() {
            let at = q.used_ring() + 4 + 8 * u64::from(q.size());
            if mem
                .store(mark.to_le(), GuestAddress(at), Ordering::Relaxed)
                .is_err()
            {
                return true;
            }
        } else {
            let _ = q.enable_notification(mem);
        }
        fence(Ordering::SeqCst);
        q.avail_idx(mem, Ordering::Acquire)
            .is_ok_and(|now| now.0 == mark)
    }
}

//! Access to memory shared with another party (a guest, a frontend, another port's owner).
//!
//! This is the only module of the crate with `unsafe` code. A [`SharedMem`] is a raw window
//! `[base, base + len)` that somebody else may write at any time. Every access is bounds-checked
//! against the window, and the words that carry synchronisation (ring indexes, slot fields) are read
//! and written as atomics, so concurrent writers never cause undefined behaviour on our side: at
//! worst we read a value that is garbage, and the callers validate every value before use.

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// What keeps a window's memory alive: the mapping or allocation it lies in. The memory is
/// released (unmapped, freed) when the last window holding it is dropped, so a window can
/// never outlive its memory, whoever drops what first.
pub type Keepalive = Arc<dyn Send + Sync>;

/// A window of memory shared with another, untrusted, party.
///
/// A pointer, a length and a [`Keepalive`] of the memory: cloning one is an atomic increment,
/// done when rings and pools are set up, never per packet.
#[derive(Clone)]
pub struct SharedMem {
    base: *mut u8,
    len: usize,
    keep: Option<Keepalive>,
}

impl std::fmt::Debug for SharedMem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMem")
            .field("base", &self.base)
            .field("len", &self.len)
            .field("owned", &self.keep.is_some())
            .finish()
    }
}

// SAFETY: the window is plain memory accessed only through atomics and bounds-checked copies; it
// stays valid while any clone exists (its keepalive, or the creator's promise for `new`).
unsafe impl Send for SharedMem {}
// SAFETY: as above; no method hands out references that could alias mutable state.
unsafe impl Sync for SharedMem {}

impl SharedMem {
    /// Wraps `len` bytes at `base`, memory nobody owns on the Rust side (kept mapped by the
    /// caller for good).
    ///
    /// # Safety
    /// `base..base + len` must be mapped readable and writable, 8-byte aligned at `base`, and stay
    /// mapped for as long as this value or any clone of it is used.
    pub unsafe fn new(base: *mut u8, len: usize) -> Self {
        debug_assert_eq!(base as usize % 8, 0);
        Self {
            base,
            len,
            keep: None,
        }
    }

    /// Wraps `len` bytes at `base`, which stay mapped while `keep` lives: the window and all its
    /// clones and sub-windows hold `keep`, so the memory outlives them.
    ///
    /// # Safety
    /// `base..base + len` must be readable and writable, 8-byte aligned at `base`, and stay
    /// mapped at least until `keep` (every clone of that `Arc`) is dropped.
    pub unsafe fn with_keepalive(base: *mut u8, len: usize, keep: Keepalive) -> Self {
        debug_assert_eq!(base as usize % 8, 0);
        Self {
            base,
            len,
            keep: Some(keep),
        }
    }

    /// Length of the window in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Is the window empty?
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Raw base pointer (for mmap bookkeeping and address translation only).
    pub fn as_ptr(&self) -> *mut u8 {
        self.base
    }

    /// Does `[off, off + size)` lie inside the window?
    #[inline]
    pub fn contains(&self, off: usize, size: usize) -> bool {
        off.checked_add(size).is_some_and(|end| end <= self.len)
    }

    /// A sub-window `[off, off + len)`, or `None` if it does not fit or is misaligned.
    pub fn sub(&self, off: usize, len: usize) -> Option<SharedMem> {
        if !self.contains(off, len) || !off.is_multiple_of(8) {
            return None;
        }
        Some(SharedMem {
            // SAFETY: the sub-window lies inside this window (checked), so the pointer stays in
            // the same mapping; alignment is kept because `off` is a multiple of 8.
            base: unsafe { self.base.add(off) },
            len,
            // The sub-window keeps the memory alive as this window does.
            keep: self.keep.clone(),
        })
    }

    #[inline]
    fn atomic<T>(&self, off: usize) -> &T {
        let size = std::mem::size_of::<T>();
        assert!(
            self.contains(off, size) && off.is_multiple_of(size),
            "shared memory access at {off} (size {size}) outside window of {} bytes",
            self.len
        );
        // SAFETY: in bounds and naturally aligned (checked above, base is 8-aligned); the atomic
        // types have the same layout as the integers and tolerate concurrent access from others.
        unsafe { &*(self.base.add(off) as *const T) }
    }

    /// Atomic load of a u32 at `off`. Panics if out of bounds (callers check geometry first).
    #[inline]
    pub fn load_u32(&self, off: usize, order: Ordering) -> u32 {
        self.atomic::<AtomicU32>(off).load(order)
    }

    /// Atomic store of a u32 at `off`.
    #[inline]
    pub fn store_u32(&self, off: usize, v: u32, order: Ordering) {
        self.atomic::<AtomicU32>(off).store(v, order)
    }

    /// Atomic load of a u16 at `off`.
    #[inline]
    pub fn load_u16(&self, off: usize) -> u16 {
        self.atomic::<AtomicU16>(off).load(Ordering::Relaxed)
    }

    /// Atomic store of a u16 at `off`.
    #[inline]
    pub fn store_u16(&self, off: usize, v: u16) {
        self.atomic::<AtomicU16>(off).store(v, Ordering::Relaxed)
    }

    /// Atomic load of a u64 at `off`.
    #[inline]
    pub fn load_u64(&self, off: usize) -> u64 {
        self.atomic::<AtomicU64>(off).load(Ordering::Relaxed)
    }

    /// Atomic store of a u64 at `off`.
    #[inline]
    pub fn store_u64(&self, off: usize, v: u64) {
        self.atomic::<AtomicU64>(off).store(v, Ordering::Relaxed)
    }

    /// Copies `dst.len()` bytes from `off` into `dst`. Returns false (copying nothing) when the
    /// range is outside the window.
    #[inline]
    pub fn read(&self, off: usize, dst: &mut [u8]) -> bool {
        if !self.contains(off, dst.len()) {
            return false;
        }
        // SAFETY: the source range is inside the mapped window; `dst` is a distinct Rust buffer.
        // Concurrent writes by the other party may tear the bytes, which callers tolerate.
        unsafe { std::ptr::copy_nonoverlapping(self.base.add(off), dst.as_mut_ptr(), dst.len()) };
        true
    }

    /// Copies `src` to `off`. Returns false (copying nothing) when the range is outside the window.
    #[inline]
    pub fn write(&self, off: usize, src: &[u8]) -> bool {
        if !self.contains(off, src.len()) {
            return false;
        }
        // SAFETY: the destination range is inside the mapped window; `src` is a Rust buffer that
        // cannot overlap shared memory we write through a raw pointer.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.base.add(off), src.len()) };
        true
    }

    /// Copies `len` bytes from `src` at `src_off` to `self` at `dst_off`. Returns false (copying
    /// nothing) when either range is outside its window.
    #[inline]
    pub fn copy_from(&self, dst_off: usize, src: &SharedMem, src_off: usize, len: usize) -> bool {
        if !self.contains(dst_off, len) || !src.contains(src_off, len) {
            return false;
        }
        // SAFETY: both ranges are inside their mapped windows. `copy` (memmove) is used because the
        // two windows may be the same memory.
        unsafe { std::ptr::copy(src.base.add(src_off), self.base.add(dst_off), len) };
        true
    }

    /// Fills `[off, off + len)` with zeros. Returns false when out of range.
    pub fn zero(&self, off: usize, len: usize) -> bool {
        if !self.contains(off, len) {
            return false;
        }
        // SAFETY: inside the mapped window (checked).
        unsafe { std::ptr::write_bytes(self.base.add(off), 0, len) };
        true
    }
}

/// One ring slot in shared memory, its fields as atomics, laid out as netmap's `netmap_slot`: a
/// u32 buffer index, a u16 length, u16 flags and a u64 pointer (16 bytes, 8-aligned). All
/// accesses are relaxed: the slot's owner changes hands through the ring's indexes, which carry
/// the ordering.
#[repr(C, align(8))]
#[derive(Debug)]
pub struct AtomicSlot {
    buf_idx: AtomicU32,
    len: AtomicU16,
    flags: AtomicU16,
    ptr: AtomicU64,
}

// The netmap ABI: a slot is 16 bytes and its fields sit at 0, 4, 6 and 8.
const _: () = assert!(std::mem::size_of::<AtomicSlot>() == 16);
const _: () = assert!(std::mem::offset_of!(AtomicSlot, len) == 4);
const _: () = assert!(std::mem::offset_of!(AtomicSlot, flags) == 6);
const _: () = assert!(std::mem::offset_of!(AtomicSlot, ptr) == 8);

// `len` is the netmap field's name, not a container's size.
#[allow(clippy::len_without_is_empty)]
impl AtomicSlot {
    /// The buffer index (untrusted when the other party owns the ring).
    #[inline]
    pub fn buf_idx(&self) -> u32 {
        self.buf_idx.load(Ordering::Relaxed)
    }
    /// The length.
    #[inline]
    pub fn len(&self) -> u16 {
        self.len.load(Ordering::Relaxed)
    }
    /// The flags.
    #[inline]
    pub fn flags(&self) -> u16 {
        self.flags.load(Ordering::Relaxed)
    }
    /// The pointer field (indirect buffers).
    #[inline]
    pub fn ptr(&self) -> u64 {
        self.ptr.load(Ordering::Relaxed)
    }
    /// Sets the buffer index.
    #[inline]
    pub fn set_buf_idx(&self, v: u32) {
        self.buf_idx.store(v, Ordering::Relaxed)
    }
    /// Sets the length.
    #[inline]
    pub fn set_len(&self, v: u16) {
        self.len.store(v, Ordering::Relaxed)
    }
    /// Sets the flags.
    #[inline]
    pub fn set_flags(&self, v: u16) {
        self.flags.store(v, Ordering::Relaxed)
    }
    /// Sets the pointer field.
    #[inline]
    pub fn set_ptr(&self, v: u64) {
        self.ptr.store(v, Ordering::Relaxed)
    }
}

/// An array of `count` ring slots inside a [`SharedMem`], checked once when made. Element
/// accesses then cost no bounds check, only a clamp of the index, and the data path takes the
/// whole array as a slice ([`Self::as_slice`]), one bounds check per run of slots.
#[derive(Clone)]
pub struct Slots {
    base: *const AtomicSlot,
    count: u32,
    // Held, never read: the slots' memory lives while they do.
    _keep: Option<Keepalive>,
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots")
            .field("base", &self.base)
            .field("count", &self.count)
            .finish()
    }
}

// SAFETY: as for `SharedMem`, of which a `Slots` is a checked sub-window.
unsafe impl Send for Slots {}
// SAFETY: as above.
unsafe impl Sync for Slots {}

impl SharedMem {
    /// `count` slots from `off`; `None` unless they fit, `count > 0`, and `off` is a multiple
    /// of 8.
    pub fn slots(&self, off: usize, count: u32) -> Option<Slots> {
        let bytes = (count as usize).checked_mul(std::mem::size_of::<AtomicSlot>())?;
        if count == 0 || !off.is_multiple_of(8) || self.sub(off, bytes).is_none() {
            return None;
        }
        Some(Slots {
            // SAFETY: `off + bytes <= len` was checked by `sub`, so the pointer stays inside the
            // window.
            base: unsafe { self.base.add(off) } as *const AtomicSlot,
            count,
            _keep: self.keep.clone(),
        })
    }
}

impl Slots {
    /// Number of slots.
    #[inline]
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Slot `i`. An index past the end is clamped to the last slot, so no value, however
    /// corrupt, reaches outside the array.
    #[inline]
    pub fn get(&self, i: u32) -> &AtomicSlot {
        &self.as_slice()[i.min(self.count - 1) as usize]
    }

    /// All the slots.
    #[inline]
    pub fn as_slice(&self) -> &[AtomicSlot] {
        // SAFETY: `count` slots from `base` lie inside the window checked in `SharedMem::slots`,
        // which stays mapped while `_keep` (or the creator's promise) holds; `base` is 8-aligned
        // (the window's base is, and `off` was checked); `AtomicSlot` is atomics only, so shared
        // references tolerate the other party's concurrent writes, and `count > 0`.
        unsafe { std::slice::from_raw_parts(self.base, self.count as usize) }
    }
}

/// Heap memory with the alignment shared memory has, for tests and for building layouts.
pub struct OwnedMem {
    words: Arc<Box<[AtomicU64]>>,
}

impl OwnedMem {
    /// `len` zeroed bytes (rounded up to 8).
    pub fn new(len: usize) -> Self {
        let words = Arc::new((0..len.div_ceil(8)).map(|_| AtomicU64::new(0)).collect());
        Self { words }
    }

    /// A window over the whole allocation; the allocation lives as long as the window does.
    pub fn mem(&self) -> SharedMem {
        let keep: Keepalive = self.words.clone();
        // SAFETY: the slice is 8-aligned and lives while `keep` (an `Arc` of it) does; it is only
        // accessed through atomics or raw copies (AtomicU64 permits shared mutation).
        unsafe {
            SharedMem::with_keepalive(self.words.as_ptr() as *mut u8, self.words.len() * 8, keep)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_keep_their_memory_alive() {
        let m = OwnedMem::new(64);
        let mem = m.mem();
        let slots = mem.slots(16, 3).unwrap();
        drop(m);
        drop(mem);
        slots.get(2).set_len(9);
        assert_eq!(slots.as_slice()[2].len(), 9);
    }

    #[test]
    fn bounds_are_enforced() {
        let m = OwnedMem::new(64);
        let mem = m.mem();
        assert!(mem.contains(0, 64));
        assert!(!mem.contains(1, 64));
        assert!(!mem.contains(usize::MAX, 2));
        assert!(mem.write(60, &[1, 2, 3, 4]));
        assert!(!mem.write(61, &[1, 2, 3, 4]));
        let mut b = [0u8; 4];
        assert!(mem.read(60, &mut b));
        assert_eq!(b, [1, 2, 3, 4]);
        assert!(!mem.read(62, &mut b));
        assert!(mem.sub(8, 56).is_some());
        assert!(mem.sub(4, 8).is_none());
        assert!(mem.sub(8, 57).is_none());
    }

    #[test]
    fn atomics_and_copies() {
        let m = OwnedMem::new(64);
        let mem = m.mem();
        mem.store_u32(4, 0xdead_beef, Ordering::Release);
        assert_eq!(mem.load_u32(4, Ordering::Acquire), 0xdead_beef);
        mem.store_u16(10, 0xabcd);
        assert_eq!(mem.load_u16(10), 0xabcd);
        mem.store_u64(16, u64::MAX);
        assert_eq!(mem.load_u64(16), u64::MAX);
        assert!(mem.copy_from(32, &mem, 16, 8));
        assert_eq!(mem.load_u64(32), u64::MAX);
        assert!(!mem.copy_from(60, &mem, 0, 8));
        assert!(mem.zero(32, 8));
        assert_eq!(mem.load_u64(32), 0);
    }

    #[test]
    fn slots_sit_where_netmap_puts_them_and_clamp_indexes() {
        let m = OwnedMem::new(64);
        let r = m.mem().slots(16, 3).unwrap();
        let s = r.get(2);
        s.set_buf_idx(0x0102_0304);
        s.set_len(0x0506);
        s.set_flags(0x0708);
        s.set_ptr(0x1112_1314_1516_1718);
        let mut b = [0u8; 16];
        assert!(m.mem().read(16 + 32, &mut b));
        let golden = [
            4, 3, 2, 1, 6, 5, 8, 7, 0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11,
        ];
        assert_eq!(b, golden);
        assert_eq!(
            (s.buf_idx(), s.len(), s.flags()),
            (0x0102_0304, 0x0506, 0x0708)
        );
        assert_eq!(s.ptr(), 0x1112_1314_1516_1718);
        // Past the end: the last slot, never beyond.
        r.get(u32::MAX).set_len(9);
        assert_eq!(r.as_slice()[2].len(), 9);
        assert_eq!((r.count(), r.as_slice().len()), (3, 3));
        assert!(m.mem().slots(16, 4).is_none());
        assert!(m.mem().slots(16, 0).is_none());
        assert!(m.mem().slots(4, 2).is_none());
        assert!(m.mem().slots(usize::MAX - 8, 1).is_none());
    }

    #[test]
    #[should_panic(expected = "outside window")]
    fn atomic_out_of_bounds_panics() {
        let m = OwnedMem::new(8);
        m.mem().load_u32(8, Ordering::Relaxed);
    }
}

//! The netmap memory structures the guest maps: `netmap_if`, `netmap_ring`, `netmap_slot`, and the
//! pool layout of a netmap memory region (interface pool, ring pool, buffer pool).
//!
//! Layouts are given as byte offsets (this memory is shared with C code and with untrusted guests,
//! so we never form Rust references to it) and accessed through [`SharedMem`].

use crate::shmem::{AtomicSlot, SharedMem, Slots};
use std::sync::atomic::Ordering;

/// Byte offsets and size of `struct netmap_slot`.
pub mod slot {
    /// Buffer index (u32).
    pub const BUF_IDX: usize = 0;
    /// Packet length (u16).
    pub const LEN: usize = 4;
    /// Flags (u16), see [`super::slot_flags`].
    pub const FLAGS: usize = 6;
    /// Pointer for indirect buffers (u64).
    pub const PTR: usize = 8;
    /// Size of a slot.
    pub const SIZE: usize = 16;
}

/// Slot flags (`NS_*`).
pub mod slot_flags {
    /// The buffer index changed: the port must reload its mapping.
    pub const BUF_CHANGED: u16 = 0x1;
    /// Ask for a completion report.
    pub const REPORT: u16 = 0x2;
    /// Forward to the host stack.
    pub const FORWARD: u16 = 0x4;
    /// Do not learn the source MAC (VALE).
    pub const NO_LEARN: u16 = 0x8;
    /// The buffer is in `ptr`, not `buf_idx`.
    pub const INDIRECT: u16 = 0x10;
    /// More fragments follow in the next slot.
    pub const MOREFRAG: u16 = 0x20;
    /// Transmit monitor copy.
    pub const TXMON: u16 = 0x40;
    /// Shift of the destination VALE port override in bits 8..15.
    pub const PORT_SHIFT: u16 = 8;
}

/// Byte offsets of `struct netmap_ring`'s header; slots follow at [`ring::SLOTS`].
pub mod ring {
    /// Offset from this ring to the buffer pool (i64).
    pub const BUF_OFS: usize = 0;
    /// Number of slots (u32).
    pub const NUM_SLOTS: usize = 8;
    /// Buffer size (u32).
    pub const NR_BUF_SIZE: usize = 12;
    /// Ring id (u16).
    pub const RINGID: usize = 16;
    /// Direction (u16): [`DIR_TX`] or [`DIR_RX`].
    pub const DIR: usize = 18;
    /// head (u32), owned by the application.
    pub const HEAD: usize = 20;
    /// cur (u32), owned by the application.
    pub const CUR: usize = 24;
    /// tail (u32), written on sync.
    pub const TAIL: usize = 28;
    /// flags (u32).
    pub const FLAGS: usize = 32;
    /// timestamp (struct timeval, 16 bytes).
    pub const TS: usize = 40;
    /// offset_mask (u64).
    pub const OFFSET_MASK: usize = 56;
    /// buf_align (u64).
    pub const BUF_ALIGN: usize = 64;
    /// `sem[128]`, 128-byte aligned.
    pub const SEM: usize = 128;
    /// First slot.
    pub const SLOTS: usize = 256;
    /// Direction value of a TX ring. netmap's kernel writes `kring->tx`, and `enum txrx` has
    /// `NR_TX = 1` (`netmap_kern.h`, `netmap_mem2.c`); the comment on `dir` in `netmap.h`
    /// ("0: tx, 1: rx") has it the wrong way round, and the kernel is what drivers meet.
    pub const DIR_TX: u16 = 1;
    /// Direction value of an RX ring (`NR_RX = 0`).
    pub const DIR_RX: u16 = 0;

    /// Bytes taken by a ring of `num_slots` slots.
    pub const fn size(num_slots: u32) -> usize {
        SLOTS + num_slots as usize * super::slot::SIZE
    }
}

/// Byte offsets of `struct netmap_if`.
pub mod nif {
    /// Interface name, 16 bytes.
    pub const NAME: usize = 0;
    /// Version (u32).
    pub const VERSION: usize = 16;
    /// Flags (u32): [`FLAG_PRIVATE_MEM`].
    pub const FLAGS: usize = 20;
    /// NIC TX rings (u32).
    pub const TX_RINGS: usize = 24;
    /// NIC RX rings (u32).
    pub const RX_RINGS: usize = 28;
    /// Head of the list of extra buffers (u32).
    pub const BUFS_HEAD: usize = 32;
    /// Host TX rings (u32).
    pub const HOST_TX_RINGS: usize = 36;
    /// Host RX rings (u32).
    pub const HOST_RX_RINGS: usize = 40;
    /// Spare words, 3 x u32.
    pub const SPARE1: usize = 44;
    /// Ring offsets from the netmap_if (i64 each): NIC TX, host TX, NIC RX, host RX.
    pub const RING_OFS: usize = 56;
    /// `ni_flags` bit: the port has private memory.
    pub const FLAG_PRIVATE_MEM: u32 = 0x1;
    /// Name length including the terminating NUL.
    pub const NAME_LEN: usize = 16;

    /// Bytes taken by a netmap_if with `rings` ring offsets.
    pub const fn size(rings: u32) -> usize {
        RING_OFS + rings as usize * 8
    }

    /// Host rings per direction in every `netmap_if` we lay out. netmap's kernel always counts
    /// at least one (`netmap_all_rings(na, t) = max(nrings + 1, real rings)`, `netmap_kern.h`),
    /// a placeholder with ring offset 0 when the port has none (`netmap_mem2_if_new`), and the
    /// guest kernel's ring lookup relies on it (see [`super::IfView::rx_ring_ofs_kernel`]).
    pub const HOST_RINGS: u32 = 1;

    /// Ring offsets a `netmap_if` of `tx` NIC TX and `rx` NIC RX rings holds: NIC TX, host TX,
    /// NIC RX, host RX.
    pub const fn ring_ofs_count(tx: u32, rx: u32) -> u32 {
        tx + HOST_RINGS + rx + HOST_RINGS
    }

    /// Index in `ring_ofs[]` of NIC TX ring `i`.
    pub const fn tx_slot(i: u32) -> u32 {
        i
    }

    /// Index in `ring_ofs[]` of NIC RX ring `i` of a port with `tx` NIC TX rings.
    pub const fn rx_slot(tx: u32, i: u32) -> u32 {
        tx + HOST_RINGS + i
    }
}

/// netmap API version written into `ni_version`.
pub const NETMAP_API: u32 = 14;
/// Default buffer size.
pub const DEFAULT_BUF_SIZE: u32 = 2048;
/// Buffers 0 and 1 are reserved: never in a ring, index 0 means "no buffer".
pub const RESERVED_BUFS: u32 = 2;

/// Advances a ring index by `n`, modulo `num_slots`.
#[inline]
pub fn ring_add(i: u32, n: u32, num_slots: u32) -> u32 {
    let s = i + n;
    if s >= num_slots {
        s - num_slots
    } else {
        s
    }
}

/// Distance from `from` forward to `to`, modulo `num_slots`.
#[inline]
pub fn ring_dist(from: u32, to: u32, num_slots: u32) -> u32 {
    if to >= from {
        to - from
    } else {
        to + num_slots - from
    }
}

/// Does `x` lie in the circular interval `[lo, hi]` (inclusive, going forward from `lo`)?
/// All three must be valid indexes (`< num_slots`).
#[inline]
pub fn ring_between(lo: u32, x: u32, hi: u32, num_slots: u32) -> bool {
    ring_dist(lo, x, num_slots) <= ring_dist(lo, hi, num_slots)
}

/// A `netmap_ring` inside shared memory, with its geometry checked once at creation.
#[derive(Clone, Debug)]
pub struct RingView {
    mem: SharedMem,
    slots: Slots,
    num_slots: u32,
}

impl RingView {
    /// Views the ring at the start of `mem` with `num_slots` slots (the caller's trusted geometry;
    /// the `num_slots` field in memory is not trusted). `None` if it does not fit.
    pub fn new(mem: SharedMem, num_slots: u32) -> Option<Self> {
        if num_slots == 0 || !mem.contains(0, ring::size(num_slots)) {
            return None;
        }
        let slots = mem.slots(ring::SLOTS, num_slots)?;
        Some(Self {
            mem,
            slots,
            num_slots,
        })
    }

    /// Number of slots.
    #[inline]
    pub fn num_slots(&self) -> u32 {
        self.num_slots
    }

    /// The application's head (untrusted when read by the host).
    #[inline]
    pub fn head(&self) -> u32 {
        self.mem.load_u32(ring::HEAD, Ordering::Relaxed)
    }
    /// The application's cur.
    #[inline]
    pub fn cur(&self) -> u32 {
        self.mem.load_u32(ring::CUR, Ordering::Relaxed)
    }
    /// The ring's tail.
    #[inline]
    pub fn tail(&self) -> u32 {
        self.mem.load_u32(ring::TAIL, Ordering::Relaxed)
    }
    /// Sets head.
    #[inline]
    pub fn set_head(&self, v: u32) {
        self.mem.store_u32(ring::HEAD, v, Ordering::Relaxed)
    }
    /// Sets cur.
    #[inline]
    pub fn set_cur(&self, v: u32) {
        self.mem.store_u32(ring::CUR, v, Ordering::Relaxed)
    }
    /// Sets tail.
    #[inline]
    pub fn set_tail(&self, v: u32) {
        self.mem.store_u32(ring::TAIL, v, Ordering::Relaxed)
    }

    /// Buffer index of slot `i` (untrusted). Slot accessors clamp `i` to the ring, so no
    /// index can reach outside it.
    #[inline]
    pub fn buf_idx(&self, i: u32) -> u32 {
        self.slots.get(i).buf_idx()
    }
    /// Length of slot `i` (untrusted).
    #[inline]
    pub fn len(&self, i: u32) -> u16 {
        self.slots.get(i).len()
    }
    /// Flags of slot `i`.
    #[inline]
    pub fn flags(&self, i: u32) -> u16 {
        self.slots.get(i).flags()
    }
    /// Sets the buffer index of slot `i`.
    #[inline]
    pub fn set_buf_idx(&self, i: u32, v: u32) {
        self.slots.get(i).set_buf_idx(v)
    }
    /// Sets the length of slot `i`.
    #[inline]
    pub fn set_len(&self, i: u32, v: u16) {
        self.slots.get(i).set_len(v)
    }
    /// Sets the flags of slot `i`.
    #[inline]
    pub fn set_flags(&self, i: u32, v: u16) {
        self.slots.get(i).set_flags(v)
    }

    /// All the slots, for loops over runs of them (index `i` is slot `i`).
    #[inline]
    pub fn slots(&self) -> &[AtomicSlot] {
        self.slots.as_slice()
    }

    /// Writes the ring header: geometry, direction, and head = cur = 0, tail as given.
    pub fn init_header(&self, buf_ofs: i64, buf_size: u32, ringid: u16, dir: u16, tail: u32) {
        let m = &self.mem;
        m.zero(0, ring::SLOTS);
        m.store_u64(ring::BUF_OFS, buf_ofs as u64);
        m.store_u32(ring::NUM_SLOTS, self.num_slots, Ordering::Relaxed);
        m.store_u32(ring::NR_BUF_SIZE, buf_size, Ordering::Relaxed);
        m.store_u16(ring::RINGID, ringid);
        m.store_u16(ring::DIR, dir);
        m.store_u32(ring::TAIL, tail, Ordering::Relaxed);
    }

    /// Reads `buf_ofs` from the header (untrusted).
    pub fn buf_ofs(&self) -> i64 {
        self.mem.load_u64(ring::BUF_OFS) as i64
    }
    /// Reads `nr_buf_size` from the header (untrusted).
    pub fn nr_buf_size(&self) -> u32 {
        self.mem.load_u32(ring::NR_BUF_SIZE, Ordering::Relaxed)
    }
    /// Reads the `num_slots` field from memory (untrusted; compare with [`Self::num_slots`]).
    pub fn num_slots_field(&self) -> u32 {
        self.mem.load_u32(ring::NUM_SLOTS, Ordering::Relaxed)
    }
    /// Reads the direction field.
    pub fn dir(&self) -> u16 {
        self.mem.load_u16(ring::DIR)
    }
}

/// The buffer pool of a netmap memory region: `num` buffers of `size` bytes.
#[derive(Clone, Debug)]
pub struct BufPool {
    mem: SharedMem,
    num: u32,
    size: u32,
}

impl BufPool {
    /// Views `num` buffers of `size` bytes at the start of `mem`. `None` if they do not fit.
    pub fn new(mem: SharedMem, num: u32, size: u32) -> Option<Self> {
        let bytes = (num as usize).checked_mul(size as usize)?;
        if size == 0 || !mem.contains(0, bytes) {
            return None;
        }
        Some(Self { mem, num, size })
    }

    /// Number of buffers.
    pub fn num(&self) -> u32 {
        self.num
    }
    /// Buffer size.
    pub fn buf_size(&self) -> u32 {
        self.size
    }

    /// Is `idx` a buffer a ring slot may carry (not reserved, inside the pool)?
    #[inline]
    pub fn valid(&self, idx: u32) -> bool {
        // One compare for both bounds: below the reserved ones wraps to a huge value.
        idx.wrapping_sub(RESERVED_BUFS) < self.num.saturating_sub(RESERVED_BUFS)
    }

    /// Byte offset of buffer `idx` inside the pool, if `idx` is valid.
    #[inline]
    pub fn offset(&self, idx: u32) -> Option<usize> {
        self.valid(idx).then(|| idx as usize * self.size as usize)
    }

    /// The pool's memory (buffer `idx` at [`Self::offset`], [`Self::buf_size`] bytes), for
    /// copies the caller makes itself, e.g. straight from or to guest memory. A reference: a
    /// window of each buffer would take a keepalive per buffer.
    #[inline]
    pub fn mem(&self) -> &SharedMem {
        &self.mem
    }

    /// Copies `data` into buffer `idx` at byte `at`. False if out of range.
    #[inline]
    pub fn write(&self, idx: u32, at: usize, data: &[u8]) -> bool {
        match self.offset(idx) {
            Some(o) if at + data.len() <= self.size as usize => self.mem.write(o + at, data),
            _ => false,
        }
    }

    /// Copies from buffer `idx` at byte `at` into `out`. False if out of range.
    #[inline]
    pub fn read(&self, idx: u32, at: usize, out: &mut [u8]) -> bool {
        match self.offset(idx) {
            Some(o) if at + out.len() <= self.size as usize => self.mem.read(o + at, out),
            _ => false,
        }
    }

    /// Copies `len` bytes from buffer `src_idx` of `src` to buffer `dst_idx` of `self`.
    /// False (nothing copied) if either index or the length is invalid.
    #[inline]
    pub fn copy_from(&self, dst_idx: u32, src: &BufPool, src_idx: u32, len: usize) -> bool {
        match (self.offset(dst_idx), src.offset(src_idx)) {
            (Some(d), Some(s)) if len <= self.size as usize && len <= src.size as usize => {
                self.mem.copy_from(d, &src.mem, s, len)
            }
            _ => false,
        }
    }
}

/// A `netmap_if` inside shared memory.
#[derive(Clone, Debug)]
pub struct IfView {
    mem: SharedMem,
}

impl IfView {
    /// Views the netmap_if at the start of `mem`; `None` unless the fixed part fits.
    pub fn new(mem: SharedMem) -> Option<Self> {
        mem.contains(0, nif::RING_OFS).then_some(Self { mem })
    }
    /// Number of NIC TX rings.
    pub fn tx_rings(&self) -> u32 {
        self.mem.load_u32(nif::TX_RINGS, Ordering::Relaxed)
    }
    /// Number of NIC RX rings.
    pub fn rx_rings(&self) -> u32 {
        self.mem.load_u32(nif::RX_RINGS, Ordering::Relaxed)
    }
    /// Number of host TX rings.
    pub fn host_tx_rings(&self) -> u32 {
        self.mem.load_u32(nif::HOST_TX_RINGS, Ordering::Relaxed)
    }
    /// Number of host RX rings.
    pub fn host_rx_rings(&self) -> u32 {
        self.mem.load_u32(nif::HOST_RX_RINGS, Ordering::Relaxed)
    }
    /// `ni_flags`.
    pub fn flags(&self) -> u32 {
        self.mem.load_u32(nif::FLAGS, Ordering::Relaxed)
    }
    /// `ni_version`.
    pub fn version(&self) -> u32 {
        self.mem.load_u32(nif::VERSION, Ordering::Relaxed)
    }
    /// The interface name.
    pub fn name(&self) -> String {
        let mut b = [0u8; nif::NAME_LEN];
        self.mem.read(nif::NAME, &mut b);
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    }
    /// Offset of ring `k` (in ring_ofs order) from the netmap_if, or `None` if outside the window.
    pub fn ring_ofs(&self, k: u32) -> Option<i64> {
        let off = nif::RING_OFS + k as usize * 8;
        self.mem
            .contains(off, 8)
            .then(|| self.mem.load_u64(off) as i64)
    }

    /// Offset of NIC RX ring `i` as userspace libnetmap (and our driver) find it:
    /// `ring_ofs[ni_tx_rings + ni_host_tx_rings + i]`.
    pub fn rx_ring_ofs_libnetmap(&self, i: u32) -> Option<i64> {
        let k = self
            .tx_rings()
            .checked_add(self.host_tx_rings())?
            .checked_add(i)?;
        self.ring_ofs(k)
    }

    /// Offset of NIC RX ring `i` as a ptnet guest kernel finds it
    /// (`netmap_mem_pt_guest_rings_create`): `ring_ofs[netmap_all_rings(NR_TX) + i]`, where
    /// `netmap_all_rings` counts the NIC TX rings plus one host ring, whatever `ni_host_tx_rings`
    /// says. `tx_rings` is what the guest kernel knows: the NUM_TX_RINGS register.
    pub fn rx_ring_ofs_kernel(&self, tx_rings: u32, i: u32) -> Option<i64> {
        self.ring_ofs(tx_rings.checked_add(1)?.checked_add(i)?)
    }

    /// Writes a netmap_if as netmap's kernel lays it out for a port without host rings: one
    /// placeholder host ring per direction (offset 0, counted in `ni_host_*_rings`), so that
    /// ring offsets are `[tx_ofs.., 0, rx_ofs.., 0]`.
    pub fn init(&self, name: &str, flags: u32, tx_ofs: &[i64], rx_ofs: &[i64]) {
        let m = &self.mem;
        let (tx_rings, rx_rings) = (tx_ofs.len() as u32, rx_ofs.len() as u32);
        let placeholder = [0i64; nif::HOST_RINGS as usize];
        let ring_ofs = tx_ofs
            .iter()
            .chain(&placeholder)
            .chain(rx_ofs)
            .chain(&placeholder);
        m.zero(
            0,
            nif::size(nif::ring_ofs_count(tx_rings, rx_rings)).min(m.len()),
        );
        let mut n = [0u8; nif::NAME_LEN];
        let bytes = name.as_bytes();
        let l = bytes.len().min(nif::NAME_LEN - 1);
        n[..l].copy_from_slice(&bytes[..l]);
        m.write(nif::NAME, &n);
        m.store_u32(nif::VERSION, NETMAP_API, Ordering::Relaxed);
        m.store_u32(nif::FLAGS, flags, Ordering::Relaxed);
        m.store_u32(nif::TX_RINGS, tx_rings, Ordering::Relaxed);
        m.store_u32(nif::RX_RINGS, rx_rings, Ordering::Relaxed);
        m.store_u32(nif::HOST_TX_RINGS, nif::HOST_RINGS, Ordering::Relaxed);
        m.store_u32(nif::HOST_RX_RINGS, nif::HOST_RINGS, Ordering::Relaxed);
        for (k, ofs) in ring_ofs.enumerate() {
            m.store_u64(nif::RING_OFS + k * 8, *ofs as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shmem::OwnedMem;

    /// `struct netmap_slot` of netmap's `net/netmap.h`, transcribed field by field: the
    /// compiler, not a second list of numbers, says where each field lands.
    #[repr(C)]
    struct NetmapSlot {
        buf_idx: u32,
        len: u16,
        flags: u16,
        ptr: u64,
    }

    /// `struct timeval` on LP64 (the `ts` field of a ring).
    #[repr(C)]
    struct Timeval {
        tv_sec: i64,
        tv_usec: i64,
    }

    /// `struct netmap_ring` (the slots follow at the end, 128-byte aligned `sem` before them).
    #[repr(C)]
    struct NetmapRing {
        buf_ofs: i64,
        num_slots: u32,
        nr_buf_size: u32,
        ringid: u16,
        dir: u16,
        head: u32,
        cur: u32,
        tail: u32,
        flags: u32,
        ts: Timeval,
        offset_mask: u64,
        buf_align: u64,
        sem: Sem,
        slot: [NetmapSlot; 0],
    }

    /// `uint8_t sem[128]`, `__aligned__(NM_CACHE_ALIGN)` (128).
    #[repr(C, align(128))]
    struct Sem([u8; 128]);

    /// `struct netmap_if` (IFNAMSIZ = 16; `ring_ofs` is a flexible array of `ssize_t`).
    #[repr(C)]
    struct NetmapIf {
        ni_name: [u8; 16],
        ni_version: u32,
        ni_flags: u32,
        ni_tx_rings: u32,
        ni_rx_rings: u32,
        ni_bufs_head: u32,
        ni_host_tx_rings: u32,
        ni_host_rx_rings: u32,
        ni_spare1: [u32; 3],
        ring_ofs: [isize; 0],
    }

    #[test]
    fn slot_layout() {
        use std::mem::{offset_of, size_of};
        assert_eq!(slot::BUF_IDX, offset_of!(NetmapSlot, buf_idx));
        assert_eq!(slot::LEN, offset_of!(NetmapSlot, len));
        assert_eq!(slot::FLAGS, offset_of!(NetmapSlot, flags));
        assert_eq!(slot::PTR, offset_of!(NetmapSlot, ptr));
        assert_eq!(slot::SIZE, size_of::<NetmapSlot>());
    }

    #[test]
    fn slot_flag_values() {
        use slot_flags::*;
        assert_eq!(
            [
                BUF_CHANGED,
                REPORT,
                FORWARD,
                NO_LEARN,
                INDIRECT,
                MOREFRAG,
                TXMON
            ],
            [0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40]
        );
        assert_eq!(PORT_SHIFT, 8);
    }

    #[test]
    fn ring_layout() {
        use ring::*;
        use std::mem::{align_of, offset_of, size_of};
        let fields = [
            (BUF_OFS, offset_of!(NetmapRing, buf_ofs)),
            (NUM_SLOTS, offset_of!(NetmapRing, num_slots)),
            (NR_BUF_SIZE, offset_of!(NetmapRing, nr_buf_size)),
            (RINGID, offset_of!(NetmapRing, ringid)),
            (DIR, offset_of!(NetmapRing, dir)),
            (HEAD, offset_of!(NetmapRing, head)),
            (CUR, offset_of!(NetmapRing, cur)),
            (TAIL, offset_of!(NetmapRing, tail)),
            (FLAGS, offset_of!(NetmapRing, flags)),
            (TS, offset_of!(NetmapRing, ts)),
            (OFFSET_MASK, offset_of!(NetmapRing, offset_mask)),
            (BUF_ALIGN, offset_of!(NetmapRing, buf_align)),
            (SEM, offset_of!(NetmapRing, sem)),
            (SLOTS, offset_of!(NetmapRing, slot)),
        ];
        for (ours, c) in fields {
            assert_eq!(ours, c);
        }
        assert_eq!(SLOTS, size_of::<NetmapRing>());
        assert_eq!(align_of::<NetmapRing>(), 128);
        assert_eq!(
            size(1024),
            size_of::<NetmapRing>() + 1024 * size_of::<NetmapSlot>()
        );
        assert_eq!(
            (DIR_TX, DIR_RX),
            (1, 0),
            "netmap's enum txrx: NR_RX = 0, NR_TX = 1"
        );
    }

    #[test]
    fn if_layout() {
        use nif::*;
        use std::mem::{offset_of, size_of};
        let fields = [
            (NAME, offset_of!(NetmapIf, ni_name)),
            (VERSION, offset_of!(NetmapIf, ni_version)),
            (FLAGS, offset_of!(NetmapIf, ni_flags)),
            (TX_RINGS, offset_of!(NetmapIf, ni_tx_rings)),
            (RX_RINGS, offset_of!(NetmapIf, ni_rx_rings)),
            (BUFS_HEAD, offset_of!(NetmapIf, ni_bufs_head)),
            (HOST_TX_RINGS, offset_of!(NetmapIf, ni_host_tx_rings)),
            (HOST_RX_RINGS, offset_of!(NetmapIf, ni_host_rx_rings)),
            (SPARE1, offset_of!(NetmapIf, ni_spare1)),
            (RING_OFS, offset_of!(NetmapIf, ring_ofs)),
        ];
        for (ours, c) in fields {
            assert_eq!(ours, c);
        }
        assert_eq!(NAME_LEN, size_of::<[u8; 16]>());
        assert_eq!(size(4), size_of::<NetmapIf>() + 4 * size_of::<isize>());
    }

    #[test]
    fn ring_arithmetic() {
        assert_eq!(ring_add(1022, 3, 1024), 1);
        assert_eq!(ring_add(0, 0, 8), 0);
        assert_eq!(ring_dist(6, 2, 8), 4);
        assert_eq!(ring_dist(2, 6, 8), 4);
        assert_eq!(ring_dist(3, 3, 8), 0);
        assert!(ring_between(6, 7, 1, 8));
        assert!(ring_between(6, 1, 1, 8));
        assert!(ring_between(6, 6, 1, 8));
        assert!(!ring_between(6, 2, 1, 8));
        assert!(!ring_between(6, 5, 1, 8));
    }

    #[test]
    fn ring_view_rejects_what_does_not_fit() {
        let m = OwnedMem::new(ring::size(8));
        assert!(RingView::new(m.mem(), 8).is_some());
        assert!(RingView::new(m.mem(), 9).is_none());
        assert!(RingView::new(m.mem(), 0).is_none());
    }

    #[test]
    fn ring_view_fields() {
        let m = OwnedMem::new(ring::size(8));
        let r = RingView::new(m.mem(), 8).unwrap();
        r.init_header(-4096, 2048, 3, ring::DIR_RX, 7);
        assert_eq!(r.buf_ofs(), -4096);
        assert_eq!(r.num_slots_field(), 8);
        assert_eq!(r.nr_buf_size(), 2048);
        assert_eq!(r.dir(), ring::DIR_RX);
        assert_eq!((r.head(), r.cur(), r.tail()), (0, 0, 7));
        r.set_buf_idx(7, 42);
        r.set_len(7, 60);
        r.set_flags(7, slot_flags::BUF_CHANGED);
        assert_eq!((r.buf_idx(7), r.len(7), r.flags(7)), (42, 60, 1));
        let mut raw = [0u8; 16];
        m.mem().read(ring::SLOTS + 7 * 16, &mut raw);
        assert_eq!(&raw[0..4], &42u32.to_le_bytes());
        assert_eq!(&raw[4..6], &60u16.to_le_bytes());
        assert_eq!(&raw[6..8], &1u16.to_le_bytes());
    }

    #[test]
    fn buf_pool_validates_indexes_and_lengths() {
        let m = OwnedMem::new(4 * 64);
        let p = BufPool::new(m.mem(), 4, 64).unwrap();
        assert!(!p.valid(0) && !p.valid(1) && p.valid(2) && p.valid(3) && !p.valid(4));
        assert!(p.write(2, 0, &[7; 64]));
        assert!(!p.write(2, 1, &[7; 64]));
        assert!(!p.write(4, 0, &[7; 1]));
        assert!(p.copy_from(3, &p, 2, 64));
        assert!(!p.copy_from(3, &p, 2, 65));
        let mut b = [0u8; 64];
        assert!(p.read(3, 0, &mut b));
        assert_eq!(b, [7; 64]);
        assert!(BufPool::new(m.mem(), 5, 64).is_none());
    }

    #[test]
    fn if_view_round_trip() {
        let m = OwnedMem::new(nif::size(4));
        let v = IfView::new(m.mem()).unwrap();
        v.init("vale0:1", nif::FLAG_PRIVATE_MEM, &[512], &[17152]);
        assert_eq!(v.name(), "vale0:1");
        assert_eq!(
            (v.tx_rings(), v.rx_rings(), v.flags(), v.version()),
            (1, 1, 1, 14)
        );
        assert_eq!((v.host_tx_rings(), v.host_rx_rings()), (1, 1));
        // [NIC TX 0, host TX placeholder, NIC RX 0, host RX placeholder]
        assert_eq!(
            (0..4).map(|k| v.ring_ofs(k)).collect::<Vec<_>>(),
            [Some(512), Some(0), Some(17152), Some(0)]
        );
        assert_eq!(v.ring_ofs(4), None);
        assert_eq!(v.rx_ring_ofs_libnetmap(0), Some(17152));
        assert_eq!(v.rx_ring_ofs_kernel(1, 0), Some(17152));
    }

    /// The bytes of a 2+2-ring netmap_if as netmap's kernel writes them for a port without
    /// host rings (`netmap_mem2_if_new`): counts at 24..44, then six 8-byte offsets.
    #[test]
    fn if_golden_bytes() {
        let m = OwnedMem::new(nif::size(6));
        let v = IfView::new(m.mem()).unwrap();
        v.init("p", 1, &[0x100, 0x200], &[0x300, 0x400]);
        let mut b = vec![0u8; nif::size(6)];
        m.mem().read(0, &mut b);
        let mut want = vec![0u8; nif::size(6)];
        want[0] = b'p';
        want[16..20].copy_from_slice(&14u32.to_le_bytes());
        want[20..24].copy_from_slice(&1u32.to_le_bytes());
        for (at, v) in [(24, 2u32), (28, 2), (36, 1), (40, 1)] {
            want[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        for (k, o) in [0x100u64, 0x200, 0, 0x300, 0x400, 0].iter().enumerate() {
            want[56 + 8 * k..64 + 8 * k].copy_from_slice(&o.to_le_bytes());
        }
        assert_eq!(b, want);
    }
}

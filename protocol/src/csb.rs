//! The Communication Status Block: two arrays in guest memory, one 64-byte entry per ring, through
//! which guest and host exchange ring indexes and notification preferences without exits.
//!
//! Ordering (both directions): the writer stores the second-read value first, then the first-read
//! value with release semantics, so a reader that acquires the first value also sees the second one
//! and every ring and slot write that preceded it. A reader may see a second value newer than the
//! first; the sync algorithms tolerate that.

use crate::shmem::SharedMem;
use std::sync::atomic::{fence, Ordering};

/// Size of one CSB entry (one cache line) in either array.
pub const ENTRY_SIZE: usize = 64;

/// Byte offsets in a guest-to-host entry (`nm_csb_atok`).
pub mod atok {
    /// The guest's ring head.
    pub const HEAD: usize = 0;
    /// The guest's ring cur.
    pub const CUR: usize = 4;
    /// 1 = the guest wants an interrupt.
    pub const APPL_NEED_KICK: usize = 8;
    /// Flags of the guest's last sync.
    pub const SYNC_FLAGS: usize = 12;
    /// Padding up to 64 bytes.
    pub const PAD: usize = 16;
}

/// Byte offsets in a host-to-guest entry (`nm_csb_ktoa`).
pub mod ktoa {
    /// The host's hwcur.
    pub const HWCUR: usize = 0;
    /// The host's hwtail.
    pub const HWTAIL: usize = 4;
    /// 1 = the host wants kicks.
    pub const KERN_NEED_KICK: usize = 8;
    /// Padding up to 64 bytes.
    pub const PAD: usize = 12;
}

/// Sync flag: the guest asks the host to reclaim completed TX slots now (`NAF_FORCE_RECLAIM`).
pub const NAF_FORCE_RECLAIM: u32 = 0x8;

/// Bytes needed by one CSB array for `rings` rings.
pub const fn array_size(rings: u32) -> usize {
    rings as usize * ENTRY_SIZE
}

/// Full store-load barrier, the one the lost-wake-up re-checks need.
#[inline]
pub fn store_load_barrier() {
    fence(Ordering::SeqCst);
}

/// A guest-to-host entry.
#[derive(Clone, Debug)]
pub struct Atok {
    mem: SharedMem,
}

/// A host-to-guest entry.
#[derive(Clone, Debug)]
pub struct Ktoa {
    mem: SharedMem,
}

impl Atok {
    /// Entry `ring` of the guest-to-host array `array`; `None` if it does not fit.
    pub fn new(array: &SharedMem, ring: u32) -> Option<Self> {
        array
            .sub(ring as usize * ENTRY_SIZE, ENTRY_SIZE)
            .map(|mem| Self { mem })
    }

    /// Guest: publish `head` and `cur` (cur first, head last, release).
    #[inline]
    pub fn appl_write(&self, head: u32, cur: u32) {
        self.mem.store_u32(atok::CUR, cur, Ordering::Release);
        self.mem.store_u32(atok::HEAD, head, Ordering::Release);
    }

    /// Host: read (head, cur). Untrusted values.
    #[inline]
    pub fn kernel_read(&self) -> (u32, u32) {
        let head = self.mem.load_u32(atok::HEAD, Ordering::Acquire);
        let cur = self.mem.load_u32(atok::CUR, Ordering::Acquire);
        (head, cur)
    }

    /// Does the guest want an interrupt?
    #[inline]
    pub fn appl_need_kick(&self) -> bool {
        self.mem.load_u32(atok::APPL_NEED_KICK, Ordering::Relaxed) != 0
    }

    /// Guest: ask for (true) or decline (false) interrupts.
    #[inline]
    pub fn set_appl_need_kick(&self, on: bool) {
        self.mem
            .store_u32(atok::APPL_NEED_KICK, on as u32, Ordering::Relaxed)
    }

    /// Flags of the guest's last sync.
    #[inline]
    pub fn sync_flags(&self) -> u32 {
        self.mem.load_u32(atok::SYNC_FLAGS, Ordering::Relaxed)
    }

    /// Guest: record the flags of this sync.
    #[inline]
    pub fn set_sync_flags(&self, flags: u32) {
        self.mem
            .store_u32(atok::SYNC_FLAGS, flags, Ordering::Relaxed)
    }
}

impl Ktoa {
    /// Entry `ring` of the host-to-guest array `array`; `None` if it does not fit.
    pub fn new(array: &SharedMem, ring: u32) -> Option<Self> {
        array
            .sub(ring as usize * ENTRY_SIZE, ENTRY_SIZE)
            .map(|mem| Self { mem })
    }

    /// Host: publish `hwcur` and `hwtail` (hwcur first, hwtail last, release).
    #[inline]
    pub fn kernel_write(&self, hwcur: u32, hwtail: u32) {
        self.mem.store_u32(ktoa::HWCUR, hwcur, Ordering::Release);
        self.mem.store_u32(ktoa::HWTAIL, hwtail, Ordering::Release);
    }

    /// Guest: read (hwtail, hwcur).
    #[inline]
    pub fn appl_read(&self) -> (u32, u32) {
        let hwtail = self.mem.load_u32(ktoa::HWTAIL, Ordering::Acquire);
        let hwcur = self.mem.load_u32(ktoa::HWCUR, Ordering::Acquire);
        (hwtail, hwcur)
    }

    /// The host's hwcur alone.
    #[inline]
    pub fn hwcur(&self) -> u32 {
        self.mem.load_u32(ktoa::HWCUR, Ordering::Acquire)
    }

    /// Does the host want kicks?
    #[inline]
    pub fn kern_need_kick(&self) -> bool {
        self.mem.load_u32(ktoa::KERN_NEED_KICK, Ordering::Relaxed) != 0
    }

    /// Host: ask for (true) or decline (false) kicks.
    #[inline]
    pub fn set_kern_need_kick(&self, on: bool) {
        self.mem
            .store_u32(ktoa::KERN_NEED_KICK, on as u32, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shmem::OwnedMem;

    /// `struct nm_csb_atok` of netmap's `net/netmap.h`, field by field.
    #[repr(C)]
    struct NmCsbAtok {
        head: u32,
        cur: u32,
        appl_need_kick: u32,
        sync_flags: u32,
        pad: [u32; 12],
    }

    /// `struct nm_csb_ktoa`.
    #[repr(C)]
    struct NmCsbKtoa {
        hwcur: u32,
        hwtail: u32,
        kern_need_kick: u32,
        pad: [u32; 13],
    }

    #[test]
    fn entry_layouts() {
        use std::mem::{offset_of, size_of};
        assert_eq!(ENTRY_SIZE, size_of::<NmCsbAtok>());
        assert_eq!(ENTRY_SIZE, size_of::<NmCsbKtoa>());
        assert_eq!(atok::HEAD, offset_of!(NmCsbAtok, head));
        assert_eq!(atok::CUR, offset_of!(NmCsbAtok, cur));
        assert_eq!(atok::APPL_NEED_KICK, offset_of!(NmCsbAtok, appl_need_kick));
        assert_eq!(atok::SYNC_FLAGS, offset_of!(NmCsbAtok, sync_flags));
        assert_eq!(atok::PAD, offset_of!(NmCsbAtok, pad));
        assert_eq!(ktoa::HWCUR, offset_of!(NmCsbKtoa, hwcur));
        assert_eq!(ktoa::HWTAIL, offset_of!(NmCsbKtoa, hwtail));
        assert_eq!(ktoa::KERN_NEED_KICK, offset_of!(NmCsbKtoa, kern_need_kick));
        assert_eq!(ktoa::PAD, offset_of!(NmCsbKtoa, pad));
        // One atok and one ktoa array of 64 rings each fill one page.
        assert_eq!(array_size(64), 64 * size_of::<NmCsbAtok>());
    }

    #[test]
    fn entries_land_at_their_bytes() {
        let m = OwnedMem::new(3 * ENTRY_SIZE);
        let mem = m.mem();
        let a = Atok::new(&mem, 2).unwrap();
        a.appl_write(5, 6);
        a.set_appl_need_kick(true);
        a.set_sync_flags(8);
        assert_eq!(mem.load_u32(128, Ordering::Relaxed), 5);
        assert_eq!(mem.load_u32(132, Ordering::Relaxed), 6);
        assert_eq!(mem.load_u32(136, Ordering::Relaxed), 1);
        assert_eq!(mem.load_u32(140, Ordering::Relaxed), 8);
        assert_eq!(a.kernel_read(), (5, 6));
        let k = Ktoa::new(&mem, 1).unwrap();
        k.kernel_write(3, 9);
        k.set_kern_need_kick(true);
        assert_eq!(mem.load_u32(64, Ordering::Relaxed), 3);
        assert_eq!(mem.load_u32(68, Ordering::Relaxed), 9);
        assert_eq!(mem.load_u32(72, Ordering::Relaxed), 1);
        assert_eq!(k.appl_read(), (9, 3));
        assert!(Atok::new(&mem, 3).is_none());
        assert!(Ktoa::new(&mem, 3).is_none());
    }
}
